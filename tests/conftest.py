import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    """Tests never write to the home cache. Set before any fixture runs, session-scoped ones included, so the
    embedded parents are converted once per test session into a temporary cache."""
    if "SUBCLONE_VIZ_CACHE" not in os.environ:
        os.environ["SUBCLONE_VIZ_CACHE"] = tempfile.mkdtemp(prefix="subclone_viz-test-cache-")
