"""What the kernel predicts without training: spectra, learning curves and the order-to-chaos phase diagram.

* :func:`spectrum` (Nyström, any kernel and data) and :func:`sphere_spectrum` (exact, dot-product kernels on the
  uniform sphere): the eigenvalues λ_i of the kernel's integral operator.
* :func:`learning_curve`: the test MSE of kernel ridge regression at each n from λ_i and the target's
  coefficients (Bordelon et al. 2020; Simon et al. 2023); :func:`scaling_exponent` fits its power law.
* :func:`phase_diagram`, :func:`max_trainable_depth`: q*, χ₁, the depth scale ξ and the NTK's conditioning of
  deep MLPs over (σ_w, σ_b) (Schoenholz et al. 2017; Xiao et al. 2020).

>>> import ntkit as nk
>>> from ntkit import theory
>>> s = theory.sphere_spectrum(nk.Sequential(nk.Linear(1), nk.ReLU(), nk.Linear(1)), dim=3, max_degree=30)
>>> curve = theory.learning_curve(s.eigenvalues, [0, 1] + [0] * 29, [10, 100], multiplicities=s.multiplicities)
>>> bool(curve.test_mse[1] < curve.test_mse[0])
True
"""

from ntkit.theory.learning_curves import LearningCurve, learning_curve, predicted_exponent, scaling_exponent
from ntkit.theory.phase import PhaseDiagram, max_trainable_depth, phase_diagram
from ntkit.theory.spectra import Spectrum, SphereSpectrum, angular_spectrum, spectrum, sphere_spectrum

__all__ = [
    "spectrum", "sphere_spectrum", "angular_spectrum", "Spectrum", "SphereSpectrum", "learning_curve",
    "LearningCurve", "scaling_exponent", "predicted_exponent", "phase_diagram", "PhaseDiagram", "max_trainable_depth",
]  # fmt: skip
