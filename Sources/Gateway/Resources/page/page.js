// The page for people: starts, watches, cancels and downloads exports
// through the same API as every other client. No framework, no build step,
// nothing fetched from anywhere but this gateway.
//
// - The token (when the gateway has tokens) lives in this tab's
//   sessionStorage and goes in the Authorization header, never in a URL.
//   Downloads use the signed links of the status JSON, so the browser's own
//   download manager fetches (and resumes) them without a token.
// - Every value is judged by the API, which answers a bad one with
//   {"parameter": …, "message": …}: the message is shown next to that field.
// - The list is polled: every second while an export is queued or running,
//   every 10 s otherwise (another tab or client may start one).
// - Data from the server only ever reaches the page as text (textContent).
'use strict';

(() => {
  const COLUMNS = ['id', 'email', 'full_name', 'country_code', 'subscription_tier', 'lifetime_value', 'created_at', 'last_login_at', 'notes'];
  const FIELDS = ['country_code', 'subscription_tier', 'min_ltv', 'columns', 'delimiter', 'quoteChar', 'header', 'nullAs', 'bom', 'lineEnding', 'excel'];
  const TOKEN_KEY = 'csv-gateway-token';
  const PAGE_SIZE = 20;
  const ACTIVE = new Set(['queued', 'running']);

  const $ = (id) => document.getElementById(id);
  const state = {
    tokensOn: false,
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    items: new Map(),     // export id -> { data, element }
    cursor: null,         // the next page after those shown, if any
    timer: null,
    stopped: false,       // polling waits for a token
    generation: 0,        // bumped when the token changes: older answers are dropped
  };

  // MARK: API

  class APIFailure extends Error {
    constructor(status, body, retryAfter) {
      super((body && body.message) || `the gateway answered ${status}`);
      this.status = status;
      this.body = body || {};
      this.retryAfter = retryAfter;
    }
  }

  /// The answer of one API call, or an APIFailure. An answer to a call made
  /// with another token than the current one is dropped (status -1): it
  /// would put the previous owner's exports back on the page.
  async function api(method, path) {
    const generation = state.generation;
    const headers = { Accept: 'application/json' };
    if (state.tokensOn && state.token) headers.Authorization = `Bearer ${state.token}`;
    let response;
    try {
      response = await fetch(path, { method, headers, cache: 'no-store', credentials: 'omit' });
    } catch (error) {
      throw new APIFailure(0, { message: 'the gateway cannot be reached' });
    }
    let body = null;
    if (response.status !== 204) {
      try { body = await response.json(); } catch (error) { body = null; }
    }
    if (generation !== state.generation) throw new APIFailure(-1, { message: 'the token changed' });
    if (!response.ok) throw new APIFailure(response.status, body, response.headers.get('Retry-After'));
    return body;
  }

  // MARK: Access

  async function loadAccess() {
    const note = $('access-note');
    let health = null;
    try {
      const response = await fetch('/health', { cache: 'no-store', credentials: 'omit' });
      health = await response.json();
    } catch (error) {
      note.textContent = 'The gateway does not answer. This page will try again.';
      return false;
    }
    state.tokensOn = health.access === 'tokens';
    if (state.tokensOn) {
      $('token-section').hidden = false;
      note.textContent = 'This gateway needs an API token. Each token sees only the exports made with it.';
      $('token').value = state.token;
    } else {
      $('token-section').hidden = true;
      const why = /ALLOW_ANONYMOUS/.test(health.access || '') ? 'ALLOW_ANONYMOUS is set' : 'it listens on this machine only';
      note.textContent = `This gateway is open: no token is needed (${why}), and every export is listed.`;
    }
    if (health.status !== 'ok') note.textContent += ' It reports a problem just now: ' + describeHealth(health) + '.';
    return true;
  }

  function describeHealth(health) {
    return ['database', 'cache', 'journal'].filter((part) => health[part] && health[part] !== 'ok')
      .map((part) => `${part}: ${health[part]}`).join(', ') || 'unhealthy';
  }

  function setupToken() {
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('token').value.trim();
      // RFC 6750's b64token, as the gateway takes it. Anything else could not
      // even be sent in a header (the browser refuses non-Latin-1 text).
      if (token !== '' && !/^[A-Za-z0-9._~+\/-]+=*$/.test(token)) {
        needToken('A token is made of letters, digits and - . _ ~ + / only; this one has other characters.', true);
        $('token').focus();
        return;
      }
      useToken(token);
      clearErrors();
      if (token) refresh(); else needToken('Give your API token to see and start exports.', false);
    });
    $('token-forget').addEventListener('click', () => {
      useToken('');
      $('token').value = '';
      needToken('Give your API token to see and start exports.', false);
    });
  }

  /// A new token (or none): what was shown for the old one goes, and any
  /// answer still on its way for it is dropped.
  function useToken(token) {
    state.generation += 1;
    state.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    $('token-error').textContent = '';
    $('token').removeAttribute('aria-invalid');
    clearList();
    state.stopped = false;
  }

  /// Polling stops until a token is given; `refused` marks the field invalid.
  function needToken(message, refused) {
    state.stopped = true;
    clearTimeout(state.timer);
    $('token-error').textContent = refused ? message : '';
    if (refused) $('token').setAttribute('aria-invalid', 'true'); else $('token').removeAttribute('aria-invalid');
    $('list-note').textContent = refused ? 'No exports shown: the gateway needs a valid token.' : message;
  }

  // MARK: The form

  function setupForm() {
    const list = $('column-list');
    for (const name of COLUMNS) {
      const item = document.createElement('li');
      item.dataset.column = name;
      const label = document.createElement('label');
      const box = document.createElement('input');
      box.type = 'checkbox';
      // The attribute too: a form reset puts back the attribute, not the property.
      box.defaultChecked = true;
      box.value = name;
      box.name = 'column';
      label.append(box, ' ', name);
      const up = moveButton('↑', `Move ${name} up`, -1);
      const down = moveButton('↓', `Move ${name} down`, 1);
      item.append(label, up, down);
      list.append(item);
    }
    const form = $('export-form');
    form.addEventListener('submit', (event) => { event.preventDefault(); startExport(); });
    form.addEventListener('reset', () => {
      // After the browser has reset the fields: put the column order back too.
      setTimeout(() => {
        for (const name of COLUMNS) list.append(list.querySelector(`[data-column="${name}"]`));
        clearErrors();
        $('start-note').textContent = '';
      });
    });
    $('excel').addEventListener('change', () => {
      // The preset's own values, which the person may still change.
      $('bom').checked = $('excel').checked;
      $('lineEnding').value = $('excel').checked ? 'crlf' : 'lf';
    });
  }

  function moveButton(text, label, step) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'move secondary';
    button.textContent = text;
    button.setAttribute('aria-label', label);
    button.addEventListener('click', () => {
      const item = button.parentElement;
      const sibling = step < 0 ? item.previousElementSibling : item.nextElementSibling;
      if (!sibling) {
        announce(`${item.dataset.column} is already ${step < 0 ? 'first' : 'last'}`);
        return;
      }
      if (step < 0) sibling.before(item); else sibling.after(item);
      button.focus();
      announce(`${item.dataset.column} is now column ${[...item.parentElement.children].indexOf(item) + 1}`);
    });
    return button;
  }

  /// The query string for the form's values: only what differs from the
  /// API's defaults, so the request reads as the person set it up.
  function formQuery() {
    const params = [];
    const add = (name, value) => params.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`);
    const countries = $('country_code').value.split(',').map((part) => part.trim()).filter((part) => part !== '');
    if (countries.length) add('country_code', countries.join(','));
    const tiers = [...document.querySelectorAll('input[name="tier"]:checked')].map((box) => box.value);
    if (tiers.length) add('subscription_tier', tiers.join(','));
    const minimum = $('min_ltv').value.trim();
    if (minimum !== '') add('min_ltv', minimum);
    const columns = [...$('column-list').children].filter((item) => item.querySelector('input').checked).map((item) => item.dataset.column);
    if (columns.join(',') !== COLUMNS.join(',')) add('columns', columns.join(','));
    if ($('delimiter').value !== ',') add('delimiter', $('delimiter').value);
    if ($('quoteChar').value !== '"') add('quoteChar', $('quoteChar').value);
    if (!$('header').checked) add('header', 'false');
    if ($('nullAs').value !== '') add('nullAs', $('nullAs').value);
    const excel = $('excel').checked;
    if (excel) add('excel', 'true');
    // With the preset, only a change from its BOM and CRLF is sent (an explicit value wins).
    if ($('bom').checked !== excel) add('bom', String($('bom').checked));
    const crlf = $('lineEnding').value === 'crlf';
    if (crlf !== excel) add('lineEnding', $('lineEnding').value);
    return params.join('&');
  }

  function clearErrors() {
    $('form-error').textContent = '';
    for (const name of FIELDS) {
      const error = $(`${name}-error`);
      if (error) error.textContent = '';
      const field = $(name);
      if (field) field.removeAttribute('aria-invalid');
    }
  }

  function showFieldError(parameter, message) {
    const error = FIELDS.includes(parameter) ? $(`${parameter}-error`) : null;
    if (!error) {
      $('form-error').textContent = message;
      return;
    }
    error.textContent = message;
    const field = $(parameter);
    field.setAttribute('aria-invalid', 'true');
    const focusable = field.matches('input, select') ? field : field.querySelector('input, select');
    if (focusable) focusable.focus();
  }

  async function startExport() {
    if (state.starting) return;
    clearErrors();
    $('start-note').textContent = '';
    if (state.tokensOn && !state.token) {
      $('form-error').textContent = 'Give your API token above first.';
      $('token').focus();
      return;
    }
    // Not disabled: a disabled button loses the keyboard focus.
    const button = $('start');
    state.starting = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const query = formQuery();
      const data = await api('POST', '/exports/csv' + (query ? `?${query}` : ''));
      upsert(data, { prepend: true });
      startedNote(data.exportId);
      $('list-note').textContent = '';
      schedule(1000);
    } catch (error) {
      if (error.status === 400 && error.body.parameter) {
        showFieldError(error.body.parameter, error.body.message);
      } else if (error.status === 401) {
        needToken('The gateway did not accept this token.', true);
        $('form-error').textContent = 'The gateway did not accept the token.';
        $('token').focus();
      } else if (error.status !== -1) {
        const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : '';
        $('form-error').textContent = `The export was not started: ${error.message}.${retry}`;
      }
    } finally {
      state.starting = false;
      button.removeAttribute('aria-busy');
    }
  }

  /// "Export … started", next to the button, with a link to its entry
  /// (below the form, out of sight on a phone). Also said by the live region.
  function startedNote(id) {
    const note = $('start-note');
    const link = document.createElement('a');
    link.href = `#export-${id}`;
    link.textContent = 'see it in the list';
    note.replaceChildren(`Export ${shortID(id)} started: `, link, '.');
  }

  // MARK: The list

  function clearList() {
    state.items.clear();
    state.cursor = null;
    state.shownOlder = false;
    $('exports').replaceChildren();
    $('more').hidden = true;
  }

  async function refresh() {
    clearTimeout(state.timer);
    if (state.tokensOn && !state.token) { needToken('Give your API token to see and start exports.', false); return; }
    if (state.stopped) return;
    try {
      // One request for as many as are shown (up to 100), so their figures
      // and signed links stay fresh; older ones are looked at one by one.
      const limit = Math.min(100, Math.max(PAGE_SIZE, state.items.size));
      const page = await api('GET', `/exports?limit=${limit}`);
      const seen = new Set();
      for (const data of page.exports) { upsert(data); seen.add(data.exportId); }
      // Exports on the first page before that are not on it now were deleted;
      // older ones shown by "Show older" are looked at one by one while active.
      const newest = page.exports.length ? page.exports[page.exports.length - 1].createdAt : null;
      for (const [id, item] of state.items) {
        // Just started here: a list read before its 202 may not have it yet.
        if (seen.has(id) || Date.now() - item.startedHere < 5000) continue;
        const onFirstPage = newest !== null && item.data.createdAt >= newest;
        if (onFirstPage || page.nextCursor === null) { removeItem(id); continue; }
        // Active ones every time; the others when their signed link has
        // less than 5 minutes left (once per LINK_TTL, default an hour), so
        // a long list costs few requests (and one deleted elsewhere leaves then).
        if (ACTIVE.has(item.data.status) || linkExpiresSoon(item.data)) await refreshOne(id);
      }
      if (state.cursor === null && !state.shownOlder) {
        state.cursor = page.nextCursor;
        $('more').hidden = page.nextCursor === null;
      }
      $('list-note').textContent = state.items.size ? '' : 'No exports yet. Start one with the form above.';
    } catch (error) {
      if (error.status === -1) return;
      if (error.status === 401) {
        needToken('The gateway did not accept this token.', true);
        if (document.activeElement === $('token-save')) $('token').focus();
        return;
      }
      $('list-note').textContent = `The list could not be updated (${error.message}); trying again.`;
    }
    const active = [...state.items.values()].some((item) => ACTIVE.has(item.data.status));
    schedule(active ? 1000 : 10000);
  }

  async function refreshOne(id) {
    try {
      upsert(await api('GET', `/exports/${id}/status`));
    } catch (error) {
      if (error.status === 404 || error.status === 410) removeItem(id);
    }
  }

  async function showOlder() {
    if (!state.cursor || state.loadingOlder) return;
    // Not disabled while it loads: a disabled button loses the keyboard focus.
    const button = $('more');
    state.loadingOlder = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const page = await api('GET', `/exports?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(state.cursor)}`);
      for (const data of page.exports) upsert(data);
      state.cursor = page.nextCursor;
      state.shownOlder = true;
      if (page.nextCursor === null) {
        // The button goes: focus moves to the last entry's first control, not to nowhere.
        const last = $('exports').lastElementChild;
        const target = last ? last.querySelector('a:not([hidden]), button:not([hidden])') : null;
        button.hidden = true;
        (target || $('exports-heading')).focus();
      }
    } catch (error) {
      if (error.status !== -1) $('list-note').textContent = `Older exports could not be read (${error.message}).`;
    } finally {
      state.loadingOlder = false;
      button.removeAttribute('aria-busy');
    }
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    if (!state.stopped) state.timer = setTimeout(refresh, delay);
  }

  function removeItem(id) {
    const item = state.items.get(id);
    if (!item) return;
    item.element.remove();
    state.items.delete(id);
  }

  /// Adds an export to the list or updates it in place (so focus and the
  /// curl box stay where they are), keeping the list newest first.
  function upsert(data, options = {}) {
    let item = state.items.get(data.exportId);
    if (!item) {
      const element = $('export-template').content.firstElementChild.cloneNode(true);
      element.id = `export-${data.exportId}`;
      item = { data, element, startedHere: options.prepend ? Date.now() : 0 };
      wire(item);
      state.items.set(data.exportId, item);
      place(item);
    } else if (item.data.status !== data.status && !ACTIVE.has(data.status)) {
      announce(`Export ${shortID(data.exportId)} ${data.status}`);
    }
    item.data = data;
    item.fetchedAt = Date.now();
    render(item);
  }

  function place(item) {
    const list = $('exports');
    const after = [...list.children].find((element) => {
      const other = state.items.get(element.id.slice('export-'.length));
      return other && (other.data.createdAt < item.data.createdAt || (other.data.createdAt === item.data.createdAt && other.data.exportId < item.data.exportId));
    });
    if (after) after.before(item.element); else list.append(item.element);
  }

  function wire(item) {
    const element = item.element;
    element.querySelector('.copy-curl').addEventListener('click', () => copyCurl(item));
    element.querySelector('.cancel').addEventListener('click', () => cancelOrDelete(item, 'cancel'));
    element.querySelector('.delete').addEventListener('click', () => cancelOrDelete(item, 'delete'));
    const label = element.querySelector('.curl-label');
    const text = element.querySelector('.curl-text');
    text.id = `curl-${item.data.exportId}`;
    label.htmlFor = text.id;
  }

  function render(item) {
    const d = item.data;
    const e = item.element;
    const q = (selector) => e.querySelector(selector);
    e.dataset.status = d.status;
    q('.export-title').textContent = `Export ${shortID(d.exportId)} · ${formatTime(d.createdAt)}`;
    q('.export-title').title = d.exportId;
    q('.state').textContent = d.status;
    q('.state').className = `state state-${d.status}`;
    q('.summary').textContent = describeQuery(d.query);

    const bar = q('progress');
    const active = ACTIVE.has(d.status);
    // A cancelled or failed export has no progress to show (the API says 0):
    // its rows and bytes say how far it went.
    q('.progress-line').hidden = d.status === 'cancelled' || d.status === 'failed';
    if (d.status === 'queued') bar.removeAttribute('value'); else bar.value = d.progress;
    bar.setAttribute('aria-label', `Progress of export ${shortID(d.exportId)}`);
    // Running with no row yet: the database is planning the query or
    // waiting for a lock another session holds on the table; say so rather
    // than show a bar stuck at 0 %.
    const noRowYet = d.status === 'running' && d.rowsRead === 0;
    q('.percent').textContent = d.status === 'queued' ? 'waiting' : noRowYet ? 'no rows yet' : `${Math.floor(d.progress * 100)} %`;
    q('.percent').title = noRowYet ? 'The database has sent no rows yet: it may be planning the query or waiting for a lock on the table.' : '';
    // An estimate the export has passed says nothing more.
    const total = d.totalRows === null || (!d.totalRowsExact && d.rowsRead > d.totalRows) ? '' : ` of ${d.totalRowsExact ? '' : '~'}${formatNumber(d.totalRows)}`;
    // Rows read, parallel pieces included (what the bar counts); the bytes
    // are those in the file, what a live download has now.
    q('.rows').textContent = `${formatNumber(d.rowsRead)}${total}`;
    q('.bytes').textContent = formatBytes(d.bytesWritten);
    q('.rate').textContent = d.rowsPerSecond === null || noRowYet ? '–' : `${formatNumber(Math.round(d.rowsPerSecond))} rows/s`;
    q('.eta').textContent = d.status === 'running' && d.etaSeconds !== null ? formatSeconds(d.etaSeconds) : (d.status === 'completed' ? 'done' : '–');
    q('.size-item').hidden = d.sizeBytes === null;
    q('.size').textContent = d.sizeBytes === null ? '' : d.sizeBytes < 1000 ? formatBytes(d.sizeBytes) : `${formatBytes(d.sizeBytes)} (${formatNumber(d.sizeBytes)} bytes)`;
    q('.sha-item').hidden = d.sha256 === null;
    q('.sha').textContent = d.sha256 || '';
    q('.export-error').textContent = d.error ? `Failed: ${d.error}` : '';

    const downloadable = active || d.status === 'completed';
    const csv = q('.download-csv');
    const gzip = q('.download-gzip');
    csv.hidden = gzip.hidden = q('.copy-curl').hidden = !downloadable;
    if (downloadable) {
      csv.href = formLink(d.downloadUrl, '.csv');
      gzip.href = formLink(d.downloadUrl, '.csv.gz');
      csv.setAttribute('aria-label', `Download export ${shortID(d.exportId)} as CSV`);
      gzip.setAttribute('aria-label', `Download export ${shortID(d.exportId)} compressed with gzip`);
    }
    q('.cancel').hidden = !active;
    q('.delete').hidden = active;
    q('.copy-curl').setAttribute('aria-label', `Copy a curl command that downloads export ${shortID(d.exportId)}`);
    q('.cancel').setAttribute('aria-label', `Cancel export ${shortID(d.exportId)}`);
    q('.delete').setAttribute('aria-label', `Delete export ${shortID(d.exportId)}`);
    if (!downloadable) q('.curl').hidden = true;
  }

  /// True when the entry's signed link works for less than 5 more minutes.
  function linkExpiresSoon(data) {
    const expires = Number(new URLSearchParams(data.downloadUrl.split('?')[1] || '').get('expires'));
    return !expires || expires * 1000 - Date.now() < 300000;
  }

  /// The signed link of `downloadUrl` for one form of the file: the same
  /// query (expiry and signature) on `/download.csv` or `/download.csv.gz`,
  /// which serve that form whatever the browser's Accept-Encoding says.
  function formLink(downloadUrl, suffix) {
    const [path, query] = downloadUrl.split('?');
    return `${path}${suffix}${query ? `?${query}` : ''}`;
  }

  function fileName(data, suffix) {
    const day = data.createdAt.slice(0, 10).replaceAll('-', '');
    return `users-${day}-${data.exportId.slice(0, 8)}${suffix}`;
  }

  async function copyCurl(item) {
    const d = item.data;
    const url = new URL(formLink(d.downloadUrl, '.csv'), location.href).href;
    // -C - resumes an interrupted download; -f fails (and keeps no error page) on a 4xx/5xx.
    const command = `curl -fSL -C - -o '${fileName(d, '.csv')}' '${url}'`;
    const box = item.element.querySelector('.curl');
    const text = item.element.querySelector('.curl-text');
    const note = item.element.querySelector('.curl-note');
    box.hidden = false;
    text.value = command;
    let copied = false;
    try {
      await navigator.clipboard.writeText(command);
      copied = true;
    } catch (error) {
      text.select();
      try { copied = document.execCommand('copy'); } catch (ignored) { copied = false; }
    }
    note.textContent = (copied
      ? 'Copied. The link in it works without a token until it expires (LINK_TTL).'
      : 'Copy it from the box (it is selected). The link works without a token until it expires.')
      + ' Run again, it resumes a cut download; on a complete file curl ends with 416, nothing left to fetch.';
    if (!copied) text.focus();
    announce(copied ? 'curl command copied' : 'curl command shown, select and copy it');
  }

  async function cancelOrDelete(item, action) {
    const id = item.data.exportId;
    const buttons = item.element.querySelectorAll('button');
    buttons.forEach((button) => { button.disabled = true; });
    let focusAfter = null;
    try {
      const data = await api('DELETE', `/exports/${id}`);
      if (data === null) {
        const next = item.element.nextElementSibling || item.element.previousElementSibling;
        removeItem(id);
        announce(`Export ${shortID(id)} deleted`);
        const target = next ? next.querySelector('button:not([hidden]), a:not([hidden])') : null;
        (target || $('exports-heading')).focus();
      } else {
        upsert(data);
        announce(`Export ${shortID(id)} ${data.status}`);
        focusAfter = item.element.querySelector('.delete');
      }
    } catch (error) {
      if (error.status === -1) return;
      if (error.status === 404 || error.status === 410) {
        removeItem(id);
      } else {
        item.element.querySelector('.export-error').textContent = `Could not ${action} it: ${error.message}.`;
      }
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
      // Once enabled again: focus cannot rest on a disabled button.
      if (focusAfter) focusAfter.focus();
    }
  }

  // MARK: Text

  /// At most 8 entries of a comma list, then how many more.
  function shortList(text) {
    const items = text.split(',');
    return items.length <= 8 ? items.join(', ') : `${items.slice(0, 8).join(', ')} and ${items.length - 8} more`;
  }

  function describeQuery(query) {
    const params = new URLSearchParams(query || '');
    const parts = [];
    parts.push(params.get('country_code') ? `countries ${shortList(params.get('country_code'))}` : 'all countries');
    parts.push(params.get('subscription_tier') ? `tiers ${params.get('subscription_tier').replaceAll(',', ', ')}` : 'all tiers');
    if (params.get('min_ltv')) parts.push(`lifetime value ≥ ${params.get('min_ltv')}`);
    const columns = (params.get('columns') || '').split(',').filter(Boolean);
    parts.push(columns.length === COLUMNS.length && columns.join(',') === COLUMNS.join(',') ? 'all columns' : `columns ${columns.join(', ')}`);
    const delimiter = params.get('delimiter');
    if (delimiter && delimiter !== ',') parts.push(`delimiter ${delimiter === '\t' ? 'tab' : delimiter === ' ' ? 'space' : delimiter}`);
    if (params.get('quoteChar') && params.get('quoteChar') !== '"') parts.push(`quote ${params.get('quoteChar')}`);
    if (params.get('header') === 'false') parts.push('no header');
    if (params.get('nullAs')) parts.push(`NULL as ${params.get('nullAs')}`);
    if (params.get('excel') === 'true') parts.push('Excel preset');
    if (params.get('bom') === 'true') parts.push('BOM');
    if (params.get('lineEnding') === 'crlf') parts.push('CRLF');
    return parts.join(' · ');
  }

  const numberFormat = new Intl.NumberFormat();
  function formatNumber(value) { return numberFormat.format(value); }

  function formatBytes(value) {
    const units = ['bytes', 'kB', 'MB', 'GB', 'TB'];
    let amount = value;
    let unit = 0;
    while (amount >= 1000 && unit < units.length - 1) { amount /= 1000; unit += 1; }
    return unit === 0 ? `${value} bytes` : `${amount.toFixed(amount < 10 ? 2 : 1)} ${units[unit]}`;
  }

  function formatSeconds(seconds) {
    if (seconds < 1) return 'under a second';
    if (seconds < 90) return `${Math.round(seconds)} s`;
    const minutes = Math.floor(seconds / 60);
    return minutes < 90 ? `${minutes} min ${Math.round(seconds % 60)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function formatTime(text) {
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? text : date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  }

  function shortID(id) { return id.slice(0, 8); }

  function announce(text) {
    const announcer = $('announcer');
    announcer.textContent = '';
    setTimeout(() => { announcer.textContent = text; }, 50);
  }

  // MARK: Start

  async function start() {
    setupForm();
    setupToken();
    $('more').addEventListener('click', showOlder);
    while (!(await loadAccess())) await new Promise((resolve) => setTimeout(resolve, 5000));
    refresh();
  }

  start();
})();
