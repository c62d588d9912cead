// Products on the search page: one result per product, conditions on what the catalogue says (typed, or picked
// from the facet counts), product cards, and a box drawn on the query image to search with that region only.
// Server data is always written with textContent, never as markup.

const $ = (selector) => document.querySelector(selector);
const FACETS = ['brand', 'category'];
const MIN_BOX = 0.02;  // a click without a drag is not a box

/** The conditions typed in the Conditions field: "category=shoes; price<100" (one per `;` or line). */
export function conditions() {
  return $('#where').value.split(/[;\n]/).map((c) => c.trim()).filter(Boolean).slice(0, 20);
}

/** What the search body gains from the product controls. */
export function productQuery(body) {
  const where = conditions();
  const grouped = $('#group-product').checked;
  return {
    ...body,
    filters: where.length ? { ...body.filters, where } : body.filters,
    group: grouped ? 'product' : null,
    facets: grouped ? FACETS : [],
    box: body.image && state.box ? state.box : null,
  };
}

/** Lines a result card shows for its product: title, then brand and price. */
export function productLines(hit) {
  const p = hit.product;
  if (!p) return [];
  const price = p.price === null || p.price === undefined ? '' : `${p.price.toFixed(2)} ${p.currency || ''}`.trim();
  return [p.title || p.id, [p.brand, price].filter(Boolean).join(' · ')].filter(Boolean);
}

/** Facet counts as buttons; pressing one adds its condition and searches again. */
export function showFacets(facets, onPick) {
  const box = $('#facets');
  box.replaceChildren();
  const names = Object.keys(facets || {}).filter((name) => Object.keys(facets[name]).length);
  box.hidden = !names.length;
  for (const name of names) {
    const group = document.createElement('div');
    group.className = 'facet';
    group.setAttribute('role', 'group');
    group.setAttribute('aria-label', name);
    const title = document.createElement('span');
    title.className = 'facet-name';
    title.textContent = name;
    group.append(title);
    for (const [value, count] of Object.entries(facets[name])) {
      const chip = document.createElement('button');
      chip.type = 'button';
      chip.className = 'chip';
      chip.textContent = `${value} (${count})`;
      chip.addEventListener('click', () => {
        const where = $('#where');
        where.value = [...conditions(), `${name}=${value}`].join('; ');
        onPick();
      });
      group.append(chip);
    }
    box.append(group);
  }
}

const state = { box: null, start: null };

/** Drag on the query image to draw a box; the search then uses that region only. */
export function boxTool(onChange) {
  const frame = $('#query-frame');
  const mark = $('#query-box');
  const fraction = (event) => {
    const r = frame.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (event.clientX - r.left) / r.width)),
      Math.min(1, Math.max(0, (event.clientY - r.top) / r.height))];
  };
  const draw = (box) => {
    mark.hidden = !box;
    if (!box) return;
    mark.style.left = `${box[0] * 100}%`;
    mark.style.top = `${box[1] * 100}%`;
    mark.style.width = `${(box[2] - box[0]) * 100}%`;
    mark.style.height = `${(box[3] - box[1]) * 100}%`;
  };
  const boxFrom = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  frame.addEventListener('pointerdown', (event) => {
    event.preventDefault();
    frame.setPointerCapture(event.pointerId);
    state.start = fraction(event);
  });
  frame.addEventListener('pointermove', (event) => {
    if (state.start) draw(boxFrom(state.start, fraction(event)));
  });
  frame.addEventListener('pointerup', (event) => {
    if (!state.start) return;
    const box = boxFrom(state.start, fraction(event));
    state.start = null;
    const big = box[2] - box[0] >= MIN_BOX && box[3] - box[1] >= MIN_BOX;
    setBox(big ? box.map((v) => Math.round(v * 1000) / 1000) : null);
    onChange();
  });
  $('#clear-box').addEventListener('click', () => { setBox(null); onChange(); });
  function setBox(box) {
    state.box = box;
    draw(box);
    $('#clear-box').hidden = !box;
    $('#box-hint').textContent = box ? 'Searching with the boxed region' : 'Drag on the image to search a region';
  }
  return setBox;
}
