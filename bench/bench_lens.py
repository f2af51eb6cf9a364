"""What the logit lens and layer similarity cost against plain forwards of the models they read, on SmolLM2.

Side by side in one process, on the same held-out batches of 4 x 128 tokens, interleaved per repeat (the
median of each): a whole forward of the parent, a whole forward of the destination (the default 20 x 384
subclone), the logit lens of each (every residual layer, and the last ``--lens-layers`` layers only), and
layer similarity of the pair (against one forward of each model). The issue's target is at most 1.3x.

    .venv/bin/python bench/bench_lens.py [--device cuda --dtype bfloat16] [--batches 2] [--repeats 3]

Figures go to bench/results/lens/smollm2-135m-<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import subclone_viz as sv
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
    modes = {
        "forward_parent": lambda: forwards([parent.model], batches),
        "forward_destination": lambda: forwards([destination], batches),
        "lens_parent": lambda: [sv.logit_lens(parent, None, b) for b in batches],
        "lens_destination": lambda: [sv.logit_lens(destination, None, b) for b in batches],
        "lens_parent_last_layers": lambda: [sv.logit_lens(parent, None, b, layers=last) for b in batches],
        "similarity": lambda: sv.layer_similarity(parent, destination, plan, batches),
    }
    modes["forward_parent"]()  # warm-up
    times = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, run in modes.items():
            sync(parent.input_device)
            start = time.perf_counter()
            run()
            sync(parent.input_device)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratios = {
        "lens_parent": median["lens_parent"] / median["forward_parent"],
        "lens_destination": median["lens_destination"] / median["forward_destination"],
        "lens_parent_last_layers": median["lens_parent_last_layers"] / median["forward_parent"],
        "similarity": median["similarity"] / (median["forward_parent"] + median["forward_destination"]),
    }
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    title = (
        f"SmolLM2-135M and its {plan.destination_dims.layers} x {plan.destination_dims.hidden} subclone on "
        f"{parent.input_device} ({parent.dtype}), {len(batches)} batches of 4 x 128 ({tokens} tokens), median of "
        f"{args.repeats}"
    )
    print(title)
    for name, seconds in median.items():
        print(f"{name:<26}{seconds:>9.3f} s" + (f"{ratios[name]:>8.2f}x" if name in ratios else ""))
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
            "ratio_over_forwards": ratios,
        },
        headline=[
            f"{title}: layer similarity takes {ratios['similarity']:.2f}x one forward of parent and destination "
            f"(target <= 1.3x).",
            f"The logit lens at all {parent.dims.layers + 1} layers takes {ratios['lens_parent']:.2f}x a parent forward "
            f"and {ratios['lens_destination']:.2f}x a destination forward: it applies the 49,152-token head once per "
            f"layer; at the last {args.lens_layers} layers only, {ratios['lens_parent_last_layers']:.2f}x.",
        ],
    )


if __name__ == "__main__":
    main()
