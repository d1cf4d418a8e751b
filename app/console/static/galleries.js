// Galleries tab: create a gallery, drop photos in (POST .../images), search it by text in any language
// (GET .../search) or by a photo (POST .../search); results as a grid with scores.
import {api, withQuery} from './api.js';
import {errorBox} from './errors.js';
import {imageGrid} from './images.js';
import {getThumb, makeThumb, rememberUploads} from './thumbs.js';
import {$, announce, fill, h} from './util.js';

const CONTENT_LIMIT = 60;

export function initGalleries() {
  const select = $('#gal-select');
  const listOut = $('#gal-list-error');
  const uploadOut = $('#gal-upload-out');
  const contents = $('#gal-contents');
  const results = $('#gal-results');
  const drop = $('#gal-drop');
  const fileInput = $('#gal-files');
  let loaded = false;

  const gallery = () => select.value;
  const setEnabled = () => {
    const on = Boolean(gallery());
    for (const id of ['#gal-delete', '#gal-files', '#gal-search-submit']) $(id).disabled = !on;
    drop.classList.toggle('disabled', !on);
    drop.setAttribute('aria-disabled', String(!on));
  };

  async function loadLanguages() {
    try {
      const system = await api('v1/system');
      const langs = (system.models && system.models.retrieval && system.models.retrieval.languages) || [];
      $('#gal-langs').replaceChildren(...langs.map((l) => h('option', {value: l})));
    } catch { /* the datalist is only a help */ }
  }

  async function loadGalleries(selectId) {
    try {
      const body = await api('v1/galleries');
      listOut.replaceChildren();
      const keep = selectId || select.value;
      select.replaceChildren(...body.collections.map((c) => h('option', {value: c.id}, `${c.name || c.id} (${c.count} photo${c.count === 1 ? '' : 's'})`)));
      if (body.collections.some((c) => c.id === keep)) select.value = keep;
      if (!body.collections.length) select.append(h('option', {value: ''}, 'no gallery yet: create one'));
      loaded = true;
    } catch (err) {
      select.replaceChildren(h('option', {value: ''}, 'unavailable'));
      fill(listOut, errorBox(err, {retry: () => loadGalleries()}));
    }
    setEnabled();
    loadContents();
  }

  async function loadContents() {
    const id = gallery();
    if (!id) { contents.replaceChildren(); return; }
    try {
      const body = await api(withQuery(`v1/galleries/${encodeURIComponent(id)}/images`, {limit: CONTENT_LIMIT}));
      const items = body.images.map((img) => {
        const frame = h('div', {class: 'thumb'}, h('span', {class: 'thumb-missing'}, img.filename || `#${img.id}`));
        getThumb(img.hash).then((url) => { if (url) frame.replaceChildren(h('img', {src: url, alt: img.filename || `photo ${img.id}`})); });
        return h('li', {class: 'image-item', dataset: {key: String(img.id)}}, h('figure', {}, frame,
          h('figcaption', {}, h('span', {class: 'image-name', title: img.filename}, img.filename || `#${img.id}`),
            h('button', {type: 'button', class: 'link small', 'aria-label': `Remove ${img.filename || `photo ${img.id}`} from the gallery`,
              onclick: () => removeImage(img)}, 'remove'))));
      });
      fill(contents, h('p', {class: 'small muted'}, `${body.total} photo${body.total === 1 ? '' : 's'}${body.total > CONTENT_LIMIT ? ` (first ${CONTENT_LIMIT} shown)` : ''}`),
        items.length ? h('ol', {class: 'image-grid compact', 'aria-label': 'Photos in the gallery'}, items) : null);
    } catch (err) {
      fill(contents, errorBox(err, {compact: true}));
    }
  }

  async function removeImage(img) {
    try {
      await api(`v1/galleries/${encodeURIComponent(gallery())}/images/${img.id}`, {method: 'DELETE'});
      announce(`Removed ${img.filename || img.id}.`);
      loadGalleries();
    } catch (err) {
      fill(uploadOut, errorBox(err));
    }
  }

  async function upload(files) {
    files = [...files].filter((f) => f.size > 0);
    if (!files.length || !gallery()) return;
    const form = new FormData();
    for (const f of files) form.append('files', f, f.name);
    fill(uploadOut, h('p', {class: 'muted', role: 'status'}, `Adding ${files.length} photo${files.length === 1 ? '' : 's'}…`));
    try {
      const body = await api(`v1/galleries/${encodeURIComponent(gallery())}/images`, {method: 'POST', form});
      await rememberUploads(files, body);
      fill(uploadOut, h('p', {class: 'ok', role: 'status'}, `Added ${body.added.length}`,
        body.duplicates.length ? `, ${body.duplicates.length} already there` : '', ` · the gallery holds ${body.count}.`));
      loadGalleries();
    } catch (err) {
      fill(uploadOut, errorBox(err));
    }
  }

  async function search() {
    const id = gallery();
    const k = Number($('#gal-k').value);
    const byPhoto = $('#gal-mode-photo').checked;
    results.setAttribute('aria-busy', 'true');
    fill(results, h('p', {class: 'muted'}, 'Searching…'));
    try {
      let body;
      let query;
      if (byPhoto) {
        const file = $('#gal-query-file').files[0];
        if (!file) throw {status: 0, code: 'no_photo', message: 'Choose a photo to search with.', detail: {field: 'file'}};
        const form = new FormData();
        form.append('file', file, file.name);
        form.append('k', String(k));
        body = await api(`v1/galleries/${encodeURIComponent(id)}/search`, {method: 'POST', form});
        const url = await makeThumb(file);
        query = h('p', {class: 'meta'}, 'Photos most like ', url ? h('img', {class: 'query-thumb', src: url, alt: file.name}) : file.name);
      } else {
        const q = $('#gal-q').value.trim();
        if (!q) throw {status: 0, code: 'no_query', message: 'Type what to look for (any language).', detail: {field: 'q'}};
        const lang = $('#gal-lang').value.trim();
        body = await api(withQuery(`v1/galleries/${encodeURIComponent(id)}/search`, {q, lang, k}));
        query = h('p', {class: 'meta'}, 'Photos for “', h('span', {lang: lang || null}, q), '”', lang ? ` (${lang})` : '');
      }
      const items = body.results.map((r) => ({key: r.id, label: r.filename || `#${r.id}`, score: r.score, src: () => getThumb(r.hash)}));
      fill(results, query, items.length ? imageGrid(items, 'Search results') : h('p', {}, 'The gallery is empty.'));
    } catch (err) {
      fill(results, errorBox(err, {retry: search}));
    } finally {
      results.removeAttribute('aria-busy');
    }
  }

  $('#gal-create').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = $('#gal-name').value.trim();
    const gid = $('#gal-id').value.trim();
    try {
      const info = await api('v1/galleries', {method: 'POST', json: {name: name || null, ...(gid ? {id: gid} : {})}});
      $('#gal-name').value = '';
      $('#gal-id').value = '';
      announce(`Gallery ${info.name || info.id} created.`, 'success');
      await loadGalleries(info.id);
      listOut.replaceChildren();
    } catch (err) {
      fill(listOut, errorBox(err));
    }
  });
  $('#gal-delete').addEventListener('click', async () => {
    const id = gallery();
    if (!id || !window.confirm(`Delete gallery ${id} and all its photos?`)) return;
    try {
      await api(`v1/galleries/${encodeURIComponent(id)}`, {method: 'DELETE'});
      announce(`Gallery ${id} deleted.`);
      results.replaceChildren();
      loadGalleries();
    } catch (err) {
      fill(listOut, errorBox(err));
    }
  });
  select.addEventListener('change', () => { results.replaceChildren(); loadContents(); });
  fileInput.addEventListener('change', () => { upload(fileInput.files); fileInput.value = ''; });
  drop.addEventListener('click', () => { if (gallery()) fileInput.click(); });
  drop.addEventListener('keydown', (ev) => {
    if ((ev.key === 'Enter' || ev.key === ' ') && gallery()) { ev.preventDefault(); fileInput.click(); }
  });
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    upload(ev.dataTransfer.files);
  });
  const showMode = () => {
    const photo = $('#gal-mode-photo').checked;
    $('#gal-text-fields').hidden = photo;
    $('#gal-photo-fields').hidden = !photo;
  };
  for (const r of document.querySelectorAll('input[name=gal-mode]')) r.addEventListener('change', showMode);
  $('#gal-search').addEventListener('submit', (ev) => { ev.preventDefault(); search(); });
  showMode();

  // Loaded when the tab is first shown (and again once the service is ready).
  window.addEventListener('vislex:tab', (ev) => { if (ev.detail === 'galleries' && !loaded) { loadGalleries(); loadLanguages(); } });
  window.addEventListener('vislex:ready', () => { if (document.body.dataset.tab === 'galleries') { loadGalleries(); loadLanguages(); } });
}
