// The Caption view: an image dropped, chosen or pasted is described by the server's caption model, and the
// caption can be copied as alt text. Server data is always written with textContent, never as markup.

import { dropZone, rejected } from './files.js';
import { copyText } from './format.js';

const $ = (selector) => document.querySelector(selector);

/** Wire the view: `api` fetches JSON (asking for the key on 401). Returns captionFile(file), which a paste on
 * this view also calls. */
export function setupCaption(api, { showError, clearError }) {
  let caption = '';  // the last caption written, for the copy button

  async function captionFile(file) {
    if (!file || rejected(file, showError)) return;
    const preview = $('#caption-preview');
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.alt = `The image being described: ${file.name || 'pasted image'}`;
    preview.hidden = false;
    caption = '';
    $('#copy-caption').disabled = true;
    $('#caption-text').textContent = 'Writing a caption…';
    $('#caption-model').textContent = '';
    const form = new FormData();
    form.set('file', file, file.name || 'image');
    try {
      const data = await api('/caption', { method: 'POST', form });
      clearError();
      caption = data.caption;
      $('#caption-text').textContent = data.caption;
      $('#caption-model').textContent = `Written by ${data.model}`;
      preview.alt = data.caption;
      $('#copy-caption').disabled = false;
    } catch (err) {
      $('#caption-text').textContent = '';
      showError(err);
    }
    $('#caption-input').value = '';
  }

  dropZone({ zone: $('#caption-drop'), input: $('#caption-input'), onFile: captionFile, area: $('#caption-view'),
    showError });
  $('#copy-caption').addEventListener('click', () => {
    copyText(caption, $('#copy-caption-status'), $('#caption-text'));
  });
  return { captionFile };
}
