"""The own runs bench_forecast.py scores: SmolLM2-135M destinations of several sizes, subclone and random init,
two seeds, each trained once with a cosine schedule to 10% of its peak learning rate; one History JSON per run.

Resumable: a run whose file exists is skipped, so the job can be stopped and started again.

    OMP_NUM_THREADS=1 .venv/bin/python bench/_forecast_runs.py --out runs/forecast_smollm2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import subclone_viz as sv
from subclone_viz.compare import INITS

SIZES = ((4, 192), (6, 240), (8, 288), (12, 336), (16, 384))  # hidden: a multiple of 3 heads
LRS = {"random": 3e-3, "subclone": 1e-3}  # each init's best of the speedup study's sweep
WEIGHT_DECAY = {"random": 0.1, "subclone": 0.001}  # the paper's Table 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    parent = sv.load_parent("smollm2-135m")
    heldout = sv.text_batches(
        "builtin",
        parent.tokenizer,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        split="heldout",
        max_batches=args.eval_batches,
    )
    calibration = sv.text_batches("builtin", parent.tokenizer, seq_len=128, batch_size=4, shuffle=True)
    prof = sv.profile(parent, calibration, max_tokens=4096, progress=False)
    began = time.perf_counter()
    for seed in args.seeds:
        batches = sv.text_batches(
            "builtin", parent.tokenizer, seq_len=args.seq_len, batch_size=args.batch_size, shuffle=True, seed=seed
        )
        for layers, hidden in SIZES:
            spec = sv.DestinationSpec(layers=layers, hidden=hidden)
            for init in ("subclone", "random"):
                path = args.out / f"{layers}x{hidden}-{init}-seed{seed}.json"
                if path.exists():
                    continue
                if init == "random":
                    model = sv.random_init(parent, spec, seed=seed).float()
                else:
                    chosen = sv.plan(parent, prof, spec, **INITS["subclone"].strategies)
                    model = sv.subclone(parent, chosen, calibration_batches=calibration).float()
                settings = sv.TrainSettings(
                    steps=args.steps,
                    lr=LRS[init],
                    weight_decay=WEIGHT_DECAY[init],
                    schedule="cosine",
                    final_lr_ratio=0.1,
                    eval_every=args.eval_every,
                    seed=seed,
                )
                history = sv.train(
                    model,
                    batches,
                    settings,
                    eval_batches=heldout,
                    progress=False,
                    label=f"{layers} x {hidden} {init} seed {seed}",
                )
                history.config["parameters"] = sum(p.numel() for p in model.parameters())
                history.save(path)
                print(
                    f"{path.name}: {history.evals[0].loss:.3f} -> {history.evals[-1].loss:.3f} "
                    f"({time.perf_counter() - began:.0f} s so far)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
