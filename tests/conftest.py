import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


# Fixtures a module's tests may share across workers at no cost: each worker runs them for itself.
PER_WORKER_FIXTURES = {"one_torch_thread"}


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, a test that uses a module- or class-scoped fixture (a dry run, a trained
    model) goes to its module's group, so that fixture is built once, on one worker; other tests spread one
    by one (each notebook, each docs build). Runs before xdist reads the groups."""
    if getattr(config.option, "dist", "no") != "loadgroup":
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None and shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def shares_a_module_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` uses a fixture built once for several tests of its module or class."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True  # not a plain test function: keep it with its module
    return any(
        definitions[-1].scope in ("module", "class", "package")
        for name, definitions in info.name2fixturedefs.items()
        if definitions and name not in PER_WORKER_FIXTURES
    )


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
