"""The built wheel installs and runs: ``python -m build --wheel`` on a copy of the sources, installed with
``pip install --no-deps`` into a fresh virtualenv, then ``subclone-viz --version`` and ``import subclone_viz``
from outside the source tree.

The fresh virtualenv sees this interpreter's site-packages through a ``.pth`` line placed after its own, so
torch and the other dependencies need not be installed again, while the wheel's copy of the package (in the
virtualenv's own site-packages, first on the path) is the one imported: the test checks where it came from.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import subclone_viz

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from: the package and the files pyproject.toml names.
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "subclone_viz"]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tmp_path: Path) -> Path:
    """Build from a clean copy, so no build/ or egg-info lands in the working tree."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    # --no-isolation: build with this environment's setuptools (the test extra) instead of downloading one
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist")], source)
    wheels = list((tmp_path / "dist").glob("subclone_viz-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def fresh_venv(where: Path) -> Path:
    """A virtualenv whose own site-packages come first and this interpreter's after them."""
    run([sys.executable, "-m", "venv", "--system-site-packages", str(where)], where.parent)
    python = where / "bin" / "python"
    own = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], where).strip())
    outer = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (own / "zz_outer_site_packages.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(outer)))
    return python


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_virtualenv_and_runs(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "subclone_viz/py.typed" in names
    assert "subclone_viz/cli.py" in names and "subclone_viz/families/llama.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE") for name in names)

    python = fresh_venv(tmp_path / "venv")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], tmp_path)

    outside = tmp_path / "elsewhere"  # not the source tree, not on PYTHONPATH
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    version = run([str(tmp_path / "venv" / "bin" / "subclone-viz"), "--version"], outside, env)
    assert version == f"subclone-viz {subclone_viz.__version__}\n"
    where = run([str(python), "-c", "import subclone_viz; print(subclone_viz.__file__)"], outside, env).strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), f"imported {where}, not the installed wheel"
