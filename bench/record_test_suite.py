"""Record a whole-suite run's timing (``make test`` on a fresh clone) as a figure file under
``bench/results/test_suite/``.

The suite itself is the benchmark: run it once in a fresh clone with a JUnit XML report and the load average
sampled beside it, then hand the three outputs to this script, which writes the wall time, pytest's own time,
the sum of the tests' durations (setup and teardown included) and its ratio to pytest's time (how much two
workers overlapped), the load average during the run, and the slowest files and tests, through
``bench/_results.save_results``. It is not a ``bench_*.py`` script: ``make bench`` does not rerun the suite.
How the run was made::

    git clone REPO fresh && cd fresh
    CI=true PYTEST_ADDOPTS="--durations=0 --junitxml=/tmp/junit.xml" bash .ci/run > /tmp/run.log  # + EXIT/WALL
    python bench/record_test_suite.py --junit /tmp/junit.xml --log /tmp/run.log --load /tmp/load.log

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> junit = Path(tempfile.mkdtemp()) / "junit.xml"
    >>> _ = junit.write_text('<testsuites><testsuite><testcase classname="tests.unit.test_a" name="test_x" '
    ...     'time="2.5"/><testcase classname="tests.unit.test_a" name="test_y" time="0.5"><skipped/></testcase>'
    ...     '</testsuite></testsuites>')
    >>> cases = read_junit(junit)
    >>> [(case.file, case.outcome, case.seconds) for case in cases]
    [('tests/unit/test_a.py', 'passed', 2.5), ('tests/unit/test_a.py', 'skipped', 0.5)]
    >>> pytest_seconds("==== 2 passed in 12.34s ====")
    12.34
    >>> pytest_seconds("1473 passed in 1068.21s (0:17:48)")
    1068.21
    >>> wall_seconds("EXIT 0 WALL 95s")
    (0, 95)
    >>> load_summary("11:00:00 9.50 8.00 7.00\\n11:00:30 10.50 8.50 7.10\\n")
    {'samples': 2, 'mean_1min': 10.0, 'max_1min': 10.5}
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import save_results  # noqa: E402

COMMAND = (
    "git clone <repo> fresh && cd fresh && "
    'CI=true PYTEST_ADDOPTS="--durations=0 --junitxml=junit.xml" bash .ci/run  # make test: pytest -n 2 --dist loadfile'
)


class RunLogError(ValueError):
    """An input file that is not what a suite run writes: names the file and what is missing."""


@dataclass(frozen=True)
class Case:
    """One test's outcome and seconds (setup, call and teardown) from the JUnit report."""

    file: str
    name: str
    outcome: str
    seconds: float


def read_junit(path: Path) -> list[Case]:
    """Every test case of a pytest JUnit XML report."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise RunLogError(f"{path}: not a readable JUnit XML report ({error})") from error
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for child, label in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if case.find(child) is not None:
                outcome = label
        file = case.get("classname", "").replace(".", "/")
        # A class's tests are named module.Class: keep the module's path.
        parts = file.split("/")
        while parts and parts[-1][:1].isupper():
            parts.pop()
        cases.append(Case("/".join(parts) + ".py", case.get("name", ""), outcome, float(case.get("time", 0))))
    if not cases:
        raise RunLogError(f"{path}: holds no test cases")
    return cases


def pytest_seconds(log: str) -> float:
    """pytest's own wall time, from its last summary line (``... in 123.45s ...``)."""
    # -q prints the summary bare ("12 passed in 3.4s"); without it, between rules of "=".
    found = re.findall(r"^(?:=+ )?\d+ (?:passed|failed|errors?|skipped)\b.* in ([0-9.]+)s\b", log, re.M)
    if not found:
        raise RunLogError("the log has no pytest summary line ('N passed ... in Xs')")
    return float(found[-1])


def wall_seconds(log: str) -> tuple[int, int]:
    """The exit status and wall seconds of the whole run, from the ``EXIT rc WALL Ns`` line its wrapper printed."""
    found = re.findall(r"EXIT (\d+) WALL (\d+)s", log)
    if not found:
        raise RunLogError("the log has no 'EXIT rc WALL Ns' line")
    status, seconds = found[-1]
    return int(status), int(seconds)


def load_summary(text: str) -> dict[str, Any]:
    """Mean and peak one-minute load average of ``HH:MM:SS one five fifteen`` samples."""
    ones = [float(line.split()[1]) for line in text.splitlines() if len(line.split()) >= 4]
    if not ones:
        return {"samples": 0}
    return {"samples": len(ones), "mean_1min": round(sum(ones) / len(ones), 2), "max_1min": max(ones)}


def tables(cases: list[Case], top: int) -> list[dict[str, Any]]:
    """The slowest files and the slowest tests."""
    by_file: dict[str, list[Case]] = collections.defaultdict(list)
    for case in cases:
        by_file[case.file].append(case)
    files = sorted(by_file.items(), key=lambda item: -sum(c.seconds for c in item[1]))[:top]
    slow = sorted(cases, key=lambda c: -c.seconds)[:top]
    return [
        {
            "title": "Slowest test files (seconds summed over their tests)",
            "columns": ["file", "tests", "seconds"],
            "rows": [[name, len(group), round(sum(c.seconds for c in group), 1)] for name, group in files],
        },
        {
            "title": "Slowest tests",
            "columns": ["test", "outcome", "seconds"],
            "rows": [[f"{c.file}::{c.name}", c.outcome, round(c.seconds, 1)] for c in slow],
        },
    ]


def figures(cases: list[Case], log: str, load: str, top: int) -> tuple[dict[str, Any], list[str]]:
    """The figure file's fields and its headline."""
    status, wall = wall_seconds(log)
    in_pytest = pytest_seconds(log)
    outcomes = collections.Counter(case.outcome for case in cases)
    total = sum(case.seconds for case in cases)
    loads = load_summary(load)
    document = {
        "title": "The whole test suite on a fresh clone, two pytest-xdist workers",
        "exit_status": status,
        "wall_s": wall,
        "pytest_s": in_pytest,
        "outcomes": dict(outcomes),
        "sum_of_test_seconds": round(total, 1),
        "overlap": round(total / in_pytest, 2),
        "load_average_during_run": loads,
        "tables": tables(cases, top),
    }
    counts = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.most_common())
    headline = [
        f"`make test` (pytest -n 2 --dist loadfile) on a fresh clone: {counts} in {wall // 60} min {wall % 60} s "
        f"wall, .venv creation and lint included (pytest's own {in_pytest:.0f} s); exit status {status}.",
        f"The tests' durations sum to {total:.0f} s, {total / in_pytest:.2f}x pytest's wall time: the two workers "
        f"overlap; the machine's one-minute load average averaged {loads.get('mean_1min')} on 2 cores during the "
        "run (other jobs).",
    ]
    return document, headline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, required=True, help="pytest's --junitxml report")
    parser.add_argument("--log", type=Path, required=True, help="the run's output, ending with 'EXIT rc WALL Ns'")
    parser.add_argument("--load", type=Path, required=True, help="load-average samples, 'HH:MM:SS 1 5 15' lines")
    parser.add_argument("--top", type=int, default=25, help="rows of the slowest-files and slowest-tests tables")
    parser.add_argument("--out", default="test_suite/make_test_xdist.json", help="under bench/results/")
    parser.add_argument("--note", action="append", default=[], help="a sentence for the notes (repeatable)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top {args.top}: must be at least 1")
    for path in (args.log, args.load):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    try:
        document, headline = figures(read_junit(args.junit), args.log.read_text(), args.load.read_text(), args.top)
    except RunLogError as error:
        parser.error(str(error) if str(args.junit) in str(error) else f"{args.log}: {error}")
    document["notes"] = args.note
    print(f"wrote {save_results(args.out, document, headline=headline, command=COMMAND)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
