"""Training a destination, and comparing initializations: how much faster does a subclone learn?

The paper's claim is about training speed: a subcloned destination reaches a randomly initialized one's
quality with several times fewer steps. This module makes that measurable.

:func:`train` is one ordinary training loop built on Hugging Face ``accelerate``: AdamW, a linear warmup
then a cosine (or linear, or constant) schedule, gradient clipping, mixed precision on GPUs (``"auto"``:
bf16 where the GPU supports it; always fp32 on a CPU, where bf16 is many times slower), and the same code
under ``accelerate launch`` on several GPUs (each process takes every P-th batch, so one step trains on P
batches). The loss is the family adapter's (next-token cross-entropy, masked-LM, image cross-entropy). It
records a :class:`History`: per step the train loss, learning rate, tokens (or images) seen and wall time;
per evaluation (before training, every ``eval_every`` steps and at the last step) the held-out loss and, for
image classifiers, the accuracy. Training stops cleanly at the next step when ``stop.is_set()`` (a notebook
Stop button) or on Ctrl-C, and returns the history so far. With ``checkpoint_dir`` every evaluation also
writes a checkpoint (model, optimizer, scheduler, random states, history), and ``resume=True`` continues
from the latest one with exactly the history an uninterrupted run would have had.

:func:`compare` trains one destination per initialization on identical batches in identical order:

* ``"random"``: the architecture's own random initialization, same shape as the subclone;
* ``"subclone"``: the paper (importance-ranked widths, middle blocks dropped, sqrt weight scaling);
* ``"subclone-calibrated"``: the same with scaling matched to the parent's output std on calibration data;
* ``"no-scaling"``, ``"no-reorder"``: the paper's ablations (no scaling; leading indices, no reordering);
* ``"uniform"``: evenly spaced indices without scaling (Xu et al.'s weight selection).

The learning rate and weight decay default to the paper's (Table 1): for language models 1e-4 / 0.1 from
random and 1e-4 / 0.001 for every inherited initialization; for vision 0.002 / 0.2 and 1e-4 / 0.005. The
:class:`Comparison` holds the histories, the plans and, per initialization, the initial and final held-out
loss (and accuracy) and the :func:`speedup` over random: the steps random needs to reach its own final
held-out loss divided by the steps the other needs to reach that same loss.

Example::

    import subclone_viz as sv
    parent = sv.load_parent("smollm2-135m")
    train = sv.text_batches("builtin", parent.tokenizer, seq_len=128, batch_size=8, shuffle=True)
    heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=128, batch_size=8, split="heldout",
                              max_batches=8)
    result = sv.compare(parent, sv.DestinationSpec(layers=8, hidden=288), train, steps=200,
                        eval_batches=heldout)
    result.summary_table()   # [{"init": "random", "final_loss": ..., "speedup": 1.0, ...}, {"init": "subclone", ...}]
    result.save("runs/smollm2-8x288")
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ._atomic import staged_directory
from .evaluate import evaluate
from .families import Family, family_of

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import DestinationSpec, SubclonePlan
    from .profile import Profile

__all__ = [
    "INITS",
    "Comparison",
    "EvalRecord",
    "History",
    "Speedup",
    "StepRecord",
    "compare",
    "default_hyperparameters",
    "speedup",
    "train",
]

SCHEDULES = ("cosine", "linear", "constant")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
DEFAULT_WARMUP_FRACTION = 0.05
DEFAULT_EVALUATIONS = 10
PROFILE_TOKENS = 4096
REFERENCE_INIT = "random"
_CHECKPOINT_PREFIX = "step-"
_TRAINER_STATE = "trainer_state.json"
_HISTORY_FILE = "history.json"
# Settings a resumed run must share with the checkpoint it continues, or its history would not be one run.
_RESUME_KEYS = ("steps", "lr", "weight_decay", "warmup", "schedule", "seed", "max_grad_norm", "eval_every")

# Initialization name -> plan strategies (None: the architecture's own random initialization).
INITS: dict[str, dict[str, str] | None] = {
    "random": None,
    "subclone": dict(depth="middle", width="importance", scaling="sqrt"),
    "subclone-calibrated": dict(depth="middle", width="importance", scaling="calibrated"),
    "no-scaling": dict(depth="middle", width="importance", scaling="none"),
    "no-reorder": dict(depth="middle", width="first", scaling="sqrt"),
    "uniform": dict(depth="middle", width="uniform", scaling="none"),
}

# The paper's Table 1: (learning rate, weight decay) from random init and from subcloning.
_PAPER_HYPERPARAMETERS = {
    "language": {"random": (1e-4, 0.1), "inherited": (1e-4, 0.001)},
    "vision": {"random": (2e-3, 0.2), "inherited": (1e-4, 0.005)},
}


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


# --------------------------------------------------------------------------------------------------------
# Records


@dataclass
class StepRecord:
    """One optimizer step: the loss of its batch and the learning rate it used."""

    step: int  # steps done, counting this one
    seen: int  # tokens (or images) trained on so far
    loss: float
    lr: float
    time: float  # seconds of training so far (a resumed run continues the clock)


@dataclass
class EvalRecord:
    """One held-out evaluation, after ``step`` steps (0: before training)."""

    step: int
    seen: int
    loss: float
    accuracy: float | None
    time: float


@dataclass
class History:
    """Everything one training run recorded; plain data that round-trips through JSON."""

    label: str = ""
    unit: str = "tokens"  # what ``seen`` counts: "tokens" (non-padding) or "images"
    config: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def last_step(self) -> int:
        """Steps done (0 before training)."""
        return max([r.step for r in self.steps] + [r.step for r in self.evals] + [0])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "History":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"not a History: unknown keys {sorted(unknown)}; expected {sorted(known)}")
        values = dict(data)
        values["steps"] = [StepRecord(**r) for r in data.get("steps", [])]
        values["evals"] = [EvalRecord(**r) for r in data.get("evals", [])]
        return cls(**values)

    def save_json(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        return _write_text(Path(path), json.dumps(self.to_dict(), indent=1), overwrite)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """One row per step number; the eval columns are filled where an evaluation happened."""
        return _write_text(Path(path), self.csv_text(), overwrite)

    def csv_text(self) -> str:
        by_step: dict[int, dict[str, Any]] = {}
        for r in self.steps:
            row = by_step.setdefault(r.step, {})
            row.update(step=r.step, seen=r.seen, train_loss=r.loss, lr=r.lr, train_time=r.time)
        for r in self.evals:
            row = by_step.setdefault(r.step, {})
            row.setdefault("step", r.step)
            row.setdefault("seen", r.seen)
            row.update(eval_loss=r.loss, eval_accuracy=r.accuracy, eval_time=r.time)
        columns = ["step", "seen", "train_loss", "lr", "train_time", "eval_loss", "eval_accuracy", "eval_time"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for step in sorted(by_step):
            writer.writerow({c: "" if by_step[step].get(c) is None else by_step[step][c] for c in columns})
        return out.getvalue()


def _write_text(path: Path, text: str, overwrite: bool) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, so no half file is left."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


# --------------------------------------------------------------------------------------------------------
# Training


def _lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier for the optimizer step with index ``step`` (0-based).

    Warmup ramps linearly over ``warmup`` steps, its first step already above 0, reaching 1 at step
    ``warmup``; then cosine or linear decay towards 0, never reaching it on the last step (a zero learning
    rate would waste that step).
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: biases, norm weights and the tokens/positions timm lists are left alone."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and name not in skip else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _resolve_mixed_precision(mixed_precision: str) -> str:
    if mixed_precision not in MIXED_PRECISIONS:
        choices = ", ".join(MIXED_PRECISIONS)
        raise ValueError(f"mixed_precision={mixed_precision!r} is not valid; choose one of {choices}")
    on_gpu = torch.cuda.is_available()
    if mixed_precision == "auto":
        return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "no"
    if mixed_precision != "no" and not on_gpu:
        warnings.warn(f"mixed_precision={mixed_precision!r} ignored on a CPU: training in fp32", stacklevel=3)
        return "no"
    return mixed_precision


def _accelerator(mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision:
        # accelerate keeps one process-wide state; a notebook may train in fp32, then in bf16, in one kernel.
        AcceleratorState._reset_state()
    # The scheduler counts optimizer steps; accelerate would otherwise step it once per process.
    return Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)


def _cycled(batches: Iterable[dict[str, torch.Tensor]], start: int) -> Iterator[dict[str, torch.Tensor]]:
    """The batches from position ``start`` on, starting over whenever they run out."""
    if hasattr(batches, "__len__") and len(batches) > 0:
        start %= len(batches)
    position = 0
    while True:
        served = False
        for batch in batches:
            served = True
            if position >= start:
                yield batch
            position += 1
        if not served:
            raise ValueError("batches is empty: nothing to train on")


def _counted(batch: dict[str, torch.Tensor]) -> int:
    """Tokens (non-padding) or images in a batch."""
    if "pixel_values" in batch:
        return int(batch["pixel_values"].shape[0])
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def _checkpoints(directory: Path) -> list[Path]:
    """Finished checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(_CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(_CHECKPOINT_PREFIX):]))


def _save_checkpoint(accelerator, directory: Path, step: int, history: History) -> None:
    """Write the full training state to ``directory/step-NNNNNNNN`` via a staging directory, then drop older ones."""
    final = directory / f"{_CHECKPOINT_PREFIX}{step:08d}"
    staging = directory / f".staging-{final.name}"
    if accelerator.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    # A tied LM head is saved once; the tie is part of the model, so reloading restores it. Not worth a warning.
    shared_tensor_log = logging.getLogger("accelerate.utils.other")
    level = shared_tensor_log.level
    shared_tensor_log.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(staging), safe_serialization=True)
    finally:
        shared_tensor_log.setLevel(level)
    if accelerator.is_main_process:
        (staging / _HISTORY_FILE).write_text(json.dumps(history.to_dict()))
        (staging / _TRAINER_STATE).write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in _checkpoints(directory):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _check_resumable(saved: dict[str, Any], config: dict[str, Any], checkpoint: Path) -> None:
    different = {k: (saved.get(k), config[k]) for k in _RESUME_KEYS if saved.get(k) != config[k]}
    if different:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in different.items())
        raise ValueError(
            f"cannot resume from {checkpoint}: it was trained with other settings ({details}). Resume with the "
            f"same settings, or use a new checkpoint_dir"
        )


def train(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    steps: int,
    lr: float,
    weight_decay: float,
    warmup: int | None = None,
    schedule: str = "cosine",
    eval_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    eval_every: int | None = None,
    family: Family | None = None,
    callback: Callable[[History, StepRecord | EvalRecord], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    seed: int = 0,
    mixed_precision: str = "auto",
    max_grad_norm: float | None = 1.0,
    progress: bool = True,
    stop: StopSignal | None = None,
    label: str = "",
) -> History:
    """Train ``model`` in place for ``steps`` optimizer steps and return what happened.

    Args:
        model: the model to train (left in eval mode, on the training device, when done).
        batches: re-iterable dicts of CPU tensors; cycled when ``steps`` exceeds their number.
        steps: optimizer steps (under ``accelerate launch`` each step takes one batch per process).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay, applied to weight matrices only.
        warmup: linear warmup steps (default 5% of ``steps``).
        schedule: after warmup, ``"cosine"``, ``"linear"`` (both towards 0) or ``"constant"``.
        eval_batches: held-out batches; without them nothing is evaluated.
        eval_every: steps between evaluations (default ``steps // 10``); there is always one before training
            and one after the last step.
        family: the model's adapter (default ``family_of(model)``), which defines the loss.
        callback: ``callback(history, record)`` after every step and every evaluation (live plots).
        checkpoint_dir: write a checkpoint at every evaluation, keeping the latest.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (start afresh if there is none).
        seed: seeds Python, NumPy and torch (dropout), so equal seeds give equal histories.
        mixed_precision: ``"auto"`` (bf16 on a GPU that supports it, else fp32), ``"no"``, ``"bf16"``,
            ``"fp16"``; always fp32 on a CPU.
        max_grad_norm: clip the gradient norm to this (None: no clipping).
        progress: show a progress bar with the loss.
        stop: any object with ``is_set()`` (a ``threading.Event``); when set, training stops before the next step.
        label: a name for the run, kept in the history.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be positive")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} must be >= 0")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not a schedule; choose one of {', '.join(SCHEDULES)}")
    warmup = round(DEFAULT_WARMUP_FRACTION * steps) if warmup is None else warmup
    if not 0 <= warmup <= steps:
        raise ValueError(f"warmup={warmup!r} must be between 0 and steps={steps}")
    eval_every = max(1, steps // DEFAULT_EVALUATIONS) if eval_every is None else eval_every
    if eval_every < 1:
        raise ValueError(f"eval_every={eval_every!r} must be a positive number of steps")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    precision = _resolve_mixed_precision(mixed_precision)
    family = family or family_of(model)
    checkpoint_dir = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else None

    set_seed(seed)
    accelerator = _accelerator(precision)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(_lr_factor, warmup=warmup, total=steps, schedule=schedule)
    )
    model.train()
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    config = dict(
        steps=steps, lr=lr, weight_decay=weight_decay, warmup=warmup, schedule=schedule, seed=seed,
        max_grad_norm=max_grad_norm, eval_every=eval_every, mixed_precision=precision,
        num_processes=accelerator.num_processes, device=str(accelerator.device),
        batches=getattr(batches, "description", None), eval_batches=getattr(eval_batches, "description", None),
    )
    unit = "images" if family.task == "image-classification" else "tokens"
    history = History(label=label, unit=unit, config=config)
    start = 0
    latest = _checkpoints(checkpoint_dir)[-1:] if resume else []
    if latest:
        saved = History.from_dict(json.loads((latest[0] / _HISTORY_FILE).read_text()))
        _check_resumable(saved.config, config, latest[0])
        accelerator.load_state(str(latest[0]))
        start = json.loads((latest[0] / _TRAINER_STATE).read_text())["step"]
        history = History(label=label or saved.label, unit=unit, config=config, steps=saved.steps, evals=saved.evals)
    clock_offset = max([r.time for r in history.steps + history.evals] + [0.0])
    seen = max([r.seen for r in history.steps + history.evals] + [0])
    began = time.perf_counter()

    def elapsed() -> float:
        return clock_offset + time.perf_counter() - began

    def run_eval(step: int) -> None:
        if eval_batches is None:
            return
        result = evaluate(prepared, family, eval_batches)
        record = EvalRecord(step=step, seen=seen, loss=result.loss, accuracy=result.accuracy, time=elapsed())
        history.evals.append(record)
        if callback is not None:
            callback(history, record)
        if checkpoint_dir is not None and step > 0:
            _save_checkpoint(accelerator, checkpoint_dir, step, history)

    # Each process takes every P-th batch: step s trains on batches s*P .. s*P + P-1 across the processes.
    processes, rank = accelerator.num_processes, accelerator.process_index
    stream = itertools.islice(_cycled(batches, start * processes), rank, None, processes)
    bar = tqdm(total=steps, initial=start, desc=label or "train", unit="step", leave=False,
               disable=not progress or not accelerator.is_main_process)
    try:
        if start == 0:
            run_eval(0)
        for step in range(start + 1, steps + 1):
            if stop is not None and stop.is_set():
                history.stopped_early = True
                break
            batch = {k: v.to(accelerator.device) for k, v in next(stream).items()}
            optimizer.zero_grad(set_to_none=True)
            loss = family.loss(prepared, batch)
            accelerator.backward(loss)
            if max_grad_norm is not None:
                accelerator.clip_grad_norm_(prepared.parameters(), max_grad_norm)
            used_lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            totals = torch.tensor([loss.item(), _counted(batch)], dtype=torch.float64, device=accelerator.device)
            if processes > 1:
                totals = accelerator.reduce(totals, reduction="sum")
            seen += int(totals[1])
            record = StepRecord(step=step, seen=seen, loss=float(totals[0]) / processes, lr=used_lr, time=elapsed())
            history.steps.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.4f}", refresh=False)
            if callback is not None:
                callback(history, record)
            if step % eval_every == 0 or step == steps:
                run_eval(step)
    except KeyboardInterrupt:
        history.stopped_early = True
    finally:
        bar.close()
        accelerator.unwrap_model(prepared, keep_fp32_wrapper=False).eval()
        accelerator.free_memory()
    return history


# --------------------------------------------------------------------------------------------------------
# Speedup


@dataclass
class Speedup:
    """How many times fewer steps ``other`` needs than the reference to reach the reference's final loss.

    ``speedup_lower_bound``: ``other`` was already at the target at its first evaluation, so the true
    speedup is at least ``speedup`` (the reference's steps over the first evaluation step after 0).
    ``reached`` False: ``other`` never got there; ``speedup`` is then the reference's steps over the steps
    ``other`` trained, an upper bound below 1. ``speedup`` is None when it cannot be defined (the
    reference never improved on its first evaluation, or ``other`` has no evaluation after its first).
    """

    speedup: float | None
    speedup_lower_bound: bool
    reached: bool
    target_loss: float
    reference_steps: float | None  # steps the reference needs to reach target_loss (interpolated)
    steps: float | None  # steps ``other`` needs (None when not reached)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def steps_to_reach(evals: list[EvalRecord], target: float) -> float | None:
    """The first step at which the held-out loss is at or below ``target``, linearly interpolated between
    evaluations; None if it never gets there."""
    for index, record in enumerate(evals):
        if record.loss <= target:
            if index == 0:
                return float(record.step)
            before = evals[index - 1]
            fraction = (before.loss - target) / (before.loss - record.loss)
            return before.step + fraction * (record.step - before.step)
    return None


def speedup(reference: History, other: History) -> Speedup:
    """The speedup of ``other`` over ``reference`` (usually random init) at the reference's final held-out loss."""
    if not reference.evals or not other.evals:
        missing = "reference" if not reference.evals else "other"
        raise ValueError(f"the {missing} history has no evaluations; train with eval_batches to measure a speedup")
    target = reference.evals[-1].loss
    reference_steps = steps_to_reach(reference.evals, target)
    steps = steps_to_reach(other.evals, target)

    def result(value: float | None, lower_bound: bool = False, reached: bool = True) -> Speedup:
        return Speedup(value, lower_bound, reached, target, reference_steps, steps if reached else None)

    if not reference_steps:
        return result(None)
    if steps is None:
        return result(reference_steps / max(other.evals[-1].step, 1), reached=False)
    first = other.evals[0]
    if steps <= first.step:
        later = [r.step for r in other.evals if r.step > 0]
        bound_step = first.step if first.step > 0 else (later[0] if later else None)
        return result(reference_steps / bound_step if bound_step else None, lower_bound=True)
    return result(reference_steps / steps)


# --------------------------------------------------------------------------------------------------------
# Comparing initializations


def default_hyperparameters(task: str, init: str) -> tuple[float, float]:
    """(learning rate, weight decay) of the paper's Table 1 for a family task and an initialization."""
    kind = "vision" if task == "image-classification" else "language"
    return _PAPER_HYPERPARAMETERS[kind]["random" if init == REFERENCE_INIT else "inherited"]


@dataclass
class Comparison:
    """Histories, plans and metrics of one destination shape trained from several initializations."""

    histories: dict[str, History]
    plans: dict[str, dict[str, Any] | None]  # the SubclonePlan of each init as a dict; None for random
    metrics: dict[str, dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False

    def summary_table(self) -> list[dict[str, Any]]:
        """One row per initialization: hyperparameters, initial/final held-out loss and accuracy, speedup."""
        rows = []
        for init, history in self.histories.items():
            metric = self.metrics.get(init, {})
            rows.append(
                {
                    "init": init,
                    "lr": history.config.get("lr"),
                    "weight_decay": history.config.get("weight_decay"),
                    "steps": history.last_step,
                    "initial_loss": metric.get("initial_loss"),
                    "final_loss": metric.get("final_loss"),
                    "initial_accuracy": metric.get("initial_accuracy"),
                    "final_accuracy": metric.get("final_accuracy"),
                    "speedup": metric.get("speedup"),
                    "speedup_lower_bound": metric.get("speedup_lower_bound"),
                    "reached": metric.get("reached"),
                    "stopped_early": history.stopped_early,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "histories": {k: h.to_dict() for k, h in self.histories.items()},
            "plans": self.plans,
            "metrics": self.metrics,
            "config": self.config,
            "stopped_early": self.stopped_early,
        }

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``histories.json``, ``<init>.csv`` per initialization and ``summary.json`` (config, plans,
        metrics, table) into ``directory``, all at once: a staging directory renamed into place."""
        with staged_directory(directory, overwrite) as staging:
            (staging / "histories.json").write_text(
                json.dumps({k: h.to_dict() for k, h in self.histories.items()}, indent=1)
            )
            for init, history in self.histories.items():
                (staging / f"{init}.csv").write_text(history.csv_text())
            summary = {
                "config": self.config,
                "stopped_early": self.stopped_early,
                "metrics": self.metrics,
                "table": self.summary_table(),
                "plans": self.plans,
            }
            (staging / "summary.json").write_text(json.dumps(summary, indent=1))
        return Path(directory).expanduser()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Comparison":
        """Read back a directory written by :meth:`save`."""
        directory = Path(directory).expanduser()
        histories = json.loads((directory / "histories.json").read_text())
        summary = json.loads((directory / "summary.json").read_text())
        return cls(
            histories={k: History.from_dict(h) for k, h in histories.items()},
            plans=summary["plans"],
            metrics=summary["metrics"],
            config=summary["config"],
            stopped_early=summary["stopped_early"],
        )


def comparison_metrics(histories: Mapping[str, History]) -> dict[str, dict[str, Any]]:
    """Initial and final held-out loss and accuracy per run, and the speedup over ``"random"`` if it ran."""
    reference = histories.get(REFERENCE_INIT)
    metrics = {}
    for init, history in histories.items():
        if not history.evals:
            metrics[init] = {}
            continue
        first, last = history.evals[0], history.evals[-1]
        metric: dict[str, Any] = {
            "initial_loss": first.loss,
            "final_loss": last.loss,
            "initial_accuracy": first.accuracy,
            "final_accuracy": last.accuracy,
        }
        if reference is not None and reference.evals:
            metric.update(speedup(reference, history).to_dict())
        metrics[init] = metric
    return metrics


def _check_inits(inits: Iterable[str], overrides: Mapping[str, Mapping[str, float] | None]) -> list[str]:
    inits = list(inits)
    valid = ", ".join(map(repr, INITS))
    unknown = [name for name in inits if name not in INITS]
    if unknown:
        raise ValueError(f"unknown initialization(s) {unknown}; valid ones: {valid}")
    if not inits or len(set(inits)) != len(inits):
        raise ValueError(f"inits={inits!r} must name each initialization once, at least one of {valid}")
    for argument, mapping in overrides.items():
        extra = sorted(set(mapping or {}) - set(inits))
        if extra:
            raise ValueError(f"{argument} names {extra}, which are not among inits={inits}")
    return inits


def _destination(
    parent: "Parent",
    spec: "DestinationSpec",
    init: str,
    profile: "Profile | None",
    calibration_batches: Iterable[dict[str, torch.Tensor]],
    seed: int,
) -> tuple[nn.Module, "SubclonePlan | None"]:
    """The destination an initialization starts from, in fp32 (mixed precision autocasts, it never trains
    half-precision weights), and the plan it was sliced by (None for random init)."""
    from .plan import plan
    from .subclone import subclone

    recipe = INITS[init]
    if recipe is None:
        # The shape the subclone would have; random init ignores which indices a plan keeps.
        shape = plan(parent, None, spec, width="first", scaling="none")
        torch.manual_seed(seed)
        model = parent.family.build(parent.model, shape.destination_dims, shape.layers, device=parent.input_device)
        return model.float(), None
    chosen = plan(parent, profile, spec, **recipe)
    return subclone(parent, chosen, calibration_batches=calibration_batches).float(), chosen


def compare(
    parent: "Parent",
    spec: "DestinationSpec",
    batches: Iterable[dict[str, torch.Tensor]],
    inits: Iterable[str] = ("random", "subclone"),
    steps: int = 200,
    eval_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    profile: "Profile | None" = None,
    lrs: Mapping[str, float] | None = None,
    weight_decays: Mapping[str, float] | None = None,
    calibration_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    seed: int = 0,
    callback: Callable[[History, StepRecord | EvalRecord], None] | None = None,
    stop: StopSignal | None = None,
    **train_kwargs: Any,
) -> Comparison:
    """Train one destination of shape ``spec`` per initialization, on the same batches in the same order.

    Args:
        parent: the loaded parent.
        spec: the destination's shape (the same for every initialization).
        batches: training batches (also the profiling and calibration data unless given).
        inits: names from :data:`INITS`, trained in this order.
        steps: optimizer steps per initialization.
        eval_batches: held-out batches for the loss curves and the speedup; without them the first few
            training batches are used (with a warning: that measures fitting, not generalization).
        profile: the parent's profile; computed from ``batches`` (a few thousand tokens) when an init needs it.
        lrs, weight_decays: per-init overrides of the paper's defaults (:func:`default_hyperparameters`).
        calibration_batches: for ``"subclone-calibrated"`` (default ``batches``).
        seed: one seed for every run (random init and dropout).
        callback: ``callback(history, record)`` during every run; ``history.label`` names the init.
        stop: stops the current run at the next step and skips the remaining ones.
        **train_kwargs: passed on to :func:`train` (warmup, schedule, eval_every, mixed_precision,
            checkpoint_dir (one subdirectory per init), resume, progress...).
    """
    from .profile import profile as profile_parent

    lrs, weight_decays = dict(lrs or {}), dict(weight_decays or {})
    inits = _check_inits(inits, {"lrs": lrs, "weight_decays": weight_decays})
    reserved = {"model", "lr", "weight_decay", "label", "family"} & set(train_kwargs)
    if reserved:
        raise ValueError(f"compare sets {sorted(reserved)} itself; use lrs=/weight_decays= for per-init values")
    eval_source = getattr(eval_batches, "description", "held-out batches")
    if eval_batches is None:
        warnings.warn(
            "compare() without eval_batches evaluates on the first training batches: pass held-out batches to "
            "measure generalization", stacklevel=2,
        )
        eval_batches = list(itertools.islice(batches, 4))
        eval_source = "the first 4 training batches"
    needs_profile = any(INITS[i] is not None and INITS[i]["width"] == "importance" for i in inits)
    if profile is None and needs_profile:
        show_progress = train_kwargs.get("progress", True)
        profile = profile_parent(parent, batches, max_tokens=PROFILE_TOKENS, progress=show_progress)
    checkpoint_root = train_kwargs.pop("checkpoint_dir", None)

    task = parent.family.task
    histories: dict[str, History] = {}
    plans: dict[str, dict[str, Any] | None] = {}
    stopped = False
    for init in inits:
        default_lr, default_wd = default_hyperparameters(task, init)
        model, chosen = _destination(parent, spec, init, profile, calibration_batches or batches, seed)
        plans[init] = chosen.to_dict() if chosen is not None else None
        history = train(
            model, batches, steps, lrs.get(init, default_lr), weight_decays.get(init, default_wd),
            eval_batches=eval_batches, family=parent.family, callback=callback, seed=seed, stop=stop, label=init,
            checkpoint_dir=Path(checkpoint_root) / init if checkpoint_root is not None else None, **train_kwargs,
        )
        histories[init] = history
        del model
        if history.stopped_early:
            stopped = True
            break
    dims = spec.resolve(parent.dims, parent.family.heads_follow_hidden)
    config = {
        "parent": {"name": parent.name, "description": parent.description, "dims": parent.dims.to_dict()},
        "destination": dims.to_dict(),
        "inits": inits,
        "steps": steps,
        "seed": seed,
        "batches": getattr(batches, "description", None),
        "eval_batches": eval_source,
        "profile": {"source": profile.source, "tokens": profile.tokens} if profile is not None else None,
        "reference": REFERENCE_INIT if REFERENCE_INIT in histories else None,
    }
    return Comparison(histories, plans, comparison_metrics(histories), config, stopped_early=stopped)
