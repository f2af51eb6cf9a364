#!/usr/bin/env python3
"""Make the figures shipped with the package: each embedded text parent's profile and block ablation.

Usage (from the repository root; minutes per parent on a laptop core):

    OMP_NUM_THREADS=1 python tools/make_shipped.py smollm2-135m [gemma3-270m ...] [--overwrite]

Measures exactly what notebooks 1 to 4 would measure in full mode (the profile on 8,192 tokens of shuffled
training text, as notebooks 3 and 4 plan from; the ablation on 512 held-out tokens, as notebook 1), stores the
profile's sums as float32 (its per-shard copies too when they fit the size budget) and writes them with a record
of how they were made to ``subclone_viz/shipped_data/`` through :func:`subclone_viz.shipped.save_shipped`, which
reads them back through the validating loaders before it returns.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import subclone_viz as sv
from subclone_viz import shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parents", nargs="+", help="embedded text parents, e.g. smollm2-135m")
    parser.add_argument("--overwrite", action="store_true", help="replace figures shipped before")
    args = parser.parse_args()
    for name in args.parents:
        start = time.perf_counter()
        parent = sv.load_parent(name)
        train = sv.text_batches("builtin", parent.tokenizer, shuffle=True, **shipped.PROFILE_BATCHES)
        prof = sv.profile(parent, train, max_tokens=shipped.PROFILE_TOKENS)
        heldout = sv.text_batches("builtin", parent.tokenizer, split="heldout", **shipped.ABLATION_BATCHES)
        ablation = sv.block_ablation(parent, heldout)
        made = {
            "command": " ".join(["python", "tools/make_shipped.py", *sys.argv[1:]]),
            "profile": f"{prof.tokens:,} tokens of {train.description}",
            "ablation": f"{heldout.description}",
            "seconds": round(time.perf_counter() - start),
        }
        paths = shipped.save_shipped(parent, prof, ablation, made, overwrite=args.overwrite)
        for path in paths:
            print(f"{path} ({Path(path).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
