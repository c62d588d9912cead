// The Search view: words, an image (uploaded, pasted, or the stored image of "Find similar"), filters and sort,
// the query kept in the address bar, and results a page at a time. Server data is always written with
// textContent, never as markup.

import { dropZone, readAsDataUrl, rejected } from './files.js';
import { boxTool, productLines, productQuery, showFacets } from './products.js';

const $ = (selector) => document.querySelector(selector);
const DEBOUNCE_MS = 350;
const FIELDS = {  // URL parameter -> input
  q: '#q', not: '#not', path: '#filter-path', after: '#filter-after', before: '#filter-before',
  camera: '#filter-camera', min_score: '#filter-min-score', sort: '#sort', mode: '#mode', where: '#where',
  tag: '#filter-tags',
};
const DEFAULTS = { sort: 'score', mode: 'vector' };

const value = (selector) => $(selector).value.trim();
const isAbort = (err) => err && err.name === 'AbortError';

function debounce(fn, ms) {
  let timer = 0;
  const wrapped = () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

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

/** Wire the view: `api` fetches JSON (asking for the key on 401), `showImage(img, url)` points an <img> at an
 * image, `resultCard(hit, lines)` makes a result. Returns what the rest of the page searches with. */
export function setupSearch(api, { setStatus, showError, clearError, showImage, resultCard, pageSize }) {
  const state = {
    image: null,        // {dataUrl, name, previewUrl} of the image being searched with
    similarOf: null,    // image id while showing "Find similar" results
    nextOffset: null,
    controller: null,   // aborts a search that a newer one replaces
    lastKey: '',
  };

  function searchBody(offset) {
    const negatives = value('#not').split(',').map((s) => s.trim()).filter(Boolean).slice(0, 20);
    return productQuery({
      text: value('#q') || null, image: state.image ? state.image.dataUrl : null, negatives, filters: filters(),
      k: pageSize, offset, mode: $('#mode').value, sort: $('#sort').value,
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
        err = new Error(`Image ${gone} is no longer in the library, so there is nothing to find images like it.`);
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
    if (!file || rejected(file, showError)) return;
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

  /** Search with the stored image `id` ("Find similar"), shown from `src`; the caller runs the search. */
  function searchSimilar(id, src, name, alt) {
    clearQueryImage(false);
    state.similarOf = id;
    $('#q').value = '';
    showPreview(src, name, alt);
  }

  // ---------------------------------------------------------------- wiring

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
  dropZone({ zone: $('#drop'), input: $('#image-input'), onFile: setQueryImage, area: $('#search-view'),
    showError });
  setBox = boxTool(() => runSearch({ force: true }));
  // Filters are open where there is room; on a phone they stay folded in their <details>.
  if (window.matchMedia('(min-width: 48em)').matches) $('#filters').open = true;

  return {
    runSearch, setQueryImage, clearQueryImage, showPreview, searchSimilar, readUrl,
    similarOf: () => state.similarOf,
    /** Words, an image or "Find similar": something a search can run with. */
    hasQuery: () => Boolean(value('#q') || state.image || state.similarOf),
  };
}
