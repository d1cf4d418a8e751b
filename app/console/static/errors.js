// How the console shows what the service reports: every error of the contract, with the reason,
// the field at fault, and -- for a 503 -- the setting that fixes it.
import {h} from './util.js';

// What configures each component (detail.component / detail.reason / error code -> the settings to look at).
export const FIXES = {
  redis: 'VISLEX_REDIS_URL (or leave it unset: `vislex serve` starts an embedded Redis)',
  redis_unavailable: 'VISLEX_REDIS_URL must answer (requests serve again by themselves once Redis is back)',
  jobs: 'VISLEX_REDIS_URL (jobs live in Redis), and a running worker (`vislex worker`)',
  spaces: 'VISLEX_SPACES (vector files) or VISLEX_ENCODER_LANGUAGES',
  space_unavailable: 'VISLEX_ENCODER_LANGUAGES / VISLEX_TEXT_ENCODER (the language could not be built)',
  clip: 'VISLEX_CLIP_CHECKPOINT, VISLEX_CLIP_MODELS or VISLEX_CLIP_MODEL + VISLEX_CLIP_PRETRAINED (CLIP weights on this machine)',
  encoder_unavailable: 'VISLEX_CLIP_CHECKPOINT or VISLEX_CLIP_MODELS (CLIP weights on this machine)',
  uclip: 'VISLEX_CLIP_CHECKPOINT or VISLEX_CLIP_MODELS (CLIP weights), and VISLEX_TEXT_ENCODER',
  uclip_heads: 'VISLEX_UCLIP_CHECKPOINT, or train heads with POST /v1/uclip/trainings',
  no_images: 'VISLEX_IMAGES_DIR (a folder of images)',
  images_unavailable: 'VISLEX_IMAGES_DIR (a folder of images)',
};

const TITLES = {
  0: 'No answer', 400: 'Malformed request', 401: 'API key needed', 403: 'API key not accepted', 404: 'Not found',
  405: 'Method not allowed', 409: 'Conflict', 413: 'Too large', 414: 'Too long', 415: 'Unsupported media type',
  422: 'Invalid input', 429: 'Overloaded', 500: 'Server error', 503: 'Unavailable',
};

/** The settings that fix an error, or null (detail.setting when the server names one). */
export function fixFor(err) {
  const d = err.detail || {};
  if (d.setting) return d.setting;
  if (err.status !== 503 && err.code !== 'payload_too_large') return null;
  return FIXES[d.component] || FIXES[d.reason] || FIXES[err.code] || null;
}

/** Transient answers a client should simply retry (after Retry-After). */
export const isTransient = (err) => ['space_loading', 'installing', 'overloaded'].includes(err.code);

function fields(err) {
  const d = err.detail || {};
  if (Array.isArray(d.errors) && d.errors.length) {
    return h('ul', {class: 'error-fields'}, d.errors.map((e) => h('li', {}, h('code', {}, e.field), ': ', e.message)));
  }
  const extra = [];
  if (d.field) extra.push(h('li', {}, 'field: ', h('code', {}, d.field)));
  if (Array.isArray(d.known)) extra.push(h('li', {}, 'known: ', d.known.join(', ')));
  if (Array.isArray(d.supported)) extra.push(h('li', {}, 'supported: ', d.supported.join(', ')));
  if (Array.isArray(d.languages)) extra.push(h('li', {}, 'languages: ', d.languages.join(', ') || 'none'));
  if (d.max !== undefined) extra.push(h('li', {}, 'max: ', String(d.max)));
  if (d.request_id) extra.push(h('li', {}, 'request id: ', h('code', {}, d.request_id)));
  return extra.length ? h('ul', {class: 'error-fields'}, extra) : null;
}

/**
 * An error box (role=alert): status and code, the service's message, the fields at fault, the fix.
 * `retry`: a function offered as a Retry button.
 */
export function errorBox(err, {retry = null, compact = false} = {}) {
  if (!(err && 'status' in err)) err = {status: 0, code: 'client_error', message: String(err && err.message || err), detail: {}};
  const fix = fixFor(err);
  const status = err.status ? ` (${err.status})` : '';
  const box = h('div', {class: `error${compact ? ' error-compact' : ''}`, role: 'alert', dataset: {code: err.code, status: String(err.status)}},
    h('p', {class: 'error-title'}, h('strong', {}, (TITLES[err.status] || 'Error') + status), ' ', h('code', {}, err.code)),
    h('p', {class: 'error-message'}, err.message),
    compact ? null : fields(err),
    fix ? h('p', {class: 'error-fix'}, h('strong', {}, 'Setting that fixes it: '), h('code', {}, fix)) : null,
    isTransient(err) ? h('p', {class: 'error-hint'}, `Temporary: retry in ${err.retryAfter || 1} s.`) : null,
  );
  const actions = [];
  if (err.status === 401 || err.status === 403) {
    actions.push(h('button', {type: 'button', class: 'secondary', onclick: () => window.dispatchEvent(new Event('vislex:ask-key'))},
      err.status === 401 ? 'Enter an API key' : 'Change the API key'));
  }
  if (retry) actions.push(h('button', {type: 'button', class: 'secondary', onclick: retry}, 'Retry'));
  if (actions.length) box.append(h('p', {class: 'error-actions'}, actions));
  return box;
}
