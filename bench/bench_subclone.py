"""Subcloning cost on the embedded SmolLM2 parent: time and peak memory against copying its state dict once.

    .venv/bin/python bench/bench_subclone.py [--repeats 3]

Runs in one process, side by side: ``{k: v.clone()}`` over the parent's state dict, and ``subclone`` for two
destinations (20 x 576 and 30 x 384 / FFN 1024 / 6 heads / 2 KV heads, the paper's choices). Peak memory
is the growth of the resident set during each case, sampled every 2 ms.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from _memory import peak_growth_mib

import subclone_viz as sv

SPECS = {
    "20x576": sv.DestinationSpec(layers=20, hidden=576),
    "30x384": sv.DestinationSpec(layers=30, hidden=384, ffn=1024, heads=6, kv_heads=2),
}


def setup():
    parent = sv.load_parent("smollm2-135m", device="cpu")
    batches = sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8, split="train", max_batches=1)
    prof = sv.profile(parent, batches, progress=False)
    return parent, {name: sv.plan(parent, prof, spec) for name, spec in SPECS.items()}


def case(parent, plans, name):
    if name == "copy state dict":
        return {k: v.clone() for k, v in parent.model.state_dict().items()}
    return sv.subclone(parent, plans[name])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    parent, plans = setup()
    names = ["copy state dict", *SPECS]
    seconds = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            kept = case(parent, plans, name)
            seconds[name].append(time.perf_counter() - start)
            del kept
    memory = {}
    for name in names:
        gc.collect()
        memory[name], kept = peak_growth_mib(lambda: case(parent, plans, name))
        del kept
    copy = statistics.median(seconds["copy state dict"])
    print(f"SmolLM2-135M on CPU, median of {args.repeats}")
    print(f"{'case':<18}{'seconds':>9}{'x copy':>8}{'peak MiB growth':>17}")
    for name in names:
        t = statistics.median(seconds[name])
        print(f"{name:<18}{t:>9.3f}{t / copy:>8.2f}{memory[name]:>17.0f}")


if __name__ == "__main__":
    main()
