import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    """Tests never write to the home cache. Set before any fixture runs, session-scoped ones included, so the
    embedded parents are converted once per test session into a temporary cache."""
    if "SUBCLONE_VIZ_CACHE" not in os.environ:
        os.environ["SUBCLONE_VIZ_CACHE"] = tempfile.mkdtemp(prefix="subclone_viz-test-cache-")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread(request):
    """Unit tests (and modules that set ONE_TORCH_THREAD) run tiny models, which gain nothing from a second
    intra-op thread; on a busy 2-core machine the threads wait on each other for many times the work."""
    if "unit" not in request.path.parts and not getattr(request.module, "ONE_TORCH_THREAD", False):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
