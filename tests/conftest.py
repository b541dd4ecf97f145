"""One intra-op torch thread for the whole suite.

The tests run many ops on small tensors (SGD steps, ODE right-hand sides, 6-D covariances of a few examples). On
a shared 2-core machine torch's thread pool then spends milliseconds per op waiting for a second core
(log_softmax of a (6, 3) tensor measured at ~8 ms instead of ~10 µs), which made whole folders 5-10× slower. The
previous setting is restored at the end.
"""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
