// Jobs tab: submit an alignment (POST /v1/alignments), watch the live list (GET /v1/alignments): progress,
// stage, ETA, validation-loss curve; cancel (DELETE); download the mapping and the induced dictionary.
import {api, withQuery} from './api.js';
import {lossChart} from './chart.js';
import {errorBox} from './errors.js';
import {fillLanguages, refreshSpaces, spaces} from './spaces.js';
import {$, announce, fill, formatSeconds, h, saveBlob} from './util.js';

const ACTIVE = new Set(['queued', 'running']);
const LIST_LIMIT = 25;

/** 'source target' per line (tab, space or comma separated; '#' starts a comment) -> [[s, t], ...]. */
export function parseDictionary(text) {
  const pairs = [];
  const bad = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const clean = line.replace(/#.*/, '').trim();
    if (!clean) return;
    const parts = clean.split(/[\t ,;]+/).filter(Boolean);
    if (parts.length < 2) bad.push(i + 1); else pairs.push([parts[0], parts[1]]);
  });
  return {pairs, bad};
}

async function readDictionary(input) {
  const file = input.files && input.files[0];
  if (!file) return null;
  return parseDictionary(await file.text());
}

function optionsFromText(text) {
  if (!text.trim()) return {};
  let value;
  try { value = JSON.parse(text); } catch (e) {
    throw {status: 0, code: 'invalid_options', message: `Options are not valid JSON: ${e.message}`, detail: {field: 'options'}};
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw {status: 0, code: 'invalid_options', message: 'Options must be a JSON object, e.g. {"max_iter": 20}', detail: {field: 'options'}};
  }
  return value;
}

// ---- one job card, updated in place on every poll (focus stays where the user put it) ----------------
function jobCard(job) {
  const card = h('li', {class: 'card job', id: `job-${job.id}`, dataset: {id: job.id}},
    h('div', {class: 'job-head'},
      h('h3', {class: 'card-title'}, `${job.src} → ${job.tgt}`, h('span', {class: 'muted'}, ` · ${job.method} · seed ${job.seed}`)),
      h('span', {class: 'badge job-state'})),
    h('p', {class: 'job-id muted'}, 'job ', h('code', {}, job.id)),
    h('div', {class: 'job-progress'}),
    h('div', {class: 'job-chart'}),
    h('div', {class: 'job-result'}),
    h('div', {class: 'job-actions'}));
  card._state = null;
  return card;
}

function progressBlock(job) {
  const p = job.progress || {};
  const active = ACTIVE.has(job.state);
  const parts = [];
  if (p.stage) parts.push(`stage ${p.stage}`);
  if (p.total) parts.push(`${p.current ?? 0} / ${p.total}`);
  if (active && p.eta_s != null) parts.push(`ETA ${formatSeconds(p.eta_s)}`);
  if (p.elapsed_s != null) parts.push(`elapsed ${formatSeconds(p.elapsed_s)}`);
  if (job.state === 'queued') parts.push('waiting for a worker');
  if (job.cancel_requested && active) parts.push('cancelling at the next iteration…');
  const metrics = Object.entries(p.metrics || {}).filter(([, v]) => typeof v === 'number' || typeof v === 'string')
    .map(([k, v]) => `${k} ${typeof v === 'number' ? Number(v.toPrecision(4)) : v}`);
  const id = `prog-${job.id}`;
  const done = job.state === 'succeeded';
  const bar = p.total || done
    ? h('progress', {id, max: p.total || 1, value: done ? (p.total || 1) : (p.current || 0)})
    : h('progress', {id}); // indeterminate
  return [h('label', {for: id, class: 'job-progress-label'}, parts.join(' · ') || job.state), bar,
    metrics.length ? h('p', {class: 'muted small'}, metrics.join(' · ')) : null];
}

function resultBlock(job) {
  if (job.state === 'failed' && job.error) {
    return h('p', {class: 'word-error'}, h('code', {}, job.error.code), ' ', job.error.message);
  }
  if (job.state === 'cancelled') return h('p', {class: 'muted'}, 'Cancelled.');
  const r = job.result;
  if (job.state !== 'succeeded' || !r) return null;
  const ev = job.evaluation || {};
  const scores = Object.entries(ev).filter(([, v]) => typeof v === 'number').map(([k, v]) => `${k} ${Number(v.toPrecision(4))}`);
  return h('p', {class: 'small'}, 'mapping ', h('code', {}, r.mapping_version || r.mapping_sha256.slice(0, 12)),
    ` · ${r.dictionary_pairs} dictionary pairs`, r.align_seconds != null ? ` · aligned in ${formatSeconds(r.align_seconds)}` : '',
    r.serving ? [' · serving: ', h('strong', {class: `serving-${r.serving}`}, r.serving)] : '',
    scores.length ? ` · ${scores.join(' · ')}` : '');
}

async function download(path, filename, accept) {
  try {
    const resp = await api(path, {raw: true, accept});
    saveBlob(await resp.blob(), filename);
  } catch (err) {
    announce(`Download failed: ${err.message}`, 'error');
  }
}

function actionsBlock(job, onCancel) {
  const buttons = [];
  if (ACTIVE.has(job.state)) {
    buttons.push(h('button', {type: 'button', class: 'danger', 'aria-label': `Cancel job ${job.src} → ${job.tgt} ${job.id}`,
      disabled: job.cancel_requested, onclick: () => onCancel(job)}, job.cancel_requested ? 'Cancelling…' : 'Cancel'));
  }
  if (job.state === 'succeeded') {
    const base = `v1/alignments/${encodeURIComponent(job.id)}`;
    buttons.push(
      h('button', {type: 'button', onclick: () => {
        window.dispatchEvent(new CustomEvent('vislex:use-pair', {detail: {src: job.src, tgt: job.tgt}}));
        location.hash = '#translate';
      }}, 'Translate with it'),
      h('button', {type: 'button', class: 'secondary', onclick: () => download(`${base}/mapping`, `mapping-${job.id}.npz`)}, 'Mapping (.npz)'),
      h('button', {type: 'button', class: 'secondary', onclick: () => download(`${base}/dictionary`, `dictionary-${job.id}.tsv`, 'text/tab-separated-values')}, 'Dictionary (TSV)'),
      h('button', {type: 'button', class: 'secondary', onclick: () => download(`${base}/dictionary`, `dictionary-${job.id}.json`, 'application/json')}, 'Dictionary (JSON)'));
  }
  return buttons;
}

function updateCard(card, job, onCancel) {
  const badge = card.querySelector('.job-state');
  badge.textContent = job.state;
  badge.className = `badge job-state badge-${job.state}`;
  fill(card.querySelector('.job-progress'), progressBlock(job));
  const chart = lossChart(job.validation_losses || []);
  fill(card.querySelector('.job-chart'), chart ? [h('p', {class: 'small muted'}, 'validation loss'), chart] : null);
  fill(card.querySelector('.job-result'), resultBlock(job));
  const key = `${job.state}:${job.cancel_requested}`;
  if (card._state !== key) { // actions change with the state only: buttons (and focus) survive the polls
    const focused = card.contains(document.activeElement) && card.querySelector('.job-actions').contains(document.activeElement);
    fill(card.querySelector('.job-actions'), actionsBlock(job, onCancel));
    if (focused) (card.querySelector('.job-actions button') || card).focus?.();
    card._state = key;
  }
}

export function initJobs() {
  const form = $('#job-form');
  const list = $('#job-list');
  const listError = $('#job-list-error');
  const feedback = $('#job-feedback');
  const cards = new Map();
  const states = new Map(); // job id -> last seen state (to notice a job finishing)
  let timer = null;
  let first = true;

  const refillPickers = () => {
    const langs = spaces().languages;
    fillLanguages($('#job-src'), langs[0]);
    fillLanguages($('#job-tgt'), langs.find((l) => l !== $('#job-src').value) || langs[0]);
  };
  window.addEventListener('vislex:spaces', refillPickers);

  const seed = $('#job-seed');
  const dictRow = $('#job-dict-row');
  const showDict = () => { dictRow.hidden = seed.value !== 'dictionary'; };
  seed.addEventListener('change', showDict);
  $('#job-dict').addEventListener('change', async () => {
    const parsed = await readDictionary($('#job-dict'));
    fill($('#job-dict-info'), parsed ? `${parsed.pairs.length} pairs read${parsed.bad.length ? `; ${parsed.bad.length} lines without two words skipped (first: line ${parsed.bad[0]})` : ''}` : '');
  });

  async function cancel(job) {
    try {
      const body = await api(`v1/alignments/${encodeURIComponent(job.id)}`, {method: 'DELETE'});
      announce(body.state === 'cancelled' ? `Job ${job.id} cancelled.` : `Job ${job.id} will stop at its next iteration.`);
    } catch (err) {
      fill(feedback, errorBox(err));
    }
    poll();
  }

  async function poll() {
    clearTimeout(timer);
    let active = false;
    try {
      const body = await api(withQuery('v1/alignments', {limit: LIST_LIMIT}));
      listError.replaceChildren();
      const seen = new Set();
      body.jobs.forEach((job, i) => {
        seen.add(job.id);
        let card = cards.get(job.id);
        if (!card) { card = jobCard(job); cards.set(job.id, card); }
        if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
        updateCard(card, job, cancel);
        // state + where its mapping stands: a change to succeeded / installed is announced and the pickers
        // refresh, so Translate shows (and uses) the new mapping at once
        const now = `${job.state}/${job.result ? job.result.serving : ''}`;
        const before = states.get(job.id);
        if (!first && before !== now) {
          if (job.state === 'succeeded') {
            refreshSpaces().catch(() => {});
            if (!before || !before.startsWith('succeeded')) {
              announce(`Alignment ${job.src} → ${job.tgt} finished: Translate uses its mapping now.`, 'success');
            }
          } else if (job.state === 'failed') {
            announce(`Alignment ${job.src} → ${job.tgt} failed: ${job.error ? job.error.message : ''}`, 'error');
          }
        }
        states.set(job.id, now);
        active = active || ACTIVE.has(job.state) || (job.result && job.result.serving === 'installing');
      });
      for (const [id, card] of cards) if (!seen.has(id)) { card.remove(); cards.delete(id); }
      fill($('#job-count'), body.total ? `${body.total} job${body.total === 1 ? '' : 's'}${body.total > LIST_LIMIT ? ` (newest ${LIST_LIMIT} shown)` : ''}` : 'No jobs yet.');
      first = false;
    } catch (err) {
      fill(listError, errorBox(err, {retry: poll}));
    }
    timer = setTimeout(poll, active ? 1000 : 5000);
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    fill(feedback, h('p', {class: 'muted'}, 'Submitting…'));
    try {
      const body = {src: $('#job-src').value, tgt: $('#job-tgt').value, method: $('#job-method').value.trim(), seed: seed.value,
        options: optionsFromText($('#job-options').value)};
      if (seed.value === 'dictionary') {
        const parsed = await readDictionary($('#job-dict'));
        if (!parsed || !parsed.pairs.length) {
          throw {status: 0, code: 'no_dictionary', message: 'Seed "dictionary" needs a file of pairs: one "source target" per line.', detail: {field: 'dictionary'}};
        }
        body.dictionary = parsed.pairs;
      }
      const evalPairs = await readDictionary($('#job-eval'));
      if (evalPairs && evalPairs.pairs.length) body.evaluate_with = evalPairs.pairs;
      const job = await api('v1/alignments', {method: 'POST', json: body});
      fill(feedback, h('p', {class: 'ok', role: 'status'}, job.cached ? 'An identical job already exists: ' : 'Queued: ',
        h('a', {href: `#job-${job.id}`}, `${job.src} → ${job.tgt} (${job.method})`), ` · ${job.state}`));
      poll();
    } catch (err) {
      fill(feedback, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  $('#job-refresh').addEventListener('click', poll);
  showDict();
  refillPickers();
  poll();
}
