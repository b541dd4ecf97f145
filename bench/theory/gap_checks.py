"""Checks behind docs/results.md "Is the low-d gap a bug?": the ReLU NTK's sphere eigenvalues against an independent
Funk–Hecke integral (scipy quad, scipy Gegenbauer) and a Nyström estimate; the prediction against the number of
explicit degrees (the rest as tail_trace); the target's mean square; the ridge convention (K + δI against K + nδI).

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/theory/gap_checks.py      # ~1 min
"""

import math

import numpy as np
from scipy import integrate
from scipy.special import eval_gegenbauer

from ntkit.data import harmonic_target, sphere_points
from ntkit.data.sphere import harmonic_multiplicity
from ntkit.regimes import mlp_spec
from ntkit.theory import learning_curve, spectrum, sphere_spectrum
from ntkit.theory.spectra import angular_function

arch = mlp_spec(1024, 1, 1, "relu", 1.0, 0.1)
for d in (3, 5):
    s = sphere_spectrum(arch, d, 12)
    fn = angular_function(arch, d)
    # independent: Gegenbauer C_l^{(d-2)/2}(t)/C_l(1) by scipy, adaptive quad, surface-area ratio by Gamma
    a = (d - 2) / 2
    norm = math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d - 1) / 2))

    def integrand(t, ell, d=d, a=a, fn=fn):
        legendre = eval_gegenbauer(ell, a, t) / eval_gegenbauer(ell, a, 1.0)  # P_ℓ^(d), P(1) = 1
        return fn(np.array([t]))[0] * legendre * (1 - t * t) ** ((d - 3) / 2)

    ref = [norm * integrate.quad(integrand, -1, 1, args=(ell,), limit=400, epsabs=1e-14, epsrel=1e-12)[0]
           for ell in range(13)]  # fmt: skip
    ref = np.array(ref)
    print(f"d={d} eig rel diff vs quad:", np.max(np.abs(s.eigenvalues - ref) / np.abs(ref)))
    print("  lam_l:", np.array2string(s.eigenvalues[:8], precision=4))
    # Nyström on 4000 points, grouped by degree
    x = sphere_points(4000, d, 7)
    sp = spectrum(arch, x)
    ev = sp.eigenvalues.numpy()
    i = 0
    out = []
    for l in range(6):
        N = harmonic_multiplicity(d, l)
        out.append((l, s.eigenvalues[l], ev[i : i + N].mean()))
        i += N
    print("  nystrom by degree (l, exact, nystrom mean):", [(l, f"{e:.4g}", f"{m:.4g}") for l, e, m in out])

# tail: max_degree 40 vs 200 at d = 3
d = 3
coeffs_p = {1: 1.0, 2: 0.5, 3: 0.25}
for L in (20, 40, 200, 800):
    s = sphere_spectrum(arch, d, L)
    c = np.zeros(L + 1)
    for l, p in coeffs_p.items():
        c[l] = math.sqrt(p)
    lc = learning_curve(
        s.eigenvalues,
        c,
        [10, 30, 100, 300, 1000],
        ridge=0.0,
        noise=0.01,
        multiplicities=s.multiplicities,
        tail_trace=s.tail,
    )
    lc0 = learning_curve(
        s.eigenvalues,
        c,
        [10, 30, 100, 300, 1000],
        ridge=0.0,
        noise=0.01,
        multiplicities=s.multiplicities,
        tail_trace=0.0,
    )
    print(f"L={L} tail={s.tail:.3g} predicted {np.array2string(lc.test_mse, precision=4)}, without the tail "
          f"{np.array2string(lc0.test_mse, precision=4)}, κ {np.array2string(lc.kappa, precision=3)}")  # fmt: skip

# target power split: measured mean square per degree on many points, projection on P_l
f = harmonic_target(3, [1, 2, 3], [1.0, 0.5, 0.25], seed=0)
x = sphere_points(200000, 3, 3)
y = f(x)
print("target E[y^2] (expect 1.75):", float((y**2).mean()))

# ridge convention: the measurement solves (K + δI)α = y; what (K + nδI) would predict instead
for d in (3, 10):
    s = sphere_spectrum(arch, d, 100 if d == 3 else 20)
    c = np.zeros(s.eigenvalues.size)
    c[[1, 2, 3]] = np.sqrt([1.0, 0.5, 0.25])
    ns = [100, 300, 1000]
    for r in (0.001, 0.01):
        a = learning_curve(
            s.eigenvalues, c, ns, ridge=r, noise=0.01, multiplicities=s.multiplicities, tail_trace=s.tail
        ).test_mse
        b = [
            learning_curve(
                s.eigenvalues, c, n, ridge=r * n, noise=0.01, multiplicities=s.multiplicities, tail_trace=s.tail
            ).test_mse[0]
            for n in ns
        ]
        print(f"d={d} δ={r:g} n={ns}: K + δI {np.round(a, 4)}, K + nδI {np.round(b, 4)}")
