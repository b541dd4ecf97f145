"""The interactive demo: a web page where a finite network trains beside its infinite-width NTK prediction.

``ntkit demo`` (or ``make demo``) serves it at http://127.0.0.1:8765/. The page is plain HTML and JavaScript with
hand-written MathML; Plotly comes from the installed ``plotly`` package, so nothing is loaded from the internet.
Every number it shows is computed by ntkit for that run (:mod:`ntkit.demo.experiment`).

>>> from ntkit.demo import create_app
>>> app = create_app()
"""

from ntkit.demo.app import create_app, serve
from ntkit.demo.experiment import Experiment
from ntkit.demo.params import SPEC, ParamError, RunParams, parse_params

__all__ = ["create_app", "serve", "Experiment", "SPEC", "ParamError", "RunParams", "parse_params"]
