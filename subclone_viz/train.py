"""Training a destination: one ordinary loop, its settings and its record.

:func:`train` is built on Hugging Face ``accelerate``: AdamW, a linear warmup then a cosine (or linear, or
constant) schedule, gradient clipping, mixed precision on GPUs (``"auto"``: bf16 where the GPU supports it;
always fp32 on a CPU, where bf16 is many times slower), and the same code under ``accelerate launch`` on
several GPUs (each process takes every P-th batch, so one step trains on P batches). The loss is the family
adapter's (next-token cross-entropy, masked-LM, image cross-entropy). Every knob that shapes the run lives
in one :class:`TrainSettings`; ``train(model, batches, steps=200, lr=1e-3)`` is shorthand for
``train(model, batches, TrainSettings(steps=200, lr=1e-3))``.

With ``teacher=`` (usually the parent) the student also learns the teacher's distributions: the loss is
``(1 - a) * task loss + a * T^2 * KL(teacher || student)`` at temperature ``T`` (:func:`distillation_loss`),
the teacher running in eval mode under ``no_grad`` on the student's own inputs.

It records a :class:`History`: per step the task loss (and the distillation term), learning rate, tokens
(or images) seen and the seconds spent in training steps so far (evaluations not counted, so that a
speedup per second compares training cost); per evaluation (before training, every ``eval_every`` steps
and at the last step) the held-out loss and, for image classifiers, the accuracy. Training stops cleanly at
the next step when ``stop.is_set()`` (a notebook Stop button) or on Ctrl-C, and returns the history so far.
With ``checkpoint_dir`` every evaluation also writes a checkpoint (model, optimizer, scheduler, random
states, history), and ``resume=True`` continues from the latest one with exactly the history an
uninterrupted run would have had.

Comparing initializations (random, subclone, the paper's ablations) on identical batches, and the speedup
rule, live in :mod:`subclone_viz.compare`.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, shuffle=True)
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=2)
    >>> plan = sv.plan(parent, None, sv.DestinationSpec(layers=4, hidden=192), width="first")
    >>> history = sv.train(sv.subclone(parent, plan), batches, steps=4, lr=1e-3, weight_decay=0.001,
    ...                    eval_batches=heldout, progress=False)
    >>> [record.step for record in history.evals]   # before training, then every steps // 10 steps (at least 1)
    [0, 1, 2, 3, 4]
    >>> distilled = sv.train(sv.subclone(parent, plan), batches, steps=4, lr=1e-3, weight_decay=0.001,
    ...                      teacher=parent.model, distill_alpha=0.5, progress=False)
    >>> distilled.steps[0].distill_loss > 0         # T^2 * KL(teacher || student) on the first batch
    True
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from ._atomic import DamagedFileError, publish_directory, read_json, verify_manifest, write_file, write_manifest
from .evaluate import evaluate
from .families import Family, family_of
from .forecast import LearningCurve
from .readers import register_reader
from .records import Record, register_record
from .settings import TrainSettings, lr_factor

__all__ = ["EvalRecord", "History", "StepRecord", "TrainSettings", "distillation_loss", "train"]

_CHECKPOINT_PREFIX = "step-"
_TRAINER_STATE = "trainer_state.json"
_HISTORY_FILE = "history.json"
# Settings a resumed run must share with the checkpoint it continues, or its history would not be one run.
# The process count too: the batch stream a resumed run picks up depends on it.
_RESUME_KEYS = (
    "steps",
    "lr",
    "weight_decay",
    "warmup",
    "schedule",
    "final_lr_ratio",
    "decay_fraction",
    "seed",
    "max_grad_norm",
    "eval_every",
    "distill_alpha",
    "distill_temperature",
    "teacher",
    "num_processes",
)


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


# --------------------------------------------------------------------------------------------------------
# Records


@dataclass
class StepRecord:
    """One optimizer step: the loss of its batch and the learning rate it used."""

    step: int  # steps done, counting this one
    seen: int  # tokens (or images) trained on so far
    loss: float  # the task loss (next-token, masked-LM, image cross-entropy), also when distilling
    lr: float
    time: float  # seconds spent in training steps so far (a resumed run continues the clock)
    distill_loss: float | None = None  # T^2 * KL(teacher || student), when training with a teacher


@dataclass
class EvalRecord:
    """One held-out evaluation, after ``step`` steps (0: before training)."""

    step: int
    seen: int
    loss: float
    accuracy: float | None
    time: float  # seconds spent in training steps before this evaluation (evaluations themselves not counted)


@register_record
@dataclass
class History(Record):
    """Everything one training run recorded; plain data that round-trips through JSON (``save``/``load``)."""

    FORMAT = "subclone_viz.history"
    VERSION = 1
    READS = (0,)  # histories written before records were versioned (no format field)

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

    def curve(self, parameters: int | None = None) -> LearningCurve:
        """The run's held-out losses and its whole schedule as a :class:`~subclone_viz.forecast.LearningCurve`
        (``parameters``: the model's, for horizons in FLOPs)."""
        return LearningCurve.from_history(self, parameters=parameters)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "History":
        """A history from :meth:`to_dict`'s data (a document's ``format`` and ``version`` are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key not in ("format", "version")}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"not a training history: unknown keys {sorted(unknown)}; expected {sorted(known)}")
        try:
            values["steps"] = [StepRecord(**r) for r in values.get("steps", [])]
            values["evals"] = [EvalRecord(**r) for r in values.get("evals", [])]
        except TypeError as error:
            raise ValueError(f"not a training history: {error}") from error
        return cls(**values)

    def to_csv(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """One row per step number; the eval columns are filled where an evaluation happened."""
        return write_file(path, self.csv_text(), overwrite)

    def csv_text(self) -> str:
        by_step: dict[int, dict[str, Any]] = {}
        for r in self.steps:
            row = by_step.setdefault(r.step, {})
            row.update(
                step=r.step, seen=r.seen, train_loss=r.loss, lr=r.lr, train_time=r.time, distill_loss=r.distill_loss
            )
        for r in self.evals:
            row = by_step.setdefault(r.step, {})
            row.setdefault("step", r.step)
            row.setdefault("seen", r.seen)
            row.update(eval_loss=r.loss, eval_accuracy=r.accuracy, eval_time=r.time)
        columns = [
            "step",
            "seen",
            "train_loss",
            "lr",
            "train_time",
            "eval_loss",
            "eval_accuracy",
            "eval_time",
            "distill_loss",
        ]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for step in sorted(by_step):
            writer.writerow({c: "" if by_step[step].get(c) is None else by_step[step][c] for c in columns})
        return out.getvalue()


# --------------------------------------------------------------------------------------------------------
# Training


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
    """The precision to train in here: ``"auto"`` decided, half precision refused on a CPU."""
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

    distributed.state()  # repairs a PartialState() the user made that took this process for the only one
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision:
        # accelerate keeps one process-wide state; a notebook may train in fp32, then in bf16, in one kernel.
        AcceleratorState._reset_state()
    # The scheduler counts optimizer steps; accelerate would otherwise step it once per process.
    return Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)


def _stop_everywhere(stop: StopSignal, processes: int) -> bool:
    """Whether any process was asked to stop: all of them stop at the same step, or the others would hang."""
    if processes == 1:
        return stop.is_set()
    return bool(distributed.reduce_sum(torch.tensor([float(stop.is_set())], dtype=torch.float64)) > 0)


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
    # A file of a checkpoint's name is kept in the list, so that resuming names it instead of starting afresh.
    found = [
        p
        for p in directory.iterdir()
        if p.name.startswith(_CHECKPOINT_PREFIX) and p.name[len(_CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_CHECKPOINT_PREFIX) :]))


def _save_checkpoint(accelerator, directory: Path, step: int, history: History) -> None:
    """Write the full training state to ``directory/step-NNNNNNNN`` via a staging directory every process writes
    its part of, published by the main one (:func:`~subclone_viz._atomic.publish_directory`); then drop older
    checkpoints. Checkpoints are saved one after another, so any staging directory found here is a leftover of an
    interrupted run."""
    final = directory / f"{_CHECKPOINT_PREFIX}{step:08d}"
    staging = directory / f".staging-{final.name}"
    if accelerator.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.wait_for_everyone()
    # A tied LM head is saved once; the tie is part of the model, so reloading restores it. Not worth a warning.
    shared_tensor_log = logging.getLogger("accelerate.utils.other")
    level = shared_tensor_log.level
    shared_tensor_log.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(staging), safe_serialization=True)
    finally:
        shared_tensor_log.setLevel(level)
    accelerator.wait_for_everyone()  # every process's random states are in before the manifest lists them
    if accelerator.is_main_process:
        (staging / _HISTORY_FILE).write_text(history.to_json())
        (staging / _TRAINER_STATE).write_text(json.dumps({"step": step}))
        write_manifest(staging)
        publish_directory(staging, final, overwrite=True)
        for old in _checkpoints(directory):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def read_checkpoint(checkpoint: str | os.PathLike) -> tuple[History, int]:
    """The history and step saved in a checkpoint, after checking every file against its manifest (the model,
    optimizer and random states that ``accelerator.load_state`` reads next included); a damaged checkpoint raises
    :class:`~subclone_viz._atomic.DamagedFileError` naming it and what is wrong."""
    checkpoint = Path(checkpoint)
    problem = verify_manifest(checkpoint)
    if problem is not None:
        raise DamagedFileError(
            f"the checkpoint {checkpoint} cannot be resumed: {problem}; delete it to train from the start"
        )
    saved = History.load(checkpoint / _HISTORY_FILE)
    step = read_json(checkpoint / _TRAINER_STATE, dict).get("step")
    if not isinstance(step, int) or step < 0:
        raise DamagedFileError(f"{checkpoint / _TRAINER_STATE} holds step={step!r}, not a step count")
    return saved, step


def _check_resumable(saved: dict[str, Any], config: dict[str, Any], checkpoint: Path) -> None:
    different = {k: (saved.get(k), config[k]) for k in _RESUME_KEYS if saved.get(k) != config[k]}
    if different:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in different.items())
        raise ValueError(
            f"cannot resume from {checkpoint}: it was trained with other settings ({details}). Resume with the "
            f"same settings, or use a new checkpoint_dir"
        )


# --------------------------------------------------------------------------------------------------------
# Distillation


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(teacher || student) between the distributions softmax(logits / T), averaged over positions.

    The T^2 factor (Hinton et al., 2015) keeps the gradient's scale independent of T, so that one mixing
    weight suits every temperature.

    Args:
        student_logits: (B, T, V) language-model logits, or (B, C) class logits.
        teacher_logits: the teacher's on the same inputs. Language models are compared over their shared
            vocabulary (the first min(V_student, V_teacher) ids); classifiers must have the same classes.
        temperature: T > 0 (1: the plain distributions; higher: softer ones).
        mask: (B, T), 1 where a position counts and 0 on padding; ignored for class logits.
    """
    if student_logits.shape[:-1] != teacher_logits.shape[:-1] or student_logits.ndim not in (2, 3):
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} do not "
            f"match: distillation needs (batch, classes) or (batch, tokens, vocabulary) logits on the same inputs"
        )
    if student_logits.ndim == 2 and student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"the student has {student_logits.shape[-1]} classes and the teacher "
            f"{teacher_logits.shape[-1]}: a classifier can only learn from a teacher of the same classes"
        )
    shared = min(student_logits.shape[-1], teacher_logits.shape[-1])
    student_log_probs = nn.functional.log_softmax(student_logits[..., :shared].float() / temperature, dim=-1)
    teacher_log_probs = nn.functional.log_softmax(teacher_logits[..., :shared].float() / temperature, dim=-1)
    per_position = nn.functional.kl_div(  # sum over the vocabulary of p_teacher * (log p_teacher - log p_student)
        student_log_probs, teacher_log_probs, log_target=True, reduction="none"
    ).sum(-1)  # (B,) or (B, T)
    if mask is None or per_position.ndim == 1:
        return temperature**2 * per_position.mean()
    weights = mask.to(per_position.dtype)  # (B, T)
    return temperature**2 * (per_position * weights).sum() / weights.sum().clamp(min=1.0)


def _output_logits(output: Any) -> torch.Tensor:
    """The logits of a forward's output: a Hugging Face output's ``.logits``, or the tensor itself (timm)."""
    return output.logits if hasattr(output, "logits") else output


class _Teacher:
    """The teacher's side of distillation, run on exactly the inputs the student's forward just received.

    A forward hook on the student captures those inputs, so the teacher sees the same tokens (BERT's masked
    ones included) without any family needing a method for it. The teacher runs in eval mode (no dropout:
    its targets are the same every time) under ``no_grad``; its mode is restored by :meth:`close`.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, autocast: Callable[[], Any]):
        self.teacher, self.autocast = teacher, autocast
        self.teacher_was_training = teacher.training
        teacher.eval()
        self.captured: tuple[tuple, dict[str, Any], Any] | None = None
        self.handle = student.register_forward_hook(self._capture, with_kwargs=True)

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if module.training and torch.is_grad_enabled():  # training steps only, not evaluations
            self.captured = (args, kwargs, output)

    def loss(self, temperature: float) -> torch.Tensor:
        """T^2 * KL(teacher || student) for the student's latest training forward."""
        if self.captured is None:
            raise RuntimeError("the family's loss did not run the model's forward: there is nothing to distill")
        args, kwargs, output = self.captured
        self.captured = None
        with torch.no_grad(), self.autocast():
            teacher_output = self.teacher(*args, **kwargs)
        student_logits = _output_logits(output)
        mask = kwargs.get("attention_mask") if student_logits.ndim == 3 else None
        return distillation_loss(student_logits, _output_logits(teacher_output), temperature, mask)

    def close(self) -> None:
        self.handle.remove()
        self.teacher.train(self.teacher_was_training)


# --------------------------------------------------------------------------------------------------------
# The loop


def train(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    settings: TrainSettings | None = None,
    *,
    eval_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    teacher: nn.Module | None = None,
    family: Family | None = None,
    callback: Callable[[History, StepRecord | EvalRecord], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop: StopSignal | None = None,
    label: str = "",
    **overrides: Any,
) -> History:
    """Train ``model`` in place and return what happened.

    Args:
        model: the model to train (left in eval mode, on the training device, when done).
        batches: re-iterable dicts of CPU tensors; cycled when ``settings.steps`` exceeds their number.
        settings: the run's :class:`TrainSettings` (``lr`` and ``weight_decay`` must be set).
        eval_batches: held-out batches; without them nothing is evaluated.
        teacher: a model to distill from (usually the parent), on the training device: each step's loss
            becomes ``(1 - a) * task loss + a * T^2 * KL(teacher || student)`` with ``a`` and ``T`` the
            settings' ``distill_alpha`` and ``distill_temperature`` (see :func:`distillation_loss`). The
            teacher runs in eval mode under ``no_grad``, on the student's exact inputs; it is not trained.
        family: the model's adapter (default ``family_of(model)``), which defines the loss.
        callback: ``callback(history, record)`` after every step and every evaluation (live plots).
        checkpoint_dir: write a checkpoint at every evaluation, keeping the latest.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (start afresh if there is none).
        progress: show a progress bar with the loss.
        stop: any object with ``is_set()`` (a ``threading.Event``); when set, training stops before the next step.
        label: a name for the run, kept in the history.
        **overrides: :class:`TrainSettings` fields replacing those of ``settings`` (``steps=100, lr=1e-3``).
    """
    settings = _checked_settings(settings, overrides, resume, checkpoint_dir)
    directory = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else None
    family = family or family_of(model)
    run = _start_run(model, batches, eval_batches, settings, teacher, family, label, directory if resume else None)
    run.checkpoint_dir, run.callback = directory, callback
    bar = _progress_bar(run, label, progress)
    distiller = _Teacher(model, teacher, run.accelerator.autocast) if teacher is not None else None
    try:
        run.loop(batches, distiller, stop, bar)
    except KeyboardInterrupt:
        run.history.stopped_early = True
    finally:
        bar.close()
        if distiller is not None:
            distiller.close()
        run.accelerator.unwrap_model(run.prepared, keep_fp32_wrapper=False).eval()
        run.accelerator.free_memory()
    return run.history


def _optimizer(model: nn.Module, settings: TrainSettings) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the model's decayed and undecayed parameters, and its warmup-then-decay schedule."""
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr)
    factor = partial(
        lr_factor,
        warmup=settings.resolved_warmup,
        total=settings.steps,
        schedule=settings.schedule,
        final=settings.final_lr_ratio,
        decay=settings.decay_fraction,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _start_run(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    eval_batches: Iterable[dict[str, torch.Tensor]] | None,
    settings: TrainSettings,
    teacher: nn.Module | None,
    family: Family,
    label: str,
    resume_from: Path | None,
) -> "_Run":
    """The seeded accelerator, the prepared model, optimizer and schedule, and the history to continue
    (the latest checkpoint's in ``resume_from``, if any, its state loaded)."""
    from accelerate.utils import set_seed

    precision = _resolve_mixed_precision(settings.mixed_precision)
    set_seed(settings.seed)
    accelerator = _accelerator(precision)
    _check_teacher_device(teacher, accelerator.device)
    optimizer, scheduler = _optimizer(model, settings)
    model.train()
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    config = _run_config(settings, precision, teacher, accelerator, batches, eval_batches)
    history, start = _start_history(accelerator, config, family, label, resume_from)
    return _Run(accelerator, prepared, optimizer, scheduler, family, settings, eval_batches, history, start)


def _progress_bar(run: "_Run", label: str, progress: bool) -> Any:
    """A tqdm bar over the run's steps, on the main process only."""
    return tqdm(
        total=run.settings.steps,
        initial=run.start,
        desc=label or "train",
        unit="step",
        leave=False,
        disable=not distributed.show_progress(progress) or not run.accelerator.is_main_process,
    )


@dataclass
class _Run:
    """One training run's prepared parts and running totals, which its steps and evaluations share."""

    accelerator: Any
    prepared: nn.Module
    optimizer: Any
    scheduler: Any
    family: Family
    settings: TrainSettings
    eval_batches: Iterable[dict[str, torch.Tensor]] | None
    history: History
    start: int
    checkpoint_dir: Path | None = None
    callback: Callable[[History, StepRecord | EvalRecord], None] | None = None
    # The clock counts training steps only (a teacher's forward included): evaluations, checkpoints and
    # callbacks cost every run the same and would blur a speedup per second.
    trained_seconds: float = field(init=False)
    seen: int = field(init=False)

    def __post_init__(self) -> None:
        records = self.history.steps + self.history.evals
        self.trained_seconds = max([r.time for r in records] + [0.0])
        self.seen = max([r.seen for r in records] + [0])

    def loop(
        self,
        batches: Iterable[dict[str, torch.Tensor]],
        distiller: "_Teacher | None",
        stop: StopSignal | None,
        bar: Any,
    ) -> None:
        """Every step after ``start``, evaluating before the first and every ``eval_every`` steps and at the last."""
        steps, processes = self.settings.steps, self.accelerator.num_processes
        # Each process takes every P-th batch: step s trains on batches s*P .. s*P + P-1 across the processes.
        rank = self.accelerator.process_index
        stream = itertools.islice(_cycled(batches, self.start * processes), rank, None, processes)
        if self.start == 0:
            self.eval_at(0)
        for step in range(self.start + 1, steps + 1):
            if stop is not None and _stop_everywhere(stop, processes):
                self.history.stopped_early = True
                break
            record = self.step(step, next(stream), distiller)
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.4f}", refresh=False)
            if self.callback is not None:
                self.callback(self.history, record)
            if step % self.settings.resolved_eval_every == 0 or step == steps:
                self.eval_at(step)

    def step(self, step: int, batch: dict[str, torch.Tensor], distiller: "_Teacher | None") -> StepRecord:
        """One timed optimizer step on ``batch`` (CPU tensors), recorded in the history."""
        processes = self.accelerator.num_processes
        began = time.perf_counter()
        batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        totals, used_lr = _optimizer_step(
            self.accelerator,
            self.prepared,
            self.family,
            self.optimizer,
            self.scheduler,
            distiller,
            self.settings,
            batch,
        )
        self.trained_seconds += time.perf_counter() - began
        self.seen += int(totals[1])
        record = StepRecord(
            step=step,
            seen=self.seen,
            loss=float(totals[0]) / processes,
            lr=used_lr,
            time=self.trained_seconds,
            distill_loss=float(totals[2]) / processes if distiller is not None else None,
        )
        self.history.steps.append(record)
        return record

    def eval_at(self, step: int) -> None:
        """The held-out loss at ``step`` (without held-out batches, nothing), then the callback and a checkpoint."""
        if self.eval_batches is None:
            return
        result = evaluate(self.prepared, self.family, self.eval_batches)
        record = EvalRecord(
            step=step, seen=self.seen, loss=result.loss, accuracy=result.accuracy, time=self.trained_seconds
        )
        self.history.evals.append(record)
        if self.callback is not None:
            self.callback(self.history, record)
        if self.checkpoint_dir is not None and step > 0:
            _save_checkpoint(self.accelerator, self.checkpoint_dir, step, self.history)


def _checked_settings(
    settings: TrainSettings | None, overrides: dict[str, Any], resume: bool, checkpoint_dir: str | os.PathLike | None
) -> TrainSettings:
    """The run's settings, refused before any work when train() cannot run them."""
    settings = TrainSettings.of(settings, **overrides)
    for name in ("lr", "weight_decay"):
        if getattr(settings, name) is None:
            raise ValueError(f"{name} is not set: pass {name}=... (compare() picks the paper's value per init)")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    return settings


def _check_teacher_device(teacher: nn.Module | None, device: torch.device) -> None:
    if teacher is None:
        return
    teacher_device = next(teacher.parameters()).device
    if teacher_device.type != device.type:
        raise ValueError(
            f"the teacher is on {teacher_device} but training runs on {device}: "
            f"move it there first (teacher.to({str(device)!r}))"
        )


def _run_config(
    settings: TrainSettings,
    precision: str,
    teacher: nn.Module | None,
    accelerator: Any,
    batches: Iterable[dict[str, torch.Tensor]],
    eval_batches: Any,
) -> dict[str, Any]:
    """What the history records about the run (and a resumed run must share with its checkpoint)."""
    config = dict(
        asdict(settings),
        warmup=settings.resolved_warmup,
        eval_every=settings.resolved_eval_every,
        mixed_precision=precision,
        teacher=type(teacher).__name__ if teacher is not None else None,
        num_processes=accelerator.num_processes,
        device=str(accelerator.device),
        batches=getattr(batches, "description", None),
        eval_batches=getattr(eval_batches, "description", None),
    )
    if teacher is None:  # the distillation settings play no part in this run: do not record them as if they did
        config.update(distill_alpha=None, distill_temperature=None)
    return config


def _start_history(
    accelerator: Any, config: dict[str, Any], family: Family, label: str, checkpoint_dir: Path | None
) -> tuple[History, int]:
    """A fresh history at step 0, or (with ``checkpoint_dir``) the latest checkpoint's, its state loaded."""
    unit = "images" if family.task == "image-classification" else "tokens"
    latest = _checkpoints(checkpoint_dir)[-1:] if checkpoint_dir is not None else []
    if not latest:
        return History(label=label, unit=unit, config=config), 0
    saved, start = read_checkpoint(latest[0])
    _check_resumable(saved.config, config, latest[0])
    accelerator.load_state(str(latest[0]))
    return History(label=label or saved.label, unit=unit, config=config, steps=saved.steps, evals=saved.evals), start


def _optimizer_step(
    accelerator: Any,
    prepared: nn.Module,
    family: Family,
    optimizer: Any,
    scheduler: Any,
    distiller: "_Teacher | None",
    settings: TrainSettings,
    batch: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, float]:
    """One optimizer step on ``batch``: the (task loss, counted tokens, distillation loss) summed over the
    processes, and the learning rate the step used."""
    optimizer.zero_grad(set_to_none=True)
    loss = family.loss(prepared, batch)
    distill_loss = distiller.loss(settings.distill_temperature) if distiller is not None else None
    alpha = settings.distill_alpha
    objective = loss if distill_loss is None else (1.0 - alpha) * loss + alpha * distill_loss
    accelerator.backward(objective)
    if settings.max_grad_norm is not None:
        accelerator.clip_grad_norm_(prepared.parameters(), settings.max_grad_norm)
    used_lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    values = [loss.item(), _counted(batch), distill_loss.item() if distill_loss is not None else 0.0]
    totals = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    return totals, used_lr


CHECKPOINT_READER = register_reader(
    "checkpoint",
    read_checkpoint,
    "a training checkpoint, step-NNNNNNNN: model, optimizer, scheduler and random states, the history so far and a "
    "manifest of checksums (train(checkpoint_dir=...))",
    directory=True,
)
