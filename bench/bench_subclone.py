"""Subcloning cost on the embedded SmolLM2 parent: time and peak memory against copying its state dict once,
and calibrated scaling against the forward passes it needs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_subclone.py [--repeats 3] [--seq-len 128] [--batch-size 2]

Runs in one process, side by side: ``{k: v.clone()}`` over the parent's state dict; ``subclone`` for two
destinations (20 x 576 and 30 x 384 / FFN 1024 / 6 heads / 2 KV heads, the paper's choices) with sqrt
scaling; the 30 x 384 destination with calibrated scaling on 4 calibration batches; and, as the unit that
calibration is measured in, one forward pass of the parent and one of the (sqrt-scaled) destination over
the same 4 batches. Times are the process's CPU time (one thread), which other jobs on a shared machine do
not inflate. Peak memory is the growth of the resident set during each case, sampled every 2 ms.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

import subclone_viz as sv
from _memory import peak_growth_mib

SPECS = {
    "20x576": sv.DestinationSpec(layers=20, hidden=576),
    "30x384": sv.DestinationSpec(layers=30, hidden=384, ffn=1024, heads=6, kv_heads=2),
}
CALIBRATION_BATCHES = 4


def setup(seq_len: int, batch_size: int):
    parent = sv.load_parent("smollm2-135m", device="cpu")
    calibration = list(
        sv.text_batches(
            "builtin",
            parent.tokenizer,
            seq_len=seq_len,
            batch_size=batch_size,
            split="train",
            max_batches=CALIBRATION_BATCHES,
        )
    )
    prof = sv.profile(parent, calibration, progress=False)
    plans = {name: sv.plan(parent, prof, spec) for name, spec in SPECS.items()}
    plans["30x384 calibrated"] = sv.plan(parent, prof, SPECS["30x384"], scaling="calibrated")
    return parent, plans, calibration


@torch.no_grad()
def case(parent, plans, calibration, destination, name):
    if name == "copy state dict":
        return {k: v.clone() for k, v in parent.model.state_dict().items()}
    if name == "forward parent + 30x384":
        for model in (parent.model, destination):
            for batch in calibration:
                parent.family.logits(model, batch)
        return None
    return sv.subclone(parent, plans[name], calibration_batches=calibration)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    parent, plans, calibration = setup(args.seq_len, args.batch_size)
    destination = sv.subclone(parent, plans["30x384"])
    names = ["copy state dict", *plans, "forward parent + 30x384"]
    seconds = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            start = time.process_time()
            kept = case(parent, plans, calibration, destination, name)
            seconds[name].append(time.process_time() - start)
            del kept
    memory = {}
    for name in names:
        gc.collect()
        memory[name], kept = peak_growth_mib(lambda: case(parent, plans, calibration, destination, name))
        del kept
    copy = statistics.median(seconds["copy state dict"])
    forward = statistics.median(seconds["forward parent + 30x384"])
    tokens = sum(int(b["attention_mask"].sum()) for b in calibration)
    print(
        f"SmolLM2-135M on CPU ({torch.get_num_threads()} thread(s)), median of {args.repeats}; "
        f"calibration: {CALIBRATION_BATCHES} batches, {tokens} tokens"
    )
    print(f"{'case':<26}{'CPU s':>9}{'x copy':>8}{'x forward':>11}{'peak MiB growth':>17}")
    for name in names:
        t = statistics.median(seconds[name])
        print(f"{name:<26}{t:>9.3f}{t / copy:>8.2f}{t / forward:>11.2f}{memory[name]:>17.0f}")


if __name__ == "__main__":
    main()
