"""Keep the project's setup files in agreement.

* environment.yml (conda users) lists the same pip packages, with the same
  version constraints, as pyproject.toml's [project] dependencies plus the
  ``widgets`` and ``test`` extras.
* README's test command, the Makefile's ``test`` target and ``.ci/run`` agree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXTRAS_IN_ENV = ("widgets", "test")
README_TEST_COMMAND = "make test"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def _environment() -> dict:
    with open(ROOT / "environment.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _key(req: Requirement) -> tuple:
    """Comparable form: sorted extras, specifier set, marker."""
    return (
        tuple(sorted(canonicalize_name(e) for e in req.extras)),
        SpecifierSet(str(req.specifier)),
        str(req.marker) if req.marker else "",
    )


def _index(lines, source: str) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name!r} listed twice in {source}"
        out[name] = (_key(req), line)
    return out


def _env_pip_lines(env: dict) -> list[str]:
    pip_sections = [d["pip"] for d in env.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    # Lines starting with '-' are pip options (e.g. `-e .`), not packages.
    return [str(s).strip() for s in pip_sections[0] if not str(s).strip().startswith("-")]


def _env_conda_specs(env: dict) -> dict[str, str]:
    """Conda (non-pip) entries: name -> version spec, e.g. {"python": "=3.11", "pip": ""}."""
    specs = {}
    for d in env.get("dependencies", []):
        if isinstance(d, str):
            m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", d.strip())
            specs[m.group(1)] = m.group(2).strip()
    return specs


def _fenced_commands(markdown: str) -> list[str]:
    """Every non-empty, non-comment line inside fenced code blocks."""
    cmds, inside = [], False
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith("```") or line.startswith("~~~"):
            inside = not inside
            continue
        if inside and line and not line.startswith("#"):
            cmds.append(re.sub(r"^\$\s+", "", line))
    return cmds


def _make_target(makefile: str, target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile rule."""
    lines = makefile.splitlines()
    for i, line in enumerate(lines):
        m = re.match(rf"^{re.escape(target)}\s*:(?!=)(.*)$", line)
        if m:
            prereqs = m.group(1).split(";")[0].split()
            recipe = []
            for nxt in lines[i + 1 :]:
                if nxt.startswith("\t"):
                    recipe.append(nxt.strip())
                elif nxt.strip() == "" or nxt.lstrip().startswith("#"):
                    if recipe:
                        break
                else:
                    break
            return prereqs, recipe
    raise AssertionError(f"Makefile has no `{target}:` rule")


# --------------------------------------------------------------------------
# environment.yml <-> pyproject.toml
# --------------------------------------------------------------------------
def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS_IN_ENV:
        wanted += project["optional-dependencies"][extra]

    py = _index(wanted, "pyproject.toml")
    env = _index(_env_pip_lines(_environment()), "environment.yml")

    problems = []
    for name in sorted(py.keys() - env.keys()):
        problems.append(f"  missing from environment.yml:   {py[name][1]}")
    for name in sorted(env.keys() - py.keys()):
        problems.append(f"  extra in environment.yml:       {env[name][1]}")
    for name in sorted(py.keys() & env.keys()):
        if py[name][0] != env[name][0]:
            problems.append(f"  differs: pyproject.toml has {py[name][1]!r}, environment.yml has {env[name][1]!r}")
    extras = "+".join(EXTRAS_IN_ENV)
    assert not problems, f"environment.yml pip section != pyproject.toml dependencies + extras {extras}:\n" + "\n".join(
        problems
    )


def test_environment_yml_python_satisfies_requires_python():
    specs = _env_conda_specs(_environment())
    assert "python" in specs and "pip" in specs, "environment.yml must list python and pip"
    version = specs["python"].lstrip("=").strip()
    assert version, "pin a python version in environment.yml (e.g. python=3.11)"
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert Version(version) in requires, f"environment.yml python={version} does not satisfy requires-python {requires}"


# --------------------------------------------------------------------------
# README <-> Makefile <-> .ci/run
# --------------------------------------------------------------------------
def test_readme_test_command_is_what_ci_and_makefile_run():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _fenced_commands(readme)
    assert README_TEST_COMMAND in commands, (
        f"README.md must show the test command `{README_TEST_COMMAND}` in a fenced code block; "
        f"fenced commands found: {commands}"
    )

    ci = ROOT / ".ci" / "run"
    assert ci.is_file(), ".ci/run is missing"
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    ci_lines = [
        ln.strip()
        for ln in ci.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    assert "set -euo pipefail" in ci_lines, ".ci/run must `set -euo pipefail`"
    assert ci_lines[-1] == README_TEST_COMMAND, (
        f".ci/run must end by running the README's test command `{README_TEST_COMMAND}`, "
        f"but its last command is `{ci_lines[-1]}`"
    )

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    prereqs, recipe = _make_target(makefile, "test")
    assert ".venv" in prereqs, f"`make test` must depend on .venv (prerequisites: {prereqs})"
    assert "browser-deps" in prereqs, f"`make test` must depend on browser-deps (prerequisites: {prereqs})"
    pytest_lines = [ln for ln in recipe if "pytest" in ln]
    assert pytest_lines, f"`make test` recipe runs no pytest: {recipe}"
    for ln in pytest_lines:
        # The README promises the whole suite: no path narrowing, no -k/-m filters.
        args = ln.split("pytest", 1)[1].split()
        narrowing = [a for a in args if a.startswith("tests") or a in ("-k", "-m")]
        assert not narrowing, f"`make test` must run the whole suite, but has {narrowing} in `{ln}`"

    testpaths = _pyproject()["tool"]["pytest"]["ini_options"]["testpaths"]
    assert "tests" in testpaths, f"pytest testpaths should be the whole tests/ tree, got {testpaths}"
