"""One intra-op thread for the tests of ``ntkit.predict``.

They run thousands of ops on tiny tensors (SGD steps, ODE right-hand sides); on a shared 2-core machine torch's
thread pool then spends milliseconds per op waiting for a second core (log_softmax of a (6, 3) tensor measured at
~8 ms instead of ~10 µs), which made this folder 5-10× slower. The previous setting is restored afterwards.
"""

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
