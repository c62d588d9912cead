// vlsearch web page: plain ES2020, no framework. Talks only to the JSON API under /api/v1.
// This module holds what every view shares (the API key, the api() fetch wrapper, the status and error lines,
// the tabs) and wires the views, each in its own module. Server data is always written with textContent, never
// as markup.

import { setupAsk } from './ask.js';
import { setupCaption } from './caption.js';
import { cardMaker } from './cards.js';
import { setupDetail } from './detail.js';
import { setupDuplicates } from './duplicates.js';
import { hasFiles, imageFrom, NOT_IMAGE } from './files.js';
import { setupQuality } from './quality.js';
import { setupSearch } from './search.js';
import { setupStatus } from './status.js';

const API = '/api/v1';
const PAGE_SIZE = 24;
const UNREACHABLE = 'Cannot reach the vlsearch server';

const $ = (selector) => document.querySelector(selector);

const state = {
  apiKey: sessionStorage.getItem('vlsearch-api-key'),  // for servers whose reads need a key
};
// The views, once start() has set them up (the key form and a paste hand work to them).
let search;
let detail;
let caption;
let libraryStatus;

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
    libraryStatus.loadStats();
    libraryStatus.pollJobs();
    if (search.hasQuery()) search.runSearch({ force: true });
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

// ---------------------------------------------------------------- messages

const setStatus = (text) => { $('#status').textContent = text; };

/** The error box is empty and hidden whenever there is no error. */
function setError(text) {
  $('#error').textContent = text;
  $('#error').hidden = !text;
}
const showError = (err) => setError((err && err.message) || String(err));
const clearError = () => setError('');

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
      caption.captionFile(file);
    } else {
      // Search and Ask: an image pasted is a search by that image.
      if (currentTab() !== 'search') showTab('search');
      search.setQueryImage(file);
    }
  });
  // A file dropped outside a drop zone must not navigate away from the page.
  window.addEventListener('dragover', (event) => { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener('drop', (event) => { if (hasFiles(event)) event.preventDefault(); });
}

function start() {
  setupKey();
  setupTabs();
  const resultCard = cardMaker(showImage, (id, card) => detail.openDetail(id, card));
  search = setupSearch(api, { setStatus, showError, clearError, showImage, resultCard, pageSize: PAGE_SIZE });
  detail = setupDetail(api, { showImage, search, showTab });
  setupAsk(api, { setStatus, showError, clearError, resultCard, pageSize: PAGE_SIZE });
  caption = setupCaption(api, { showError, clearError });
  setupDuplicates(api, { setStatus, showError });
  setupQuality(api, { setStatus, showError });
  setupPaste();
  libraryStatus = setupStatus(api);
  libraryStatus.loadStats();
  libraryStatus.pollJobs();
  const fromUrl = search.readUrl();
  const similar = search.similarOf();
  if (similar) {
    search.showPreview(`${API}/images/${similar}/thumbnail`, `Similar to image ${similar}`,
      `Searching for images like image ${similar}`);
  }
  if (fromUrl) search.runSearch({ force: true });
  else setStatus('Type something to search');
  const match = /^#image-(\d+)$/.exec(location.hash);  // a shared link to one image
  if (match) detail.openDetail(Number(match[1]), $('#q'));
}

start();
