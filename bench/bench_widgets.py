"""Widget responsiveness on the embedded SmolLM2 parent: the callbacks that only redraw from cached results.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_widgets.py [--repeats 5]

Builds the explorers of notebooks 1, 2 and 4 over a SmolLM2 profile (4,096 held-out tokens, computed once and
then read from the cache directory) and a 3 x 3 size grid (its cells cached on disk by ``size_grid``), then
times each control that only redraws what is already computed, as a person would move it:

* the residual metric menu (``ResidualExplorer.metric``: one figure of 30 blocks);
* the token trace's layer slider (``ResidualExplorer.layer``: the cached trace redrawn with a marker);
* the top-k overlap's k slider (``ImportanceExplorer.k``: a 31 x 31 overlap matrix of 576 channels);
* the consistency toggle (``ImportanceExplorer.kind``: Spearman and top-k overlap in turn, at the last k);
* the FFN neuron block slider (``ImportanceExplorer.ffn_layer``: 1,536 sorted importances);
* a size-grid click (``SizeGridExplorer.select``: the loss map outlined, and the linked studio set to that
  size, re-planned and its residual plot redrawn, as in notebook 4);
* the studio's forecast of the run's end with its band, redrawn when an evaluation arrives, alone and with
  the loss curves beside it (the whole live redraw), from a simulated 2,000-step run
  (:func:`studio_forecast_changes`).

and the newer controls (``--newer``, separate functions below):

* predictions through depth's token menu (``ResidualExplorer.depth.token``: the parent's and a destination's
  lenses already read, one table redrawn);
* CompareOutputs' "colour by" menu (``loss_model``: the held-out text coloured by another model's per-token
  losses, already scored);
* SimilarityView's Measure button (``measure``: not a redraw, it streams one held-out batch through the parent
  and the studio's destination; timed for scale);
* BudgetExplorer's budget slider (``budget``: every size re-forecast from its cached pilot, the Pareto plot
  redrawn), over a 2 x 1 budget grid of short pilots;
* the mixture-of-experts section of ImportanceExplorer (``expert_layer``: one block's experts' neuron curves),
  on a tiny random OLMoE-class parent (tests/tiny.py), since no MoE parent is embedded.

With ``--newer`` the figures go to ``bench/results/widgets/newer_controls.json`` (median and spread, the load).

Each time covers the whole callback in the kernel, the serialization of the messages to the front end included
(ipywidgets serializes a widget's state whether or not a browser is attached); the browser's own drawing is
not included. Target: under 100 ms each (issue 11).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import subclone_viz as sv
from subclone_viz import widgets
from _results import save_results

TARGET_SECONDS = 0.1
PROFILE_TOKENS = 4096
GRID_LAYERS, GRID_HIDDEN = [10, 20, 30], [192, 384, 576]


def cached_profile(parent: sv.Parent) -> sv.Profile:
    """The parent's profile on held-out text, computed once and kept in the cache directory."""
    path = sv.cache_dir() / "bench" / f"widgets-profile-{PROFILE_TOKENS}.npz"
    if path.is_file():
        return sv.Profile.load(path)
    heldout = sv.parent_batches(parent, "heldout", seq_len=256, batch_size=8, tokens=PROFILE_TOKENS)
    prof = sv.profile(parent, heldout, max_tokens=PROFILE_TOKENS, progress=False)
    prof.save(path)
    return prof


def timed(changes: list[Callable[[], object]]) -> list[float]:
    """Seconds each change took, in order."""
    seconds = []
    for change in changes:
        start = time.perf_counter()
        change()
        seconds.append(time.perf_counter() - start)
    return seconds


def setter(control, value) -> Callable[[], None]:
    def change() -> None:
        control.value = value

    return change


def depth_and_outputs_cases(parent: sv.Parent, residual: widgets.ResidualExplorer, repeats: int) -> dict:
    """Predictions through depth's token menu (a destination beside the parent) and CompareOutputs' colour menu."""
    heldout = next(iter(sv.parent_batches(parent, "heldout", seq_len=64, batch_size=1, max_batches=1)))
    prof = residual.profile
    models = {
        f"{layers} x {hidden}": sv.subclone(
            parent, sv.plan(parent, prof, sv.DestinationSpec(layers=layers, hidden=hidden))
        )
        for layers, hidden in ((20, 384), (10, 192))
    }
    depth = residual.depth
    first = next(iter(models.values()))
    depth.show_destination(first)  # the lenses of both models read once, here
    tokens = len(depth.token.options)
    outputs = widgets.CompareOutputs(parent, lambda: models, heldout=heldout)
    outputs.score()  # every model's per-token losses, once
    names = list(outputs.loss_model.options)
    return {
        "predictions through depth: token menu": [setter(depth.token, (3 * n + 1) % tokens) for n in range(repeats)],
        "compare outputs: colour-by menu": [
            setter(outputs.loss_model, names[(n + 1) % len(names)]) for n in range(repeats)
        ],
    }


def similarity_and_budget_cases(parent: sv.Parent, prof: sv.Profile, repeats: int) -> dict:
    """SimilarityView's Measure (after a Subclone) and BudgetExplorer's budget slider over cached pilots."""
    train = sv.parent_batches(parent, "train", seq_len=64, batch_size=2)
    heldout = sv.parent_batches(parent, "heldout", seq_len=64, batch_size=2, max_batches=1)
    studio = widgets.SubcloneStudio(parent, prof, train, heldout, save_dir=tempfile.mkdtemp(prefix="bench-widgets-"))
    studio.layers.value = 15
    studio.subclone()
    assert studio.last_result is not None, studio.last_error  # Measure needs a destination to measure
    similarity = widgets.SimilarityView(studio, max_batches=1)
    budget = sv.budget_grid(parent, prof, [6, 15], [192], train, heldout, tokens=24 * 128, progress=False)
    explorer = widgets.BudgetExplorer(budget)
    low, high = explorer.budget.min, explorer.budget.max
    exponents = [low + (high - low) * ((0.3 + 0.17 * n) % 1) for n in range(repeats)]
    return {
        "similarity: Measure (runs the models)": [similarity.measure for _ in range(repeats)],
        "budget slider (re-forecast)": [setter(explorer.budget, 10**e) for e in exponents],
    }


def expert_cases(repeats: int) -> dict:
    """The MoE expert block slider of ImportanceExplorer, on a tiny random OLMoE-class parent."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import tiny_batches, tiny_model

    parent = sv.load_parent(tiny_model("olmoe"), device="cpu")
    prof = sv.profile(parent, tiny_batches("olmoe"), progress=False)
    explorer = widgets.ImportanceExplorer(prof)
    blocks = list(explorer.expert_layer.options)
    return {
        f"MoE expert block slider ({parent.dims.experts} experts)": [
            setter(explorer.expert_layer, blocks[(n + 1) % len(blocks)]) for n in range(repeats)
        ]
    }


def report(cases: dict, repeats: int) -> list[list]:
    """Time each control's changes and print median, max and the verdict; returns the rows."""
    print(f"\n{repeats} changes per control; milliseconds per callback (target < {TARGET_SECONDS * 1e3:.0f})")
    print(f"{'control':<42}{'median':>8}{'max':>8}  verdict")
    rows = []
    for name, changes in cases.items():
        seconds = timed(changes)
        median = statistics.median(seconds)
        verdict = "ok" if median < TARGET_SECONDS else "MISSES"
        print(f"{name:<42}{median * 1e3:>8.1f}{max(seconds) * 1e3:>8.1f}  {verdict}", flush=True)
        rows.append([name, round(median * 1e3, 1), round(min(seconds) * 1e3, 1), round(max(seconds) * 1e3, 1), verdict])
    return rows


def save_newer(rows: list[list], repeats: int) -> None:
    """The newer controls' figures, with the machine's load, to bench/results/widgets/newer_controls.json."""
    headline = [
        f"{name}: median {median:.0f} ms ({low:.0f}-{high:.0f}), {verdict}" for name, median, low, high, verdict in rows
    ]
    headline.append(
        f"kernel-side callbacks (messages serialized, the browser's drawing not included), {repeats} changes each, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; target under {TARGET_SECONDS * 1e3:.0f} ms"
        " for the redraws (Measure runs the models)"
    )
    table = {
        "title": "Milliseconds per callback",
        "columns": ["control", "median", "min", "max", "verdict"],
        "rows": rows,
    }
    print(
        save_results(
            "widgets/newer_controls.json", {"title": "Newer widget controls (kernel side)", "tables": [table]}, headline
        )
    )


def studio_forecast_changes(
    studio: widgets.SubcloneStudio, repeats: int, curves: bool = False
) -> list[Callable[[], None]]:
    """The studio's redraw as evaluations arrive: the forecast with its band (``curves``: with the loss curves
    beside it, the whole live redraw), for a simulated 2,000-step cosine run evaluated every 50 steps, shown
    with 6, 7, ... evaluations."""
    from subclone_viz.forecast import LearningCurve
    from subclone_viz.train import EvalRecord, History, StepRecord, TrainSettings

    settings = TrainSettings(steps=2000, lr=1e-3, schedule="cosine", final_lr_ratio=0.1)
    truth = LearningCurve.simulate(settings.learning_rates(), L0=3.0, A=4.0, alpha=0.4, C=0.02, every=50, noise=0.01)
    config = {"steps": 2000, "lr": 1e-3, "warmup": 0, "schedule": "cosine", "final_lr_ratio": 0.1, "eval_every": 50}

    def change(evaluations: int) -> Callable[[], None]:
        points = list(zip(truth.steps, truth.losses))[:evaluations]
        history = History(
            label="subclone",
            config=config,
            steps=[
                StepRecord(s, 64 * s, v, 1e-3, s / 100) for s in range(1, points[-1][0] + 1) for v in [points[0][1]]
            ],
            evals=[EvalRecord(s, 64 * s, v, None, s / 100) for s, v in points],
        )

        def redraw() -> None:
            if curves:
                studio.live_histories = {"subclone": history}
                studio._draw_curves()
            else:
                studio.draw_forecast("subclone", history)
            if studio.last_forecast is None or studio.last_forecast.fitted_until != points[-1][0]:
                raise RuntimeError(f"no forecast drawn: {studio.forecast_status.value}")

        return redraw

    return [change(6 + n) for n in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="value changes timed per control (default 5)")
    parser.add_argument("--newer", action="store_true", help="time only the newer controls (listed above)")
    args = parser.parse_args()
    repeats = args.repeats
    if args.newer:
        parent = sv.load_parent("smollm2-135m", device="cpu")
        prof = cached_profile(parent)
        residual = widgets.ResidualExplorer(parent, prof)
        rows = report(
            {
                **depth_and_outputs_cases(parent, residual, repeats),
                **similarity_and_budget_cases(parent, prof, repeats),
                **expert_cases(repeats),
            },
            repeats,
        )
        save_newer(rows, repeats)
        return

    start = time.perf_counter()
    parent = sv.load_parent("smollm2-135m", device="cpu")
    prof = cached_profile(parent)
    heldout = sv.parent_batches(parent, "heldout", seq_len=64, batch_size=2, max_batches=1)
    grid = sv.size_grid(parent, prof, GRID_LAYERS, GRID_HIDDEN, heldout, progress=False)
    residual = widgets.ResidualExplorer(parent, prof)
    importance = widgets.ImportanceExplorer(prof)
    studio = widgets.SubcloneStudio(parent, prof, heldout, heldout)
    sizes = widgets.SizeGridExplorer(parent, prof, heldout, studio=studio, grid=grid)
    print(
        f"setup (parent, cached profile, {grid.cache_hits} of {len(GRID_LAYERS) * len(GRID_HIDDEN)} grid cells "
        f"from the cache, explorers): {time.perf_counter() - start:.1f} s"
    )

    metrics = [value for _, value in residual.metric.options]
    layers = prof.num_layers
    importance.kind.value = "topk"  # the k slider only acts on the top-k overlap
    cells = [(i, j) for i in range(len(GRID_LAYERS)) for j in range(len(GRID_HIDDEN))]
    cases = {
        "metric menu": [setter(residual.metric, metrics[(n + 1) % len(metrics)]) for n in range(repeats)],
        "layer slider (token trace)": [setter(residual.layer, (7 * n + 3) % (layers + 1)) for n in range(repeats)],
        "k slider (top-k overlap)": [setter(importance.k, 32 + 48 * n) for n in range(repeats)],
        "consistency toggle": [setter(importance.kind, ("spearman", "topk")[n % 2]) for n in range(repeats)],
        "block slider (FFN neurons)": [setter(importance.ffn_layer, (5 * n + 1) % layers) for n in range(repeats)],
        "size-grid click (+ studio)": [
            (lambda cell=cells[(4 * n + 1) % len(cells)]: sizes.select(*cell))  # noqa: B008 (binds n now)
            for n in range(repeats)
        ],
        "studio forecast redraw": studio_forecast_changes(studio, repeats),
        "studio live redraw (+ curves)": studio_forecast_changes(studio, repeats, curves=True),
    }
    print(
        f"\nSmolLM2-135M, {repeats} changes per control; milliseconds per callback (target < {TARGET_SECONDS * 1e3:.0f})"
    )
    print(f"{'control':<30}{'median':>8}{'max':>8}  verdict")
    for name, changes in cases.items():
        seconds = timed(changes)
        median = statistics.median(seconds)
        verdict = "ok" if median < TARGET_SECONDS else "MISSES"
        print(f"{name:<30}{median * 1e3:>8.1f}{max(seconds) * 1e3:>8.1f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
