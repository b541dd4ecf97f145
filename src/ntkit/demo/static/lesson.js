// ntkit demo page, the lesson around the experiment: learning map, storyboard, the seed example, practice, notes.
// Plain JS, no build step. Uses ntkitDemo (demo.js) for the API and the experiment's controls.
"use strict";

const lesson = (() => {
  const $ = (id) => document.getElementById(id);
  const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // -------------------------------------------------------------------------------------------------------------
  // The learning map: which of the four stages is in view.

  const STAGES = ["intuition", "math", "code", "experiment"];
  const STAGE_NAMES = { intuition: "Intuition", math: "The math", code: "The code", experiment: "The experiment" };

  function markStage(id) {
    document.querySelectorAll("#learning-map .stages a").forEach((a) => {
      if (a.dataset.stage === id) a.setAttribute("aria-current", "step");
      else a.removeAttribute("aria-current");
    });
    const index = STAGES.indexOf(id);
    $("where").textContent = index < 0 ? "You are at the start." : `You are in stage ${index + 1} of 4: ${STAGE_NAMES[id]}.`;
    document.body.dataset.stage = id;
  }

  function watchStages() {
    const visible = new Map();
    const observer = new IntersectionObserver((entries) => {
      for (const e of entries) visible.set(e.target.id, e.isIntersecting ? e.intersectionRatio : 0);
      const best = STAGES.filter((id) => visible.get(id) > 0);
      if (best.length) markStage(best[0]);
    }, { rootMargin: "-20% 0px -50% 0px", threshold: [0, 0.01, 0.5] });
    for (const id of STAGES) observer.observe($(id));
    markStage("intuition");
    // The next stage (scaling laws) lives in the learning-curve section once a page has it.
    if (!$("learning-curve")) {
      const next = $("learning-map-next");
      next.removeAttribute("href");
      next.setAttribute("aria-disabled", "true");
      next.title = "the learning-curve panel is not on this page yet";
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // The storyboard: |Δθ| histograms at three widths, from static/storyboard.json.

  let board = null;

  function storyIndex() { return Number(document.querySelector('input[name="story-width"]:checked').value); }

  function drawStory() {
    if (!board) return;
    const i = storyIndex();
    const edges = board.bin_edges;
    const centers = edges.slice(0, -1).map((e, k) => Math.sqrt(e * edges[k + 1]));
    const widths = edges.slice(0, -1).map((e, k) => edges[k + 1] - e);
    const colors = ["#d9480f", "#7048e8", "#1f5fbf"];
    const traces = board.runs.map((run, k) => ({
      type: "bar", x: centers, y: run.fractions.map((f) => 100 * f), width: widths, name: `n = ${run.width}`,
      marker: { color: colors[k], opacity: k === i ? 0.9 : 0.12 }, hovertemplate: "|Δθ| ≈ %{x:.2g}: %{y:.1f}%<extra></extra>",
    }));
    const layout = {
      barmode: "overlay", height: 250, margin: { l: 48, r: 10, t: 8, b: 40 }, paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#fff", font: { family: "system-ui, sans-serif", size: 11 },
      xaxis: { type: "log", title: { text: "|Δθ| of one parameter (log scale)" }, exponentformat: "power" },
      yaxis: { title: { text: "% of parameters" }, rangemode: "tozero" },
      legend: { orientation: "h", y: 1.02, yanchor: "bottom", x: 0 },
    };
    if (window.Plotly) Plotly.react($("story-plot"), traces, layout, { displayModeBar: false, responsive: true });
    const run = board.runs[i], first = board.runs[0];
    $("story-plot").dataset.width = String(run.width);
    $("story-plot").setAttribute("aria-label", `histogram of |Δθ| at width ${run.width}: RMS ${run.rms.toPrecision(2)}`);
    $("story-text").textContent = `n = ${run.width} (${run.n_parameters.toLocaleString()} parameters): a weight moved ` +
      `${run.rms.toPrecision(2)} (RMS over all parameters), ${(first.rms / run.rms).toPrecision(2)}× less than at n = ${first.width} ` +
      `(√(${run.width}/${first.width}) = ${Math.sqrt(run.width / first.width).toPrecision(2)}), ` +
      `while the function moved RMS ${run.function_move.toPrecision(2)} on the test points (n = ${first.width}: ` +
      `${first.function_move.toPrecision(2)}). Each weight moves about 1/√n as far; the function moves just as far.` +
      (run.still > 0 ? ` (${(100 * run.still).toPrecision(2)}% of the parameters did not move at all: they belong to units whose ReLU is off on every training point, left out of the bars.)` : "");
  }

  async function loadStory() {
    try {
      const response = await fetch("/static/storyboard.json");
      board = await response.json();
      drawStory();
    } catch (err) {
      $("story-text").textContent = `The storyboard could not be loaded: ${err}`;
    }
    document.querySelectorAll('input[name="story-width"]').forEach((el) => el.addEventListener("change", drawStory));
    $("story-next").addEventListener("click", () => {
      const next = (storyIndex() + 1) % 3;
      const input = document.querySelector(`input[name="story-width"][value="${next}"]`);
      input.checked = true;
      drawStory();
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // The seed example: its code and its numbers, computed by the server.

  async function loadSeedExample() {
    const out = $("seed-output");
    try {
      const response = await ntkitDemo.apiFetch("/api/seed-example");
      const body = await response.json();
      if (!response.ok) throw new Error(body.errors.map((e) => e.message).join("; "));
      $("seed-code").textContent = `${body.source}\nprint(seed_example(bias=False), seed_example(bias=True))`;
      out.dataset.mseNoBias = String(body.mse_no_bias);
      out.dataset.mseBias = String(body.mse_bias);
      out.textContent = `Output: test MSE without bias ${body.mse_no_bias.toPrecision(5)}; with bias ` +
        `${body.mse_bias.toPrecision(3)}, ${Math.round(body.ratio)}× smaller.`;
    } catch (err) {
      out.textContent = `The server could not run the example: ${err.message || err}`;
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // The practice loop: a prediction is committed before its answer shows.

  const QUESTIONS = [
    {
      id: "double", prompt: "In the NTK parameterization, doubling the width changes how far the kernel moves during training by a factor of about…",
      options: ["2 (it moves twice as far)", "1 (no change)", "1/√2 ≈ 0.7", "1/4"], answer: 2,
      reason: "Each weight moves by O(1/√n), and the kernel's change is of the same order: ‖Θ_T − Θ_0‖/‖Θ_0‖ ~ 1/√n, so doubling n multiplies it by 1/√2.",
      settings: { width: 512, depth: 1, parameterization: "ntk", alpha: null, learning_rate: 0.3, steps: 400 }, hint: "run n = 512 and then n = 2048, four times wider, and compare the kernel change in the table: it should about halve (one seed is noisy; a factor of two in width is within its noise)",
    },
    {
      id: "mup", prompt: "Under μP (maximal update parameterization), at a large width the kernel…",
      options: ["freezes, like in the NTK parameterization", "keeps moving by an amount that does not shrink with width"], answer: 1,
      reason: "μP scales the output layer and the learning rates so that features move by O(1) at every width: it is built to learn features, so the kernel does not freeze and the NTK prediction drifts away.",
      settings: { width: 4096, depth: 1, parameterization: "mup", alpha: null, learning_rate: 0.3, steps: 400 }, hint: "run μP at n = 4096",
    },
    {
      id: "alpha", prompt: "At a narrow width (n = 32), turning on the lazy scale α = 100…",
      options: ["freezes the kernel, and the network then tracks the infinite-width prediction closely", "freezes the kernel, but the network still misses the infinite-width prediction", "leaves the kernel moving as much as before"], answer: 1,
      reason: "Training α·(f − f₀) with the loss divided by α² needs each weight to move only 1/α as far for the same change of output (Chizat, Oyallon & Bach, 2019), so the kernel stays at its start Θ₀: the network is lazy. But at n = 32 that start is itself about 1/√n away from the infinite-width Θ that the prediction uses. Lazy is not the same as wide: the kernel change drops to a tiny fraction, the gap does not.",
      settings: { width: 32, depth: 1, parameterization: "ntk", alpha: 100, learning_rate: 0.3, steps: 400 }, hint: "run n = 32 with the lazy scale at α = 100 into one slot and without it into the other, and compare the kernel change and the gap",
    },
    {
      id: "notrain", prompt: "Why can the prediction be drawn before the network has trained a single step?",
      options: ["the server trains a hidden copy first", "it is a closed form of the kernel Θ, the targets y and the start f₀, and Θ is computed from the architecture alone", "it is fitted to the first steps of the loss curve"], answer: 1,
      reason: "With Θ fixed, gradient descent on a squared loss is a linear recursion in function space: f_t = y + (I − ηΘ/N)^t (f_0 − y). The analytic Θ needs only the layer specification.",
      settings: { width: 4096, depth: 1, parameterization: "ntk", alpha: null, learning_rate: 0.3, steps: 400 }, hint: "watch the dashed prediction at step 0 of any run: it is already complete",
    },
  ];

  function buildPractice() {
    const list = $("practice-list");
    for (const q of QUESTIONS) {
      const item = document.createElement("form");
      item.className = "practiceq";
      item.id = `practice-${q.id}`;
      const options = q.options.map((text, k) => `<label class="option"><input type="radio" name="practice-${q.id}" value="${k}"> ${escapeHtml(text)}</label>`).join("");
      item.innerHTML = `<fieldset><legend>${escapeHtml(q.prompt)}</legend>${options}</fieldset>
        <button type="submit" class="commit" disabled>Commit my prediction</button>
        <div class="answer" id="answer-${q.id}" hidden aria-live="polite"></div>`;
      const commit = item.querySelector(".commit");
      item.addEventListener("change", () => { commit.disabled = item.dataset.committed === "1" || !item.querySelector("input:checked"); });
      item.addEventListener("submit", (e) => {
        e.preventDefault();
        const chosen = item.querySelector("input:checked");
        if (!chosen || item.dataset.committed === "1") return;
        reveal(q, item, Number(chosen.value));
      });
      list.appendChild(item);
    }
  }

  function reveal(q, item, chosen) {
    item.dataset.committed = "1";
    item.querySelectorAll("input").forEach((el) => { el.disabled = true; });
    item.querySelector(".commit").disabled = true;
    const right = chosen === q.answer;
    const box = $(`answer-${q.id}`);
    box.innerHTML = `<p><strong>You committed to:</strong> ${escapeHtml(q.options[chosen])}.
      <span class="${right ? "yes" : "no"}">${right ? "✓ right" : `✗ the answer is: ${escapeHtml(q.options[q.answer])}`}</span></p>
      <p><strong>Why:</strong> ${escapeHtml(q.reason)}</p>
      <p><strong>See it:</strong> ${escapeHtml(q.hint)}. <button type="button" class="apply">Set the experiment</button></p>`;
    box.querySelector(".apply").addEventListener("click", () => applyAndGo(q.settings));
    box.hidden = false;
    item.dataset.correct = right ? "1" : "0";
  }

  function applyAndGo(settings) {
    ntkitDemo.applyParams(settings);
    $("experiment").scrollIntoView();
    $("width").focus({ preventScroll: true });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Research notes: kept in localStorage, never sent anywhere, exported as Markdown.

  const NOTES_KEY = "ntkit-notes";
  const KIND_NAMES = { equation: "an equation", plot: "a plot", setting: "a setting of the experiment", code: "a line of code" };

  function loadNotes() {
    try { const notes = JSON.parse(localStorage.getItem(NOTES_KEY) || "[]"); return Array.isArray(notes) ? notes : []; } catch { return []; }
  }

  function saveNotes(notes) { localStorage.setItem(NOTES_KEY, JSON.stringify(notes)); }

  function renderNotes() {
    const list = $("note-list");
    const notes = loadNotes();
    list.innerHTML = "";
    notes.forEach((n, i) => {
      const li = document.createElement("li");
      li.innerHTML = `<p class="nq">${escapeHtml(n.question)}</p>
        <p class="nmeta">About ${escapeHtml(KIND_NAMES[n.kind] || n.kind)}${n.object ? `: ${escapeHtml(n.object)}` : ""} · ${escapeHtml(n.saved)}</p>
        ${n.next ? `<p class="nnext">Next: ${escapeHtml(n.next)}</p>` : ""}
        <button type="button" class="delete" aria-label="Delete the note: ${escapeHtml(n.question.slice(0, 40))}">Delete</button>`;
      li.querySelector(".delete").addEventListener("click", () => { const all = loadNotes(); all.splice(i, 1); saveNotes(all); renderNotes(); });
      list.appendChild(li);
    });
    $("note-export").disabled = notes.length === 0;
  }

  function notesMarkdown(notes) {
    const lines = ["# ntkit: research notes", "", `Exported ${new Date().toISOString()} from the NTK lesson page.`, ""];
    notes.forEach((n, i) => {
      lines.push(`## ${i + 1}. ${n.question}`, "", `- **About:** ${KIND_NAMES[n.kind] || n.kind}${n.object ? `: ${n.object}` : ""}`);
      if (n.next) lines.push(`- **Next step:** ${n.next}`);
      lines.push(`- **Saved:** ${n.saved}`, "");
    });
    return lines.join("\n");
  }

  function exportNotes() {
    const blob = new Blob([notesMarkdown(loadNotes())], { type: "text/markdown" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "ntk-notes.md";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    $("note-status").textContent = "Exported ntk-notes.md.";
  }

  function setupNotes() {
    $("note-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const question = $("note-question").value.trim();
      if (!question) { $("note-status").textContent = "Write a question first."; $("note-question").focus(); return; }
      const notes = loadNotes();
      notes.push({ question, kind: $("note-kind").value, object: $("note-object").value.trim(), next: $("note-next").value.trim(), saved: new Date().toISOString().slice(0, 16).replace("T", " ") });
      saveNotes(notes);
      for (const id of ["note-question", "note-object", "note-next"]) $(id).value = "";
      $("note-status").textContent = `Saved in this browser (${notes.length} note${notes.length === 1 ? "" : "s"}).`;
      renderNotes();
    });
    $("note-attach").addEventListener("click", () => {
      const p = ntkitDemo.readParams();
      $("note-kind").value = "setting";
      $("note-object").value = `n = ${p.width}, depth ${p.depth}, ${p.activation}, ${p.parameterization}, α = ${p.alpha === null ? "off" : p.alpha}, η = ${p.learning_rate}, ${p.steps} steps, ${p.task}, seed ${p.seed}`;
    });
    $("note-export").addEventListener("click", exportNotes);
    renderNotes();
  }

  function setupApplyButtons() {
    document.querySelectorAll("#sources button.apply").forEach((b) => b.addEventListener("click", () => applyAndGo(JSON.parse(b.dataset.apply))));
  }

  function main() {
    watchStages();
    buildPractice();
    setupNotes();
    setupApplyButtons();
    loadStory();
    loadSeedExample();
    document.body.dataset.lesson = "1";
  }

  return { main, notesMarkdown, QUESTIONS };
})();

window.ntkitLesson = lesson;
document.addEventListener("DOMContentLoaded", lesson.main);
