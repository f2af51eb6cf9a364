"""Profiling overhead on the embedded language parents: time and peak memory against a plain forward.

Times, side by side in one process on the same 8 x 256-token batches: a plain no-grad forward, the same
forward stopped before the output layer (the LM head, which the profile no longer runs), the streaming
profile, and a forward that captures every hidden state (``output_hidden_states=True``) and keeps them, as
an activation cache does. The profile's target is at most 1.05x the forward without the head. Each mode is
timed in wall-clock seconds and in the process's CPU seconds: on a shared, loaded machine the wall clock mostly
measures the scheduler (a single-threaded run got a third of a core), so on the CPU the ratios of CPU seconds
are the headline. The modes take turns batch by batch, in an order rotated from one batch to the next, and each
ratio is taken between the same batch's times (paired): this machine's speed drifts by several percent over a
minute, and two modes timed seconds apart see less of that drift than two whole passes. The headline is the
median of the paired ratios over every batch of every repeat, with their range; the profile pays its per-call
setup (hooks, collectors, the record) once per batch here, not once per pass. ``--tag main`` with
``PYTHONPATH`` at another checkout times that version's library with this script (a before/after pair). Peak
memory is the growth during each mode over the loaded model (CPU: the resident set sampled every 2 ms; CUDA:
``torch.cuda.max_memory_allocated``), each mode in a fresh subprocess so that memory one mode freed to the
allocator cannot hide another's growth.

    .venv/bin/python bench/bench_profile.py [--parent gemma3-270m] [--device cuda --dtype bfloat16] [--batches 4]
        [--repeats 5] [--batch-size 8 --seq-len 256] [--no-memory]

Figures go to bench/results/profile/<parent>-<device>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

import subclone_viz as sv
from subclone_viz.capture import forward_before
from _memory import peak_growth_mib
from _results import save_results

MODES = ("forward", "forward_without_head", "profile", "hidden_states")


def load(args):
    parent = sv.load_parent(args.parent, device=args.device, dtype=args.dtype)
    batches = sv.text_batches(
        "builtin",
        parent.tokenizer,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        split="heldout",
        max_batches=args.batches,
    )
    return parent, [{k: v.to(parent.input_device) for k, v in b.items()} for b in batches]


def sync(parent):
    if parent.input_device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run_mode(parent, batches, mode):
    if mode == "forward":
        for b in batches:
            parent.model(**b, use_cache=False)
    elif mode == "forward_without_head":
        head = parent.family.output_module(parent.model)
        for b in batches:
            forward_before(lambda: parent.model(**b, use_cache=False), head)
    elif mode == "hidden_states":
        kept = [parent.model(**b, use_cache=False, output_hidden_states=True).hidden_states for b in batches]
        return kept
    elif mode == "profile":
        sv.profile(parent, batches, progress=False)


def timings(args):
    """Per mode, the wall-clock and CPU seconds of each batch of each repeat (``repeats * batches`` entries), the
    modes taking turns batch by batch in an order rotated from one batch to the next."""
    parent, batches = load(args)
    for mode in MODES:  # warm-up: first calls allocate and fill caches
        run_mode(parent, batches[:1], mode)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    for repeat in range(args.repeats):
        for index, batch in enumerate(batches):
            shift = (repeat * len(batches) + index) % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                sync(parent)
                start, start_cpu = time.perf_counter(), time.process_time()
                run_mode(parent, [batch], mode)
                sync(parent)
                times[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
    return times, cpu, parent, batches


def per_repeat(seconds: list[float], batches: int) -> list[float]:
    """Per-batch seconds summed over each repeat's batches."""
    return [sum(seconds[start : start + batches]) for start in range(0, len(seconds), batches)]


def paired(seconds: dict[str, list[float]], mode: str, base: str) -> dict[str, float]:
    """The ratio ``mode`` / ``base`` between the same batch's times: its median, range, and a 95% bootstrap
    interval of the median (how far the median itself moves with the machine's noise)."""
    ratios = np.array([a / b for a, b in zip(seconds[mode], seconds[base])])
    resampled = np.random.default_rng(0).choice(ratios, size=(10_000, len(ratios)))
    low, high = np.quantile(np.median(resampled, axis=1), [0.025, 0.975])
    return {
        "median": float(np.median(ratios)),
        "low": float(ratios.min()),
        "high": float(ratios.max()),
        "median_interval": [float(low), float(high)],
    }


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
    parser.add_argument("--parent", default="smollm2-135m", choices=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="time only (each memory mode reloads the parent)")
    parser.add_argument("--tag", default="", help="appended to the results file name (e.g. main: a baseline)")
    parser.add_argument("--memory-mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_mode:
        parent, batches = load(args)
        run_mode(parent, batches[:1], "forward")  # warm-up: first-call allocations are not the mode's
        print(json.dumps(peak_memory(parent, batches, args.memory_mode)))
        return
    times, cpu_times, parent, batches = timings(args)
    median = {m: statistics.median(per_repeat(t, len(batches))) for m, t in times.items()}
    cpu = {m: statistics.median(per_repeat(t, len(batches))) for m, t in cpu_times.items()}
    tokens = args.batches * args.batch_size * args.seq_len
    memory = {} if args.no_memory else {mode: measure_memory(args, mode) for mode in MODES}
    title = (
        f"{args.parent} on {parent.input_device} ({parent.dtype}), {args.batches} batches of {args.batch_size} x {args.seq_len} = {tokens} "
        f"tokens, median of {args.repeats} repeats"
    )
    print(title)
    print(f"{'mode':<22}{'seconds':>10}{'x forward':>11}{'x no head':>11}{'peak MiB over model':>22}")
    for mode in MODES:
        print(
            f"{mode:<22}{median[mode]:>10.3f}{median[mode] / median['forward']:>11.3f}"
            f"{median[mode] / median['forward_without_head']:>11.3f}{memory.get(mode, float('nan')):>22.0f}"
        )
    print("CPU seconds: " + ", ".join(f"{mode} {cpu[mode]:.3f}" for mode in MODES))
    over_headless = paired(times, "profile", "forward_without_head")["median"]
    over_forward = paired(times, "profile", "forward")["median"]
    head_share = 1 - paired(times, "forward_without_head", "forward")["median"]
    cpu_over = paired(cpu_times, "profile", "forward_without_head")
    cpu_over_forward = paired(cpu_times, "profile", "forward")
    cpu_head_share = 1 - paired(cpu_times, "forward_without_head", "forward")["median"]
    print(
        f"profile / forward without the head, CPU seconds paired batch by batch: median {cpu_over['median']:.3f}, "
        f"range {cpu_over['low']:.3f}-{cpu_over['high']:.3f}, 95% interval of the median "
        f"{cpu_over['median_interval'][0]:.3f}-{cpu_over['median_interval'][1]:.3f}"
    )
    library = "" if not args.tag else f" [library: {args.tag}]"
    save_results(
        f"profile/{args.parent}-{parent.input_device.type}{'-' + args.tag if args.tag else ''}.json",
        {
            "parent": args.parent,
            "device": str(parent.input_device),
            "dtype": str(parent.dtype),
            "tokens": tokens,
            "repeats": args.repeats,
            "seconds": median,
            "cpu_seconds": cpu,
            "seconds_per_batch": times,
            "cpu_seconds_per_batch": cpu_times,
            "library": sv.__file__,
            "peak_mib_over_model": memory,
            "profile_over_forward_without_head": over_headless,
            "profile_over_forward": over_forward,
            "head_share_of_forward": head_share,
            "cpu_profile_over_forward_without_head": cpu_over["median"],
            "cpu_profile_over_forward_without_head_range": [cpu_over["low"], cpu_over["high"]],
            "cpu_profile_over_forward_without_head_median_interval": cpu_over["median_interval"],
            "cpu_profile_over_forward": cpu_over_forward["median"],
            "cpu_head_share_of_forward": cpu_head_share,
        },
        headline=[
            f"{title}{library}: in CPU seconds the profile takes {cpu_over['median']:.3f}x a forward without the "
            f"head (median of {len(cpu_times['profile'])} paired ratios, one per batch; 95% interval of the median "
            f"{cpu_over['median_interval'][0]:.3f}-{cpu_over['median_interval'][1]:.3f}, single batches "
            f"{cpu_over['low']:.3f}-{cpu_over['high']:.3f}; target <= 1.05x) and {cpu_over_forward['median']:.3f}x the whole forward; the head is "
            f"{cpu_head_share:.0%} of the forward's CPU time.",
            f"In wall-clock seconds (noisy on a loaded machine): {over_headless:.3f}x a forward without the head and "
            f"{over_forward:.3f}x the whole forward.",
        ],
    )


def measure_memory(args, mode):
    command = [
        sys.executable,
        __file__,
        "--parent",
        args.parent,
        "--memory-mode",
        mode,
        "--device",
        args.device,
        "--batches",
        str(args.batches),
        "--batch-size",
        str(args.batch_size),
        "--seq-len",
        str(args.seq_len),
    ]
    command += ["--dtype", args.dtype] if args.dtype else []
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
