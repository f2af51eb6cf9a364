"""What the logit lens and layer similarity cost against plain forwards of the models they read, on SmolLM2.

Side by side in one process, on the same held-out batches of 4 x 128 tokens, interleaved per repeat (the
median of each): a whole forward of the parent, a whole forward of the destination (the default 20 x 384
subclone), the logit lens of each (every residual layer, and the last ``--lens-layers`` layers only), and
layer similarity of the pair (against one forward of each model), and the lens of the parent at every layer but
one position per sequence (``positions=[-1]``, what a "predictions through depth" view reads). The issue's
target is at most 1.3x. Wall-clock and CPU seconds are both kept; on a loaded CPU the CPU seconds are the
headline. The full lens cannot meet 1.3x: its bound, (1 - h) + (L + 1) h forwards for the head's share h of a
forward, is printed from the measured h.

    .venv/bin/python bench/bench_lens.py [--device cuda --dtype bfloat16] [--batches 2] [--repeats 3]

Figures go to bench/results/lens/smollm2-135m-<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import subclone_viz as sv
from subclone_viz.capture import forward_before
from _results import save_results


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def forwards(models, batches):
    for model in models:
        for b in batches:
            model(**b, use_cache=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lens-layers", type=int, default=4, help="the cheaper lens reads this many last layers")
    args = parser.parse_args()
    parent = sv.load_parent("smollm2-135m", device=args.device, dtype=args.dtype)
    loaded = sv.text_batches(
        "builtin", parent.tokenizer, seq_len=128, batch_size=4, split="heldout", max_batches=args.batches
    )
    batches = [{k: v.to(parent.input_device) for k, v in b.items()} for b in loaded]
    prof = sv.profile(parent, batches, progress=False)
    plan = sv.plan(parent, prof, sv.default_destination(parent))
    destination = sv.subclone(parent, plan)
    last = list(range(parent.dims.layers + 1 - args.lens_layers, parent.dims.layers + 1))
    head = parent.family.output_module(parent.model)
    modes = {
        "forward_parent": lambda: forwards([parent.model], batches),
        "forward_destination": lambda: forwards([destination], batches),
        "lens_parent": lambda: [sv.logit_lens(parent, None, b) for b in batches],
        "lens_destination": lambda: [sv.logit_lens(destination, None, b) for b in batches],
        "lens_parent_last_layers": lambda: [sv.logit_lens(parent, None, b, layers=last) for b in batches],
        "lens_parent_one_position": lambda: [sv.logit_lens(parent, None, b, positions=[-1]) for b in batches],
        "forward_parent_without_head": lambda: [
            forward_before(lambda: parent.model(**b, use_cache=False), head) for b in batches
        ],
        "similarity": lambda: sv.layer_similarity(parent, destination, plan, batches),
    }
    modes["forward_parent"]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in modes}
    cpu_times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, run in modes.items():
            sync(parent.input_device)
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                run()
            sync(parent.input_device)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)
    median = {name: statistics.median(t) for name, t in times.items()}
    cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
    ratios, cpu_ratios = _ratios(median), _ratios(cpu)
    head_share = 1 - cpu["forward_parent_without_head"] / cpu["forward_parent"]
    bound = (1 - head_share) + (parent.dims.layers + 1) * head_share
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    title = (
        f"SmolLM2-135M and its {plan.destination_dims.layers} x {plan.destination_dims.hidden} subclone on "
        f"{parent.input_device} ({parent.dtype}), {len(batches)} batches of 4 x 128 ({tokens} tokens), median of "
        f"{args.repeats}"
    )
    print(title)
    for name, seconds in median.items():
        shown = f"{ratios[name]:>8.2f}x{cpu_ratios[name]:>8.2f}x" if name in ratios else ""
        print(f"{name:<28}{seconds:>9.3f} s{cpu[name]:>9.3f} s cpu" + shown)
    save_results(
        f"lens/smollm2-135m-{parent.input_device.type}.json",
        {
            "device": str(parent.input_device),
            "dtype": str(parent.dtype),
            "tokens": tokens,
            "repeats": args.repeats,
            "destination": plan.summary(),
            "lens_last_layers": last,
            "seconds": median,
            "cpu_seconds": cpu,
            "ratio_over_forwards": ratios,
            "cpu_ratio_over_forwards": cpu_ratios,
            "cpu_head_share_of_forward": head_share,
            "full_lens_bound": bound,
        },
        headline=[
            f"{title}, in CPU seconds: layer similarity takes {cpu_ratios['similarity']:.2f}x one forward of parent "
            f"and destination (target <= 1.3x).",
            f"The logit lens at one position per sequence (positions=[-1]) and all {parent.dims.layers + 1} layers takes "
            f"{cpu_ratios['lens_parent_one_position']:.2f}x a parent forward; at the last {args.lens_layers} layers "
            f"and every position, {cpu_ratios['lens_parent_last_layers']:.2f}x.",
            f"At every layer and position it takes {cpu_ratios['lens_parent']:.2f}x (destination "
            f"{cpu_ratios['lens_destination']:.2f}x): the head is {head_share:.0%} of a forward, so reading it "
            f"{parent.dims.layers + 1} times costs at least (1 - h) + {parent.dims.layers + 1} h = {bound:.2f}x.",
        ],
    )


def _ratios(seconds: dict[str, float]) -> dict[str, float]:
    return {
        "lens_parent": seconds["lens_parent"] / seconds["forward_parent"],
        "lens_destination": seconds["lens_destination"] / seconds["forward_destination"],
        "lens_parent_last_layers": seconds["lens_parent_last_layers"] / seconds["forward_parent"],
        "lens_parent_one_position": seconds["lens_parent_one_position"] / seconds["forward_parent"],
        "similarity": seconds["similarity"] / (seconds["forward_parent"] + seconds["forward_destination"]),
    }


if __name__ == "__main__":
    main()
