// The detail dialog: one image large, with its caption, the text read in it, its tags, EXIF facts, "Find
// similar", copying its alt text, and a question asked about this image (POST /vqa). Server data is always
// written with textContent, never as markup.

import { el, fileName } from './dom.js';
import { copyText, formatBytes, formatDate } from './format.js';

const $ = (selector) => document.querySelector(selector);
const value = (selector) => $(selector).value.trim();

function exifRows(d) {
  const camera = [d.camera_make, d.camera_model].filter(Boolean);
  // Many cameras repeat the make in the model ("Canon" + "Canon EOS R6").
  if (camera.length === 2 && camera[1].toLowerCase().startsWith(camera[0].toLowerCase())) camera.shift();
  return [
    ['File', fileName(d.path)],
    ['Date taken', d.taken_at ? formatDate(d.taken_at, true) : 'unknown'],
    ['Camera', camera.join(' ') || 'unknown'],
    ['Dimensions', d.width && d.height ? `${d.width} × ${d.height} px` : 'unknown'],
    ['Format', d.format || 'unknown'],
    ['Size', formatBytes(d.size_bytes) || 'unknown'],
    ['Folder', (d.path || '').split('/').slice(0, -1).join('/') || '/'],
  ];
}

/** Wire the dialog: `api` fetches JSON (asking for the key on 401), `showImage(img, url, fallback)` points an
 * <img> at an image, `search` is what setupSearch returned, `showTab(name)` shows a view. Returns
 * openDetail(id, opener). */
export function setupDetail(api, { showImage, search, showTab }) {
  const state = {
    opener: null,       // the element that opened the detail dialog, to give focus back
    detail: null,       // the image shown in the dialog
  };

  function fillDetail(d) {
    state.detail = d;
    $('#detail-title').textContent = fileName(d.path);
    const img = $('#detail-image');
    img.alt = (d.caption && d.caption.trim()) || fileName(d.path);
    // The original is refused when its file moved out of the indexed folders: fall back to the thumbnail.
    showImage(img, d.file_url || d.thumbnail_url, d.file_url ? d.thumbnail_url : null);
    $('#detail-caption').textContent = d.caption || 'No caption yet.';
    $('#detail-ocr').textContent = d.ocr_text || 'No text found.';
    fillTags(d.tags || []);
    const list = $('#detail-exif');
    list.replaceChildren();
    for (const [term, text] of exifRows(d)) list.append(el('dt', '', term), el('dd', '', text));
  }

  async function openDetail(id, opener) {
    const dialog = $('#detail');
    state.opener = opener || document.activeElement;
    state.detail = null;
    $('#detail-title').textContent = 'Loading…';
    $('#detail-image').removeAttribute('src');
    $('#detail-image').alt = '';
    for (const sel of ['#detail-caption', '#detail-ocr', '#vqa-answer', '#copy-alt-status']) $(sel).textContent = '';
    $('#detail-exif').replaceChildren();
    fillTags([]);
    $('#vqa-question').value = '';
    $('#detail').dataset.id = String(id);
    if (!dialog.open) dialog.showModal();
    try {
      const d = await api(`/images/${id}`);
      if (dialog.dataset.id === String(id)) fillDetail(d);
    } catch (err) {
      $('#detail-title').textContent = 'Image';
      $('#detail-caption').textContent = err.message;
    }
  }

  /** The image's tags as buttons: choosing one searches for images with that tag. */
  function fillTags(tags) {
    const list = $('#detail-tags');
    list.replaceChildren();
    $('#detail-tags-none').hidden = tags.length > 0;
    for (const tag of tags) {
      const button = el('button', 'tag', tag.label);
      button.type = 'button';
      button.title = `score ${tag.score.toFixed(2)} (cosine ${tag.similarity.toFixed(2)}), vocabulary ${tag.vocabulary}`;
      button.addEventListener('click', () => searchTag(tag.label));
      const item = el('li');
      item.append(button);
      list.append(item);
    }
  }

  function searchTag(label) {
    search.clearQueryImage(false);
    $('#filter-tags').value = label;
    if (!value('#q')) $('#q').value = label;  // a search needs words or an image: the tag's own will do
    state.opener = $('#q');
    $('#detail').close();
    showTab('search');
    search.runSearch({ force: true });
  }

  function findSimilar() {
    if (!state.detail) return;
    const d = state.detail;
    search.searchSimilar(d.id, d.thumbnail_url || d.file_url, `Similar to ${fileName(d.path)}`,
      `Searching for images like: ${(d.caption && d.caption.trim()) || fileName(d.path)}`);
    state.opener = $('#q');  // the result that opened the dialog is about to be replaced
    $('#detail').close();
    showTab('search');
    search.runSearch({ force: true });
  }

  async function askImage(event) {
    event.preventDefault();
    const question = value('#vqa-question');
    const out = $('#vqa-answer');
    if (!question) { out.textContent = 'Type a question first.'; return; }
    const form = new FormData();
    form.set('image_id', $('#detail').dataset.id);
    form.set('question', question);
    out.textContent = 'Thinking…';
    try {
      const data = await api('/vqa', { method: 'POST', form });
      out.textContent = `${data.answer} (${data.model})`;
    } catch (err) {
      out.textContent = err.message;
    }
  }

  const dialog = $('#detail');
  $('#close-detail').addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (event) => {  // a click on the backdrop closes it
    if (event.target === dialog) dialog.close();
  });
  dialog.addEventListener('close', () => {
    const opener = state.opener;
    state.opener = null;
    if (opener && opener.isConnected) opener.focus();
  });
  $('#find-similar').addEventListener('click', findSimilar);
  $('#copy-alt').addEventListener('click', () => {
    const text = state.detail ? (state.detail.caption || fileName(state.detail.path)) : '';
    copyText(text, $('#copy-alt-status'), $('#detail-caption'));
  });
  $('#vqa-form').addEventListener('submit', askImage);

  return { openDetail };
}
