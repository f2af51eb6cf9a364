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
import dataclasses
import functools
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ._version import __version__
from .choices import DEPTH_STRATEGIES, DEVICE_MAP_STRATEGIES, EMBEDDED_ALIASES, PILOT_FRACTION, SCHEDULES
from .inits import DEFAULT_LR_PRESET, INITS, LR_PRESETS
from .parent_config import SpecDoesNotFitError, check_spec_fits, config_dims, misspelt_alias
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


def sweep_lrs_arg(text: str) -> list[float]:
    """A comma list of learning rates, or '' for none (a sweep left to another job)."""
    return lrs_arg(text) if text.strip() else []


def distill_inits_arg(text: str) -> list[str]:
    """A comma list of inits trained with the parent as teacher ('' for none)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = [name for name, init in INITS.items() if init.distill]
    wrong = [name for name in names if name not in valid]
    if wrong or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: choose each at most once from {', '.join(valid)}")
    return names


def counts_arg(text: str) -> list[int]:
    """A comma list of whole numbers >= 1, each once, in increasing order (a grid's axis)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give whole numbers >= 1 separated by commas, increasing, each once (e.g. 8,16,24)"
        )
    return values


def pilot_fraction_arg(text: str) -> float:
    """The share of a run its pilot trains: a number in (0, 1]."""
    return _number(text, lambda value: 0 < value <= 1, "a number > 0 and <= 1 (the share of each run piloted)")


def fraction_arg(text: str) -> float:
    return _number(text, lambda value: 0 <= value <= 1, "a number from 0 to 1")


def positive_float(text: str) -> float:
    return _number(text, lambda value: 0 < value < math.inf, "a finite number > 0")


# --------------------------------------------------------------------------------------------------------
# Flags generated from the settings' fields


class _FieldDefault:
    """The marker of a :class:`Flag` that takes the field's own default."""

    def __repr__(self) -> str:
        return "the field's default"


FIELD_DEFAULT: Any = _FieldDefault()
# A field's annotation -> the argparse type that checks it (the bound named in the error).
FIELD_TYPES: dict[str, Callable[[str], Any]] = {"int": positive_int, "float": positive_float}


@dataclass(frozen=True)
class Flag:
    """One field of a settings dataclass as a flag, where the flag differs from the field.

    Args:
        field: the field's name.
        option: the flag (default ``--`` + the field's name with dashes).
        help: the help, with ``{help}`` (the field's), ``{default}``, ``{choices}`` (`` | `` joined) and
            ``{names}`` (comma joined) filled in (default ``"{help} (default {default})"``).
        default: the parsed default, when not the field's (None: "not given", the help still names the field's).
        type: the argparse type, when not the one :data:`FIELD_TYPES` gives the field's annotation.
    """

    field: str
    option: str | None = None
    help: str | None = None
    default: Any = FIELD_DEFAULT
    type: Callable[[str], Any] | None = None


@functools.lru_cache(maxsize=1)
def _plugin_entry_points() -> dict[str, tuple[str, ...]]:
    """Every ``subclone_viz.*`` entry-point group's names, read from the ``entry_points.txt`` of the packages on
    ``sys.path`` (what :mod:`importlib.metadata` reads, without the quarter second its import takes)."""
    found: dict[str, set[str]] = {}
    for folder in {Path(entry or ".") for entry in sys.path}:
        try:
            infos = [path for path in folder.iterdir() if path.suffix in (".dist-info", ".egg-info")]
        except OSError:
            continue
        for info in infos:
            try:
                text = (info / "entry_points.txt").read_text(encoding="utf-8")
            except (OSError, ValueError):
                continue
            group = ""
            for line in (line.strip() for line in text.splitlines()):
                if line.startswith("[") and line.endswith("]"):
                    group = line[1:-1].strip()
                elif group.startswith("subclone_viz.") and "=" in line and not line.startswith(("#", ";")):
                    found.setdefault(group, set()).add(line.split("=", 1)[0].strip())
    return {group: tuple(sorted(names)) for group, names in found.items()}


def plugin_names(group: str) -> tuple[str, ...]:
    """The names plugins register under the entry-point ``group``, read from the installed packages' metadata:
    no plugin (and no torch) is imported."""
    return _plugin_entry_points().get(group, ())


def field_choices(field: dataclasses.Field) -> tuple[str, ...]:
    """A field's choices: its metadata's fixed list, and the plugins' names of an open one."""
    fixed = tuple(field.metadata.get("choices", ()))
    group = field.metadata.get("plugins")
    return fixed + tuple(name for name in plugin_names(group) if name not in fixed) if group else fixed


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flag_help(flag: Flag, field: dataclasses.Field, shown: Any, choices: Sequence[str]) -> str:
    if flag.help is not None:
        template = flag.help
    elif field.metadata.get("plugins"):  # an open list: the plan checks the name once plugins load
        template = "{choices} or a plugin's (default {default})"
    else:
        template = "{help}" if shown is None else "{help} (default {default})"
    return template.format(
        help=field.metadata["help"], default=_shown(shown), choices=" | ".join(choices), names=", ".join(choices)
    )


def add_fields(parser: argparse.ArgumentParser, settings: Any, *flags: Flag | str) -> None:
    """Add fields of the settings dataclass instance ``settings`` as flags of ``parser``.

    Each flag takes its type from the field's annotation (:data:`FIELD_TYPES`; booleans become on/off flags),
    its default from ``settings``, its help and choices from the field's metadata: a fixed list becomes
    argparse's choices, an open one (metadata ``plugins``: an entry-point group) is listed in the help with
    the installed plugins' names and checked when the command runs. A :class:`Flag` changes what differs.
    """
    fields = {field.name: field for field in dataclasses.fields(settings)}
    for flag in (Flag(item) if isinstance(item, str) else item for item in flags):
        field = fields[flag.field]
        value = getattr(settings, flag.field)
        default = value if flag.default is FIELD_DEFAULT else flag.default
        shown = value if default is None else default
        choices = field_choices(field)
        option = flag.option or "--" + flag.field.replace("_", "-")
        text = _flag_help(flag, field, shown, choices)
        kind = str(field.type).removesuffix(" | None")
        if kind == "bool":
            parser.add_argument(option, action="store_true", default=default, help=text, dest=flag.field)
            continue
        options: dict[str, Any] = {"default": default, "help": text, "dest": option[2:].replace("-", "_")}
        if choices and not field.metadata.get("plugins"):
            options["choices"] = choices
        elif choices and flag.type is None:
            options["metavar"] = "NAME"
        argument_type = flag.type or FIELD_TYPES.get(kind)
        if argument_type is not None:
            options["type"] = argument_type
        parser.add_argument(option, **options)


# --------------------------------------------------------------------------------------------------------
# The parser


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common_parser() -> _Parser:
    """The options every subcommand that loads a parent takes."""
    common = _Parser(add_help=False)
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
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``subclone-viz`` parser; each subcommand stores its runner in ``args.run``."""
    parser = _Parser(prog=PROG, description="Weight subcloning of transformers (Samragh et al., 2023).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_parser()
    for name, (summary, add_arguments) in SUBCOMMANDS.items():
        command = commands.add_parser(name, parents=[] if name == "forecast" else [common], help=summary)
        command.set_defaults(run=_Command(f"run_{name}"))
        add_arguments(command)
    _describe(commands.choices)
    return parser


def _add_output(parser: argparse.ArgumentParser, help: str, replace: str, **options: Any) -> None:
    parser.add_argument("--out", type=Path, help=help, **options)
    parser.add_argument("--overwrite", action="store_true", help=f"replace {replace} --out")


def _add_profile(parser: argparse.ArgumentParser) -> None:
    _add_data_arguments(parser)
    add_fields(parser, _PROFILE, "tokens")
    parser.add_argument("--split", choices=("train", "heldout"), default="train", help="data split (default train)")
    _add_output(parser, "save the profile here (.npz); default: do not save", "an existing")


def _add_subclone(parser: argparse.ArgumentParser) -> None:
    _add_data_arguments(parser)
    parser.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile --data first")
    add_fields(
        parser,
        _PROFILE,
        Flag(
            "subclone_tokens",
            "--profile-tokens",
            "tokens to profile when no --profile is given (train split; default {default})",
        ),
    )
    _add_spec_arguments(parser, hidden_required=True)
    add_fields(
        parser,
        _PLAN,
        Flag("depth", help="{choices} | a comma list of parent blocks (default {default})", type=depth_arg),
        "width",
        "scaling",
        Flag(
            "importance",
            help="the importance estimator --width importance ranks by: {names} or a plugin's (default {default})",
        ),
    )
    add_fields(
        parser,
        _PROFILE,
        Flag(
            "eval_tokens",
            help="held-out tokens to score parent and destination on (0: skip; default {default})",
            type=non_negative_int,
        ),
    )
    _add_output(parser, "destination directory", "a non-empty", required=True)


def _add_ablate(parser: argparse.ArgumentParser) -> None:
    _add_data_arguments(parser)
    add_fields(parser, _PROFILE, Flag("ablation_tokens", "--tokens", "held-out tokens (default {default})"))


def _add_per_init(parser: argparse.ArgumentParser) -> None:
    """--inits and the per-init learning rates and weight decays of ``compare``."""
    parser.add_argument(
        "--inits",
        type=inits_arg,
        default=["random", "subclone"],
        help=f"comma list of {', '.join(INITS)} (default random,subclone)",
    )
    add_fields(parser, _TRAIN, Flag("steps", help="optimizer steps per init (default {default})"))
    per_init: dict[str, Any] = {"action": "append", "default": [], "metavar": "[INIT=]VALUE"}
    parser.add_argument(
        "--lr",
        type=per_init_lr,
        help="learning rate for one init (repeatable) or, without INIT=, for all "
        "(default: each init's rate of --lr-preset)",
        **per_init,
    )
    parser.add_argument(
        "--weight-decay",
        "--wd",
        type=per_init_number,
        help="weight decay, like --lr (default: the paper's, 0.1 from random, 0.001 inherited)",
        **per_init,
    )
    parser.add_argument(
        "--lr-preset",
        choices=LR_PRESETS,
        default=DEFAULT_LR_PRESET,
        help="default learning rates where --lr sets none: 'tuned' (each init at the best rate of this "
        "project's sweeps: 3e-3 from random, 1e-3 inherited for language models) or 'paper' (the "
        f"paper's Table 1: 1e-4 for both) (default {DEFAULT_LR_PRESET})",
    )


def _add_compare(parser: argparse.ArgumentParser) -> None:
    _add_data_arguments(parser, seq_len=128)
    parser.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    _add_spec_arguments(parser, hidden_required=True)
    _add_per_init(parser)
    add_fields(
        parser,
        _TRAIN,
        Flag("warmup", help="warmup steps (default 5%% of --steps)", type=non_negative_int),
        Flag("schedule", help="after warmup (default {default})"),
        Flag("eval_every", help="steps between evaluations (default steps / 10)"),
    )
    add_fields(parser, _PROFILE, Flag("eval_tokens", help="held-out tokens (default {default})"))
    add_fields(
        parser,
        _TRAIN,
        Flag(
            "distill_alpha",
            help="for the +distill inits: weight a of the teacher's KL term in (1-a) * next-token loss + "
            "a * KL (default {default})",
            default=None,
            type=fraction_arg,
        ),
        Flag(
            "distill_temperature",
            help="for the +distill inits: softmax temperature T of the KL term, scaled by T^2 (default {default})",
            default=None,
        ),
    )
    _add_output(parser, "directory for histories, summary and plots", "a non-empty", required=True)


def _add_study(parser: argparse.ArgumentParser) -> None:
    _add_data_arguments(parser, seq_len=128)
    parser.add_argument(
        "--sizes",
        type=sizes_arg,
        help="comma list of LAYERSxHIDDEN, mild to harsh (e.g. 24x480,20x384,8x288); FFN and heads follow the width",
    )
    parser.add_argument(
        "--distill-sizes",
        type=optional_sizes_arg,
        default=[],
        help="those of --sizes also trained with the parent as teacher",
    )
    parser.add_argument(
        "--distill-inits",
        type=distill_inits_arg,
        default=["subclone+distill", "random+distill"],
        help="the teacher's inits for --distill-sizes (default subclone+distill,random+distill)",
    )
    parser.add_argument(
        "--random-lrs",
        type=lrs_arg,
        default=lrs_arg("1e-3,3e-3"),
        help="learning-rate sweep of random init (default 1e-3,3e-3)",
    )
    parser.add_argument(
        "--subclone-lrs",
        type=sweep_lrs_arg,
        default=lrs_arg("3e-4,1e-3"),
        help="learning-rate sweep of the subclone (default 3e-4,1e-3; '' for none: random init's sweep alone, "
        "a job that --merge joins with the others of the same size and seed)",
    )
    parser.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    add_fields(
        parser,
        _TRAIN,
        Flag("steps", help="optimizer steps per run (default {default})", default=STUDY_STEPS),
        Flag("eval_every", help="steps between evaluations (default {default})", default=5),
    )
    add_fields(parser, _PROFILE, Flag("eval_tokens", help="held-out tokens (default {default})", default=1024))
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="STUDY",
        help="instead of training: merge these saved studies (study.json) of other sizes into --out",
    )
    _add_output(
        parser,
        "directory for study.json, speedup_by_size.png and speedup_by_size.html",
        "a non-empty",
        required=True,
    )


def _add_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="the .html file (default report.html)")
    parser.add_argument(
        "--quick", action="store_true", help="shrink every stage to seconds (a smoke test; also SUBCLONE_VIZ_QUICK=1)"
    )
    parser.add_argument("--data", default="builtin", help="'builtin' (Python's docs) or a .txt/.jsonl path")
    parser.add_argument(
        "--tokens", type=positive_int, help=f"tokens to profile (default {_PROFILE.tokens}; --quick 256)"
    )
    parser.add_argument(
        "--steps",
        type=non_negative_int,
        help="training steps per init in the comparison (0 skips it; default 24; --quick 2)",
    )
    _add_spec_arguments(parser, hidden_required=False)
    parser.add_argument(
        "--speedup-study",
        type=Path,
        metavar="FILE",
        help="a saved speedup study (the study.json of `subclone-viz study`) to show as the speedup-by-size section",
    )
    parser.add_argument(
        "--budget-grid",
        type=Path,
        metavar="FILE",
        help="a saved budget grid (the budget_grid.json of `subclone-viz grid --budget-tokens/--budget-flops`) to "
        "show as the budget section",
    )
    parser.add_argument(
        "--no-cut",
        action="store_true",
        help="skip the 'what the cut loses' section (the logit lens of parent and destination on one held-out "
        "row, their layer similarity on one batch)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _add_grid(parser: argparse.ArgumentParser) -> None:
    _add_data_arguments(parser, seq_len=128)
    parser.add_argument(
        "--layers", type=counts_arg, help="comma list of destination block counts (default: spread over the parent's)"
    )
    parser.add_argument(
        "--hidden", type=counts_arg, help="comma list of destination widths (default: spread over the parent's)"
    )
    parser.add_argument("--profile", type=Path, help="a saved profile (.npz); default: profile the training data")
    add_fields(
        parser,
        _PROFILE,
        Flag(
            "subclone_tokens",
            "--profile-tokens",
            "tokens to profile when no --profile is given (train split; default {default})",
        ),
        Flag("eval_tokens", help="held-out tokens each cell is scored on (default {default})", default=1024),
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-tokens",
        type=positive_float,
        metavar="N",
        help="forecast each cell's held-out loss after training on N tokens, from a short pilot run",
    )
    budget.add_argument(
        "--budget-flops",
        type=positive_float,
        metavar="F",
        help="the same at F training FLOPs (6 x parameters x tokens: smaller sizes train longer)",
    )
    parser.add_argument(
        "--pilot-fraction",
        type=pilot_fraction_arg,
        help=f"with a budget: the share of each run its pilot trains (default {PILOT_FRACTION:g})",
    )
    parser.add_argument(
        "--inits", type=inits_arg, help="with a budget: comma list of the inits to pilot (default subclone)"
    )
    _add_output(
        parser, "directory for the grid's record, its Pareto figure as PNG and HTML", "a non-empty", required=True
    )


def _add_forecast(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_file",
        type=Path,
        metavar="RUN",
        help="a training history .json (History.save, `compare --out`) or a .csv log",
    )
    horizon = parser.add_mutually_exclusive_group()
    horizon.add_argument("--steps", type=positive_int, help="horizon in optimizer steps (default: the run's end)")
    horizon.add_argument("--tokens", type=positive_float, help="horizon in training tokens")
    horizon.add_argument("--flops", type=positive_float, help="horizon in FLOPs (6 x parameters x tokens)")
    parser.add_argument("--fit-until", type=positive_int, metavar="STEP", help="use the evaluations up to STEP only")
    parser.add_argument("--prior", type=Path, help="a saved ForecastPrior .json (default: the library's)")
    parser.add_argument("--step-column", default="step", help="CSV: the step column (default step)")
    parser.add_argument("--loss-column", default="loss", help="CSV: the held-out loss column (default loss)")
    parser.add_argument("--lr-column", help="CSV: the learning rate of every step (or give --schedule)")
    parser.add_argument("--schedule", choices=SCHEDULES, help="CSV: the named schedule of the whole run")
    parser.add_argument("--total-steps", type=positive_int, help="CSV with --schedule: the run's planned length")
    parser.add_argument("--warmup", type=non_negative_int, default=0, help="CSV with --schedule: warmup steps")
    parser.add_argument("--peak-lr", type=positive_float, default=1.0, help="CSV with --schedule: the peak rate")
    parser.add_argument("--final-ratio", type=float, default=0.0, help="CSV with --schedule: final rate / peak")
    parser.add_argument("--decay-fraction", type=float, default=0.2, help="CSV with --schedule wsd: decay share")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="CSV: keep the rows whose COLUMN holds VALUE (one run of a file of several); repeatable",
    )
    parser.add_argument("--tokens-per-step", type=positive_float, help="CSV: tokens per step (for --tokens/--flops)")
    parser.add_argument("--parameters", type=positive_int, help="the model's parameters (for --flops)")
    _add_output(parser, "save the Forecast record (.json)", "an existing")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")


def _add_nothing(parser: argparse.ArgumentParser) -> None:
    """``info`` takes the common options only."""


# Every subcommand in the order --help lists them: its one-line summary and what adds its own options.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "info": ("describe a parent and its valid destination specs", _add_nothing),
    "profile": ("profile a parent's blocks and neurons", _add_profile),
    "subclone": ("subclone a destination and save it", _add_subclone),
    "ablate": ("held-out loss with each single block removed or duplicated", _add_ablate),
    "compare": ("train one destination from several initializations and compare the curves", _add_compare),
    "study": (
        "speedup over random init for several destination sizes, each init at its best learning rate",
        _add_study,
    ),
    "report": ("the main job: profile, ablate, subclone, size, train; one HTML page", _add_report),
    "forecast": (
        "forecast a run's held-out loss at a horizon, with an interval, from a saved history (.json) or any "
        "trainer's CSV log",
        _add_forecast,
    ),
    "grid": (
        "every (layers x hidden) subclone's size, cost and loss, untrained or forecast at a training budget",
        _add_grid,
    ),
}


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
    "grid": (
        "Subclone every (layers x hidden) destination of a grid and measure its parameters, FLOPs per token, "
        "latency and held-out loss before training, with the Pareto front of loss against cost. With "
        "--budget-tokens or --budget-flops, each cell instead trains a short pilot (--pilot-fraction of its "
        "run) and its held-out loss at that budget is forecast, with an 80% interval.",
        "subclone-viz grid --parent smollm2-135m --layers 8,16,24 --hidden 192,384 --budget-tokens 2e6 --out runs/grid",
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


def _describe(subparsers: Mapping[str, argparse.ArgumentParser]) -> None:
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


# The subcommands whose destination specs (--layers, --hidden, --ffn; study's --sizes) the parent's config
# can refuse before torch is imported.
SPEC_COMMANDS = ("subclone", "compare", "study", "report")


def _specs(args: argparse.Namespace) -> list[tuple[Any, int | None, int | None]]:
    """(layers, hidden, ffn) of every destination ``args`` names; empty for the commands that name none."""
    if args.command not in SPEC_COMMANDS:
        return []
    if args.command == "study":
        return [(layers, hidden, None) for layers, hidden in args.sizes or []]
    depth = getattr(args, "depth", None)
    layers = args.layers if args.layers is not None or not isinstance(depth, list) else depth
    return [(layers, args.hidden, args.ffn)]


def refuse_misfit(args: argparse.Namespace) -> str | None:
    """The one-line error for a misspelt ``--parent`` or a destination spec the parent's config rules out, read
    without torch (:mod:`subclone_viz.parent_config`); None when it may fit (the full check runs once torch is
    loaded)."""
    parent = getattr(args, "parent", None)  # forecast takes no parent
    misspelt = misspelt_alias(str(parent)) if parent is not None else None
    if misspelt is not None:
        return misspelt
    specs = _specs(args)
    dims = config_dims(str(args.parent)) if specs else None
    if dims is None:
        return None
    try:
        for layers, hidden, ffn in specs:
            check_spec_fits(dims, layers, hidden, ffn)
    except SpecDoesNotFitError as error:
        return str(error)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 done, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's help (0) and errors (2)
        return exit_.code if isinstance(exit_.code, int) else 0
    problem = refuse_misfit(args)
    if problem is not None:
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch, one line from the main process
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    return _commands().execute(args, PROG)
