/*
 * app.js - the cxrtriage web page: upload and classify, audit, outbox, status strip.
 * Plain JavaScript, no framework, nothing fetched from outside the daemon. Every text that comes
 * from the API goes into the page through textContent (never innerHTML), so a field holding
 * markup is shown as text. Routes are hashes: #/classify, #/audit?..., #/audit/ID, #/outbox?...
 */
(function () {
  'use strict';

  var STATUS_EVERY_MS = 10000;
  var PAGE_SIZE = 50;
  var TRIAGE_TEXT = {
    urgent: { label: 'URGENT', icon: '!', hint: 'review first' },
    routine: { label: 'ROUTINE', icon: 'i', hint: 'not urgent and not clearly normal: routine review' },
    normal: { label: 'NORMAL', icon: '\u2713', hint: 'no abnormal class above its operating point' }
  };
  var STAGE_TEXT = {
    receive: 'Receive', queue: 'Queue', decode: 'Decode', preprocess: 'Preprocess', infer: 'Inference',
    heatmap: 'Heat map', commit: 'Commit', total: 'Total'
  };

  /* ---- small helpers ------------------------------------------------------------------- */

  function $(id) { return document.getElementById(id); }

  /* el('td', {class: 'num', title: t}, child, 'text', ...): children are nodes or plain text
   * (always text nodes); null and undefined children are left out. */
  function el(tag, attrs) {
    var e = document.createElement(tag);
    var k;
    if (attrs) {
      for (k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] === null || attrs[k] === undefined)
          continue;
        if (k === 'class') e.className = attrs[k];
        else if (k === 'text') e.textContent = String(attrs[k]);
        else e.setAttribute(k, String(attrs[k]));
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function setText(id, text) { $(id).textContent = text === null || text === undefined ? '' : String(text); }

  function pad(n, w) { var s = String(n); while (s.length < (w || 2)) s = '0' + s; return s; }

  /* An RFC 3339 UTC time as local "YYYY-MM-DD HH:MM:SS"; the input itself when it is not one. */
  function localTime(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  /* A table cell with a local time: date and time in two spans (on two lines when narrow). */
  function timeCell(iso) {
    var t = localTime(iso);
    var td = el('td', { class: 'nowrap', title: iso ? String(iso) + ' (UTC)' : null });
    var sp = t.indexOf(' ');
    if (sp > 0) {
      td.appendChild(el('span', { class: 'when-d' }, t.slice(0, sp)));
      td.appendChild(document.createTextNode(' '));
      td.appendChild(el('span', { class: 'when-t' }, t.slice(sp + 1)));
    } else {
      td.textContent = t || '\u2013';
    }
    return td;
  }

  function pct(v) {
    var x = Number(v);
    if (!isFinite(x)) return '\u2013';
    return (x * 100).toFixed(1) + ' %';
  }

  function ms(v) {
    var x = Number(v);
    if (v === null || v === undefined || !isFinite(x)) return '\u2013';
    return x < 1 ? x.toFixed(2) : x.toFixed(1);
  }

  function shortDigest(d) { return d ? String(d).slice(0, 12) : ''; }

  function shortUid(u) {
    u = u ? String(u) : '';
    return u.length > 22 ? '\u2026' + u.slice(-20) : u;
  }

  function bytes(n) {
    var x = Number(n);
    if (!isFinite(x) || x <= 0) return '';
    if (x < 1024) return x + ' B';
    if (x < 1048576) return (x / 1024).toFixed(1) + ' KB';
    return (x / 1048576).toFixed(1) + ' MB';
  }

  function qs(params) {
    var out = [];
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v !== null && v !== undefined && v !== '') out.push(encodeURIComponent(k) + '=' + encodeURIComponent(v));
    });
    return out.join('&');
  }

  function parseQs(s) {
    var o = {};
    (s || '').split('&').forEach(function (p) {
      if (!p) return;
      var i = p.indexOf('=');
      var k = decodeURIComponent(i < 0 ? p : p.slice(0, i));
      o[k] = i < 0 ? '' : decodeURIComponent(p.slice(i + 1).replace(/\+/g, ' '));
    });
    return o;
  }

  /* ---- the API ----------------------------------------------------------------------- */

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  /* fetch + JSON; rejects with an ApiError carrying the server's error.message when there
   * is one, or a sentence saying what went wrong on the way. */
  var TOKEN_KEY = 'cxrtriage.token';

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function authHeaders(h) {
    h = h || {};
    h.Accept = 'application/json';
    if (token()) h.Authorization = 'Bearer ' + token();
    return h;
  }

  /* [http] auth = bearer: ask for the token (basic is asked by the browser itself). sent is
   * the token the request carried: a 401 for a token that has since been replaced (a request
   * still in flight when the user signed in again) says nothing about the current one. */
  function needToken(res, message, sent) {
    if (res.status !== 401 || !/^bearer/i.test(res.headers.get('WWW-Authenticate') || '')) return;
    if (sent !== token()) return;
    var box = $('signin');
    if (!box.hidden) return;
    setText('signin-why', (token() ? 'The token was refused. ' : '') + 'This daemon asks for a bearer token: ' +
      message + '. It is kept in this browser tab only.');
    box.hidden = false;
    $('signin-token').focus();
  }

  function setupSignin() {
    $('signin-form').addEventListener('submit', function (e) {
      e.preventDefault();
      try { sessionStorage.setItem(TOKEN_KEY, $('signin-token').value.trim()); } catch (err) { /* private mode */ }
      $('signin-token').value = '';
      $('signin').hidden = true;
      refreshStatus();
      current = null;
      route(false);
    });
  }

  function api(path, opts) {
    opts = opts || {};
    var sent = token();
    opts.headers = authHeaders(opts.headers);
    opts.cache = 'no-store';
    return fetch(path, opts).then(function (res) {
      return res.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (res.ok && body !== null) return body;
        if (body && body.error && body.error.message) needToken(res, String(body.error.message), sent);
        if (body && body.error && body.error.message)
          throw new ApiError(res.status, body.error.code || '', String(body.error.message));
        if (res.ok)
          throw new ApiError(res.status, 'bad_response', 'The daemon answered ' + path + ' with something that is not JSON.');
        throw new ApiError(res.status, '', 'The daemon answered HTTP ' + res.status + ' ' + (res.statusText || '') +
          ' for ' + path.split('?')[0] + '.');
      });
    }, function () {
      throw new ApiError(0, 'network', 'Cannot reach the daemon (' + path.split('?')[0] + '): is cxrtriaged running?');
    });
  }

  /* Shows err (an ApiError or anything thrown) in the error box with the given title. */
  function showError(boxId, title, err) {
    var box = $(boxId);
    clear(box);
    var message = err && err.message ? String(err.message) : String(err);
    message = message.charAt(0).toUpperCase() + message.slice(1);
    box.appendChild(el('span', { class: 'error-title' }, title));
    box.appendChild(el('span', { class: 'error-message' }, message));
    if (err && err.status)
      box.appendChild(el('span', { class: 'error-code' }, 'HTTP ' + err.status + (err.code ? ' \u00b7 ' + err.code : '')));
    box.hidden = false;
  }

  function hideError(boxId) { var b = $(boxId); b.hidden = true; clear(b); }

  /* ---- shared pieces: triage banner, score bars, tags --------------------------------- */

  function renderTriage(node, triage, reason) {
    clear(node);
    var t = TRIAGE_TEXT[triage];
    node.className = 'triage triage-' + (t ? triage : 'none');
    node.appendChild(el('span', { class: 'triage-icon', 'aria-hidden': 'true' }, t ? t.icon : '\u2013'));
    node.appendChild(el('span', { class: 'triage-label' }, 'Triage: ' + (t ? t.label : 'none')));
    node.appendChild(el('span', { class: 'triage-reason' }, reason || (t ? t.hint : 'not scored')));
  }

  function triageTag(triage) {
    if (!triage) return el('span', { class: 'tag tag-none' }, 'none');
    var t = TRIAGE_TEXT[triage];
    return el('span', { class: 'tag tag-' + (t ? triage : 'none') }, t ? t.label.toLowerCase() : String(triage));
  }

  function stateTag(state) {
    return el('span', { class: 'tag tag-' + String(state || 'none').replace(/[^a-z]/g, '') }, state || '\u2013');
  }

  function topOf(scores) {
    var best = null;
    Object.keys(scores || {}).forEach(function (k) {
      if (best === null || Number(scores[k]) > Number(scores[best])) best = k;
    });
    return best;
  }

  /* The scores as labelled bars, in the model's class order when given. */
  function renderScores(list, scores, classes) {
    clear(list);
    if (!scores || typeof scores !== 'object' || !Object.keys(scores).length) {
      list.appendChild(el('li', { class: 'none' }, 'No scores: the image was not scored.'));
      return;
    }
    var names = Array.isArray(classes) && classes.length ? classes.slice() : Object.keys(scores);
    var top = topOf(scores);
    names.forEach(function (name) {
      if (!(name in scores)) return;
      var v = Number(scores[name]);
      var fill = el('span', { class: 'score-fill' });
      fill.style.width = Math.max(0, Math.min(100, v * 100)).toFixed(2) + '%';
      list.appendChild(el('li', { class: 'score' + (name === top ? ' score-top' : ''), 'data-class': name },
        el('span', { class: 'score-name' }, name),
        el('span', { class: 'score-bar', 'aria-hidden': 'true' }, fill),
        el('span', { class: 'score-value' }, pct(v))));
    });
  }

  function addFact(dl, term, value, opts) {
    if (value === null || value === undefined || value === '') return;
    dl.appendChild(el('dt', null, term));
    var dd = el('dd', { class: opts && opts.mono ? 'mono' : null, title: opts && opts.title ? opts.title : null });
    if (typeof value === 'object') dd.appendChild(value); else dd.textContent = String(value);
    dl.appendChild(dd);
  }

  /* ---- status strip -------------------------------------------------------------------- */

  /* /readyz answers 200 or 503 with the same body: read the checks from either. */
  function refreshStatus() {
    var sent = token();
    var ready = fetch('/readyz', { cache: 'no-store', headers: authHeaders() }).then(function (r) {
      return r.json().then(function (b) {
        if (b && b.ready === undefined && b.error && b.error.message) {
          needToken(r, String(b.error.message), sent);
          return { body: null, err: new ApiError(r.status, b.error.code || '', String(b.error.message)) };
        }
        return { body: b, err: null };
      }, function () {
        return { body: null, err: new ApiError(r.status, '', '/readyz answered HTTP ' + r.status + ' without JSON') };
      });
    }, function () {
      return { body: null, err: new ApiError(0, 'network', 'Cannot reach the daemon: is cxrtriaged running?') };
    });
    var status = api('/api/v1/status').catch(function () { return null; });
    return Promise.all([ready, status]).then(function (r) {
      if (sent !== token()) return; /* answered for a replaced token: a newer refresh is on its way */
      renderStatus(r[0].body, r[0].err, r[1]);
    });
  }

  function renderStatus(ready, readyErr, st) {
    var pill = $('st-ready');
    var checks = $('st-check-list');
    clear(checks);
    var problems = [];
    if (ready && Array.isArray(ready.checks)) {
      ready.checks.forEach(function (c) {
        checks.appendChild(el('li', null,
          el('span', { class: c.ok ? 'check-ok' : 'check-bad' }, c.ok ? 'ok' : 'FAIL'),
          el('span', null, String(c.name || '') + (c.detail ? ': ' + c.detail : ''))));
        if (!c.ok) problems.push(String(c.name || '') + (c.detail ? ' (' + c.detail + ')' : ''));
      });
    }
    if (ready && typeof ready.ready === 'boolean') {
      pill.className = 'pill ' + (ready.ready ? 'pill-ok' : 'pill-bad');
      setText('st-ready-text', ready.ready ? 'Ready' : 'Not ready');
    } else {
      pill.className = 'pill pill-bad';
      var st401 = readyErr && readyErr.status === 401;
      setText('st-ready-text', readyErr && readyErr.status === 0 ? 'Daemon unreachable' : st401 ? 'Sign-in needed' : 'Readiness unknown');
      if (readyErr && readyErr.message && !st401) problems.push(readyErr.message);
    }
    setText('st-problems', problems.length ? 'Failing: ' + problems.join('; ') : '');
    if (st) {
      var m = $('st-model');
      clear(m);
      m.appendChild(document.createTextNode('Model '));
      m.appendChild(el('strong', { title: (st.model_name ? st.model_name + ', ' : '') + 'SHA-256 ' + (st.model_digest || '') },
        shortDigest(st.model_digest)));
      var l = $('st-listener');
      clear(l);
      if (st.listener) { l.appendChild(document.createTextNode('DICOM ')); l.appendChild(el('strong', null, st.listener)); }
      var c = st.counts || {};
      setText('st-counts', st.counts ? 'Received ' + (c.received || 0) + ' \u00b7 classified ' + (c.classified || 0) +
        ' \u00b7 skipped ' + (c.skipped || 0) + ' \u00b7 failed ' + (c.failed || 0) : '');
      var o = st.outbox || {};
      setText('st-outbox', st.outbox ? 'Outbox: ' + (o.pending || 0) + ' pending, ' + (o.dead || 0) + ' dead' : '');
      setText('foot-version', 'cxrtriage ' + (st.version || '') + (st.kernel ? ' \u00b7 kernel ' + String(st.kernel).split(' ')[0] : '') +
        (st.uptime_s !== undefined ? ' \u00b7 up ' + uptime(st.uptime_s) : ''));
    }
    var now = new Date();
    setText('st-updated', 'Checked at ' + pad(now.getHours()) + ':' + pad(now.getMinutes()) + ':' + pad(now.getSeconds()));
  }

  function uptime(s) {
    s = Math.max(0, Math.floor(Number(s) || 0));
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.floor(s / 60) + ' min';
    if (s < 172800) return Math.floor(s / 3600) + ' h';
    return Math.floor(s / 86400) + ' days';
  }

  function startStatus() {
    var toggle = $('st-ready');
    toggle.addEventListener('click', function () {
      var open = toggle.getAttribute('aria-expanded') !== 'true';
      toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
      $('st-checks').hidden = !open;
    });
    refreshStatus();
    setInterval(function () { if (!document.hidden) refreshStatus(); }, STATUS_EVERY_MS);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) refreshStatus(); });
  }

  /* ---- Classify ---------------------------------------------------------------------------- */

  var busy = false;

  function setupClassify() {
    var drop = $('drop');
    var input = $('file');
    drop.addEventListener('click', function () { if (!busy) input.click(); });
    drop.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ' || e.key === 'Spacebar') {
        e.preventDefault();
        if (!busy) input.click();
      }
    });
    input.addEventListener('change', function () {
      if (input.files && input.files.length) classify(input.files[0], input.files.length);
      input.value = '';
    });
    ['dragenter', 'dragover'].forEach(function (t) {
      drop.addEventListener(t, function (e) {
        e.preventDefault();
        if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
        drop.classList.add('over');
      });
    });
    ['dragleave', 'dragend'].forEach(function (t) {
      drop.addEventListener(t, function () { drop.classList.remove('over'); });
    });
    drop.addEventListener('drop', function (e) {
      e.preventDefault();
      drop.classList.remove('over');
      var files = e.dataTransfer && e.dataTransfer.files;
      if (files && files.length) classify(files[0], files.length);
    });
    /* a file dropped beside the zone must not make the browser leave the page */
    window.addEventListener('dragover', function (e) { e.preventDefault(); });
    window.addEventListener('drop', function (e) { e.preventDefault(); });

    var toggle = $('r-heat-toggle');
    var opacity = $('r-opacity');
    toggle.addEventListener('change', applyOverlay);
    opacity.addEventListener('input', applyOverlay);
    applyOverlay();
  }

  function applyOverlay() {
    var on = $('r-heat-toggle').checked;
    var v = Number($('r-opacity').value);
    var heat = $('r-heat');
    heat.hidden = !on || !heat.getAttribute('src');
    heat.style.opacity = String(v / 100);
    $('r-opacity').disabled = !on;
    setText('r-opacity-out', v + ' %');
    $('r-stack').setAttribute('data-overlay', on ? 'on' : 'off');
  }

  function classify(file, count) {
    if (busy) return;
    busy = true;
    var drop = $('drop');
    drop.classList.add('busy');
    drop.setAttribute('aria-disabled', 'true');
    hideError('classify-error');
    $('result').hidden = true;
    $('result').setAttribute('aria-busy', 'true');
    setText('classify-msg', 'Scoring ' + file.name + ' (' + bytes(file.size) + ')' +
      (count > 1 ? '; only the first of the ' + count + ' files dropped is scored' : '') + '\u2026');
    var t0 = performance.now();
    var post = function (query) {
      return api('/api/v1/classify' + query, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: file
      });
    };
    /* a daemon built without Grad-CAM answers 501 before scoring: score without the heat map */
    post('?heatmap=1').catch(function (err) {
      if (err.status !== 501) throw err;
      return post('').then(function (r) { r.heatmap_missing = err.message; return r; });
    }).then(function (r) {
      renderResult(r, file, performance.now() - t0);
      var t = TRIAGE_TEXT[r.triage];
      setText('classify-msg', 'Scored ' + file.name + ': highest ' + (r.top_class || topOf(r.scores)) + ' ' +
        pct((r.scores || {})[r.top_class || topOf(r.scores)]) + ', triage ' + (t ? t.label : 'none') +
        '. Decision support, not a diagnosis.');
    }, function (err) {
      setText('classify-msg', '');
      var title = err.status === 422 ? 'The image was read but not scored' :
        err.status === 415 ? 'This file is not an X-ray image the daemon can read' :
          err.status === 413 ? 'The file is too large' : 'The upload failed';
      showError('classify-error', title + ' (' + file.name + ')', err);
    }).then(function () {
      refreshStatus();
      busy = false;
      drop.classList.remove('busy');
      drop.removeAttribute('aria-disabled');
      $('result').removeAttribute('aria-busy');
    });
  }

  function renderResult(r, file, roundTripMs) {
    setText('r-file', file.name);
    var img = $('r-image');
    var heat = $('r-heat');
    var hm = r.heatmap || null;
    $('r-noimg').hidden = true;
    if (typeof r.image === 'string' && r.image.indexOf('data:image/') === 0) {
      img.src = r.image;
      img.alt = 'The image as the model sees it (' + (r.format || 'image') + ', ' + (r.width || '?') + ' \u00d7 ' +
        (r.height || '?') + ' pixels originally)';
    } else if (r.format === 'png' || r.format === 'jpeg') {
      /* no model input came back (no heat map): show the uploaded picture itself */
      img.removeAttribute('src');
      img.alt = 'The uploaded image';
      var reader = new FileReader();
      reader.onload = function () {
        if (typeof reader.result === 'string' && /^data:image\/(png|jpeg);/.test(reader.result)) img.src = reader.result;
      };
      reader.readAsDataURL(file);
    } else {
      img.removeAttribute('src');
      img.alt = '';
      $('r-noimg').hidden = false; /* a DICOM file the browser cannot draw, and no image from the daemon */
    }
    if (hm && typeof hm.png === 'string' && hm.png.indexOf('data:image/') === 0) {
      heat.src = hm.png;
      heat.alt = 'Heat map of where the model looked for ' + (hm['class'] || r.top_class || 'the top class');
      setText('r-caption', 'Grad-CAM heat map for \u201c' + (hm['class'] || r.top_class || '') +
        '\u201d over the model\u2019s input: warm colours mark the regions that raised that score most.' +
        (Array.isArray(hm.grid) ? ' Grid ' + hm.grid.join(' \u00d7 ') + '.' : ''));
      $('r-heat-toggle').disabled = false;
      $('r-controls').hidden = false;
    } else {
      heat.removeAttribute('src');
      heat.alt = '';
      setText('r-caption', r.heatmap_missing ? 'No heat map: ' + r.heatmap_missing : 'No heat map was returned for this image.');
      $('r-heat-toggle').disabled = true;
      $('r-controls').hidden = true;
    }
    applyOverlay();

    renderTriage($('r-triage'), r.triage, r.triage_reason);
    renderScores($('r-scores'), r.scores, r.classes);

    var gate = $('r-gate');
    clear(gate);
    var g = r.gate || {};
    if (g.applicable === false) {
      gate.className = 'gate gate-no';
      gate.appendChild(el('strong', null, 'Gate: refused. '));
      gate.appendChild(document.createTextNode(g.reason || ''));
    } else {
      gate.className = 'gate gate-ok';
      gate.appendChild(el('strong', null, 'Gate: accepted. '));
      gate.appendChild(document.createTextNode(g.reason ? g.reason : 'Read as a frontal chest radiograph the model applies to.'));
    }

    var facts = $('r-facts');
    clear(facts);
    addFact(facts, 'File', (r.format ? String(r.format).toUpperCase() + ', ' : '') +
      (r.width && r.height ? r.width + ' \u00d7 ' + r.height + ' px, ' : '') + bytes(file.size));
    addFact(facts, 'Model', (r.model_name ? r.model_name + ' \u00b7 ' : '') + shortDigest(r.model_digest),
      { title: r.model_digest ? 'SHA-256 ' + r.model_digest : null });
    var tm = r.timings_ms || {};
    var parts = [];
    ['decode', 'preprocess', 'infer', 'heatmap'].forEach(function (k) {
      if (tm[k] !== undefined && tm[k] !== null) parts.push(STAGE_TEXT[k].toLowerCase() + ' ' + ms(tm[k]));
    });
    addFact(facts, 'Timings (ms)', parts.join(' \u00b7 ') + (tm.total !== undefined ? ' \u00b7 total ' + ms(tm.total) : '') +
      ' \u00b7 round trip ' + ms(roundTripMs));
    if (r.id !== undefined && r.id !== null) {
      addFact(facts, 'Audit record', el('a', { href: '#/audit/' + encodeURIComponent(r.id), id: 'r-audit-link' },
        'Instance ' + r.id + ' in the audit'));
    }
    $('drop').classList.add('compact');
    setText('r-disclaimer', r.disclaimer || 'Decision support, not a diagnosis. The scores must be reviewed by a qualified radiologist.');
    $('result').hidden = false;
  }

  /* ---- Audit list ---------------------------------------------------------------------- */

  /* seq numbers each load: an answer to an older load than the newest is dropped, and the
   * table's data-loads says which load it shows (aria-busy while one runs) */
  var audit = { key: null, after: null, stack: [], next: null, seq: 0 };
  var FILTERS = ['since', 'until', 'class', 'state', 'triage', 'source', 'accession', 'study'];

  /* rows a page: 50, or limit=N (1..500) in the address, e.g. #/audit?limit=200 */
  function pageSize(v) {
    var n = parseInt(v, 10);
    return n >= 1 && n <= 500 ? n : PAGE_SIZE;
  }

  function dayToUtc(day, plusOneDay) {
    /* a local calendar day from <input type=date> as the UTC instant of its local midnight */
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day || '');
    if (!m) return '';
    var d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + (plusOneDay ? 1 : 0));
    return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  function setupAudit() {
    var form = $('audit-filters');
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var f = {};
      FILTERS.forEach(function (k) { f[k] = form.elements[k].value.trim(); });
      if (audit.filters && audit.filters.limit) f.limit = audit.filters.limit;
      var q = qs(f);
      var want = '#/audit' + (q ? '?' + q : '');
      if (location.hash === want) { audit.key = null; route(); } else location.hash = want;
    });
    $('f-clear').addEventListener('click', function () {
      form.reset();
      if (location.hash === '#/audit') { audit.key = null; route(); } else location.hash = '#/audit';
    });
    $('audit-next').addEventListener('click', function () {
      if (audit.next === null) return;
      audit.stack.push(audit.after);
      audit.after = audit.next;
      loadAudit(audit.filters);
    });
    $('audit-prev').addEventListener('click', function () {
      if (!audit.stack.length) return;
      audit.after = audit.stack.pop();
      loadAudit(audit.filters);
    });
  }

  function showAudit(query) {
    var f = parseQs(query);
    var form = $('audit-filters');
    FILTERS.forEach(function (k) { form.elements[k].value = f[k] || ''; });
    $('inst-back').setAttribute('href', '#/audit' + (query ? '?' + query : ''));
    if (audit.key !== query) {
      audit.key = query;
      audit.after = null;
      audit.stack = [];
    }
    audit.filters = f;
    loadAudit(f);
  }

  function loadAudit(f) {
    var params = {
      since: dayToUtc(f.since, false), until: dayToUtc(f.until, true), 'class': f['class'], state: f.state,
      triage: f.triage, source: f.source, accession: f.accession, study: f.study, limit: pageSize(f.limit),
      after_id: audit.after
    };
    hideError('audit-error');
    setText('audit-msg', 'Loading\u2026');
    var table = $('audit-table');
    var body = table.tBodies[0];
    var seq = ++audit.seq;
    table.setAttribute('aria-busy', 'true');
    return api('/api/v1/instances?' + qs(params)).then(function (r) {
      if (seq !== audit.seq) return;
      clear(body);
      var items = Array.isArray(r.items) ? r.items : [];
      items.forEach(function (it) { body.appendChild(auditRow(it)); });
      if (!items.length)
        body.appendChild(el('tr', null, el('td', { colspan: 8, class: 'empty' }, 'No instances match these filters.')));
      audit.next = r.next_after_id === undefined ? null : r.next_after_id;
      var page = audit.stack.length + 1;
      setText('audit-page', 'Page ' + page);
      $('audit-prev').disabled = !audit.stack.length;
      $('audit-next').disabled = audit.next === null;
      var active = FILTERS.filter(function (k) { return f[k]; }).length;
      setText('audit-caption', 'Instances, newest first' + (active ? ' (filtered)' : ''));
      setText('audit-msg', items.length ? items.length + ' instance' + (items.length === 1 ? '' : 's') + ' on page ' + page +
        (audit.next !== null ? '; older ones on the next page.' : '.') : 'No instances match these filters.');
      loaded(table, seq);
    }, function (err) {
      if (seq !== audit.seq) return;
      clear(body);
      setText('audit-msg', '');
      showError('audit-error', 'The audit could not be loaded', err);
      loaded(table, seq);
    });
  }

  function auditRow(it) {
    var top = topOf(it.scores);
    var id = it.id;
    var link = el('a', { href: '#/audit/' + encodeURIComponent(id), 'aria-label': 'Open instance ' + id }, String(id));
    var src = it.source || (it.calling_aet ? 'dicom' : '');
    var srcCell = el('td', null, src || '\u2013');
    if (it.calling_aet) srcCell.appendChild(el('span', { class: 'sub' }, it.calling_aet));
    var reason = it.state === 'skipped' ? it.gate_reason : it.state === 'failed' ? it.error : '';
    var stateCell = el('td', null, stateTag(it.state));
    if (reason) stateCell.appendChild(el('span', { class: 'sub wrap-any' }, reason));
    return el('tr', { 'data-id': id },
      el('td', null, link),
      timeCell(it.received_at),
      srcCell,
      el('td', { class: 'wrap-any' }, it.accession || '\u2013'),
      stateCell,
      el('td', null, it.triage ? triageTag(it.triage) : '\u2013'),
      el('td', { class: 'nowrap' }, top ? top + ' ' : '\u2013', top ? el('span', { class: 'sub' }, pct(it.scores[top])) : null),
      el('td', { class: 'col-optional mono', title: it.model_digest || null }, shortDigest(it.model_digest) || '\u2013'));
  }

  /* ---- One instance ---------------------------------------------------------------------- */

  var instSeq = 0;

  function showInstance(id) {
    var seq = ++instSeq;
    var pageNode = $('page-instance');
    setText('h-instance', 'Instance ' + id);
    document.title = 'Instance ' + id + ' - cxrtriage';
    pageNode.removeAttribute('data-loaded');
    $('inst-body').hidden = true;
    hideError('inst-error');
    setText('inst-msg', 'Loading\u2026');
    api('/api/v1/instances/' + encodeURIComponent(id)).then(function (r) {
      if (seq !== instSeq) return;
      setText('inst-msg', '');
      renderInstance(r);
      $('inst-body').hidden = false;
      pageNode.setAttribute('data-loaded', String(id));
    }, function (err) {
      if (seq !== instSeq) return;
      setText('inst-msg', '');
      showError('inst-error', 'Instance ' + id + ' could not be loaded', err);
      pageNode.setAttribute('data-loaded', String(id));
    });
  }

  function renderInstance(r) {
    renderTriage($('inst-triage'), r.triage, r.triage_reason);
    renderScores($('inst-scores'), r.scores, null);
    var gate = $('inst-gate');
    clear(gate);
    if (r.state === 'skipped') {
      gate.className = 'gate gate-no';
      gate.appendChild(el('strong', null, 'Gate: refused. '));
      gate.appendChild(document.createTextNode(r.gate_reason || ''));
    } else if (r.state === 'failed') {
      gate.className = 'gate gate-no';
      gate.appendChild(el('strong', null, 'Failed: '));
      gate.appendChild(document.createTextNode(r.error || ''));
    } else if (r.state === 'classified') {
      gate.className = 'gate gate-ok';
      gate.appendChild(el('strong', null, 'Gate: accepted.'));
    } else {
      gate.className = 'gate';
      gate.textContent = 'Not scored yet (' + (r.state || 'unknown') + ').';
    }

    var facts = $('inst-facts');
    clear(facts);
    addFact(facts, 'State', stateTag(r.state));
    addFact(facts, 'Received', localTime(r.received_at), { title: r.received_at });
    addFact(facts, 'Source', r.source || (r.calling_aet ? 'dicom' : ''));
    addFact(facts, 'Calling AE', r.calling_aet);
    addFact(facts, 'Peer', r.peer);
    addFact(facts, 'Accession', r.accession);
    addFact(facts, 'Patient ID', r.patient_id);
    addFact(facts, 'Study UID', r.study_instance_uid, { mono: true });
    addFact(facts, 'Series UID', r.series_instance_uid, { mono: true });
    addFact(facts, 'SOP Instance UID', r.sop_instance_uid, { mono: true });
    addFact(facts, 'SOP Class UID', r.sop_class_uid, { mono: true });
    addFact(facts, 'Transfer syntax', r.transfer_syntax, { mono: true });
    addFact(facts, 'Size', bytes(r.size_bytes));
    addFact(facts, 'Model', shortDigest(r.model_digest), { mono: true, title: r.model_digest });
    addFact(facts, 'Rule', r.rule);
    addFact(facts, 'Pixel SHA-256', shortDigest(r.pixel_sha256), { mono: true, title: r.pixel_sha256 });
    if (r.duplicate_of !== null && r.duplicate_of !== undefined)
      addFact(facts, 'Duplicate of', el('a', { href: '#/audit/' + encodeURIComponent(r.duplicate_of) }, 'Instance ' + r.duplicate_of));
    addFact(facts, 'Error', r.error);

    var tb = $('inst-timings').tBodies[0];
    clear(tb);
    var tm = r.timings_ms || {};
    var keys = Object.keys(tm);
    keys.forEach(function (k) {
      tb.appendChild(el('tr', null, el('th', { scope: 'row' }, STAGE_TEXT[k] || k), el('td', { class: 'num' }, ms(tm[k]))));
    });
    if (!keys.length) tb.appendChild(el('tr', null, el('td', { colspan: 2, class: 'empty' }, 'No timings recorded.')));

    var eb = $('inst-events').tBodies[0];
    clear(eb);
    var events = Array.isArray(r.events) ? r.events : [];
    events.forEach(function (ev) {
      eb.appendChild(el('tr', null, timeCell(ev.at), el('td', { class: 'nowrap' }, ev.kind || ''),
        el('td', { class: 'wrap-any' }, ev.detail || '')));
    });
    if (!events.length) eb.appendChild(el('tr', null, el('td', { colspan: 3, class: 'empty' }, 'No events.')));

    var reps = $('inst-reports');
    clear(reps);
    var reports = Array.isArray(r.reports) ? r.reports : [];
    if (!reports.length) {
      reps.appendChild(el('p', { class: 'none' },
        r.source === 'upload' ? 'Uploads are never reported to the EHR.' : 'No report has been queued for this study yet.'));
    }
    reports.forEach(function (rep) { reps.appendChild(renderReport(rep)); });
  }

  function renderReport(rep) {
    var box = el('div', { class: 'report', 'data-report': rep.id });
    box.appendChild(el('h3', null, 'Report ' + rep.id + ' \u00b7 ' + (rep.format || '') + ' to ' + (rep.destination || '?') + ' ',
      stateTag(rep.state), rep.is_correction ? el('span', { class: 'tag tag-none' }, 'correction') : null));
    var dl = el('dl', { class: 'facts facts-wide' });
    addFact(dl, 'Created', localTime(rep.created_at), { title: rep.created_at });
    addFact(dl, 'Delivered', localTime(rep.delivered_at), { title: rep.delivered_at });
    addFact(dl, 'Next attempt', rep.state === 'pending' ? localTime(rep.next_attempt_at) : '');
    addFact(dl, 'Idempotency key', rep.idempotency_key, { mono: true });
    addFact(dl, 'Control ID', rep.control_id, { mono: true });
    addFact(dl, 'Last result', lastResult(rep));
    box.appendChild(dl);
    var attempts = Array.isArray(rep.attempts) ? rep.attempts :
      Array.isArray(rep.delivery_attempts) ? rep.delivery_attempts : [];
    if (!attempts.length) {
      box.appendChild(el('p', { class: 'none' }, 'No delivery attempt yet.'));
      return box;
    }
    var tb = el('tbody');
    attempts.forEach(function (a) {
      tb.appendChild(el('tr', null, timeCell(a.at), el('td', null, stateTag(a.outcome)),
        el('td', { class: 'num' }, a.status ? String(a.status) : '\u2013'), el('td', { class: 'num' }, ms(a.ms)),
        el('td', { class: 'wrap-any' }, a.detail || '')));
    });
    box.appendChild(el('div', { class: 'table-wrap', role: 'region', tabindex: 0, 'aria-label': 'Delivery attempts of report ' + rep.id },
      el('table', { class: 'table table-compact' },
        el('caption', null, 'Delivery attempts'),
        el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'At'), el('th', { scope: 'col' }, 'Outcome'),
          el('th', { scope: 'col', class: 'num' }, 'Status'), el('th', { scope: 'col', class: 'num' }, 'ms'),
          el('th', { scope: 'col' }, 'Detail'))),
        tb)));
    return box;
  }

  function lastResult(rep) {
    var st = rep.last_status ? String(rep.last_status) : '';
    var d = rep.last_detail ? String(rep.last_detail) : '';
    if (d && st && d.indexOf(st) >= 0) return d; /* "HTTP 400" says the status already */
    return [st, d].filter(Boolean).join(' \u00b7 ');
  }

  /* ---- Outbox ---------------------------------------------------------------------------- */

  var outbox = { key: null, after: null, stack: [], next: null, filters: {}, seq: 0 };

  function loaded(table, seq) {
    table.setAttribute('data-loads', String(seq));
    table.setAttribute('aria-busy', 'false');
  }

  function setupOutbox() {
    var form = $('outbox-filters');
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var q = qs({ state: form.elements.state.value, destination: form.elements.destination.value.trim(),
        limit: outbox.filters.limit });
      var want = '#/outbox' + (q ? '?' + q : '');
      if (location.hash === want) { outbox.key = null; route(); } else location.hash = want;
    });
    form.elements.state.addEventListener('change', function () { form.requestSubmit(); });
    $('outbox-next').addEventListener('click', function () {
      if (outbox.next === null) return;
      outbox.stack.push(outbox.after);
      outbox.after = outbox.next;
      loadOutbox();
    });
    $('outbox-prev').addEventListener('click', function () {
      if (!outbox.stack.length) return;
      outbox.after = outbox.stack.pop();
      loadOutbox();
    });
  }

  function showOutbox(query) {
    var f = parseQs(query);
    var form = $('outbox-filters');
    form.elements.state.value = f.state || '';
    form.elements.destination.value = f.destination || '';
    if (outbox.key !== query) {
      outbox.key = query;
      outbox.after = null;
      outbox.stack = [];
    }
    outbox.filters = f;
    loadOutbox();
  }

  function loadOutbox(keepMsg) {
    var f = outbox.filters;
    hideError('outbox-error');
    if (!keepMsg) setText('outbox-msg', 'Loading\u2026');
    var table = $('outbox-table');
    var body = table.tBodies[0];
    var seq = ++outbox.seq;
    table.setAttribute('aria-busy', 'true');
    return api('/api/v1/outbox?' + qs({ state: f.state, destination: f.destination, limit: pageSize(f.limit), after_id: outbox.after }))
      .then(function (r) {
        if (seq !== outbox.seq) return;
        clear(body);
        var items = Array.isArray(r.items) ? r.items : [];
        items.forEach(function (rep) { body.appendChild(outboxRow(rep)); });
        if (!items.length)
          body.appendChild(el('tr', null, el('td', { colspan: 8, class: 'empty' },
            f.state ? 'No ' + f.state + ' reports.' : 'No reports yet: a report is queued when a DICOM study completes.')));
        outbox.next = r.next_after_id === undefined ? null : r.next_after_id;
        var page = outbox.stack.length + 1;
        setText('outbox-page', 'Page ' + page);
        $('outbox-prev').disabled = !outbox.stack.length;
        $('outbox-next').disabled = outbox.next === null;
        setText('outbox-caption', (f.state ? 'Reports: ' + f.state : 'Reports, all states') + ', newest first');
        if (!keepMsg) setText('outbox-msg', items.length + ' report' + (items.length === 1 ? '' : 's') + ' on page ' + page + '.');
        loaded(table, seq);
      }, function (err) {
        if (seq !== outbox.seq) return;
        clear(body);
        if (!keepMsg) setText('outbox-msg', '');
        showError('outbox-error', 'The outbox could not be loaded', err);
        loaded(table, seq);
      });
  }

  function outboxRow(rep) {
    var action = el('td');
    if (rep.state === 'dead') {
      var b = el('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Retry report ' + rep.id }, 'Retry');
      b.addEventListener('click', function () { retry(rep.id, b); });
      action.appendChild(b);
    }
    var study = el('td', { class: 'mono col-optional' });
    if (rep.study_instance_uid) {
      study.appendChild(el('a', { href: '#/audit?' + qs({ study: rep.study_instance_uid }), title: rep.study_instance_uid,
        'aria-label': 'Instances of study ' + rep.study_instance_uid }, shortUid(rep.study_instance_uid)));
    }
    return el('tr', { 'data-id': rep.id },
      el('td', null, String(rep.id)),
      timeCell(rep.created_at),
      study,
      el('td', null, rep.destination || '\u2013', el('span', { class: 'sub' }, (rep.format || '') + (rep.is_correction ? ' \u00b7 correction' : ''))),
      el('td', null, stateTag(rep.state)),
      el('td', { class: 'num' }, String(rep.attempts === undefined ? '' : Array.isArray(rep.attempts) ? rep.attempts.length : rep.attempts)),
      el('td', { class: 'wrap-any' }, lastResult(rep) || '\u2013',
        rep.state === 'pending' && rep.next_attempt_at ? el('span', { class: 'sub' }, 'next ' + localTime(rep.next_attempt_at)) : null),
      action);
  }

  function retry(id, button) {
    button.disabled = true;
    hideError('outbox-error');
    setText('outbox-msg', 'Putting report ' + id + ' back in the queue\u2026');
    api('/api/v1/outbox/' + encodeURIComponent(id) + '/retry', { method: 'POST' }).then(function (r) {
      setText('outbox-msg', 'Report ' + id + ' is ' + (r && r.state ? r.state : 'queued') + ' again; the sender will try it shortly.');
      return loadOutbox(true);
    }, function (err) {
      button.disabled = false;
      setText('outbox-msg', '');
      showError('outbox-error', 'Report ' + id + ' could not be retried', err);
    }).then(refreshStatus);
  }

  /* ---- routing --------------------------------------------------------------------------- */

  var TITLES = { classify: 'Classify', audit: 'Audit', instance: 'Instance', outbox: 'Outbox' };
  var current = null;

  function route(fromUser) {
    var h = location.hash || '';
    if (h.indexOf('#/') !== 0) {
      if (current) return; /* "#main" from the skip link: stay on the page */
      h = '#/classify';
    }
    var path = h.slice(2);
    var query = '';
    var q = path.indexOf('?');
    if (q >= 0) { query = path.slice(q + 1); path = path.slice(0, q); }
    var parts = path.split('/');
    var page = parts[0] || 'classify';
    var arg = parts[1] ? decodeURIComponent(parts[1]) : '';
    if (page === 'audit' && arg) page = 'instance';
    if (!TITLES[page]) page = 'classify';

    ['classify', 'audit', 'instance', 'outbox'].forEach(function (p) { $('page-' + p).hidden = p !== page; });
    Array.prototype.forEach.call(document.querySelectorAll('.nav a'), function (a) {
      var r = a.getAttribute('data-route');
      if (r === page || (r === 'audit' && page === 'instance')) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    document.title = TITLES[page] + ' - cxrtriage';
    if (page === 'audit') showAudit(query);
    else if (page === 'instance') showInstance(arg);
    else if (page === 'outbox') showOutbox(query);
    if (fromUser && current !== null) {
      var h1 = document.querySelector('#page-' + page + ' h1');
      if (h1) h1.focus();
    }
    current = page;
  }

  function start() {
    setupSignin();
    setupClassify();
    setupAudit();
    setupOutbox();
    window.addEventListener('hashchange', function () { route(true); });
    route(false);
    startStatus();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
