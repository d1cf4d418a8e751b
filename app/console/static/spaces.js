// The served word spaces (GET /v1/spaces), shared by the tabs: language pickers and pair/mapping info.
import {api} from './api.js';
import {h} from './util.js';

let current = {languages: [], pairs: [], spaces: []};
let pending = null;

export const spaces = () => current;

/** Reload GET /v1/spaces; every picker listening to 'vislex:spaces' refreshes. */
export async function refreshSpaces() {
  if (!pending) {
    pending = api('v1/spaces').then((body) => {
      current = body;
      window.dispatchEvent(new CustomEvent('vislex:spaces', {detail: body}));
      return body;
    }).finally(() => { pending = null; });
  }
  return pending;
}

/** The mapping served for src -> tgt (with version and method), or null. */
export function mappingFor(src, tgt) {
  const space = current.spaces.find((s) => s.lang === src);
  return space ? (space.mappings || []).find((m) => m.tgt === tgt) || null : null;
}

/** Fill a <select> with the served languages, keeping its choice (or `preferred`) when still offered. */
export function fillLanguages(select, preferred) {
  const keep = select.value || preferred;
  const langs = current.languages;
  select.replaceChildren(...langs.map((lang) => h('option', {value: lang}, lang)));
  if (langs.includes(keep)) select.value = keep;
  else if (preferred && langs.includes(preferred)) select.value = preferred;
  select.disabled = langs.length === 0;
}

/** A <datalist> of the served languages (for fields that also take other codes). */
export function fillDatalist(list) {
  list.replaceChildren(...current.languages.map((lang) => h('option', {value: lang})));
}
