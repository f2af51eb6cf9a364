"""The speedup study: how much faster than random init does a SmolLM2 destination train, from mild to harsh cuts?

For each destination size (default 24 x 480, 20 x 384, 8 x 288 of SmolLM2-135M's 30 x 576), random init and
the paper's subclone each train at every learning rate of a small sweep and keep their best (lowest final
held-out loss), so that no speedup comes from a poor learning rate for random init. For one size (default
the middle one) the subclone and random init are also trained with the parent as teacher (``+distill``, at
their own best learning rates), so that the gain of the start and the gain of the teacher separate. Every
run of a size sees the same batches in the same order (``compare``'s guarantee, one seed).

The speedup is the one of :func:`subclone_viz.speedup`: the steps random init needs to reach its own final
held-out loss over the steps the other needs, and the same in seconds of training (the teacher's forward
makes a distilled step dearer). Budget flags (``--steps``, ``--batch-size``, ``--seq-len``) set how far this
reaches. The defaults (24 steps of 2 x 64 tokens per run, 14 runs) were the most that fitted about half an
hour on this 2-core CPU shared with other jobs: thousands of times below the paper's budget, so read the
figures as what a few thousand tokens show, not as the paper's regime.

The study itself is :func:`subclone_viz.study.speedup_study`; this script sets the budget, writes
``--out``/results.json (a :class:`~subclone_viz.study.SpeedupStudy`: every history, the sweeps, the table) and
``--out``/speedup_by_size.png (:func:`subclone_viz.plots.speedup_by_size`), and prints a Markdown table.
``--merge A.json B.json`` combines studies of other sizes run as separate jobs into ``--out``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speedup_study.py --out bench/results/speedup_study
    # on a GPU: --device cuda --steps 2000 --batch-size 32 --seq-len 256
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import subclone_viz as sv
from subclone_viz import plots
from subclone_viz.compare import INITS, speedup_text
from subclone_viz.study import SpeedupStudy, speedup_study


def size_arg(text: str) -> sv.DestinationSpec:
    """``LAYERSxHIDDEN``, e.g. ``20x384``."""
    try:
        layers, hidden = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write LAYERSxHIDDEN, e.g. 20x384") from None
    return sv.DestinationSpec(layers=layers, hidden=hidden)


def floats_arg(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers such as 1e-3,3e-3") from None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda t: [size_arg(s) for s in t.split(",")],
                        default=[size_arg(s) for s in ("24x480", "20x384", "8x288")],
                        help="comma list of LAYERSxHIDDEN, mild to harsh")
    parser.add_argument("--distill-size", type=size_arg, default=size_arg("20x384"),
                        help="the size also trained with a teacher")
    parser.add_argument("--distill-inits", default="subclone+distill,random+distill",
                        help="comma list of +distill inits for --distill-size ('' for none)")
    parser.add_argument("--distill-alpha", type=float, default=None, help="default: TrainSettings' default")
    parser.add_argument("--distill-temperature", type=float, default=None, help="default: TrainSettings' default")
    parser.add_argument("--random-lrs", type=floats_arg, default=[1e-3, 3e-3], help="sweep for random init")
    parser.add_argument("--subclone-lrs", type=floats_arg, default=[3e-4, 1e-3], help="sweep for the subclone")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run")
    parser.add_argument("--eval-every", type=int, default=3,
                        help="steps between evaluations; also the resolution of a lower bound (steps / eval-every)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--eval-batches", type=int, default=2, help="held-out batches of batch-size x seq-len")
    parser.add_argument("--profile-tokens", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="merge these saved studies into --out instead of running one")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speedup_study"))
    args = parser.parse_args()
    args.distill_inits = [name for name in args.distill_inits.split(",") if name]
    unknown = [name for name in args.distill_inits if name not in INITS or not INITS[name].distill]
    if unknown:
        valid = ", ".join(name for name, init in INITS.items() if init.distill)
        parser.error(f"--distill-inits {unknown}: not distilled inits; choose from {valid}")
    if args.distill_inits and args.distill_size not in args.sizes:
        parser.error(f"--distill-size {args.distill_size} is not among --sizes {args.sizes}")
    return args


def run(args: argparse.Namespace) -> SpeedupStudy:
    parent = sv.load_parent("smollm2-135m", device=args.device)
    batches = dict(seq_len=args.seq_len, batch_size=args.batch_size)
    train = sv.text_batches("builtin", parent.tokenizer, shuffle=True, seed=args.seed, **batches)
    heldout = sv.text_batches("builtin", parent.tokenizer, split="heldout", max_batches=args.eval_batches, **batches)
    prof = sv.profile(parent, sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8),
                      max_tokens=args.profile_tokens, progress=False)
    distill = {name: getattr(args, name) for name in ("distill_alpha", "distill_temperature")
               if getattr(args, name) is not None}
    print(f"{parent.description}; {args.steps} steps of {args.batch_size} x {args.seq_len} tokens per run, "
          f"held-out loss every {args.eval_every} steps on {heldout.description}, on {parent.input_device}",
          flush=True)
    return speedup_study(parent, args.sizes, train, heldout, profile=prof, random_lrs=args.random_lrs,
                         subclone_lrs=args.subclone_lrs, distill_sizes=[args.distill_size] if args.distill_inits else [],
                         distill_inits=args.distill_inits, steps=args.steps, eval_every=args.eval_every,
                         seed=args.seed, progress=False, log=lambda line: print(" ", line, flush=True), **distill)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    study = SpeedupStudy.merge([SpeedupStudy.load(path) for path in args.merge]) if args.merge else run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    study.save(args.out / "results.json", overwrite=True)
    print("\n| destination | parameters | init | best lr | held-out loss at 0 | final | speedup per step "
          "| per second |")
    print("|---|---|---|---|---|---|---|---|")
    for row in study.table():
        print(f"| {row['destination']} | {row['parameters'] / 1e6:.1f}M | {row['init']} | {row['best_lr']:g} | "
              f"{row['initial_loss']:.3f} | {row['final_loss']:.3f} | {speedup_text(row)} | "
              f"{speedup_text(row, 'speedup_per_second')} |")
    figure = plots.speedup_by_size(study.sizes, backend="matplotlib")
    figure.savefig(args.out / "speedup_by_size.png", dpi=120, bbox_inches="tight")
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min; wrote {args.out / 'results.json'} and "
          f"{args.out / 'speedup_by_size.png'}")


if __name__ == "__main__":
    main()
