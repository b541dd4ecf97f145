"""A SPEC file for `ntkit kernel`: an FC ReLU network with a layer that sleeps, so that runs can be killed mid-way.

`Pause` is the identity on kernels (and in the network); the sleep only makes every tile take 0.1 s.
"""

import time

import ntkit as nk
from ntkit.infinite.layers import Layer


class Pause(Layer):
    def __repr__(self) -> str:
        return "Pause()"

    def transform(self, k):
        time.sleep(0.1)
        return k


arch = nk.Sequential(nk.Linear(64, b_std=0.1), nk.ReLU(), Pause(), nk.Linear(1, b_std=0.1))
same_without_pause = nk.Sequential(nk.Linear(64, b_std=0.1), nk.ReLU(), nk.Linear(1, b_std=0.1))
