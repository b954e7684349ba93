// The Quiver dashboard: plain JS over /ui/api/overview and /ui/api/series, charts
// drawn with the vendored uPlot. Every value from the host goes into the page as
// text (textContent), never as markup. Each chart's element carries
// data-points="<n>" once uPlot has drawn it (what the tests look for).
(function () {
  'use strict';

  const KEY = 'quiver-token';
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
  const MAX_CARDS = 24;
  let token = null;
  let timer = null;
  // chart id -> {box, plot, shape}
  const charts = new Map();

  // ---- helpers -------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function $(id) { return document.getElementById(id); }

  function clear(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  function time(ms) {
    if (!ms && ms !== 0) return '';
    return new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
  }

  function short(digest) {
    if (!digest) return '';
    const s = String(digest);
    const i = s.indexOf(':');
    return (i >= 0 ? s.slice(i + 1) : s).slice(0, 12);
  }

  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return '–';
    if (typeof v !== 'number') return String(v);
    return Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 2 : digits);
  }

  function table(headers, rows, cls) {
    if (!rows.length) return el('p', { class: 'muted' }, 'none');
    return el('table', { class: cls || '' },
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, c))))));
  }

  function chip(text, cls, title) {
    return el('span', { class: 'chip ' + (cls || ''), title: title || null }, text);
  }

  // ---- token ---------------------------------------------------------------

  function readToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      token = decodeURIComponent(m[1]);
      try { sessionStorage.setItem(KEY, token); } catch (_) { /* storage off: memory only */ }
      history.replaceState(null, '', location.pathname + location.search);
      return;
    }
    try { token = sessionStorage.getItem(KEY); } catch (_) { token = null; }
  }

  function signOut(why) {
    token = null;
    try { sessionStorage.removeItem(KEY); } catch (_) { /* nothing kept */ }
    if (timer) clearTimeout(timer);
    for (const c of charts.values()) c.plot.destroy();
    charts.clear();
    $('app').hidden = true;
    $('signout').hidden = true;
    $('viewer').textContent = '';
    $('updated').textContent = '';
    $('login').hidden = false;
    $('login-error').textContent = why || '';
  }

  class Refused extends Error {}

  async function api(path) {
    const resp = await fetch(path, {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
      credentials: 'omit',
    });
    if (resp.status === 401) throw new Refused('the host refused this token');
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const m = body && body.error && (body.error.message || body.error);
      throw new Error(path + ': ' + resp.status + ' ' + (m || resp.statusText));
    }
    return body;
  }

  // ---- charts --------------------------------------------------------------

  function mark(u, box) {
    const n = u.data && u.data[0] ? u.data[0].length : 0;
    box.setAttribute('data-points', String(n));
    box.setAttribute('data-series', String(u.series.length - 1));
  }

  // One chart, kept across refreshes (same id and shape: only its data changes).
  // series: [{label, values, scale?, bars?}]
  function chart(id, title, xs, series, yLabel) {
    const shape = series.map((s) => s.label + '/' + (s.scale || 'y')).join(',');
    const data = [xs, ...series.map((s) => s.values)];
    let c = charts.get(id);
    if (c && c.shape !== shape) {
      c.plot.destroy();
      c.box.remove();
      charts.delete(id);
      c = null;
    }
    if (c) {
      c.plot.setData(data);
      c.used = true;
      return c.box;
    }
    const box = el('div', { class: 'chart', 'data-chart': id });
    const holder = el('div', { class: 'chart-body' });
    box.append(el('h4', {}, title), holder);
    const scales = { x: { time: true, range: (u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) } };
    const axes = [{}, { scale: 'y', label: yLabel || '', size: 50 }];
    const scaleNames = [];
    series.forEach((s) => {
      const name = s.scale || 'y';
      if (!scaleNames.includes(name)) scaleNames.push(name);
    });
    scaleNames.forEach((name, i) => {
      if (name === 'y') return;
      scales[name] = {};
      if (i === 1) axes.push({ scale: name, side: 1, grid: { show: false }, size: 50 });
    });
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : null;
    const opts = {
      width: 420,
      height: 170,
      scales,
      axes,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      series: [{}].concat(series.map((s, i) => ({
        label: s.label,
        scale: s.scale || 'y',
        stroke: PALETTE[i % PALETTE.length],
        fill: s.bars ? PALETTE[i % PALETTE.length] + '66' : undefined,
        width: 1.5,
        paths: s.bars && bars ? bars : undefined,
        points: s.points ? { show: true, size: 4 } : { show: xs.length <= 2 },
        spanGaps: false,
      }))),
      hooks: { draw: [(u) => mark(u, box)] },
    };
    const plot = new uPlot(opts, data, holder);
    c = { box, plot, shape, used: true };
    charts.set(id, c);
    return box;
  }

  function fitCharts() {
    for (const c of charts.values()) {
      const w = Math.max(260, Math.floor(c.box.clientWidth || 420) - 4);
      if (Math.abs(w - c.plot.width) > 2) c.plot.setSize({ width: w, height: 170 });
    }
  }

  // ---- sections ------------------------------------------------------------

  function splitCell(f) {
    const entries = Object.entries(f.split || {});
    if (!entries.length) return el('span', { class: 'muted' }, 'stable → ' + f.version);
    const total = entries.reduce((a, [, w]) => a + w, 0) || 1;
    const bar = el('div', { class: 'split' });
    entries.forEach(([v, w], i) => {
      const seg = el('span', { class: 'seg', title: v + ': ' + w }, v);
      seg.style.width = (100 * w / total).toFixed(1) + '%';
      seg.style.background = PALETTE[i % PALETTE.length];
      bar.append(seg);
    });
    const legend = entries.map(([v, w]) => v + ' ' + (100 * w / total).toFixed(0) + '%').join(' · ');
    return el('div', {}, bar, el('div', { class: 'muted small' }, legend));
  }

  function versionsCell(f) {
    return el('div', { class: 'chips' }, (f.versions || []).map((v) =>
      chip(v.version + (v.state !== 'cold' ? ' · ' + v.state : ''),
        (v.serving ? 'serving ' : '') + 'state-' + v.state,
        (v.serving ? 'serving; ' : '') + 'created ' + v.created_at + '; ' + short(v.digest))));
  }

  function triggersCell(f) {
    const parts = [];
    (f.topics || []).forEach((t) => parts.push(chip('⇠ ' + t, 'topic', 'subscribes to ' + t)));
    (f.publishes || []).forEach((t) => parts.push(chip('⇢ ' + t, 'topic', 'publishes to ' + t)));
    if (f.monitor) parts.push(chip('monitor: ' + f.monitor, 'topic'));
    return el('div', { class: 'chips' }, parts);
  }

  function renderFunctions(ov, multi) {
    const rows = [];
    for (const t of ov.tenants) {
      for (const f of t.functions) {
        rows.push([
          multi ? t.tenant : null,
          el('strong', { class: 'fn-name', 'data-function': f.name }, f.name),
          f.kind,
          f.version,
          chip(f.state, 'state-' + f.state),
          f.busy_instances + ' / ' + f.idle_instances,
          f.in_flight + ' / ' + f.queued,
          String(f.cold_starts),
          versionsCell(f),
          splitCell(f),
          el('div', { class: 'chips' }, (f.models || []).map((m) => chip(m, 'model'))),
          triggersCell(f),
        ].filter((c) => c !== null));
      }
    }
    const headers = (multi ? ['Tenant'] : []).concat(['Function', 'Kind', 'Serving', 'State',
      'Instances busy/idle', 'In flight/queued', 'Cold starts', 'Versions', 'Traffic split',
      'Models', 'Triggers']);
    clear($('functions'), table(headers, rows, 'wide'));
  }

  function renderTraffic(ov, se, multi) {
    const note = 'Sampled every ' + (se.interval_ms / 1000) + ' s, last ' + se.ring +
      ' samples kept; history starts when the host starts sampling.';
    $('traffic-note').textContent = note;
    const total = (s) => s.rate.reduce((a, b) => a + (b || 0), 0);
    const list = se.series.slice().sort((a, b) => total(b) - total(a)).slice(0, MAX_CARDS)
      .sort((a, b) => (a.tenant + '/' + a.function).localeCompare(b.tenant + '/' + b.function));
    const cards = [];
    for (const s of list) {
      const id = s.tenant + '/' + s.function;
      const versions = Object.keys(s.versions || {});
      const rate = [{ label: 'req/s', values: s.rate }, { label: 'errors/s', values: s.errors }];
      if (versions.length > 1) {
        versions.forEach((v) => rate.push({ label: v, values: s.versions[v] }));
      }
      cards.push(el('div', { class: 'card', 'data-card': id },
        el('h3', {}, multi ? id : s.function),
        el('div', { class: 'charts' },
          chart('rate:' + id, 'Request rate' + (versions.length > 1 ? ' (by version)' : ''), s.t, rate, 'req/s'),
        chart('latency:' + id, 'Latency', s.t,
          [{ label: 'p50 ms', values: s.p50_ms, points: true }, { label: 'p99 ms', values: s.p99_ms, points: true }], 'ms'),
        chart('cold:' + id, 'Cold starts', s.t,
          [{ label: 'cold starts', values: s.cold_starts, bars: true }], 'per sample'))));
    }
    if (!cards.length) {
      cards.push(el('p', { class: 'muted' }, 'No calls sampled yet.'));
    }
    clear($('traffic'), cards);
    return list.length;
  }

  function lineage(m) {
    // Walk the newest version back through `parent`.
    const byVersion = new Map(m.versions.map((v) => [v.version, v]));
    const chain = [];
    let at = m.newest;
    const seen = new Set();
    while (at && byVersion.has(at) && !seen.has(at)) {
      seen.add(at);
      chain.push(at);
      const l = byVersion.get(at).lineage;
      at = l && l.parent;
    }
    if (at && !seen.has(at)) chain.push(at + ' (not kept)');
    return chain.join(' ← ');
  }

  function lineageCell(l) {
    if (!l) return el('span', { class: 'muted' }, '–');
    const parts = [];
    if (l.parent) parts.push('parent ' + l.parent);
    if (l.dataset_digest) parts.push('dataset ' + short(l.dataset_digest));
    if (l.trainer) parts.push('trainer ' + l.trainer);
    const metrics = l.metrics && typeof l.metrics === 'object' ? Object.entries(l.metrics) : [];
    metrics.forEach(([k, v]) => parts.push(k + '=' + num(v, 4)));
    return el('span', {}, parts.join(' · ') || '–');
  }

  function renderModels(ov, multi) {
    const out = [];
    for (const t of ov.tenants) {
      for (const m of t.models) {
        const users = t.functions.filter((f) => (f.models || []).some((r) => r.split('@')[0] === m.name))
          .map((f) => f.name + '@' + f.version);
        const aliases = Object.entries(m.aliases || {}).map(([a, v]) => chip(a + ' → ' + v, 'alias'));
        out.push(el('div', { class: 'block' },
          el('h3', {}, (multi ? t.tenant + '/' : '') + m.name),
          el('p', {}, el('span', { class: 'muted' }, 'Lineage: '), lineage(m)),
          el('p', { class: 'chips' }, el('span', { class: 'muted' }, 'Aliases: '),
            aliases.length ? aliases : el('span', { class: 'muted' }, 'none'),
            el('span', { class: 'muted' }, ' Bound by: '), users.length ? users.join(', ') : 'none'),
          table(['Version', 'Created', 'Format', 'Size', 'Digest', 'Lineage'],
            m.versions.map((v) => [v.version, v.created_at, v.format, num(v.size), short(v.digest), lineageCell(v.lineage)])),
          m.history && m.history.length ? el('details', {},
            el('summary', {}, 'Alias history (' + m.history.length + ')'),
            table(['At', 'Alias', 'From', 'To', 'By', 'Reason'],
              m.history.slice().reverse().map((h) => [h.at, h.alias, h.from || '–', h.to, h.actor, h.reason]))) : null));
      }
    }
    clear($('models'), out.length ? out : el('p', { class: 'muted' }, 'No models.'));
  }

  function renderDrift(ov, multi) {
    const out = [];
    for (const t of ov.tenants) {
      for (const mon of t.monitors) {
        const id = t.tenant + '/' + mon.name;
        const xs = mon.windows.map((w) => w.start_ms / 1000);
        const alerts = [];
        mon.windows.slice().reverse().forEach((w) => (w.alerts || []).forEach((a) => alerts.push([time(w.start_ms), a])));
        const features = Object.entries(mon.features || {});
        const cards = features.map(([feature, stats]) => {
          const names = Object.keys(stats);
          return chart('drift:' + id + ':' + feature, feature, xs,
            names.map((s, i) => ({ label: s, values: stats[s], scale: i === 0 ? 'y' : s, points: true })), names[0]);
        });
        const rows = mon.windows.reduce((a, w) => a + w.rows, 0);
        out.push(el('div', { class: 'block' },
          el('h3', {}, (multi ? id : mon.name) + ' ', el('span', { class: 'muted' },
            mon.version + ' · ' + mon.windows.length + ' windows · ' + rows + ' rows')),
          cards.length ? el('div', { class: 'charts' }, cards) : el('p', { class: 'muted' }, 'No reports yet.'),
          alerts.length ? table(['Window', 'Alert'], alerts.slice(0, 20)) : null));
      }
    }
    clear($('drift'), out.length ? out : el('p', { class: 'muted' }, 'No monitors deployed.'));
  }

  function renderEvents(ov, multi) {
    const deliveries = [];
    const dead = [];
    const recent = [];
    let more = false;
    for (const t of ov.tenants) {
      for (const d of t.events.deliveries) {
        const o = d.outcomes || {};
        deliveries.push([multi ? t.tenant : null, d.function, d.topic, num(o.ok || 0), num(o.retry || 0), num(o.dead || 0)].filter((c) => c !== null));
      }
      for (const d of t.events.dead) {
        dead.push([multi ? t.tenant : null, time(d.time_ms), d.topic, d.function, String(d.attempts), d.reason, d.id, num(d.bytes)].filter((c) => c !== null));
      }
      more = more || t.events.dead_more;
      for (const e of t.events.recent || []) {
        recent.push([multi ? t.tenant : null, time(e.time_ms), e.topic, e.source || 'api', e.content_type, e.id, num(e.bytes)].filter((c) => c !== null));
      }
    }
    const pre = multi ? ['Tenant'] : [];
    clear($('events'),
      el('h3', {}, 'Recent events'),
      table(pre.concat(['Time', 'Topic', 'Published by', 'Content type', 'Id', 'Bytes']), recent),
      el('h3', {}, 'Deliveries (since the host started)'),
      table(pre.concat(['Function', 'Topic', 'OK', 'Retried', 'Dead']), deliveries),
      el('h3', {}, 'Dead-letter queue' + (more ? ' (newest shown; more kept)' : '')),
      table(pre.concat(['Time', 'Topic', 'Function', 'Attempts', 'Reason', 'Id', 'Bytes']), dead),
      dead.length ? el('p', { class: 'muted small' }, 'Replay: quiver events replay TOPIC') : null);
  }

  function renderActivity(ov) {
    if (ov.activity === null || ov.activity === undefined) {
      clear($('activity'), el('p', { class: 'muted' }, 'The audit log needs a token with the admin scope.'));
      return;
    }
    clear($('activity'), table(['At', 'Actor', 'Tenant', 'Action', 'Target', 'Result'],
      ov.activity.map((e) => [time(e.at * 1000), e.actor, e.tenant || '–', e.action, e.target, e.result])));
  }

  function render(ov, se) {
    const v = ov.viewer || {};
    $('viewer').textContent = v.platform ? 'platform admin · all tenants'
      : 'tenant ' + v.tenant + ' · ' + v.scope + ' token';
    const multi = !!v.platform;
    renderFunctions(ov, multi);
    renderTraffic(ov, se, multi);
    renderModels(ov, multi);
    renderDrift(ov, multi);
    renderEvents(ov, multi);
    renderActivity(ov);
    // Charts no section drew this time are gone.
    for (const [id, c] of charts) {
      if (!c.used || !document.body.contains(c.box)) {
        c.plot.destroy();
        charts.delete(id);
      }
    }
    fitCharts();
    $('updated').textContent = 'updated ' + time(ov.now_ms);
  }

  async function refresh() {
    if (!token) return;
    let wait = 5000;
    try {
      for (const c of charts.values()) c.used = false;
      const [ov, se] = await Promise.all([api('/ui/api/overview'), api('/ui/api/series')]);
      $('error').textContent = '';
      $('login').hidden = true;
      $('app').hidden = false;
      $('signout').hidden = false;
      render(ov, se);
      wait = Math.max(2000, Math.min(30000, se.interval_ms || 5000));
    } catch (e) {
      if (e instanceof Refused) {
        signOut(e.message);
        return;
      }
      $('error').textContent = String(e.message || e);
    }
    timer = setTimeout(refresh, wait);
  }

  function start() {
    readToken();
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      token = $('token').value.trim();
      $('token').value = '';
      if (!token) return;
      try { sessionStorage.setItem(KEY, token); } catch (_) { /* memory only */ }
      $('login-error').textContent = '';
      refresh();
    });
    $('signout').addEventListener('click', () => signOut(''));
    window.addEventListener('resize', fitCharts);
    if (token) refresh();
    else signOut('');
  }

  start();
}());
