"""The paper's claim, reproduced at CPU scale: how much faster does a SmolLM2 subclone train than random init?

Destination: 8 layers x 288 hidden (6 heads / 2 KV heads, FFN 768) from the embedded SmolLM2-135M parent,
trained on the embedded Python-documentation corpus (train split, 8 x 128 tokens a step, shuffled), scored on
held-out batches every ``--eval-every`` steps. Every initialization gets its best learning rate from a small
sweep (the paper tuned each one), so that no speedup comes from a poor learning rate for random init. Then
the paper's ablations run at the subclone's best learning rate: no weight scaling (Fig. 12), no neuron
reordering (Fig. 11); and the subclone's low against high learning rate (Fig. 14)
is read off the sweep. Writes ``--out`` (JSON with every history, and a PNG of the curves) and prints
Markdown tables.

    .venv/bin/python bench/bench_compare_smollm2.py --steps 100 --out bench/results/compare_smollm2
    # on a GPU: --device cuda --steps 1000 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import subclone_viz as sv
from subclone_viz.compare import compare, speedup
from subclone_viz.train import History

SWEEP = {"random": [1e-3, 3e-3], "subclone": [1e-4, 1e-3]}
ABLATIONS = ["no-scaling", "no-reorder"]


def run(parent, spec, train, heldout, init, lr, args, prof) -> History:
    start = time.perf_counter()
    result = compare(
        parent,
        spec,
        train,
        inits=[init],
        steps=args.steps,
        eval_batches=heldout,
        profile=prof,
        lrs={init: lr},
        calibration_batches=train,
        eval_every=args.eval_every,
        progress=False,
        seed=args.seed,
    )
    history = result.histories[init]
    print(
        f"  {init} lr={lr:g}: held-out {history.evals[0].loss:.3f} -> {history.evals[-1].loss:.3f} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/compare_smollm2")
    args = parser.parse_args()
    parent = sv.load_parent("smollm2-135m", device=args.device)
    spec = sv.DestinationSpec(layers=8, hidden=288)
    train = sv.text_batches(
        "builtin", parent.tokenizer, seq_len=128, batch_size=args.batch_size, shuffle=True, seed=args.seed
    )
    heldout = sv.text_batches(
        "builtin", parent.tokenizer, seq_len=128, batch_size=8, split="heldout", max_batches=args.eval_batches
    )
    prof = sv.profile(
        parent, sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8), max_tokens=8192, progress=False
    )
    print(
        f"{parent.description} -> {spec}, {args.steps} steps of {args.batch_size} x 128 tokens on {parent.input_device}"
    )

    runs: dict[str, dict[float, History]] = {}
    for init, lrs in SWEEP.items():
        runs[init] = {lr: run(parent, spec, train, heldout, init, lr, args, prof) for lr in lrs}
    best = {init: min(r, key=lambda lr: r[lr].evals[-1].loss) for init, r in runs.items()}
    for init in ABLATIONS:
        runs[init] = {best["subclone"]: run(parent, spec, train, heldout, init, best["subclone"], args, prof)}
        best[init] = best["subclone"]

    reference = runs["random"][best["random"]]
    print("\n| initialization | learning rate | held-out loss at step 0 | final held-out loss | speedup over random |")
    print("|---|---|---|---|---|")
    table = []
    for init, lr in best.items():
        history = runs[init][lr]
        gain = speedup(reference, history)
        if gain.speedup is None:
            shown = "n/a"
        elif gain.speedup_lower_bound:
            shown = f"more than {gain.speedup:.1f}x"
        elif not gain.reached:
            shown = f"not reached ({gain.speedup:.2f}x at most)"
        else:
            shown = f"{gain.speedup:.1f}x"
        table.append(
            dict(init=init, lr=lr, initial=history.evals[0].loss, final=history.evals[-1].loss, speedup=gain.to_dict())
        )
        print(f"| {init} | {lr:g} | {history.evals[0].loss:.3f} | {history.evals[-1].loss:.3f} | {shown} |")
    print("\nSubclone learning-rate sweep (the paper's Fig. 14: lower is better for subcloning):")
    for lr, history in runs["subclone"].items():
        print(f"  lr={lr:g}: final held-out loss {history.evals[-1].loss:.3f}")
    print("Random-init learning-rate sweep:")
    for lr, history in runs["random"].items():
        print(f"  lr={lr:g}: final held-out loss {history.evals[-1].loss:.3f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(
            {
                "config": {**vars(args), "spec": str(spec), "parent": parent.description},
                "table": table,
                "runs": {init: {str(lr): h.to_dict() for lr, h in r.items()} for init, r in runs.items()},
            },
            indent=1,
        )
    )
    from subclone_viz import plots

    figure = plots.loss_curves(
        {f"{init} (lr {lr:g})": runs[init][lr] for init, lr in best.items()}, backend="matplotlib"
    )
    figure.savefig(out / "loss_curves.png", dpi=120, bbox_inches="tight")
    print(f"\nwrote {out / 'results.json'} and {out / 'loss_curves.png'}")


if __name__ == "__main__":
    main()
