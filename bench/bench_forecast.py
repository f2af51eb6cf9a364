"""Loss forecasts against runs they did not see: fit on the first quarter of each run, predict its end.

Two sets of runs, each scored the same way:

* **published**: 28 record runs of modded-nanogpt (GPT-2-style models, 1,875 to 20,344 steps, trapezoidal
  schedule), from ``bench/data/modded_nanogpt_*.csv`` (see ``bench/data/README.md``), each read through
  ``LearningCurve.from_csv`` with its named schedule;
* **own**: SmolLM2-135M destinations (4 x 192 to 16 x 384), subclone and random init, trained on this machine
  by ``bench/_forecast_runs.py`` (one History JSON per run, resumable; ``--own DIR`` scores whatever runs are
  there: on the shared 2-core CPU, seed 0 of the sizes up to 12 x 336 (and 16 x 384's subclone) was what fit).

Every run is forecast from the evaluations in its first quarter (4x extrapolation) with a
``ForecastPrior`` fitted on the *other* fold of a 2-fold split (published runs alternate between folds in file order; own runs
split by seed when every size has both seeds, else by size, alternating), so no scored run calibrates its
own prior. Reported per set: mean absolute and mean signed error (nats), how often the 80%
interval holds the final loss, and over the candidates (the published runs; own sizes x inits within a seed)
the Spearman correlation, the share of pairs in the right order and the top-1 regret, for the forecast and
for the loss before training (the baseline the chooser replaces).

    OMP_NUM_THREADS=1 .venv/bin/python bench/_forecast_runs.py --out runs/forecast_smollm2 --steps 96 \\
        --eval-every 4 --seq-len 32
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_forecast.py --own runs/forecast_smollm2

``--study A/study.json B/study.json`` scores the runs of saved speedup studies as one more set (every size,
init, learning rate and seed; each size forecast with a prior fitted on the other sizes' runs).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._results import save_results
from subclone_viz.forecast import MIN_POINTS, ForecastPrior, LearningCurve, forecast
from subclone_viz.study import SpeedupStudy
from subclone_viz.train import History

DATA = Path(__file__).parent / "data"
FRACTION = 0.25


def published_curves() -> list[LearningCurve]:
    """The modded-nanogpt runs, each through LearningCurve.from_csv with its trapezoidal schedule."""
    with open(DATA / "modded_nanogpt_runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    curves = []
    for run in runs:
        total, warmup, warmdown = int(run["total_steps"]), int(run["warmup"]), int(run["warmdown"])
        curves.append(
            LearningCurve.from_csv(
                DATA / "modded_nanogpt_val_loss.csv",
                where={"run": run["run"]},
                schedule="wsd",
                total_steps=total,
                warmup=warmup,
                decay_fraction=warmdown / (total - warmup),
                label=run["run"],
            )
        )
    return curves


def own_curves(directory: Path) -> list[LearningCurve]:
    """The SmolLM2 runs written by bench/_forecast_runs.py, labelled 'LxH-init-seedN'."""
    return [replace(History.load(path).curve(), label=path.stem) for path in sorted(directory.glob("*.json"))]


def study_curves(paths: Sequence[Path]) -> list[LearningCurve]:
    """Every run of saved speedup studies (each size, init, learning rate and seed), labelled
    'LxH-init@lr-seedN' like the own runs."""
    curves = []
    for path in paths:
        study = SpeedupStudy.load(path)
        for size in study.sizes:
            for record in size.get("seeds") or [dict(size, seed=study.config.get("seed"))]:
                for init, runs in record["runs"].items():
                    for lr, run in runs.items():
                        label = f"{size['label'].replace(' x ', 'x')}-{init}@{lr}-seed{record['seed']}"
                        curves.append(replace(History.from_dict(run).curve(), label=label))
    return curves


def _cut(curve: LearningCurve) -> int:
    """The last evaluation in the first quarter, or the 4th after step 0 where the quarter holds fewer."""
    steps = [s for s in curve.steps if s > 0]
    inside = [s for s in steps if s <= FRACTION * curve.total_steps]
    return max(inside[-1] if inside else 0, steps[MIN_POINTS - 1])


def score(curves: Sequence[LearningCurve], folds: Sequence[int]) -> list[dict]:
    """Each run forecast from its first quarter with a prior fitted on the runs of the other folds."""
    rows = []
    for fold in sorted(set(folds)):
        calibration = [c for c, f in zip(curves, folds) if f != fold]
        prior = ForecastPrior.fit(calibration, fit_fraction=FRACTION, source=f"fold {fold} held out")
        for curve, f in zip(curves, folds):
            if f != fold:
                continue
            result = forecast(curve.head(_cut(curve)), steps=curve.steps[-1], prior=prior)
            rows.append(
                {
                    "run": curve.label,
                    "fold": fold,
                    "fitted_until": result.fitted_until,
                    "horizon": result.horizon,
                    "initial": curve.initial_loss,
                    "final": curve.losses[-1],
                    "forecast": result.loss,
                    "low": result.low,
                    "high": result.high,
                    "prior_C": prior.C,
                    "prior_decay": prior.decay,
                    "prior_scale": prior.scale,
                    "alpha": result.params["alpha"],
                }
            )
    return rows


def _ranks(values: Sequence[float]) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return ranks


def ranking(predicted: Sequence[float], final: Sequence[float]) -> dict:
    """Spearman correlation, share of pairs in the right order, and the top-1 regret (nats)."""
    spearman = float(np.corrcoef(_ranks(predicted), _ranks(final))[0, 1])
    pairs = list(itertools.combinations(range(len(final)), 2))
    right = sum((predicted[i] - predicted[j]) * (final[i] - final[j]) > 0 for i, j in pairs)
    regret = float(final[int(np.argmin(predicted))] - min(final))
    return {
        "spearman": round(spearman, 3),
        "pairs_in_order": round(right / len(pairs), 3),
        "top1_regret": round(regret, 4),
        "candidates": len(final),
    }


def summary(rows: list[dict], groups: dict[str, list[int]]) -> dict:
    """Errors and coverage over every run; ranking figures within each group of candidates, averaged."""
    errors = np.array([r["forecast"] - r["final"] for r in rows])
    inside = [r["low"] <= r["final"] <= r["high"] for r in rows]
    out = {
        "runs": len(rows),
        "mae": round(float(np.abs(errors).mean()), 4),
        "mean_signed_error": round(float(errors.mean()), 4),
        "max_abs_error": round(float(np.abs(errors).max()), 4),
        "coverage": round(float(np.mean(inside)), 3),
        "nominal": 0.8,
        "mean_interval_width": round(float(np.mean([r["high"] - r["low"] for r in rows])), 4),
    }
    for name, key in (("forecast", "forecast"), ("initial_loss", "initial")):
        per_group = {
            g: ranking([rows[i][key] for i in idx], [rows[i]["final"] for i in idx]) for g, idx in groups.items()
        }
        out[f"ranking_{name}"] = {
            "per_group": per_group,
            **{
                k: round(float(np.mean([v[k] for v in per_group.values()])), 4)
                for k in ("spearman", "pairs_in_order", "top1_regret")
            },
        }
    return out


def slider_seconds(curves: Sequence[LearningCurve], repeats: int = 5) -> list[float]:
    """Seconds per move of notebook 4's budget slider (BudgetExplorer.show: re-forecast every cell from its pilot
    and redraw), over a BudgetGrid whose pilots are the first quarters of ``curves`` (SmolLM2 runs)."""
    from subclone_viz.budget import BudgetGrid
    from subclone_viz.forecast import DEFAULT_PRIOR
    from subclone_viz.widgets import BudgetExplorer

    cells = []
    for curve in curves:
        head = curve.head(_cut(curve))
        size, init, _ = curve.label.split("-")
        layers, hidden = (int(v) for v in size.split("x"))
        cells.append(
            {
                "layers": layers,
                "hidden": hidden,
                "init": init,
                "params": curve.parameters,
                "flops_per_token": float("nan"),
                "latency": float("nan"),
                "memory": float("nan"),
                "steps": curve.total_steps,
                "pilot_steps": head.steps[-1],
                "pilot": {"steps": list(head.steps), "losses": list(head.losses)},
                "forecast": {},
            }
        )
    tokens = curves[0].total_steps * curves[0].tokens_per_step
    grid = BudgetGrid(
        parent="smollm2-135m",
        tokens=tokens,
        flops=None,
        tokens_per_step=int(curves[0].tokens_per_step),
        settings={"schedule": "cosine", "final_lr_ratio": 0.1},
        lrs={"subclone": 1e-3, "random": 3e-3},
        prior=DEFAULT_PRIOR.to_dict(),
        cells=cells,
    ).at(tokens=tokens)
    explorer = BudgetExplorer(grid)
    seconds = []
    for k in range(repeats):
        began = time.perf_counter()
        explorer.show(tokens * (1.5 + k), "params")
        seconds.append(time.perf_counter() - began)
    return seconds


def headline(name: str, s: dict) -> str:
    f, b = s["ranking_forecast"], s["ranking_initial_loss"]
    return (
        f"{name}: {s['runs']} runs forecast from their first quarter, MAE {s['mae']:.3f} nats, mean signed "
        f"error {s['mean_signed_error']:+.3f}, 80% intervals hold {s['coverage']:.0%}; ranking: Spearman "
        f"{f['spearman']:.2f} (loss before training {b['spearman']:.2f}), pairs in order "
        f"{f['pairs_in_order']:.0%} ({b['pairs_in_order']:.0%}), top-1 regret {f['top1_regret']:.3f} nats "
        f"({b['top1_regret']:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--own", type=Path, help="the directory bench/_forecast_runs.py wrote")
    parser.add_argument(
        "--study",
        type=Path,
        nargs="+",
        help="saved speedup studies (study.json) whose runs are scored as a further set of own runs",
    )
    parser.add_argument("--out", default="forecast/forecast.json")
    args = parser.parse_args()
    figures, lines = {"fit_fraction": FRACTION}, []
    published = published_curves()
    rows = score(published, [i % 2 for i in range(len(published))])
    figures["published"] = {
        "source": "bench/data/modded_nanogpt_*.csv (KellerJordan/modded-nanogpt, MIT)",
        "summary": summary(rows, {"all": list(range(len(rows)))}),
        "runs": rows,
    }
    lines.append(headline("modded-nanogpt", figures["published"]["summary"]))
    full = ForecastPrior.fit(
        published,
        FRACTION,
        source="ForecastPrior.fit on the 28 modded-nanogpt runs of bench/data (bench/bench_forecast.py)",
    )
    figures["published"]["prior_all_runs"] = full.to_dict()
    if args.own is not None:
        own = own_curves(args.own)
        seeds = [int(c.label.rsplit("seed", 1)[1]) for c in own]
        sizes = [c.label.split("-")[0] for c in own]
        both = all(seeds.count(s) == seeds.count(seeds[0]) for s in set(seeds)) and len(set(seeds)) > 1
        # Folds by seed when every size has both (no run calibrates its twin); else by size, alternating.
        order = sorted(set(sizes), key=lambda label: [int(v) for v in label.split("x")])
        rows = score(own, seeds if both else [order.index(size) % 2 for size in sizes])
        groups = {f"seed {s}": [i for i, r in enumerate(rows) if r["run"].endswith(f"seed{s}")] for s in set(seeds)}
        figures["own"] = {
            "source": str(args.own),
            "folds": "by seed" if both else "by size, alternating",
            "config": History.load(next(args.own.glob("*.json"))).config,
            "summary": summary(rows, groups),
            "runs": rows,
        }
        lines.append(headline("SmolLM2 destinations", figures["own"]["summary"]))
        seconds = slider_seconds(own)
        figures["budget_slider_seconds"] = {
            "cells": len(own),
            "each": [round(v, 4) for v in seconds],
            "median": round(float(np.median(seconds)), 4),
            "target": 0.1,
        }
        lines.append(
            f"notebook 4's budget slider: {np.median(seconds) * 1e3:.0f} ms median, "
            f"{max(seconds) * 1e3:.0f} ms at most, to re-forecast {len(own)} cells and redraw (target 100)"
        )
        figures["own"]["prior_all_runs"] = ForecastPrior.fit(
            own,
            FRACTION,
            source=f"ForecastPrior.fit on {len(own)} SmolLM2-135M destination runs (bench/bench_forecast.py)",
        ).to_dict()
    if args.study:
        runs = study_curves(args.study)
        sizes = [c.label.split("-")[0] for c in runs]
        order = sorted(set(sizes), key=lambda label: [int(v) for v in label.split("x")])
        rows = score(runs, [order.index(size) % 2 for size in sizes])  # each size's prior from the other sizes
        seeds = sorted({c.label.rsplit("seed", 1)[1] for c in runs})
        groups = {f"seed {s}": [i for i, r in enumerate(rows) if r["run"].endswith(f"seed{s}")] for s in seeds}
        figures["study"] = {
            "source": [str(path) for path in args.study],
            "folds": "by size, alternating",
            "summary": summary(rows, groups),
            "runs": rows,
        }
        lines.append(headline("speedup-study runs", figures["study"]["summary"]))
    for line in lines:
        print(line)
    print(save_results(args.out, figures, lines))


if __name__ == "__main__":
    main()
