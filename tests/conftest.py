import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    """Tests never write to the home cache. Set before any fixture runs, session-scoped ones included, so the
    embedded parents are converted once per test session into a temporary cache. Under pytest-xdist the
    controller sets it before it starts the workers, which inherit it: the parents are converted once, by the
    first worker to take the cache's lock, and loaded from it by the other."""
    if "SUBCLONE_VIZ_CACHE" not in os.environ:
        os.environ["SUBCLONE_VIZ_CACHE"] = tempfile.mkdtemp(prefix="subclone_viz-test-cache-")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share_the_cores(workers)


def share_the_cores(workers: int) -> None:
    """Each xdist worker gets its share of the cores for torch and for the processes it starts (kernels, CLI
    runs, launches), unless OMP_NUM_THREADS was set: threads beyond the cores only wait on each other."""
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


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
