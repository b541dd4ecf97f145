"""scikit-learn faces: infinitely wide networks as estimators and as a Gaussian-process kernel.

* :class:`NTKRegressor` and :class:`NTKClassifier` predict what an infinitely wide network trained by gradient
  descent on the MSE predicts, averaged over initialisations (f(0) has mean 0), at training time ``t``
  (``t=None``: t = ∞). With Θ the NTK (``kernel="ntk"``) or the NNGP K (``kernel="nngp"``, only the readout
  trains), η the learning rate and P the N·O training outputs (Jacot et al. 2018; Lee et al. 2019, eq. 9):

      f(x_*, t) = Θ_{*X} Θ⁻¹ (I − e^{−ηtΘ/P}) y,        at t = ∞ the kernel ridge regression Θ_{*X} Θ⁻¹ y,

  computed by :func:`ntkit.predict.gradient_descent_mse` with Θ + diag_reg·mean(diag Θ)·I in place of Θ.
  The classifier regresses one-hot targets and predicts the argmax (Arora et al. 2020; Lee et al. 2020).
* :class:`NNGPRegressor` is the exact GP posterior with the NNGP as prior covariance
  (:func:`ntkit.predict.gp_inference`): mean K_{*X}(K + σ²I)⁻¹y, covariance K_{**} − K_{*X}(K + σ²I)⁻¹K_{X*}.
* :class:`InfiniteWidthKernel` is a ``sklearn.gaussian_process.kernels.Kernel``: the NNGP (or NTK) with W_std
  and b_std as hyperparameters (log-space ``theta``), its gradient by forward-mode autograd, so that
  ``GaussianProcessRegressor`` fits them by marginal likelihood; it is also a callable kernel for ``SVC``.

When ``arch`` is None the network is a ReLU MLP with ``depth`` hidden layers (the default 2 makes a 3-layer
network), every Linear layer with ``W_std`` and ``b_std``, built from :func:`ntkit.regimes.mlp_spec`; the first
``fixed_layers`` Linear layers stay at their initial values (their parameters do not enter the NTK), as in
Arora et al. 2020's search over the number of fixed layers. These are plain hyperparameters, so ``GridSearchCV``
and ``Pipeline`` search them. When ``arch`` is given, depth, W_std, b_std and fixed_layers are not used.

References: Jacot, Gabriel & Hongler, *Neural Tangent Kernel*, NeurIPS 2018; Lee et al., *Wide Neural Networks
of Any Depth Evolve as Linear Models Under Gradient Descent*, NeurIPS 2019; Arora, Du, Li, Salakhutdinov, Wang &
Yu, *Harnessing the Power of Infinitely Wide Deep Nets on Small-data Tasks*, ICLR 2020.

>>> import numpy as np
>>> from ntkit.sklearn import NTKRegressor
>>> X = np.random.default_rng(0).normal(size=(20, 3))
>>> NTKRegressor().fit(X, X[:, 0]).predict(X[:3]).shape
(3,)
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.gaussian_process.kernels import Hyperparameter
from sklearn.gaussian_process.kernels import Kernel as SklearnKernel
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from torch import nn

from ntkit.infinite import Layer, Sequential
from ntkit.predict import gp_inference, gradient_descent_mse
from ntkit.regimes.parameterization import mlp_spec

#: Width of the finite network that ``arch.build`` makes from the default MLP; the kernels do not depend on it.
DEFAULT_WIDTH = 512
KERNELS = ("ntk", "nngp")


# ---------------------------------------------------------------------------------------------------------------
# Architectures


class FixedBelow(Layer):
    """Marks every layer before it as fixed (kept at its initial values): the NTK restarts from 0 here.

    The NTK is the sum over trainable parameters of ∇f·∇f'; with the parameters below this point frozen, the
    recursion Θ' = K' + W_std²·Θ·K̇ (Jacot et al. 2018) starts from Θ = 0 at this point, so only the layers
    above it contribute. The NNGP is unchanged. The finite module detaches its input, so the empirical NTK of
    ``build``'s network has the same limit.
    """

    fresh = None

    def __repr__(self) -> str:
        return "FixedBelow()"

    def transform(self, k):
        return k.replace(ntk=torch.zeros_like(k.ntk))

    def make_module(self, in_shape, generator):
        return _Detach()


class _Detach(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


def default_mlp(depth: int = 2, W_std: float = 1.0, b_std: float = 0.1, fixed_layers: int = 0) -> Sequential:
    """The ReLU MLP of the estimators: ``depth`` hidden layers, the first ``fixed_layers`` Linear layers fixed.

    Examples
    --------
    >>> default_mlp(2, fixed_layers=1)  # doctest: +ELLIPSIS
    Sequential(Linear(512, ...), FixedBelow(), ReLU(), Linear(512, ...), ReLU(), Linear(1, ...))
    """
    if not 0 <= fixed_layers <= depth:
        raise ValueError(f"fixed_layers must be in [0, depth={depth}] (the readout always trains); got {fixed_layers}")
    layers = list(mlp_spec(DEFAULT_WIDTH, 1, depth=depth, W_std=W_std, b_std=b_std).layers)
    if fixed_layers:
        layers.insert(2 * fixed_layers - 1, FixedBelow())  # after the fixed_layers-th Linear
    return Sequential(*layers)


def with_scales(arch: Layer, W_std, b_std) -> Layer:
    """A copy of ``arch`` in which every Linear/Conv layer has these W_std and b_std (floats or 0-d tensors;
    tensors that require grad or carry forward-mode tangents make the kernel differentiable in them)."""
    arch = copy.deepcopy(arch)
    for layer in arch.affine_layers():
        layer.W_std, layer.b_std = W_std, b_std
    return arch


def _check_arch(arch) -> None:
    if not isinstance(arch, Layer):
        raise TypeError(f"arch must be an ntkit layer spec such as nk.Sequential(...) or None; "
                        f"got {type(arch).__name__}")  # fmt: skip


def gram(arch: Layer, x1: torch.Tensor, x2: torch.Tensor | None, get: str) -> torch.Tensor:
    """The (N1, N2) kernel matrix ``arch.kernel(x1, x2).<get>``, with a clear error when arch keeps spatial axes."""
    k = getattr(arch.kernel(x1, x2), get)
    if k.ndim != 2:
        raise ValueError(f"arch must end with a reduction (Flatten or GlobalAvgPool, then Linear) so that its kernel "
                         f"is (N1, N2); got {tuple(k.shape)}")  # fmt: skip
    return k


# ---------------------------------------------------------------------------------------------------------------
# Estimators


class _InfiniteWidthEstimator(BaseEstimator):
    """Shared parameters, checks and kernel evaluation of the estimators."""

    _parameter_constraints: dict = {
        "arch": [Layer, None],
        "diag_reg": [Interval(Real, 0, None, closed="left")],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "W_std": [Interval(Real, 0, None, closed="neither")],
        "b_std": [Interval(Real, 0, None, closed="left")],
        "fixed_layers": [Interval(Integral, 0, None, closed="left")],
    }
    _kernel_name = "nngp"

    def architecture(self) -> Layer:
        """The layer spec the kernel comes from: ``arch``, or the ReLU MLP built from the hyperparameters."""
        if self.arch is not None:
            _check_arch(self.arch)
            return self.arch
        return default_mlp(self.depth, self.W_std, self.b_std, self.fixed_layers)

    def _kernel(self, X: np.ndarray, Y: np.ndarray | None = None) -> torch.Tensor:
        x1 = torch.tensor(X, dtype=torch.float64)
        x2 = None if Y is None else torch.tensor(Y, dtype=torch.float64)
        return gram(self.architecture(), x1, x2, self._kernel_name)

    def _test_kernel(self, X) -> tuple[np.ndarray, torch.Tensor]:
        """The checked test inputs and their kernel with the training inputs (M, N)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X, self._kernel(X, self.X_fit_)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_predictor", None)  # a closure: rebuilt after unpickling
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class _GradientDescentMSE(_InfiniteWidthEstimator):
    _parameter_constraints: dict = {
        **_InfiniteWidthEstimator._parameter_constraints,
        "kernel": [StrOptions(set(KERNELS))],
        "t": [Interval(Real, 0, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, arch=None, kernel="ntk", t=None, learning_rate=1.0, diag_reg=1e-4, depth=2, W_std=1.0,
                 b_std=0.1, fixed_layers=0):  # fmt: skip
        self.arch, self.kernel, self.t, self.learning_rate, self.diag_reg = arch, kernel, t, learning_rate, diag_reg
        self.depth, self.W_std, self.b_std, self.fixed_layers = depth, W_std, b_std, fixed_layers

    @property
    def _kernel_name(self) -> str:
        return self.kernel

    def _fit_targets(self, X, targets: np.ndarray):
        self.train_kernel_ = self._kernel(X)
        self.targets_ = torch.tensor(targets, dtype=torch.float64)
        self.X_fit_ = X
        self._predictor = self._make_predictor()
        return self

    def _make_predictor(self):
        return gradient_descent_mse(self.train_kernel_, self.targets_, self.learning_rate, self.diag_reg)

    def _outputs(self, X) -> np.ndarray:
        """f(x_*, t) for every output column: (M, O)."""
        _, k_test = self._test_kernel(X)
        if getattr(self, "_predictor", None) is None:  # after unpickling
            self._predictor = self._make_predictor()
        _, fx_test = self._predictor(t=self.t, k_test_train=k_test)
        return fx_test.numpy()


class NTKRegressor(RegressorMixin, _GradientDescentMSE):
    """An infinitely wide network trained by gradient descent on the MSE, as a scikit-learn regressor.

    f(x_*, t) = Θ_{*X} Θ⁻¹ (I − e^{−ηtΘ/P}) y (see the module docstring), Θ + diag_reg·mean(diag Θ)·I in place
    of Θ, the mean over initialisations (f(0) = 0).

    Parameters
    ----------
    arch : ntkit layer spec or None
        The network (it must end in a Linear layer on (N, D) features); None: the ReLU MLP of ``depth``.
    kernel : {"ntk", "nngp"}
        Train every layer (NTK) or only the readout (NNGP).
    t : float ≥ 0 or None
        Training time in steps of size ``learning_rate``; None is t = ∞ (kernel ridge regression).
    learning_rate : float > 0
        Step size η of the loss ‖f − y‖²/(2P).
    diag_reg : float ≥ 0
        Ridge, relative to the mean of the kernel's diagonal.
    depth, W_std, b_std, fixed_layers :
        The default MLP's hidden layers, weight and bias scales and number of fixed (untrained) Linear layers.

    Attributes
    ----------
    X_fit_ : ndarray (N, D)
        Training inputs.
    train_kernel_ : torch.Tensor (N, N)
        Θ (or K) of the training inputs, float64.
    n_features_in_ : int

    Raises
    ------
    ValueError
        NaN or Inf in X or y, a feature count at predict time different from fit, bad hyperparameters.
    sklearn.exceptions.NotFittedError
        predict before fit.

    References
    ----------
    Jacot et al. 2018; Lee et al. 2019, eq. 9; Arora et al. 2020.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.linspace(-1, 1, 12).reshape(-1, 1)
    >>> model = NTKRegressor(depth=1).fit(X, np.sin(3 * X[:, 0]))
    >>> bool(abs(model.predict([[0.1]])[0] - np.sin(0.3)) < 0.05)
    True
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Compute the training kernel. X (N, D), y (N,) or (N, O)."""
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        return self._fit_targets(X, y.reshape(len(y), -1))

    def predict(self, X) -> np.ndarray:
        """f(x_*, t): (M,) when y was 1-D at fit, else (M, O)."""
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class NTKClassifier(ClassifierMixin, _GradientDescentMSE):
    """Kernel regression on one-hot targets with an infinitely wide network's NTK; predicts the argmax.

    The outputs are those of :class:`NTKRegressor` fitted to the one-hot encoding of y (Arora et al. 2020 and
    Lee et al. 2020 classify this way); ``decision_function`` gives them, as f₁ − f₀ for two classes.

    Parameters
    ----------
    arch, kernel, t, learning_rate, diag_reg, depth, W_std, b_std, fixed_layers :
        As in :class:`NTKRegressor`.

    Attributes
    ----------
    classes_ : ndarray (K,)
        The class labels, sorted.
    X_fit_, train_kernel_, n_features_in_ :
        As in :class:`NTKRegressor`.

    Raises
    ------
    ValueError
        Continuous (regression) targets ("Unknown label type"), NaN or Inf in X, a feature count at predict
        time different from fit.
    sklearn.exceptions.NotFittedError
        predict before fit.

    References
    ----------
    Arora et al., *Harnessing the Power of Infinitely Wide Deep Nets on Small-data Tasks*, ICLR 2020.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> bool(NTKClassifier().fit(X[::2], y[::2]).score(X[1::2], y[1::2]) > 0.9)
    True
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Compute the training kernel and the one-hot targets. X (N, D), y (N,) class labels."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        return self._fit_targets(X, np.eye(len(self.classes_))[index])

    def decision_function(self, X) -> np.ndarray:
        """The network's outputs (M, K); for two classes f₁ − f₀ (M,), positive for ``classes_[1]``."""
        out = self._outputs(X)
        if out.shape[1] == 2:
            return out[:, 1] - out[:, 0]
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X) -> np.ndarray:
        """The class with the largest output."""
        outputs = self._outputs(X)
        return self.classes_[np.argmax(outputs, axis=1)]


class NNGPRegressor(RegressorMixin, _InfiniteWidthEstimator):
    """The exact GP posterior of an infinitely wide Bayesian network (prior covariance: its NNGP).

    mean = K_{*X}(K + σ²I)⁻¹y, cov = K_{**} − K_{*X}(K + σ²I)⁻¹K_{X*}, σ² = diag_reg·mean(diag K)
    (Rasmussen & Williams 2006, eqs. 2.23–2.24; Lee et al. 2018), by :func:`ntkit.predict.gp_inference`.

    Parameters
    ----------
    arch, diag_reg, depth, W_std, b_std, fixed_layers :
        As in :class:`NTKRegressor` (fixed_layers changes only the NTK, so it does nothing here).

    Raises
    ------
    ValueError
        NaN or Inf in X or y, a feature count at predict time different from fit, return_std and return_cov
        both requested.
    sklearn.exceptions.NotFittedError
        predict before fit.

    References
    ----------
    Lee, Bahri, Novak, Schoenholz, Pennington & Sohl-Dickstein, *Deep Neural Networks as Gaussian Processes*,
    ICLR 2018.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.linspace(-1, 1, 10).reshape(-1, 1)
    >>> mean, std = NNGPRegressor().fit(X, X[:, 0]).predict([[0.0], [5.0]], return_std=True)
    >>> bool(std[1] > std[0])
    True
    """

    def __init__(self, arch=None, diag_reg=1e-4, depth=2, W_std=1.0, b_std=0.1, fixed_layers=0):
        self.arch, self.diag_reg = arch, diag_reg
        self.depth, self.W_std, self.b_std, self.fixed_layers = depth, W_std, b_std, fixed_layers

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Compute the training NNGP and its Cholesky factor. X (N, D), y (N,) or (N, O)."""
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        self.train_kernel_ = self._kernel(X)
        self.targets_ = torch.tensor(y.reshape(len(y), -1), dtype=torch.float64)
        self.X_fit_ = X
        self._predictor = gp_inference(self.train_kernel_, self.targets_, self.diag_reg)
        return self

    def predict(self, X, return_std: bool = False, return_cov: bool = False):
        """Posterior mean, and its standard deviation or covariance (of f, without the noise σ²).

        Returns mean (M,) or (M, O) as y at fit; with ``return_std`` also std (M,) or (M, O); with
        ``return_cov`` also cov (M, M) or (M, M, O) (one GP per output, all with the same covariance).
        """
        if return_std and return_cov:
            raise ValueError("return_std and return_cov cannot both be True: ask for one of them")
        X, k_test = self._test_kernel(X)
        if getattr(self, "_predictor", None) is None:
            self._predictor = gp_inference(self.train_kernel_, self.targets_, self.diag_reg)
        k_test_test = self._kernel(X) if (return_std or return_cov) else None
        posterior = self._predictor(k_test, k_test_test)
        mean = posterior.mean.numpy()
        mean = mean[:, 0] if self._y_1d else mean
        if not (return_std or return_cov):
            return mean
        cov = posterior.covariance.numpy()
        outputs = self.targets_.shape[1]
        if return_cov:
            return mean, cov if self._y_1d else np.repeat(cov[:, :, None], outputs, axis=2)
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))  # negative variances are rounding: the exact value is ≥ 0
        return mean, std if self._y_1d else np.repeat(std[:, None], outputs, axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# ---------------------------------------------------------------------------------------------------------------
# The Gaussian-process kernel


class InfiniteWidthKernel(SklearnKernel):
    """The NNGP (or NTK) of an infinitely wide network as a ``sklearn.gaussian_process.kernels.Kernel``.

    k(x, x') = ``arch.kernel(x, x').<get>`` with every Linear/Conv layer of ``arch`` given the kernel's W_std
    and b_std. ``theta`` = (log W_std, log b_std), as sklearn expects; the gradient ∂k/∂log θ = θ·∂k/∂θ comes
    from forward-mode autograd (one pass per hyperparameter). b_std = 0 stays fixed (its log is −∞). Works
    inside ``GaussianProcessRegressor`` (which fits W_std and b_std by marginal likelihood) and as a callable
    ``SVC(kernel=InfiniteWidthKernel(...))``.

    Parameters
    ----------
    arch : ntkit layer spec or None
        The network; None: the 3-layer ReLU MLP (:func:`default_mlp`).
    get : {"nngp", "ntk"}
    W_std, b_std : float
        Weight and bias scales of every Linear/Conv layer (they replace arch's own).
    W_std_bounds, b_std_bounds : pair of floats or "fixed"
        Search bounds of the hyperparameters.

    References
    ----------
    Lee et al., *Deep Neural Networks as Gaussian Processes*, ICLR 2018; Rasmussen & Williams 2006, ch. 5.

    Examples
    --------
    >>> import numpy as np
    >>> k = InfiniteWidthKernel(W_std=1.5, b_std=0.1)
    >>> K, dK = k(np.eye(3), eval_gradient=True)
    >>> K.shape, dK.shape
    ((3, 3), (3, 3, 2))
    """

    def __init__(self, arch=None, get="nngp", W_std=1.0, b_std=0.1, W_std_bounds=(1e-2, 1e2),
                 b_std_bounds=(1e-5, 1e2)):  # fmt: skip
        self.arch, self.get, self.W_std, self.b_std = arch, get, W_std, b_std
        self.W_std_bounds, self.b_std_bounds = W_std_bounds, b_std_bounds

    @property
    def hyperparameter_W_std(self) -> Hyperparameter:
        return Hyperparameter("W_std", "numeric", self.W_std_bounds)

    @property
    def hyperparameter_b_std(self) -> Hyperparameter:
        return Hyperparameter("b_std", "numeric", "fixed" if self.b_std == 0 else self.b_std_bounds)

    def _arch(self) -> Layer:
        if self.get not in KERNELS:
            raise ValueError(f"get must be one of {KERNELS}; got {self.get!r}")
        if not (self.W_std > 0 and self.b_std >= 0):
            raise ValueError(f"W_std must be > 0 and b_std ≥ 0; got W_std={self.W_std}, b_std={self.b_std}")
        if self.arch is None:
            return default_mlp()
        _check_arch(self.arch)
        return self.arch

    def __call__(self, X, Y=None, eval_gradient: bool = False):
        """K(X, Y) (N1, N2), and with ``eval_gradient`` also ∂K/∂theta (N1, N1, n_free_hyperparameters)."""
        if eval_gradient and Y is not None:
            raise ValueError("eval_gradient can only be evaluated when Y is None")
        x1 = _as_float64(X, "X")
        x2 = None if Y is None else _as_float64(Y, "Y")
        arch = self._arch()
        if not eval_gradient:
            return gram(with_scales(arch, self.W_std, self.b_std), x1, x2, self.get).numpy()
        free = [h.name for h in self.hyperparameters if not h.fixed]
        scales = {"W_std": torch.tensor(float(self.W_std), dtype=torch.float64),
                  "b_std": torch.tensor(float(self.b_std), dtype=torch.float64)}  # fmt: skip
        n = x1.shape[0]
        if not free:
            k = gram(with_scales(arch, scales["W_std"], scales["b_std"]), x1, None, self.get)
            return k.numpy(), np.empty((n, n, 0))
        grads = []
        for name in free:
            with fwAD.dual_level():
                dual = dict(scales)
                with warnings.catch_warnings():  # torch's first make_dual loads jit decompositions, with a notice
                    warnings.simplefilter("ignore", DeprecationWarning)
                    dual[name] = fwAD.make_dual(scales[name], scales[name].clone())  # tangent θ: ∂/∂log θ
                k_dual = gram(with_scales(arch, dual["W_std"], dual["b_std"]), x1, None, self.get)
                k, tangent = fwAD.unpack_dual(k_dual)
                grads.append(tangent.detach().clone())
                k = k.detach().clone()
        return k.numpy(), torch.stack(grads, dim=-1).numpy()

    def diag(self, X) -> np.ndarray:
        """k(x, x) for every row of X (N,)."""
        x = _as_float64(X, "X")
        arch = with_scales(self._arch(), self.W_std, self.b_std)
        if self.get == "nngp":  # the output layer's self-covariances: no N × N matrix
            return arch.kernel(x, x[:1]).var1.reshape(-1).numpy()
        return np.diag(gram(arch, x, None, self.get).numpy()).copy()

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"InfiniteWidthKernel(get={self.get!r}, W_std={self.W_std:.3g}, b_std={self.b_std:.3g})"


def _as_float64(X, name: str) -> torch.Tensor:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return torch.tensor(x)
