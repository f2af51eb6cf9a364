"""Held-out loss before any training, for each depth, width and scaling choice, on the embedded SmolLM2.

One choice varies at a time from the paper's recipe (depth="middle", width="importance", scaling="sqrt"),
for two destinations: 20 layers at full width (middle blocks dropped) and 30 layers at hidden 384, FFN 1024,
6 heads, 2 KV heads. Importance comes from 8,192 tokens of the training split; the loss is measured on
the held-out split. Prints a Markdown table.

    .venv/bin/python bench/bench_initial_loss.py [--eval-batches 4]
"""

from __future__ import annotations

import argparse

import torch

import subclone_viz as sv

SPECS = {
    "20 x 576": sv.DestinationSpec(layers=20, hidden=576),
    "30 x 384 (FFN 1024, 6/2 heads)": sv.DestinationSpec(layers=30, hidden=384, ffn=1024, heads=6, kv_heads=2),
}
VARIANTS = [
    dict(depth="middle", width="importance", scaling="sqrt"),
    dict(depth="first", width="importance", scaling="sqrt"),
    dict(depth="last", width="importance", scaling="sqrt"),
    dict(depth="metric", width="importance", scaling="sqrt"),
    dict(depth="middle", width="uniform", scaling="sqrt"),
    dict(depth="middle", width="first", scaling="sqrt"),
    dict(depth="middle", width="importance", scaling="none"),
    dict(depth="middle", width="importance", scaling="calibrated"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-batches", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    parent = sv.load_parent("smollm2-135m", device="cpu")
    train = sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8, split="train")
    heldout = sv.text_batches(
        "builtin", parent.tokenizer, seq_len=256, batch_size=8, split="heldout", max_batches=args.eval_batches
    )
    prof = sv.profile(parent, train, max_tokens=8192, progress=False)
    parent_loss = sv.evaluate(parent.model, parent.family, heldout).loss
    print(f"Parent: {parent.description}; held-out loss {parent_loss:.3f} nats on {heldout.description}\n")
    print("| destination | depth | width | scaling | held-out loss (nats) |")
    print("|---|---|---|---|---|")
    for label, spec in SPECS.items():
        for variant in VARIANTS:
            p = sv.plan(parent, prof, spec, **variant)
            child = sv.subclone(parent, p, calibration_batches=train)
            loss = sv.evaluate(child, parent.family, heldout).loss
            print(
                f"| {label} | {variant['depth']} | {variant['width']} | {variant['scaling']} | {loss:.2f} |", flush=True
            )
        random = sv.random_init(parent, p, device="cpu")
        print(f"| {label} | random init | | | {sv.evaluate(random, parent.family, heldout).loss:.2f} |", flush=True)


if __name__ == "__main__":
    main()
