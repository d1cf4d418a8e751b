// Small DOM helpers shared by the console's modules (no framework, no build step).

/** Create an element: h('button', {type: 'button', onclick: f, class: 'x'}, 'text', child, ...). */
export function h(tag, attrs = {}, ...children) {
  const node = tag === 'svg' || attrs.svg ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false || name === 'svg') continue;
    if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (name === 'class') node.setAttribute('class', value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name in node && !(node instanceof SVGElement) && typeof value !== 'string') node[name] = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A score bar: the visible number plus a bar whose length is `fraction` (0..1) of the track. */
export function scoreBar(score, fraction, label = 'score') {
  const bar = h('span', {class: 'bar-fill'});
  bar.style.setProperty('width', `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`);
  return h('span', {class: 'score'},
    h('span', {class: 'bar', 'aria-hidden': 'true'}, bar),
    h('span', {class: 'score-value', title: label}, formatScore(score)));
}

export function formatScore(x) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(3) : '–';
}

/** Bars of one result set share a scale: the largest positive score fills the track. */
export function barScale(scores) {
  const top = Math.max(0, ...scores.filter((s) => Number.isFinite(s)));
  return (s) => (top > 0 && Number.isFinite(s) ? s / top : 0);
}

export function formatSeconds(s) {
  if (typeof s !== 'number' || !Number.isFinite(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  return m < 90 ? `${m} min ${Math.round(s - m * 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Words from a textarea: one per line, or separated by commas / tabs (a word itself has no spaces). */
export function parseWords(text) {
  return text.split(/[\n,;\t]+/).map((w) => w.trim()).filter(Boolean);
}

/** Save a Blob under `filename` (works for authorised downloads fetched with the key). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', {href: url, download: filename, class: 'visually-hidden'});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Announce a short message to screen readers and show it in the toast area. */
export function announce(message, kind = 'info') {
  const area = document.getElementById('toasts');
  if (!area) return;
  const toast = h('p', {class: `toast toast-${kind}`}, message);
  area.append(toast);
  setTimeout(() => toast.remove(), 6000);
}
