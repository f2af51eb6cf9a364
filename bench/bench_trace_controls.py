"""The token picker of notebook 1 on SmolLM2, before and after its traces were cached, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_trace_controls.py [--repeats 5]

Times, in the kernel, what each control of the token trace costs (the browser's drawing is not included):

* **token menu, as before**: one ``token_trace`` of the whole sentence per pick (what the menu ran until the
  traces were cached: a forward pass of the parent);
* **token menu, now**: a pick of another token of a sentence already traced (its trace comes from the cache);
* **layer slider**: a new layer on the same token (only the marker moves);
* **a new sentence**: typing one (a forward pass for every position at once, then the menu and the figure).

Median and spread (min-max) over ``--repeats`` picks each, with the machine's load, go to
``bench/results/widgets/trace_controls.json``. Goals (issue 24): 200 ms for a redraw, 1 s for a new sentence.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import subclone_viz as sv
from subclone_viz import widgets
from _results import save_results

SENTENCES = [
    "The residual stream carries each token's state from block to block.",
    "Weight subcloning starts a small transformer from the weights of a larger pretrained one.",
    "A pre-norm block adds its update to the stream instead of replacing it.",
    "Removing a block from the middle barely changes what the blocks after it see.",
    "Consistent neuron importance lets one ranking choose the channels of every layer.",
    "The learner types a sentence and watches one token drift through thirty blocks.",
]


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1e3, 1),
        "min_ms": round(min(seconds) * 1e3, 1),
        "max_ms": round(max(seconds) * 1e3, 1),
        "n": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    parent = sv.load_parent("smollm2-135m")
    heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=1, split="heldout", max_batches=1)
    explorer = widgets.ResidualExplorer(parent, sv.profile(parent, heldout, progress=False), text=SENTENCES[0])
    count = len(explorer.token.options)
    picks = [(k * 3) % count for k in range(1, args.repeats + 1)]
    results = {
        "token menu, as before (a forward pass per pick)": [
            timed(lambda i=i: sv.token_trace(parent, explorer.text.value, token_index=i)) for i in picks
        ],
        "token menu, now (cached traces)": [timed(lambda i=i: setattr(explorer.token, "value", i)) for i in picks],
        "layer slider": [
            timed(lambda k=k: setattr(explorer.layer, "value", k % 31)) for k in range(3, 3 + args.repeats)
        ],
        "a new sentence": [
            timed(lambda s=s: setattr(explorer.text, "value", s)) for s in SENTENCES[1 : 1 + args.repeats]
        ],
    }
    assert explorer.last_error is None, explorer.last_error
    figures = {name: summary(seconds) for name, seconds in results.items()}
    headline = [
        f"{name}: median {f['median_ms']:.0f} ms ({f['min_ms']:.0f}-{f['max_ms']:.0f})" for name, f in figures.items()
    ]
    headline.append(
        f"kernel-side times on SmolLM2 at a load average of {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; the browser's drawing is not included"
    )
    print(save_results("widgets/trace_controls.json", {"controls": figures}, headline))
    print("\n".join(headline))


if __name__ == "__main__":
    main()
