"""The ``subclone-viz`` command line: describe, profile, subclone and ablate a parent, compare training runs,
and write the headless HTML report.

Subcommands: ``info`` (the parent and its valid destination specs), ``profile`` (per-block residual metrics
and rank consistency, saved as ``.npz``), ``subclone`` (plan, slice, score on held-out text, save a
checkpoint), ``ablate`` (held-out loss with each block removed or duplicated), ``compare`` (train one
destination from several initializations, ``+distill`` ones with the parent as teacher; speedups per step
and per second of training; histories as CSV and JSON, a PNG and a self-contained HTML plot), ``study``
(the speedup study: several destination sizes, random init and subclone each at its best learning rate of a
sweep; ``--merge`` combines studies of other sizes) and ``report`` (the main job behind ``make demo``).

Every subcommand checks all of its arguments (the destination spec included, against the loaded parent)
before it profiles, trains or writes anything. A mistake exits with status 2 and one line on stderr that
names the bad value and the valid choices; a bug still raises with its traceback. ``--json`` prints one
JSON document on stdout and nothing else there: progress bars and notes go to stderr. Outputs are never
replaced without ``--overwrite``. Under ``accelerate launch`` every subcommand runs in every process (profiles
and evaluations sharded over them), and only the main process prints and writes: one output, exit 0 on every
rank.

Common options: ``--parent`` (an embedded alias: ``smollm2-135m`` (the default), ``gemma3-270m``, ``minilm-l6``,
``vit-digits``; a hub id or a local model directory), ``--device`` (``auto``: CUDA when present), ``--dtype`` and ``--seed``.

Example::

    >>> from subclone_viz.cli import main
    >>> code = main(["info", "--parent", "smollm2-135m"])        # the same as: subclone-viz info --parent ...
    smollm2-135m: Llama family (LlamaForCausalLM): 30 layers, hidden 576, ...
    valid destination specs:
    ...
    >>> code
    0

The same from a shell::

    subclone-viz info --parent smollm2-135m
    subclone-viz profile --parent smollm2-135m --data builtin --tokens 8192 --out profile.npz
    subclone-viz subclone --parent smollm2-135m --profile profile.npz --layers 20 --hidden 384 --ffn 1024 \\
        --heads 6 --kv-heads 2 --out smollm2-20x384
    subclone-viz ablate --parent smollm2-135m --tokens 2048 --json
    subclone-viz compare --parent smollm2-135m --layers 8 --hidden 288 --steps 300 \
        --inits random,subclone,no-scaling --lr random=3e-4 --out runs/smollm2-8x288
    subclone-viz compare --parent smollm2-135m --layers 20 --hidden 384 --steps 300 \
        --inits random,subclone,subclone+distill --distill-alpha 0.5 --out runs/smollm2-20x384
    subclone-viz study --parent smollm2-135m --sizes 24x480,20x384,8x288 --distill-sizes 20x384 --steps 60 \
        --out runs/study
    subclone-viz report --out report.html --speedup-study runs/study/study.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from ._atomic import check_new_directory, check_new_file, staged_directory
from .data import ImageBatches, TextBatches
from .errors import UserError
from .evaluate import block_ablation, evaluate
from .export import save_destination
from .importance import DEFAULT_ESTIMATOR, ESTIMATORS
from .parent import DEVICE_MAP_STRATEGIES, EMBEDDED_ALIASES, Parent, load_parent
from .plan import DEPTH_STRATEGIES, SCALINGS, WIDTH_STRATEGIES, DestinationSpec, plan, spec_choices
from .profile import BLOCK_METRIC_LABELS, BLOCK_METRICS, Profile, add_taylor, profile
from .subclone import subclone
from .compare import INITS, Comparison, compare
from .study import SpeedupStudy, speedup_study
from .train import SCHEDULES, TrainSettings
from .workflow import has_loss, parent_batches, quick_mode

PROG = "subclone-viz"
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_PARENT = "smollm2-135m"


class UsageError(UserError):
    """A mistake in what the user asked for: reported as one line on stderr, exit status 2."""



@contextlib.contextmanager
def _blame_user(*extra: type[BaseException]) -> Iterator[None]:
    """Treat ValueError and OSError (and ``extra``) raised while reading what the user named as their mistake.

    Only wrapped around loading their parent, data and files: elsewhere a ValueError is a bug and keeps its
    traceback.
    """
    try:
        yield
    except (ValueError, OSError, *extra) as error:
        raise UsageError(str(error)) from error


@dataclass
class Outcome:
    """What a subcommand reports: the JSON document for ``--json`` and the same facts as text for people."""

    document: dict[str, Any]
    text: str


def _note(message: str) -> None:
    """A progress note for people; stderr, so that ``--json`` output stays one document. Main process only."""
    if distributed.is_main_process():
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# Argument types: each error names the bad value and what would be valid


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number >= {minimum}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a whole number >= {minimum}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    return _integer(text, 0)


def _block_list(text: str) -> list[int]:
    try:
        blocks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        blocks = []
    if not blocks or any(block < 0 for block in blocks):
        raise ValueError(text)
    return blocks


def layers_arg(text: str) -> int | list[int]:
    """A block count (``20``) or a comma list of parent block indices (``0,1,2,28,29``)."""
    try:
        return _block_list(text) if "," in text else _integer(text, 1)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a block count >= 1 nor a comma list of parent block indices such as 0,1,2,28,29"
        ) from None


def depth_arg(text: str) -> str | list[int]:
    """A depth strategy name or a comma list of parent block indices."""
    if text in DEPTH_STRATEGIES:
        return text
    try:
        return _block_list(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a depth: choose one of {', '.join(DEPTH_STRATEGIES)} or a comma list of parent blocks"
        ) from None


def device_map_arg(text: str) -> str | dict[str, Any]:
    """A device-map strategy name, or a .json file holding {module name: device}."""
    if text in DEVICE_MAP_STRATEGIES:
        return text
    path = Path(text)
    if path.suffix != ".json" or not path.is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a strategy ({', '.join(DEVICE_MAP_STRATEGIES)}) nor a .json file of module -> device"
        )
    try:
        mapping = json.loads(path.read_text())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text}: not valid JSON ({error})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, (int, str)) for v in mapping.values()):
        raise argparse.ArgumentTypeError(f"{text}: must hold one JSON object of module name -> device (0, 'cpu', 'disk')")
    return mapping


def inits_arg(text: str) -> list[str]:
    """A comma list of initialization names, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in INITS]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown {', '.join(map(repr, unknown))}" if unknown else "each init once, at least one"
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}; choose from {', '.join(INITS)}")
    return names


def _per_init_number(text: str, positive: bool) -> tuple[str | None, float]:
    init, _, value = text.rpartition("=")
    if init and init not in INITS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown init {init!r}; choose from {', '.join(INITS)}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number; give VALUE or INIT=VALUE") from None
    if not (number > 0 if positive else number >= 0) or math.isinf(number):
        bound = "> 0" if positive else ">= 0"
        raise argparse.ArgumentTypeError(f"{text!r}: {value} is out of range; give a finite number {bound}")
    return init or None, number


def per_init_lr(text: str) -> tuple[str | None, float]:
    """``INIT=VALUE`` (one initialization) or ``VALUE`` (all of them); VALUE a learning rate > 0."""
    return _per_init_number(text, positive=True)


def per_init_number(text: str) -> tuple[str | None, float]:
    """``INIT=VALUE`` (one initialization) or ``VALUE`` (all of them); VALUE a number >= 0."""
    return _per_init_number(text, positive=False)


def _number(text: str, valid: Callable[[float], bool], rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {rule}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"{text} is out of range; give {rule}")
    return value


def sizes_arg(text: str) -> list[tuple[int, int]]:
    """A comma list of destination sizes ``LAYERSxHIDDEN`` (``24x480,20x384``), each once."""
    sizes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        layers, _, hidden = part.lower().partition("x")
        if not (layers.isdigit() and hidden.isdigit() and int(layers) > 0 and int(hidden) > 0):
            raise argparse.ArgumentTypeError(f"{part!r} is not a size: write LAYERSxHIDDEN with whole numbers > 0, "
                                             f"e.g. 20x384")
        sizes.append((int(layers), int(hidden)))
    if not sizes or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one size, each once (e.g. 24x480,20x384)")
    return sizes


def optional_sizes_arg(text: str) -> list[tuple[int, int]]:
    """Like :func:`sizes_arg`, and ``''`` for none."""
    return sizes_arg(text) if text.strip() else []


def lrs_arg(text: str) -> list[float]:
    """A comma list of learning rates, each a finite number > 0."""
    values = [positive_float(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one learning rate, e.g. 1e-3,3e-3")
    return values


def distill_inits_arg(text: str) -> list[str]:
    """A comma list of inits trained with the parent as teacher ('' for none)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = [name for name, init in INITS.items() if init.distill]
    wrong = [name for name in names if name not in valid]
    if wrong or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: choose each at most once from {', '.join(valid)}")
    return names


def fraction_arg(text: str) -> float:
    return _number(text, lambda value: 0 <= value <= 1, "a number from 0 to 1")


def positive_float(text: str) -> float:
    return _number(text, lambda value: 0 < value < math.inf, "a finite number > 0")


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``subclone-viz`` parser; each subcommand stores its runner in ``args.run``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--parent", default=DEFAULT_PARENT,
                        help=f"embedded alias ({', '.join(EMBEDDED_ALIASES)}), hub id or local model directory "
                             f"(default {DEFAULT_PARENT})")
    common.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    common.add_argument("--dtype", choices=DTYPES, help="parameter dtype (default fp32 on CPU, bf16 on GPU)")
    common.add_argument("--device-map", type=device_map_arg, metavar="MAP",
                        help=f"spread a parent too big for one device: {', '.join(DEVICE_MAP_STRATEGIES)}, or a "
                             f".json file of module name -> device (0, cuda:1, cpu, disk); replaces --device")
    common.add_argument("--offload-folder", type=Path, help="where --device-map keeps modules mapped to disk")
    common.add_argument("--seed", type=non_negative_int, default=0, help="seed of torch and data shuffling (default 0)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")

    parser = _Parser(prog=PROG, description="Weight subcloning of transformers (Samragh et al., 2023).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", parents=[common], help="describe a parent and its valid destination specs")
    info.set_defaults(run=run_info)

    prof = commands.add_parser("profile", parents=[common], help="profile a parent's blocks and neurons")
    _add_data_arguments(prof)
    prof.add_argument("--tokens", type=positive_int, default=8192, help="tokens to profile (default 8192)")
    prof.add_argument("--split", choices=("train", "heldout"), default="train", help="data split (default train)")
    prof.add_argument("--out", type=Path, help="save the profile here (.npz); default: do not save")
    prof.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    prof.set_defaults(run=run_profile)

    sub = commands.add_parser("subclone", parents=[common], help="subclone a destination and save it")
    _add_data_arguments(sub)
    sub.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile --data first")
    sub.add_argument("--profile-tokens", type=positive_int, default=4096,
                     help="tokens to profile when no --profile is given (train split; default 4096)")
    _add_spec_arguments(sub, hidden_required=True)
    sub.add_argument("--depth", type=depth_arg, default="middle",
                     help=f"{' | '.join(DEPTH_STRATEGIES)} | a comma list of parent blocks (default middle)")
    sub.add_argument("--width", choices=WIDTH_STRATEGIES, default="importance", help="default importance")
    sub.add_argument("--scaling", choices=SCALINGS, default="sqrt", help="default sqrt")
    sub.add_argument("--importance", choices=list(ESTIMATORS), default=DEFAULT_ESTIMATOR,
                     help=f"the importance estimator --width importance ranks by (default {DEFAULT_ESTIMATOR})")
    sub.add_argument("--eval-tokens", type=non_negative_int, default=4096,
                     help="held-out tokens to score parent and destination on (0: skip; default 4096)")
    sub.add_argument("--out", type=Path, required=True, help="destination directory")
    sub.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    sub.set_defaults(run=run_subclone)

    ablate = commands.add_parser("ablate", parents=[common],
                                 help="held-out loss with each single block removed or duplicated")
    _add_data_arguments(ablate)
    ablate.add_argument("--tokens", type=positive_int, default=2048, help="held-out tokens (default 2048)")
    ablate.set_defaults(run=run_ablate)

    comp = commands.add_parser("compare", parents=[common],
                               help="train one destination from several initializations and compare the curves")
    comp.set_defaults(run=run_compare)
    _add_data_arguments(comp, seq_len=128)
    comp.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    _add_spec_arguments(comp, hidden_required=True)
    comp.add_argument("--inits", type=inits_arg, default=["random", "subclone"],
                      help=f"comma list of {', '.join(INITS)} (default random,subclone)")
    comp.add_argument("--steps", type=positive_int, default=300, help="optimizer steps per init (default 300)")
    comp.add_argument("--lr", type=per_init_lr, action="append", default=[], metavar="[INIT=]VALUE",
                      help="learning rate for one init (repeatable) or, without INIT=, for all "
                           "(default: the paper's, 1e-4 for language models)")
    comp.add_argument("--weight-decay", "--wd", type=per_init_number, action="append", default=[],
                      metavar="[INIT=]VALUE", help="weight decay, like --lr (default: the paper's, 0.1 from "
                                                   "random, 0.001 inherited)")
    comp.add_argument("--warmup", type=non_negative_int, help="warmup steps (default 5%% of --steps)")
    comp.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="after warmup (default cosine)")
    comp.add_argument("--eval-every", type=positive_int, help="steps between evaluations (default steps / 10)")
    comp.add_argument("--eval-tokens", type=positive_int, default=4096, help="held-out tokens (default 4096)")
    distill = TrainSettings()
    comp.add_argument("--distill-alpha", type=fraction_arg,
                      help=f"for the +distill inits: weight a of the teacher's KL term in (1-a) * next-token loss + "
                           f"a * KL (default {distill.distill_alpha:g})")
    comp.add_argument("--distill-temperature", type=positive_float,
                      help=f"for the +distill inits: softmax temperature T of the KL term, scaled by T^2 "
                           f"(default {distill.distill_temperature:g})")
    comp.add_argument("--out", type=Path, required=True, help="directory for histories, summary and plots")
    comp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    study = commands.add_parser("study", parents=[common],
                                help="speedup over random init for several destination sizes, each init at its best "
                                     "learning rate")
    study.set_defaults(run=run_study)
    _add_data_arguments(study, seq_len=128)
    study.add_argument("--sizes", type=sizes_arg, help="comma list of LAYERSxHIDDEN, mild to harsh (e.g. "
                                                      "24x480,20x384,8x288); FFN and heads follow the width")
    study.add_argument("--distill-sizes", type=optional_sizes_arg, default=[],
                       help="those of --sizes also trained with the parent as teacher")
    study.add_argument("--distill-inits", type=distill_inits_arg, default=["subclone+distill", "random+distill"],
                       help="the teacher's inits for --distill-sizes (default subclone+distill,random+distill)")
    study.add_argument("--random-lrs", type=lrs_arg, default=[1e-3, 3e-3],
                       help="learning-rate sweep of random init (default 1e-3,3e-3)")
    study.add_argument("--subclone-lrs", type=lrs_arg, default=[3e-4, 1e-3],
                       help="learning-rate sweep of the subclone (default 3e-4,1e-3)")
    study.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    study.add_argument("--steps", type=positive_int, default=60, help="optimizer steps per run (default 60)")
    study.add_argument("--eval-every", type=positive_int, default=5, help="steps between evaluations (default 5)")
    study.add_argument("--eval-tokens", type=positive_int, default=1024, help="held-out tokens (default 1024)")
    study.add_argument("--merge", type=Path, nargs="+", metavar="STUDY",
                       help="instead of training: merge these saved studies (study.json) of other sizes into --out")
    study.add_argument("--out", type=Path, required=True,
                       help="directory for study.json, speedup_by_size.png and speedup_by_size.html")
    study.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    report = commands.add_parser("report", parents=[common],
                                 help="the main job: profile, ablate, subclone, size, train; one HTML page")
    report.set_defaults(run=run_report)
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the .html file (default report.html)")
    report.add_argument("--quick", action="store_true", help="shrink every stage to seconds (a smoke test; also SUBCLONE_VIZ_QUICK=1)")
    report.add_argument("--data", default="builtin", help="'builtin' (Python's docs) or a .txt/.jsonl path")
    report.add_argument("--tokens", type=positive_int, help="tokens to profile (default 8192; --quick 256)")
    report.add_argument("--steps", type=non_negative_int,
                        help="training steps per init in the comparison (0 skips it; default 24; --quick 2)")
    _add_spec_arguments(report, hidden_required=False)
    report.add_argument("--speedup-study", type=Path, metavar="FILE",
                        help="a saved speedup study (the study.json of `subclone-viz study`) to show as the "
                             "speedup-by-size section")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_forecast_parser(commands)
    return parser


def _add_forecast_parser(commands: Any) -> None:
    fc = commands.add_parser("forecast", help="forecast a run's held-out loss at a horizon, with an interval, from a "
                                              "saved history (.json) or any trainer's CSV log")
    fc.set_defaults(run=run_forecast)
    fc.add_argument("run_file", type=Path, metavar="RUN", help="a training history .json (History.save_json, "
                                                               "`compare --out`) or a .csv log")
    horizon = fc.add_mutually_exclusive_group()
    horizon.add_argument("--steps", type=positive_int, help="horizon in optimizer steps (default: the run's end)")
    horizon.add_argument("--tokens", type=positive_float, help="horizon in training tokens")
    horizon.add_argument("--flops", type=positive_float, help="horizon in FLOPs (6 x parameters x tokens)")
    fc.add_argument("--fit-until", type=positive_int, metavar="STEP", help="use the evaluations up to STEP only")
    fc.add_argument("--prior", type=Path, help="a saved ForecastPrior .json (default: the library's)")
    fc.add_argument("--step-column", default="step", help="CSV: the step column (default step)")
    fc.add_argument("--loss-column", default="loss", help="CSV: the held-out loss column (default loss)")
    fc.add_argument("--lr-column", help="CSV: the learning rate of every step (or give --schedule)")
    fc.add_argument("--schedule", choices=SCHEDULES, help="CSV: the named schedule of the whole run")
    fc.add_argument("--total-steps", type=positive_int, help="CSV with --schedule: the run's planned length")
    fc.add_argument("--warmup", type=non_negative_int, default=0, help="CSV with --schedule: warmup steps")
    fc.add_argument("--peak-lr", type=positive_float, default=1.0, help="CSV with --schedule: the peak rate")
    fc.add_argument("--final-ratio", type=float, default=0.0, help="CSV with --schedule: final rate / peak")
    fc.add_argument("--decay-fraction", type=float, default=0.2, help="CSV with --schedule wsd: decay share")
    fc.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                    help="CSV: keep the rows whose COLUMN holds VALUE (one run of a file of several); repeatable")
    fc.add_argument("--tokens-per-step", type=positive_float, help="CSV: tokens per step (for --tokens/--flops)")
    fc.add_argument("--parameters", type=positive_int, help="the model's parameters (for --flops)")
    fc.add_argument("--out", type=Path, help="save the Forecast record (.json)")
    fc.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    fc.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")


def _add_data_arguments(parser: argparse.ArgumentParser, seq_len: int = 256) -> None:
    parser.add_argument("--data", help="text: 'builtin' (Python's docs, default) or a .txt/.jsonl file or folder; "
                                       "images: 'digits' (default) or a root/<class>/<images> folder")
    parser.add_argument("--seq-len", type=positive_int, default=seq_len, help=f"tokens per row (default {seq_len})")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="rows per batch (default 8)")


def _add_spec_arguments(parser: argparse.ArgumentParser, hidden_required: bool) -> None:
    parser.add_argument("--layers", type=layers_arg,
                        help="destination block count, or a comma list of parent blocks")
    parser.add_argument("--hidden", type=positive_int, required=hidden_required, help="residual width")
    parser.add_argument("--ffn", type=positive_int, help="FFN width (default: the parent's ratio)")
    parser.add_argument("--heads", type=positive_int, help="query heads (default: follows --hidden)")
    parser.add_argument("--kv-heads", type=positive_int, help="key/value heads (default: the parent's ratio)")


# --------------------------------------------------------------------------------------------------------
# Shared steps


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" bar: before the arguments are all checked, an error must be stderr's only line."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(args: argparse.Namespace) -> Parent:
    torch.manual_seed(args.seed)
    with _blame_user(), _quiet_transformers():
        return load_parent(args.parent, device=args.device, dtype=args.dtype, device_map=args.device_map,
                           offload_folder=args.offload_folder)


def _load_trainable(args: argparse.Namespace) -> Parent:
    """The parent, which must have a loss to train a destination on."""
    parent = _load(args)
    if not has_loss(parent):
        raise UsageError(f"parent {args.parent!r} is an encoder without a language-model head: it has no loss to "
                         f"train on; use a causal LM, a masked LM or an image classifier")
    return parent


def _saved_profile(args: argparse.Namespace, parent: Parent) -> Profile | None:
    """``--profile`` read back and checked against the parent (None when not given)."""
    if args.profile is None:
        return None
    with _blame_user():
        saved = Profile.load(args.profile)
    saved.check_parent(parent)
    return saved


def _batches(
    parent: Parent, args: argparse.Namespace, split: str, tokens: int | None, shuffle: bool = False
) -> TextBatches | ImageBatches:
    """``--data`` batches of ``split`` for this parent (:func:`~subclone_viz.workflow.parent_batches`): text
    enough for ``tokens`` tokens (None: all of it), images the whole split."""
    with _blame_user(ImportError):
        return parent_batches(parent, split, args.data, seq_len=args.seq_len, batch_size=args.batch_size,
                              tokens=tokens, shuffle=shuffle, seed=args.seed)


def _check_new_file(path: Path, suffixes: tuple[str, ...], overwrite: bool) -> None:
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"--out {path} must end in {' or '.join(suffixes)}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--out {path} exists and is not a file")
    if path.exists() and not overwrite:
        raise UsageError(f"--out {path} exists; pass --overwrite to replace it")
    check_new_file(path, overwrite)  # a place where no file can be created


def _numbers(values: Sequence[int]) -> str:
    """Compact text for a sorted list of valid integers: ``1-576``, ``64, 128, ..., 576 (step 64)``, ``3, 6, 9``."""
    values = list(values)
    steps = set(np.diff(values).tolist())
    if len(values) > 4 and steps == {1}:
        return f"{values[0]}-{values[-1]}"
    if len(values) > 6 and len(steps) == 1:
        return f"{values[0]}, {values[1]}, ..., {values[-1]} (step {steps.pop()})"
    return ", ".join(map(str, values))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Right-aligned columns; floats with 4 decimals."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Subcommands


def run_info(args: argparse.Namespace) -> Outcome:
    """The parent's description and the valid value of every destination spec field."""
    parent = _load(args)
    dims = parent.dims
    choices = spec_choices(parent)
    document = {
        "parent": parent.name,
        "description": parent.description,
        "family": parent.family.name,
        "task": parent.family.task,
        "dims": dims.to_dict(),
        "parameters": sum(p.numel() for p in parent.model.parameters()),
        "choices": choices,
        "depth": list(DEPTH_STRATEGIES),
        "width": list(WIDTH_STRATEGIES),
        "scaling": list(SCALINGS),
    }
    heads_note = (
        f" (heads = hidden / {dims.head_dim} in this family)" if parent.family.heads_follow_hidden
        else f" (multiples of its {dims.queries_per_kv} queries per KV head)" if dims.queries_per_kv > 1 else ""
    )
    text = "\n".join([
        f"{parent.name}: {parent.description}",
        f"task: {parent.family.task}",
        "valid destination specs:",
        f"  --layers    {_numbers(choices['layers'])} (more than {dims.layers} duplicates middle blocks), "
        f"or a comma list of parent blocks 0-{dims.layers - 1}",
        f"  --hidden    {_numbers(choices['hidden'])}",
        f"  --ffn       {_numbers(choices['ffn'])}",
        f"  --heads     {_numbers(choices['heads'])}{heads_note}",
        f"  --kv-heads  {_numbers(choices['kv_heads'])}",
        f"  --depth     {' | '.join(DEPTH_STRATEGIES)} | a comma list of parent blocks",
        f"  --width     {' | '.join(WIDTH_STRATEGIES)}",
        f"  --scaling   {' | '.join(SCALINGS)}",
    ])
    return Outcome(document, text)


def run_profile(args: argparse.Namespace) -> Outcome:
    """Profile the parent on ``--data`` and print the per-block metrics and the rank consistency."""
    if args.out is not None:
        _check_new_file(args.out, (".npz",), args.overwrite)
    parent = _load(args)
    batches = _batches(parent, args, args.split, args.tokens, shuffle=True)  # document-diverse, seeded by --seed
    _note(f"profiling on {batches.description} ...")
    result = profile(parent, batches, max_tokens=args.tokens)
    if args.out is not None:
        result.save(args.out, overwrite=args.overwrite)
    document = {**result.summary(), "output": str(args.out) if args.out is not None else None}
    return Outcome(document, _profile_text(result, args.out))


def _profile_text(result: Profile, out: Path | None) -> str:
    metrics = result.block_metrics
    rows = [[block, *(float(metrics[name][block]) for name in BLOCK_METRICS)] for block in range(result.num_layers)]
    consistency = result.rank_consistency()
    adjacent = consistency.adjacent_spearman()  # (L,): block i's input against its output
    overlap = np.diag(consistency.topk_overlap, 1)  # (L,)
    best, worst = int(np.argmax(adjacent)), int(np.argmin(adjacent))
    width = result.residual_importance.shape[1]
    lines = [
        f"{result.parent['name']}: {result.parent.get('description', '')}",
        f"profiled on {result.tokens:,} tokens of {result.source}",
        "",
        _table(["block", *(BLOCK_METRIC_LABELS[name] for name in BLOCK_METRICS)], rows),
        "",
        f"rank consistency of residual-channel importance (top-k: {consistency.k} of {width} channels):",
        f"  median adjacent-layer Spearman {np.median(adjacent):.4f}, median adjacent top-k overlap "
        f"{np.median(overlap):.4f}",
        f"  most consistent: block {best} (its input vs its output: Spearman {adjacent[best]:.4f}, "
        f"top-k overlap {overlap[best]:.4f})",
        f"  least consistent: block {worst} (Spearman {adjacent[worst]:.4f}, top-k overlap {overlap[worst]:.4f})",
    ]
    if out is not None:
        lines.append(f"saved to {out}")
    return "\n".join(lines)


def _spec(args: argparse.Namespace) -> DestinationSpec:
    layers, depth = args.layers, getattr(args, "depth", "middle")
    if layers is None:
        if isinstance(depth, str):
            raise UsageError("--layers is missing: give a block count or a comma list of parent blocks")
        layers = len(depth)
    if args.hidden is None:
        raise UsageError("--hidden is missing: give the destination's residual width with --layers")
    return DestinationSpec(layers=layers, hidden=args.hidden, ffn=args.ffn, heads=args.heads, kv_heads=args.kv_heads)


def _check_plan(parent: Parent, spec: DestinationSpec, depth: str | list[int], scaling: str) -> None:
    """Raise the SpecError that ``plan`` would, before any profiling: a data-free plan checks the same spec.

    ``"metric"`` depth needs a profile only to rank blocks; ``"first"`` rejects the same shapes (deeper than
    the parent) with the same advice.
    """
    plan(parent, None, spec, depth="first" if depth == "metric" else depth, width="first", scaling=scaling)


def run_subclone(args: argparse.Namespace) -> Outcome:
    """Plan, subclone, score on held-out data and save a destination."""
    check_new_directory(args.out, args.overwrite)
    if args.profile is not None and not args.profile.is_file():
        raise UsageError(f"--profile {args.profile}: no such file")
    parent = _load(args)
    spec = _spec(args)
    _check_plan(parent, spec, args.depth, args.scaling)
    needs_profile = args.width == "importance" or args.depth == "metric"
    saved_profile = _saved_profile(args, parent)
    needs_taylor = args.width == "importance" and args.importance == "taylor" and (
        saved_profile is None or "taylor_ffn" not in saved_profile.stats)
    train = _batches(parent, args, "train", args.profile_tokens, shuffle=True) if (
        (needs_profile and saved_profile is None) or args.scaling == "calibrated" or needs_taylor
    ) else None
    heldout = _batches(parent, args, "heldout", args.eval_tokens) if args.eval_tokens and has_loss(parent) else None

    measured = saved_profile
    if measured is None and needs_profile:
        _note(f"profiling on {train.description} ...")
        measured = profile(parent, train, max_tokens=args.profile_tokens)
    if needs_taylor:
        _note(f"gradient pass for the Taylor importance on {train.description} ...")
        measured = add_taylor(measured, parent, train, max_tokens=args.profile_tokens)
    destination_plan = plan(parent, measured, spec, depth=args.depth, width=args.width, scaling=args.scaling,
                            importance=args.importance)
    destination = subclone(parent, destination_plan, calibration_batches=train)
    scores = None
    if heldout is not None:
        _note(f"scoring on {heldout.description} ...")
        scores = {
            "data": heldout.description,
            "parent_loss": evaluate(parent.model, parent.family, heldout).loss,
            "destination_loss": evaluate(destination, parent.family, heldout).loss,
        }
    path = save_destination(destination, destination_plan, args.out, overwrite=args.overwrite)

    parameters = sum(p.numel() for p in destination.parameters())
    parent_parameters = sum(p.numel() for p in parent.model.parameters())
    document = {
        "parent": parent.name,
        "plan": destination_plan.summary(),
        "dims": destination_plan.dims,
        "layers": destination_plan.layers,
        "depth": destination_plan.depth,
        "width": destination_plan.width,
        "importance": destination_plan.importance,
        "scaling": destination_plan.scaling,
        "parameters": parameters,
        "parent_parameters": parent_parameters,
        "profile": None if measured is None else {
            "source": measured.source, "tokens": measured.tokens,
            "path": str(args.profile) if args.profile is not None else None,
        },
        "heldout": scores,
        "output": str(path),
    }
    lines = [
        f"plan: {destination_plan.summary()}",
        f"parameters: {parameters / 1e6:.2f}M ({parameters / parent_parameters:.1%} of the parent's "
        f"{parent_parameters / 1e6:.2f}M)",
        "profile: " + ("none (data-free plan)" if measured is None
                       else f"{measured.tokens:,} tokens of {measured.source}"
                       + (f" ({args.profile})" if args.profile is not None else "")),
    ]
    if scores is not None:
        lines.append(
            f"held-out loss before training: {scores['destination_loss']:.4f} (parent {scores['parent_loss']:.4f}) "
            f"on {scores['data']}"
        )
    elif not has_loss(parent):
        lines.append("held-out loss: not scored (the parent is an encoder without a language-model head)")
    lines.append(f"saved to {path}")
    return Outcome(document, "\n".join(lines))


def run_ablate(args: argparse.Namespace) -> Outcome:
    """The parent's held-out loss with each single block removed, and duplicated (paper Fig. 2, bottom)."""
    parent = _load(args)
    if not has_loss(parent):
        raise UsageError(
            f"parent {args.parent!r} is an encoder without a language-model head, so it has no loss to ablate; "
            f"use a causal LM, a masked LM or an image classifier"
        )
    heldout = _batches(parent, args, "heldout", args.tokens)
    _note(f"ablating {parent.dims.layers} blocks on {heldout.description} ...")
    result = block_ablation(parent, heldout)
    document = {"parent": parent.name, "data": heldout.description, **result.to_dict()}
    rows = [
        [block, removed, removed - result.baseline, duplicated, duplicated - result.baseline]
        for block, (removed, duplicated) in enumerate(zip(result.removed, result.duplicated))
    ]
    text = "\n".join([
        f"{parent.name}: held-out loss {result.baseline:.4f} on {heldout.description}",
        "",
        _table(["block", "removed", "change", "duplicated", "change"], rows),
    ])
    return Outcome(document, text)


def _per_init(values: list[tuple[str | None, float]], inits: list[str], option: str) -> dict[str, float]:
    """``--lr``/``--weight-decay`` values as {init: value}; a bare VALUE applies to every init."""
    chosen: dict[str, float] = {}
    for init, value in values:
        if init is not None and init not in inits:
            raise UsageError(f"{option} {init}={value:g} names an init that is not in --inits {','.join(inits)}")
        chosen.update({init: value} if init is not None else dict.fromkeys(inits, value))
    return chosen


def _speedup_text(row: dict[str, Any], key: str = "speedup") -> str:
    """``4.00x``; ``>=4.00x`` when it was already there at its first evaluation; ``<0.50x`` when it never got there."""
    value = row.get(key)
    if value is None:
        return "n/a"
    prefix = ">=" if row.get("speedup_lower_bound") else "<" if row.get("reached") is False else ""
    return f"{prefix}{value:.2f}x"


def run_compare(args: argparse.Namespace) -> Outcome:
    """Train the same destination from each ``--inits`` initialization; save histories, summary and plots."""
    check_new_directory(args.out, args.overwrite)
    if args.profile is not None and not args.profile.is_file():
        raise UsageError(f"--profile {args.profile}: no such file")
    if args.warmup is not None and args.warmup > args.steps:
        raise UsageError(f"--warmup {args.warmup} is out of range: choose 0 <= warmup <= --steps {args.steps}")
    lrs = _per_init(args.lr, args.inits, "--lr")
    weight_decays = _per_init(args.weight_decay, args.inits, "--weight-decay")
    distill_options = {name: getattr(args, name) for name in ("distill_alpha", "distill_temperature")
                       if getattr(args, name) is not None}
    distilled = [init for init in args.inits if INITS[init].distill]
    if distill_options and not distilled:
        given = " and ".join(f"--{name.replace('_', '-')}" for name in distill_options)
        with_teacher = ", ".join(init for init in INITS if INITS[init].distill)
        raise UsageError(f"{given} only apply to inits trained with the parent as teacher ({with_teacher}); "
                         f"--inits {','.join(args.inits)} has none")
    parent = _load_trainable(args)
    spec = _spec(args)
    _check_plan(parent, spec, "middle", "none")
    saved_profile = _saved_profile(args, parent)
    train = _batches(parent, args, "train", None, shuffle=True)
    heldout = _batches(parent, args, "heldout", args.eval_tokens)

    _note(f"training {', '.join(args.inits)} for {args.steps} steps each on {train.description} ...")
    comparison = compare(
        parent, spec, train, inits=args.inits, steps=args.steps, eval_batches=heldout, profile=saved_profile,
        lrs=lrs, weight_decays=weight_decays, seed=args.seed, warmup=args.warmup, schedule=args.schedule,
        eval_every=args.eval_every, **distill_options,
    )
    files = _save_comparison(comparison, args.out, args.overwrite)

    table = comparison.summary_table()
    rows = [
        [row["init"], f"{row['lr']:g}", f"{row['weight_decay']:g}", row["steps"], row["initial_loss"],
         row["final_loss"], _speedup_text(row), _speedup_text(row, "speedup_per_second"),
         f"{row['train_seconds']:.1f}"]
        for row in table
    ]
    destination = comparison.config["destination"]
    shape = f"{destination['layers']} layers x hidden {destination['hidden']}, FFN {destination['ffn']}"
    lines = [
        f"{parent.name} -> {shape}: {args.steps} steps per init on {train.description}",
        f"held-out loss on {heldout.description}; speedup: steps random needs to reach its final held-out loss "
        f"over the steps each init needs; speedup/s: the same in seconds of training (a teacher costs time)",
        "",
        _table(["init", "lr", "wd", "steps", "initial loss", "final loss", "speedup", "speedup/s", "train s"], rows),
        "",
        f"saved to {args.out}: {', '.join(files)}",
    ]
    if comparison.stopped_early:
        lines.insert(0, "stopped early: the table shows the runs so far")
    document = {
        "parent": parent.name,
        "destination": destination,
        "steps": args.steps,
        "data": train.description,
        "heldout": heldout.description,
        "table": table,
        "stopped_early": comparison.stopped_early,
        "output": str(args.out),
        "files": files,
    }
    return Outcome(document, "\n".join(lines))


def _save_comparison(comparison: Comparison, directory: Path, overwrite: bool) -> list[str]:
    """Histories (CSV + JSON), summary, a PNG and a self-contained HTML plot of the held-out loss, all at once.

    The figures are drawn before anything is written, and everything goes into a staging directory that is
    renamed into place, so a failure leaves no half-written run. Under several processes the main one writes.
    """
    return distributed.on_main(_write_comparison, comparison, directory, overwrite)


def _write_comparison(comparison: Comparison, directory: Path, overwrite: bool) -> list[str]:
    from . import plots

    static = plots.loss_curves(comparison.histories, backend="matplotlib")
    png = io.BytesIO()
    static.savefig(png, format="png", dpi=120, bbox_inches="tight")
    page = plots.loss_curves(comparison.histories, backend="plotly").to_html(full_html=True, include_plotlyjs=True)

    with staged_directory(directory, overwrite) as staging:
        comparison.write_files(staging)
        (staging / "loss_curves.png").write_bytes(png.getvalue())
        (staging / "loss_curves.html").write_text(page, encoding="utf-8")
        files = sorted(path.name for path in staging.iterdir())
    return files


def run_study(args: argparse.Namespace) -> Outcome:
    """Train every size from random init and from the subclone at their best learning rates (or merge saved
    studies); save the study, a PNG and a self-contained HTML figure of speedup against size."""
    check_new_directory(args.out, args.overwrite)
    if args.merge:
        if args.sizes is not None:
            raise UsageError("--merge combines saved studies: give it without --sizes")
        with _blame_user():
            study = SpeedupStudy.merge([SpeedupStudy.load(path) for path in args.merge])
        parent_name = study.config["parent"]["name"]  # SpeedupStudy.load checked it is there
    else:
        if args.sizes is None:
            raise UsageError("--sizes is missing: give destination sizes such as 24x480,20x384,8x288 (or --merge)")
        extra = [size for size in args.distill_sizes if size not in args.sizes]
        if extra:
            raise UsageError(f"--distill-sizes {','.join(f'{l}x{h}' for l, h in extra)} are not among --sizes")
        if args.profile is not None and not args.profile.is_file():
            raise UsageError(f"--profile {args.profile}: no such file")
        parent = _load_trainable(args)
        specs = {size: DestinationSpec(layers=size[0], hidden=size[1]) for size in args.sizes}
        for spec in specs.values():
            _check_plan(parent, spec, "middle", "none")
        saved_profile = _saved_profile(args, parent)
        train = _batches(parent, args, "train", None, shuffle=True)
        heldout = _batches(parent, args, "heldout", args.eval_tokens)
        runs = len(args.sizes) * (len(args.random_lrs) + len(args.subclone_lrs))
        runs += len(args.distill_sizes) * len(args.distill_inits)
        _note(f"training {runs} runs of {args.steps} steps on {train.description} ...")
        study = speedup_study(
            parent, list(specs.values()), train, heldout, profile=saved_profile, random_lrs=args.random_lrs,
            subclone_lrs=args.subclone_lrs, distill_sizes=[specs[size] for size in args.distill_sizes],
            distill_inits=args.distill_inits if args.distill_sizes else [], steps=args.steps,
            eval_every=args.eval_every, seed=args.seed, log=_note,
        )
        parent_name = parent.name
    files = distributed.on_main(_write_study, study, args.out, args.overwrite)
    table = study.table()
    rows = [[row["destination"], f"{row['parameters'] / 1e6:.1f}M", row["init"], f"{row['best_lr']:g}",
             row["initial_loss"], row["final_loss"], _speedup_text(row), _speedup_text(row, "speedup_per_second")]
            for row in table]
    text = "\n".join([
        f"{parent_name}: {study.config.get('steps')} steps per run; speedup: steps the best random run needs to reach "
        f"its final held-out loss over the steps each init needs (speedup/s: in seconds of training)",
        "",
        _table(["destination", "params", "init", "best lr", "initial loss", "final loss", "speedup", "speedup/s"],
               rows),
        "",
        f"saved to {args.out}: {', '.join(files)}",
    ])
    document = {"parent": parent_name, "config": study.config, "table": table, "output": str(args.out),
                "files": files}
    return Outcome(document, text)


def _write_study(study: SpeedupStudy, directory: Path, overwrite: bool) -> list[str]:
    """study.json, speedup_by_size.png and a self-contained speedup_by_size.html, all at once (staged)."""
    from . import plots

    static = plots.speedup_by_size(study.sizes, backend="matplotlib")
    png = io.BytesIO()
    static.savefig(png, format="png", dpi=120, bbox_inches="tight")
    page = plots.speedup_by_size(study.sizes).to_html(full_html=True, include_plotlyjs=True)
    with staged_directory(directory, overwrite) as staging:
        (staging / "study.json").write_text(study.to_json())
        (staging / "speedup_by_size.png").write_bytes(png.getvalue())
        (staging / "speedup_by_size.html").write_text(page, encoding="utf-8")
        return sorted(path.name for path in staging.iterdir())


def run_report(args: argparse.Namespace) -> Outcome:
    """The main job: one self-contained HTML page (:func:`subclone_viz.report.run_report`)."""
    from .report import run_report as write_report

    _check_new_file(args.out, (".html", ".htm"), args.overwrite)
    study = SpeedupStudy.load(args.speedup_study) if args.speedup_study is not None else None
    parent = _load(args)
    destination = None
    if args.layers is not None or args.hidden is not None:
        destination = _spec(args)
        _check_plan(parent, destination, "middle", "sqrt")
    with _blame_user(ImportError):
        parent_batches(parent, "heldout", args.data, max_batches=1)  # a bad --data (or no tokenizer) fails now
    quick = quick_mode(args.quick or None)
    path = write_report(parent, out=args.out, tokens=args.tokens, steps=args.steps, quick=quick,
                        overwrite=args.overwrite, data=args.data, destination=destination, seed=args.seed,
                        study=study)
    document = {"parent": parent.name, "output": str(path), "bytes": path.stat().st_size, "quick": quick}
    return Outcome(document, f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no network needed")


def _forecast_curve(args: argparse.Namespace) -> Any:
    """The run's LearningCurve from a history .json or a .csv log, every argument checked first."""
    from .forecast import LearningCurve
    from .train import History

    path = args.run_file.expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise UsageError(f"RUN={path}: give a training history .json or a .csv log")
    if not path.is_file():
        raise UsageError(f"RUN={path}: no such file")
    if suffix == ".json":
        extra = [f for f in ("lr_column", "schedule", "total_steps", "tokens_per_step") if getattr(args, f)]
        if extra:
            raise UsageError(f"--{extra[0].replace('_', '-')} is for .csv logs; a history carries its own schedule")
        return History.load_json(path).curve(parameters=args.parameters)
    if (args.lr_column is None) == (args.schedule is None):
        raise UsageError("a .csv log needs --lr-column (the rate of every step) or --schedule with --total-steps")
    if args.schedule is not None and args.total_steps is None:
        raise UsageError(f"--schedule {args.schedule} needs --total-steps (the run's planned length)")
    bad = [w for w in args.where if "=" not in w or not w.split("=", 1)[0]]
    if bad:
        raise UsageError(f"--where {bad[0]!r}: give COLUMN=VALUE")
    return LearningCurve.from_csv(path, step_column=args.step_column, loss_column=args.loss_column,
                                  lr_column=args.lr_column, schedule=args.schedule, total_steps=args.total_steps,
                                  warmup=args.warmup, peak=args.peak_lr, final_ratio=args.final_ratio,
                                  decay_fraction=args.decay_fraction, tokens_per_step=args.tokens_per_step,
                                  where=dict(w.split("=", 1) for w in args.where) or None,
                                  parameters=args.parameters)


def run_forecast(args: argparse.Namespace) -> Outcome:
    from .forecast import ForecastPrior, forecast

    if args.out is not None and args.out.exists() and not args.overwrite:
        raise UsageError(f"--out {args.out} exists: pass --overwrite to replace it")
    prior = ForecastPrior.load(args.prior) if args.prior is not None else None
    curve = _forecast_curve(args)
    if args.fit_until is not None:
        curve = curve.head(args.fit_until)
    result = forecast(curve, steps=args.steps, tokens=args.tokens, flops=args.flops, prior=prior)
    document = result.to_document()
    if args.out is not None:
        document["output"] = str(result.save(args.out, overwrite=args.overwrite))
    return Outcome(document, result.summary())


# --------------------------------------------------------------------------------------------------------
# Entry point


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 done, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's help (0) and errors (2)
        return exit_.code if isinstance(exit_.code, int) else 0
    stdout = sys.stdout
    run: Callable[[argparse.Namespace], Outcome] = args.run
    try:
        # Anything a library prints goes to stderr, so that --json output stays one document.
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            outcome = run(args)
    except UserError as error:  # the library raises these for what the user can fix; never bugs
        if distributed.is_main_process():
            print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    # Under accelerate launch every process ran the command; the main one reports it.
    if distributed.is_main_process():
        print(json.dumps(outcome.document, indent=2) if args.json else outcome.text, file=stdout, flush=True)
    return 0
