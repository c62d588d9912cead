// Image files a person gives the page: chosen in a file picker, dropped on a drop zone, or pasted, and read as
// data URLs. A file that is not an image is refused in words.

export const NOT_IMAGE = 'is not an image; choose a JPEG, PNG, WebP, GIF, BMP or TIFF file.';

export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name || 'the file'}`));
    reader.readAsDataURL(file);
  });
}

/** True (after saying so with `showError`) when a chosen file is not an image. */
export function rejected(file, showError) {
  if (file.type.startsWith('image/')) return false;
  showError(`${file.name || 'That file'} ${NOT_IMAGE}`);
  return true;
}

/** The first image among dropped or pasted items, or null. */
export function imageFrom(dataTransfer) {
  const files = [...(dataTransfer && dataTransfer.files ? dataTransfer.files : [])];
  return files.find((f) => f.type.startsWith('image/')) || null;
}

export const hasFiles = (event) => [...(event.dataTransfer ? event.dataTransfer.types : [])].includes('Files');

/** Make a div a drop target that also opens the file picker by click, Enter or Space. Files may be dropped
 * anywhere in `area`; a drop with no image in it is reported with `showError`. */
export function dropZone({ zone, input, onFile, area = zone, showError }) {
  const open = () => input.click();
  zone.addEventListener('click', open);
  zone.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      open();
    }
  });
  input.addEventListener('change', () => onFile(input.files[0]));
  area.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.add('dragging');
  });
  area.addEventListener('dragleave', (event) => {
    if (!area.contains(event.relatedTarget)) zone.classList.remove('dragging');
  });
  area.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.remove('dragging');
    const file = imageFrom(event.dataTransfer);
    if (file) onFile(file);
    else showError(`That ${NOT_IMAGE}`);
  });
}
