// Gallery thumbnails, kept by this browser (IndexedDB), keyed by the sha256 of the photo's bytes -- the
// same `hash` the gallery API reports for each image. The service stores embeddings, not photos, so a
// photo added from another browser shows its file name instead of a picture.

const DB = 'vislex-console';
const STORE = 'thumbs';
const SIZE = 192;
const memory = new Map();
let dbPromise = null;

function openDb() {
  if (!('indexedDB' in window)) return Promise.resolve(null);
  if (!dbPromise) {
    dbPromise = new Promise((resolve) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null); // private mode etc.: memory only
    });
  }
  return dbPromise;
}

/** sha256 hex of a File / Blob (null where crypto.subtle is not offered: plain http on a non-loopback host). */
export async function sha256Hex(blob) {
  if (!(window.crypto && crypto.subtle)) return null;
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** A small JPEG data URL of an image file (null when the browser cannot decode it). */
export async function makeThumb(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, SIZE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL('image/jpeg', 0.85);
  } catch {
    return null;
  }
}

export async function putThumb(hash, dataUrl) {
  if (!hash || !dataUrl) return;
  memory.set(hash, dataUrl);
  const db = await openDb();
  if (!db) return;
  await new Promise((resolve) => {
    const tx = db.transaction(STORE, 'readwrite');
    tx.objectStore(STORE).put(dataUrl, hash);
    tx.oncomplete = tx.onerror = tx.onabort = () => resolve();
  });
}

export async function getThumb(hash) {
  if (!hash) return null;
  if (memory.has(hash)) return memory.get(hash);
  const db = await openDb();
  if (!db) return null;
  return new Promise((resolve) => {
    const req = db.transaction(STORE).objectStore(STORE).get(hash);
    req.onsuccess = () => { if (req.result) memory.set(hash, req.result); resolve(req.result || null); };
    req.onerror = () => resolve(null);
  });
}

/**
 * Remember thumbnails of files just uploaded, given the API's answer (added + duplicates carry `hash` and
 * `filename`): matched by content hash where the browser can compute it, else by file name.
 */
export async function rememberUploads(files, answer) {
  const entries = [...(answer.added || []), ...(answer.duplicates || [])];
  const byName = new Map(entries.map((e) => [e.filename, e.hash]));
  await Promise.all(files.map(async (file) => {
    const hash = (await sha256Hex(file)) || byName.get(file.name);
    if (hash && !memory.has(hash)) await putThumb(hash, await makeThumb(file));
  }));
}
