// The Duplicates view: groups of the same picture (exact copies, resized or recompressed copies, near-identical
// shots), each with the image suggested to keep, and "Forget the others" (behind the API key; files stay).
// Server data is always written with textContent, never as markup.

import { el, fileName } from './dom.js';

const $ = (selector) => document.querySelector(selector);
const PAGE = 50;
const KIND_NAMES = { exact: 'Exact copies', copy: 'Copies', near: 'Near-identical shots' };


function memberFigure(member, keeper) {
  const figure = el('figure', member.id === keeper ? 'dup-member keeper' : 'dup-member');
  const img = el('img');
  img.src = member.thumbnail_url;
  img.alt = fileName(member.path);
  img.loading = 'lazy';
  const caption = el('figcaption');
  caption.append(el('span', 'dup-name', fileName(member.path)));
  const size = member.width && member.height ? `${member.width} × ${member.height}` : '';
  const similar = member.id === keeper ? 'suggested to keep' : `${Math.round(member.similarity * 100)}% alike`;
  caption.append(el('span', 'muted', [size, member.format, similar].filter(Boolean).join(' · ')));
  figure.append(img, caption);
  return figure;
}

/** Wire the view: `api` fetches JSON (asking for the key on 401), `report` shows a status line or an error. */
export function setupDuplicates(api, { setStatus, showError }) {
  const list = $('#dup-groups');

  function groupSection(group) {
    const section = el('section', 'dup-group');
    const others = group.members.filter((m) => m.id !== group.keeper);
    section.append(el('h3', '', `${KIND_NAMES[group.kind]} · ${group.members.length} images`));
    const row = el('div', 'dup-row');
    for (const member of group.members) row.append(memberFigure(member, group.keeper));
    const forget = el('button', '', `Forget the other ${others.length}`);
    forget.type = 'button';
    forget.addEventListener('click', async () => {
      if (!window.confirm(`Forget ${others.length} image(s) from the library? The files themselves stay.`)) return;
      forget.disabled = true;
      try {
        const done = await api('/images/delete', { method: 'POST', json: { ids: others.map((m) => m.id) } });
        section.remove();
        setStatus(`Forgot ${done.deleted.length} image(s); kept ${fileName(group.members[0].path)}.`);
      } catch (err) {
        forget.disabled = false;
        showError(err);
      }
    });
    section.append(row, forget);
    return section;
  }

  async function find(event) {
    event.preventDefault();
    const params = new URLSearchParams({ limit: String(PAGE) });
    if ($('#dup-kind').value) params.set('kind', $('#dup-kind').value);
    list.replaceChildren();
    setStatus('Looking for duplicates…');
    try {
      const data = await api(`/duplicates?${params}`);
      for (const group of data.groups) list.append(groupSection(group));
      const shown = data.groups.length < data.total ? ` (the first ${data.groups.length} shown)` : '';
      setStatus(data.total ? `${data.total} group(s) of duplicates${shown}.` : 'No duplicates found.');
    } catch (err) {
      setStatus('');
      showError(err);
    }
  }

  $('#dup-form').addEventListener('submit', find);
}
