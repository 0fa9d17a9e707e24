/* lightning-explain dashboard: inlined into every page by lightning_explain.dashboard.
 *
 * Draws every chart (SVG) and every map (canvas) from the JSON in #dashboard-data. Nothing is
 * fetched: pictures are base64 in the JSON and decoded with createImageBitmap. Strings from the
 * data reach the DOM through esc() or textContent only.
 */
'use strict';
(function () {
  const doc = document;
  const root = doc.documentElement;
  const D = JSON.parse(doc.getElementById('dashboard-data').textContent);
  const nC = D.ckpts.length;
  const nM = D.methods.length;
  const nP = D.nPairs;
  const TOL = 1e-3; // changes smaller than this count as unchanged
  const state = {
    tab: null, hm: new Set(), hc: new Set(), pair: 0, ck: null, a: null, b: null,
    heat: 'pair', heatCk: null, curvePair: -1, live: true,
  };
  const rendered = {};
  const views = {};
  const timings = {};

  // ------------------------------------------------------------------------------ utilities
  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ESC[c]); }
  function isNum(v) { return typeof v === 'number' && isFinite(v); }
  function fmt(v, d) { return isNum(v) ? v.toFixed(d === undefined ? 4 : d) : 'n/a'; }
  function fmtDelta(v, d) {
    if (!isNum(v)) return 'n/a';
    return (v >= 0 ? '+' : '\u2212') + Math.abs(v).toFixed(d === undefined ? 4 : d);
  }
  function $(sel, ctx) { return (ctx || doc).querySelector(sel); }
  function $$(sel, ctx) { return Array.from((ctx || doc).querySelectorAll(sel)); }
  function h(tag, attrs, html) {
    const e = doc.createElement(tag);
    for (const k in attrs || {}) {
      if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    }
    if (html !== undefined) e.innerHTML = html;
    return e;
  }
  function arrowOf(dir) { return dir === true ? ' \u2191' : dir === false ? ' \u2193' : ''; }
  function arrow(k) { return arrowOf(D.metrics[k].h); }
  function wbr(text) { return esc(text).replace(/_/g, '_<wbr>'); }
  function metricName(k) { return wbr(D.metrics[k].k) + arrow(k); }
  function curveName(c) {
    const key = D.curveKeys[c];
    const k = D.metrics.findIndex((m) => m.k === key);
    return wbr(key) + (k >= 0 ? arrow(k) : '');
  }
  function visM() { const o = []; for (let j = 0; j < nM; j++) if (!state.hm.has(j)) o.push(j); return o; }
  function visC() { return D.order.filter((i) => !state.hc.has(i)); }
  function xOf(i) { return D.x.v[i]; }
  function ckWhen(i) {
    const c = D.ckpts[i];
    const p = [];
    if (c.e !== null && c.e !== undefined) p.push('epoch ' + c.e);
    if (c.s !== null && c.s !== undefined) p.push('step ' + c.s);
    return p.join(' \u00b7 ');
  }
  function ckLabel(i) {
    const w = ckWhen(i);
    const n = D.ckpts[i].n;
    return w && n.indexOf(w) < 0 ? n + ' (' + w + ')' : n;
  }
  function swatch(j) { return '<span class="swatch" style="background:' + D.colors[j] + '"></span>'; }
  function mName(j) { return esc(D.methods[j]); }
  function cell(grid, i, j) { return grid && grid[i] ? grid[i][j] : null; }
  function score(i, j, k) { const r = cell(D.scores, i, j); return r ? r[k] : null; }
  function pairScore(i, j, k, p) { const r = cell(D.pairScores, i, j); return r && r[k] ? r[k][p] : null; }
  /* Per-pair curves come packed: uint16 levels between lo and hi (65535: no value). */
  const unpacked = new WeakMap();
  function pairRows(i, j, c) {
    const r = cell(D.pairCurves, i, j);
    const block = r && r[c];
    if (!block) return null;
    let rows = unpacked.get(block);
    if (rows) return rows;
    const b = bytes(block.q);
    const view = new DataView(b.buffer);
    const n = block.n;
    const scale = (block.hi - block.lo) / 65534;
    rows = [];
    for (let at = 0; at + n <= b.length / 2; at += n) {
      const row = new Array(n);
      for (let t = 0; t < n; t++) {
        const q = view.getUint16(2 * (at + t), true);
        row[t] = q === 65535 ? null : block.lo + q * scale;
      }
      rows.push(row);
    }
    unpacked.set(block, rows);
    return rows;
  }
  function meanCurve(i, j, c) {
    const r = cell(D.curves, i, j);
    if (r && r[c]) return r[c];
    const rows = pairRows(i, j, c);
    if (!rows || !rows.length) return null;
    return rows[0].map((_, t) => {
      const v = rows.map((row) => row[t]).filter(isNum);
      return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
    });
  }
  function pairCurve(i, j, c, p) { const rows = pairRows(i, j, c); return rows ? rows[p] : null; }
  function sim(i, p) { return D.sim[i] ? D.sim[i][p] : null; }
  function meanSim(i) {
    const s = (D.sim[i] || []).filter(isNum);
    return s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
  }
  function degCount(i, j) {
    const f = cell(D.deg, i, j);
    if (typeof f !== 'string') return null;
    let n = 0;
    for (const ch of f) if (ch === '1') n++;
    return n;
  }
  function isDeg(i, j, p, side) { const f = cell(D.deg, i, j); return typeof f === 'string' && f[2 * p + side] === '1'; }
  function better(k, delta) {
    const d = D.metrics[k].h;
    if (!isNum(delta) || d === null || d === undefined) return 0;
    const s = d ? delta : -delta;
    return s > TOL ? 1 : s < -TOL ? -1 : 0;
  }
  function cls(b) { return b > 0 ? 'good' : b < 0 ? 'bad' : ''; }
  function firstLast(ys) {
    const f = ys.filter(isNum);
    return f.length ? { first: f[0], last: f[f.length - 1], n: f.length } : { first: null, last: null, n: 0 };
  }
  function auc(ys) {
    if (!ys || ys.length < 2) return null;
    let s = 0;
    for (let t = 1; t < ys.length; t++) {
      if (!isNum(ys[t]) || !isNum(ys[t - 1])) return null;
      s += (ys[t] + ys[t - 1]) / 2;
    }
    return s / (ys.length - 1);
  }
  function ranks(a) {
    const idx = a.map((_, i) => i).sort((x, y) => a[x] - a[y]);
    const r = new Array(a.length);
    for (let i = 0; i < idx.length;) {
      let j = i;
      while (j + 1 < idx.length && a[idx[j + 1]] === a[idx[i]]) j++;
      for (let t = i; t <= j; t++) r[idx[t]] = (i + j) / 2 + 1;
      i = j + 1;
    }
    return r;
  }
  function pearson(x, y) {
    const n = x.length;
    const mx = x.reduce((a, b) => a + b, 0) / n;
    const my = y.reduce((a, b) => a + b, 0) / n;
    let sxy = 0; let sxx = 0; let syy = 0;
    for (let t = 0; t < n; t++) {
      sxy += (x[t] - mx) * (y[t] - my); sxx += (x[t] - mx) ** 2; syy += (y[t] - my) ** 2;
    }
    return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
  }
  /* Spearman and Pearson over the pairs where both are finite; NaN with n < 3 or a constant
     series (as lightning_explain.downstream.correlate). */
  function correlate(x, y) {
    const xs = []; const ys = [];
    for (let t = 0; t < x.length; t++) if (isNum(x[t]) && isNum(y[t])) { xs.push(x[t]); ys.push(y[t]); }
    const n = xs.length;
    const constant = (a) => a.every((v) => v === a[0]);
    if (n < 3 || constant(xs) || constant(ys)) return { n: n, s: NaN, p: NaN };
    return { n: n, s: pearson(ranks(xs), ranks(ys)), p: pearson(xs, ys) };
  }

  // ------------------------------------------------------------------------------ view state in the URL
  function readHash() {
    let q;
    try { q = new URLSearchParams(location.hash.slice(1)); } catch (e) { return; }
    const num = (k) => { const v = parseInt(q.get(k), 10); return isFinite(v) ? v : null; };
    if (q.has('tab')) state.tab = q.get('tab');
    const p = num('p');
    if (p !== null && p >= 0 && p < nP) state.pair = p;
    [['c', 'ck'], ['a', 'a'], ['b', 'b'], ['hk', 'heatCk']].forEach(([k, name]) => {
      const v = num(k);
      if (v !== null && v >= 0 && v < nC) state[name] = v;
    });
    const cp = num('cp');
    if (cp !== null && cp >= -1 && cp < nP) state.curvePair = cp;
    if (q.get('heat') === 'ckpt') state.heat = 'ckpt';
    if (q.get('live') === '0') state.live = false;
    [['xm', state.hm, nM], ['xc', state.hc, nC]].forEach(([k, set, n]) => {
      (q.get(k) || '').split('.').forEach((s) => { const v = parseInt(s, 10); if (v >= 0 && v < n) set.add(v); });
    });
  }
  function writeHash() {
    const q = new URLSearchParams();
    q.set('tab', state.tab);
    if (nP) q.set('p', state.pair);
    // A live page follows the newest evaluation: a view at the latest one says "last", so that
    // after a reload it shows the evaluation that was added meanwhile.
    const latest = nC ? D.order[nC - 1] : null;
    [['c', 'ck'], ['a', 'a'], ['b', 'b'], ['hk', 'heatCk']].forEach(([k, name]) => {
      if (state[name] === null) return;
      q.set(k, D.live && name !== 'a' && state[name] === latest ? 'last' : state[name]);
    });
    if (state.curvePair >= 0) q.set('cp', state.curvePair);
    if (state.heat !== 'pair') q.set('heat', state.heat);
    if (!state.live) q.set('live', '0');
    if (state.hm.size) q.set('xm', Array.from(state.hm).join('.'));
    if (state.hc.size) q.set('xc', Array.from(state.hc).join('.'));
    try { history.replaceState(null, '', '#' + q.toString()); } catch (e) { /* not allowed here */ }
  }

  // ------------------------------------------------------------------------------ pictures
  const LUT = {};
  function bytes(b64) {
    const s = atob(b64);
    const a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  LUT.seq = bytes(D.lut.seq);
  LUT.div = bytes(D.lut.div);
  function mime(b64) {
    if (b64.startsWith('iVBOR')) return 'image/png';
    if (b64.startsWith('/9j/')) return 'image/jpeg';
    return 'image/webp';
  }
  /* Bounded caches: insertion order is recency order (a hit moves the entry to the end). */
  function Cache(limit) { this.limit = limit; this.map = new Map(); }
  Cache.prototype.get = function (key, make) {
    let v = this.map.get(key);
    if (v !== undefined) { this.map.delete(key); this.map.set(key, v); return v; }
    v = make();
    this.map.set(key, v);
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value);
    return v;
  };
  const bitmaps = new Cache(256);
  const greys = new Cache(512);
  const bases = new Cache(64);
  function decode(b64) {
    return bitmaps.get(b64, () => createImageBitmap(new Blob([bytes(b64)], { type: mime(b64) })));
  }
  const scratch = doc.createElement('canvas');
  const sctx = scratch.getContext('2d', { willReadFrequently: true });
  function pixels(bmp, w, hh) {
    scratch.width = w; scratch.height = hh;
    sctx.clearRect(0, 0, w, hh);
    sctx.imageSmoothingEnabled = true;
    sctx.drawImage(bmp, 0, 0, w, hh);
    return sctx.getImageData(0, 0, w, hh).data;
  }
  function base(p, side) {
    return bases.get(p + ':' + side, () => decode(D.img[p][side]).then((bmp) => (
      { w: bmp.width, h: bmp.height, data: pixels(bmp, bmp.width, bmp.height) })));
  }
  function grey(b64, w, hh) {
    return greys.get(w + 'x' + hh + ':' + b64, () => decode(b64).then((bmp) => {
      const d = pixels(bmp, w, hh);
      const g = new Uint8Array(w * hh);
      for (let t = 0; t < g.length; t++) g[t] = d[4 * t];
      return g;
    }));
  }
  function put(c, w, hh, fill) {
    c.width = w; c.height = hh;
    const ctx = c.getContext('2d');
    const img = ctx.createImageData(w, hh);
    fill(img.data);
    ctx.putImageData(img, 0, 0);
  }
  /* 0.5 image + 0.5 jet(map): lightning_explain.render.overlay with alpha 0.5. */
  function blend(out, rgb, g) {
    const L = LUT.seq;
    for (let t = 0; t < g.length; t++) {
      const q = 3 * Math.min(255, Math.floor(g[t] * 256 / 255));
      out[4 * t] = (rgb[4 * t] + L[q] + 1) >> 1;
      out[4 * t + 1] = (rgb[4 * t + 1] + L[q + 1] + 1) >> 1;
      out[4 * t + 2] = (rgb[4 * t + 2] + L[q + 2] + 1) >> 1;
      out[4 * t + 3] = 255;
    }
  }
  /* B - A in [-1, 1], coloured with RdBu_r: blue where B is weaker, red where it is stronger. */
  function diffInto(out, ga, gb) {
    const L = LUT.div;
    for (let t = 0; t < ga.length; t++) {
      const d = (gb[t] - ga[t]) / 255;
      const q = 3 * Math.min(255, Math.floor((d + 1) / 2 * 256));
      out[4 * t] = L[q]; out[4 * t + 1] = L[q + 1]; out[4 * t + 2] = L[q + 2]; out[4 * t + 3] = 255;
    }
  }
  function na(c, text) {
    c.width = 48; c.height = 48;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#f5f7fa'; ctx.fillRect(0, 0, 48, 48);
    ctx.fillStyle = '#5b6475'; ctx.font = '10px sans-serif'; ctx.textAlign = 'center';
    ctx.fillText(text || 'n/a', 24, 27);
    c.dataset.na = 'true';
  }
  function draw(c, s) {
    if (s.kind === 'image') {
      return base(s.p, s.side).then((b) => put(c, b.w, b.h, (out) => out.set(b.data)));
    }
    if (s.kind === 'overlay') {
      const m = cell(D.maps, s.i, s.j);
      if (m) {
        return base(s.p, s.side).then((b) => grey(m[s.p][s.side], b.w, b.h)
          .then((g) => put(c, b.w, b.h, (out) => blend(out, b.data, g))));
      }
      const o = cell(D.ov, s.i, s.j);
      if (o) {
        return decode(o[s.p][s.side]).then((bmp) => {
          c.width = bmp.width; c.height = bmp.height;
          c.getContext('2d').drawImage(bmp, 0, 0);
        });
      }
      na(c); return Promise.resolve();
    }
    const ma = cell(D.maps, s.a, s.j);
    const mb = cell(D.maps, s.b, s.j);
    if (!ma || !mb) { na(c, 'no maps'); return Promise.resolve(); }
    return base(s.p, s.side).then((b) => Promise.all([grey(ma[s.p][s.side], b.w, b.h), grey(mb[s.p][s.side], b.w, b.h)])
      .then((g) => put(c, b.w, b.h, (out) => diffInto(out, g[0], g[1]))));
  }
  let pending = 0;
  function paint(c) {
    pending++;
    c.dataset.drawn = 'pending';
    return draw(c, c._spec).then(() => { c.dataset.drawn = 'true'; }, (err) => {
      c.dataset.drawn = 'error';
      console.error('dashboard: cannot draw ' + c.getAttribute('aria-label') + ': ' + err);
    }).finally(() => { pending--; });
  }
  const lazy = 'IntersectionObserver' in window ? new IntersectionObserver((entries) => {
    entries.forEach((e) => { if (e.isIntersecting) { lazy.unobserve(e.target); paint(e.target); } });
  }, { rootMargin: '400px 200px' }) : null;
  function side(s) { return 'h' + (s + 1); }
  function describe(s) {
    const pair = 'pair ' + s.p;
    if (s.kind === 'image') return 'image ' + (s.side + 1) + ' of ' + pair;
    if (s.kind === 'overlay') return D.methods[s.j] + ', ' + side(s.side) + ' of ' + pair + ', ' + ckLabel(s.i);
    return D.methods[s.j] + ', ' + side(s.side) + ' of ' + pair + ': B \u2212 A, A = ' + ckLabel(s.a) + ', B = ' + ckLabel(s.b);
  }
  function tile(s, extra) {
    const c = h('canvas', {
      class: 'tile' + (extra ? ' ' + extra : ''), width: 1, height: 1, role: 'img', tabindex: '0',
      'data-kind': s.kind, 'data-pair': s.p, 'data-side': s.side, 'data-ck': s.i, 'data-m': s.j,
      'data-a': s.a, 'data-b': s.b,
    });
    c._spec = s;
    c.setAttribute('aria-label', describe(s));
    c.title = describe(s) + ' (click to enlarge)';
    if (lazy) lazy.observe(c); else paint(c);
    return c;
  }
  function tileBox(s, extra) {
    const box = h('span', { class: 'tile-box' });
    box.appendChild(tile(s, extra));
    if (s.kind === 'overlay' && isDeg(s.i, s.j, s.p, s.side)) {
      box.appendChild(h('span', { class: 'badge', title: 'degenerate map: all zero or constant' }, '\u26a0 flat'));
    }
    return box;
  }
  /* HTML placeholders for tiles, replaced by canvases once the markup is in place. */
  function slot(s, extra) {
    return '<span class="slot" data-spec="' + esc(JSON.stringify(s)) + '" data-extra="' + (extra || '') + '"></span>';
  }
  function fillSlots(ctx) {
    $$('.slot', ctx).forEach((el) => el.replaceWith(tileBox(JSON.parse(el.dataset.spec), el.dataset.extra)));
  }
  function idle() {
    return new Promise((resolve) => {
      const tick = () => {
        if (pending > 0) { setTimeout(tick, 10); return; }
        requestAnimationFrame(() => requestAnimationFrame(() => (pending > 0 ? tick() : resolve(true))));
      };
      tick();
    });
  }

  // ------------------------------------------------------------------------------ charts (SVG)
  let clipId = 0;
  const resize = 'ResizeObserver' in window ? new ResizeObserver((entries) => {
    entries.forEach((e) => {
      const ch = e.target._chart;
      if (ch && Math.abs(e.contentRect.width - ch.w) >= 1) ch.draw();
    });
  }) : null;
  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
  }
  function ticks(lo, hi, n, integer) {
    let step = niceStep(hi - lo, n);
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9 && out.length < 50; v += step) {
      out.push(+v.toPrecision(12));
    }
    return { values: out, step: step };
  }
  function tickText(v, step) {
    const d = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return v.toFixed(Math.min(d, 6));
  }
  /* spec: {series: [{label, color, m, pts: [[x, y, text]], dash}], kind: 'line' | 'scatter',
     join, compact, height, title, xLabel, yLabel, xInt, xTick, xDomain, vline, digits} */
  function Chart(host, spec) {
    this.host = host; this.spec = spec; this.zoom = null; this.w = 0; this.drag = null;
    host.classList.add('chart');
    host._chart = this;
    if (resize) resize.observe(host);
    this.draw();
  }
  Chart.prototype.draw = function () {
    const host = this.host;
    const s = this.spec;
    const W = Math.floor(host.clientWidth);
    this.w = W;
    if (!W) return;
    const H = s.height || (s.compact ? 44 : 200);
    const pad = s.compact ? { l: 3, r: 4, t: 4, b: 4 } : { l: 52, r: 18, t: 8, b: s.xLabel ? 34 : 22 };
    const ok = (pt) => isNum(pt[0]) && isNum(pt[1]);
    const series = s.series.filter((se) => se.pts.some(ok));
    let x0 = Infinity; let x1 = -Infinity;
    series.forEach((se) => se.pts.forEach((pt) => { if (ok(pt)) { x0 = Math.min(x0, pt[0]); x1 = Math.max(x1, pt[0]); } }));
    if (s.xDomain) { x0 = s.xDomain[0]; x1 = s.xDomain[1]; }
    if (this.zoom) { x0 = this.zoom[0]; x1 = this.zoom[1]; }
    if (!isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x1 - x0 < 1e-12) { x0 -= 0.5; x1 += 0.5; }
    let y0 = Infinity; let y1 = -Infinity;
    const inX = (x) => x >= x0 - 1e-9 && x <= x1 + 1e-9;
    series.forEach((se) => se.pts.forEach((pt) => {
      if (ok(pt) && inX(pt[0])) { y0 = Math.min(y0, pt[1]); y1 = Math.max(y1, pt[1]); }
    }));
    if (!isFinite(y0)) { y0 = 0; y1 = 1; }
    if (y1 - y0 < 1e-12) { const d = Math.abs(y0) * 0.05 || 0.05; y0 -= d; y1 += d; } else {
      const d = (y1 - y0) * 0.08; y0 -= d; y1 += d;
    }
    const iw = Math.max(10, W - pad.l - pad.r);
    const ih = Math.max(10, H - pad.t - pad.b);
    const sx = (x) => pad.l + (x - x0) / (x1 - x0) * iw;
    const sy = (y) => pad.t + (1 - (y - y0) / (y1 - y0)) * ih;
    this.geo = { x0: x0, x1: x1, sx: sx, sy: sy, pad: pad, W: W, H: H, iw: iw, ih: ih, series: series, inX: inX };
    const id = 'clip' + (++clipId);
    let out = '<svg width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H +
      '" role="img" aria-label="' + (s.title || esc(s.yLabel || 'chart')) + '"><defs><clipPath id="' + id + '"><rect x="' + pad.l +
      '" y="' + (pad.t - 4) + '" width="' + iw + '" height="' + (ih + 8) + '"/></clipPath></defs>';
    if (!s.compact) {
      const yt = ticks(y0, y1, Math.max(2, Math.floor(ih / 40)));
      yt.values.forEach((v) => {
        const y = sy(v).toFixed(1);
        out += '<line class="grid" x1="' + pad.l + '" x2="' + (pad.l + iw) + '" y1="' + y + '" y2="' + y + '"/>' +
          '<text x="' + (pad.l - 5) + '" y="' + (+y + 3.5) + '" text-anchor="end">' + tickText(v, yt.step) + '</text>';
      });
      const xt = ticks(x0, x1, Math.max(2, Math.floor(iw / 70)), s.xInt);
      xt.values.forEach((v) => {
        const x = sx(v).toFixed(1);
        out += '<line class="grid" x1="' + x + '" x2="' + x + '" y1="' + pad.t + '" y2="' + (pad.t + ih) + '"/>' +
          '<text x="' + x + '" y="' + (pad.t + ih + 14) + '" text-anchor="middle">' +
          esc(s.xTick ? s.xTick(v) : tickText(v, xt.step)) + '</text>';
      });
      out += '<line class="axis" x1="' + pad.l + '" x2="' + pad.l + '" y1="' + pad.t + '" y2="' + (pad.t + ih) + '"/>' +
        '<line class="axis" x1="' + pad.l + '" x2="' + (pad.l + iw) + '" y1="' + (pad.t + ih) + '" y2="' + (pad.t + ih) + '"/>';
      if (s.xLabel) out += '<text x="' + (pad.l + iw / 2) + '" y="' + (H - 4) + '" text-anchor="middle">' + esc(s.xLabel) + '</text>';
      if (s.yLabel) {
        out += '<text transform="translate(11 ' + (pad.t + ih / 2) + ') rotate(-90)" text-anchor="middle">' + esc(s.yLabel) + '</text>';
      }
    }
    out += '<g clip-path="url(#' + id + ')">';
    if (isNum(s.vline) && inX(s.vline)) {
      const x = sx(s.vline).toFixed(1);
      out += '<line class="vline" x1="' + x + '" x2="' + x + '" y1="' + pad.t + '" y2="' + (pad.t + ih) + '"/>';
    }
    const dots = s.kind === 'scatter' || (!s.compact && series.every((se) => se.pts.length <= 24));
    series.forEach((se) => {
      const attrs = ' data-m="' + (se.m === undefined ? '' : se.m) + '" data-label="' + esc(se.label) + '"';
      if (s.kind !== 'scatter' || s.join) {
        let d = ''; let pen = false;
        se.pts.forEach((pt) => {
          if (ok(pt)) { d += (pen ? 'L' : 'M') + sx(pt[0]).toFixed(1) + ' ' + sy(pt[1]).toFixed(1); pen = true; } else pen = false;
        });
        out += '<path class="series" d="' + d + '" stroke="' + se.color + '"' +
          (se.dash ? ' stroke-dasharray="' + se.dash + '"' : '') + (s.kind === 'scatter' ? ' stroke-opacity="0.45"' : '') + attrs + '/>';
      }
      if (dots) {
        se.pts.forEach((pt) => {
          if (ok(pt) && inX(pt[0])) {
            out += '<circle class="dot" cx="' + sx(pt[0]).toFixed(1) + '" cy="' + sy(pt[1]).toFixed(1) + '" r="' +
              (s.kind === 'scatter' ? 3.6 : 2.6) + '" fill="' + se.color + '"' + attrs + '/>';
          }
        });
      } else if (s.compact) {
        const last = se.pts.filter(ok).pop();
        out += '<circle class="dot" cx="' + sx(last[0]).toFixed(1) + '" cy="' + sy(last[1]).toFixed(1) + '" r="2.5" fill="' + se.color + '"' + attrs + '/>';
      }
    });
    out += '</g><g class="hover"></g><rect class="brush" visibility="hidden" y="' + pad.t + '" height="' + ih + '"/></svg>';
    let html = s.title ? '<div class="chart-title">' + s.title + '</div>' : '';
    html += out + '<div class="tip" hidden></div>';
    if (this.zoom) html += '<button type="button" class="reset" title="or double-click the chart">reset zoom</button>';
    if (!s.compact && s.legend !== false && series.length) {
      html += '<div class="chart-legend">' + series.map((se) => '<span data-m="' + (se.m === undefined ? '' : se.m) + '">' +
        '<span class="swatch" style="background:' + se.color + '"></span>' + esc(se.label) + '</span>').join('') + '</div>';
    }
    if (!series.length) html += '<p class="na">no values to plot</p>';
    host.innerHTML = html;
    host.dataset.zoom = this.zoom ? this.zoom.map((v) => +v.toPrecision(6)).join(',') : '';
    this.bind();
  };
  Chart.prototype.local = function (ev) {
    const r = this.host.querySelector('svg').getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  };
  Chart.prototype.bind = function () {
    const svg = this.host.querySelector('svg');
    const s = this.spec;
    svg.addEventListener('pointermove', (ev) => this.hover(ev));
    svg.addEventListener('pointerleave', () => { if (!this.drag) this.unhover(); });
    const reset = this.host.querySelector('.reset');
    if (reset) reset.addEventListener('click', () => { this.zoom = null; this.draw(); });
    if (s.compact || s.zoom === false) return;
    svg.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      this.drag = { x: this.local(ev)[0] };
      if (svg.setPointerCapture) { try { svg.setPointerCapture(ev.pointerId); } catch (e) { /* synthetic */ } }
    });
    svg.addEventListener('pointerup', (ev) => {
      if (!this.drag) return;
      const g = this.geo;
      const xa = Math.max(g.pad.l, Math.min(this.drag.x, this.local(ev)[0]));
      const xb = Math.min(g.pad.l + g.iw, Math.max(this.drag.x, this.local(ev)[0]));
      this.drag = null;
      if (xb - xa > 6) {
        const inv = (px) => g.x0 + (px - g.pad.l) / g.iw * (g.x1 - g.x0);
        this.zoom = [inv(xa), inv(xb)];
        this.draw();
      } else {
        svg.querySelector('.brush').setAttribute('visibility', 'hidden');
      }
    });
    svg.addEventListener('dblclick', () => { if (this.zoom) { this.zoom = null; this.draw(); } });
  };
  Chart.prototype.unhover = function () {
    const tip = this.host.querySelector('.tip');
    if (tip) tip.hidden = true;
    const g = this.host.querySelector('g.hover');
    if (g) g.innerHTML = '';
  };
  Chart.prototype.hover = function (ev) {
    const g = this.geo;
    if (!g) return;
    const s = this.spec;
    const [px, py] = this.local(ev);
    if (this.drag) {
      const brush = this.host.querySelector('.brush');
      brush.setAttribute('x', Math.min(this.drag.x, px));
      brush.setAttribute('width', Math.abs(px - this.drag.x));
      brush.setAttribute('visibility', 'visible');
    }
    const ok = (pt) => isNum(pt[0]) && isNum(pt[1]) && g.inX(pt[0]);
    const digits = s.digits === undefined ? 4 : s.digits;
    let marks = '';
    let text = '';
    if (s.kind === 'scatter') {
      let best = null;
      g.series.forEach((se) => se.pts.forEach((pt) => {
        if (!ok(pt)) return;
        const d = Math.hypot(g.sx(pt[0]) - px, g.sy(pt[1]) - py);
        if (d < 30 && (!best || d < best.d)) best = { d: d, se: se, pt: pt };
      }));
      if (!best) { this.unhover(); return; }
      marks = '<circle cx="' + g.sx(best.pt[0]) + '" cy="' + g.sy(best.pt[1]) + '" r="6" fill="none" stroke="' + best.se.color + '"/>';
      text = '<strong>' + esc(best.se.label) + '</strong><br>' + esc(best.pt[2] || '') + '<br>' + esc(s.xLabel || 'x') + ' ' +
        fmt(best.pt[0], digits) + ', ' + esc(s.yLabel || 'y') + ' ' + fmt(best.pt[1], digits);
    } else {
      let bx = null; let bd = Infinity; let label = '';
      g.series.forEach((se) => se.pts.forEach((pt) => {
        if (!ok(pt)) return;
        const d = Math.abs(g.sx(pt[0]) - px);
        if (d < bd) { bd = d; bx = pt[0]; label = pt[2] || ''; }
      }));
      if (bx === null) { this.unhover(); return; }
      const x = g.sx(bx);
      marks = '<line class="guide" x1="' + x + '" x2="' + x + '" y1="' + g.pad.t + '" y2="' + (g.pad.t + g.ih) + '"/>';
      const rows = [];
      g.series.forEach((se) => {
        const pt = se.pts.find((q) => ok(q) && Math.abs(q[0] - bx) < 1e-9);
        if (!pt) return;
        marks += '<circle cx="' + x + '" cy="' + g.sy(pt[1]) + '" r="4" fill="' + se.color + '" stroke="#fff"/>';
        rows.push('<span class="swatch" style="background:' + se.color + '"></span>' + esc(se.label) + ': <strong>' + fmt(pt[1], digits) + '</strong>');
      });
      const head = label ? esc(label) : esc(s.xLabel || 'x') + ' ' + fmt(bx, s.xInt ? 0 : 3);
      text = head + '<br>' + rows.join('<br>');
    }
    this.host.querySelector('g.hover').innerHTML = marks;
    const tip = this.host.querySelector('.tip');
    tip.innerHTML = text;
    tip.hidden = false;
    const tw = tip.offsetWidth; const th = tip.offsetHeight;
    const svgTop = this.host.querySelector('svg').getBoundingClientRect().top - this.host.getBoundingClientRect().top;
    let left = px + 14;
    if (left + tw > g.W) left = px - 14 - tw;
    left = Math.max(0, Math.min(left, g.W - tw));
    const top = Math.max(0, Math.min(svgTop + py - th - 8, svgTop + g.H - th));
    tip.style.left = left + 'px';
    tip.style.top = top + 'px';
  };
  /* The chart gets its own box inside host, so that host's padding does not count. */
  function chart(host, spec) { const inner = h('div'); host.appendChild(inner); return new Chart(inner, spec); }
  function xAxis() {
    const label = D.x.label;
    return {
      xLabel: label, xInt: true,
      xTick: label === 'checkpoint' ? (v) => (Number.isInteger(v) && v >= 0 && v < nC ? '#' + v : '') : null,
    };
  }
  function trendSpec(extra) { return Object.assign(xAxis(), extra); }
  function clear(el) {
    $$('.chart', el).forEach((c) => { if (resize) resize.unobserve(c); });
    if (lazy) $$('canvas.tile', el).forEach((c) => lazy.unobserve(c));
    el.innerHTML = '';
  }

  // ------------------------------------------------------------------------------ controls
  function pairOptions() {
    let o = '';
    for (let p = 0; p < nP; p++) o += '<option value="' + p + '"' + (p === state.pair ? ' selected' : '') + '>pair ' + p + '</option>';
    return o;
  }
  function pairPicker(id) {
    return '<span class="picker"><button type="button" data-step="-1" aria-label="previous pair">\u2039</button> ' +
      '<label>pair <select id="' + id + '">' + pairOptions() + '</select></label> ' +
      '<button type="button" data-step="1" aria-label="next pair">\u203a</button></span>';
  }
  function bindPicker(ctx, id, onChange) {
    const sel = $('#' + id, ctx);
    sel.addEventListener('change', () => { state.pair = +sel.value; writeHash(); onChange(); });
    $$('.picker button', ctx).forEach((b) => b.addEventListener('click', () => {
      state.pair = (state.pair + (+b.dataset.step) + nP) % nP;
      sel.value = state.pair;
      writeHash();
      onChange();
    }));
  }
  function ckOptions(cs, chosen) {
    return cs.map((i) => '<option value="' + i + '"' + (i === chosen ? ' selected' : '') + '>' + esc(ckLabel(i)) + '</option>').join('');
  }
  function empty(box, cs, ms) {
    if (!cs.length) { box.innerHTML = '<p class="warn">Every checkpoint is hidden by the filters.</p>'; return true; }
    if (ms && !ms.length) { box.innerHTML = '<p class="warn">Every method is hidden by the filters.</p>'; return true; }
    return false;
  }

  // ------------------------------------------------------------------------------ Summary
  views.summary = function () {
    const box = $('#summary-view');
    clear(box);
    const cs = visC(); const ms = visM();
    if (empty(box, cs, ms)) return;
    const first = cs[0]; const last = cs[cs.length - 1];
    const knn = cs.map((i) => D.knn[i]);
    const hasKnn = knn.some(isNum);
    let html = '<p class="lead">Is the model looking at the right thing, and is it getting better? ' +
      cs.length + ' checkpoint(s)' + (cs.length > 1 ? ', from <strong>' + esc(ckLabel(first)) + '</strong> to <strong>' + esc(ckLabel(last)) + '</strong>' +
      (D.oneRun ? ' in training order' : ' in the order given') : ': <strong>' + esc(ckLabel(first)) + '</strong>') +
      '; ' + nP + ' probe pair(s). Scores are means over the pairs; a trend is better or worse for the metric\u2019s direction.</p>';
    html += '<div class="method-cards">';
    if (hasKnn) {
      const f = firstLast(knn);
      const d = f.n > 1 ? f.last - f.first : null;
      const b = isNum(d) ? (d > TOL ? 1 : d < -TOL ? -1 : 0) : 0;
      html += '<div class="card" id="summary-knn"><h3>kNN accuracy \u2191 <span class="verdict ' + cls(b) + '">' +
        (f.n < 2 ? 'one value' : b > 0 ? 'improving' : b < 0 ? 'getting worse' : 'flat') + '</span></h3>' +
        '<div class="metric-rows"><span class="name">accuracy</span><div class="trend" data-knn="1"></div><span class="vals">' +
        fmt(f.first, 3) + ' \u2192 ' + fmt(f.last, 3) + (isNum(d) ? '<br><span class="' + cls(b) + '">' + fmtDelta(d, 3) + '</span>' : '') +
        '</span></div><p class="legend">The backbone\u2019s kNN top-1 accuracy: is the model getting better at its task? ' +
        'Each method card gives the Spearman correlation \u03c1 of its scores with it.</p></div>';
    }
    ms.forEach((j) => {
      let up = 0; let down = 0;
      const rows = D.metrics.map((m, k) => {
        const ys = cs.map((i) => score(i, j, k));
        const f = firstLast(ys);
        const d = f.n > 1 ? f.last - f.first : null;
        const b = better(k, d);
        if (b > 0) up++;
        if (b < 0) down++;
        let corr = '';
        if (hasKnn) {
          const c = correlate(ys, knn);
          const agree = isNum(c.s) && m.h !== null && (m.h ? c.s > 0 : c.s < 0);
          corr = '<br><span title="Spearman correlation with the kNN accuracy over ' + c.n + ' checkpoint(s)' +
            (m.h === null ? '' : '; it agrees with the metric\u2019s direction when ' + (m.h ? 'positive' : 'negative')) + '">\u03c1 kNN ' +
            (isNum(c.s) ? fmtDelta(c.s, 2) + (agree ? ' \u2714' : '') : 'n/a') + '</span>';
        }
        return '<span class="name">' + metricName(k) + '</span><div class="trend" data-j="' + j + '" data-k="' + k + '"></div>' +
          '<span class="vals">' + (f.n > 1 ? fmt(f.first) + ' \u2192 ' : '') + fmt(f.last) +
          (isNum(d) ? '<br><span class="' + cls(b) + '">' + fmtDelta(d) + (b > 0 ? ' better' : b < 0 ? ' worse' : '') + '</span>' : '') + corr + '</span>';
      });
      const counts = cs.map((i) => degCount(i, j));
      const known = counts.some((c) => c !== null);
      const latest = degCount(last, j);
      let verdict; let vcls;
      if (latest) { verdict = '\u26a0 degenerate maps'; vcls = 'warn'; } else if (cs.length < 2 || !D.metrics.length) { verdict = 'one checkpoint'; vcls = ''; } else if (up && !down) { verdict = 'improving'; vcls = 'good'; } else if (down && !up) { verdict = 'getting worse'; vcls = 'bad'; } else if (up && down) { verdict = 'mixed'; vcls = ''; } else { verdict = 'flat'; vcls = ''; }
      let deg = '';
      if (known) {
        const total = counts.reduce((a, c) => a + (c || 0), 0);
        const worst = cs.filter((i, t) => counts[t]).map((i) => esc(ckLabel(i)) + ': ' + degCount(i, j));
        deg = '<p class="deg-line' + (total ? ' warn' : '') + '" data-degenerate="' + total + '">Degenerate maps (all zero or constant): <strong>' +
          (latest === null ? 'n/a' : latest) + ' of ' + 2 * nP + '</strong> in the latest checkpoint; ' + total + ' over the ' + cs.length + ' shown' +
          (worst.length ? ' (' + worst.slice(0, 4).join(', ') + (worst.length > 4 ? ', \u2026' : '') + ')' : '') + '.</p>';
      }
      html += '<div class="card method-card" data-m="' + j + '"><h3>' + swatch(j) + mName(j) +
        ' <span class="verdict ' + vcls + '">' + verdict + '</span></h3>' +
        (D.metrics.length ? '<div class="metric-rows">' + rows.join('') + '</div>' : '<p class="na">no metric was computed</p>') + deg + '</div>';
    });
    html += '</div>';
    if (nP && D.img.length) {
      html += '<h3>What each method looks at in ' + esc(ckLabel(last)) + '</h3><div class="latest">';
      ms.forEach((j) => {
        html += '<div class="tiles" data-m="' + j + '"><span class="chart-title" style="width:100%">' + swatch(j) + mName(j) + '</span>';
        for (let p = 0; p < Math.min(nP, 4); p++) {
          html += '<span class="duo">' + slot({ kind: 'overlay', p: p, side: 0, i: last, j: j }, 'small') +
            slot({ kind: 'overlay', p: p, side: 1, i: last, j: j }, 'small') + '</span>';
        }
        html += '</div>';
      });
      html += '</div><p class="legend">Maps of h1 and h2 of the first pairs (jet: red is salient). The Pair tab shows one pair in every checkpoint.</p>';
    }
    box.innerHTML = html;
    fillSlots(box);
    $$('.trend', box).forEach((el) => {
      if (el.dataset.knn) {
        chart(el, trendSpec({ compact: true, digits: 4, series: [{ label: 'kNN accuracy', color: '#444', pts: cs.map((i) => [xOf(i), D.knn[i], ckLabel(i)]) }] }));
        return;
      }
      const j = +el.dataset.j; const k = +el.dataset.k;
      chart(el, trendSpec({ compact: true, series: [{ label: D.methods[j] + ' ' + D.metrics[k].k, color: D.colors[j], m: j, pts: cs.map((i) => [xOf(i), score(i, j, k), ckLabel(i)]) }] }));
    });
  };

  // ------------------------------------------------------------------------------ Pair
  function stepSlider(delta) {
    const slider = $('#pair-slider');
    if (!slider) return;
    const v = Math.max(0, Math.min(+slider.max, +slider.value + delta));
    if (v === +slider.value) return;
    slider.value = v;
    slider.dispatchEvent(new Event('input', { bubbles: true }));
  }
  views.pair = function () {
    const box = $('#pair-view');
    clear(box);
    if (!nP) { box.innerHTML = '<p>No probe images were given.</p>'; return; }
    const cs = visC();
    if (empty(box, cs, visM())) return;
    if (state.ck === null || cs.indexOf(state.ck) < 0) state.ck = cs[cs.length - 1];
    box.innerHTML = '<div class="controls">' + pairPicker('pair-pick') +
      '<div class="slider"><label for="pair-slider"><span class="nowrap">checkpoint:</span> <span class="ck-label" id="pair-ck-label"></span></label>' +
      '<input type="range" id="pair-slider" min="0" max="' + (cs.length - 1) + '" step="1" value="' + cs.indexOf(state.ck) + '"></div>' +
      '<span class="legend"><kbd>\u2190</kbd> <kbd>\u2192</kbd> step through the checkpoints</span></div><div id="pair-body"></div>';
    bindPicker(box, 'pair-pick', pairBody);
    const slider = $('#pair-slider', box);
    slider.addEventListener('input', () => { state.ck = cs[+slider.value]; pairBody(); writeHash(); });
    pairBody();
  };
  function pairBody() {
    const body = $('#pair-body');
    if (!body) return;
    clear(body);
    const cs = visC(); const ms = visM();
    const i = state.ck; const p = state.pair;
    $('#pair-ck-label').textContent = ckLabel(i) + ' \u2014 ' + (cs.indexOf(i) + 1) + ' of ' + cs.length;
    let html = '<div class="pair-images">' +
      '<figure>' + slot({ kind: 'image', p: p, side: 0 }) + '<figcaption>image 1</figcaption></figure>' +
      '<figure>' + slot({ kind: 'image', p: p, side: 1 }) + '<figcaption>image 2</figcaption></figure>' +
      '<p class="legend">similarity in this checkpoint: <strong id="pair-sim">' + fmt(sim(i, p)) + '</strong></p></div><div class="method-rows">';
    ms.forEach((j) => {
      const rows = D.metrics.map((m, k) => '<tr><td>' + metricName(k) + '</td><td class="num" data-col="' + esc(m.k) + '" data-value="' + pairScore(i, j, k, p) + '">' +
        fmt(pairScore(i, j, k, p)) + '</td><td class="num">' + fmt(score(i, j, k)) + '</td></tr>').join('');
      html += '<div class="method-row" data-m="' + j + '"><h4>' + swatch(j) + mName(j) + '</h4>' +
        '<figure>' + slot({ kind: 'overlay', p: p, side: 0, i: i, j: j }) + '<figcaption>h1</figcaption></figure>' +
        '<figure>' + slot({ kind: 'overlay', p: p, side: 1, i: i, j: j }) + '<figcaption>h2</figcaption></figure>' +
        (D.metrics.length ? '<div class="scores scroll"><table><thead><tr><th>metric</th><th>this pair</th><th>mean</th></tr></thead><tbody>' + rows + '</tbody></table></div>' : '') + '</div>';
    });
    html += '</div>';
    if (D.curveKeys.length) html += '<h3>Curves of this pair</h3><div class="charts" id="pair-curves"></div>';
    html += '<h3>This pair over the checkpoints</h3><div class="charts" id="pair-trends"></div>';
    body.innerHTML = html;
    fillSlots(body);
    const curves = $('#pair-curves', body);
    D.curveKeys.forEach((key, c) => {
      const host = h('div', { class: 'card' });
      curves.appendChild(host);
      const series = ms.map((j) => {
        const ys = pairCurve(i, j, c, p) || [];
        return { label: D.methods[j] + ' (AUC ' + fmt(auc(ys), 3) + ')', color: D.colors[j], m: j, pts: ys.map((y, t) => [t / Math.max(1, ys.length - 1), y]) };
      });
      chart(host, { title: curveName(c), series: series, xLabel: 'fraction of pixels', yLabel: 'similarity', xDomain: [0, 1] });
    });
    const trends = $('#pair-trends', body);
    D.metrics.forEach((m, k) => {
      const host = h('div', { class: 'card' });
      trends.appendChild(host);
      chart(host, trendSpec({ title: metricName(k), vline: xOf(i), yLabel: 'score of this pair', series: ms.map((j) => ({ label: D.methods[j], color: D.colors[j], m: j, pts: cs.map((ii) => [xOf(ii), pairScore(ii, j, k, p), ckLabel(ii)]) })) }));
    });
    const host = h('div', { class: 'card' });
    trends.appendChild(host);
    chart(host, trendSpec({ title: 'similarity of the pair', vline: xOf(i), yLabel: 'similarity', series: [{ label: 'similarity', color: '#444', pts: cs.map((ii) => [xOf(ii), sim(ii, p), ckLabel(ii)]) }] }));
  }

  // ------------------------------------------------------------------------------ Difference
  views.diff = function () {
    const box = $('#diff-view');
    clear(box);
    if (!nP) { box.innerHTML = '<p>No probe images were given.</p>'; return; }
    const cs = visC();
    if (empty(box, cs, visM())) return;
    if (state.a === null || cs.indexOf(state.a) < 0) state.a = cs[0];
    if (state.b === null || cs.indexOf(state.b) < 0) state.b = cs[cs.length - 1];
    box.innerHTML = '<div class="controls">' + pairPicker('diff-pick') +
      '<label>A <select id="diff-a">' + ckOptions(cs, state.a) + '</select></label>' +
      '<label>B <select id="diff-b">' + ckOptions(cs, state.b) + '</select></label>' +
      '<button type="button" id="diff-swap">swap A and B</button></div><div id="diff-body"></div>';
    bindPicker(box, 'diff-pick', diffBody);
    const sa = $('#diff-a', box); const sb = $('#diff-b', box);
    sa.addEventListener('change', () => { state.a = +sa.value; writeHash(); diffBody(); });
    sb.addEventListener('change', () => { state.b = +sb.value; writeHash(); diffBody(); });
    $('#diff-swap', box).addEventListener('click', () => {
      const t = state.a; state.a = state.b; state.b = t; sa.value = state.a; sb.value = state.b; writeHash(); diffBody();
    });
    diffBody();
  };
  function diffBody() {
    const body = $('#diff-body');
    if (!body) return;
    clear(body);
    const ms = visM();
    const a = state.a; const b = state.b; const p = state.pair;
    let html = '<div class="ramp"><span>B \u2212 A:</span><span>\u22121 (less salient in B)</span><canvas id="diff-ramp" width="256" height="1"></canvas><span>+1 (more salient in B)</span></div>' +
      '<p class="legend">A = ' + esc(ckLabel(a)) + ', B = ' + esc(ckLabel(b)) + '. The maps are in [0, 1]; white: unchanged.</p><div class="method-rows">';
    ms.forEach((j) => {
      html += '<div class="method-row diff-row" data-m="' + j + '"><h4>' + swatch(j) + mName(j) + '</h4>';
      [0, 1].forEach((sd) => {
        html += '<div class="diff-group">' +
          '<figure>' + slot({ kind: 'overlay', p: p, side: sd, i: a, j: j }, 'small') + '<figcaption>A ' + side(sd) + '</figcaption></figure>' +
          '<figure>' + slot({ kind: 'overlay', p: p, side: sd, i: b, j: j }, 'small') + '<figcaption>B ' + side(sd) + '</figcaption></figure>' +
          '<figure>' + slot({ kind: 'diff', p: p, side: sd, a: a, b: b, j: j }, 'small') + '<figcaption>B \u2212 A</figcaption></figure></div>';
      });
      html += '</div>';
    });
    html += '</div><h3>Score changes</h3><div class="scroll"><table id="diff-table"><thead><tr><th>method</th><th>metric</th>' +
      '<th>pair ' + p + ': A</th><th>B</th><th>\u0394</th><th>mean: A</th><th>B</th><th>\u0394</th></tr></thead><tbody>';
    const delta = (x, y, k) => {
      const d = isNum(x) && isNum(y) ? y - x : null;
      const bt = k === null ? 0 : better(k, d);
      return '<td class="num ' + cls(bt) + '" data-delta="' + (d === null ? '' : d) + '">' + fmtDelta(d) + '</td>';
    };
    ms.forEach((j) => {
      D.metrics.forEach((m, k) => {
        const pa = pairScore(a, j, k, p); const pb = pairScore(b, j, k, p);
        const ma = score(a, j, k); const mb = score(b, j, k);
        html += '<tr data-m="' + j + '" data-k="' + k + '"><td>' + swatch(j) + mName(j) + '</td><td>' + metricName(k) + '</td><td class="num">' + fmt(pa) + '</td><td class="num">' + fmt(pb) + '</td>' +
          delta(pa, pb, k) + '<td class="num">' + fmt(ma) + '</td><td class="num">' + fmt(mb) + '</td>' + delta(ma, mb, k) + '</tr>';
      });
    });
    html += '<tr><td>\u2014</td><td>similarity</td><td class="num">' + fmt(sim(a, p)) + '</td><td class="num">' + fmt(sim(b, p)) + '</td>' +
      delta(sim(a, p), sim(b, p), null) + '<td class="num">' + fmt(meanSim(a)) + '</td><td class="num">' + fmt(meanSim(b)) + '</td>' + delta(meanSim(a), meanSim(b), null) + '</tr>';
    html += '</tbody></table></div><p class="legend">\u0394 = B \u2212 A; green: better for the metric\u2019s direction, red: worse.</p>';
    body.innerHTML = html;
    fillSlots(body);
    const ramp = $('#diff-ramp', body);
    put(ramp, 256, 1, (out) => { for (let t = 0; t < 256; t++) { out[4 * t] = LUT.div[3 * t]; out[4 * t + 1] = LUT.div[3 * t + 1]; out[4 * t + 2] = LUT.div[3 * t + 2]; out[4 * t + 3] = 255; } });
  }

  // ------------------------------------------------------------------------------ Heatmaps
  views.heatmaps = function () {
    const box = $('#heatmaps-view');
    clear(box);
    if (!nP) { box.innerHTML = '<p>No probe images were given.</p>'; return; }
    const cs = visC(); const ms = visM();
    if (empty(box, cs, ms)) return;
    if (state.heatCk === null || cs.indexOf(state.heatCk) < 0) state.heatCk = cs[cs.length - 1];
    const byPair = state.heat === 'pair';
    let html = '<div class="controls"><label>show <select id="heat-mode"><option value="pair"' + (byPair ? ' selected' : '') +
      '>one pair in every checkpoint</option><option value="ckpt"' + (byPair ? '' : ' selected') + '>every pair in one checkpoint</option></select></label>' +
      (byPair ? pairPicker('heat-pick') : '<label>checkpoint <select id="heat-ck">' + ckOptions(cs, state.heatCk) + '</select></label>') + '</div>';
    const head = ms.map((j) => '<th scope="col" data-m="' + j + '">' + swatch(j) + wbr(D.methods[j]) + '<br><small>h1 | h2</small></th>').join('');
    html += '<div class="scroll"><table class="heatmaps" id="heatmap-table"><thead><tr><th>' + (byPair ? 'checkpoint' : 'pair') + '</th>' + head + '</tr></thead><tbody>';
    const rowsOf = byPair ? cs : Array.from({ length: nP }, (_, p) => p);
    rowsOf.forEach((r) => {
      const i = byPair ? r : state.heatCk; const p = byPair ? state.pair : r;
      const label = byPair ? esc(ckLabel(i)) : 'pair ' + p + '<div class="duo">' + slot({ kind: 'image', p: p, side: 0 }, 'small') + slot({ kind: 'image', p: p, side: 1 }, 'small') + '</div>';
      html += '<tr data-row="' + r + '"><th scope="row">' + label + '<br><small>sim ' + fmt(sim(i, p)) + '</small></th>';
      ms.forEach((j) => {
        html += '<td data-m="' + j + '"><div class="duo">' + slot({ kind: 'overlay', p: p, side: 0, i: i, j: j }) + slot({ kind: 'overlay', p: p, side: 1, i: i, j: j }) + '</div></td>';
      });
      html += '</tr>';
    });
    html += '</tbody></table></div><p class="legend">Overlays of the maps h1 (on image 1) and h2 (on image 2), jet colours at half opacity; \u26a0 flat marks a degenerate map. Click a map to enlarge it.</p>';
    box.innerHTML = html;
    fillSlots(box);
    const mode = $('#heat-mode', box);
    mode.addEventListener('change', () => { state.heat = mode.value; writeHash(); views.heatmaps(); });
    if (byPair) bindPicker(box, 'heat-pick', views.heatmaps);
    else {
      const sel = $('#heat-ck', box);
      sel.addEventListener('change', () => { state.heatCk = +sel.value; writeHash(); views.heatmaps(); });
    }
  };

  // ------------------------------------------------------------------------------ Curves
  views.curves = function () {
    const box = $('#curves-view');
    clear(box);
    if (!D.curveKeys.length) { box.innerHTML = '<p>No curves were computed (choose insertion or deletion metrics).</p>'; return; }
    const cs = visC(); const ms = visM();
    if (empty(box, cs, ms)) return;
    let opts = '<option value="-1">mean over the pairs</option>';
    for (let p = 0; p < nP; p++) opts += '<option value="' + p + '"' + (p === state.curvePair ? ' selected' : '') + '>pair ' + p + '</option>';
    box.innerHTML = '<div class="controls"><label>curves of <select id="curve-pair">' + opts + '</select></label></div>' +
      '<p class="legend">Similarity of the pair while the most salient pixels are inserted into a blurred image (insertion) or deleted (deletion); the legend gives each method\u2019s area under the curve.</p>' +
      '<div class="charts" id="curve-charts"></div>';
    const sel = $('#curve-pair', box);
    sel.addEventListener('change', () => { state.curvePair = +sel.value; writeHash(); views.curves(); });
    const grid = $('#curve-charts', box);
    const p = state.curvePair;
    cs.forEach((i) => D.curveKeys.forEach((key, c) => {
      const host = h('div', { class: 'card', 'data-ck': i });
      grid.appendChild(host);
      const series = ms.map((j) => {
        const ys = (p < 0 ? meanCurve(i, j, c) : pairCurve(i, j, c, p)) || [];
        return { label: D.methods[j] + ' (' + fmt(auc(ys), 3) + ')', color: D.colors[j], m: j, pts: ys.map((y, t) => [t / Math.max(1, ys.length - 1), y]) };
      });
      chart(host, { title: esc(ckLabel(i)) + ' \u2014 ' + curveName(c), series: series, xLabel: 'fraction of pixels', yLabel: 'similarity', xDomain: [0, 1] });
    }));
  };

  // ------------------------------------------------------------------------------ Over training
  views.training = function () {
    const box = $('#training-view');
    clear(box);
    const cs = visC(); const ms = visM();
    if (empty(box, cs, ms)) return;
    box.innerHTML = '<p class="legend">Against the checkpoint\u2019s ' + esc(D.x.label) + '. Hover for values, drag to zoom, double-click to reset.</p><div class="charts" id="training-charts"></div>';
    const grid = $('#training-charts', box);
    const add = (spec) => { const host = h('div', { class: 'card' }); grid.appendChild(host); chart(host, trendSpec(spec)); };
    D.metrics.forEach((m, k) => add({
      title: metricName(k), yLabel: 'score (mean over pairs)',
      series: ms.map((j) => ({ label: D.methods[j], color: D.colors[j], m: j, pts: cs.map((i) => [xOf(i), score(i, j, k), ckLabel(i)]) })),
    }));
    if (cs.some((i) => isNum(D.knn[i]))) {
      add({ title: 'kNN accuracy \u2191', yLabel: 'accuracy', series: [{ label: 'kNN accuracy', color: '#444', pts: cs.map((i) => [xOf(i), D.knn[i], ckLabel(i)]) }] });
    }
    if (cs.some((i) => isNum(meanSim(i)))) {
      add({ title: 'mean pair similarity', yLabel: 'similarity', series: [{ label: 'mean similarity', color: '#444', pts: cs.map((i) => [xOf(i), meanSim(i), ckLabel(i)]) }] });
    }
    if (cs.some((i) => ms.some((j) => degCount(i, j) !== null))) {
      add({ title: 'degenerate maps', yLabel: 'maps (of ' + 2 * nP + ')', digits: 0, series: ms.map((j) => ({ label: D.methods[j], color: D.colors[j], m: j, pts: cs.map((i) => [xOf(i), degCount(i, j), ckLabel(i)]) })) });
    }
  };

  // ------------------------------------------------------------------------------ Downstream
  views.downstream = function () {
    const box = $('#scatter-view');
    if (!box) return;
    clear(box);
    const cs = visC(); const ms = visM();
    if (empty(box, cs, ms)) return;
    const knn = cs.map((i) => D.knn[i]);
    D.metrics.forEach((m, k) => {
      const host = h('div', { class: 'card' });
      box.appendChild(host);
      const series = ms.map((j) => {
        const xs = cs.map((i) => score(i, j, k));
        const c = correlate(xs, knn);
        return { label: D.methods[j] + ' (\u03c1 ' + fmt(c.s, 2) + ', r ' + fmt(c.p, 2) + ')', color: D.colors[j], m: j, pts: cs.map((i, t) => [xs[t], knn[t], ckLabel(i)]) };
      });
      chart(host, { kind: 'scatter', join: true, title: metricName(k), series: series, xLabel: D.metrics[k].k, yLabel: 'kNN accuracy' });
    });
  };

  // ------------------------------------------------------------------------------ lightbox
  function openLightbox(c) {
    const dlg = $('#lightbox');
    if (!dlg || !c._spec) return;
    const body = $('.lightbox-body', dlg);
    const render = (s) => {
      clear(body);
      const head = s.kind === 'image' ? 'pair ' + s.p : s.kind === 'overlay' ? D.methods[s.j] + ' \u2014 pair ' + s.p + ' \u2014 ' + ckLabel(s.i) : D.methods[s.j] + ' \u2014 pair ' + s.p + ' \u2014 B \u2212 A';
      body.appendChild(h('p', {}, esc(head)));
      const row = h('div', { class: 'tiles' });
      body.appendChild(row);
      [0, 1].forEach((sd) => {
        const fig = h('figure');
        const t = h('canvas', { width: 1, height: 1, 'data-side': sd, 'data-kind': s.kind, role: 'img' });
        t._spec = Object.assign({}, s, { side: sd });
        t.setAttribute('aria-label', describe(t._spec));
        fig.appendChild(t);
        fig.appendChild(h('figcaption', {}, s.kind === 'image' ? 'image ' + (sd + 1) : side(sd)));
        row.appendChild(fig);
        paint(t);
      });
      if (s.kind === 'overlay') body.appendChild(h('p', { class: 'legend' }, '<kbd>\u2190</kbd> <kbd>\u2192</kbd> previous / next checkpoint'));
      dlg._spec = s;
    };
    render(c._spec);
    dlg._render = render;
    if (!dlg.open) { if (dlg.showModal) dlg.showModal(); else dlg.setAttribute('open', ''); }
  }
  function lightboxStep(delta) {
    const dlg = $('#lightbox');
    const s = dlg._spec;
    if (!s || s.kind !== 'overlay') return;
    const cs = visC();
    const t = cs.indexOf(s.i) + delta;
    if (t >= 0 && t < cs.length) dlg._render(Object.assign({}, s, { i: cs[t] }));
  }

  // ------------------------------------------------------------------------------ tabs and filters
  const tabButtons = $$('nav.tabs button');
  function renderTab(name) {
    if (rendered[name]) return;
    const t0 = performance.now();
    if (views[name]) views[name]();
    rendered[name] = true;
    timings[name] = performance.now() - t0;
  }
  function show(name) {
    if (!tabButtons.some((b) => b.dataset.tab === name)) throw new Error('dashboard: no tab named ' + name);
    state.tab = name;
    tabButtons.forEach((b) => b.setAttribute('aria-selected', b.dataset.tab === name ? 'true' : 'false'));
    $$('main > section[data-panel]').forEach((p) => { p.hidden = p.dataset.panel !== name; });
    root.dataset.tab = name;
    renderTab(name);
    writeHash();
  }
  function applyStatic() {
    $$('main [data-m], main [data-ckpt]').forEach((el) => {
      if (el.closest('.view, .chart')) return;
      const m = el.dataset.m; const c = el.dataset.ckpt;
      const off = (m !== undefined && m !== '' && state.hm.has(+m)) || (c !== undefined && c !== '' && state.hc.has(+c));
      el.dataset.filtered = off ? 'true' : 'false';
    });
  }
  function filterState() {
    const out = $('#filter-state');
    if (out) out.textContent = '(' + (nM - state.hm.size) + ' of ' + nM + ' methods, ' + (nC - state.hc.size) + ' of ' + nC + ' checkpoints)';
  }
  function applyFilters() {
    state.hm.clear(); state.hc.clear();
    $$('.filters input[type=checkbox]').forEach((box) => {
      if (!box.checked) (box.dataset.kind === 'm' ? state.hm : state.hc).add(+box.value);
    });
    applyStatic();
    filterState();
    for (const k in rendered) delete rendered[k];
    renderTab(state.tab);
    writeHash();
  }
  function sortable(table) {
    $$('th[data-col]', table).forEach((th) => th.addEventListener('click', () => {
      const col = th.dataset.col;
      const dir = th.getAttribute('aria-sort') === 'descending' ? 'ascending' : 'descending';
      $$('th', table).forEach((x) => x.removeAttribute('aria-sort'));
      th.setAttribute('aria-sort', dir);
      const tbody = table.tBodies[0];
      const value = (r) => {
        const c = Array.from(r.cells).find((td) => td.dataset.col === col);
        return c ? parseFloat(c.dataset.value) : NaN;
      };
      const rows = Array.from(tbody.rows);
      rows.sort((r1, r2) => {
        const a = value(r1); const b = value(r2);
        if (isNaN(a) && isNaN(b)) return 0;
        if (isNaN(a)) return 1;
        if (isNaN(b)) return -1;
        return dir === 'ascending' ? a - b : b - a;
      });
      rows.forEach((r) => tbody.appendChild(r));
    }));
  }

  function init() {
    readHash();
    $$('.filters input[type=checkbox]').forEach((box) => {
      box.checked = !(box.dataset.kind === 'm' ? state.hm : state.hc).has(+box.value);
      box.addEventListener('change', applyFilters);
    });
    const all = $('.filters [data-all]');
    if (all) {
      all.addEventListener('click', () => {
        $$('.filters input[type=checkbox]').forEach((box) => { box.checked = true; });
        applyFilters();
      });
    }
    applyStatic();
    filterState();
    const details = $('details.filters');
    if (details && window.innerWidth < 700) details.open = false;
    const size = $('#tile-size');
    if (size) size.addEventListener('input', () => root.style.setProperty('--tile', size.value + 'px'));
    $$('table.sortable').forEach(sortable);
    tabButtons.forEach((b) => b.addEventListener('click', () => show(b.dataset.tab)));
    const main = $('main');
    main.addEventListener('click', (ev) => {
      const c = ev.target.closest && ev.target.closest('canvas.tile');
      if (c) openLightbox(c);
    });
    main.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && ev.target.matches && ev.target.matches('canvas.tile')) openLightbox(ev.target);
    });
    doc.addEventListener('keydown', (ev) => {
      if (ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const dlg = $('#lightbox');
      if (dlg && dlg.open && (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight')) {
        lightboxStep(ev.key === 'ArrowRight' ? 1 : -1); ev.preventDefault(); return;
      }
      const t = ev.target;
      if (t && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(t.tagName)) return;
      if (state.tab === 'pair' && (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight')) {
        stepSlider(ev.key === 'ArrowRight' ? 1 : -1);
        ev.preventDefault();
      }
    });
    const first = tabButtons[0].dataset.tab;
    show(state.tab && tabButtons.some((b) => b.dataset.tab === state.tab) ? state.tab : first);
    if (D.live && D.live.refresh > 0) {
      const box = $('#auto-reload');
      let timer = null;
      const arm = () => {
        clearTimeout(timer);
        if (box) box.checked = state.live;
        if (state.live) timer = setTimeout(() => { writeHash(); location.reload(); }, D.live.refresh * 1000);
      };
      if (box) box.addEventListener('change', () => { state.live = box.checked; writeHash(); arm(); });
      arm();
    }
  }

  init();
  timings.ready = performance.now();
  window.dashboard = {
    show: show, applyFilters: applyFilters, state: state, idle: idle, timings: timings,
    stepSlider: stepSlider, data: D,
  };
  root.dataset.ready = 'true';
})();
