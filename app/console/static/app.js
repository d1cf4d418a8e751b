// The vislex web console: tabs (Translate, Jobs, Fingerprints, Galleries) over the public API.
import {initFingerprints} from './fingerprints.js';
import {initGalleries} from './galleries.js';
import {initJobs} from './jobs.js';
import {refreshSpaces} from './spaces.js';
import {startStatus} from './status.js';
import {initTranslate} from './translate.js';
import {$, announce} from './util.js';

const TABS = ['translate', 'jobs', 'fingerprints', 'galleries'];

function selectTab(name, {focus = false} = {}) {
  if (!TABS.includes(name)) name = TABS[0];
  for (const t of TABS) {
    const tab = $(`#tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#panel-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  document.body.dataset.tab = name;
  window.dispatchEvent(new CustomEvent('vislex:tab', {detail: name}));
}

function initTabs() {
  for (const t of TABS) {
    $(`#tab-${t}`).addEventListener('click', () => { history.replaceState(null, '', `#${t}`); selectTab(t); });
  }
  // Arrow keys move between tabs (WAI-ARIA tabs pattern); Home / End jump to the first / last.
  $('#tabs').addEventListener('keydown', (ev) => {
    const i = TABS.indexOf(document.body.dataset.tab);
    const next = {ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1}[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    const name = TABS[(next + TABS.length) % TABS.length];
    history.replaceState(null, '', `#${name}`);
    selectTab(name, {focus: true});
  });
  const fromHash = () => {
    const name = location.hash.slice(1).split('-')[0];
    if (TABS.includes(name)) selectTab(name);
    else if (location.hash.startsWith('#job-')) selectTab('jobs');
  };
  window.addEventListener('hashchange', fromHash);
  selectTab(TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'translate');
}

function loadSpaces() {
  refreshSpaces().catch((err) => {
    if (err.status === 401 || err.status === 403) return; // reads need a key: the key panel opens (below)
    setTimeout(loadSpaces, 2000); // 503 while loading: /readyz shows why
  });
}

// A server that wants a key for reads (VISLEX_AUTH_READS): ask for it once, and reload once it is given.
let askedForKey = false;
window.addEventListener('vislex:auth', (ev) => {
  if (askedForKey) return;
  askedForKey = true;
  announce(ev.detail.status === 401 ? 'This server needs an API key: enter it under “API key”.' : 'The API key is not accepted.', 'error');
  window.dispatchEvent(new Event('vislex:ask-key'));
});
window.addEventListener('vislex:key', () => { askedForKey = false; loadSpaces(); });

initTabs();
startStatus();
initTranslate();
initJobs();
initFingerprints();
initGalleries();
loadSpaces();
window.addEventListener('vislex:ready', loadSpaces);
if (document.body.dataset.tab === 'galleries') window.dispatchEvent(new CustomEvent('vislex:tab', {detail: 'galleries'}));
