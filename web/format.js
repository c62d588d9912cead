// Facts in a person's words: dates, file sizes, and text copied to the clipboard with a note saying whether it
// worked. The note is written with textContent, never as markup.

/** EXIF dates are the camera's wall clock without a zone; JS reads such ISO strings as local time, as wanted. */
export function formatDate(iso, withTime = false) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const opts = { year: 'numeric', month: 'short', day: 'numeric' };
  if (withTime) Object.assign(opts, { hour: '2-digit', minute: '2-digit' });
  return date.toLocaleString(undefined, opts);
}

export function formatBytes(n) {
  if (!Number.isFinite(n)) return '';
  const units = ['bytes', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** Copy text, telling the person in `note` whether it worked. */
export async function copyText(text, note, source) {
  let message;
  try {
    if (!text) throw new Error('nothing to copy');
    if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
    message = 'Copied';
  } catch {
    message = text ? 'Copying is not available here: the text is selected, copy it with Ctrl+C (⌘C).'
      : 'There is no text to copy yet.';
    if (text && source) window.getSelection().selectAllChildren(source);
  }
  note.textContent = message;
  clearTimeout(note.timer);
  note.timer = setTimeout(() => { note.textContent = ''; }, 4000);
}
