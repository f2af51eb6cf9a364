"""Profiling overhead on the embedded SmolLM2 parent: time and peak memory against a plain forward.

Times, side by side in one process on the same 8 x 256-token batches: a plain no-grad forward, the streaming
profile, and a forward that captures every hidden state (``output_hidden_states=True``) and keeps them, as
an activation cache does. Peak memory is the growth during each mode over the loaded model (CPU: the resident
set sampled every 2 ms; CUDA: ``torch.cuda.max_memory_allocated``), each mode in a fresh subprocess so that
memory one mode freed to the allocator cannot hide another's growth.

    .venv/bin/python bench/bench_profile.py [--device cuda --dtype bfloat16] [--batches 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import torch

import subclone_viz as sv
from _memory import peak_growth_mib


def load(args):
    parent = sv.load_parent("smollm2-135m", device=args.device, dtype=args.dtype)
    batches = sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8, split="heldout",
                              max_batches=args.batches)
    return parent, [{k: v.to(parent.input_device) for k, v in b.items()} for b in batches]


def sync(parent):
    if parent.input_device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run_mode(parent, batches, mode):
    if mode == "forward":
        for b in batches:
            parent.model(**b, use_cache=False)
    elif mode == "hidden_states":
        kept = [parent.model(**b, use_cache=False, output_hidden_states=True).hidden_states for b in batches]
        return kept
    elif mode == "profile":
        sv.profile(parent, batches, progress=False)


def timings(args):
    parent, batches = load(args)
    run_mode(parent, batches[:1], "forward")  # warm-up
    times = {m: [] for m in ("forward", "profile", "hidden_states")}
    for _ in range(args.repeats):
        for mode in times:
            sync(parent)
            start = time.perf_counter()
            run_mode(parent, batches, mode)
            sync(parent)
            times[mode].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}, parent, batches


def peak_memory(parent, batches, mode):
    """Peak MiB above the loaded model while running one mode."""
    gc.collect()
    if parent.input_device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_mode(parent, batches, mode)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    growth, _ = peak_growth_mib(lambda: run_mode(parent, batches, mode))
    return growth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_mode:
        parent, batches = load(args)
        run_mode(parent, batches[:1], "forward")  # warm-up: first-call allocations are not the mode's
        print(json.dumps(peak_memory(parent, batches, args.memory_mode)))
        return
    median, parent, batches = timings(args)
    tokens = args.batches * 8 * 256
    memory = {}
    for mode in ("forward", "profile", "hidden_states"):
        command = [sys.executable, __file__, "--memory-mode", mode, "--device", args.device, "--batches", str(args.batches)]
        command += ["--dtype", args.dtype] if args.dtype else []
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        memory[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"SmolLM2-135M on {parent.input_device} ({parent.dtype}), {args.batches} batches of 8 x 256 = {tokens} tokens, "
          f"median of {args.repeats}")
    print(f"{'mode':<16}{'seconds':>10}{'x forward':>11}{'peak MiB over model':>22}")
    for mode in ("forward", "profile", "hidden_states"):
        print(f"{mode:<16}{median[mode]:>10.3f}{median[mode] / median['forward']:>11.3f}{memory[mode]:>22.0f}")


if __name__ == "__main__":
    main()
