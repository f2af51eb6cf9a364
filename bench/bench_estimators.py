"""Importance estimators compared on SmolLM2-135M: held-out loss before training, in and out of domain.

Destination: 30 x 384, FFN 1024, 6 heads / 2 KV heads (every block kept, widths cut), paper recipe otherwise
(depth "middle", sqrt scaling). For each calibration draw (``--draws`` seeds of a shuffled, document-diverse
sample of ``--tokens`` training tokens of the embedded corpus, Python's documentation) the parent is profiled
once (plus one gradient pass for the Taylor estimator), and every estimator in ``sv.ESTIMATORS`` plans,
subclones and is scored on

* in-domain text: the held-out split of the embedded corpus (documents never profiled);
* out-of-domain text: English legal prose, the GNU GPL version 3 (``/usr/share/common-licenses/GPL-3`` on
  Debian), which is neither Python nor documentation.

A last draw profiles the *first* ``--tokens`` training tokens in corpus order (a contiguous slice of the
first documents, the old default) to show how much the choice of calibration sample moves the result, and
``sv.stability`` bootstraps the first draw's shards for the loss spread one profile implies.
Prints Markdown tables; writes every number to ``bench/results/estimators/results.json``.

    SUBCLONE_VIZ_CACHE=/work/cache/estim OMP_NUM_THREADS=1 .venv/bin/python bench/bench_estimators.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import subclone_viz as sv

SPEC = sv.DestinationSpec(layers=30, hidden=384, ffn=1024, heads=6, kv_heads=2)
OUT_OF_DOMAIN = Path("/usr/share/common-licenses/GPL-3")
RESULTS = Path(__file__).parent / "results" / "estimators" / "results.json"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".json", delete=False) as tmp:
        json.dump(data, tmp, indent=1)
    os.replace(tmp.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3, help="shuffled calibration draws (seeds 0..draws-1)")
    parser.add_argument("--tokens", type=int, default=2048, help="calibration tokens per draw")
    parser.add_argument("--eval-batches", type=int, default=2, help="batches of 4 x 256 tokens per text")
    args = parser.parse_args()
    if not OUT_OF_DOMAIN.is_file():
        raise SystemExit(f"{OUT_OF_DOMAIN} is missing: this benchmark's out-of-domain text is Debian's copy of the GPL")
    torch.manual_seed(0)
    start = time.perf_counter()
    parent = sv.load_parent("smollm2-135m", device="cpu")
    texts = {
        "in-domain (held-out Python docs)": sv.text_batches(
            "builtin", parent.tokenizer, seq_len=256, batch_size=4, split="heldout", max_batches=args.eval_batches),
    }
    with tempfile.TemporaryDirectory() as tmp:
        gpl = Path(tmp) / "gpl-3.txt"
        gpl.write_text(OUT_OF_DOMAIN.read_text())
        # One document: its first 90% is the "train" split; nothing here is ever profiled on.
        texts["out-of-domain (GPL-3 text)"] = sv.text_batches(
            str(gpl), parent.tokenizer, seq_len=256, batch_size=4, split="train", max_batches=args.eval_batches)
    results: dict = {"spec": SPEC.__dict__, "tokens": args.tokens, "texts": {k: v.description for k, v in texts.items()},
                     "parent_loss": {}, "draws": []}
    for name, batches in texts.items():
        results["parent_loss"][name] = sv.evaluate(parent.model, parent.family, batches).loss
    print(f"parent loss: {results['parent_loss']}", flush=True)

    def calibration(seed: int | None):
        return sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=2, split="train",
                               shuffle=seed is not None, seed=seed or 0)

    draws = [(f"shuffled seed {seed}", seed) for seed in range(args.draws)] + [("first documents (contiguous)", None)]
    first_profile = None
    for label, seed in draws:
        batches = calibration(seed)
        prof = sv.profile(parent, batches, max_tokens=args.tokens, progress=False, shards=8)
        prof = sv.add_taylor(prof, parent, batches, max_tokens=args.tokens, progress=False)
        first_profile = first_profile or prof
        losses = {}
        for estimator in sv.ESTIMATORS:
            child = sv.subclone(parent, sv.plan(parent, prof, SPEC, importance=estimator))
            losses[estimator] = {name: sv.evaluate(child, parent.family, b).loss for name, b in texts.items()}
            print(f"{label:30s} {estimator:18s} " + "  ".join(f"{v:.3f}" for v in losses[estimator].values())
                  + f"   [{time.perf_counter() - start:.0f}s]", flush=True)
        results["draws"].append({"label": label, "seed": seed, "source": prof.source, "losses": losses})
        write_json(RESULTS, results)

    shuffled = [d for d in results["draws"] if d["seed"] is not None]
    summary = {}
    for estimator in sv.ESTIMATORS:
        summary[estimator] = {}
        for name in texts:
            values = np.array([d["losses"][estimator][name] for d in shuffled])
            summary[estimator][name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)),
                                        "min": float(values.min()), "max": float(values.max())}
    results["summary"] = summary

    ood = texts["out-of-domain (GPL-3 text)"]
    st = sv.stability(parent, first_profile, SPEC, resamples=16, heldout=ood, loss_resamples=3,
                      max_batches=args.eval_batches)
    results["stability_paper_seed0"] = st.summary()
    results["seconds"] = time.perf_counter() - start
    write_json(RESULTS, results)

    names = list(texts)
    print(f"\n{SPEC}; calibration {args.tokens:,} tokens; mean ± std over {len(shuffled)} shuffled draws "
          f"[min, max]; parent: " + ", ".join(f"{results['parent_loss'][n]:.2f}" for n in names) + "\n")
    print("| estimator | " + " | ".join(names) + " | first documents: " + " | ".join(names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    contiguous = results["draws"][-1]["losses"]
    for estimator, by_text in summary.items():
        cells = [f"{s['mean']:.2f} ± {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]" for s in by_text.values()]
        print(f"| {estimator} | " + " | ".join(cells) + " | " + " | ".join(f"{contiguous[estimator][n]:.2f}"
                                                                        for n in names) + " |")
    print(f"\nstability (paper, seed 0, 16 bootstrap resamples of the shards): {json.dumps(st.summary())}")
    print(f"total {results['seconds']:.0f} s; results in {RESULTS}")


if __name__ == "__main__":
    main()
