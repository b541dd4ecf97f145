"""Training as a linear ODE in function space (the names of neural-tangents' ``predict`` module)."""

from ntkit.predict.gradient_flow import (
    Gaussian,
    gp_inference,
    gradient_descent,
    gradient_descent_mse,
    gradient_descent_mse_ensemble,
    max_learning_rate,
)
from ntkit.predict.linearize import TaylorModel, linearize, taylor_expand

__all__ = [
    "Gaussian", "TaylorModel", "gp_inference", "gradient_descent", "gradient_descent_mse",
    "gradient_descent_mse_ensemble", "linearize", "max_learning_rate", "taylor_expand",
]  # fmt: skip
