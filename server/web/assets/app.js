// Verdict dashboard: the list of experiments and one page per run, kept live by the
// server's event stream. Plain JavaScript, no dependencies, nothing from a CDN.
'use strict';
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const main = document.getElementById('main');
  const liveEl = document.getElementById('live');
  const crumb = document.getElementById('crumb');
  let token = localStorage.getItem('verdict.token') || '';
  let page = null; // the current page: {kind, stop(), ...}
  document.body.dataset.loadedAt = String(Date.now());
  document.body.dataset.live = '0';

  // ---- small helpers ------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v);
    }
    for (const kid of kids.flat()) if (kid) el.append(kid);
    return el;
  }
  const pct = (x, digits = 0) => (x === undefined || x === null || !isFinite(x)) ? '–' : (x * 100).toFixed(digits) + '%';
  const signedPct = (x) => (!isFinite(x) ? '–' : (x >= 0 ? '+' : '') + (x * 100).toFixed(1) + '%');
  const time = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  const badge = (text, cls) => h('span', { class: 'badge ' + cls, text });
  const stateBadge = (st) => badge(st, 's-' + st);
  const kpiBadge = (st) => badge(st, 'k-' + String(st).replace(/ /g, '-'));
  const terminal = (st) => ['Promoted', 'RolledBack', 'Aborted', 'Failed'].includes(st);
  // goDuration parses a Go duration ("5m0s", "1h30m", "750ms") into milliseconds.
  function goDuration(str) {
    if (!str) return 0;
    const unit = { h: 3600e3, m: 60e3, s: 1e3, ms: 1, us: 1e-3, 'µs': 1e-3, ns: 1e-6 };
    let ms = 0;
    for (const [, n, u] of String(str).matchAll(/([\d.]+)(ms|us|µs|ns|h|m|s)/g)) ms += Number(n) * unit[u];
    return ms;
  }
  // shortDuration is a duration as the terminal shows it: 2m, 3h, 1h30m, 45s.
  function shortDuration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s %= 60;
    return (h ? h + 'h' : '') + (m ? m + 'm' : '') + (s || (!h && !m) ? s + 's' : '');
  }
  // Interval bounds: the API's camelCase names, or the engine's in stored decision details.
  const lowerBounded = (iv) => iv.lowerBounded ?? iv.lower_bounded ?? iv.LowerBounded ?? false;
  const upperBounded = (iv) => iv.upperBounded ?? iv.upper_bounded ?? iv.UpperBounded ?? false;
  // eventKey identifies an event whichever way it arrived (the stored history, the run's
  // recent messages, the live stream): by type, time to the millisecond (the store keeps
  // milliseconds, the live stream nanoseconds) and message. Only stored events carry a
  // sequence number, so it cannot be the key.
  function eventKey(e) {
    const at = Date.parse(String(e.at).replace(/(\.\d{3})\d+/, '$1'));
    return e.type + '|' + at + '|' + e.message;
  }
  // actualWeights are the pool's weights while a drift is the latest word on it: the API's
  // actualWeights, else the latest drift event's data.actual with no weights confirmed since.
  function actualWeights(r, events) {
    if (!r || terminal(r.state)) return null;
    if (r.actualWeights && Object.keys(r.actualWeights).length) return r.actualWeights;
    let actual = null;
    for (const e of events.slice().sort((a, b) => Date.parse(a.at) - Date.parse(b.at))) {
      if (e.type === 'weights_confirmed') actual = null;
      if (e.type === 'drift' && e.data && e.data.actual) actual = e.data.actual;
    }
    return actual;
  }

  // ---- API ----------------------------------------------------------------------------
  function headers(extra) {
    const hd = Object.assign({ Accept: 'application/json' }, extra || {});
    if (token) hd.Authorization = 'Bearer ' + token;
    return hd;
  }
  async function api(path, opts = {}) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers) }));
      if (res.status === 401) { await askToken(); continue; }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error || res.status + ' ' + res.statusText);
      return body;
    }
    throw new Error('not authorised');
  }
  function askToken() {
    const dlg = document.getElementById('login');
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => {
        token = document.getElementById('login-token').value.trim();
        localStorage.setItem('verdict.token', token);
        resolve();
      }, { once: true });
      if (!dlg.open) dlg.showModal();
    });
  }

  // Stream reads server-sent events with fetch (so the token can travel in a header),
  // and reconnects with Last-Event-ID.
  class Stream {
    constructor(path, lastID, onMessage) {
      this.path = path; this.lastID = lastID || ''; this.onMessage = onMessage;
      this.ctl = null; this.stopped = false; this.run();
    }
    stop() { this.stopped = true; if (this.ctl) this.ctl.abort(); }
    async run() {
      while (!this.stopped) {
        this.ctl = new AbortController();
        try {
          const hd = headers({ Accept: 'text/event-stream' });
          if (this.lastID) hd['Last-Event-ID'] = this.lastID;
          const res = await fetch(this.path, { headers: hd, signal: this.ctl.signal });
          if (res.status === 401) { await askToken(); continue; }
          if (!res.ok) throw new Error('stream ' + res.status);
          setLive(true);
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let buf = '', id = '', ev = '', data = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let nl;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).replace(/\r$/, '');
              buf = buf.slice(nl + 1);
              if (line === '') {
                if (data) {
                  if (id) this.lastID = id;
                  let msg;
                  if (ev === 'reset') msg = { type: 'reset', id };
                  else { try { msg = JSON.parse(data); } catch (e) { msg = null; } }
                  if (msg) this.onMessage(msg);
                }
                id = ''; ev = ''; data = '';
              } else if (line.startsWith('id:')) id = line.slice(3).trim();
              else if (line.startsWith('event:')) ev = line.slice(6).trim();
              else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
            }
          }
        } catch (e) {
          if (this.stopped) return;
        }
        setLive(false);
        if (!this.stopped) await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }
  function setLive(on) {
    liveEl.className = 'live ' + (on ? 'on' : 'off');
    liveEl.textContent = on ? 'live' : 'reconnecting';
  }
  // counted marks each live message on <body> (count, last ID, when it arrived): a page
  // that updates without reloading can be checked from outside, e.g. by a browser test.
  function counted(fn) {
    return (m) => {
      const b = document.body.dataset;
      b.live = String(Number(b.live) + 1);
      b.lastId = m.id || '';
      b.lastType = m.type;
      b.lastAt = String(Date.now());
      fn(m);
    };
  }
  // throttle re-renders to one per animation frame.
  function scheduler(fn) {
    let queued = false;
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; fn(); });
    };
  }

  // ---- charts -------------------------------------------------------------------------
  // lineChart draws series of [time, value] points, an optional band of [time, lo, hi],
  // and horizontal reference lines, in a responsive SVG.
  // niceTicks returns round tick values (steps of 1, 2, 2.5 or 5 × 10^k) covering [lo, hi],
  // and the axis range they span.
  function niceTicks(lo, hi, n) {
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw) || mag * 10;
    const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(Math.round(v / step) * step);
    return { ticks, lo: start, hi: end };
  }

  // lineChart draws series of [t, y] points (a null y breaks the line: no data in between),
  // a band of [t, lo, hi] points (null bounds leave a gap), and labelled reference lines.
  function lineChart({ series = [], band = null, hlines = [], yfmt = null, step = false, ymin, ymax }) {
    const W = 600, H = 210, L = 56, R = 10, T = 10, B = 26;
    const pts = series.flatMap((x) => x.points).filter((p) => p[1] !== null);
    const all = pts.map((p) => p[1]).concat(hlines.map((l) => l.y));
    if (band) band.points.forEach((p) => { if (p[1] !== null) all.push(p[1], p[2]); });
    const ts = pts.map((p) => p[0]).concat(band ? band.points.map((p) => p[0]) : [], series.filter((x) => x.until).map((x) => x.until));
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    if (!ts.length) {
      svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'no data yet' }));
      return svg;
    }
    let t0 = Math.min(...ts), t1 = Math.max(...ts);
    if (t1 === t0) t1 = t0 + 60000;
    const finite = all.filter((v) => isFinite(v));
    let y0 = ymin !== undefined ? ymin : Math.min(...finite), y1 = ymax !== undefined ? ymax : Math.max(...finite);
    // A flat series (or one varying in its last digits) gets a readable range around it.
    const mag = Math.max(Math.abs(y0), Math.abs(y1));
    if (y1 - y0 < mag * 1e-3 || y1 === y0) { const c = (y0 + y1) / 2, d = mag * 0.01 || 1; y0 = c - d; y1 = c + d; }
    // Round ticks, and a labelled tick at every reference line (zero, the tolerance): a line
    // between two labels makes the reader guess its value. Nice ticks too close to one are
    // dropped so the labels never collide.
    const nt = niceTicks(y0, y1, 4);
    if (ymin === undefined || nt.lo >= ymin) y0 = nt.lo;
    if (ymax === undefined || nt.hi <= ymax) y1 = nt.hi;
    const refs = hlines.map((l) => l.y).filter((v) => v >= y0 && v <= y1);
    const minGap = 14 * (y1 - y0) / (H - T - B);
    const ticks = nt.ticks.filter((v) => v >= y0 - 1e-12 && v <= y1 + 1e-12 && !refs.some((r) => Math.abs(r - v) > 1e-12 && Math.abs(r - v) < minGap));
    for (const r of refs) if (!ticks.some((v) => Math.abs(v - r) <= 1e-12)) ticks.push(r);
    ticks.sort((a, b) => a - b);
    if (!yfmt) {
      // Enough decimals to tell the ticks apart.
      const digits = Math.max(0, Math.min(8, Math.ceil(-Math.log10((y1 - y0) / 4)) + 1));
      yfmt = (v) => (Math.abs(v) >= 1e4 ? v.toExponential(2) : v.toFixed(digits));
    }
    const X = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
    const Y = (v) => T + (H - T - B) * (1 - (Math.max(y0, Math.min(y1, v)) - y0) / (y1 - y0));
    svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
    for (const v of ticks) {
      svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: Y(v), y2: Y(v), 'stroke-opacity': 0.5 }));
      svg.append(s('text', { x: L - 6, y: Y(v) + 4, 'text-anchor': 'end', text: yfmt(Math.abs(v) < 1e-12 ? 0 : v) }));
    }
    svg.append(s('text', { x: L, y: H - 8, text: time(t0) }));
    svg.append(s('text', { x: W - R, y: H - 8, 'text-anchor': 'end', text: time(t1) }));
    if (band && band.points.length) {
      // One polygon per run of points with bounds: a gap (a pause, bounds not yet
      // meaningful) is drawn as a gap, not pinched to the estimate.
      let run = [];
      const flush = () => {
        if (run.length > 1) {
          const up = run.map((p) => `${X(p[0])},${Y(p[2])}`);
          const down = run.slice().reverse().map((p) => `${X(p[0])},${Y(p[1])}`);
          svg.append(s('polygon', { class: 'band', points: up.concat(down).join(' ') }));
        }
        run = [];
      };
      for (const p of band.points) { if (p[1] === null || p[2] === null) flush(); else run.push(p); }
      flush();
    }
    for (const l of hlines) if (l.y >= y0 && l.y <= y1) svg.append(s('line', { class: l.cls, x1: L, x2: W - R, y1: Y(l.y), y2: Y(l.y) }));
    for (const x of series) {
      if (!x.points.length) continue;
      let d = '', pen = false;
      for (const p of x.points) {
        if (p[1] === null) { pen = false; continue; }
        if (!pen) d += `M${X(p[0])},${Y(p[1])}`;
        else if (step) d += `H${X(p[0])}V${Y(p[1])}`;
        else d += `L${X(p[0])},${Y(p[1])}`;
        pen = true;
      }
      if (step && x.until && pen) d += `H${X(x.until)}`;
      if (d) svg.append(s('path', { class: x.cls, d }));
    }
    return svg;
  }

  // withGaps inserts a break (a null point) where consecutive points are further apart
  // than 1.5 times the usual spacing: a pause or an outage has no data to draw through.
  function withGaps(points) {
    if (points.length < 3) return points;
    const d = points.slice(1).map((p, i) => p[0] - points[i][0]).sort((a, b) => a - b);
    const usual = d[Math.floor(d.length / 2)];
    const out = [points[0]];
    for (let i = 1; i < points.length; i++) {
      if (usual > 0 && points[i][0] - points[i - 1][0] > 1.5 * usual) out.push([points[i][0], null, null]);
      out.push(points[i]);
    }
    return out;
  }
  const legend = (...items) => h('div', { class: 'legend' }, items.map(([cls, text]) => h('span', {}, h('i', { class: cls }), text)));

  // ---- list page ----------------------------------------------------------------------
  function listPage() {
    crumb.textContent = 'Experiments';
    document.body.dataset.page = 'list';
    let data = null, files = [], error = '';
    const render = scheduler(() => {
      main.replaceChildren();
      if (error) main.append(h('p', { class: 'notice', text: error }));
      if (!data) return;
      const invalid = files.filter((f) => f.status === 'invalid');
      for (const f of invalid) {
        main.append(h('div', { class: 'notice' }, h('strong', { text: f.path + ' is invalid; nothing in it runs' }), h('div', { class: 'errors', text: (f.errors || []).join('\n') })));
      }
      if (!data.experiments.length) main.append(h('p', { class: 'muted', text: 'No experiments yet: add a file to the watched directory.' }));
      main.append(h('div', { class: 'grid', id: 'experiments' }, data.experiments.map(expCard)));
      document.body.dataset.ready = '1';
    });
    const load = async () => {
      try {
        const [e, f] = await Promise.all([api('/api/v1/experiments'), api('/api/v1/files')]);
        data = e; files = f.files || []; error = '';
      } catch (e) { error = 'Could not load: ' + e.message; }
      render();
    };
    let timer = null;
    const soon = () => { clearTimeout(timer); timer = setTimeout(load, 250); };
    const pg = { kind: 'list', stopped: false, stop() { this.stopped = true; clearTimeout(timer); if (this.stream) this.stream.stop(); } };
    load().then(() => {
      if (!pg.stopped) pg.stream = new Stream('/api/v1/stream', data ? data.cursor : '', counted(soon));
    });
    return pg;
  }

  function expCard(e) {
    const r = e.runs[0];
    if (!r) {
      return h('div', { class: 'card', 'data-experiment': e.name }, h('div', { class: 'row' }, h('strong', { text: e.name })),
        h('p', { class: 'muted', text: e.note || 'no run yet' }));
    }
    const kpis = (r.decision && r.decision.kpis) || [];
    const actual = r.actualWeights && Object.keys(r.actualWeights).length && !terminal(r.state) ? r.actualWeights : null;
    // Three parts side by side on a wide screen, stacked on a phone: what and where, the
    // traffic, the KPIs.
    return h('a', { class: 'card link', href: '#/runs/' + encodeURIComponent(r.id), 'data-experiment': e.name, 'data-state': r.state },
      h('div', {},
        h('div', { class: 'row' }, h('strong', { text: e.name }), stateBadge(r.state), ['inconclusive', 'check_failed'].includes(r.verdict) ? badge(r.verdict.replace('_', ' '), 's-' + r.state) : null),
        h('div', { class: 'muted', text: `${r.canary || ''} vs ${(r.baselines || []).join(', ')} · step ${r.step}/${r.steps}` }),
        r.reason ? h('p', { text: r.reason }) : null),
      h('div', {},
        h('div', { class: 'bar', title: 'canary share' }, barFill(r.canaryShare, barClass(r, kpis))),
        h('div', { class: 'muted', text: 'canary at ' + pct(r.canaryShare) + ' of the experiment\'s traffic' }),
        h('div', { class: 'weights', text: (actual ? 'confirmed ' : '') + weightsText(r) }),
        actual ? h('div', { class: 'weights drift', text: 'actual in pool ' + weightsText({ weights: actual }) }) : null),
      h('div', {}, kpis.length ? h('div', { class: 'row' }, kpis.map((k) => h('span', {}, k.name + ' ', kpiBadge(k.status)))) : h('span', { class: 'muted', text: 'no decision yet' })),
      r.orphan ? h('p', { class: 'notice orphan full', text: r.orphan.hint }) : null,
      e.note ? h('p', { class: 'muted full', text: e.note }) : null);
  }
  function weightsText(r) {
    const w = r.weights || r.original || {};
    return Object.keys(w).sort().map((o) => `${o} ${w[o].toFixed(2)}`).join(' · ');
  }
  // barClass: colour carries meaning only: harm red, paused amber, anything else neutral.
  function barClass(r, kpis) {
    if (['RolledBack', 'RollingBack', 'Failed'].includes(r.state) || (kpis || []).some((k) => k.status === 'harm')) return 'p-harm';
    if (r.state === 'Paused') return 'p-paused';
    if (r.state === 'Promoted') return 'p-done';
    return 'p-ok';
  }
  function barFill(share, cls) {
    const span = h('span', { class: cls || 'p-ok' });
    span.style.width = ((share || 0) * 100).toFixed(1) + '%';
    return span;
  }

  // ---- run page -----------------------------------------------------------------------
  function runPage(id) {
    document.body.dataset.page = 'run';
    crumb.textContent = id;
    const st = { run: null, spec: null, decisions: [], events: [], notices: [], error: '', flash: '', all: false };
    const seen = new Set();
    const addEvent = (e) => { const k = eventKey(e); if (seen.has(k)) return; seen.add(k); st.events.push(e); };
    const render = scheduler(() => renderRun(st, render, reload));
    const reload = async () => {
      try {
        const d = await api('/api/v1/runs/' + encodeURIComponent(id));
        st.run = d.run; st.spec = d.spec; st.error = '';
        st.detail = { hold: goDuration(d.hold), stepElapsed: goDuration(d.stepElapsed), rampStart: d.rampStart ? Date.parse(d.rampStart) : 0,
          maxDuration: goDuration(d.maxDuration), now: d.now ? Date.parse(d.now) : 0, fetched: Date.now() };
        for (const m of d.messages || []) if (!storedTypes.has(m.type)) addEvent(m);
        return d;
      } catch (e) { st.error = e.message; }
      finally { render(); }
    };
    const loadAll = async () => {
      const d = await reload();
      if (!d) return null;
      const [ds, evs] = await Promise.all([api('/api/v1/runs/' + encodeURIComponent(st.run.id) + '/decisions'), api('/api/v1/runs/' + encodeURIComponent(st.run.id) + '/events')]);
      st.decisions = ds.decisions.map((x) => ({ at: x.at, step: x.step, action: x.action, reason: x.reason, details: x.details }));
      for (const e of evs.events) if (e.type !== 'decision') addEvent(e);
      render();
      return d;
    };
    const onMessage = counted((m) => {
      if (m.type === 'reset') { loadAll(); return; }
      if (m.type === 'decision') {
        const d = m.data || {};
        if (!st.decisions.some((x) => x.at === m.at)) st.decisions.push({ at: m.at, step: d.step, action: d.decision && d.decision.action, reason: d.decision && d.decision.reason, details: d });
      } else addEvent(m);
      if (['state_changed', 'weights_confirmed', 'action', 'run_ended', 'decision', 'drift'].includes(m.type)) reload();
      render();
    });
    // Time left moves on between events: the progress lines are refreshed every second.
    const timer = setInterval(() => updateProgress(st), 1000);
    const pg = { kind: 'run', stopped: false, stop() { this.stopped = true; clearInterval(timer); if (this.stream) this.stream.stop(); } };
    loadAll().then((d) => { if (d && !pg.stopped) pg.stream = new Stream('/api/v1/runs/' + encodeURIComponent(st.run.id) + '/stream', d.cursor, onMessage); });
    return pg;
  }
  const storedTypes = new Set(['run_started', 'state_changed', 'weights_intent', 'weights_confirmed', 'decision', 'drift', 'fault', 'no_data', 'precondition', 'capacity', 'action', 'notification', 'run_ended']);

  function actionsFor(run) {
    const st = run.state;
    return {
      pause: ['Ramping', 'Preflight', 'Pending'].includes(st),
      resume: st === 'Paused',
      promote: st === 'Ramping' || st === 'Paused',
      abort: !terminal(st) && st !== 'RollingBack' && st !== 'Promoting',
    };
  }
  const actionText = {
    pause: ['Pause this run?', 'Weights stay as they are and nothing advances until someone resumes it.', ''],
    resume: ['Resume this run?', 'It carries on from the pool\'s current weights.', 'primary'],
    promote: ['Promote now?', 'The remaining steps are skipped and the canary keeps its final weight.', 'primary'],
    abort: ['Abort and roll back now?', 'The experiment\'s origins go back to their original weights at once.', 'danger'],
  };

  function confirmAction(action, run) {
    const dlg = document.getElementById('confirm');
    const [title, text, cls] = actionText[action];
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-text').textContent = text + ' Run ' + run.id + '.';
    const ok = document.getElementById('confirm-ok');
    ok.textContent = action[0].toUpperCase() + action.slice(1);
    ok.className = cls;
    const who = document.getElementById('confirm-who');
    who.value = localStorage.getItem('verdict.who') || '';
    document.getElementById('confirm-reason').value = '';
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => {
        if (dlg.returnValue !== 'ok') return resolve(null);
        localStorage.setItem('verdict.who', who.value.trim());
        resolve({ who: who.value.trim(), reason: document.getElementById('confirm-reason').value.trim() });
      }, { once: true });
      dlg.returnValue = '';
      dlg.showModal();
    });
  }

  async function act(action, st, render, reload) {
    const req = await confirmAction(action, st.run);
    if (!req) return;
    try {
      const res = await api('/api/v1/runs/' + encodeURIComponent(st.run.id) + '/' + action, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req) });
      st.flash = !res.applied ? `${action} queued (by ${res.who}); the process running the experiment applies it at its next step.`
        : res.state === res.previous ? `${action} taken (by ${res.who}) but the run stays ${res.state}.`
          : `${action} applied (by ${res.who}): ${res.previous} → ${res.state}.`;
    } catch (e) {
      st.flash = `${action} refused: ${e.message}`;
    }
    await reload();
    render();
  }

  // openReport: without a token the link simply opens the report. With one, a link cannot
  // carry the header, so the report is fetched and saved as a self-contained HTML file
  // (opening it from here would subject it to this page's content security policy).
  function openReport(run) {
    return async (ev) => {
      if (!token) return;
      ev.preventDefault();
      const res = await fetch(run.reportURL, { headers: headers() });
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: 'verdict-report-' + run.id + '.html' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    };
  }

  function renderRun(st, render, reload) {
    main.replaceChildren();
    if (st.error) main.append(h('p', { class: 'notice', text: st.error }));
    const add = (...els) => main.append(...els.filter((x) => x));
    const r = st.run;
    if (!r) return;
    document.body.dataset.state = r.state;
    document.body.dataset.decisions = String(st.decisions.length);
    crumb.textContent = r.experiment;
    const can = actionsFor(r);
    const kpis = (r.decision && r.decision.kpis) || lastKPIs(st);
    const actual = actualWeights(r, st.events);
    document.body.dataset.actual = actual ? '1' : '0';
    add(
      h('h1', {}, r.experiment + ' ', stateBadge(r.state)),
      h('div', { class: 'muted', text: 'run ' + r.id }),
      st.flash ? h('p', { class: 'notice', id: 'flash', text: st.flash }) : null,
      h('div', { class: 'actions' }, Object.keys(actionText).map((a) =>
        h('button', { id: 'btn-' + a, class: a === 'abort' ? 'danger' : '', disabled: !can[a] || undefined, onclick: () => act(a, st, render, reload) }, a[0].toUpperCase() + a.slice(1))),
        h('a', { href: r.reportURL, target: '_blank', rel: 'noopener', class: 'muted', onclick: openReport(r) }, 'Report')),
      h('dl', { class: 'kv' },
        h('dt', { text: 'Canary' }), h('dd', { text: r.canary || '–' }),
        h('dt', { text: 'Baselines' }), h('dd', { text: (r.baselines || []).join(', ') }),
        h('dt', { text: 'Step' }), h('dd', { text: `${r.step} of ${r.steps}, canary at ${pct(r.canaryShare)} of the experiment's traffic` }),
        progressRows(st),
        h('dt', { text: actual ? 'Confirmed' : 'Weights' }), h('dd', { id: 'weights', text: weightsText(r) + (r.original ? ' (before: ' + weightsText({ weights: r.original }) + ')' : '') }),
        actual ? h('dt', { class: 'drift', text: 'Actual in pool' }) : null,
        actual ? h('dd', { id: 'actual-weights', class: 'drift' }, weightsText({ weights: actual }),
          h('div', { class: 'muted', text: 'The pool was changed outside Verdict: traffic goes by these weights, not the confirmed ones. Resume carries on from them; abort rolls back.' })) : null,
        r.verdict ? h('dt', { text: 'Verdict' }) : null, r.verdict ? h('dd', { id: 'verdict', text: `${r.verdict.replace('_', ' ')} — ${r.reason} (by ${r.endedBy})` }) : null,
        r.state === 'Paused' && r.pauseNote ? h('dt', { text: 'Paused' }) : null, r.state === 'Paused' && r.pauseNote ? h('dd', { text: r.pauseNote }) : null,
        r.stalled ? h('dt', { text: 'Stalled' }) : null, r.stalled ? h('dd', { text: r.stalled }) : null,
        r.orphan ? h('dt', { text: 'Orphaned' }) : null, r.orphan ? h('dd', { id: 'orphan', text: r.orphan.hint }) : null,
        h('dt', { text: 'File' }), h('dd', { text: r.file || '–' }),
        h('dt', { text: 'Pool' }), h('dd', { text: r.pool })),
    );
    if (r.decision) main.append(h('p', {}, h('strong', { text: 'Latest decision: ' + r.decision.action }), ' — ' + r.decision.reason));
    main.append(h('h2', { text: 'KPIs' }), h('div', { class: 'scroll' }, kpiTable(kpis)));
    main.append(h('h2', { text: 'Charts' }), h('div', { class: 'charts' }, charts(st)));
    main.append(h('h2', {}, 'Timeline ', h('label', { class: 'muted' }, h('input', { type: 'checkbox', checked: st.all || undefined, onchange: (e) => { st.all = e.target.checked; render(); } }), ' every decision')),
      timeline(st));
    document.body.dataset.ready = '1';
  }

  // progress is the hold and the run's time as the terminal shows them: analysed time of
  // the step's hold (its clock stops without data and while paused) and the time left
  // before maxDuration. The server's clock is taken from the run's last update.
  function progress(st) {
    const r = st.run, d = st.detail || {};
    const out = {};
    if ((r.state === 'Ramping' || r.state === 'Paused') && d.hold > 0 && r.step > 0) {
      const frac = Math.min(1, d.stepElapsed / d.hold);
      out.holdFrac = frac;
      out.hold = `${Math.round(frac * 100)}% — ${shortDuration(d.stepElapsed)} of ${shortDuration(d.hold)} analysed, ${shortDuration(d.hold - d.stepElapsed)} left` +
        (r.state === 'Paused' ? ' (clock stopped: paused)' : ' (the clock stops without data)');
    }
    if (d.rampStart && d.maxDuration && !terminal(r.state)) {
      // The server's clock when it says it (a fleet on simulated time runs its own),
      // plus the time since; else this browser's.
      const now = d.now ? d.now + (Date.now() - d.fetched) : Date.now();
      const el = Math.max(0, now - d.rampStart);
      out.elapsed = `${shortDuration(el)} of at most ${shortDuration(d.maxDuration)}, ${shortDuration(d.maxDuration - el)} left`;
    }
    return out;
  }
  function progressRows(st) {
    const p = progress(st);
    const rows = [];
    if (p.hold) {
      rows.push(h('dt', { text: 'Hold' }), h('dd', {}, h('div', { class: 'bar hold', title: 'analysed time of this step\'s hold' }, barFill(p.holdFrac, st.run.state === 'Paused' ? 'p-paused' : 'p-ok')),
        h('span', { id: 'hold', text: p.hold })));
    }
    if (p.elapsed) rows.push(h('dt', { text: 'Elapsed' }), h('dd', { id: 'elapsed', text: p.elapsed }));
    return rows;
  }
  function updateProgress(st) {
    if (!st.run) return;
    const p = progress(st), el = document.getElementById('elapsed');
    if (el && p.elapsed) el.textContent = p.elapsed;
  }

  function lastKPIs(st) {
    const d = st.decisions[st.decisions.length - 1];
    return (d && d.details && d.details.decision && d.details.decision.kpis) || [];
  }

  function kpiTable(kpis) {
    if (!kpis.length) return h('p', { class: 'muted', text: 'No decision yet.' });
    return h('table', { id: 'kpis' },
      h('thead', {}, h('tr', {}, ['KPI', 'Status', 'Effect (cumulative)', 'Confidence sequence', 'Tolerance', 'Why'].map((x) => h('th', { text: x })))),
      h('tbody', {}, kpis.map((k) => {
        const iv = k.interval || {};
        // data-label names each cell where a phone stacks the row.
        return h('tr', {},
          h('td', { class: 'kpi-name', 'data-label': 'KPI', text: k.name }), h('td', { 'data-label': 'Status' }, kpiBadge(k.status)),
          h('td', { class: 'num', 'data-label': 'Effect', text: signedPct(iv.estimate) }),
          h('td', { class: 'num', 'data-label': 'Bounds', text: `[${lowerBounded(iv) ? signedPct(iv.lower) : '−∞'}, ${upperBounded(iv) ? signedPct(iv.upper) : '+∞'}]` }),
          h('td', { class: 'num', 'data-label': 'Tolerance', text: (k.harm === 'decrease' ? '−' : '+') + pct(k.tolerance, 1) }),
          h('td', { class: 'why', 'data-label': 'Why', text: k.reason }));
      })));
  }

  function charts(st) {
    const out = [];
    const ds = st.decisions.filter((d) => d.details && d.details.decision);
    const names = [];
    for (const d of ds) for (const k of d.details.decision.kpis || []) if (!names.includes(k.name)) names.push(k.name);
    for (const name of names) {
      const est = [], bandPts = [];
      let tol = null;
      for (const d of ds) {
        const k = (d.details.decision.kpis || []).find((x) => x.name === name);
        if (!k || !k.interval || !k.interval.intervals) continue;
        const t = Date.parse(d.at), iv = k.interval;
        est.push([t, iv.estimate]);
        // Before the sequence is ready its bounds mean nothing: no band rather than one
        // pinched to the estimate.
        bandPts.push(iv.ready === false ? [t, null, null] : [t, lowerBounded(iv) ? iv.lower : -Infinity, upperBounded(iv) ? iv.upper : Infinity]);
        tol = (k.harm === 'decrease' ? -1 : 1) * k.tolerance;
      }
      const lo = Math.min(...est.map((p) => p[1]), tol || 0, 0), hi = Math.max(...est.map((p) => p[1]), tol || 0, 0);
      const span = Math.max(hi - lo, 0.05);
      out.push(h('div', { class: 'card chart', 'data-kpi': name }, h('h3', { text: name + ': effect with its confidence sequence' }),
        lineChart({ series: [{ cls: 'canary', points: withGaps(est) }], band: { points: withGaps(bandPts) }, hlines: [{ y: 0, cls: 'zero' }].concat(tol !== null ? [{ y: tol, cls: 'tol' }] : []),
          yfmt: signedPct, ymin: lo - span * 0.6, ymax: hi + span * 0.6 }),
        legend(['l-canary', 'effect (canary vs baselines)'], ['l-band', 'anytime-valid bounds'], ['l-tol', 'tolerance'])));
    }
    // Raw values per KPI as configured (a latency KPI is judged twice but measured once).
    const valueNames = [];
    for (const d of ds) for (const v of d.details.values || []) if (!valueNames.includes(v.kpi)) valueNames.push(v.kpi);
    for (const name of valueNames) {
      const canary = [], base = [];
      for (const d of ds) {
        const v = (d.details.values || []).find((x) => x.kpi === name);
        if (!v) continue;
        const t = Date.parse(d.at);
        canary.push([t, v.canary]); base.push([t, v.baseline]);
      }
      out.push(h('div', { class: 'card chart', 'data-values': name }, h('h3', { text: name + ': canary vs baselines' }),
        lineChart({ series: [{ cls: 'base', points: withGaps(base) }, { cls: 'canary', points: withGaps(canary) }], yfmt: null }),
        legend(['l-canary', 'canary'], ['l-base', 'baselines (pooled)'])));
    }
    out.push(h('div', { class: 'card chart', id: 'weights-chart' }, h('h3', { text: 'Weights over time' }), weightsChart(st)));
    return out;
  }
  function weightsChart(st) {
    const r = st.run;
    const origins = Object.keys(r.original || r.weights || {}).sort();
    if (!origins.length) return lineChart({});
    const series = origins.map((o, i) => ({ cls: 'wl w' + Math.min(i, 4), name: o, points: [[Date.parse(r.startedAt || r.createdAt), (r.original || {})[o] || 0]] }));
    // Where the traffic went: confirmed weights, and the pool's actual weights from the
    // moment a drift was seen until weights are confirmed again.
    const changes = st.events.filter((e) => e.type === 'weights_confirmed' || (e.type === 'drift' && e.data && e.data.actual)).sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
    for (const e of changes) {
      const w = (e.type === 'drift' ? e.data.actual : e.data && e.data.want) || {};
      series.forEach((x) => { if (x.name in w) x.points.push([Date.parse(e.at), w[x.name]]); });
    }
    const last = st.decisions.length ? Date.parse(st.decisions[st.decisions.length - 1].at) : 0;
    const until = r.endedAt ? Date.parse(r.endedAt) : Math.max(Date.parse(r.updatedAt), last);
    series.forEach((x) => { x.until = Math.max(until, x.points[x.points.length - 1][0]); });
    return h('div', {}, lineChart({ series, step: true, ymin: 0, yfmt: (v) => v.toFixed(2) }),
      legend(...origins.map((o, i) => ['c' + Math.min(i, 4), o])));
  }

  function timeline(st) {
    const items = [];
    for (const e of st.events) items.push({ at: e.at, type: e.type, text: e.message });
    st.decisions.forEach((d, i) => {
      if (st.all || d.action !== 'continue' || i === st.decisions.length - 1) items.push({ at: d.at, type: 'decision', text: `step ${d.step}: ${d.action} — ${d.reason}` });
    });
    // Newest first; within one instant, the later-recorded first.
    items.forEach((x, i) => { x.i = i; });
    items.sort((a, b) => (Date.parse(b.at) - Date.parse(a.at)) || (b.i - a.i));
    return h('ul', { class: 'timeline', id: 'timeline' }, items.slice(0, 300).map((x) =>
      h('li', { class: 't-' + x.type }, h('time', { text: time(x.at) }), h('span', { class: 'what', text: x.type.replace(/_/g, ' ') }), h('span', { class: 'msg', text: x.text }))));
  }

  // ---- router -------------------------------------------------------------------------
  function route() {
    if (page) page.stop();
    setLive(false);
    const m = location.hash.match(/^#\/runs\/(.+)$/);
    page = m ? runPage(decodeURIComponent(m[1])) : listPage();
  }
  window.addEventListener('hashchange', route);
  route();
})();
