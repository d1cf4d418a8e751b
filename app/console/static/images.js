// Image grids (fingerprints and gallery results): a figure per image with its rank, name and score bar.
import {objectUrl} from './api.js';
import {h, scoreBar} from './util.js';

/**
 * items: [{key, label, score, src (async () => url | null), badges: [...], extra}], in rank order.
 * Pictures load after the grid is shown; a missing picture leaves the name in its place.
 */
export function imageGrid(items, label) {
  // Cosine similarities: the bar is the score itself (0..1), so close scores look close.
  const scale = (s) => (Number.isFinite(s) ? Math.max(0, Math.min(1, s)) : 0);
  const grid = h('ol', {class: 'image-grid', 'aria-label': label});
  for (const [rank, item] of items.entries()) {
    const frame = h('div', {class: 'thumb', 'aria-hidden': 'true'}, h('span', {class: 'thumb-missing'}, item.label));
    const fig = h('li', {class: `image-item${item.highlight ? ' highlight' : ''}`, dataset: {key: String(item.key)}},
      h('figure', {},
        frame,
        h('figcaption', {},
          h('span', {class: 'rank'}, `${rank + 1}.`), ' ', h('span', {class: 'image-name', title: item.label}, item.label),
          (item.badges || []).map((b) => h('span', {class: 'badge badge-small'}, b)),
          scoreBar(item.score, scale(item.score), 'similarity'),
          item.extra || null)));
    grid.append(fig);
    if (item.src) {
      item.src().then((url) => {
        if (!url) return;
        frame.replaceChildren(h('img', {src: url, alt: `${item.label}`, loading: 'lazy', decoding: 'async'}));
        frame.removeAttribute('aria-hidden');
      }).catch(() => {});
    }
  }
  return grid;
}

// Object URLs of thumbnails fetched with the key (an <img src> cannot send Authorization), reused per path.
const urls = new Map();
export function fetchedImage(path) {
  return async () => {
    if (!urls.has(path)) urls.set(path, objectUrl(path).catch((err) => { urls.delete(path); throw err; }));
    return urls.get(path);
  };
}
