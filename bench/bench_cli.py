"""How fast the command line answers: ``--help`` of the program and of every subcommand, and two mistakes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_cli.py [--repeats 7] [--failures] [--baseline DIR]

Each figure is the wall time of a fresh ``python -m subclone_viz ...`` process, as a person typing the command
waits for it, timed ``--repeats`` times (median and max): ``--help``, then ``COMMAND --help`` for every
subcommand the parser knows, and ``python -c "import subclone_viz"``. Whether that import pulled in torch is
recorded too. Target: every help within 1 s.

``--failures`` also times two mistakes that should fail before any work (``--mistake NAME`` picks one): a
destination that cannot fit (``subclone --layers 7 --hidden 1000``: checked against the parent's config.json
without importing torch, :mod:`subclone_viz.parent_config`) and a misspelt parent (``info --parent
smolm2-135m``: "did you mean", no hub retries; it still imports torch, so on a busy machine its time is mostly
that import).

``--baseline DIR`` times the same commands on another checkout of the package (e.g. ``git archive main | tar
-x -C /tmp/base``) in the same run, alternating the two, so that their ratio is measured side by side. Figures
go to ``bench/results/cli/cli_times.json``.

``--cut-stage`` instead times what ``report`` (``make demo``) now adds by default: the "what the cut loses"
records (the destination subcloned again, the logit lens of parent and destination and their layer similarity,
on one held-out row, the similarity on one batch), on the embedded SmolLM2 with the report's default destination planned from the shipped
profile, median of ``--repeats`` in one process; figures go to ``bench/results/cli/report_cut_stage.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import save_results  # noqa: E402
from subclone_viz.cli import build_parser, subcommand_parsers  # noqa: E402

TARGET_SECONDS = 1.0
MISTAKES = {
    "spec that cannot fit": ["subclone", "--layers", "7", "--hidden", "1000", "--out", "{tmp}/never-written"],
    "misspelt parent": ["info", "--parent", "smolm2-135m"],
}
IMPORTS_TORCH = "import subclone_viz, sys; print('torch' in sys.modules)"


def subcommands() -> list[str]:
    """Every subcommand the parser knows, in its order."""
    return list(subcommand_parsers(build_parser()))


def timed(root: Path, argv: list[str]) -> tuple[float, int, str]:
    """Seconds a fresh interpreter takes to run ``argv`` with the package of ``root``, its exit status, and the
    last line it wrote to stderr."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    return seconds, done.returncode, lines[-1] if lines else ""


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "times_s": [round(t, 3) for t in times],
    }


def measure(roots: dict[str, Path], cases: dict[str, list[str]], repeats: int) -> dict[str, dict[str, Any]]:
    """Every case on every checkout, ``repeats`` times, alternating checkouts so that load drifts hit both."""
    results: dict[str, dict[str, Any]] = {name: {} for name in roots}
    for case, argv in cases.items():
        times: dict[str, list[float]] = {name: [] for name in roots}
        for _ in range(repeats):
            for name, root in roots.items():
                seconds, code, last = timed(root, argv)
                times[name].append(seconds)
                results[name][case] = {"exit_status": code, "stderr_last_line": last}
        for name in roots:
            results[name][case].update(summary(times[name]))
            print(
                f"{name:>9} {case:<32} median {results[name][case]['median_s']:6.2f} s  "
                f"max {results[name][case]['max_s']:6.2f} s  exit {results[name][case]['exit_status']}"
            )
    return results


def help_cases() -> dict[str, list[str]]:
    cases = {"--help": ["-m", "subclone_viz", "--help"]}
    cases.update({f"{command} --help": ["-m", "subclone_viz", command, "--help"] for command in subcommands()})
    cases["import subclone_viz"] = ["-c", "import subclone_viz"]
    return cases


def imports_torch(root: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_TORCH], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


def headline(results: dict[str, dict[str, Any]], help_names: list[str]) -> list[str]:
    here = results["this"]
    slowest = max(help_names, key=lambda case: here[case]["max_s"])
    lines = [
        f"Slowest help: `{slowest}`, median {here[slowest]['median_s']:.2f} s, max {here[slowest]['max_s']:.2f} s "
        f"(target {TARGET_SECONDS:g} s); `import subclone_viz` median {here['import subclone_viz']['median_s']:.2f} s."
    ]
    if "baseline" in results:
        base = results["baseline"]
        lines.append(
            f"`subclone-viz --help` median {here['--help']['median_s']:.2f} s against "
            f"{base['--help']['median_s']:.2f} s before, measured side by side."
        )
        for case in MISTAKES:
            if case in here and case in base:
                lines.append(
                    f"{case}: fails in {here[case]['median_s']:.1f} s against {base[case]['median_s']:.1f} s "
                    f"before (exit {here[case]['exit_status']})."
                )
    return lines


def time_cut_stage(repeats: int) -> dict[str, Any]:
    """Seconds of the report's cut section on SmolLM2 (parent loaded once, outside the timing)."""
    import types

    from subclone_viz.cli_commands import _cut_records
    from subclone_viz.parent import load_parent
    from subclone_viz.plan import plan
    from subclone_viz.workflow import default_destination, parent_figures

    parent = load_parent("smollm2-135m", device="cpu")
    records = types.SimpleNamespace(
        plan=plan(parent, parent_figures("smollm2-135m").profile, default_destination(parent))
    )
    records.notes = []
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        cut = _cut_records(parent, records, "builtin", False, lambda line: None)
        times.append(time.perf_counter() - start)
    return {"destination": records.plan.summary(), "records": sorted(cut), **summary(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each help (default 7)")
    parser.add_argument("--failures", action="store_true", help="also time the two mistakes")
    parser.add_argument("--failure-repeats", type=int, default=2, help="runs of each mistake (default 2)")
    parser.add_argument(
        "--mistake",
        action="append",
        choices=list(MISTAKES),
        help="with --failures: time only this mistake (repeatable; default both)",
    )
    parser.add_argument("--baseline", type=Path, help="another checkout of the package, timed alongside")
    parser.add_argument("--out", default="cli/cli_times.json", help="under bench/results/")
    parser.add_argument("--cut-stage", action="store_true", help="time the report's cut section instead")
    args = parser.parse_args()
    if args.cut_stage:
        figures = time_cut_stage(args.repeats)
        line = (
            f"The report's 'what the cut loses' section on SmolLM2 ({figures['destination']}): median "
            f"{figures['median_s']:.1f} s, max {figures['max_s']:.1f} s of {args.repeats} runs."
        )
        print(line)
        save_results("cli/report_cut_stage.json", {"repeats": args.repeats, **figures}, headline=[line])
        return

    roots = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    helps = help_cases()
    results = measure(roots, helps, args.repeats)
    torch_on_import = {name: imports_torch(root) for name, root in roots.items()}
    save(args, helps, results, torch_on_import, failures=False)  # the help figures stand even if the rest stops
    if args.failures:
        scratch = ROOT / "bench" / "results" / "cli"
        mistakes = {
            case: ["-m", "subclone_viz", *(a.replace("{tmp}", str(scratch)) for a in argv)]
            for case, argv in MISTAKES.items()
            if args.mistake is None or case in args.mistake
        }
        for name, figures in measure(roots, mistakes, args.failure_repeats).items():
            results[name].update(figures)
        save(args, helps, results, torch_on_import, failures=True)


def save(
    args: argparse.Namespace,
    helps: dict[str, list[str]],
    results: dict[str, dict[str, Any]],
    torch_on_import: dict[str, bool],
    failures: bool,
) -> None:
    lines = headline(results, [case for case in helps if case.endswith("--help")])
    for line in lines:
        print(line)
    save_results(
        args.out,
        {
            "repeats": args.repeats,
            "failure_repeats": args.failure_repeats if failures else 0,
            "target_s": TARGET_SECONDS,
            "import_subclone_viz_imports_torch": torch_on_import,
            "results": results,
        },
        headline=lines,
    )


if __name__ == "__main__":
    main()
