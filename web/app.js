// vlsearch web page: plain ES2020, no framework. Talks only to the JSON API under /api/v1.
// Server data is always written with textContent, never as markup.

import { el, fileName } from './dom.js';
import { setupAsk } from './ask.js';
import { setupDuplicates } from './duplicates.js';
import { setupQuality } from './quality.js';
import { boxTool, productLines, productQuery, showFacets } from './products.js';

const API = '/api/v1';
const PAGE_SIZE = 24;
const DEBOUNCE_MS = 350;
const JOB_POLL_MS = 3000;
const JOB_IDLE_POLL_MS = 15000;  // no job running: look now and then for one started elsewhere
const JOB_DONE_SHOWN_MS = 20000;  // how long "Index job finished" stays up
const UNREACHABLE = 'Cannot reach the vlsearch server';

const $ = (selector) => document.querySelector(selector);

const state = {
  image: null,        // {dataUrl, name, previewUrl} of the image being searched with
  similarOf: null,    // image id while showing "Find similar" results
  nextOffset: null,
  controller: null,   // aborts a search that a newer one replaces
  lastKey: '',
  opener: null,       // the element that opened the detail dialog, to give focus back
  detail: null,       // the image shown in the dialog
  caption: '',
  apiKey: sessionStorage.getItem('vlsearch-api-key'),  // for servers whose reads need a key
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;  // the HTTP status, 0 when the server could not be reached
  }
}

/** fetch JSON from the API; every failure becomes an ApiError whose message is fit to show a person. */
async function api(path, { method = 'GET', json, form, signal } = {}) {
  const init = { method, signal, headers: { Accept: 'application/json', ...authHeaders() } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (form) {
    init.body = form;
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(UNREACHABLE);
  }
  const body = await res.json().catch(() => null);  // not JSON: handled below
  if (res.status === 401) {  // reads need a key here (or the one given is wrong): ask for it in words
    const message = state.apiKey ? 'That API key was not accepted: enter the right one above.'
      : 'This server needs an API key: enter it above.';
    askForKey();
    throw new ApiError(message, res.status);
  }
  if (!res.ok) {
    const detail = body && typeof body.detail === 'string' ? body.detail : '';
    throw new ApiError(detail || `The server could not do that (HTTP ${res.status}).`, res.status);
  }
  if (body === null) throw new ApiError(`The server sent an answer this page cannot read (HTTP ${res.status}).`);
  return body;
}

const isAbort = (err) => err && err.name === 'AbortError';

// ---------------------------------------------------------------- API key (servers that close reads)

const KEY_STORE = 'vlsearch-api-key';  // sessionStorage, read into state.apiKey at start

function authHeaders() {
  return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
}

function askForKey() {
  const form = $('#key-form');
  if (!form.hidden) return;
  form.hidden = false;
  $('#api-key').focus();
}

function setupKey() {
  $('#key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('#api-key').value.trim();
    if (!key) return;
    state.apiKey = key;
    sessionStorage.setItem(KEY_STORE, key);  // this tab only: closing it forgets the key
    $('#api-key').value = '';
    $('#key-form').hidden = true;
    clearError();
    loadStats();
    pollJobs();
    if (value('#q') || state.image || state.similarOf) runSearch({ force: true });
    else $('#q').focus();
  });
}

/** Point an <img> at an image. An API image on a server that wants a key is fetched with the key and shown
 * from a blob: URL, because a plain src cannot carry the header. `fallback` is tried if the first fails. */
async function showImage(img, url, fallback) {
  if (img.dataset.blob) {
    URL.revokeObjectURL(img.dataset.blob);
    delete img.dataset.blob;
  }
  img.onerror = null;
  if (!url) {
    img.removeAttribute('src');
    return;
  }
  if (!state.apiKey || !url.startsWith(`${API}/`)) {
    if (fallback) img.onerror = () => showImage(img, fallback);
    img.src = url;
    return;
  }
  try {
    const res = await fetch(url, { headers: authHeaders() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const blobUrl = URL.createObjectURL(await res.blob());
    img.dataset.blob = blobUrl;
    img.src = blobUrl;
  } catch {
    if (fallback) showImage(img, fallback);
  }
}

// ---------------------------------------------------------------- messages and small helpers

const setStatus = (text) => { $('#status').textContent = text; };

/** The error box is empty and hidden whenever there is no error. */
function setError(text) {
  $('#error').textContent = text;
  $('#error').hidden = !text;
}
const showError = (err) => setError((err && err.message) || String(err));
const clearError = () => setError('');

function debounce(fn, ms) {
  let timer = 0;
  const wrapped = () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

const altText = (hit) => (hit.caption && hit.caption.trim()) || fileName(hit.path);

/** EXIF dates are the camera's wall clock without a zone; JS reads such ISO strings as local time, as wanted. */
function formatDate(iso, withTime = false) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const opts = { year: 'numeric', month: 'short', day: 'numeric' };
  if (withTime) Object.assign(opts, { hour: '2-digit', minute: '2-digit' });
  return date.toLocaleString(undefined, opts);
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return '';
  const units = ['bytes', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name || 'the file'}`));
    reader.readAsDataURL(file);
  });
}

const NOT_IMAGE = 'is not an image; choose a JPEG, PNG, WebP, GIF, BMP or TIFF file.';

/** True (after saying so) when a chosen file is not an image. */
function rejected(file) {
  if (file.type.startsWith('image/')) return false;
  showError(`${file.name || 'That file'} ${NOT_IMAGE}`);
  return true;
}

/** The first image among dropped or pasted items, or null. */
function imageFrom(dataTransfer) {
  const files = [...(dataTransfer && dataTransfer.files ? dataTransfer.files : [])];
  return files.find((f) => f.type.startsWith('image/')) || null;
}

const hasFiles = (event) => [...(event.dataTransfer ? event.dataTransfer.types : [])].includes('Files');

/** Copy text, telling the person in `note` whether it worked. */
async function copyText(text, note, source) {
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

// ---------------------------------------------------------------- result cards

/** One result: a real link (keyboard and middle-click friendly) that opens the detail dialog. */
function resultCard(hit, extraLines = []) {
  const card = el('a', 'result');
  card.href = `#image-${hit.id}`;
  card.dataset.id = String(hit.id);
  const img = document.createElement('img');
  img.loading = 'lazy';
  img.decoding = 'async';
  img.alt = altText(hit);
  showImage(img, hit.thumbnail_url || hit.file_url);
  const meta = el('span', 'meta');
  meta.append(el('span', 'caption', hit.caption || fileName(hit.path)));
  const facts = el('span', 'facts');
  facts.append(el('span', 'score', `score ${Number(hit.score).toFixed(3)}`));
  facts.append(el('span', 'date', hit.taken_at ? formatDate(hit.taken_at) : 'no date'));
  meta.append(facts);
  for (const line of extraLines) meta.append(el('span', 'answer', line));
  card.append(img, meta);
  card.addEventListener('click', (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    openDetail(hit.id, card);
  });
  return card;
}

// ---------------------------------------------------------------- search

const FIELDS = {  // URL parameter -> input
  q: '#q', not: '#not', path: '#filter-path', after: '#filter-after', before: '#filter-before',
  camera: '#filter-camera', min_score: '#filter-min-score', sort: '#sort', mode: '#mode', where: '#where',
  tag: '#filter-tags',
};
const DEFAULTS = { sort: 'score', mode: 'vector' };

const value = (selector) => $(selector).value.trim();

/** "Taken to" is inclusive for a person; the API's `before` is exclusive, so send the next day. */
function dayAfter(isoDay) {
  const date = new Date(`${isoDay}T00:00:00Z`);
  if (Number.isNaN(date.getTime())) return isoDay;
  date.setUTCDate(date.getUTCDate() + 1);
  return date.toISOString().slice(0, 10);
}

function filters() {
  const out = {};
  for (const name of ['path', 'after', 'before', 'camera']) {
    if (value(FIELDS[name])) out[name] = value(FIELDS[name]);
  }
  if (out.before) out.before = dayAfter(out.before);
  const minScore = parseFloat(value('#filter-min-score'));
  if (Number.isFinite(minScore)) out.min_score = minScore;
  const tags = value('#filter-tags').split(',').map((t) => t.trim()).filter(Boolean).slice(0, 20);
  if (tags.length) out.tags = tags;
  return out;
}

function searchBody(offset) {
  const negatives = value('#not').split(',').map((s) => s.trim()).filter(Boolean).slice(0, 20);
  return productQuery({
    text: value('#q') || null, image: state.image ? state.image.dataUrl : null, negatives, filters: filters(),
    k: PAGE_SIZE, offset, mode: $('#mode').value, sort: $('#sort').value,
  });
}

/** Reflect the query in the address bar so it can be shared or bookmarked (the image itself cannot). */
function updateUrl() {
  const params = new URLSearchParams();
  for (const [name, selector] of Object.entries(FIELDS)) {
    const v = value(selector);
    if (v && v !== DEFAULTS[name]) params.set(name, v);
  }
  if (state.similarOf) params.set('similar', String(state.similarOf));
  const query = params.toString();
  history.replaceState(null, '', query ? `?${query}` : location.pathname);
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  for (const [name, selector] of Object.entries(FIELDS)) {
    if (!params.has(name)) continue;
    const field = $(selector);
    const wanted = params.get(name);
    // A select keeps its value only if it is one of its options (a hand-edited URL must not blank it).
    if (field.tagName !== 'SELECT' || [...field.options].some((o) => o.value === wanted)) field.value = wanted;
  }
  const similar = Number(params.get('similar'));
  if (Number.isInteger(similar) && similar > 0) state.similarOf = similar;
  return [...params.keys()].some((k) => Object.keys(FIELDS).includes(k) || k === 'similar');
}

function resetResults(message) {
  $('#results').replaceChildren();
  showFacets(null);
  $('#more').hidden = true;
  state.nextOffset = null;
  setStatus(message);
}

/** Run the search for the current form; `more` fetches the next page and appends it. */
async function runSearch({ more = false, force = false } = {}) {
  runSearchSoon.cancel();
  updateUrl();
  const offset = more ? state.nextOffset || 0 : 0;
  const body = searchBody(offset);
  if (!body.text && !body.image && !state.similarOf) {
    if (state.controller) state.controller.abort();
    state.lastKey = '';
    clearError();
    resetResults('Type something to search');
    return;
  }
  // Skip a repeat of the search on screen (e.g. the debounce firing after Enter already ran it).
  const key = JSON.stringify({ ...body, offset: 0, image: state.image && state.image.previewUrl,
    similar: state.similarOf });
  if (more && key !== state.lastKey) return runSearch({ force: true });  // the form changed: a new search
  if (!more && !force && key === state.lastKey) return;
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  setStatus(more ? 'Loading more results…' : 'Searching…');
  $('#results').setAttribute('aria-busy', 'true');
  try {
    // "Find similar" is a search by the stored image: filters, not-terms, sort and mode all apply to it.
    const json = state.similarOf ? { ...body, image: null, image_id: state.similarOf } : body;
    const data = await api('/search', { method: 'POST', json, signal: controller.signal });
    clearError();
    state.lastKey = key;
    showHits(data, more);
  } catch (err) {
    if (isAbort(err)) return;
    state.lastKey = '';
    if (state.similarOf && err.status === 404) {
      // The image of "Find similar" (say from an old shared link) has been deleted since.
      const gone = state.similarOf;
      clearQueryImage(false);
      updateUrl();
      err = new ApiError(`Image ${gone} is no longer in the library, so there is nothing to find images like it.`);
    }
    showError(err);
    if (!more) resetResults('');
    else setStatus('');
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      $('#results').removeAttribute('aria-busy');
    }
  }
}

const runSearchSoon = debounce(() => runSearch(), DEBOUNCE_MS);
let setBox = () => {};  // the query image's box tool, once set up

function showHits(data, append) {
  const grid = $('#results');
  if (!append) grid.replaceChildren();
  grid.append(...data.hits.map((hit) => resultCard(hit, productLines(hit))));
  if (!append) showFacets(data.facets, () => runSearch({ force: true }));
  state.nextOffset = data.next_offset;
  $('#more').hidden = data.next_offset === null || data.next_offset === undefined;
  const count = grid.children.length;
  const grouped = data.hits.length && data.hits[0].product;
  const what = state.similarOf ? ' similar images' : grouped ? (count === 1 ? ' product' : ' products')
    : count === 1 ? ' result' : ' results';
  const more = $('#more').hidden ? '' : ' (more available)';
  setStatus(count ? `${count}${what}${more} in ${Math.round(data.took_ms)} ms`
    : 'No matches — try other words or fewer filters');
}

// ---------------------------------------------------------------- search by image

async function setQueryImage(file) {
  if (!file || rejected(file)) return;
  try {
    const dataUrl = await readAsDataUrl(file);
    clearQueryImage(false);
    state.similarOf = null;
    state.image = { dataUrl, name: file.name || 'pasted image', previewUrl: URL.createObjectURL(file) };
    showPreview(state.image.previewUrl, state.image.name, 'The image you are searching with');
    runSearch({ force: true });
  } catch (err) {
    showError(err);
  }
}

function showPreview(src, name, alt) {
  showImage($('#query-image'), src);
  $('#query-image').alt = alt;
  $('#query-image-name').textContent = name;
  $('#query-preview').hidden = false;
}

/** Forget the search image (an upload, or the image of "Find similar"). */
function clearQueryImage(rerun = true) {
  if (state.image) URL.revokeObjectURL(state.image.previewUrl);
  state.image = null;
  state.similarOf = null;
  setBox(null);
  $('#image-input').value = '';
  $('#query-preview').hidden = true;
  $('#query-image').removeAttribute('src');
  if (rerun) runSearch();
}

/** Make a div a drop target that also opens the file picker by click, Enter or Space. */
function dropZone(zone, input, onFile, area = zone) {
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

// ---------------------------------------------------------------- detail dialog

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
  clearQueryImage(false);
  $('#filter-tags').value = label;
  if (!value('#q')) $('#q').value = label;  // a search needs words or an image: the tag's own will do
  state.opener = $('#q');
  $('#detail').close();
  showTab('search');
  runSearch({ force: true });
}

function findSimilar() {
  if (!state.detail) return;
  const d = state.detail;
  clearQueryImage(false);
  state.similarOf = d.id;
  $('#q').value = '';
  showPreview(d.thumbnail_url || d.file_url, `Similar to ${fileName(d.path)}`,
    `Searching for images like: ${(d.caption && d.caption.trim()) || fileName(d.path)}`);
  state.opener = $('#q');  // the result that opened the dialog is about to be replaced
  $('#detail').close();
  showTab('search');
  runSearch({ force: true });
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

// ---------------------------------------------------------------- caption tool

async function captionFile(file) {
  if (!file || rejected(file)) return;
  const preview = $('#caption-preview');
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `The image being described: ${file.name || 'pasted image'}`;
  preview.hidden = false;
  state.caption = '';
  $('#copy-caption').disabled = true;
  $('#caption-text').textContent = 'Writing a caption…';
  $('#caption-model').textContent = '';
  const form = new FormData();
  form.set('file', file, file.name || 'image');
  try {
    const data = await api('/caption', { method: 'POST', form });
    clearError();
    state.caption = data.caption;
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

// ---------------------------------------------------------------- library and job status

async function loadStats() {
  try {
    const stats = await api('/stats');
    const n = stats.images.toLocaleString();
    $('#library-status').textContent = stats.images === 0
      ? 'The library is empty: index a folder (vlsearch index FOLDER) and its photos appear here.'
      : `${n} image${stats.images === 1 ? '' : 's'} · model ${stats.loaded.embedding}`;
  } catch (err) {
    $('#library-status').textContent = err.message;
  }
}

/** A finished job in words: what it did, or why it failed. */
function jobNote(job) {
  if (job.state === 'failed') return `Index job failed: ${job.error || 'see the server log'}`;
  const s = job.summary || {};
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  const parts = [`${plural(s.seen || 0, 'file', 'files')} checked`];
  const added = (s.embedded || 0) + (s.reused || 0);
  if (added) parts.push(`${added} added or changed`);
  if (s.moved) parts.push(`${s.moved} moved`);
  if (s.removed) parts.push(`${s.removed} removed`);
  if (job.errors) parts.push(`${plural(job.errors, 'file', 'files')} could not be read`);
  return `Index job finished: ${parts.join(', ')}.`;
}

/** Look at /jobs every few seconds while a job runs, less often while none does; when one ends, say how it went
 * and refresh the counts. */
async function pollJobs() {
  clearTimeout(pollJobs.timer);
  const box = $('#job-status');
  let jobs;
  try {
    jobs = await api('/jobs');
  } catch {
    pollJobs.timer = setTimeout(pollJobs, JOB_IDLE_POLL_MS);  // the library line says the server is unreachable
    return;
  }
  const running = jobs.find((j) => j.state === 'running');
  const seen = pollJobs.newest;
  pollJobs.newest = jobs.length ? jobs[0].id : null;
  if (running) {
    const progress = el('progress');  // with no value it shows work under way of unknown length
    progress.setAttribute('aria-label', 'Index job progress');
    let words;
    if (running.total) {
      progress.max = running.total;
      progress.value = running.done;
      const rate = running.images_per_second ? `, ${running.images_per_second.toFixed(1)} images/s` : '';
      words = `Indexing (${running.phase}): ${running.done} of ${running.total}${rate}`;
    } else {
      words = 'Indexing: looking for images…';
    }
    box.replaceChildren(el('span', '', words), progress);
    box.hidden = false;
    pollJobs.timer = setTimeout(pollJobs, JOB_POLL_MS);
    pollJobs.active = true;
  } else {
    // A job that started and ended between two looks is news too (not one that ended before the page loaded).
    const unseen = jobs.length && seen !== undefined && jobs[0].id !== seen;
    if (pollJobs.active || unseen) {
      pollJobs.active = false;
      box.textContent = jobNote(jobs[0]);
      box.hidden = false;
      setTimeout(() => { if (!pollJobs.active) box.hidden = true; }, JOB_DONE_SHOWN_MS);
      loadStats();
    }
    // A job may be started later (by another client or `vlsearch index`): look again, less often.
    pollJobs.timer = setTimeout(pollJobs, JOB_IDLE_POLL_MS);
  }
}

// ---------------------------------------------------------------- tabs

const TABS = ['search', 'ask', 'caption', 'duplicates', 'quality'];

function showTab(name, focus = false) {
  for (const tab of TABS) {
    const button = $(`#tab-${tab}`);
    const selected = tab === name;
    button.setAttribute('aria-selected', String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`#${tab}-view`).hidden = !selected;
    if (selected && focus) button.focus();
  }
  clearError();
  setStatus('');
}

const currentTab = () => TABS.find((t) => $(`#tab-${t}`).getAttribute('aria-selected') === 'true');

function setupTabs() {
  for (const tab of TABS) $(`#tab-${tab}`).addEventListener('click', () => showTab(tab));
  // Arrow keys move between tabs (the ARIA tabs pattern); Tab moves on into the panel.
  $('[role=tablist]').addEventListener('keydown', (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    let next;
    if (step) next = TABS[(TABS.indexOf(currentTab()) + step + TABS.length) % TABS.length];
    else if (event.key === 'Home') next = TABS[0];
    else if (event.key === 'End') next = TABS[TABS.length - 1];
    if (!next) return;
    event.preventDefault();
    showTab(next, true);
  });
}

// ---------------------------------------------------------------- wiring

function setupSearch() {
  const form = $('#search-form');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runSearch({ force: true });
  });
  form.addEventListener('input', (event) => {
    if (event.target.type === 'file') return;
    if (event.target.id === 'q' && state.similarOf) clearQueryImage(false);  // typing starts a new search
    runSearchSoon();
  });
  $('#more').addEventListener('click', () => runSearch({ more: true }));
  $('#clear-image').addEventListener('click', () => {
    clearQueryImage();
    $('#q').focus();
  });
  dropZone($('#drop'), $('#image-input'), setQueryImage, $('#search-view'));
  setBox = boxTool(() => runSearch({ force: true }));
  // Filters are open where there is room; on a phone they stay folded in their <details>.
  if (window.matchMedia('(min-width: 48em)').matches) $('#filters').open = true;
}

function setupDetail() {
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
}

function setupCaption() {
  dropZone($('#caption-drop'), $('#caption-input'), captionFile, $('#caption-view'));
  $('#copy-caption').addEventListener('click', () => {
    copyText(state.caption, $('#copy-caption-status'), $('#caption-text'));
  });
}

function setupPaste() {
  document.addEventListener('paste', (event) => {
    const data = event.clipboardData;
    const file = imageFrom(data);
    if (!file) {
      if (!data || !data.files || !data.files.length) return;  // ordinary text paste
      event.preventDefault();  // a pasted file that is not an image: say so rather than ignore it
      showError(`${data.files[0].name || 'That file'} ${NOT_IMAGE}`);
      return;
    }
    event.preventDefault();
    if (currentTab() === 'caption') {
      captionFile(file);
    } else {
      // Search and Ask: an image pasted is a search by that image.
      if (currentTab() !== 'search') showTab('search');
      setQueryImage(file);
    }
  });
  // A file dropped outside a drop zone must not navigate away from the page.
  window.addEventListener('dragover', (event) => { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener('drop', (event) => { if (hasFiles(event)) event.preventDefault(); });
}

function start() {
  setupKey();
  setupTabs();
  setupSearch();
  setupDetail();
  setupAsk(api, { setStatus, showError, clearError, resultCard, pageSize: PAGE_SIZE });
  setupCaption();
  setupDuplicates(api, { setStatus, showError });
  setupQuality(api, { setStatus, showError });
  setupPaste();
  loadStats();
  pollJobs();
  const fromUrl = readUrl();
  if (state.similarOf) {
    showPreview(`${API}/images/${state.similarOf}/thumbnail`, `Similar to image ${state.similarOf}`,
      `Searching for images like image ${state.similarOf}`);
  }
  if (fromUrl) runSearch({ force: true });
  else setStatus('Type something to search');
  const match = /^#image-(\d+)$/.exec(location.hash);  // a shared link to one image
  if (match) openDetail(Number(match[1]), $('#q'));
}

start();
