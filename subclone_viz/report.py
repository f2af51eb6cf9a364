"""The headless report: one self-contained HTML page of a parent's profile, a plan and a comparison.

:func:`build_report` lays out whatever records it is given (a profile always; a plan, a block ablation, a
token trace, a size grid, a training comparison and a budget grid when there are some) as interactive plotly
figures with short captions and tables. plotly.js is inlined once in the page head, so the file opens offline, needs no
CDN and can be mailed around (about 5 MB, most of it plotly.js). The file is written atomically and an
existing one is kept unless ``overwrite=True``.

:func:`run_report` is the main job (``subclone-viz report``, ``make demo``): it loads a parent (SmolLM2-135M by
default), has :func:`subclone_viz.workflow.report_records` measure it (profile on held-out text of the embedded
corpus, single-block ablation, a token's trace, a default destination (SmolLM2: 20 blocks x 384) and its
untrained loss, a size grid cached on disk, a short random-vs-subclone training comparison) and writes the page.
``quick=True`` shrinks every stage so the whole job takes seconds (for tests); the default takes a few minutes
on two CPU cores.

Example::

    >>> import subclone_viz as sv
    >>> from subclone_viz.report import build_report
    >>> parent = sv.load_parent("smollm2-135m")
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=1)
    >>> prof = sv.profile(parent, heldout, progress=False)
    >>> build_report(parent, prof, plan=sv.plan(parent, prof, sv.DestinationSpec(layers=20, hidden=384)),
    ...              out="report.html")
    PosixPath('report.html')

The main job (``make demo``, a few minutes on two CPU cores): ``run_report("smollm2-135m", out="report.html")``;
``quick=True`` shrinks every stage to seconds.
"""

from __future__ import annotations

import datetime
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from . import distributed, plots
from ._atomic import check_new_file, write_file
from ._version import __version__
from .budget import BudgetGrid
from .compare import CONVERGED_SECOND_HALF_SHARE, speedup_text
from .parent import Parent, load_parent
from .profile import BLOCK_METRIC_LABELS, BLOCK_METRICS, Profile
from .study import SpeedupStudy, best_lr_text
from .workflow import Progress, report_records

if TYPE_CHECKING:
    from .evaluate import BlockAblation
    from .lens import LogitLens
    from .plan import DestinationSpec, SubclonePlan
    from .similarity import LayerSimilarity
    from .sizing import SizeGrid
    from .stability import Stability
    from .trace import TokenTrace

_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0;
       background: #fafafa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: white; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
nav a { margin-right: 1em; }
figure { margin: 1.5em 0; } figcaption { color: #555; font-size: 0.9em; max-width: 900px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
tr.removed td { color: #999; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.5em 1em; margin: 1em 0; }
.scroll { max-height: 420px; max-width: 100%; overflow: auto; display: inline-block; }
"""


# --------------------------------------------------------------------------------------------------------
# HTML pieces


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "&ndash;" if math.isnan(value) else f"{float(value):.{digits}g}"
    return _escape(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; strings are left-aligned text, numbers are formatted and right-aligned."""
    head = "".join(f"<th>{_escape(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cells = "".join(
            f'<td class="text">{_escape(v)}</td>' if isinstance(v, str) else f"<td>{_number(v)}</td>" for v in row
        )
        css = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _figure(fig: go.Figure, name: str, caption: str) -> str:
    # plotly.js itself is in the page head, once; each figure only carries its data and layout.
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{name}", config=_PLOTLY_CONFIG)
    return f"<figure>{div}<figcaption>{_escape(caption)}</figcaption></figure>"


def _section(anchor: str, title: str, parts: Sequence[str]) -> str:
    return f'<section id="{anchor}"><h2>{_escape(title)}</h2>{"".join(parts)}</section>'


def _paragraph(text: str) -> str:
    return f"<p>{_escape(text)}</p>"


# --------------------------------------------------------------------------------------------------------
# Sections


def _block_table(profile: Profile, plan: "SubclonePlan | None", ablation: "BlockAblation | None") -> str:
    metrics = profile.block_metrics
    adjacent = profile.rank_consistency().adjacent_spearman()
    copies = plots.kept_copies(plan.layers if plan is not None else None, profile.num_layers)
    header = ["block"] + (["in the plan"] if plan is not None else []) + [BLOCK_METRIC_LABELS[m] for m in BLOCK_METRICS]
    if ablation is not None:
        header += ["loss, block removed", "loss, block duplicated"]
    header.append("Spearman(layer i, i+1)")
    rows, classes = [], []
    for block in range(profile.num_layers):
        row: list[Any] = [block]
        if plan is not None:
            row.append("removed" if copies[block] == 0 else "kept" if copies[block] == 1 else f"kept x{copies[block]}")
        row += [float(metrics[m][block]) for m in BLOCK_METRICS]
        if ablation is not None:
            row += [ablation.removed[block], ablation.duplicated[block]]
        row.append(float(adjacent[block]))
        rows.append(row)
        classes.append("removed" if copies[block] == 0 else "")
    return _table(header, rows, classes)


def _profile_section(
    profile: Profile, plan: "SubclonePlan | None", ablation: "BlockAblation | None", trace: "TokenTrace | None"
) -> str:
    summary = profile.summary()
    parts = [
        _paragraph(
            f"Profiled on {profile.source}: {profile.tokens:,} tokens. Median Spearman correlation of channel "
            f"importance between adjacent residual layers: {summary['median_adjacent_spearman']:.3f}; median "
            f"share of the top-{summary['topk']} channels kept by the next layer: "
            f"{summary['median_adjacent_topk_overlap']:.3f}."
        ),
        _figure(
            plots.residual_ratio(profile, "all", kept_layers=plan.layers if plan is not None else None),
            "residual-ratio",
            "The additive residual property: each block's update f(x) is small next to the residual stream x, "
            "most of all in the middle of the network. Grey bands and x markers: blocks the planned destination "
            "drops.",
        ),
    ]
    if ablation is not None:
        parts.append(
            _figure(
                plots.block_ablation(ablation),
                "block-ablation",
                "The parent's held-out loss, without any fine-tuning, with one block removed or run twice (the "
                "paper's Fig. 2, bottom): middle blocks barely matter, the first and last ones do.",
            )
        )
    if trace is not None:
        parts.append(
            _figure(
                plots.token_trace(trace),
                "token-trace",
                "One token through depth: its hidden state's norm grows, while its direction changes little from "
                "one block to the next.",
            )
        )
    parts.append("<h3>Per-block metrics</h3>" + _block_table(profile, plan, ablation))
    return _section("profile", "1. The additive residual property", parts)


def _channels_section(profile: Profile) -> str:
    massive = plots.massive_channels(profile)
    return _section(
        "channels",
        "2. One ranking of the residual channels for every layer",
        [
            _figure(
                plots.channel_heatmap(profile),
                "channel-heatmap",
                "Mean |activation| of every residual channel at every layer, channels in the order of the shared "
                "ranking: the important channels are the same at every depth.",
            ),
            _figure(
                plots.massive_activations(profile),
                "massive-activations",
                f"Massive-activation channels (here {', '.join(map(str, massive.channels[:4]))}, ...) carry values "
                f"up to {massive.ratio.max():.0f}x the median channel's.",
            ),
            _figure(
                plots.rank_consistency(profile),
                "rank-spearman",
                "Spearman correlation of channel importance between every pair of residual layers.",
            ),
            _figure(
                plots.rank_consistency(profile, kind="topk"),
                "rank-topk",
                "Fraction of the most important channels that two layers share.",
            ),
        ],
    )


def _rankings_section(profile: Profile, plan: "SubclonePlan | None") -> str:
    keep = plan.dims["ffn"] if plan is not None else None
    return _section(
        "rankings",
        "3. FFN neurons and attention heads, ranked per block",
        [
            _figure(
                plots.ffn_importance(profile, keep=keep),
                "ffn-importance",
                "FFN hidden neurons of every block, sorted by importance; the dashed line is the destination's "
                "FFN width when a plan is given.",
            ),
            _figure(plots.head_importance(profile), "head-importance", "Importance of every attention head."),
        ],
    )


def _experts_section(profile: Profile, plan: "SubclonePlan | None") -> str:
    entropy = profile.stats["router_entropy"] / np.maximum(profile.stats["router_tokens"], 1.0)
    experts = profile.stats["expert_tokens"].shape[1]
    parts = [
        _figure(
            plots.expert_load_heatmap(profile),
            "expert-load",
            f"Share of each block's routed tokens that each of its {experts} experts took (uniform routing: "
            f"{1 / experts:.3f} everywhere); dense blocks are empty rows.",
        ),
        _paragraph(
            f"Mean router entropy per MoE block, in nats (uniform: {np.log(experts):.2f}): "
            + ", ".join(f"block {b}: {e:.2f}" for b, e in enumerate(entropy) if e > 0)
            + "."
        ),
    ]
    if plan is not None and plan.experts:
        parts.append(
            _paragraph(
                f"The destination keeps {len(plan.experts[0])} experts per block"
                + (f", chosen by {plan.experts_by}" if plan.experts_by else "")
                + ": "
                + "; ".join(f"block {b}: {kept}" for b, kept in zip(plan.layers, plan.experts))
                + "."
            )
        )
    return _section("experts", "3b. Experts: routing load per block", parts)


def _plan_section(plan: "SubclonePlan") -> str:
    dims, parent_dims = plan.dims, plan.parent_dims
    rows = [[name, parent_dims[name], dims[name]] for name in ("layers", "hidden", "ffn", "heads", "kv_heads")]
    parts = [
        _paragraph(plan.summary()),
        _table(["dimension", "parent", "destination"], rows),
        _paragraph(f"Parent blocks kept, in order: {plan.layers}."),
    ]
    return _section("plan", "4. The destination", parts)


def _stability_section(stability: "Stability") -> str:
    summary = stability.summary()
    shards = stability.shard_tokens
    parts = [
        _paragraph(
            f"The rankings above come from one calibration sample. Its sums are kept in {len(shards)} shards "
            f"({min(shards):,}-{max(shards):,} tokens each); {summary['resamples']} {stability.method} resamples of the "
            f"shards re-plan the destination width ({stability.spec['hidden']} channels, FFN {stability.spec['ffn']}, "
            f"{stability.spec['heads']} heads; importance estimator '{stability.importance}') without a second pass. "
            f"What a resample keeps that another does not is decided by the calibration text, not by the parent."
        )
    ]
    rows = [
        [kind, summary["mean_jaccard_with_full"][kind], summary["mean_pairwise_jaccard"][kind]]
        for kind in ("residual", "ffn", "heads")
    ]
    parts.append(_table(["kept set", "mean Jaccard with the full sample", "mean Jaccard between resamples"], rows))
    if "loss" in summary:
        loss = summary["loss"]
        parts.append(
            _paragraph(
                f"Held-out loss before training of the destinations of {len(loss['values'])} resamples: "
                f"{loss['mean']:.3f} ± {loss['std']:.3f} nats (min {loss['min']:.3f}, max {loss['max']:.3f}); "
                f"the full sample's destination: {loss['full']:.3f}."
            )
        )
    captions = {
        "residual": "Fraction of resamples that keep each residual channel, most often kept first; the dashed line "
        "is the destination's width.",
        "ffn": "Fraction of resamples that keep each FFN neuron, every block, each row sorted.",
        "heads": "Fraction of resamples that keep each query head, every block.",
    }
    for kind, caption in captions.items():
        parts.append(_figure(plots.selection_stability(stability, kind), f"stability-{kind}", caption))
    return _section("stability", "5. How much the calibration sample decides", parts)


def _grid_section(grid: "SizeGrid", plan: "SubclonePlan | None") -> str:
    selected = grid.cell_of(plan.dims) if plan is not None else None
    invalid = sum(r is not None for row in grid.reasons for r in row)
    parts = [
        _paragraph(
            f"Every cell is a subclone of {grid.parent} ({grid.depth} depth, {grid.width} width, {grid.scaling} "
            f"scaling), scored before any training on {grid.eval_source}. FLOPs per token: 2 x the weights of "
            f"every matrix multiply + 4 x layers x {grid.seq_len} (context) x attention width. Latency and memory "
            f"were measured on {grid.device or 'an unrecorded device'} (a forward over one held-out batch)."
            + (f" {invalid} cells are not valid specs for this parent (hover for why)." if invalid else "")
        )
    ]
    captions = {
        "loss": "Held-out loss of each subclone before training (outlined: the planned destination).",
        "params": "Parameter count of each destination.",
        "flops_per_token": "Forward FLOPs per token of each destination.",
        "latency": "Measured forward latency per token of each destination.",
        "memory": "Measured peak memory of each destination's forward, weights included.",
    }
    for quantity, caption in captions.items():
        parts.append(_figure(plots.size_grid(grid, quantity, selected=selected), f"grid-{quantity}", caption))
    if grid.pareto_front("latency").any():
        parts.append(
            _figure(
                plots.size_pareto(grid, "latency"),
                "grid-pareto",
                "Loss before training against measured latency: the highlighted sizes are those no "
                "other size beats on both.",
            )
        )
    return _section("sizes", "6. Destination sizes", parts)


def _comparison_section(comparison: Any) -> str:
    rows = comparison.summary_table()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    parts = [_table(columns, [[row.get(c) for c in columns] for row in rows])]
    if hasattr(comparison, "lr_note"):  # the rates behind every speedup, and where they came from
        note = comparison.lr_note()
        parts.append(_paragraph(note[0].upper() + note[1:] + "."))
    if any(row.get("reference_converged") is False for row in rows):
        parts.append(
            _paragraph(
                f"Random init had not converged by the end of its run (its second half still brought "
                f"more than {CONVERGED_SECOND_HALF_SHARE:.0%} of its drop in held-out loss): the "
                f"speedups hold at the loss it reached in this budget only, and a longer run may "
                f"give others."
            )
        )
    histories = getattr(comparison, "histories", None)
    if histories:
        has_accuracy = any(row.get("final_accuracy") is not None for row in rows)
        metrics = ["eval_loss", "train_loss"] + (["eval_accuracy"] if has_accuracy else [])
        for metric in metrics:
            parts.append(
                _figure(
                    plots.loss_curves(histories, metric=metric),
                    f"curves-{metric}",
                    "Training from the same data in the same order; speedup: the steps random init needs to reach "
                    "its own final held-out loss over the steps the other initialization needs to reach it.",
                )
            )
    return _section("comparison", "7. Training: random initialization against subcloning", parts)


def _study_section(study: "SpeedupStudy", parent_name: str) -> str:
    config = study.config
    measured_on = config.get("parent", {})
    budget = (
        f"{config.get('steps')} optimizer steps ({config.get('tokens_per_run', 0):,} training tokens) per run "
        f"on {config.get('data')}, held-out loss every {config.get('eval_every')} steps on "
        f"{config.get('heldout')}, on {config.get('device')}"
    )
    parts = [
        _paragraph(
            f"Measured on {measured_on.get('description', measured_on.get('name', 'an unrecorded parent'))}: "
            f"{budget}. Random init swept learning rates {config.get('random_lrs')}, the subclone "
            f"{config.get('subclone_lrs')}; each keeps its best (lowest final held-out loss), so no speedup comes from "
            f"a poorly tuned baseline. Speedup: the steps (or training seconds) the best random run needs to reach its "
            f"own final held-out loss over the steps the other needs."
            + (
                f" Seeds {config['seeds']} (each changes the initialization and the order of the batches): the "
                f"losses are their mean, the speedups their geometric mean, with the range in brackets."
                if config.get("seeds")
                else ""
            )
        )
    ]
    if measured_on.get("name") not in (None, parent_name):
        warning = (
            f"This study was measured on {measured_on.get('name')}, not on {parent_name}, the parent of the "
            f"rest of this page."
        )
        parts.append(f'<div class="note">{_escape(warning)}</div>')
    parts.append(
        _figure(
            plots.speedup_by_size(study.sizes),
            "speedup-by-size",
            "Speedup over random init against the destination's parameter count. Solid: per optimizer "
            "step; dotted: per second of training (a teacher's forward makes a distilled step dearer). "
            "Triangles up: lower bounds; down: never reached random's final loss.",
        )
    )
    rows = [
        [
            row["destination"],
            row["parameters"],
            row["init"],
            best_lr_text(row),
            row["initial_loss"],
            row["final_loss"],
            speedup_text(row),
            speedup_text(row, "speedup_per_second"),
        ]
        for row in study.table()
    ]
    parts.append(
        _table(
            [
                "destination",
                "parameters",
                "init",
                "best lr",
                "held-out loss at 0",
                "final",
                "speedup per step",
                "per second",
            ],
            rows,
        )
    )
    beyond = study.beyond_budget()
    if beyond:
        parts.append(
            _paragraph(
                "Where random init never reached another initialization's final loss within the budget, a forecast "
                "from its whole run (its schedule stretched to a longer run, sv.steps_to_reach) says when it would; "
                "these are forecasts, with their intervals, not measurements:"
            )
        )
        parts.append(
            _table(
                ["destination", "seed", "init's final loss", "random init (forecast)"],
                [
                    [row["destination"], row["seed"], f"{row['init']}: {row['target']:.3f}", row["text"]]
                    for row in beyond
                ],
            )
        )
    return _section("speedup", "8. Speedup by destination size", parts)


# --------------------------------------------------------------------------------------------------------
# The page


def _cut_section(lenses: "Mapping[str, LogitLens]", similarities: "Mapping[str, LayerSimilarity]") -> str:
    parts = [
        _paragraph(
            "The logit lens reads every residual layer through the final norm and the head, as if the later blocks were "
            "not there; a destination's layers sit at the parent block they came from. Layer similarity compares each "
            "destination layer's hidden states with the parent layer it came from: linear CKA (blind to rotations and "
            "scale) and the cosine on the kept channels."
        )
    ]
    if lenses:
        parts.append(
            _figure(
                plots.lens_loss(lenses),
                "lens-loss",
                "Loss read at each residual layer, on the parent's depth axis: a depth cut follows the "
                "parent up to its gap, a width cut departs from the embedding on.",
            )
        )
        rows = [
            [name, len(lens.labels), lens.loss[0], lens.loss[-1], lens.accuracy[-1]] for name, lens in lenses.items()
        ]
        parts.append(
            _table(
                [
                    "model",
                    "layers read",
                    "lens loss at the embedding",
                    "at the last layer",
                    "top-1 accuracy at the last layer",
                ],
                rows,
            )
        )
    for k, (name, similarity) in enumerate(similarities.items()):
        parts.append(
            _figure(
                plots.similarity_heatmap(similarity, title=f"{name}: cosine on the kept channels"),
                f"similarity-{k}",
                f"{name}: every parent layer against every destination layer; "
                f"squares mark the layer each destination layer came from.",
            )
        )
    if similarities:
        parts.append(
            _figure(
                plots.similarity_by_layer(similarities),
                "similarity-by-layer",
                "CKA (solid) and kept-channel cosine (dotted) against the parent layer each destination "
                "layer came from.",
            )
        )
    return _section("cut", "9. What the cut loses", parts)


def _budget_section(budget: "BudgetGrid") -> str:
    """The budget chooser: forecast loss at the budget against parameters, the forecasts with their intervals,
    what the pilots cost and where the forecast's prior came from."""
    best, prior = budget.best(), budget.prior
    unit = f"{budget.tokens:,.0f} tokens per run" if budget.tokens is not None else f"{budget.flops:.3g} FLOPs per run"
    level = f"{prior['level']:.0%}"
    parts = [
        _paragraph(
            f"Each size of {budget.parent} trained a short pilot under the schedule of its whole run at the budget "
            f"({unit}, {budget.tokens_per_step:,} tokens a step"
            + (", iso-compute: smaller sizes train more steps" if budget.flops is not None else "")
            + f"); its held-out losses were forecast to the run's end with a {level} interval. These are "
            f"forecasts, not measurements. Best forecast: {best['layers']} x {best['hidden']} ({best['init']}), "
            f"{best['forecast']['loss']:.3f} nats [{best['forecast']['low']:.3f}, {best['forecast']['high']:.3f}] "
            f"after {best['steps']:,} steps."
        ),
        _paragraph(
            f"The pilots cost {budget.pilot_cost:.0%} of training the chosen size at the budget "
            f"({sum(c['pilot_steps'] for c in budget.cells):,} pilot steps over {len(budget.cells)} cells). "
            f"The forecast's prior (annealing coefficient and interval width): {prior['source'] or 'not recorded'}"
            f" ({prior['runs']} calibration runs)."
        ),
        _figure(
            plots.budget_pareto(budget, "params"),
            "budget-pareto",
            f"Forecast held-out loss at the budget against parameters, with {level} intervals; the sizes no other "
            "beats on both are joined.",
        ),
    ]
    front = {(c["layers"], c["hidden"], c["init"]) for c in budget.pareto_front("params")}
    rows = [
        [
            f"{c['layers']} x {c['hidden']}",
            c["init"],
            c["params"],
            c["steps"],
            c["pilot_steps"],
            c.get("initial_loss"),
            c["forecast"]["loss"],
            c["forecast"]["low"],
            c["forecast"]["high"],
            "yes" if (c["layers"], c["hidden"], c["init"]) in front else "",
        ]
        for c in sorted(budget.cells, key=lambda c: c["forecast"]["loss"])
    ]
    header = ["size", "init", "parameters", "steps", "pilot steps", "loss before training", "forecast"]
    header += [f"{level} low", f"{level} high", "Pareto front"]
    parts.append(_table(header, rows))
    return _section("budget", "10. A size for a training budget", parts)


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(out).expanduser()
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"out={str(out)!r} must be an .html file")
    check_new_file(path, overwrite)  # exists, a directory, or a place that cannot be written
    return path


def build_report(
    parent: "Parent | None",
    profile: Profile,
    plan: "SubclonePlan | None" = None,
    ablation: "BlockAblation | None" = None,
    comparison: Any = None,
    grid: "SizeGrid | None" = None,
    out: str | os.PathLike = "report.html",
    overwrite: bool = False,
    trace: "TokenTrace | None" = None,
    notes: Sequence[str] = (),
    stability: "Stability | None" = None,
    study: "SpeedupStudy | None" = None,
    lenses: "Mapping[str, LogitLens] | None" = None,
    similarities: "Mapping[str, LayerSimilarity] | None" = None,
    budget: "BudgetGrid | None" = None,
) -> Path:
    """Write one self-contained HTML page of everything given, and return its path.

    Args:
        parent: the parent (for its description); None takes the description stored in the profile.
        profile: the parent's profile (always shown: block metrics, channels, FFN neurons, heads).
        plan: a destination plan: its kept blocks are marked, its dims and FFN width shown.
        ablation: a :func:`~subclone_viz.block_ablation` result.
        comparison: a :class:`subclone_viz.compare.Comparison` (anything with ``summary_table()`` and
            ``histories``).
        grid: a :func:`~subclone_viz.size_grid` result.
        out: the ``.html`` file to write.
        overwrite: replace an existing file.
        trace: a :func:`~subclone_viz.token_trace` result.
        notes: sentences shown in a highlighted box at the top (what was skipped and why).
        stability: a :func:`~subclone_viz.stability` result: selection frequencies and the loss spread across
            resamples of the calibration sample.
        study: a :class:`~subclone_viz.study.SpeedupStudy`: speedup over random init by destination size.
        lenses: :func:`~subclone_viz.logit_lens` records by model name (the parent first), on one batch.
        similarities: :func:`~subclone_viz.layer_similarity` records by name (e.g. before and after training).
        budget: a :func:`~subclone_viz.budget_grid` result: forecast loss at a training budget per size.
    """
    path = _check_out(out, overwrite)
    name = parent.name if parent is not None else profile.parent["name"]
    description = parent.description if parent is not None else profile.parent.get("description", "")
    sections = [
        _profile_section(profile, plan, ablation, trace),
        _channels_section(profile),
        _rankings_section(profile, plan),
    ]
    anchors = [("profile", "residual property"), ("channels", "channels"), ("rankings", "neurons and heads")]
    if "expert_tokens" in profile.stats:  # a mixture of experts
        sections.append(_experts_section(profile, plan))
        anchors.append(("experts", "experts"))
    if plan is not None:
        sections.append(_plan_section(plan))
        anchors.append(("plan", "destination"))
    if stability is not None:
        sections.append(_stability_section(stability))
        anchors.append(("stability", "calibration"))
    if grid is not None:
        sections.append(_grid_section(grid, plan))
        anchors.append(("sizes", "sizes"))
    if comparison is not None:
        sections.append(_comparison_section(comparison))
        anchors.append(("comparison", "training"))
    if study is not None:
        sections.append(_study_section(study, name))
        anchors.append(("speedup", "speedup by size"))
    if lenses or similarities:
        sections.append(_cut_section(lenses or {}, similarities or {}))
        anchors.append(("cut", "what the cut loses"))
    if budget is not None:
        sections.append(_budget_section(budget))
        anchors.append(("budget", "budget"))
    nav = "".join(f'<a href="#{anchor}">{_escape(label)}</a>' for anchor, label in anchors)
    note_box = "".join(f'<div class="note">{_escape(note)}</div>' for note in notes)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Subcloning report: {_escape(name)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body><main>'
        f"<h1>Weight subcloning report: {_escape(name)}</h1>"
        f'<p class="meta">{_escape(description)}<br>subclone_viz {__version__}, {stamp}. Method: Samragh et al., '
        f'"Weight subcloning: direct initialization of transformers using larger pretrained ones" (2023).</p>'
        f"<nav>{nav}</nav>{note_box}{''.join(sections)}</main></body></html>\n"
    )
    distributed.on_main(write_file, path, page, overwrite=overwrite)  # every process built it; one writes
    return path


# --------------------------------------------------------------------------------------------------------
# The main job


def run_report(
    parent_source: "str | os.PathLike | Parent" = "smollm2-135m",
    out: str | os.PathLike = "report.html",
    tokens: int | None = None,
    steps: int | None = None,
    quick: bool | None = None,
    overwrite: bool = False,
    data: str = "builtin",
    destination: "DestinationSpec | None" = None,
    seed: int = 0,
    progress: bool = True,
    study: "SpeedupStudy | str | os.PathLike | None" = None,
    budget: "BudgetGrid | str | os.PathLike | None" = None,
) -> Path:
    """Load the parent, measure it (:func:`subclone_viz.workflow.report_records`) and write the report.

    Args:
        parent_source: anything :func:`~subclone_viz.load_parent` takes, or a loaded parent.
        out: the ``.html`` file to write; checked before any work.
        tokens, steps, quick, data, destination, seed, progress: as for
            :func:`~subclone_viz.workflow.report_records` (``quick=None``: ``SUBCLONE_VIZ_QUICK``).
        overwrite: replace an existing report.
        study: a :class:`~subclone_viz.study.SpeedupStudy`, or the file one was saved to (read and validated
            before any work), shown as the page's last section.
        budget: a :class:`~subclone_viz.budget.BudgetGrid`, or the file one was saved to (read and validated
            before any work): the budget section.
    """
    path = _check_out(out, overwrite)  # fail before minutes of work, not after
    if study is not None and not isinstance(study, SpeedupStudy):
        study = SpeedupStudy.load(study)
    if budget is not None and not isinstance(budget, BudgetGrid):
        budget = BudgetGrid.load(budget)
    log = Progress("report")
    if isinstance(parent_source, Parent):
        parent = parent_source
    else:
        log(f"loading parent {parent_source}")
        parent = load_parent(parent_source)
    log(f"parent: {parent.description}")
    records = report_records(
        parent,
        tokens=tokens,
        steps=steps,
        quick=quick,
        data=data,
        destination=destination,
        seed=seed,
        progress=progress,
        log=log,
    )
    written = build_report(**records.as_kwargs(), out=path, overwrite=overwrite, study=study, budget=budget)
    log(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    return written
