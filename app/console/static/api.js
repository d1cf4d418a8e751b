// The API client: every call goes through api(), which sends the key and turns the error contract
// ({"error": {"code", "message", "detail"}}) into an ApiError.

const KEY_STORAGE = 'vislex.apiKey';

export function apiKey() {
  try { return sessionStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lasts as long as the page */ }
  memoryKey = key || '';
  window.dispatchEvent(new CustomEvent('vislex:key', {detail: {set: Boolean(key)}}));
}

let memoryKey = '';
const currentKey = () => apiKey() || memoryKey;

export class ApiError extends Error {
  constructor(status, code, message, detail = {}, retryAfter = null) {
    super(message);
    this.status = status;        // 0: the server did not answer
    this.code = code;
    this.detail = detail || {};
    this.retryAfter = retryAfter; // seconds, from Retry-After
  }
}

/** Build `path?query` from an object, leaving out null / undefined / '' values. */
export function withQuery(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.append(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/**
 * Call the API. `path` is relative to the page ('v1/spaces'), so the console also works behind a path prefix.
 * Options: method, json (a body sent as JSON), form (a FormData), accept, raw (return the Response).
 */
export async function api(path, {method = 'GET', json, form, accept, raw = false, signal} = {}) {
  const headers = {};
  const key = currentKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (accept) headers.Accept = accept;
  let body;
  if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  else if (form !== undefined) body = form;
  let resp;
  try {
    resp = await fetch(path, {method, headers, body, signal, cache: 'no-store'});
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', 'The server did not answer (is `vislex serve` running?)', {});
  }
  if (!resp.ok) throw await errorFrom(resp);
  if (raw) return resp;
  if (resp.status === 204) return null;
  const type = resp.headers.get('content-type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

async function errorFrom(resp) {
  const retry = Number(resp.headers.get('retry-after'));
  const retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  const e = body && body.error;
  const err = e && typeof e === 'object'
    ? new ApiError(resp.status, e.code || 'error', e.message || resp.statusText, e.detail || {}, retryAfter)
    : new ApiError(resp.status, 'http_error', `${resp.status} ${resp.statusText}`, {}, retryAfter);
  if (resp.status === 401 || resp.status === 403) window.dispatchEvent(new CustomEvent('vislex:auth', {detail: err}));
  return err;
}

/** An image (or any file) fetched with the key, as an object URL for <img src> (revoke when done). */
export async function objectUrl(path) {
  const resp = await api(path, {raw: true});
  return URL.createObjectURL(await resp.blob());
}
