import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """These matrices are small: one intra-op thread is several times faster than two on a shared machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
