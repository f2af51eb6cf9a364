import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write to the home cache; the embedded parents' converted weights are shared per session."""
    if "SUBCLONE_VIZ_CACHE" not in os.environ:
        monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
