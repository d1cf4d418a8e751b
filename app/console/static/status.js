// Service state: /readyz polled (loading progress, what is unavailable and why), and the API key panel.
import {api, apiKey, ApiError, setApiKey} from './api.js';
import {FIXES} from './errors.js';
import {$, fill, formatSeconds, h} from './util.js';

let ready = false;
export const isReady = () => ready;

function progressOf(components) {
  const p = components.spaces && components.spaces.progress;
  if (!p || !p.languages_total) return null;
  return p;
}

function summary(state, components) {
  if (state === 'ready') {
    const off = Object.entries(components).filter(([, c]) => c.state !== 'ready');
    return off.length ? `Ready · ${off.map(([n, c]) => `${n} ${c.state}`).join(', ')}` : 'Ready';
  }
  if (state === 'down') return 'Not answering';
  const p = progressOf(components);
  const loading = Object.entries(components).filter(([, c]) => c.required && c.state !== 'ready').map(([n, c]) => `${n} ${c.state}`);
  const langs = p ? ` · languages ${p.languages_built}/${p.languages_total}${p.building ? ` (building ${p.building})` : ''}` : '';
  return `Starting: ${loading.join(', ') || 'checking'}${langs}`;
}

function componentTable(components) {
  const rows = Object.entries(components).map(([name, c]) => {
    const fix = c.state !== 'ready' && c.state !== 'loading' && c.state !== 'pending' ? FIXES[name] : null;
    return h('tr', {class: `state-${c.state}`},
      h('th', {scope: 'row'}, name),
      h('td', {}, h('span', {class: `badge badge-${c.state}`}, c.state)),
      h('td', {}, c.required ? 'required' : 'optional'),
      h('td', {}, c.reason || (c.seconds != null ? `loaded in ${formatSeconds(c.seconds)}` : '')),
      h('td', {}, fix ? h('code', {}, fix) : ''));
  });
  return h('table', {class: 'components'},
    h('caption', {class: 'visually-hidden'}, 'Components of the service'),
    h('thead', {}, h('tr', {}, ['Component', 'State', 'Needed', 'Reason', 'Setting that fixes it'].map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, rows));
}

function languageProgress(p) {
  if (!p) return null;
  const eta = p.per_language_s && Object.keys(p.per_language_s).length
    ? Object.values(p.per_language_s).reduce((a, b) => a + b, 0) / Object.keys(p.per_language_s).length : null;
  const left = p.languages_total - p.languages_built;
  return h('div', {class: 'progress-block'},
    h('label', {for: 'ready-progress'}, `Word spaces built: ${p.languages_built} of ${p.languages_total}`,
      p.building ? ` · building ${p.building}` : '', ` · ${formatSeconds(p.seconds)} so far`,
      eta && left > 0 ? ` · about ${formatSeconds(eta * left)} left` : ''),
    h('progress', {id: 'ready-progress', max: p.languages_total, value: p.languages_built}));
}

function render(state, components) {
  const chip = $('#status');
  chip.dataset.state = state;
  fill(chip, h('span', {class: 'dot', 'aria-hidden': 'true'}), summary(state, components));
  const panel = $('#readiness');
  const body = $('#readiness-body');
  if (state === 'down') {
    fill(body, h('p', {}, 'The server does not answer. Start it with ', h('code', {}, 'make run'), ' (or ', h('code', {}, 'vislex serve'), ').'));
  } else {
    fill(body, languageProgress(progressOf(components)), componentTable(components));
  }
  // Open while the service is not ready; once ready it stays as the user left it.
  if (state !== 'ready') panel.open = true;
}

async function poll() {
  let state = 'down';
  let components = {};
  try {
    const body = await api('readyz');
    state = 'ready';
    components = body.components || {};
  } catch (err) {
    if (err instanceof ApiError && err.status === 503) {
      state = 'loading';
      components = (err.detail && err.detail.components) || {};
    }
  }
  render(state, components);
  const was = ready;
  ready = state === 'ready';
  if (ready && !was) window.dispatchEvent(new Event('vislex:ready'));
  setTimeout(poll, ready ? 15000 : 1000);
}

function keyPanel() {
  const button = $('#key-button');
  const panel = $('#key-panel');
  const input = $('#api-key');
  const note = $('#key-state');
  const show = (open) => {
    panel.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open) input.focus();
  };
  const describe = () => {
    const set = Boolean(apiKey());
    fill(note, set ? 'A key is set for this tab.' : 'No key set: writes fail with 401 when the server requires one.');
    button.textContent = set ? 'API key ✓' : 'API key';
  };
  button.addEventListener('click', () => show(panel.hidden));
  $('#key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setApiKey(input.value.trim());
    input.value = '';
    describe();
    show(false);
    button.focus();
  });
  $('#key-forget').addEventListener('click', () => { setApiKey(''); describe(); input.focus(); });
  panel.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { show(false); button.focus(); } });
  window.addEventListener('vislex:ask-key', () => show(true));
  describe();
}

export function startStatus() {
  keyPanel();
  poll();
}
