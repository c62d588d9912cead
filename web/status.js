// The library line and the index job line in the page header: the image count and model, and the progress of an
// index job, polled from /jobs. Server data is always written with textContent, never as markup.

import { el } from './dom.js';

const $ = (selector) => document.querySelector(selector);
const JOB_POLL_MS = 3000;
const JOB_IDLE_POLL_MS = 15000;  // no job running: look now and then for one started elsewhere
const JOB_DONE_SHOWN_MS = 20000;  // how long "Index job finished" stays up

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

/** `api` fetches JSON (asking for the key on 401). Returns loadStats() and pollJobs(), for the page to call at
 * start and again once a key is given. */
export function setupStatus(api) {
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

  /** Look at /jobs every few seconds while a job runs, less often while none does; when one ends, say how it
   * went and refresh the counts. */
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

  return { loadStats, pollJobs };
}
