// The learning-curve panel: asks the server for the predicted test error of kernel regression with the page's
// architecture on its task (ntkit.theory.learning_curve) and the measured error at a few n, and draws both.
(function () {
  "use strict";

  function value(id) {
    const el = document.getElementById(id);
    return el ? el.value : null;
  }

  function params() {
    const demo = window.ntkitDemo;
    if (demo && demo.readParams) {  // the experiment's own reading of its controls
      const all = demo.readParams();
      return { depth: all.depth, activation: all.activation, task: all.task, seed: all.seed };
    }
    const checked = document.querySelector("input[name='activation']:checked");
    return {
      depth: Number(value("depth") || 1),
      activation: checked ? checked.value : "relu",
      task: value("task") || "sin",
      seed: Number(value("seed") || 0),
    };
  }

  function draw(result) {
    const plot = document.getElementById("lc-plot");
    const m = result.measured;
    const traces = [
      { x: result.n, y: result.predicted, mode: "lines", name: "predicted from the spectrum",
        line: { color: "#2b6cb0", width: 2 } },
      { x: m.map((p) => p.n), y: m.map((p) => p.mean), mode: "markers", name: "measured kernel regression",
        marker: { color: "#c05621", size: 8 },
        error_y: { type: "data", array: m.map((p) => 2 * p.stderr), visible: true } },
    ];
    const layout = {
      margin: { l: 60, r: 10, t: 10, b: 45 }, height: 320,
      xaxis: { type: "log", title: { text: "training points n" } },
      yaxis: { type: "log", title: { text: "test MSE" } },
      legend: { x: 0.02, y: 0.02 },
    };
    Plotly.newPlot(plot, traces, layout, { displayModeBar: false, responsive: true });
    plot.setAttribute("data-points", String(result.n.length + m.length));
  }

  async function run() {
    const button = document.getElementById("lc-run");
    const status = document.getElementById("lc-status");
    const errors = document.getElementById("lc-errors");
    button.disabled = true;
    errors.hidden = true;
    status.textContent = "computing the spectrum and " + "the kernel regressions…";
    try {
      // demo.js's apiFetch sends the server's token (ntkit demo --token) with JSON bodies
      const post = (window.ntkitDemo && window.ntkitDemo.apiFetch) ||
        ((path, init) => fetch(path, { ...init, headers: { "Content-Type": "application/json" } }));
      const response = await post("/api/learning-curve", { method: "POST", body: JSON.stringify(params()) });
      const body = await response.json();
      if (!response.ok) {
        errors.textContent = (body.errors || []).map((e) => e.message).join("; ") || "the server refused";
        errors.hidden = false;
        status.textContent = "";
        return;
      }
      draw(body);
      const last = body.measured[body.measured.length - 1];
      status.textContent = `ridge δ = ${body.ridge}; spectrum from ${body.pool} points; ` +
        `${body.draws} training sets per n; at n = ${last.n} measured ${last.mean.toPrecision(3)}`;
      document.getElementById("learning-curve").setAttribute("data-done", "1");
    } catch (err) {
      errors.textContent = String(err);
      errors.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("lc-run");
    if (button) {
      button.addEventListener("click", run);
      button.disabled = false;
    }
  });
})();
