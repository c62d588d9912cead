// The Ask view: a question over the whole collection (POST /ask). What the answer rests on is said in words: a
// model that checked each candidate, the text OCR read, or search alone (not verified: this server has no model
// to check with). Server data is always written with textContent, never as markup.

const $ = (selector) => document.querySelector(selector);

/** One line saying how the images were found, in the page's words. */
function summary(data) {
  const searched = `Searched for “${data.retrieval_query}”`;
  if (data.method === 'ocr') return `${searched} in the text read in the photos when they were indexed.`;
  if (data.method === 'retrieval') {
    return `${searched}: these are the closest matches by look and by their words, not checked one by one. `
      + 'To have each photo checked against the question, the server\'s operator can add a question-answering '
      + 'model (BLIP VQA).';
  }
  return `${searched}, then checked ${data.candidates} candidates with ${data.model}: “${data.check}”.`;
}

/** The line a result card shows under its caption. */
function answerLine(finding, method) {
  if (method === 'retrieval') return finding.answer.charAt(0).toUpperCase() + finding.answer.slice(1);
  if (method === 'ocr') return `Text: ${finding.answer.replace(/^yes: /, '')}`;
  return `Answer: ${finding.answer} (${Math.round(finding.answer_score * 100)}%)`;
}

export function setupAsk(api, { setStatus, showError, clearError, resultCard, pageSize }) {
  async function ask(event) {
    event.preventDefault();
    const question = $('#ask-question').value.trim();
    const grid = $('#ask-results');
    if (!question) { setStatus('Type a question to ask the collection'); return; }
    grid.replaceChildren();
    $('#ask-summary').textContent = '';
    setStatus('Looking through the collection…');
    grid.setAttribute('aria-busy', 'true');
    try {
      const data = await api('/ask', { method: 'POST', json: { question, k: pageSize } });
      clearError();
      grid.append(...data.results.map((f) => resultCard(f, [answerLine(f, data.method)])));
      $('#ask-summary').textContent = summary(data);
      const found = data.verified ? 'matching images' : 'likely matches';
      setStatus(data.results.length ? `${data.results.length} ${found}`
        : 'No image matched — try asking in other words');
    } catch (err) {
      showError(err);
      setStatus('');
    } finally {
      grid.removeAttribute('aria-busy');
    }
  }
  $('#ask-form').addEventListener('submit', ask);
}
