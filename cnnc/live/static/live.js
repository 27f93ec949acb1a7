// cnnc's live training page: follows the server's event stream (Server-Sent Events) and
// draws the curves, activation maps, filters, test panel and confusion matrix.
"use strict";

const $ = id => document.getElementById(id);
const q = s => "token=" + encodeURIComponent(TOKEN) + (s ? "&" + s : "");
const run = {start: null, spe: 1, epochs: 1, batch: 1, step: 0, epoch: 0, iteration: 0, paused: false,
             ended: false, rate: null, lr: null, views: null, selected: 0};

const loss = new LineChart($("loss"), {ylabel: "cross-entropy loss", log: true});
const acc = new LineChart($("acc"), {ylabel: "accuracy", ymin: 0, ymax: 1});
const trainLoss = loss.add("train", "#3a7bd5"), valLoss = loss.add("validation", "#e8743b", true);
const trainAcc = acc.add("train", "#3a7bd5"), valAcc = acc.add("validation", "#e8743b", true);
let dirty = true;

function setStatus(text, cls) { const s = $("status"); s.textContent = text; s.className = "status " + cls; document.body.dataset.state = cls; }
function say(text) { $("message").textContent = text; }
function duration(s) {
  if (!isFinite(s) || s < 0) return "-";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
  return h ? h + "h " + m + "m" : m ? m + "m " + sec + "s" : sec + "s";
}

function addEpoch(e) {
  const x = e.epoch;
  if (e.val_loss !== null && e.val_loss !== undefined) valLoss.points.push([x, e.val_loss]);
  if (e.val_accuracy !== null && e.val_accuracy !== undefined) valAcc.points.push([x, e.val_accuracy]);
  if (!run.hadSteps) { trainLoss.points.push([x, e.train_loss]); trainAcc.points.push([x, e.train_accuracy]); }
  run.epoch = e.epoch;
  if (e.epochs) run.epochs = e.epochs;
  if (e.confusion) drawConfusion(e.confusion, e.epoch);
}

function onEvent(e) {
  switch (e.type) {
    case "start":
      run.start = e; run.spe = Math.max(e.steps_per_epoch, 1); run.epochs = e.epochs; run.batch = e.batch;
      run.epoch = e.epoch; run.lr = e.lr;
      $("data").textContent = e.data + ", batch " + e.batch + ", " + e.optimizer + (e.ranks > 1 ? ", " + e.ranks + " ranks" : "");
      if (!$("lr").value) $("lr").value = e.lr;
      if (!trainLoss.points.length && !valLoss.points.length) for (const h of e.history || []) addEpoch(h);  // a resumed run: its earlier epochs
      setStatus("training", "training");
      break;
    case "steps":
      run.hadSteps = true;
      run.step = e.step; run.epoch = e.epoch; run.iteration = e.iteration; run.spe = Math.max(e.steps_per_epoch, 1);
      run.rate = e.images_per_s; run.lr = e.lr;
      trainLoss.points.push([e.epoch + e.iteration / run.spe, e.loss]);
      trainAcc.points.push([e.epoch + e.iteration / run.spe, e.accuracy]);
      break;
    case "epoch": addEpoch(e); break;
    case "control":
      run.paused = e.paused;
      if (e.action === "lr") { say("learning rate set to " + e.value + " at step " + e.step); }
      else if (e.action === "save") say("checkpoint saved at step " + e.step);
      else if (e.action === "stop") say("stopping: the checkpoint is saved");
      setStatus(run.paused ? "paused" : "training", run.paused ? "paused" : "training");
      break;
  }
  dirty = true;
}

function drawProgress() {
  $("epoch").textContent = Math.min(run.epoch + 1, run.epochs) + " / " + run.epochs;
  $("steps").textContent = run.step;
  $("rate").textContent = run.rate ? Math.round(run.rate).toLocaleString() : "-";
  $("lrnow").textContent = run.lr !== null ? (+run.lr).toPrecision(3) : "-";
  const done = run.epoch * run.spe + run.iteration, total = run.epochs * run.spe;
  $("bar").style.width = Math.min(100, 100 * (run.iteration / run.spe)) + "%";
  const stepsPerS = run.rate ? run.rate / run.batch : 0;
  $("left").textContent = run.ended ? "0s" : stepsPerS ? duration((total - done) / stepsPerS) : "-";
}

function drawViews(v) {
  run.views = v;
  const box = $("images"); box.textContent = "";
  v.images.forEach((im, i) => {
    const d = document.createElement("div"); d.className = "img" + (i === run.selected ? " sel" : "");
    const px = fromBase64(im.pixels);
    d.appendChild(pixelCanvas(px, 0, im.h, im.w, im.c, Math.max(1, Math.round(64 / im.w)), ""));
    const right = im.label === im.predicted;
    d.insertAdjacentHTML("beforeend", "<div>true " + esc(im.label) + "</div><div class='" + (right ? "right" : "wrong") +
      "'>" + esc(im.predicted) + " " + im.probability.toFixed(2) + "</div>");
    d.onclick = () => { run.selected = i; drawViews(run.views); };
    box.appendChild(d);
  });
  const layers = $("layers"); layers.textContent = "";
  let tiles = 0;
  for (const L of v.layers) {
    const row = document.createElement("div"); row.className = "layer";
    row.innerHTML = "<div class='name'><b>" + esc(L.name) + "</b> " + L.shape.join("x") + "<br>min " + fmtNum(L.min) +
      " max " + fmtNum(L.max) + (L.shown < L.count ? "<br>" + L.shown + " of " + L.count + " maps" : "") + "</div>";
    const t = document.createElement("div"); t.className = "tiles";
    const bytes = fromBase64(L.maps[Math.min(run.selected, L.maps.length - 1)]);
    const zoom = L.h === 1 ? 3 : Math.max(1, Math.min(4, Math.round(40 / Math.max(L.h, L.w))));
    const n = L.h * L.w;
    if (L.h === 1 && L.shown === 1) {  // a vector (fc): one strip, taller
      const cv = pixelCanvas(bytes, 0, 1, L.w, 1, 1, "");
      cv.style.width = Math.min(600, Math.max(L.w * 3, 60)) + "px"; cv.style.height = "14px";
      t.appendChild(cv); tiles++;
    } else {
      for (let k = 0; k < L.shown; k++) { t.appendChild(pixelCanvas(bytes, k * n, L.h, L.w, 1, zoom, L.name + " map " + k)); tiles++; }
    }
    row.appendChild(t); layers.appendChild(row);
  }
  if (v.filters) {
    $("convname").textContent = v.filters.layer;
    tiles += drawFilters($("filters"), v.filters.filters);
    tiles += drawFilters($("grads"), v.filters.grads);
  }
  document.body.dataset.tiles = tiles;
  document.body.dataset.viewsStep = v.step;
}

function drawFilters(box, f) {
  box.textContent = "";
  const bytes = fromBase64(f.tiles), n = f.h * f.w * f.c;
  const zoom = Math.max(2, Math.round(24 / Math.max(f.h, f.w)));
  const t = document.createElement("div"); t.className = "tiles"; t.style.display = "flex"; t.style.flexWrap = "wrap"; t.style.gap = "3px";
  for (let k = 0; k < f.count; k++) t.appendChild(pixelCanvas(bytes, k * n, f.h, f.w, f.c, zoom, ""));
  box.appendChild(t);
  box.insertAdjacentHTML("beforeend", "<div><small>" + f.count + (f.count < f.total ? " of " + f.total : "") +
    " tiles, each min-max normalized; values from " + fmtNum(f.min) + " to " + fmtNum(f.max) + "</small></div>");
  return f.count;
}

function drawPanel(p) {
  const box = $("panel"); box.textContent = "";
  let right = 0;
  for (const it of p.items) {
    const d = document.createElement("div"); d.className = "item";
    d.appendChild(pixelCanvas(fromBase64(it.pixels), 0, p.h, p.w, p.c, Math.max(1, Math.round(40 / Math.max(p.h, p.w))), ""));
    right += it.correct ? 1 : 0;
    let html = "<div>true <b>" + esc(it.label) + "</b></div>";
    for (const [name, prob] of it.top) html += "<div class='top " + (name === it.label ? "right" : "wrong") + "'>" + esc(name) + " " + prob.toFixed(2) + "</div>";
    d.insertAdjacentHTML("beforeend", html);
    box.appendChild(d);
  }
  $("panelnote").textContent = "validation images after " + p.epoch + " epoch" + (p.epoch === 1 ? "" : "s") +
    ": " + right + " of " + p.items.length + " right; top 3 classes (green: the true class, red: a wrong one)";
}

function drawConfusion(m, epoch) {
  const names = run.start ? run.start.class_names : m.map((_, i) => "" + i);
  let max = 1; for (const r of m) for (const v of r) max = Math.max(max, v);
  let html = "<table class='conf'><tr><th></th>" + names.map(n => "<th>" + esc(n.slice(0, 8)) + "</th>").join("") + "</tr>";
  m.forEach((r, i) => {
    html += "<tr><th>" + esc((names[i] || "" + i).slice(0, 12)) + "</th>" + r.map((v, j) => {
      const a = v / max, bg = i === j ? "rgba(40,150,60," + a + ")" : "rgba(210,50,50," + a + ")";
      return "<td style='background:" + bg + ";color:" + (a > 0.55 ? "#fff" : "#222") + "'>" + v + "</td>";
    }).join("") + "</tr>";
  });
  $("confusion").innerHTML = html + "</table>";
  $("confnote").textContent = "(validation, after epoch " + epoch + "; rows: true class, columns: predicted)";
}

function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }
function fmtNum(v) { return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : (+v.toPrecision(3)) + ""; }

function redraw() {
  if (!dirty) return;
  dirty = false;
  loss.draw(); acc.draw(); drawProgress();
  document.body.dataset.points = trainLoss.points.length + valLoss.points.length;
}

async function control(action, value) {
  try {
    const r = await fetch("/control?" + q(), {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify({action: action, value: value})});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) say(body.error || "the server said " + r.status);
    else if (action === "pause") say("pausing after this step"); else if (action === "resume") say("resuming");
  } catch (err) { say("no answer from the training process"); }
}

$("pause").onclick = () => control(run.paused ? "resume" : "pause");
$("save").onclick = () => control("save");
$("stop").onclick = () => { if (run.ended) return; control("stop"); };
$("setlr").onclick = () => { const v = parseFloat($("lr").value); if (v > 0) control("lr", v); else say("the learning rate must be a positive number"); };

function connect() {
  const es = new EventSource("/events?" + q());
  es.addEventListener("model", ev => {
    const m = JSON.parse(ev.data);
    $("summary").textContent = m.summary;
    $("drawing").innerHTML = m.svg;  // our own SVG (cnnc.lang.layout), names escaped there
  });
  es.addEventListener("events", ev => {
    for (const e of JSON.parse(ev.data)) onEvent(e);
    document.body.dataset.points = trainLoss.points.length + valLoss.points.length;
    $("steps").textContent = run.step;
  });
  es.addEventListener("views", ev => drawViews(JSON.parse(ev.data)));
  es.addEventListener("panel", ev => drawPanel(JSON.parse(ev.data)));
  es.addEventListener("end", ev => {
    const e = JSON.parse(ev.data || "{}");
    run.ended = true; dirty = true;
    setStatus(e.interrupted ? "stopped (checkpoint saved)" : "finished", "ended");
    if (e.test && e.test.accuracy !== undefined) say("test accuracy " + e.test.accuracy.toFixed(4));
    for (const b of ["pause", "save", "stop", "setlr"]) $(b).disabled = true;
    es.close();
  });
  es.onopen = () => { if (!run.start && !run.ended) setStatus("waiting for training", "connecting"); };
  es.onerror = () => { if (!run.ended) setStatus("connection lost, retrying", "lost"); };
}

document.addEventListener("visibilitychange", () => { dirty = true; });
setInterval(() => { $("pause").textContent = run.paused ? "Resume" : "Pause"; redraw(); }, 250);
connect();
redraw();
