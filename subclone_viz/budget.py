"""Choose a size for a training budget: each cell of a size grid trains a short pilot, and its held-out loss
at the budget is forecast from it, with an interval.

The loss of a subclone *before* training points the wrong way exactly where help is needed (a harsh cut can
start worse than random init and still train faster). :func:`budget_grid` answers the user's question, *for
my budget, which size reaches the lowest loss, and how sure is that?*:

* the costs of every (layers x hidden) cell come from :func:`~subclone_viz.sizing.size_grid` (parameters,
  FLOPs per token, measured latency and memory, the loss before training);
* each valid cell and initialization trains a **pilot**: the first ``pilot_fraction`` of its own run, under
  the schedule of the whole run (warmup, then cosine to ``final_lr_ratio`` of the peak by default);
* the pilot's held-out losses are forecast to the end of the run with :func:`~subclone_viz.forecast.forecast`.

**Iso-compute:** under a FLOPs budget (``flops=``, 6 x parameters x tokens; a mixture of experts counts the
parameters one token uses, its active parameters, as do the pilots' cost) a smaller destination gets more
tokens, hence more steps, and its schedule is stretched to its own length; under a token budget every cell
trains the same steps. **The chooser's own cost** is :attr:`BudgetGrid.pilot_cost`: the pilots' FLOPs over
those of training the cell the forecast picks. Pilots are cached under ``cache_dir()/budget_pilots`` (keyed
on the parent, profile, cell, initialization, settings, batches and device; written atomically with a
checksum, a damaged file is retrained), so a second look is instant, and :meth:`BudgetGrid.at` re-forecasts
at another budget from the stored pilots without training (the pilots' early points are taken as those of
the re-stretched schedule: near the start, a cosine of another length barely differs). Under ``accelerate
launch`` the pilots are dealt to the processes, each trains its share alone
(:func:`~subclone_viz.distributed.alone`), and every process returns the whole grid.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.text_batches("builtin", parent.tokenizer, seq_len=16, batch_size=2, shuffle=True)
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=16, batch_size=2, split="heldout",
    ...                           max_batches=1)
    >>> prof = sv.profile(parent, heldout, progress=False)
    >>> grid = sv.budget_grid(parent, prof, [2, 4], [192], train, heldout, tokens=32 * 40, pilot_fraction=0.25,
    ...                       progress=False)
    >>> [(c["layers"], c["steps"], c["pilot_steps"]) for c in grid.cells]   # 40 steps of 32 tokens; 6 evaluations
    [(2, 40, 12), (4, 40, 12)]
    >>> best = grid.best()
    >>> best["forecast"]["low"] <= best["forecast"]["loss"] <= best["forecast"]["high"]
    True
    >>> len(grid.at(tokens=32 * 80).cells[0]["forecast"])     # re-forecast from the cached pilots: no training
    3
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import distributed
from ._atomic import DamagedFileError, note_rebuild, read_cache_file, write_cache_file
from ._version import __version__
from .compare import INITS, default_hyperparameters, initial_destination
from .data import cache_dir
from .errors import UserError
from .forecast import DEFAULT_PRIOR, ForecastPrior, LearningCurve, forecast
from .parent import parent_fingerprint
from .readers import register_reader
from .records import Record, register_record
from .sizing import (
    COSTS,
    batches_digest,
    cache_digest,
    device_name,
    json_ready,
    profile_key,
    size_grid,
)
from .train import History, TrainSettings, train

if TYPE_CHECKING:
    import torch

    from .parent import Parent
    from .profile import Profile

__all__ = ["DEFAULT_LRS", "BudgetError", "BudgetGrid", "budget_grid", "read_pilot"]

DEFAULT_LRS = {"subclone": 1e-3, "random": 3e-3}  # each init's best of the speedup study's sweep on SmolLM2
PILOT_EVALUATIONS = 6  # held-out evaluations per pilot: MIN_POINTS and room for the burn-in


class BudgetError(UserError, ValueError):
    """A budget or pilot setting that cannot be met."""


# A budget grid's file holds exactly these fields, written and read in this order.
_FIELDS = (
    "parent",
    "tokens",
    "flops",
    "tokens_per_step",
    "settings",
    "lrs",
    "prior",
    "cells",
    "device",
    "cache_hits",
    "extra",
)


@register_record
@dataclass
class BudgetGrid(Record):
    """Per cell and initialization: its costs, the loss before training, the steps the budget gives it, its
    pilot's held-out losses and the forecast at the budget."""

    FORMAT = "subclone_viz.budget_grid"
    VERSION = 1

    parent: str
    tokens: float | None  # the budget, in tokens per run, or
    flops: float | None  # in FLOPs per run (6 x parameters x tokens): iso-compute
    tokens_per_step: int
    settings: dict[str, Any]  # the TrainSettings every run shares (lr: per init in ``lrs``)
    lrs: dict[str, float]
    prior: dict[str, Any]
    cells: list[dict[str, Any]]
    device: str = ""
    cache_hits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.flops is None):
            raise ValueError("a budget grid has one budget: tokens or flops")
        for cell in self.cells:
            missing = {"layers", "hidden", "init", "params", "steps", "pilot_steps", "pilot", "forecast"} - set(cell)
            if missing:
                raise ValueError(f"a cell lacks {sorted(missing)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BudgetGrid":
        values = {k: data[k] for k in _FIELDS}
        ForecastPrior.from_dict(values["prior"])
        if not isinstance(values["cells"], list) or not all(isinstance(c, dict) for c in values["cells"]):
            raise ValueError("'cells' must be a list of objects")
        if not isinstance(values["settings"], dict) or not isinstance(values["lrs"], dict):
            raise ValueError("'settings' and 'lrs' must be objects")
        if not (isinstance(values["tokens_per_step"], int) and values["tokens_per_step"] > 0):
            raise ValueError(f"tokens_per_step={values['tokens_per_step']!r} must be a positive integer")
        for cell in values["cells"]:
            _check_cell(cell, values["lrs"])
        return cls(**values)

    @property
    def pilot_cost(self) -> float:
        """The pilots' FLOPs over those of training the cell the forecast picks at the budget."""
        best = self.best()
        pilots = sum(6.0 * _active(c) * c["pilot_steps"] * self.tokens_per_step for c in self.cells)
        return pilots / (6.0 * _active(best) * best["steps"] * self.tokens_per_step)

    def best(self, init: str | None = None) -> dict[str, Any]:
        """The cell with the lowest forecast loss (of ``init`` only, if given)."""
        chosen = [c for c in self.cells if init is None or c["init"] == init]
        if not chosen:
            raise BudgetError(f"no cell of init {init!r}; the grid has {sorted({c['init'] for c in self.cells})}")
        return min(chosen, key=lambda c: c["forecast"]["loss"])

    def pareto_front(self, cost: str = "params", init: str | None = None) -> list[dict[str, Any]]:
        """The cells no other beats on both ``cost`` and forecast loss, cheapest first."""
        if cost not in COSTS:
            raise BudgetError(f"cost={cost!r} is not a cost: choose one of {', '.join(COSTS)}")
        cells = [c for c in self.cells if (init is None or c["init"] == init) and math.isfinite(c.get(cost, math.nan))]
        front = [
            c
            for c in cells
            if not any(
                o[cost] <= c[cost]
                and o["forecast"]["loss"] <= c["forecast"]["loss"]
                and (o[cost] < c[cost] or o["forecast"]["loss"] < c["forecast"]["loss"])
                for o in cells
            )
        ]
        return sorted(front, key=lambda c: c[cost])

    def at(self, tokens: float | None = None, flops: float | None = None) -> "BudgetGrid":
        """The same pilots forecast at another budget (no training)."""
        _check_budget(tokens, flops)
        prior = ForecastPrior.from_dict(self.prior)
        cells = [
            _forecast_cell(dict(c), self.settings, self.lrs[c["init"]], self.tokens_per_step, tokens, flops, prior)
            for c in self.cells
        ]
        return replace(self, tokens=tokens, flops=flops, cells=cells)

    def table(self) -> list[dict[str, Any]]:
        """One row per cell: size, init, steps, loss before training and the forecast with its interval."""
        return [
            {
                "size": f"{c['layers']} x {c['hidden']}",
                "init": c["init"],
                "params": c["params"],
                "steps": c["steps"],
                "initial_loss": c.get("initial_loss"),
                **c["forecast"],
            }
            for c in self.cells
        ]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_cell(cell: dict[str, Any], lrs: dict[str, Any]) -> None:
    """A cell read back: its init has a rate, its counts are counts, its pilot and forecast are numbers."""
    where = f"cell {cell.get('layers')!r} x {cell.get('hidden')!r}"
    if cell.get("init") not in lrs or not _number(lrs[cell["init"]]):
        raise ValueError(f"{where}: init {cell.get('init')!r} has no learning rate in 'lrs'")
    optional = ("active_params",) if "active_params" in cell else ()  # cells saved before it was counted lack it
    for name in ("layers", "hidden", "params", "steps", "pilot_steps", *optional):
        if not isinstance(cell.get(name), int) or isinstance(cell.get(name), bool) or cell[name] < 1:
            raise ValueError(f"{where}: {name}={cell.get(name)!r} must be a positive integer")
    pilot, result = cell.get("pilot"), cell.get("forecast")
    if (
        not isinstance(pilot, dict)
        or not isinstance(pilot.get("steps"), list)
        or not isinstance(pilot.get("losses"), list)
        or len(pilot["steps"]) != len(pilot["losses"])
        or not all(map(_number, pilot["steps"] + pilot["losses"]))
    ):
        raise ValueError(f"{where}: 'pilot' must hold equally long lists of numbers 'steps' and 'losses'")
    if not isinstance(result, dict) or not all(_number(result.get(k)) for k in ("loss", "low", "high")):
        raise ValueError(f"{where}: 'forecast' must hold the numbers loss, low and high")


def _check_budget(tokens: float | None, flops: float | None) -> None:
    if (tokens is None) == (flops is None):
        raise BudgetError(
            "give one budget: tokens=... (every size trains as many tokens) or flops=... "
            "(iso-compute: smaller sizes train more tokens)"
        )
    value = tokens if tokens is not None else flops
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise BudgetError(f"budget {value!r} must be a positive number of {'tokens' if tokens else 'FLOPs'}")


def _run_settings(settings: Mapping[str, Any], lr: float, steps: int) -> TrainSettings:
    return TrainSettings(**{**settings, "lr": lr, "steps": steps, "warmup": None, "eval_every": None})


def _active(cell: dict[str, Any]) -> int:
    """The parameters one token of ``cell`` uses (a mixture of experts' active ones; cells saved before: all)."""
    return cell.get("active_params", cell["params"])


def _cell_steps(params: int, tokens_per_step: int, tokens: float | None, flops: float | None) -> int:
    """The steps a cell trains at the budget: the token budget, or the FLOPs budget's tokens for its size."""
    run_tokens = tokens if tokens is not None else flops / (6.0 * params)
    return max(1, int(run_tokens // tokens_per_step))


def _forecast_cell(
    cell: dict[str, Any],
    settings: Mapping[str, Any],
    lr: float,
    tokens_per_step: int,
    tokens: float | None,
    flops: float | None,
    prior: ForecastPrior,
) -> dict[str, Any]:
    """The cell with its steps at the budget and its pilot forecast to them."""
    steps = _cell_steps(_active(cell), tokens_per_step, tokens, flops)
    pilot = cell["pilot"]
    cell["steps"] = steps
    if pilot["steps"][-1] > steps:
        raise BudgetError(
            f"the budget gives {cell['layers']} x {cell['hidden']} {steps} steps, fewer than its "
            f"pilot's {pilot['steps'][-1]}: choose a larger budget or a new grid"
        )
    curve = LearningCurve(
        pilot["steps"],
        pilot["losses"],
        _run_settings(settings, lr, steps).learning_rates(),
        tokens_per_step=tokens_per_step,
        parameters=cell["params"],
    )
    result = forecast(curve, steps=steps, prior=prior)
    cell["forecast"] = {"loss": result.loss, "low": result.low, "high": result.high}
    return cell


def read_pilot(path: str | os.PathLike) -> dict[str, Any] | None:
    """A cached pilot, ``{"key": ..., "history": History}``, or None when there is none; a damaged one raises
    :class:`~subclone_viz._atomic.DamagedFileError` naming it."""
    path = Path(path)
    payload = read_cache_file(path)
    if payload is None:
        return None
    try:
        record = json.loads(payload)
        if not isinstance(record, dict) or "key" not in record:
            raise ValueError("it is not an object with a 'key'")
        history = History.from_dict(record["history"])
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise DamagedFileError(f"{path} is not a budget pilot record ({error})") from error
    return {"key": record["key"], "history": history}


PILOT_READER = register_reader(
    "budget-pilot",
    read_pilot,
    "one cached pilot run of the budget chooser (cache_dir()/budget_pilots)",
    cache=True,
)


def _pilot(
    parent: "Parent",
    profile: "Profile | None",
    spec: Any,
    init: str,
    settings: TrainSettings,
    pilot_steps: int,
    batches: Any,
    eval_batches: list,
    key: dict[str, Any],
    cache: bool,
) -> tuple[History, bool]:
    """The pilot's history (read from the cache, or trained and cached) and whether it was a cache hit."""
    path = cache_dir() / "budget_pilots" / f"{cache_digest(key)}.json"
    if cache:
        try:
            record = read_pilot(path)
        except DamagedFileError as error:
            note_rebuild("budget pilot", str(error))
            record = None
        if record is not None and record["key"] == key:
            return record["history"], True
    model, _ = initial_destination(parent, spec, init, profile, eval_batches, settings.seed)

    class _AfterPilot:  # stops training once the pilot's steps are done; the schedule stays the whole run's
        done = False

        def is_set(self) -> bool:
            return self.done

    stop = _AfterPilot()

    def count(history: History, record: Any) -> None:
        stop.done = stop.done or history.last_step >= pilot_steps

    history = train(
        model,
        batches,
        settings,
        eval_batches=eval_batches,
        callback=count,
        stop=stop,
        progress=False,
        label=f"{spec.layers} x {spec.hidden} {init} pilot",
    )
    if cache:
        write_cache_file(path, json.dumps({"key": key, "history": history.to_dict()}).encode())
    return history, False


def budget_grid(
    parent: "Parent",
    profile: "Profile | None",
    layers: Sequence[int],
    hidden: Sequence[int],
    train_batches: Iterable[dict[str, "torch.Tensor"]],
    eval_batches: Iterable[dict[str, "torch.Tensor"]],
    tokens: float | None = None,
    flops: float | None = None,
    pilot_fraction: float = 0.25,
    inits: Sequence[str] = ("subclone",),
    lrs: Mapping[str, float] | None = None,
    settings: TrainSettings | None = None,
    prior: ForecastPrior | None = None,
    cache: bool = True,
    progress: bool = True,
) -> BudgetGrid:
    """Forecast every (layers x hidden) cell's held-out loss at a training budget from a short pilot.

    Under ``accelerate launch`` the pilots are dealt to the processes (every P-th pilot to each, as
    :func:`~subclone_viz.distributed.shard` deals batches); each process trains its share on its own device
    as a single process would, and every process returns the same grid of all the cells.

    Args:
        parent, profile: the parent and its profile (the subclones' importance).
        layers, hidden: the grid's axes.
        train_batches, eval_batches: training and held-out batches.
        tokens, flops: the budget per run, one of them: tokens (every size the same steps) or FLOPs
            (6 x parameters x tokens: iso-compute, smaller sizes train longer).
        pilot_fraction: the share of each run its pilot trains (0.25: a 4x extrapolation).
        inits: initializations to pilot ("subclone", "random", ...).
        lrs: peak learning rate per init (default :data:`DEFAULT_LRS`).
        settings: the schedule and the rest (default: cosine to 10% of the peak, 5% warmup); its steps, lr,
            warmup and eval_every are set per cell.
        prior: the forecast prior (default :data:`~subclone_viz.forecast.DEFAULT_PRIOR`).
        cache: read and write pilots under ``cache_dir()/budget_pilots``.
        progress: a progress bar over the pilots.
    """
    lrs = _checked_options(tokens, flops, pilot_fraction, inits, lrs)
    prior = DEFAULT_PRIOR if prior is None else prior
    base = TrainSettings.of(settings, lr=None) if settings is not None else TrainSettings(final_lr_ratio=0.1)
    shared = {k: v for k, v in base.__dict__.items() if k not in ("steps", "lr", "warmup", "eval_every")}
    schedule = {k: v for k, v in shared.items() if k != "weight_decay"}  # what the forecast reads
    heldout = list(eval_batches)
    first = next(iter(train_batches))
    tokens_per_step = (
        int(first["attention_mask"].sum()) if "attention_mask" in first else int(first["input_ids"].numel())
    )
    sizes = size_grid(parent, profile, layers, hidden, heldout, cache=cache, progress=False)
    common = json_ready(
        {
            "parent": parent_fingerprint(parent),
            "profile": profile_key(profile),
            "train": {"description": getattr(train_batches, "description", None), "first": batches_digest([first])},
            "eval": batches_digest(heldout),
            "device": device_name(parent.input_device),
            "version": __version__,
        }
    )
    budget = {"tokens": tokens, "flops": flops, "tokens_per_step": tokens_per_step, "pilot_fraction": pilot_fraction}
    jobs = _pilot_jobs(parent, sizes, inits, lrs, shared, budget, common)
    if not jobs:
        raise BudgetError(f"no valid cell in layers={list(layers)} x hidden={list(hidden)}: {sizes.reasons}")
    pilots = _run_pilots(parent, profile, jobs, train_batches, heldout, cache, progress)
    cells = [
        _forecast_cell(_pilot_cell(job, history), schedule, lrs[job["init"]], tokens_per_step, tokens, flops, prior)
        for job, (history, _) in zip(jobs, pilots)
    ]
    return BudgetGrid(
        parent=parent.name,
        tokens=tokens,
        flops=flops,
        tokens_per_step=tokens_per_step,
        settings=schedule,
        lrs={i: lrs[i] for i in inits},
        prior=prior.to_dict(),
        cells=cells,
        device=sizes.device,
        cache_hits=sum(hit for _, hit in pilots),
    )


def _checked_options(
    tokens: float | None,
    flops: float | None,
    pilot_fraction: float,
    inits: Sequence[str],
    lrs: Mapping[str, float] | None,
) -> dict[str, float]:
    """Refuse a bad budget, pilot share or init before any work; the peak learning rate of every init."""
    _check_budget(tokens, flops)
    if not 0.0 < pilot_fraction <= 1.0:
        raise BudgetError(f"pilot_fraction={pilot_fraction!r} must be in (0, 1]: the share of each run piloted")
    unknown = [i for i in inits if i not in INITS]
    if unknown or not inits:
        raise BudgetError(f"inits {list(inits)}: choose from {', '.join(INITS)}")
    rates = {**DEFAULT_LRS, **(lrs or {})}
    missing = [i for i in inits if i not in rates]
    if missing:
        raise BudgetError(f"no learning rate for {missing}: pass lrs={{{missing[0]!r}: ...}}")
    return rates


def _pilot_jobs(
    parent: "Parent",
    sizes: Any,
    inits: Sequence[str],
    lrs: Mapping[str, float],
    shared: Mapping[str, Any],
    budget: Mapping[str, Any],
    common: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One pilot per valid cell and init: its spec, costs, steps at the budget, run settings and cache key."""
    jobs = []
    for i, j, init in [
        (i, j, init)
        for i in range(len(sizes.layers))
        for j in range(len(sizes.hidden))
        for init in inits
        if not math.isnan(sizes.params[i, j])
    ]:
        spec, params = sizes.spec(i, j), int(sizes.params[i, j])
        active = int(sizes.quantity("active_params")[i, j])  # a mixture of experts' FLOPs follow these
        steps = _cell_steps(active, budget["tokens_per_step"], budget["tokens"], budget["flops"])
        eval_every = math.ceil(math.ceil(budget["pilot_fraction"] * steps) / PILOT_EVALUATIONS)
        pilot_steps = eval_every * PILOT_EVALUATIONS  # the pilot ends on an evaluation
        if pilot_steps > steps:
            raise BudgetError(
                f"the budget gives {spec.layers} x {spec.hidden} only {steps} steps: a pilot needs "
                f"{PILOT_EVALUATIONS}; give a larger budget"
            )
        weight_decay = shared["weight_decay"]
        if weight_decay is None:
            weight_decay = default_hyperparameters(parent.family.task, init)[1]
        run = replace(_run_settings({**shared, "weight_decay": weight_decay}, lrs[init], steps), eval_every=eval_every)
        key = {**common, "spec": [spec.layers, spec.hidden], "init": init, "settings": run.__dict__}
        costs = {name: float(getattr(sizes, name)[i, j]) for name in ("flops_per_token", "latency", "memory")}
        jobs.append(
            {
                "spec": spec,
                "init": init,
                "params": params,
                "active_params": active,
                "steps": steps,
                "pilot_steps": pilot_steps,
                "settings": run,
                "key": json_ready({**key, "pilot_steps": pilot_steps}),
                "costs": costs,
            }
        )
    return jobs


def _run_pilots(
    parent: "Parent",
    profile: "Profile | None",
    jobs: list[dict[str, Any]],
    batches: Any,
    heldout: list,
    cache: bool,
    progress: bool,
) -> list[tuple[History, bool]]:
    """Every job's pilot history and whether it was a cache hit, in job order, on every process.

    Under several processes each trains every P-th pilot alone (:func:`~subclone_viz.distributed.alone`),
    then all of them exchange their pilots; an error in one process is raised in every process."""
    from tqdm.auto import tqdm

    mine: list[tuple[int, History, bool]] = []
    failure: BaseException | None = None
    dealt = list(distributed.shard(list(enumerate(jobs))))
    try:
        with distributed.alone():
            for index, job in tqdm(dealt, desc="pilots", disable=not distributed.show_progress(progress), leave=False):
                history, hit = _pilot(
                    parent,
                    profile,
                    job["spec"],
                    job["init"],
                    job["settings"],
                    job["pilot_steps"],
                    batches,
                    heldout,
                    job["key"],
                    cache,
                )
                mine.append((index, history, hit))
    except Exception as error:  # noqa: BLE001 - the other processes would wait for this one's pilots forever
        failure = error
    shares = distributed.gather_objects((mine, _shareable(failure)))
    errors = [error for _, error in shares if error is not None]
    if errors:
        raise failure if failure is not None else errors[0]
    pilots = {index: (history, hit) for share, _ in shares for index, history, hit in share}
    return [pilots[index] for index in range(len(jobs))]


def _shareable(error: BaseException | None) -> BaseException | None:
    """An error another process can unpickle: itself, or a RuntimeError with its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any exception type may refuse pickling
        return RuntimeError(f"a pilot failed in another process: {type(error).__name__}: {error}")
    return error


def _pilot_cell(job: dict[str, Any], history: History) -> dict[str, Any]:
    """A cell of the grid from its job and its pilot's held-out losses (its forecast still empty)."""
    pilot = {"steps": [r.step for r in history.evals], "losses": [r.loss for r in history.evals]}
    return {
        "layers": job["spec"].layers,
        "hidden": job["spec"].hidden,
        "init": job["init"],
        "params": job["params"],
        "active_params": job["active_params"],
        **job["costs"],
        "initial_loss": pilot["losses"][0],
        "pilot_steps": job["pilot_steps"],
        "pilot": pilot,
        "steps": job["steps"],
        "forecast": {},
    }
