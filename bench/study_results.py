"""The provenance sidecar of a saved speedup study: ``study.meta.json`` beside ``study.json``, for the results page.

A :class:`~subclone_viz.study.SpeedupStudy` is a validated record, so its command, machine and headline live in
a sidecar. This writes it from the study itself, so that no figure in it is typed by hand: the headline (each
size's speedups with their range over seeds), the table, and the beyond-budget forecasts
(:meth:`~subclone_viz.study.SpeedupStudy.beyond_budget`).

    python bench/study_results.py bench/results/speedup_study_300k --title "..." \\
        --command "the commands that trained and merged the study" --machine-note "what the machine was doing"
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._results import machine
from subclone_viz._atomic import write_file
from subclone_viz.compare import speedup_text
from subclone_viz.study import SpeedupStudy


def table(study: SpeedupStudy) -> dict:
    """The study's table as the results page shows it."""
    steps = study.config.get("steps")
    rows = [
        [
            row["destination"],
            f"{row['parameters'] / 1e6:.1f}M",
            f"{row['init']} ({row['best_lr']:g})",
            row["seeds"],
            f"{row['initial_loss']:.2f}",
            f"{row['final_loss']:.3f}",
            speedup_text(row),
            speedup_text(row, "speedup_per_second"),
        ]
        for row in study.table()
    ]
    columns = ["destination", "parameters", "init (best lr)", "seeds", "held-out loss at 0", f"after {steps} steps"]
    return {"columns": [*columns, "speedup per step", "per second of training"], "rows": rows}


def headline(study: SpeedupStudy) -> list[str]:
    """One sentence for the budget, one per size's subclone, one per beyond-budget forecast."""
    config = study.config
    lines = [
        f"Every run: {config.get('steps')} steps, {config.get('tokens_per_run', 0):,} training tokens, on "
        f"{config.get('data')}; held-out loss every {config.get('eval_every')} steps on {config.get('heldout')}; "
        f"random init's rates {config.get('random_lrs')}, the subclone's {config.get('subclone_lrs')}, each keeping "
        f"its best."
    ]
    for row in study.table():
        if row["init"] == "random":
            continue
        lines.append(
            f"{row['destination']} {row['init']}: held-out {row['initial_loss']:.2f} -> {row['final_loss']:.3f} "
            f"nats ({row['seeds']} seed(s)); reaches random init's final loss {speedup_text(row)} sooner per step, "
            f"{speedup_text(row, 'speedup_per_second')} per second."
        )
    for row in study.beyond_budget():
        seed = "" if row["seed"] is None else f", seed {row['seed']}"
        lines.append(f"{row['destination']}{seed}, {row['init']}'s final loss: {row['text']}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="the folder holding study.json and speedup_by_size.png")
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", required=True, help="the commands that trained and merged the study")
    parser.add_argument("--machine-note", default="", help="what else the machine was doing")
    parser.add_argument("--note", action="append", default=[], help="a note for the results page (repeatable)")
    args = parser.parse_args()
    study = SpeedupStudy.load(args.directory / "study.json")
    document = {
        "title": args.title,
        "command": args.command,
        "machine": {**machine(), "note": args.machine_note},
        "date": _dt.date.today().isoformat(),
        "headline": headline(study),
        "tables": [table(study)],
        "images": sorted(path.name for path in args.directory.glob("*.png")),
        "notes": args.note,
    }
    print(write_file(args.directory / "study.meta.json", json.dumps(document, indent=1) + "\n", overwrite=True))
    print("\n".join(document["headline"]))


if __name__ == "__main__":
    main()
