// Fingerprints tab: a word in any language -> its most similar photos (GET /v1/fingerprints) with scores
// and the visual-word verdict; two words side by side, their shared photos marked (why they pair).
import {api, withQuery} from './api.js';
import {errorBox} from './errors.js';
import {fetchedImage, imageGrid} from './images.js';
import {fillDatalist} from './spaces.js';
import {$, fill, formatScore, h} from './util.js';

function verdict(fp) {
  if (fp.is_visual === null || fp.is_visual === undefined) return h('span', {class: 'badge'}, 'no verdict (no reference words)');
  const cmp = `max ${formatScore(fp.max_similarity)} ${fp.is_visual ? '≥' : '<'} threshold ${formatScore(fp.visual_threshold)}`;
  return fp.is_visual
    ? h('span', {class: 'badge badge-succeeded verdict', dataset: {visual: 'true'}}, `✓ visual word (${cmp})`)
    : h('span', {class: 'badge badge-failed verdict', dataset: {visual: 'false'}}, `✗ not a visual word (${cmp})`);
}

function column(fp, shared, side) {
  const thumb = (name) => fetchedImage(withQuery(`v1/fingerprints/images/${encodeURIComponent(name)}`, {size: 256}));
  const items = fp.images.map((img) => ({key: img.name, label: img.name, score: img.similarity, src: thumb(img.name),
    highlight: shared.has(img.name), badges: shared.has(img.name) ? ['shared'] : []}));
  return h('section', {class: 'fp-column', 'aria-label': `Fingerprint of ${fp.word} (${fp.lang})`, dataset: {side}},
    h('h3', {class: 'card-title'}, h('span', {lang: fp.lang}, fp.word), h('span', {class: 'muted'}, ` (${fp.lang})`)),
    h('p', {}, verdict(fp)),
    h('p', {class: 'small muted'}, `encoder ${fp.encoder}`, fp.reused_from ? ` · borrows the ${fp.reused_from} text tower` : '',
      ` · top ${fp.images.length} of ${fp.n_images} images`),
    imageGrid(items, `Most similar images for ${fp.word}`));
}

export function initFingerprints() {
  const form = $('#fp-form');
  const out = $('#fp-results');
  window.addEventListener('vislex:spaces', () => fillDatalist($('#fp-langs')));

  async function fetchOne(word, lang, top) {
    return api(withQuery('v1/fingerprints', {word, lang, top}));
  }

  async function run() {
    const top = Number($('#fp-top').value);
    const a = {word: $('#fp-word-a').value.trim(), lang: $('#fp-lang-a').value.trim() || 'en'};
    const b = {word: $('#fp-word-b').value.trim(), lang: $('#fp-lang-b').value.trim() || 'en'};
    if (!a.word) {
      fill(out, errorBox({status: 0, code: 'no_word', message: 'Type a word.', detail: {field: 'word'}}, {compact: true}));
      $('#fp-word-a').focus();
      return;
    }
    out.setAttribute('aria-busy', 'true');
    fill(out, h('p', {class: 'muted'}, 'Looking at the photos…'));
    const settle = (p) => p.then((value) => ({value}), (error) => ({error}));
    const [ra, rb] = await Promise.all([settle(fetchOne(a.word, a.lang, top)), b.word ? settle(fetchOne(b.word, b.lang, top)) : null]);
    out.removeAttribute('aria-busy');
    const names = (r) => new Set(r && r.value ? r.value.images.map((i) => i.name) : []);
    const na = names(ra);
    const nb = names(rb);
    const shared = new Set([...na].filter((n) => nb.has(n)));
    const col = (r, side) => (r.error ? h('section', {class: 'fp-column', dataset: {side}}, errorBox(r.error, {retry: run})) : column(r.value, shared, side));
    const summary = rb && ra.value && rb.value
      ? h('p', {class: 'meta', role: 'status'}, `${shared.size} of the top ${top} photos are shared by “${a.word}” and “${b.word}”`,
        shared.size ? ' (marked): that overlap is what pairs them as translations.' : '.')
      : null;
    fill(out, summary, h('div', {class: rb ? 'fp-columns two' : 'fp-columns'}, col(ra, 'a'), rb ? col(rb, 'b') : null));
  }

  form.addEventListener('submit', (ev) => { ev.preventDefault(); run(); });
  $('#fp-swap').addEventListener('click', () => {
    for (const f of ['word', 'lang']) {
      const x = $(`#fp-${f}-a`);
      const y = $(`#fp-${f}-b`);
      [x.value, y.value] = [y.value, x.value];
    }
  });
}
