// Line charts on a <canvas>: a few series of (x, y) points, nice axis ticks, a legend.
// Written for cnnc's live page (no chart library: the page must work offline and ship
// nothing we did not write).
"use strict";

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

function ticks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

// Ticks of a log axis (y0, y1 are log10 values): 1, 2, 5 times the powers of 10 in range,
// only the powers where that gives too many.
function logTicks(y0, y1) {
  let out = [];
  for (let e = Math.floor(y0); e <= Math.ceil(y1); e++)
    for (const m of [1, 2, 5]) { const t = e + Math.log10(m); if (t >= y0 && t <= y1) out.push(t); }
  if (out.length > 8) out = out.filter(t => Math.abs(t - Math.round(t)) < 1e-9);
  if (out.length < 2) out = ticks(y0, y1, 4);
  return out;
}

function fmt(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return +v.toPrecision(4) + "";
}

class LineChart {
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.opts = Object.assign({xlabel: "epoch", ylabel: "", ymin: null, ymax: null, log: false}, opts || {});
    this.series = [];
  }
  add(name, color, dots) {
    const s = {name: name, color: color, dots: !!dots, points: []};
    this.series.push(s);
    return s;
  }
  count() { return this.series.reduce((n, s) => n + s.points.length, 0); }
  draw() {
    const c = this.canvas, g = c.getContext("2d"), o = this.opts;
    const W = c.width, H = c.height, L = 58, R = 12, T = 26, B = 36;
    g.clearRect(0, 0, W, H);
    g.fillStyle = "#fff"; g.fillRect(0, 0, W, H);
    const pts = [].concat(...this.series.map(s => s.points));
    g.fillStyle = "#333"; g.font = "bold 13px sans-serif"; g.textAlign = "left";
    g.fillText(o.ylabel, L, 16);
    if (!pts.length) {
      g.fillStyle = "#888"; g.font = "13px sans-serif"; g.textAlign = "center";
      g.fillText("waiting for the first steps", W / 2, H / 2);
      return;
    }
    const ty = v => o.log ? Math.log10(Math.max(v, 1e-8)) : v;
    let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
    let y0 = o.ymin !== null ? o.ymin : Math.min(...pts.map(p => ty(p[1])));
    let y1 = o.ymax !== null ? o.ymax : Math.max(...pts.map(p => ty(p[1])));
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) { y1 = y0 + 1e-3 + Math.abs(y0) * 0.1; }
    const pad = (y1 - y0) * 0.05; if (o.ymin === null) y0 -= pad; if (o.ymax === null) y1 += pad;
    const X = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const Y = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    g.strokeStyle = "#e6e6e6"; g.lineWidth = 1; g.fillStyle = "#555"; g.font = "11px sans-serif";
    g.textAlign = "right"; g.textBaseline = "middle";
    for (const v of (o.log ? logTicks(y0, y1) : ticks(y0, y1, 5))) {
      g.beginPath(); g.moveTo(L, Y(v) + 0.5); g.lineTo(W - R, Y(v) + 0.5); g.stroke();
      g.fillText(o.log ? fmt(Math.pow(10, v)) : fmt(v), L - 5, Y(v));
    }
    g.textAlign = "center"; g.textBaseline = "top";
    for (const v of ticks(x0, x1, 8)) {
      g.beginPath(); g.moveTo(X(v) + 0.5, T); g.lineTo(X(v) + 0.5, H - B); g.stroke();
      g.fillText(fmt(v), X(v), H - B + 4);
    }
    g.fillText(o.xlabel, (L + W - R) / 2, H - 15);
    g.strokeStyle = "#999"; g.strokeRect(L + 0.5, T + 0.5, W - L - R, H - T - B);
    g.save(); g.beginPath(); g.rect(L, T, W - L - R, H - T - B); g.clip();
    for (const s of this.series) {
      if (!s.points.length) continue;
      g.strokeStyle = s.color; g.fillStyle = s.color; g.lineWidth = 1.6;
      g.beginPath();
      s.points.forEach((p, i) => { const x = X(p[0]), y = Y(ty(p[1])); if (i) g.lineTo(x, y); else g.moveTo(x, y); });
      g.stroke();
      if (s.dots || s.points.length === 1) for (const p of s.points) { g.beginPath(); g.arc(X(p[0]), Y(ty(p[1])), 3, 0, 7); g.fill(); }
    }
    g.restore();
    let lx = W - R - 8; g.font = "12px sans-serif"; g.textBaseline = "middle"; g.textAlign = "right";
    for (const s of this.series.slice().reverse()) {
      g.fillStyle = "#333"; g.fillText(s.name, lx, 13); lx -= g.measureText(s.name).width + 6;
      g.fillStyle = s.color; g.fillRect(lx - 14, 11, 14, 4); lx -= 26;
    }
  }
}

// Grey (c == 1) or RGB (c == 3) bytes, h x w (x c), onto a new canvas scaled by `zoom`.
function pixelCanvas(bytes, offset, h, w, c, zoom, title) {
  const cv = document.createElement("canvas");
  cv.width = w; cv.height = h;
  cv.style.width = (w * zoom) + "px"; cv.style.height = (h * zoom) + "px";
  if (title) cv.title = title;
  const g = cv.getContext("2d"), img = g.createImageData(w, h), d = img.data;
  for (let i = 0; i < h * w; i++) {
    const r = bytes[offset + i * c], gg = bytes[offset + i * c + (c === 3 ? 1 : 0)], b = bytes[offset + i * c + (c === 3 ? 2 : 0)];
    d[4 * i] = r; d[4 * i + 1] = gg; d[4 * i + 2] = b; d[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return cv;
}

function fromBase64(s) {
  const bin = atob(s), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
