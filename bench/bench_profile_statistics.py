"""The profile's statistics alone: what its collectors cost, apart from the forward they run beside.

``bench_profile.py`` times the whole profile against a forward without the head; on a shared CPU its single
batches move by several percent, more than the statistics cost. This benchmark takes the statistics out of the
forward: one forward of one batch records every call the profile's hooks receive (each block's input and output,
each FFN activation and per-head attention output, each norm's and residual reader's input and output), then
the profile's own collectors (every registered estimator's sums included) are fed those calls again, alone, and
timed. It also times the per-call setup (finding the norms and the layers that read the residual stream,
building the collectors) and the forward without the head on the same batch. Run it after a change to the
collectors to see its cost without the forward's noise.

The replay reads activations that were written a while before, not the moment before as in a real profile, so
it measures the statistics' own work, not the cache misses they cause the model's operations around them.

    .venv/bin/python bench/bench_profile_statistics.py [--parent gemma3-270m] [--batch-size 8 --seq-len 256]
        [--repeats 15]

Figures go to bench/results/profile/<parent>-statistics-cpu.json.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import torch

import subclone_viz as sv
from subclone_viz.capture import capture_blocks, capture_modules, forward_before
from _results import save_results

profile_module = importlib.import_module("subclone_viz.profile")  # the module, not the function sv.profile


def record_calls(parent, batch):
    """Every call the profile's hooks receive in one forward of ``batch``: (collector method, its arguments)."""
    collectors = profile_module._Collectors(parent)
    head, head_watchers = profile_module._head_to_skip(parent, collectors)
    calls = []
    with (
        torch.no_grad(),
        capture_blocks(
            parent.family,
            parent.model,
            on_block=lambda step: calls.append(("on_block", (step,))),
            on_ffn=lambda i, a: calls.append(("on_ffn", (i, a))),
            on_attention=lambda i, a: calls.append(("on_attention", (i, a))),
        ),
        capture_modules(
            collectors.modules, lambda name, x, y: calls.append(("on_module", (name, x, y))), inputs_only=head_watchers
        ),
    ):
        forward_before(lambda: parent.family.logits(parent.model, batch), head)
    return calls


def replay(collectors, calls):
    """Feed ``calls`` to ``collectors`` and take the batch's sums, as the profile does after each forward."""
    collectors.acc.mask = None
    for method, arguments in calls:
        getattr(collectors, method)(*arguments)
    return collectors.take_sums()


def timed(fn, repeats):
    """CPU seconds of ``fn`` over ``repeats`` calls: (minimum, median)."""
    seconds = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        seconds.append(time.process_time() - start)
    return min(seconds), statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", default="smollm2-135m", choices=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    parent = sv.load_parent(args.parent, device="cpu")
    batch = next(
        iter(sv.parent_batches(parent, "heldout", seq_len=args.seq_len, batch_size=args.batch_size, max_batches=1))
    )
    head = parent.family.output_module(parent.model)
    calls = record_calls(parent, batch)
    collectors = profile_module._Collectors(parent)
    replay(collectors, calls)  # warm-up: the scratch buffers are allocated once per pass

    def forward_without_head():
        with torch.no_grad():
            forward_before(lambda: parent.family.logits(parent.model, batch), head)

    def setup():
        profile_module._head_to_skip(parent, profile_module._Collectors(parent))

    forward = timed(forward_without_head, max(3, args.repeats // 3))
    collect = timed(lambda: replay(collectors, calls), args.repeats)
    build = timed(setup, args.repeats)
    tokens = args.batch_size * args.seq_len
    share = collect[0] / forward[0]
    title = f"{args.parent} on cpu, one batch of {args.batch_size} x {args.seq_len} = {tokens} tokens, {len(calls)} hook calls"
    print(title)
    print(f"forward without the head: {forward[0]:.3f} s (min), {forward[1]:.3f} s (median)")
    print(f"the statistics alone:     {collect[0] * 1e3:.1f} ms (min), {collect[1] * 1e3:.1f} ms (median): {share:.1%}")
    print(f"per-call setup:           {build[0] * 1e3:.1f} ms (min), {build[1] * 1e3:.1f} ms (median)")
    save_results(
        f"profile/{args.parent}-statistics-cpu.json",
        {
            "parent": args.parent,
            "tokens": tokens,
            "hook_calls": len(calls),
            "repeats": args.repeats,
            "forward_without_head_seconds": {"min": forward[0], "median": forward[1]},
            "statistics_seconds": {"min": collect[0], "median": collect[1]},
            "setup_seconds": {"min": build[0], "median": build[1]},
            "statistics_over_forward_without_head": share,
        },
        headline=[
            f"{title}: the profile's statistics alone (replayed on recorded activations) take "
            f"{collect[0] * 1e3:.0f} ms, {share:.1%} of the forward without the head ({forward[0]:.2f} s, minimum CPU "
            f"seconds of each); the per-call setup {build[0] * 1e3:.1f} ms."
        ],
    )


if __name__ == "__main__":
    main()
