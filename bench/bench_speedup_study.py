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

Writes ``--out``/results.json (every history, the sweeps, the table) and ``--out``/speedup_by_size.png
(:func:`subclone_viz.plots.speedup_by_size`), and prints a Markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speedup_study.py --out bench/results/speedup_study
    # on a GPU: --device cuda --steps 2000 --batch-size 32 --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import subclone_viz as sv
from subclone_viz.compare import INITS, compare, speedup
from subclone_viz.train import History


def size_arg(text: str) -> tuple[int, int]:
    """``LAYERSxHIDDEN``, e.g. ``20x384``."""
    try:
        layers, hidden = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write LAYERSxHIDDEN, e.g. 20x384") from None
    return layers, hidden


def floats_arg(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers such as 1e-3,3e-3") from None
    if not values or any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one learning rate, each > 0")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda t: [size_arg(s) for s in t.split(",")],
                        default=[(24, 480), (20, 384), (8, 288)], help="comma list of LAYERSxHIDDEN, mild to harsh")
    parser.add_argument("--distill-size", type=size_arg, default=(20, 384), help="the size also trained with a teacher")
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
    parser.add_argument("--out", type=Path, default=Path("bench/results/speedup_study"))
    args = parser.parse_args()
    args.distill_inits = [name for name in args.distill_inits.split(",") if name]
    unknown = [name for name in args.distill_inits if name not in INITS or not INITS[name].distill]
    if unknown:
        valid = ", ".join(name for name, init in INITS.items() if init.distill)
        parser.error(f"--distill-inits {unknown}: not distilled inits; choose from {valid}")
    if args.distill_size not in args.sizes and args.distill_inits:
        parser.error(f"--distill-size {args.distill_size} is not among --sizes {args.sizes}")
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    parent = sv.load_parent("smollm2-135m", device=args.device)
    batches = dict(seq_len=args.seq_len, batch_size=args.batch_size)
    train = sv.text_batches("builtin", parent.tokenizer, shuffle=True, seed=args.seed, **batches)
    heldout = sv.text_batches("builtin", parent.tokenizer, split="heldout", max_batches=args.eval_batches, **batches)
    prof = sv.profile(parent, sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8),
                      max_tokens=args.profile_tokens, progress=False)
    distill_options = {name: getattr(args, name) for name in ("distill_alpha", "distill_temperature")
                       if getattr(args, name) is not None}
    print(f"{parent.description}; {args.steps} steps of {args.batch_size} x {args.seq_len} tokens per run, "
          f"held-out loss every {args.eval_every} steps on {heldout.description}, on {parent.input_device}",
          flush=True)

    def run(spec: sv.DestinationSpec, init: str, lr: float) -> History:
        began = time.perf_counter()
        result = compare(parent, spec, train, inits=[init], steps=args.steps, eval_batches=heldout, profile=prof,
                         lrs={init: lr}, eval_every=args.eval_every, seed=args.seed, progress=False,
                         **(distill_options if INITS[init].distill else {}))
        history = result.histories[init]
        print(f"  {spec.layers} x {spec.hidden} {init} lr={lr:g}: held-out {history.evals[0].loss:.3f} -> "
              f"{history.evals[-1].loss:.3f} ({time.perf_counter() - began:.0f} s wall, "
              f"{history.steps[-1].time:.0f} s training)", flush=True)
        return history

    args.out.mkdir(parents=True, exist_ok=True)
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    config.update(parent=parent.description, device=str(parent.input_device), data=train.description,
                  heldout=heldout.description)

    def save(sizes: list[dict]) -> None:
        """results.json so far: a run cut short keeps the sizes it finished."""
        wall = time.perf_counter() - started
        (args.out / "results.json").write_text(json.dumps({"config": {**config, "wall_seconds": wall},
                                                           "sizes": sizes}, indent=1))

    sizes = []
    for layers, hidden in args.sizes:
        spec = sv.DestinationSpec(layers=layers, hidden=hidden)
        dims = spec.resolve(parent.dims, parent.family.heads_follow_hidden)
        shape = sv.plan(parent, None, spec, width="first", scaling="none")
        parameters = sum(p.numel() for p in parent.family.build(
            parent.model, shape.destination_dims, shape.layers, device="meta").parameters())
        sweeps = {"random": {lr: run(spec, "random", lr) for lr in args.random_lrs},
                  "subclone": {lr: run(spec, "subclone", lr) for lr in args.subclone_lrs}}
        best = {init: min(runs, key=lambda lr: runs[lr].evals[-1].loss) for init, runs in sweeps.items()}
        if (layers, hidden) == args.distill_size:
            for init in args.distill_inits:
                start = "random" if INITS[init].strategies is None else "subclone"
                sweeps[init] = {best[start]: run(spec, init, best[start])}
                best[init] = best[start]
        reference = sweeps["random"][best["random"]]
        sizes.append({
            "label": f"{layers} x {hidden}",
            "dims": dims.to_dict(),
            "parameters": parameters,
            "best_lr": best,
            "speedups": {init: speedup(reference, sweeps[init][lr]).to_dict() for init, lr in best.items()},
            "final_loss": {init: sweeps[init][lr].evals[-1].loss for init, lr in best.items()},
            "initial_loss": {init: sweeps[init][lr].evals[0].loss for init, lr in best.items()},
            "runs": {init: {str(lr): h.to_dict() for lr, h in runs.items()} for init, runs in sweeps.items()},
        })
        save(sizes)

    print("\n| destination | parameters | init | best lr | held-out loss at 0 | final | speedup per step "
          "| per second |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for init, gain in size["speedups"].items():
            print(f"| {size['label']} | {size['parameters'] / 1e6:.1f}M | {init} | {size['best_lr'][init]:g} | "
                  f"{size['initial_loss'][init]:.3f} | {size['final_loss'][init]:.3f} | "
                  f"{shown(gain, 'speedup')} | {shown(gain, 'speedup_per_second')} |")
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")
    save(sizes)
    from subclone_viz import plots

    figure = plots.speedup_by_size(sizes, backend="matplotlib")
    figure.savefig(args.out / "speedup_by_size.png", dpi=120, bbox_inches="tight")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'speedup_by_size.png'}")


def shown(gain: dict, key: str) -> str:
    value = gain[key]
    if value is None:
        return "n/a"
    if gain["speedup_lower_bound"]:
        return f"more than {value:.1f}x"
    if not gain["reached"]:
        return f"not reached ({value:.2f}x at most)"
    return f"{value:.1f}x"


if __name__ == "__main__":
    main()
