"""The ``subclone-viz`` command line: describe, profile, subclone and ablate a parent, compare training runs,
and write the headless HTML report.

Subcommands: ``info`` (the parent and its valid destination specs), ``profile`` (per-block residual metrics
and rank consistency, saved as ``.npz``), ``subclone`` (plan, slice, score on held-out text, save a
checkpoint), ``ablate`` (held-out loss with each block removed or duplicated), ``compare`` (train one
destination from several initializations, ``+distill`` ones with the parent as teacher; speedups per step
and per second of training; histories as CSV and JSON, a PNG and a self-contained HTML plot), ``study``
(the speedup study: several destination sizes, random init and subclone each at its best learning rate of a
sweep; ``--merge`` combines studies of other sizes) and ``report`` (the main job behind ``make demo``).

Every subcommand checks all of its arguments (the destination spec included, against the parent's config
before its weights load) before it profiles, trains or writes anything. A mistake exits with status 2 and one line on stderr that
names the bad value and the valid choices; a bug still raises with its traceback. ``--json`` prints one
JSON document on stdout and nothing else there: progress bars and notes go to stderr. Outputs are never
replaced without ``--overwrite``. Under ``accelerate launch`` every subcommand runs in every process (profiles
and evaluations sharded over them), and only the main process prints and writes: one output, exit 0 on every
rank.

This module only knows the arguments: their names, defaults, checks and help, with a description and an
example per subcommand; it imports no torch, so ``--help`` answers at once. The subcommands run in
:mod:`subclone_viz.cli_commands`, imported when one runs. Defaults shared with the library (the strategies,
the initializations and their learning rates) come from :mod:`subclone_viz.choices` and
:mod:`subclone_viz.inits`.

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
import json
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ._version import __version__
from .choices import (
    DEFAULT_ESTIMATOR,
    DEPTH_STRATEGIES,
    DEVICE_MAP_STRATEGIES,
    DISTILL_ALPHA,
    DISTILL_TEMPERATURE,
    EMBEDDED_ALIASES,
    ESTIMATOR_NAMES,
    SCALINGS,
    SCHEDULES,
    WIDTH_STRATEGIES,
)
from .inits import DEFAULT_LR_PRESET, INITS, LR_PRESETS
from .settings import STUDY_STEPS, PlanStrategy, ProfileSettings, TrainSettings

PROG = "subclone-viz"
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_PARENT = "smollm2-135m"
_PROFILE, _PLAN, _TRAIN = ProfileSettings(), PlanStrategy(), TrainSettings()  # the defaults the options use
HELP_WIDTH = 78  # a subcommand's description and example, wrapped as argparse wraps the rest of its help


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
    """A depth strategy name (checked against the registered strategies when the command runs: plugins may add
    some) or a comma list of parent block indices."""
    if text in DEPTH_STRATEGIES or not (text[:1].isdigit() or "," in text):
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
        raise argparse.ArgumentTypeError(
            f"{text}: must hold one JSON object of module name -> device (0, 'cpu', 'disk')"
        )
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
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a size: write LAYERSxHIDDEN with whole numbers > 0, e.g. 20x384"
            )
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
    common.add_argument(
        "--parent",
        default=DEFAULT_PARENT,
        help=f"embedded alias ({', '.join(EMBEDDED_ALIASES)}), hub id or local model directory "
        f"(default {DEFAULT_PARENT})",
    )
    common.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    common.add_argument("--dtype", choices=DTYPES, help="parameter dtype (default fp32 on CPU, bf16 on GPU)")
    common.add_argument(
        "--device-map",
        type=device_map_arg,
        metavar="MAP",
        help=f"spread a parent too big for one device: {', '.join(DEVICE_MAP_STRATEGIES)}, or a "
        f".json file of module name -> device (0, cuda:1, cpu, disk); replaces --device",
    )
    common.add_argument("--offload-folder", type=Path, help="where --device-map keeps modules mapped to disk")
    common.add_argument("--seed", type=non_negative_int, default=0, help="seed of torch and data shuffling (default 0)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")

    parser = _Parser(prog=PROG, description="Weight subcloning of transformers (Samragh et al., 2023).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", parents=[common], help="describe a parent and its valid destination specs")
    info.set_defaults(run=run_info)

    prof = commands.add_parser("profile", parents=[common], help="profile a parent's blocks and neurons")
    _add_data_arguments(prof)
    prof.add_argument(
        "--tokens", type=positive_int, default=_PROFILE.tokens, help=f"tokens to profile (default {_PROFILE.tokens})"
    )
    prof.add_argument("--split", choices=("train", "heldout"), default="train", help="data split (default train)")
    prof.add_argument("--out", type=Path, help="save the profile here (.npz); default: do not save")
    prof.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    prof.set_defaults(run=run_profile)

    sub = commands.add_parser("subclone", parents=[common], help="subclone a destination and save it")
    _add_data_arguments(sub)
    sub.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile --data first")
    sub.add_argument(
        "--profile-tokens",
        type=positive_int,
        default=_PROFILE.subclone_tokens,
        help=f"tokens to profile when no --profile is given (train split; default {_PROFILE.subclone_tokens})",
    )
    _add_spec_arguments(sub, hidden_required=True)
    sub.add_argument(
        "--depth",
        type=depth_arg,
        default=_PLAN.depth,
        help=f"{' | '.join(DEPTH_STRATEGIES)} | a comma list of parent blocks (default {_PLAN.depth})",
    )
    sub.add_argument(
        "--width",
        default=_PLAN.width,
        metavar="NAME",
        help=f"{' | '.join(WIDTH_STRATEGIES)} or a plugin's (default {_PLAN.width})",
    )
    sub.add_argument(
        "--scaling",
        default=_PLAN.scaling,
        metavar="NAME",
        help=f"{' | '.join(SCALINGS)} or a plugin's (default {_PLAN.scaling})",
    )
    sub.add_argument(
        "--importance",
        default=DEFAULT_ESTIMATOR,
        metavar="NAME",
        help=f"the importance estimator --width importance ranks by: {', '.join(ESTIMATOR_NAMES)} or a "
        f"plugin's (default {DEFAULT_ESTIMATOR})",
    )
    sub.add_argument(
        "--eval-tokens",
        type=non_negative_int,
        default=_PROFILE.eval_tokens,
        help=f"held-out tokens to score parent and destination on (0: skip; default {_PROFILE.eval_tokens})",
    )
    sub.add_argument("--out", type=Path, required=True, help="destination directory")
    sub.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    sub.set_defaults(run=run_subclone)

    ablate = commands.add_parser(
        "ablate", parents=[common], help="held-out loss with each single block removed or duplicated"
    )
    _add_data_arguments(ablate)
    ablate.add_argument(
        "--tokens",
        type=positive_int,
        default=_PROFILE.ablation_tokens,
        help=f"held-out tokens (default {_PROFILE.ablation_tokens})",
    )
    ablate.set_defaults(run=run_ablate)

    comp = commands.add_parser(
        "compare", parents=[common], help="train one destination from several initializations and compare the curves"
    )
    comp.set_defaults(run=run_compare)
    _add_data_arguments(comp, seq_len=128)
    comp.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    _add_spec_arguments(comp, hidden_required=True)
    comp.add_argument(
        "--inits",
        type=inits_arg,
        default=["random", "subclone"],
        help=f"comma list of {', '.join(INITS)} (default random,subclone)",
    )
    comp.add_argument(
        "--steps", type=positive_int, default=_TRAIN.steps, help=f"optimizer steps per init (default {_TRAIN.steps})"
    )
    comp.add_argument(
        "--lr",
        type=per_init_lr,
        action="append",
        default=[],
        metavar="[INIT=]VALUE",
        help="learning rate for one init (repeatable) or, without INIT=, for all "
        "(default: each init's rate of --lr-preset)",
    )
    comp.add_argument(
        "--weight-decay",
        "--wd",
        type=per_init_number,
        action="append",
        default=[],
        metavar="[INIT=]VALUE",
        help="weight decay, like --lr (default: the paper's, 0.1 from random, 0.001 inherited)",
    )
    comp.add_argument(
        "--lr-preset",
        choices=LR_PRESETS,
        default=DEFAULT_LR_PRESET,
        help="default learning rates where --lr sets none: 'tuned' (each init at the best rate of this "
        "project's sweeps: 3e-3 from random, 1e-3 inherited for language models) or 'paper' (the "
        f"paper's Table 1: 1e-4 for both) (default {DEFAULT_LR_PRESET})",
    )
    comp.add_argument("--warmup", type=non_negative_int, help="warmup steps (default 5%% of --steps)")
    comp.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="after warmup (default cosine)")
    comp.add_argument("--eval-every", type=positive_int, help="steps between evaluations (default steps / 10)")
    comp.add_argument(
        "--eval-tokens",
        type=positive_int,
        default=_PROFILE.eval_tokens,
        help=f"held-out tokens (default {_PROFILE.eval_tokens})",
    )
    comp.add_argument(
        "--distill-alpha",
        type=fraction_arg,
        help=f"for the +distill inits: weight a of the teacher's KL term in (1-a) * next-token loss + "
        f"a * KL (default {DISTILL_ALPHA:g})",
    )
    comp.add_argument(
        "--distill-temperature",
        type=positive_float,
        help=f"for the +distill inits: softmax temperature T of the KL term, scaled by T^2 "
        f"(default {DISTILL_TEMPERATURE:g})",
    )
    comp.add_argument("--out", type=Path, required=True, help="directory for histories, summary and plots")
    comp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    study = commands.add_parser(
        "study",
        parents=[common],
        help="speedup over random init for several destination sizes, each init at its best learning rate",
    )
    study.set_defaults(run=run_study)
    _add_data_arguments(study, seq_len=128)
    study.add_argument(
        "--sizes",
        type=sizes_arg,
        help="comma list of LAYERSxHIDDEN, mild to harsh (e.g. 24x480,20x384,8x288); FFN and heads follow the width",
    )
    study.add_argument(
        "--distill-sizes",
        type=optional_sizes_arg,
        default=[],
        help="those of --sizes also trained with the parent as teacher",
    )
    study.add_argument(
        "--distill-inits",
        type=distill_inits_arg,
        default=["subclone+distill", "random+distill"],
        help="the teacher's inits for --distill-sizes (default subclone+distill,random+distill)",
    )
    study.add_argument(
        "--random-lrs",
        type=lrs_arg,
        default=[1e-3, 3e-3],
        help="learning-rate sweep of random init (default 1e-3,3e-3)",
    )
    study.add_argument(
        "--subclone-lrs",
        type=lrs_arg,
        default=[3e-4, 1e-3],
        help="learning-rate sweep of the subclone (default 3e-4,1e-3)",
    )
    study.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    study.add_argument(
        "--steps", type=positive_int, default=STUDY_STEPS, help=f"optimizer steps per run (default {STUDY_STEPS})"
    )
    study.add_argument("--eval-every", type=positive_int, default=5, help="steps between evaluations (default 5)")
    study.add_argument("--eval-tokens", type=positive_int, default=1024, help="held-out tokens (default 1024)")
    study.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="STUDY",
        help="instead of training: merge these saved studies (study.json) of other sizes into --out",
    )
    study.add_argument(
        "--out", type=Path, required=True, help="directory for study.json, speedup_by_size.png and speedup_by_size.html"
    )
    study.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    report = commands.add_parser(
        "report", parents=[common], help="the main job: profile, ablate, subclone, size, train; one HTML page"
    )
    report.set_defaults(run=run_report)
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the .html file (default report.html)")
    report.add_argument(
        "--quick", action="store_true", help="shrink every stage to seconds (a smoke test; also SUBCLONE_VIZ_QUICK=1)"
    )
    report.add_argument("--data", default="builtin", help="'builtin' (Python's docs) or a .txt/.jsonl path")
    report.add_argument(
        "--tokens", type=positive_int, help=f"tokens to profile (default {_PROFILE.tokens}; --quick 256)"
    )
    report.add_argument(
        "--steps",
        type=non_negative_int,
        help="training steps per init in the comparison (0 skips it; default 24; --quick 2)",
    )
    _add_spec_arguments(report, hidden_required=False)
    report.add_argument(
        "--speedup-study",
        type=Path,
        metavar="FILE",
        help="a saved speedup study (the study.json of `subclone-viz study`) to show as the speedup-by-size section",
    )
    report.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_forecast_parser(commands)
    _describe(commands.choices)
    return parser


def _add_forecast_parser(commands: Any) -> None:
    fc = commands.add_parser(
        "forecast",
        help="forecast a run's held-out loss at a horizon, with an interval, from a "
        "saved history (.json) or any trainer's CSV log",
    )
    fc.set_defaults(run=run_forecast)
    fc.add_argument(
        "run_file",
        type=Path,
        metavar="RUN",
        help="a training history .json (History.save, `compare --out`) or a .csv log",
    )
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
    fc.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="CSV: keep the rows whose COLUMN holds VALUE (one run of a file of several); repeatable",
    )
    fc.add_argument("--tokens-per-step", type=positive_float, help="CSV: tokens per step (for --tokens/--flops)")
    fc.add_argument("--parameters", type=positive_int, help="the model's parameters (for --flops)")
    fc.add_argument("--out", type=Path, help="save the Forecast record (.json)")
    fc.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    fc.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of every subcommand of ``parser`` (:func:`build_parser`'s), by name, in its order."""
    found = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


# What each subcommand does and one example, shown by ``subclone-viz COMMAND --help``.
SUBCOMMAND_HELP: dict[str, tuple[str, str]] = {
    "info": (
        "Describe a parent (family, dimensions, parameters) and list the valid value of every destination "
        "spec option for it. Reads the parent only; writes nothing.",
        "subclone-viz info --parent smollm2-135m",
    ),
    "profile": (
        "Run the parent on --tokens tokens of --data with streaming hooks and print per-block residual "
        "metrics and the rank consistency of channel importance; --out saves the profile (.npz) for "
        "subclone, compare and study.",
        "subclone-viz profile --parent smollm2-135m --tokens 8192 --out profile.npz",
    ),
    "subclone": (
        "Plan which blocks, channels, neurons and heads to keep, slice them out of the parent, score the "
        "destination on held-out text and save it as an ordinary checkpoint. The spec is checked against "
        "the parent's config before any weights load.",
        "subclone-viz subclone --parent smollm2-135m --profile profile.npz --layers 20 --hidden 384 "
        "--out smollm2-20x384",
    ),
    "ablate": (
        "The parent's held-out loss with each single block removed, and duplicated: which blocks a "
        "shallower destination can spare.",
        "subclone-viz ablate --parent smollm2-135m --tokens 2048 --json",
    ),
    "compare": (
        "Train one destination shape from several initializations on the same batches in the same order, "
        "each at its own learning rate (--lr-preset tuned: the best of this project's sweeps; paper: the "
        "paper's), and report the speedup over random init per step and per second, with the rates behind "
        "it. A speedup against a random init that was still improving is marked as holding at this budget "
        "only.",
        "subclone-viz compare --parent smollm2-135m --layers 8 --hidden 288 --steps 300 "
        "--inits random,subclone --out runs/smollm2-8x288",
    ),
    "study": (
        "The speedup study: for each destination size, random init and the subclone each train at every "
        "rate of a small learning-rate sweep and keep their best, so that no speedup comes from a poorly "
        "tuned baseline; --merge combines studies of other sizes.",
        "subclone-viz study --parent smollm2-135m --sizes 24x480,20x384,8x288 --steps 60 --out runs/study",
    ),
    "report": (
        "The main job: profile, ablate, subclone, size and briefly train, then write one self-contained "
        "HTML page that opens without a network.",
        "subclone-viz report --parent smollm2-135m --out report.html --quick",
    ),
    "forecast": (
        "Forecast a run's held-out loss at a horizon (default: the end of its planned schedule), with an "
        "80% interval, from its evaluations so far and the learning rate of every step: a training "
        "history .json, or any trainer's .csv log with an lr column or a named schedule.",
        "subclone-viz forecast log.csv --loss-column val_loss --schedule cosine --total-steps 20000 --final-ratio 0.1",
    ),
}


def _shell_lines(command: str) -> str:
    """A shell command broken before its options (`` \\`` continuations) to fit :data:`HELP_WIDTH`."""
    words = command.split(" ")
    parts = [" ".join(words[:2])]
    for word in words[2:]:  # an option and its value stay on one line
        if word.startswith("--") or len(parts) == 1:
            parts.append(word)
        else:
            parts[-1] += " " + word
    lines = ["  " + parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + len(part) + 3 > HELP_WIDTH:
            lines[-1] += " \\"
            lines.append("      " + part)
        else:
            lines[-1] += " " + part
    return "\n".join(lines)


def _describe(subparsers: dict[str, argparse.ArgumentParser]) -> None:
    """Give every subcommand its description and example (an argparse epilog), kept as written."""
    for name, command in subparsers.items():
        if name not in SUBCOMMAND_HELP:
            continue  # tests/unit/test_cli_help.py fails for a subcommand without its description and example
        description, example = SUBCOMMAND_HELP[name]
        command.description = textwrap.fill(description, HELP_WIDTH)
        command.epilog = "example:\n" + _shell_lines(example)
        command.formatter_class = argparse.RawDescriptionHelpFormatter


def _add_data_arguments(parser: argparse.ArgumentParser, seq_len: int = 256) -> None:
    parser.add_argument(
        "--data",
        help="text: 'builtin' (Python's docs, default) or a .txt/.jsonl file or folder; "
        "images: 'digits' (default) or a root/<class>/<images> folder",
    )
    parser.add_argument("--seq-len", type=positive_int, default=seq_len, help=f"tokens per row (default {seq_len})")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="rows per batch (default 8)")


def _add_spec_arguments(parser: argparse.ArgumentParser, hidden_required: bool) -> None:
    parser.add_argument("--layers", type=layers_arg, help="destination block count, or a comma list of parent blocks")
    parser.add_argument("--hidden", type=positive_int, required=hidden_required, help="residual width")
    parser.add_argument("--ffn", type=positive_int, help="FFN width (default: the parent's ratio)")
    parser.add_argument("--heads", type=positive_int, help="query heads (default: follows --hidden)")
    parser.add_argument("--kv-heads", type=positive_int, help="key/value heads (default: the parent's ratio)")


# --------------------------------------------------------------------------------------------------------
# Entry point: the subcommands run in subclone_viz.cli_commands, which imports torch; --help never does


def _commands() -> ModuleType:
    """The module that runs the subcommands, imported when one runs (the one import inside a function here)."""
    from . import cli_commands

    return cli_commands


class _Command:
    """A subcommand's runner, named here and looked up in :mod:`subclone_viz.cli_commands` when it runs."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, args: argparse.Namespace) -> Any:
        return getattr(_commands(), self.__name__)(args)

    def __repr__(self) -> str:
        return f"<subcommand runner cli_commands.{self.__name__}>"


run_info = _Command("run_info")
run_profile = _Command("run_profile")
run_subclone = _Command("run_subclone")
run_ablate = _Command("run_ablate")
run_compare = _Command("run_compare")
run_study = _Command("run_study")
run_report = _Command("run_report")
run_forecast = _Command("run_forecast")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 done, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's help (0) and errors (2)
        return exit_.code if isinstance(exit_.code, int) else 0
    return _commands().execute(args, PROG)
