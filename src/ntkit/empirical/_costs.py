"""Time estimates behind ``method="auto"``: multiply-adds of each kind of work, priced at measured throughput.

Multiply-adds alone mislead: the same count runs at very different speeds depending on how it is done. A
Jacobian-contraction pass over a dense layer (``vmap`` of ``jacrev``, one example at a time, writing O·P Jacobian
entries per example) reached 3.2 GMAC/s where the structured method's batched backward passes through the same
layers reached 57; on convolutions the two are closer (38 against 47), and contracting stored Jacobians is
memory-bound (13). Pricing each kind at its own throughput is what makes ``auto`` pick the structured method on
Myrtle-5, where it is 1.2-1.3× faster although it counts slightly more multiply-adds than Jacobian contraction.

The estimate of a method is Σ_kinds MACs_kind / :data:`THROUGHPUT` [method][kind]. Only the ratios between
entries matter (the argmin does not change when every entry is scaled), so one machine's measurement serves
others; a machine whose GEMM is faster speeds up every kind alike.
"""

from __future__ import annotations

from ntkit.empirical._common import Problem
from ntkit.empirical.structured import LinearHandler, StructuredPlan, structured_work

#: Multiply-adds per second (GMAC/s) by method and kind of work. Measured 2026-11-29 on an AMD EPYC (Zen 4), one
#: thread, float32, output="trace", on bench/empirical.py's models, as the CPU time of the process (the machine
#: was shared by other jobs; CPU time is what load disturbs least): whole calls on Myrtle-5 at N = 16 (x2 given:
#: structured 1.06 s for 50.2 GMAC → 47, Jacobian contraction 1.30 s for 49.4 GMAC → 38) and the two phases of
#: the MLP 784-1024-1024-10 at N = 32 (structured per-example passes 57, its pair contractions are GEMMs ≈ 50;
#: Jacobian contraction's per-example Jacobians 3.2, its pair contraction 13). NTK-vector products run one
#: vjp + jvp per pair; they are priced at Jacobian contraction's per-example rates (bench: 0.2 s at MLP N = 8).
THROUGHPUT: dict[str, dict[str, float]] = {
    "structured": {"linear": 57.0, "conv": 47.0, "pairs": 50.0, "fallback_example": 3.2, "fallback_pairs": 13.0},
    "jacobian_contraction": {"linear": 3.2, "conv": 38.0, "pairs": 13.0},
    "ntk_vector_products": {"linear": 3.2, "conv": 38.0},
}


def estimated_seconds(problem: Problem, plan: StructuredPlan) -> dict[str, float]:
    """Relative time of each method on ``problem`` (units of 1e9 / :data:`THROUGHPUT`; only ratios matter).

    With F_t the forward multiply-adds of one example through the factored layers of type t, P the trainable
    parameters and O the outputs: Jacobian contraction does 3·O·F_t per example on each type (plus 3·O·P for
    writing the Jacobian, counted as dense work) and O·P per pair (O²·P for "full"); NTK-vector products
    3·O·F_t per example and 2·O·F_t per pair; structured see :func:`ntkit.empirical.structured.structured_work`.
    """
    n1, n2, o = problem.x1.shape[0], problem.x2.shape[0], problem.n_outputs
    n_ex = n1 if problem.symmetric else n1 + n2
    per_pair_o = o * (o if problem.output == "full" else 1)
    forward = {"linear": 0.0, "conv": 0.0}
    for lp in plan.layers:
        forward["linear" if isinstance(lp.handler, LinearHandler) else "conv"] += (
            lp.positions * lp.fan_in * lp.out_features
        )
    forward["linear"] += problem.n_params - sum(p.numel() for p in plan.fallback.values())
    fallback = sum(p.numel() for p in plan.fallback.values())
    jac = {kind: n_ex * 3 * o * macs for kind, macs in forward.items()}
    jac["linear"] += n_ex * 3 * o * fallback
    jac["pairs"] = n1 * n2 * per_pair_o * problem.n_params
    vps = {kind: (n_ex * 3 + n1 * n2 * 2) * o * macs for kind, macs in forward.items()}
    work = {"structured": structured_work(plan, problem), "jacobian_contraction": jac, "ntk_vector_products": vps}
    return {method: sum(m / THROUGHPUT[method][kind] for kind, m in kinds.items()) for method, kinds in work.items()}
