// Small DOM helpers every view of the page uses. Server data goes in as textContent, never as markup.

/** A new element with an optional class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** The last part of a path: what a file is called. */
export const fileName = (path) => (path || '').split(/[\\/]/).pop() || 'image';
