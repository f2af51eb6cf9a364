"""Profile throughput in 1 and in 2 processes on the same tokens: tokens/s ratio and peak memory per process.

Runs itself twice as a worker, side by side in one invocation: once as a plain single process, once under
``accelerate launch --multi_gpu --num_processes 2`` (on CPUs with ``ACCELERATE_USE_CPU=1`` and gloo; on a
machine with 2+ GPUs one process per GPU). Each worker loads the parent, warms up with one forward, then
times ``sv.profile(parent, batches, max_tokens=T)`` between two barriers (the slowest process's time) and
records every process's peak memory (CPU: the resident set's high-water mark, ``ru_maxrss``, the loaded model
included; CUDA: ``torch.cuda.max_memory_allocated``). The two profiles must agree to 1e-5 (the largest relative
difference of their sums is printed).

    .venv/bin/python bench/bench_distributed.py [--parent smollm2-135m] [--tokens 4096] [--seq-len 128]
        [--batch-size 4] [--threads 1]

``--threads`` is the torch thread count of every process: with 1, two processes use two cores where one
process uses one, which is what scaling out buys.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SUMS = ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums")


def worker(args: argparse.Namespace) -> None:
    import torch

    import subclone_viz as sv
    from subclone_viz import distributed

    torch.set_num_threads(args.threads)
    parent = sv.load_parent(args.parent)
    batches = list(
        sv.text_batches(
            "builtin",
            parent.tokenizer,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            split="heldout",
            max_batches=-(-args.tokens // (args.seq_len * args.batch_size)),
        )
    )
    cuda = parent.input_device.type == "cuda"
    with torch.no_grad():
        parent.family.logits(parent.model, {k: v.to(parent.input_device) for k, v in batches[0].items()})
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    distributed.barrier()
    start = time.perf_counter()
    result = sv.profile(parent, batches, max_tokens=args.tokens, progress=False)
    if cuda:
        torch.cuda.synchronize()
    distributed.barrier()
    seconds = time.perf_counter() - start
    peak_mib = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    peaks = distributed.gather_objects(round(peak_mib, 1))
    record = {
        "processes": distributed.num_processes(),
        "device": str(parent.input_device),
        "tokens": result.tokens,
        "seconds": seconds,
        "tokens_per_second": result.tokens / seconds,
        "peak_mib_per_process": peaks,
    }
    distributed.on_main(Path(args.out).write_text, json.dumps(record))
    result.save(Path(args.out).with_suffix(".npz"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace, processes: int, out: Path) -> dict:
    worker_args = [
        __file__,
        "--worker",
        "--out",
        str(out),
        "--parent",
        args.parent,
        "--tokens",
        str(args.tokens),
        "--seq-len",
        str(args.seq_len),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if processes == 1:
        command = [sys.executable, *worker_args]
    else:
        import torch

        if torch.cuda.device_count() < processes:
            env["ACCELERATE_USE_CPU"] = "1"
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            *worker_args,
        ]
    subprocess.run(command, env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parent", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from subclone_viz.profile import Profile

    with tempfile.TemporaryDirectory() as directory:
        one = run(args, 1, Path(directory) / "one.json")
        two = run(args, 2, Path(directory) / "two.json")
        a, b = Profile.load(Path(directory) / "one.npz"), Profile.load(Path(directory) / "two.npz")
    difference = max(
        float(np.max(np.abs(getattr(a, n) - getattr(b, n)) / np.maximum(np.abs(getattr(a, n)), 1e-12))) for n in SUMS
    )
    report = {
        "parent": args.parent,
        "threads_per_process": args.threads,
        "one_process": one,
        "two_processes": two,
        "tokens_per_second_ratio": two["tokens_per_second"] / one["tokens_per_second"],
        "same_tokens": a.tokens == b.tokens,
        "max_relative_difference": difference,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
