"""The speedup study: how much faster than random init does a destination train, from mild to harsh cuts?

:func:`compare` answers for one destination shape at given learning rates. Choosing a size needs the answer
across sizes, and a fair one: a speedup measured against a random init trained at a poor learning rate is
no speedup. :func:`speedup_study` does, for each destination size:

* random init and the paper's subclone each train at every learning rate of a small sweep (same batches in
  the same order: :func:`~subclone_viz.compare.compare`'s guarantee) and keep their best, the lowest final
  held-out loss;
* for the sizes in ``distill_sizes``, the ``+distill`` inits (the parent as teacher) train at their start's
  best learning rate, so that the gain of the start and the gain of the teacher separate;
* every init's :func:`~subclone_viz.compare.speedup` over the best random run: the steps random needs to
  reach its own final held-out loss over the steps the other needs, and the same in seconds of training.

The result, a :class:`SpeedupStudy`, is plain data: it saves to one JSON file, reads back validated (a damaged
file raises an error naming it), merges with studies of other sizes and of other seeds (run each in its own
job, then ``SpeedupStudy.merge``: a size's seeds give its mean losses and the range of its speedups), says
where random init would reach a subclone's final loss past the budget (:meth:`SpeedupStudy.beyond_budget`, a
forecast), and plots with :func:`subclone_viz.plots.speedup_by_size`; the report shows it
(``subclone-viz report --speedup-study FILE``). ``bench/bench_speedup_study.py`` runs it on SmolLM2-135M.

Example::

    >>> import subclone_viz as sv
    >>> from subclone_viz.study import SpeedupStudy, speedup_study
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, shuffle=True)
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=1)
    >>> prof = sv.profile(parent, heldout, progress=False)
    >>> study = speedup_study(parent, [sv.DestinationSpec(layers=2, hidden=192)], train, heldout, profile=prof,
    ...                       random_lrs=[3e-3], subclone_lrs=[1e-3], steps=2, eval_every=1, progress=False)
    >>> [row["init"] for row in study.table()]
    ['random', 'subclone']
    >>> path = study.save("speedup_study.json")
    >>> SpeedupStudy.load(path).sizes[0]["label"]
    '2 x 192'
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .compare import INITS, PROFILE_TOKENS, REFERENCE_INIT, compare, speedup
from .forecast import ForecastError, steps_to_reach
from .plan import plan
from .profile import profile as profile_parent
from .records import Record, register_record
from .train import History, TrainSettings

if TYPE_CHECKING:
    import torch

    from .families import Dims
    from .forecast import ForecastPrior
    from .parent import Parent
    from .plan import DestinationSpec
    from .profile import Profile

__all__ = ["SpeedupStudy", "speedup_study"]

_SPEEDUP_KEYS = ("speedup", "speedup_per_second", "speedup_lower_bound", "reached")


@register_record
@dataclass
class SpeedupStudy(Record):
    """Speedups over random init for several destination sizes; plain data that round-trips through JSON.

    ``sizes``: one record per destination size, mild to harsh as run: ``label`` ("20 x 384"), ``dims``,
    ``parameters``, per init its ``best_lr``, ``initial_loss``, ``final_loss`` and ``speedups`` (a
    :class:`~subclone_viz.compare.Speedup` as a dict), and ``runs``: every history of the sweeps, by init and
    learning rate. ``config``: the parent, the data and the budget the sizes were measured with.
    """

    FORMAT = "subclone_viz.speedup_study"
    VERSION = 1

    config: dict[str, Any]
    sizes: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """One row per size and init: parameters, best learning rate (the one most seeds chose, and every
        seed's in ``best_lr_seeds``), held-out loss before and after training, speedup per step and per second
        of training (with its lower-bound / not-reached flags)."""
        rows = []
        for size in self.sizes:
            for init, gain in size["speedups"].items():
                rows.append(
                    {
                        "destination": size["label"],
                        "parameters": size["parameters"],
                        "init": init,
                        "best_lr": size["best_lr"][init],
                        "best_lr_seeds": [record["best_lr"][init] for record in size.get("seeds") or [size]],
                        "initial_loss": size["initial_loss"][init],
                        "final_loss": size["final_loss"][init],
                        **{key: gain[key] for key in _SPEEDUP_KEYS},
                        "reference_converged": gain.get("reference_converged"),  # None in studies saved before it
                        "seeds": len(size.get("seeds") or [size]),
                        "speedup_range": gain.get("speedup_range"),
                        "speedup_per_second_range": gain.get("speedup_per_second_range"),
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "sizes": self.sizes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeedupStudy":
        """A study from :meth:`to_dict`'s data, every size record checked; ``ValueError`` says what is wrong."""
        if not isinstance(data.get("config"), dict) or not isinstance(data.get("sizes"), list):
            raise ValueError("a speedup study needs a 'config' object and a 'sizes' list")
        measured_on = data["config"].get("parent")
        if not isinstance(measured_on, dict) or not isinstance(measured_on.get("name"), str):
            raise ValueError("its config lacks the parent it was measured on (an object with a 'name')")
        for index, size in enumerate(data["sizes"]):
            problem = _size_problem(size)
            if problem:
                raise ValueError(f"size record {index} {problem}")
        return cls(config=data["config"], sizes=data["sizes"])

    @classmethod
    def merge(cls, studies: Sequence["SpeedupStudy"]) -> "SpeedupStudy":
        """One study of every size of ``studies``, ordered by parameters, largest first: for sizes measured in
        separate jobs, and for the same sizes measured with other seeds (each size's seeds combine into one
        record: mean losses, the geometric mean of the speedups and their range, and every seed's own record
        under ``seeds``). They must share the parent and the training budget."""
        if not studies:
            raise ValueError("merge needs at least one study")
        budget = ("parent", "steps", "tokens_per_run", "eval_every", "heldout")
        first = studies[0].config
        for study in studies[1:]:
            differing = [key for key in budget if study.config.get(key) != first.get(key)]
            if _unseeded(study.config.get("data")) != _unseeded(first.get("data")):
                differing.append("data")
            if differing:
                raise ValueError(
                    f"these studies differ in {', '.join(differing)}: their speedups are not comparable on one figure"
                )
        by_label: dict[str, dict[Any, list[dict[str, Any]]]] = {}
        for study in studies:
            for size in study.sizes:
                for record in size.get("seeds") or [dict(size, seed=size.get("seed", study.config.get("seed")))]:
                    by_label.setdefault(size["label"], {}).setdefault(record.get("seed"), []).append(
                        dict(record, label=size["label"], dims=size.get("dims"), parameters=size["parameters"])
                    )
        sizes = [
            _combine_seeds(
                label, [_join_sweeps(label, jobs) if len(jobs) > 1 else jobs[0] for jobs in by_seed.values()]
            )
            for label, by_seed in by_label.items()
        ]
        seeds = sorted({seed for by_seed in by_label.values() for seed in by_seed}, key=str)
        config = dict(first, wall_seconds=sum(float(s.config.get("wall_seconds", 0.0)) for s in studies))
        for sweep in ("random_lrs", "subclone_lrs"):  # sweeps run as separate jobs: every rate tried
            config[sweep] = sorted({lr for study in studies for lr in study.config.get(sweep) or ()})
        if len(seeds) > 1:
            config["seeds"] = seeds
        return cls(config=config, sizes=sorted(sizes, key=lambda size: -size["parameters"]))

    def beyond_budget(self, prior: "ForecastPrior | None" = None) -> list[dict[str, Any]]:
        """Where random init would reach another init's final loss only beyond the budget: for each size, seed
        and init whose final loss the best random run never reached, when a longer random run (its schedule
        stretched) would, by :func:`~subclone_viz.forecast.steps_to_reach`. Forecasts, with their intervals."""
        rows = []
        for size in self.sizes:
            for record in size.get("seeds") or [size]:
                if not record.get("runs"):
                    continue  # a study saved without its histories
                reference = record["runs"][REFERENCE_INIT][
                    _lr_key(record["runs"][REFERENCE_INIT], record["best_lr"][REFERENCE_INIT])
                ]
                history = History.from_dict(reference)
                for init, loss in record["final_loss"].items():
                    if init == REFERENCE_INIT or min(e.loss for e in history.evals) <= loss:
                        continue
                    try:
                        reach = replace(steps_to_reach(history, loss, prior=prior), label="random init")
                    except ForecastError:
                        continue  # too few evaluations to forecast from
                    rows.append(
                        {
                            "destination": size["label"],
                            "seed": record.get("seed"),
                            "init": init,
                            **reach.to_dict(),
                            "text": reach.summary(),
                        }
                    )
        return rows


def _lr_key(runs: dict[str, Any], lr: float) -> str:
    """The key of ``runs`` (learning rates as text) that is ``lr``."""
    return next(key for key in runs if float(key) == float(lr))


def _unseeded(description: Any) -> Any:
    """A data description without the shuffling seed, which a study with another seed changes on purpose."""
    return re.sub(r"seed \d+", "seed _", description) if isinstance(description, str) else description


def _combine_seeds(label: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One size record from the same size's records of several seeds (one record: itself)."""
    if len(records) == 1:
        return records[0]
    seeds = [record.get("seed") for record in records]
    if None in seeds:  # records arrive grouped by seed: only a study that never recorded its seed can clash
        raise ValueError(f"size {label!r}: a study without a recorded seed cannot join studies of seeds {seeds}")
    inits = [set(record["speedups"]) for record in records]
    if any(found != inits[0] for found in inits):
        raise ValueError(
            f"size {label!r} was trained from other inits under different seeds: {[sorted(i) for i in inits]}"
        )
    records = sorted(records, key=lambda record: record["seed"])
    first = records[0]

    def mean(key: str, init: str) -> float:
        return float(sum(record[key][init] for record in records) / len(records))

    return {
        "label": label,
        "dims": first.get("dims"),
        "parameters": first["parameters"],
        "best_lr": {init: _most_chosen([record["best_lr"][init] for record in records]) for init in first["speedups"]},
        "initial_loss": {init: mean("initial_loss", init) for init in first["speedups"]},
        "final_loss": {init: mean("final_loss", init) for init in first["speedups"]},
        "speedups": {
            init: _seed_speedup([record["speedups"][init] for record in records]) for init in first["speedups"]
        },
        "seeds": [{k: v for k, v in record.items() if k not in ("label", "dims", "parameters")} for record in records],
    }


def _most_chosen(rates: list[float]) -> float:
    """The learning rate most seeds chose (a tie: the one the lowest seed chose); each seed's stays in its record."""
    return Counter(rates).most_common(1)[0][0]


def best_lr_text(row: dict[str, Any]) -> str:
    """A :meth:`SpeedupStudy.table` row's best learning rate as a reader would say it: ``0.001``, or where seeds
    chose differently ``0.001 (seeds: 0.001, 0.003)``."""
    chosen = row["best_lr_seeds"]
    if len(set(chosen)) == 1:
        return f"{row['best_lr']:g}"
    return f"{row['best_lr']:g} (seeds: {', '.join(f'{rate:g}' for rate in chosen)})"


def _seed_speedup(gains: list[dict[str, Any]]) -> dict[str, Any]:
    """Speedups of one init over several seeds: the geometric mean and range of each axis (None where any
    seed has none); a lower bound if any seed's is, reached if every seed's is."""
    combined: dict[str, Any] = {
        "speedup_lower_bound": any(gain["speedup_lower_bound"] for gain in gains),
        "reached": all(gain["reached"] for gain in gains),
        "reference_converged": _all_or_none([gain.get("reference_converged") for gain in gains]),
    }
    for key in ("speedup", "speedup_per_second"):
        values = [gain[key] for gain in gains]
        missing = None in values
        combined[key] = None if missing else math.exp(sum(math.log(v) for v in values) / len(values))
        combined[f"{key}_range"] = None if missing else [min(values), max(values)]
    return combined


def _all_or_none(flags: list[bool | None]) -> bool | None:
    return None if None in flags else all(flags)


def _size_problem(size: Any) -> str | None:
    """What makes ``size`` no size record of a study, or None."""
    if not isinstance(size, dict):
        return f"is a {type(size).__name__}, not an object"
    missing = [
        key for key in ("label", "parameters", "best_lr", "initial_loss", "final_loss", "speedups") if key not in size
    ]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(size["label"], str) or not isinstance(size["parameters"], int) or size["parameters"] < 1:
        return "needs a text 'label' and a positive whole 'parameters'"
    inits = set(size["speedups"]) if isinstance(size["speedups"], dict) else None
    if not inits or REFERENCE_INIT not in inits:
        return f"needs 'speedups' by init, {REFERENCE_INIT!r} among them"
    for key in ("best_lr", "initial_loss", "final_loss"):
        values = size[key]
        if not isinstance(values, dict) or set(values) != inits:
            return f"needs {key!r} for exactly the inits {sorted(inits)}"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
            return f"has a {key!r} that is not a finite number"
    for index, record in enumerate(size.get("seeds") or []):
        problem = (
            _size_problem({**record, "label": size["label"], "parameters": size["parameters"]})
            if isinstance(record, dict)
            else "is not an object"
        )
        if problem is None and not {"seed", "runs"} <= set(record):
            problem = "lacks its seed or its runs"
        if problem:
            return f"has a seed record {index} that {problem}"
    for init, gain in size["speedups"].items():
        if not isinstance(gain, dict) or any(key not in gain for key in _SPEEDUP_KEYS):
            return f"has a speedup for {init!r} without {', '.join(_SPEEDUP_KEYS)}"
        value = gain["speedup"]
        if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            return f"has a speedup for {init!r} that is not a positive number ({value!r})"
    return None


def _check_lrs(name: str, values: Sequence[float], required: str = "") -> list[float]:
    """``values`` as a list of finite rates > 0; ``required``: why at least one is needed ('' for none)."""
    values = list(values)
    if (not values and required) or any(
        not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v) for v in values
    ):
        least = f"at least one learning rate ({required}), " if required else ""
        raise ValueError(f"{name}={values!r}: give {least}each a finite number > 0")
    return values


def speedup_study(
    parent: "Parent",
    specs: Sequence["DestinationSpec"],
    batches: Iterable[dict[str, "torch.Tensor"]],
    eval_batches: Iterable[dict[str, "torch.Tensor"]],
    *,
    profile: "Profile | None" = None,
    random_lrs: Sequence[float] = (1e-3, 3e-3),
    subclone_lrs: Sequence[float] = (3e-4, 1e-3),
    distill_sizes: Sequence["DestinationSpec"] = (),
    distill_inits: Sequence[str] = ("subclone+distill", "random+distill"),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> SpeedupStudy:
    """Train every size of ``specs`` from random init and from the subclone, each at its best learning rate.

    Args:
        parent: the loaded parent.
        specs: destination sizes, mild to harsh.
        batches: training batches, the same for every run.
        eval_batches: held-out batches (keep them bounded: every evaluation scores all of them).
        profile: the parent's profile for the subclones (None: profiled once on ``batches``, 4,096 tokens).
        random_lrs, subclone_lrs: the learning-rate sweeps of random init and of the subclone.
        distill_sizes: sizes of ``specs`` also trained with the parent as teacher.
        distill_inits: which ``+distill`` inits; each trains at its start's best learning rate.
        progress: progress bars.
        log: called with one line per finished run (default: nothing).
        **settings: :class:`~subclone_viz.train.TrainSettings` fields for every run (``steps=150,
            eval_every=5, seed=0, distill_alpha=0.5``).
    """
    random_lrs = _check_lrs("random_lrs", random_lrs, required="the reference of every speedup")
    subclone_lrs = _check_lrs(
        "subclone_lrs",
        subclone_lrs,
        required="with distill_sizes: at least one subclone run starts them" if distill_sizes else "",
    )
    run_settings = TrainSettings.of(None, **settings)  # an unknown or invalid setting fails now, not after runs
    specs, distill_sizes, resolved = _checked_sizes(parent, specs, distill_sizes, distill_inits)
    started = time.perf_counter()
    if profile is None:
        profile = profile_parent(parent, batches, max_tokens=PROFILE_TOKENS, progress=progress)
    run = partial(_run, parent, batches, eval_batches, profile, progress, log or (lambda line: None), settings)
    sizes = [
        _size(parent, spec, dims, run, random_lrs, subclone_lrs, distill_inits if spec in distill_sizes else ())
        for spec, dims in zip(specs, resolved)
    ]
    distill = {"alpha": run_settings.distill_alpha, "temperature": run_settings.distill_temperature}
    sweeps = {
        "random_lrs": random_lrs,
        "subclone_lrs": subclone_lrs,
        "distill_sizes": [f"{s.layers} x {s.hidden}" for s in distill_sizes],
        "distill_inits": list(distill_inits) if distill_sizes else [],
        "distill": distill if distill_sizes else None,
    }
    config = _study_config(parent, batches, eval_batches, profile, sizes, sweeps)
    config["wall_seconds"] = time.perf_counter() - started
    return SpeedupStudy(config=config, sizes=sizes)


def _checked_sizes(
    parent: "Parent",
    specs: Sequence["DestinationSpec"],
    distill_sizes: Sequence["DestinationSpec"],
    distill_inits: Sequence[str],
) -> tuple[list["DestinationSpec"], list["DestinationSpec"], list["Dims"]]:
    """The sizes and distilled sizes as lists, and each size resolved against the parent, refused before any
    run when empty, unknown or not distilled."""
    specs, distill_sizes = list(specs), list(distill_sizes)
    if not specs:
        raise ValueError("specs is empty: give at least one destination size")
    not_distilled = [name for name in distill_inits if name not in INITS or not INITS[name].distill]
    if not_distilled:
        valid = ", ".join(name for name, init in INITS.items() if init.distill)
        raise ValueError(f"distill_inits {not_distilled} are not distilled inits; choose from {valid}")
    resolved = [spec.resolve(parent.dims, parent.family.heads_follow_hidden) for spec in specs]  # SpecError early
    missing = [spec for spec in distill_sizes if spec not in specs]
    if missing:
        raise ValueError(f"distill_sizes {missing} are not among specs")
    return specs, distill_sizes, resolved


def _run(
    parent: "Parent",
    batches: Iterable[dict[str, "torch.Tensor"]],
    eval_batches: Iterable[dict[str, "torch.Tensor"]],
    profile: "Profile",
    progress: bool,
    say: Callable[[str], None],
    settings: dict[str, Any],
    spec: "DestinationSpec",
    init: str,
    lr: float,
) -> History:
    """One training run of the study: ``spec`` from ``init`` at ``lr``, told to ``say`` in one line."""
    result = compare(
        parent,
        spec,
        batches,
        inits=[init],
        eval_batches=eval_batches,
        profile=profile,
        lrs={init: lr},
        progress=progress,
        **settings,
    )
    history = result.histories[init]
    say(
        f"{spec.layers} x {spec.hidden} {init} lr={lr:g}: held-out {history.evals[0].loss:.3f} -> "
        f"{history.evals[-1].loss:.3f} ({history.steps[-1].time:.0f} s training)"
    )
    return history


def _size(
    parent: "Parent",
    spec: "DestinationSpec",
    dims: "Dims",
    run: Callable[["DestinationSpec", str, float], History],
    random_lrs: list[float],
    subclone_lrs: list[float],
    distill_inits: Sequence[str],
) -> dict[str, Any]:
    """One size of the study: both learning-rate sweeps (the subclone's may be empty: a random-init sweep run
    as its own job), then each of ``distill_inits`` at its start's best rate, and every init's best run
    against random init's."""
    sweeps = {REFERENCE_INIT: {lr: run(spec, REFERENCE_INIT, lr) for lr in random_lrs}}
    if subclone_lrs:
        sweeps["subclone"] = {lr: run(spec, "subclone", lr) for lr in subclone_lrs}
    best = _best_lrs(sweeps)
    for init in distill_inits:
        start = REFERENCE_INIT if INITS[init].strategies is None else "subclone"
        sweeps[init] = {best[start]: run(spec, init, best[start])}
    return {
        "label": f"{dims.layers} x {dims.hidden}",
        "dims": dims.to_dict(),
        "parameters": _parameters(parent, spec),
        **_summary(sweeps),
    }


def _best_lrs(sweeps: dict[str, dict[float, History]]) -> dict[str, float]:
    """Each init's learning rate with the lowest final held-out loss."""
    return {init: min(runs, key=lambda lr: runs[lr].evals[-1].loss) for init, runs in sweeps.items()}


def _summary(sweeps: dict[str, dict[float, History]]) -> dict[str, Any]:
    """A size record's measured part from its runs by init and learning rate: each init's best rate, its
    losses, its speedup over the best random run, and every run."""
    best = _best_lrs(sweeps)
    reference = sweeps[REFERENCE_INIT][best[REFERENCE_INIT]]
    chosen = {init: sweeps[init][lr] for init, lr in best.items()}
    return {
        "best_lr": best,
        "initial_loss": {init: h.evals[0].loss for init, h in chosen.items()},
        "final_loss": {init: h.evals[-1].loss for init, h in chosen.items()},
        "speedups": {init: speedup(reference, h).to_dict() for init, h in chosen.items()},
        "runs": {init: {str(lr): h.to_dict() for lr, h in runs.items()} for init, runs in sweeps.items()},
    }


def _join_sweeps(label: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record of a size and seed from records whose sweeps ran as separate jobs: every run of each, the
    best rates and speedups found again over all of them."""
    sweeps: dict[str, dict[float, History]] = {}
    for record in records:
        for init, runs in record["runs"].items():
            for lr, run in runs.items():
                if float(lr) in sweeps.get(init, {}):
                    raise ValueError(f"size {label!r}, seed {record.get('seed')}: {init} at lr {lr} was run twice")
                sweeps.setdefault(init, {})[float(lr)] = History.from_dict(run)
    return {**records[0], **_summary(sweeps)}


def _parameters(parent: "Parent", spec: "DestinationSpec") -> int:
    """The destination's parameter count, from a shape-only build (no weights are allocated)."""
    shape_plan = _shape(parent, spec)
    built = parent.family.build(parent.model, shape_plan.destination_dims, shape_plan.layers, device="meta")
    return int(sum(p.numel() for p in built.parameters()))


def _study_config(
    parent: "Parent",
    batches: Iterable[dict[str, "torch.Tensor"]],
    eval_batches: Iterable[dict[str, "torch.Tensor"]],
    profile: "Profile | None",
    sizes: list[dict[str, Any]],
    sweeps: dict[str, Any],
) -> dict[str, Any]:
    """What the study records about how it was run (``sweeps``: the learning rates and distillation), but
    its wall time."""
    reference_run = next(iter(sizes[0]["runs"][REFERENCE_INIT].values()))
    first = reference_run["config"]
    return {
        "parent": {"name": parent.name, "description": parent.description, "dims": parent.dims.to_dict()},
        "device": str(parent.input_device),
        "data": getattr(batches, "description", None),
        "heldout": getattr(eval_batches, "description", None),
        "profile": {"source": profile.source, "tokens": profile.tokens} if profile is not None else None,
        **sweeps,
        **{key: first.get(key) for key in ("steps", "eval_every", "seed")},
        "tokens_per_run": reference_run["steps"][-1]["seen"] if reference_run["steps"] else 0,
    }


def _shape(parent: "Parent", spec: "DestinationSpec"):
    return plan(parent, None, spec, width="first", scaling="none")
