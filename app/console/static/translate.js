// Translate tab: one word (GET /v1/translate) or a list (POST /v1/translate), NN or CSLS, k, score bars,
// per-word errors inline, and the query's own neighbours (GET /v1/spaces/{lang}/neighbors) on demand.
import {api, withQuery} from './api.js';
import {errorBox, isTransient} from './errors.js';
import {fillLanguages, mappingFor, refreshSpaces, spaces} from './spaces.js';
import {$, barScale, fill, h, parseWords, scoreBar} from './util.js';

const MAX_TRANSIENT_RETRIES = 30;

function translationList(translations, label) {
  const scale = barScale(translations.map((t) => t.score));
  return h('ol', {class: 'translations', 'aria-label': label},
    translations.map((t, i) => h('li', {}, h('span', {class: 'rank'}, `${i + 1}.`), h('span', {class: 'word'}, t.word),
      scoreBar(t.score, scale(t.score)))));
}

function neighboursButton(word, lang, k) {
  const out = h('div', {class: 'neighbours', 'aria-live': 'polite'});
  const button = h('button', {type: 'button', class: 'link', 'aria-expanded': 'false'}, `Neighbours of “${word}” in ${lang}`);
  button.addEventListener('click', async () => {
    if (button.getAttribute('aria-expanded') === 'true') {
      button.setAttribute('aria-expanded', 'false');
      out.replaceChildren();
      return;
    }
    button.setAttribute('aria-expanded', 'true');
    fill(out, h('p', {class: 'muted'}, 'Loading…'));
    try {
      const body = await api(withQuery(`v1/spaces/${encodeURIComponent(lang)}/neighbors`, {word, k}));
      fill(out, translationList(body.neighbors, `Nearest words of ${word} in ${lang}`));
    } catch (err) {
      fill(out, errorBox(err, {compact: true}));
    }
  });
  return [button, out];
}

function wordCard(item, ctx) {
  const head = h('h3', {class: 'card-title'}, h('span', {lang: ctx.src}, item.word), h('span', {class: 'muted'}, ` ${ctx.src} → ${ctx.tgt}`),
    item.cached ? h('span', {class: 'badge'}, 'cached') : null);
  // A word of a batch the service could not translate: its own error entry, shown in place.
  const body = item.error
    ? h('p', {class: 'word-error', dataset: {code: item.error.code}}, h('code', {}, item.error.code), ' ', item.error.message)
    : translationList(item.translations, `Translations of ${item.word}`);
  return h('article', {class: 'card word-card', dataset: {word: item.word}}, head, body,
    item.error ? null : neighboursButton(item.word, ctx.src, ctx.k));
}

export function initTranslate() {
  const form = $('#translate-form');
  const src = $('#tr-src');
  const tgt = $('#tr-tgt');
  const results = $('#tr-results');
  const pairInfo = $('#tr-pair');
  let retries = 0;

  const showPair = () => {
    if (!src.value || !tgt.value) { fill(pairInfo, 'No languages served yet.'); return; }
    const m = mappingFor(src.value, tgt.value);
    fill(pairInfo, m ? [`Mapping ${src.value} → ${tgt.value}: `, h('code', {}, m.version), ` (${m.method})`]
      : [`No mapping ${src.value} → ${tgt.value} is served yet: run an alignment in the `, h('a', {href: '#jobs'}, 'Jobs'), ' tab.']);
  };
  const refillPickers = () => {
    const {languages: langs, pairs} = spaces();
    // first time: a pair that has a mapping (else the first two languages); afterwards the user's choice stays
    const [ps, pt] = (!src.value && pairs.length ? pairs[0].split('-') : [langs[0], null]);
    fillLanguages(src, ps);
    fillLanguages(tgt, pt || langs.find((l) => l !== src.value) || langs[0]);
    showPair();
  };
  window.addEventListener('vislex:spaces', refillPickers);
  src.addEventListener('change', showPair);
  tgt.addEventListener('change', showPair);
  $('#tr-swap').addEventListener('click', () => {
    [src.value, tgt.value] = [tgt.value, src.value];
    showPair();
  });
  // A job that finished (Jobs tab) hands its pair over.
  window.addEventListener('vislex:use-pair', (ev) => {
    src.value = ev.detail.src;
    tgt.value = ev.detail.tgt;
    showPair();
  });

  async function run() {
    const words = parseWords($('#tr-words').value);
    const k = Number($('#tr-k').value);
    const retrieval = form.elements.retrieval.value;
    const excludeIdentical = $('#tr-exclude').checked;
    const ctx = {src: src.value, tgt: tgt.value, k};
    if (!words.length) {
      fill(results, errorBox({status: 0, code: 'no_words', message: 'Type a word (or several, one per line).', detail: {field: 'words'}}, {compact: true}));
      $('#tr-words').focus();
      return;
    }
    results.setAttribute('aria-busy', 'true');
    fill(results, h('p', {class: 'muted'}, 'Translating…'));
    try {
      let items;
      let meta;
      if (words.length === 1) {
        const body = await api(withQuery('v1/translate', {word: words[0], src: ctx.src, tgt: ctx.tgt, k, retrieval,
          exclude_identical: excludeIdentical || null}));
        items = [{word: body.word, translations: body.translations, cached: body.cached}];
        meta = body;
      } else {
        meta = await api('v1/translate', {method: 'POST', json: {words, src: ctx.src, tgt: ctx.tgt, k, retrieval, exclude_identical: excludeIdentical}});
        items = meta.results;
      }
      retries = 0;
      fill(results,
        h('p', {class: 'meta'}, `${retrieval.toUpperCase()} · k = ${k} · mapping `, h('code', {}, meta.mapping_version),
          items.some((i) => i.error) ? ` · ${items.filter((i) => i.error).length} of ${items.length} words not translated` : ''),
        h('div', {class: 'cards'}, items.map((item) => wordCard(item, ctx))));
    } catch (err) {
      if (isTransient(err) && retries < MAX_TRANSIENT_RETRIES) {
        retries += 1;
        fill(results, errorBox(err));
        setTimeout(run, 1000 * (err.retryAfter || 1));
        return;
      }
      retries = 0;
      fill(results, errorBox(err, {retry: run}));
      if (err.status === 404) refreshSpaces().catch(() => {});
    } finally {
      results.removeAttribute('aria-busy');
    }
  }

  form.addEventListener('submit', (ev) => { ev.preventDefault(); run(); });
  // Enter translates; Shift+Enter starts a new line (for a list typed by hand; a pasted list keeps its lines).
  $('#tr-words').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); run(); }
  });
  refillPickers();
}
