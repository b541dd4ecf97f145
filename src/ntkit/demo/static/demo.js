// ntkit demo page: controls, predictions, the streamed run, and the plots. Plain JS, no build step.
"use strict";

const KINDS = [
  ["fn", "function"],
  ["loss", "loss"],
  ["kernel", "kernel change and gap"],
  ["slice", "kernel slice"],
  ["spectrum", "spectrum"],
];
const COLORS = { net: "#1f5fbf", ntk: "#d9480f", data: "#222", init: "#888", limit: "#2b8a3e", gap: "#7048e8" };
const PLOT_CONFIG = { responsive: true, displayModeBar: false, staticPlot: false };

const state = {
  spec: null,
  client: sessionClient(),
  running: null, // slot being run
  controller: null,
  slots: { A: null, B: null },
  pending: false,
};

// The server's token, if it has one: taken from ?token= once, kept for this tab, sent with every API call.
const TOKEN = (() => {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) sessionStorage.setItem("ntkit-token", fromUrl);
  return fromUrl || sessionStorage.getItem("ntkit-token");
})();

// fetch() for the API: JSON bodies, and the token header when there is a token.
function apiFetch(path, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (init.body !== undefined) headers["Content-Type"] = "application/json";
  if (TOKEN) headers["X-Ntkit-Token"] = TOKEN;
  return fetch(path, { ...init, headers });
}

function sessionClient() {
  let id = sessionStorage.getItem("ntkit-client");
  if (!id) {
    id = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now()).replace(/[^A-Za-z0-9_-]/g, "");
    sessionStorage.setItem("ntkit-client", id);
  }
  return id;
}

const $ = (id) => document.getElementById(id);
const fmt = (v, d = 3) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toPrecision(d));
const pct = (v) => {
  if (v === null || v === undefined) return "–";
  const p = 100 * v;
  return p >= 10 ? `${Math.round(p)}%` : `${p.toPrecision(2)}%`;
};

// ---------------------------------------------------------------------------------------------------------------
// Controls

function widthValue() { return 2 ** Number($("width").value); }
function alphaValue() { return $("lazy").checked ? Number((10 ** Number($("alpha").value)).toPrecision(3)) : null; }
function radio(name) { const el = document.querySelector(`input[name="${name}"]:checked`); return el ? el.value : null; }

function readParams() {
  return {
    width: widthValue(),
    depth: Number($("depth").value),
    activation: radio("activation"),
    parameterization: radio("parameterization"),
    alpha: alphaValue(),
    learning_rate: $("learning_rate").value === "" ? null : Number($("learning_rate").value),
    steps: $("steps").value === "" ? null : Number($("steps").value),
    task: $("task").value,
    seed: $("seed").value === "" ? null : Number($("seed").value),
  };
}

function setWidth(n) { $("width").value = String(Math.round(Math.log2(n))); syncOutputs(); }

function syncOutputs() {
  $("width-out").textContent = `n = ${widthValue()}`;
  $("depth-out").textContent = $("depth").value;
  $("alpha").disabled = !$("lazy").checked;
  $("alpha-out").textContent = $("lazy").checked ? `α = ${alphaValue()}` : "off";
}

function applySpec(spec) {
  const w = spec.width, s = spec.steps, lr = spec.learning_rate, seed = spec.seed;
  $("width").min = String(Math.log2(w.min)); $("width").max = String(Math.log2(w.max));
  $("steps").min = s.min; $("steps").max = s.max;
  $("learning_rate").min = lr.min; $("learning_rate").max = lr.max;
  $("seed").max = seed.max;
}

let limitsTimer = null;
function scheduleLimits() {
  clearTimeout(limitsTimer);
  limitsTimer = setTimeout(updateLimits, 250);
}

// The largest stable learning rate and the work of these settings, from the server (analytic kernel, cheap).
async function updateLimits() {
  const help = $("lr-help"), work = $("work-help");
  try {
    const response = await apiFetch("/api/limits", { method: "POST", body: JSON.stringify(readParams()) });
    const body = await response.json();
    if (!response.ok) { help.textContent = body.errors.map((e) => e.message).join("; "); help.classList.add("warn"); return; }
    const lr = Number($("learning_rate").value);
    help.textContent = `stable for η < ${body.max_learning_rate.toPrecision(3)} with these settings`;
    help.classList.toggle("warn", !(lr < body.max_learning_rate));
    const share = body.work / body.work_cap;
    work.textContent = `${body.n_parameters.toLocaleString()} parameters; steps and kernel frames: ${(100 * share).toPrecision(2)}% of the work cap`;
    work.classList.toggle("warn", share > 1);
  } catch { /* the run itself reports errors */ }
}

function predictionsMade() { return radio("guess-track") !== null && radio("guess-kernel") !== null; }

function updateButtons() {
  const running = state.running !== null;
  $("run").disabled = running || !predictionsMade() || state.pending;
  $("stop").disabled = !running;
  if (!running && !state.pending) {
    $("status").textContent = predictionsMade() ? "Ready: press Run." : "Make your two predictions to run.";
  }
}

function clearPredictions() {
  document.querySelectorAll('input[name="guess-track"], input[name="guess-kernel"]').forEach((el) => { el.checked = false; });
}

function showErrors(errors) {
  const box = $("errors");
  document.querySelectorAll(".field.bad").forEach((el) => el.classList.remove("bad"));
  if (!errors || errors.length === 0) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.innerHTML = "";
  for (const e of errors) {
    const p = document.createElement("p");
    p.textContent = e.message;
    p.dataset.param = e.param;
    box.appendChild(p);
    const input = $(e.param);
    if (input && input.closest(".field")) input.closest(".field").classList.add("bad");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Running: fetch + a streamed text/event-stream body (so that 422 answers can be read and shown)

async function startRun() {
  if (!predictionsMade() || state.running) return;
  const slot = radio("slot");
  const params = readParams();
  const guess = { track: radio("guess-track"), kernel: radio("guess-kernel") };
  showErrors(null);
  state.pending = true;
  updateButtons();
  $("status").textContent = "Preparing: building the network and its analytic kernel…";
  const controller = new AbortController();
  let response;
  try {
    response = await apiFetch("/api/run", {
      method: "POST",
      body: JSON.stringify({ ...params, client: state.client }),
      signal: controller.signal,
    });
  } catch (err) {
    state.pending = false;
    showErrors([{ param: "server", message: `could not reach the server: ${err}` }]);
    updateButtons();
    return;
  }
  state.pending = false;
  if (!response.ok) {
    let errors;
    try { errors = (await response.json()).errors; } catch { errors = [{ param: "server", message: `HTTP ${response.status}` }]; }
    showErrors(errors);
    $("status").textContent = "Fix the highlighted setting and run again.";
    updateButtons();
    return;
  }
  state.running = slot;
  state.controller = controller;
  state.slots[slot] = { params, guess, init: null, frames: [], end: null, dirty: true };
  $(`reveal-${slot}`).hidden = true;
  updateButtons();
  try {
    await readStream(response, (msg) => onMessage(slot, msg));
  } catch (err) {
    if (err.name !== "AbortError") onMessage(slot, { type: "error", message: `the stream broke: ${err}` });
  }
  const run = state.slots[slot];
  if (run && !run.end) run.end = { type: "stopped" };
  finishRun(slot);
}

async function readStream(response, handle) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) handle(JSON.parse(data));
    }
  }
}

function onMessage(slot, msg) {
  const run = state.slots[slot];
  if (msg.type === "init") {
    run.init = msg;
    $("status").textContent = `Training run ${slot}: ${msg.n_parameters.toLocaleString()} parameters…`;
  } else if (msg.type === "frame") {
    run.frames.push(msg);
    const last = msg;
    $("status").textContent = `Run ${slot}: step ${last.step} of ${run.params.steps} · gap ${pct(last.gap)} · kernel moved ${pct(last.kernel.relative_change)}`;
  } else if (msg.type === "done" || msg.type === "stopped" || msg.type === "error") {
    run.end = msg;
  }
  run.dirty = true;
  scheduleDraw();
}

function finishRun(slot) {
  const run = state.slots[slot];
  state.running = null;
  state.controller = null;
  updateButtons();
  if (run && run.end) {
    if (run.end.type === "done") {
      reveal(slot);
      const other = slot === "A" ? "B" : "A";
      if (!state.slots[other]) {
        document.querySelector(`input[name="slot"][value="${other}"]`).checked = true;
      }
      clearPredictions();
      updateButtons();
      $("status").textContent = `Run ${slot} finished: see how it went below.` +
        (state.slots[other] ? "" : ` Now predict again and run another width into run ${other}.`);
    } else if (run.end.type === "error") {
      $("status").textContent = `Run ${slot} failed.`;
      showErrors([{ param: "server", message: run.end.message }]);
    } else {
      const step = run.frames.length ? run.frames[run.frames.length - 1].step : 0;
      $("status").textContent = `Run ${slot} stopped at step ${step}.`;
    }
  }
  drawAll();
  renderCompare();
}

async function stopRun() {
  $("status").textContent = "Stopping…";
  try {
    await apiFetch("/api/stop", { method: "POST", body: JSON.stringify({ client: state.client }) });
  } catch { if (state.controller) state.controller.abort(); }
}

// ---------------------------------------------------------------------------------------------------------------
// The reveal and the comparison

function reveal(slot) {
  const run = state.slots[slot];
  const s = run.end.summary, v = run.end.verdict, th = run.init.thresholds;
  const ok = (a, b) => (a === b ? '<span class="yes">✓ as you predicted</span>' : '<span class="no">✗ not what you predicted</span>');
  const box = $(`reveal-${slot}`);
  box.innerHTML = `
    <p><strong>You predicted:</strong> the network tracks the prediction <em>${run.guess.track}</em>; the kernel moves <em>${run.guess.kernel}</em>.</p>
    <p><strong>What happened:</strong> it tracked <em>${v.track}</em>: the largest gap was ${pct(s.max_gap)} of the
      targets' scale (closely means ≤ ${pct(th.track)}). ${ok(run.guess.track, v.track)}</p>
    <p>The kernel moved <em>${v.kernel}</em>: ‖Θ<sub>T</sub> − Θ<sub>0</sub>‖/‖Θ<sub>0</sub>‖ = ${pct(s.kernel_change)}
      (a little means ≤ ${pct(th.kernel)}). ${ok(run.guess.kernel, v.kernel)}</p>`;
  box.hidden = false;
  box.dataset.track = v.track;
  box.dataset.kernel = v.kernel;
}

function renderCompare() {
  const rows = [
    ["width n", (r) => r.params.width],
    ["depth · activation", (r) => `${r.params.depth} · ${r.params.activation}`],
    ["parameterization", (r) => ({ ntk: "NTK", standard: "standard", mup: "μP" })[r.params.parameterization]],
    ["lazy α", (r) => (r.params.alpha === null ? "off" : r.params.alpha)],
    ["η · steps · task · seed", (r) => `${r.params.learning_rate} · ${r.params.steps} · ${r.params.task} · ${r.params.seed}`],
    ["largest gap to the NTK prediction", (r) => (r.end && r.end.summary ? pct(r.end.summary.max_gap) : "–")],
    ["kernel change at the end", (r) => (r.end && r.end.summary ? pct(r.end.summary.kernel_change) : "–")],
    ["test loss: network / NTK", (r) => (r.end && r.end.summary ? `${fmt(r.end.summary.net_test_loss)} / ${fmt(r.end.summary.ntk_test_loss)}` : "–")],
  ];
  const a = state.slots.A, b = state.slots.B;
  if (!a || !b || !a.init || !b.init) { $("compare").innerHTML = ""; return; }
  let html = '<table><caption>Side by side</caption><thead><tr><th></th><th>run A</th><th>run B</th></tr></thead><tbody>';
  for (const [name, get] of rows) html += `<tr><th scope="row">${name}</th><td>${get(a)}</td><td>${get(b)}</td></tr>`;
  $("compare").innerHTML = html + "</tbody></table>";
}

function summaryText(run) {
  if (!run) return "not run yet";
  const p = run.params;
  const par = { ntk: "NTK", standard: "standard", mup: "μP" }[p.parameterization];
  let text = `n = ${p.width}, depth ${p.depth}, ${p.activation}, ${par}${p.alpha === null ? "" : `, α = ${p.alpha}`}, η = ${p.learning_rate}`;
  if (run.init) text += ` · ${run.init.n_parameters.toLocaleString()} parameters · prediction uses ${run.init.kernel_source.label}`;
  return text;
}

// ---------------------------------------------------------------------------------------------------------------
// Plots

let drawScheduled = false;
function scheduleDraw() {
  if (drawScheduled) return;
  drawScheduled = true;
  requestAnimationFrame(() => { drawScheduled = false; drawAll(); });
}

function buildPlotGrid() {
  const grid = $("plots");
  for (const [kind, title] of KINDS) {
    for (const slot of ["A", "B"]) {
      const cell = document.createElement("div");
      cell.className = "plotcell";
      cell.dataset.slot = slot;
      cell.innerHTML = `<h4>${slot} · ${title}</h4><div class="plot" id="plot-${kind}-${slot}" data-kind="${kind}" data-slot="${slot}" data-points="0"></div>`;
      grid.appendChild(cell);
    }
  }
}

function baseLayout(extra) {
  return Object.assign({
    margin: { l: 48, r: 10, t: 8, b: 38 },
    height: window.innerWidth < 600 ? 290 : 260,
    font: { family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 11 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 0, font: { size: 10 } },
    uirevision: "keep",
  }, extra);
}

function drawAll() {
  for (const slot of ["A", "B"]) {
    const run = state.slots[slot];
    $(`summary-${slot}`).textContent = summaryText(run) + (slot === "B" && !run ? ": run a second width here to compare, for example 32 against 4096" : "");
    if (!run || !run.init || !run.dirty) continue;
    run.dirty = false;
    drawFunction(slot, run);
    drawLoss(slot, run);
    drawKernel(slot, run);
    drawSlice(slot, run);
    drawSpectrum(slot, run);
  }
}

function react(id, traces, layout, points) {
  const el = $(id);
  el.dataset.points = String(points);
  Plotly.react(el, traces, layout, PLOT_CONFIG);
}

function drawFunction(slot, run) {
  const task = run.init.task;
  const f = run.frames.length ? run.frames[run.frames.length - 1] : null;
  const step = f ? f.step : 0;
  if (task.dims === 1) {
    const xs = task.x_train, xt = task.x_test;
    const traces = [
      { x: xt, y: task.y_test, mode: "lines", name: "sin(3x)", line: { color: "#bbb", width: 1 } },
      { x: xs, y: task.y_train, mode: "markers", name: "data", marker: { color: COLORS.data, size: 5 } },
    ];
    if (f) {
      traces.push({ x: xt, y: f.ntk.f, mode: "lines", name: `NTK prediction, t = ${step}`, line: { color: COLORS.ntk, width: 2, dash: "dash" } });
      traces.push({ x: xt, y: f.net.f, mode: "lines", name: `network, t = ${step}`, line: { color: COLORS.net, width: 2 } });
    }
    react(`plot-fn-${slot}`, traces, baseLayout({ xaxis: { title: { text: "x" } }, yaxis: { range: [-2, 2] } }), f ? f.net.f.length : 0);
    return;
  }
  const g = task.grid_size, axis = task.grid_axis;
  const z = (flat) => Array.from({ length: g }, (_, i) => flat.slice(i * g, (i + 1) * g));
  const pos = [], neg = [];
  task.x_train.forEach((p, i) => (task.y_train[i] > 0 ? pos : neg).push(p));
  const traces = [];
  if (f) {
    traces.push({ type: "heatmap", x: axis, y: axis, z: z(f.net.f), zmin: -1.5, zmax: 1.5, colorscale: "RdBu", reversescale: true, showscale: false, opacity: 0.55, name: "network f", hoverinfo: "z" });
    traces.push({ type: "contour", x: axis, y: axis, z: z(f.net.f), contours: { coloring: "none", start: 0, end: 0, size: 1 }, line: { color: "#0b1f44", width: 3 }, name: "network: f = 0", showlegend: true, hoverinfo: "skip" });
    traces.push({ type: "contour", x: axis, y: axis, z: z(f.ntk.f), contours: { coloring: "none", start: 0, end: 0, size: 1 }, line: { color: COLORS.ntk, width: 3, dash: "dash" }, name: "NTK prediction: f = 0", showlegend: true, hoverinfo: "skip" });
  }
  const xy = (pts) => ({ x: pts.map((p) => p[0]), y: pts.map((p) => p[1]) });
  traces.push({ ...xy(pos), mode: "markers", name: "+1", marker: { color: "#b2182b", size: 6, line: { color: "#fff", width: 1 } } });
  traces.push({ ...xy(neg), mode: "markers", name: "−1", marker: { color: "#2166ac", size: 6, line: { color: "#fff", width: 1 } } });
  const lim = [axis[0], axis[axis.length - 1]];
  react(`plot-fn-${slot}`, traces, baseLayout({ xaxis: { range: lim, constrain: "domain", zeroline: false, title: { text: "x₁" } }, yaxis: { range: lim, constrain: "domain", scaleanchor: "x", zeroline: false, title: { text: "x₂" } } }), f ? f.net.f.length : 0);
}

function drawLoss(slot, run) {
  const steps = run.frames.map((f) => f.step);
  const t = (get) => run.frames.map(get);
  const traces = [
    { x: steps, y: t((f) => f.net.train_loss), name: "network train", line: { color: COLORS.net } },
    { x: steps, y: t((f) => f.net.test_loss), name: "network test", line: { color: COLORS.net, dash: "dot" } },
    { x: steps, y: t((f) => f.ntk.train_loss), name: "NTK train", line: { color: COLORS.ntk, dash: "dash" } },
    { x: steps, y: t((f) => f.ntk.test_loss), name: "NTK test", line: { color: COLORS.ntk, dash: "dashdot" } },
  ];
  react(`plot-loss-${slot}`, traces, baseLayout({ xaxis: { title: { text: "step t" }, range: [0, run.params.steps] }, yaxis: { type: "log", exponentformat: "power" } }), steps.length);
}

function drawKernel(slot, run) {
  const steps = run.frames.map((f) => f.step);
  const traces = [
    { x: steps, y: run.frames.map((f) => f.kernel.relative_change), name: "kernel change ‖Θₜ − Θ₀‖/‖Θ₀‖", line: { color: COLORS.init } },
    { x: steps, y: run.frames.map((f) => f.gap), name: "gap RMS(f − f_NTK)/RMS(y)", line: { color: COLORS.gap } },
  ];
  const th = run.init.thresholds;
  const line = (y, color) => ({ type: "line", xref: "paper", x0: 0, x1: 1, y0: y, y1: y, line: { color, width: 1, dash: "dot" } });
  const note = (y, text, color) => ({ xref: "paper", x: 1, y, text, showarrow: false, xanchor: "right", yanchor: "bottom", font: { size: 9, color } });
  const shapes = [line(th.kernel, COLORS.init), line(th.track, COLORS.gap)];
  const annotations = [note(th.kernel, `kernel: "a little" below ${pct(th.kernel)}`, COLORS.init), note(th.track, `gap: "closely" below ${pct(th.track)}`, COLORS.gap)];
  react(`plot-kernel-${slot}`, traces, baseLayout({ xaxis: { title: { text: "step t" }, range: [0, run.params.steps] }, yaxis: { rangemode: "tozero", tickformat: ".0%" }, shapes, annotations }), steps.length);
}

function drawSlice(slot, run) {
  const task = run.init.task, x = task.slice_coord;
  const f = run.frames.length ? run.frames[run.frames.length - 1] : null;
  const traces = [
    { x, y: run.init.limit.slice, name: "analytic (prediction's kernel)", line: { color: COLORS.limit, width: 2, dash: "dash" } },
    { x, y: run.init.initial.slice, name: "network at init", line: { color: COLORS.init, width: 1.5, dash: "dot" } },
  ];
  if (f) traces.push({ x, y: f.kernel.slice, name: `network at t = ${f.step}`, line: { color: COLORS.net, width: 2 } });
  const x0 = task.x0[0];
  const shapes = [{ type: "line", x0, x1: x0, yref: "paper", y0: 0, y1: 1, line: { color: "#ccc", width: 1 } }];
  const where = task.dims === 1 ? `x₀ = ${task.x0[0]}` : `x₀ = (${task.x0.join(", ")})`;
  react(`plot-slice-${slot}`, traces, baseLayout({ xaxis: { title: { text: `${task.slice_label}; ${where}` } }, yaxis: { title: { text: "Θ(x₀, ·)" } }, shapes }), f ? f.kernel.slice.length : 0);
}

function drawSpectrum(slot, run) {
  const f = run.frames.length ? run.frames[run.frames.length - 1] : null;
  const idx = (a) => a.map((_, i) => i + 1);
  const positive = (a) => a.map((v) => (v > 0 ? v : null));
  const lim = run.init.limit.eigs, ini = run.init.initial.eigs;
  const traces = [
    { x: idx(lim), y: positive(lim), name: "analytic", mode: "lines", line: { color: COLORS.limit, dash: "dash" } },
    { x: idx(ini), y: positive(ini), name: "init", mode: "markers", marker: { color: COLORS.init, size: 4 } },
  ];
  if (f) traces.push({ x: idx(f.kernel.eigs), y: positive(f.kernel.eigs), name: `t = ${f.step}`, mode: "markers", marker: { color: COLORS.net, size: 5, symbol: "circle-open" } });
  react(`plot-spectrum-${slot}`, traces, baseLayout({ xaxis: { title: { text: "eigenvalue index of Θ(X, X)" } }, yaxis: { type: "log", exponentformat: "power" } }), f ? f.kernel.eigs.length : 0);
}

// ---------------------------------------------------------------------------------------------------------------

async function main() {
  buildPlotGrid();
  try {
    const response = await apiFetch("/api/params");
    const body = await response.json();
    if (!response.ok) throw new Error(body.errors.map((e) => e.message).join("; "));
    state.spec = body.spec;
    applySpec(state.spec);
  } catch (err) {
    showErrors([{ param: "server", message: `could not load the parameter ranges: ${err.message || err}` }]);
  }
  for (const id of ["width", "depth", "alpha", "lazy"]) $(id).addEventListener("input", syncOutputs);
  $("controls").addEventListener("input", scheduleLimits);
  $("controls").addEventListener("change", scheduleLimits);
  document.querySelectorAll('input[name="guess-track"], input[name="guess-kernel"]').forEach((el) => el.addEventListener("change", updateButtons));
  $("run").addEventListener("click", startRun);
  $("stop").addEventListener("click", stopRun);
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  syncOutputs();
  updateLimits();
  drawAll();
  updateButtons();
  document.body.dataset.ready = "1";
}

// Sets experiment controls from an object of parameters (used by the lesson's "set the experiment" buttons).
function applyParams(values) {
  if (values.width !== undefined) setWidth(values.width);
  if (values.depth !== undefined) { $("depth").value = String(values.depth); }
  for (const name of ["activation", "parameterization"]) {
    if (values[name] !== undefined) document.querySelector(`input[name="${name}"][value="${values[name]}"]`).checked = true;
  }
  if (values.alpha !== undefined) {
    $("lazy").checked = values.alpha !== null;
    if (values.alpha !== null) $("alpha").value = String(Math.log10(values.alpha));
  }
  for (const name of ["learning_rate", "steps", "seed"]) if (values[name] !== undefined) $(name).value = String(values[name]);
  if (values.task !== undefined) $("task").value = values.task;
  syncOutputs();
  scheduleLimits();
}

window.ntkitDemo = { state, setWidth, readParams, applyParams, apiFetch };
document.addEventListener("DOMContentLoaded", main);
