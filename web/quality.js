// The Quality view: labelled cases (one JSON object a line, as `vlsearch eval` reads them) scored by the server:
// recall@1/5/10, MRR and nDCG@10 per search mode, and tag and duplicate pair precision and recall.
// Server data is always written with textContent, never as markup.

import { el } from './dom.js';

const $ = (selector) => document.querySelector(selector);
const COLUMNS = ['recall@1', 'recall@5', 'recall@10', 'reciprocal_rank', 'ndcg@10'];
const HEADINGS = ['Mode', 'Cases', 'R@1', 'R@5', 'R@10', 'MRR', 'nDCG@10'];

/** The cases of the text box, one JSON object a line; throws naming the line that is not JSON. */
function readCases(text) {
  const cases = [];
  text.split('\n').forEach((line, index) => {
    if (!line.trim()) return;
    try {
      cases.push(JSON.parse(line));
    } catch {
      throw new Error(`Line ${index + 1} is not JSON: write one object a line, e.g. {"text": "a cat", "relevant": ["cat.jpg"]}`);
    }
  });
  if (!cases.length) throw new Error('Write at least one case, e.g. {"text": "a cat", "relevant": ["cat.jpg"]}');
  return cases;
}

function modeTable(report) {
  const table = el('table');
  table.id = 'quality-table';
  const head = el('tr');
  for (const name of HEADINGS) head.append(el('th', '', name));
  table.append(head);
  for (const mode of report.modes) {
    const row = el('tr');
    row.append(el('th', '', mode.mode), el('td', '', `${mode.scored}`));
    for (const column of COLUMNS) row.append(el('td', '', mode.mean ? mode.mean[column].toFixed(3) : '–'));
    table.append(row);
  }
  return table;
}

function pairLine(what, scores) {
  return el('p', '', `${what}: precision ${scores.precision.toFixed(3)}, recall ${scores.recall.toFixed(3)} `
    + `(${scores.correct} of ${scores.predicted} right, of ${scores.expected} expected)`);
}

/** Wire the view: `api` fetches JSON (asking for the key on 401), `showError` reports a failure. */
export function setupQuality(api, { setStatus, showError }) {
  const out = $('#quality-results');

  $('#quality-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    out.replaceChildren();
    let cases;
    try {
      cases = readCases($('#quality-cases').value);
    } catch (err) {
      showError(err);
      return;
    }
    setStatus(`Scoring ${cases.length} case(s)…`);
    try {
      const report = await api('/eval', { method: 'POST', json: { cases } });
      if (report.modes.length) out.append(modeTable(report));
      if (report.tags) out.append(pairLine('Tags', report.tags));
      if (report.duplicates) out.append(pairLine('Duplicate pairs', report.duplicates));
      if (report.unindexed.length) {
        out.append(el('p', '', `Not in the library (every search misses them): ${report.unindexed.join(', ')}`));
      }
      setStatus(`Scored ${cases.length} case(s).`);
    } catch (err) {
      setStatus('');
      showError(err);
    }
  });
}
