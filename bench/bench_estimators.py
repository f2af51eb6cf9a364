"""Importance estimators compared on the embedded parents: held-out loss before and after a short training run.

For each calibration draw (``--draws`` seeds of a shuffled, document-diverse sample of ``--tokens`` training
tokens of the embedded corpus, Python's documentation) the parent is profiled once (plus one gradient pass for
the Taylor estimator), and every estimator in ``sv.ESTIMATORS`` plans, subclones and is scored on

* in-domain text: the held-out split of the embedded corpus (documents never profiled);
* out-of-domain text: English legal prose, the GNU GPL version 3 (``/usr/share/common-licenses/GPL-3`` on
  Debian), which is neither Python nor documentation.

Destinations (every block kept, widths cut, the paper's recipe otherwise: sqrt scaling):

* ``smollm2-135m`` (30 x 576): 30 x 384, FFN 1024, 6 heads / 2 KV heads;
* ``gemma3-270m`` (18 x 640): 18 x 512, FFN 1536, 4 heads / 1 KV head (its one KV group of 4 query heads
  is kept whole, so only the residual and FFN rankings differ between estimators).

A last draw profiles the *first* ``--tokens`` training tokens in corpus order (a contiguous slice of the
first documents) to show how much the choice of calibration sample moves the result, and ``sv.stability``
bootstraps the first draw's shards for the loss spread one profile implies.

Then the ``--train-top`` estimators with the lowest mean loss before training (over both texts and the
shuffled draws), and those named by ``--train-also``, train for ``--train-steps`` steps from every shuffled
draw's destination (the same batches in the same order for all), and both texts are scored again: does the
ranking before training survive training?

Prints Markdown tables; writes every number to ``--out`` (default
``bench/results/estimators/<parent>.json``) through the library's atomic writer.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_estimators.py --parent smollm2-135m --train-steps 60
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_estimators.py --parent gemma3-270m --tokens 1024 \
        --eval-batches 1 --eval-rows 2 --train-steps 30 --train-also paper
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import subclone_viz as sv
from subclone_viz._atomic import write_file

SPECS = {
    "smollm2-135m": sv.DestinationSpec(layers=30, hidden=384, ffn=1024, heads=6, kv_heads=2),
    "gemma3-270m": sv.DestinationSpec(layers=18, hidden=512, ffn=1536, heads=4, kv_heads=1),
}
OUT_OF_DOMAIN = Path("/usr/share/common-licenses/GPL-3")
RESULTS = Path(__file__).parent / "results" / "estimators"


def summarize(values: list[float]) -> dict[str, float]:
    array = np.array(values)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
    }


def cell(summary: dict[str, float]) -> str:
    return f"{summary['mean']:.2f} ± {summary['std']:.2f} [{summary['min']:.2f}, {summary['max']:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", choices=sorted(SPECS), default="smollm2-135m")
    parser.add_argument("--draws", type=int, default=3, help="shuffled calibration draws (seeds 0..draws-1)")
    parser.add_argument("--tokens", type=int, default=2048, help="calibration tokens per draw")
    parser.add_argument("--eval-batches", type=int, default=2, help="held-out batches per text")
    parser.add_argument("--eval-rows", type=int, default=4, help="rows of 256 tokens per held-out batch")
    parser.add_argument("--train-steps", type=int, default=0, help="steps of the after-training comparison (0: none)")
    parser.add_argument("--train-top", type=int, default=2, help="how many of the best estimators train")
    parser.add_argument(
        "--train-also",
        default="",
        help="comma list of estimators that train besides the best ones (e.g. paper, the default, as the reference)",
    )
    parser.add_argument("--train-lr", type=float, default=1e-3, help="peak learning rate of those runs")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/estimators/<parent>.json")
    args = parser.parse_args()
    if not OUT_OF_DOMAIN.is_file():
        raise SystemExit(f"{OUT_OF_DOMAIN} is missing: this benchmark's out-of-domain text is Debian's copy of the GPL")
    if args.draws < 2:
        parser.error(f"--draws {args.draws}: at least 2 draws, to measure a spread")
    also = [name.strip() for name in args.train_also.split(",") if name.strip()]
    unknown = [name for name in also if name not in sv.ESTIMATORS]
    if unknown:
        parser.error(f"--train-also {unknown}: not estimators; choose from {', '.join(sv.ESTIMATORS)}")
    out = args.out or RESULTS / f"{args.parent}.json"
    spec = SPECS[args.parent]
    torch.manual_seed(0)
    start = time.perf_counter()
    parent = sv.load_parent(args.parent, device="cpu")
    sources = {
        "in-domain (held-out Python docs)": sv.text_batches(
            "builtin",
            parent.tokenizer,
            seq_len=256,
            batch_size=args.eval_rows,
            split="heldout",
            max_batches=args.eval_batches,
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        gpl = Path(tmp) / "gpl-3.txt"
        gpl.write_text(OUT_OF_DOMAIN.read_text())
        # One document: its first 90% is the "train" split; nothing here is ever profiled on.
        sources["out-of-domain (GPL-3 text)"] = sv.text_batches(
            str(gpl),
            parent.tokenizer,
            seq_len=256,
            batch_size=args.eval_rows,
            split="train",
            max_batches=args.eval_batches,
        )
        texts = {name: list(batches) for name, batches in sources.items()}  # read before the file goes
    results: dict = {
        "parent": parent.description,
        "spec": spec.__dict__,
        "tokens": args.tokens,
        "texts": {name: batches.description for name, batches in sources.items()},
        "parent_loss": {},
        "draws": [],
    }

    def scores(model: torch.nn.Module) -> dict[str, float]:
        return {
            name: sv.evaluate(model, parent.family, batches, progress=False).loss for name, batches in texts.items()
        }

    def save() -> None:
        results["seconds"] = time.perf_counter() - start
        write_file(out, json.dumps(results, indent=1), overwrite=True)

    results["parent_loss"] = scores(parent.model)
    print(f"{parent.description}\nparent loss: {results['parent_loss']}", flush=True)

    def calibration(seed: int | None):
        return sv.text_batches(
            "builtin",
            parent.tokenizer,
            seq_len=256,
            batch_size=2,
            split="train",
            shuffle=seed is not None,
            seed=seed or 0,
        )

    draws = [(f"shuffled seed {seed}", seed) for seed in range(args.draws)] + [("first documents (contiguous)", None)]
    profiles = {}
    for label, seed in draws:
        batches = calibration(seed)
        prof = sv.profile(parent, batches, max_tokens=args.tokens, progress=False, shards=8)
        prof = sv.add_taylor(prof, parent, batches, max_tokens=args.tokens, progress=False)
        profiles[seed] = prof
        losses = {}
        for estimator in sv.ESTIMATORS:
            losses[estimator] = scores(sv.subclone(parent, sv.plan(parent, prof, spec, importance=estimator)))
            print(
                f"{label:30s} {estimator:18s} "
                + "  ".join(f"{v:.3f}" for v in losses[estimator].values())
                + f"   [{time.perf_counter() - start:.0f}s]",
                flush=True,
            )
        results["draws"].append({"label": label, "seed": seed, "source": prof.source, "losses": losses})
        save()

    shuffled = [d for d in results["draws"] if d["seed"] is not None]
    summary = {
        estimator: {name: summarize([d["losses"][estimator][name] for d in shuffled]) for name in texts}
        for estimator in sv.ESTIMATORS
    }
    results["summary"] = summary

    ood = texts["out-of-domain (GPL-3 text)"]
    st = sv.stability(
        parent, profiles[0], spec, resamples=16, heldout=ood, loss_resamples=3, max_batches=args.eval_batches
    )
    results["stability_paper_seed0"] = st.summary()
    save()

    names = list(texts)
    print(
        f"\n{spec}; calibration {args.tokens:,} tokens; mean ± std over {len(shuffled)} shuffled draws "
        f"[min, max]; parent: " + ", ".join(f"{results['parent_loss'][n]:.2f}" for n in names) + "\n"
    )
    print("| estimator | " + " | ".join(names) + " | first documents: " + " | ".join(names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    contiguous = results["draws"][-1]["losses"]
    for estimator, by_text in summary.items():
        print(
            f"| {estimator} | "
            + " | ".join(cell(s) for s in by_text.values())
            + " | "
            + " | ".join(f"{contiguous[estimator][n]:.2f}" for n in names)
            + " |"
        )
    print(f"\nstability (paper, seed 0, 16 bootstrap resamples of the shards): {json.dumps(st.summary())}")

    if args.train_steps > 0:
        ranked = sorted(sv.ESTIMATORS, key=lambda e: np.mean([summary[e][n]["mean"] for n in names]))
        chosen = list(dict.fromkeys(ranked[: args.train_top] + also))
        train = sv.text_batches(
            "builtin", parent.tokenizer, seq_len=128, batch_size=4, split="train", shuffle=True, seed=100
        )  # another sample than every calibration draw
        trained: dict = {
            "estimators": chosen,
            "steps": args.train_steps,
            "lr": args.train_lr,
            "batches": "4 x 128 shuffled training tokens (seed 100)",
            "runs": [],
        }
        results["after_training"] = trained
        for seed in range(args.draws):
            for estimator in chosen:
                began = time.perf_counter()
                model = sv.subclone(parent, sv.plan(parent, profiles[seed], spec, importance=estimator))
                history = sv.train(
                    model, train, steps=args.train_steps, lr=args.train_lr, weight_decay=0.001, progress=False, seed=0
                )
                after = scores(model)
                trained["runs"].append(
                    {"estimator": estimator, "seed": seed, "losses": after, "train_loss": history.steps[-1].loss}
                )
                print(
                    f"trained {args.train_steps} steps: seed {seed} {estimator:18s} "
                    + "  ".join(f"{v:.3f}" for v in after.values())
                    + f"   ({time.perf_counter() - began:.0f} s)",
                    flush=True,
                )
                save()
        trained["summary"] = {
            e: {n: summarize([r["losses"][n] for r in trained["runs"] if r["estimator"] == e]) for n in names}
            for e in chosen
        }
        print(f"\nafter {args.train_steps} steps (lr {args.train_lr:g}), mean ± std over {args.draws} draws:")
        print("| estimator | " + " | ".join(names) + " |")
        print("|---" * (1 + len(names)) + "|")
        for estimator, by_text in trained["summary"].items():
            print(f"| {estimator} | " + " | ".join(cell(s) for s in by_text.values()) + " |")
    save()
    print(f"total {results['seconds']:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
