"""Block ablation on the embedded SmolLM2 parent: suffix reuse against the whole forward for every variant.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ablation.py [--seq-len 64] [--batch-size 2] [--batches 1]

Runs in one process, side by side on the same held-out tokens: ``block_ablation(..., reuse_prefix=False)``
(the plain way: 61 whole forwards for the 30 blocks) and ``block_ablation(...)`` (each variant runs only the
blocks from the first one it changes, from the hidden state kept from the batch's baseline pass). Prints both
times, their ratio and the largest difference between the two results (0 when they are identical). The
ratio is taken on the process's CPU time (one thread), which other jobs on a shared machine do not inflate;
wall-clock seconds are printed beside it.
"""

from __future__ import annotations

import argparse
import time

import torch

import subclone_viz as sv


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=1)
    args = parser.parse_args()
    parent = sv.load_parent("smollm2-135m", device="cpu")
    batches = list(
        sv.text_batches(
            "builtin",
            parent.tokenizer,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            split="heldout",
            max_batches=args.batches,
        )
    )
    results, seconds, cpu = {}, {}, {}
    for name, reuse in (("whole forward per variant", False), ("suffix reuse", True)):
        start, start_cpu = time.perf_counter(), time.process_time()
        results[name] = sv.block_ablation(parent, batches, progress=False, reuse_prefix=reuse)
        seconds[name], cpu[name] = time.perf_counter() - start, time.process_time() - start_cpu
    plain, reused = results.values()
    difference = max(
        abs(a - b)
        for a, b in zip(
            [plain.baseline, *plain.removed, *plain.duplicated], [reused.baseline, *reused.removed, *reused.duplicated]
        )
    )
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    print(f"SmolLM2-135M block ablation on CPU ({torch.get_num_threads()} thread(s)), {tokens} held-out tokens")
    for name, t in seconds.items():
        print(f"{name:<28}{cpu[name]:>9.2f} s CPU{t:>9.2f} s wall")
    print(
        f"ratio (suffix reuse / whole forward), CPU time: {cpu['suffix reuse'] / cpu['whole forward per variant']:.2f}; "
        f"wall: {seconds['suffix reuse'] / seconds['whole forward per variant']:.2f}"
    )
    print(f"largest difference between the two results: {difference:.3g} nats")


if __name__ == "__main__":
    main()
