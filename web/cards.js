// Result cards, shown by Search and Ask: one image with its caption, score and date, and any extra lines.
// Server data is always written with textContent, never as markup.

import { el, fileName } from './dom.js';
import { formatDate } from './format.js';

const altText = (hit) => (hit.caption && hit.caption.trim()) || fileName(hit.path);

/** The card maker: `showImage(img, url)` points an <img> at an image, `open(id, card)` opens the detail dialog. */
export function cardMaker(showImage, open) {
  /** One result: a real link (keyboard and middle-click friendly) that opens the detail dialog. */
  return function resultCard(hit, extraLines = []) {
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
      open(hit.id, card);
    });
    return card;
  };
}
