"""Expert selection on a small mixture of experts trained here: keep-k experts vs MoE-to-dense vs random init.

A tiny OLMoE-class parent (``--experts`` experts, top-2, ``norm_topk_prob=False`` as OLMoE and Qwen2-MoE ship, so
the routing renormalisation question is live) is trained for ``--parent-steps`` steps on the embedded corpus
(Python's documentation, SmolLM2's tokenizer cut to its ``--vocab`` most frequent tokens, the rest one unknown
token, so that a step is cheap on one core) so that routing is not random, then profiled on a shuffled
calibration sample. At 25, 50 and 75% of experts removed (the same number in every layer, every other width
kept), each expert-selection estimator (``sv.EXPERT_ESTIMATORS``) and a random choice pick the experts; beside
them, MoE-to-dense (the most-loaded expert, and the two most loaded folded into one FFN of twice the width:
the active width of top-2 routing) and a random init of the keep-50% architecture. Every destination is scored
on held-out text before and after ``--recovery-steps`` steps of training (the same batches for all).

Renormalisation: with ``norm_topk_prob=False`` the router's softmax runs over the kept experts only, so a
token's kept weights grow by 1 / (1 - p_dropped), p_dropped the parent's probability mass on the dropped
experts. The benchmark measures that factor on held-out tokens (mean and 90th percentile, per cut, for the
frequency choice) and the held-out loss with the router as the class runs it beside the same weights
renormalized over the top-k (``norm_topk_prob=True``), before any training.

Exhaustive-search oracle (``bench/results/moe/oracle.json``): in one MoE layer at a time, every subset of k of the
experts is kept (the others' router logits set to minus infinity, which is what slicing the router's rows does:
checked against the subclone of one plan) while the other layers keep all of theirs, and scored on the held-out
batches. Each estimator's choice in that layer is placed among all C(E, k) subsets (rank 1 is the best) with its
regret, its loss minus the best subset's, in nats. ``--oracle-only`` trains and profiles the parent and runs
only the oracle.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_moe.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_moe.py --oracle-only
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import subclone_viz as sv  # noqa: E402
from subclone_viz.experts import (  # noqa: E402
    EXPERT_ESTIMATORS,
    expert_load,
    expert_scores,
    router_entropy,
    select_experts,
)
from subclone_viz.moe_dense import moe_to_dense  # noqa: E402
from _results import save_results  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--parent-steps", type=int, default=300)
    parser.add_argument("--recovery-steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calibration-tokens", type=int, default=4096)
    parser.add_argument("--eval-batches", type=int, default=6)
    parser.add_argument("--out", default="moe/olmoe_tiny.json")
    parser.add_argument("--oracle-out", default="moe/oracle.json")
    parser.add_argument("--oracle-kept", type=int, nargs="+", default=[2, 4, 6], help="experts kept per oracle run")
    parser.add_argument("--oracle-only", action="store_true", help="train the parent and run only the oracle")
    return parser.parse_args()


def build_parent(vocab: int, experts: int) -> torch.nn.Module:
    from transformers import OlmoeConfig, OlmoeForCausalLM

    torch.manual_seed(0)
    return OlmoeForCausalLM(
        OlmoeConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=96,
            num_experts=experts,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def small_vocabulary(batches, size: int) -> torch.Tensor:
    """A lookup from SmolLM2 token ids to the ``size - 1`` most frequent ones in the training split (id 1 up),
    every other token to 0: a small vocabulary keeps the LM head from dominating a step on one core."""
    counts = torch.zeros(49_152, dtype=torch.long)
    for batch in batches:
        counts += torch.bincount(batch["input_ids"].flatten(), minlength=counts.numel())[: counts.numel()]
    lookup = torch.zeros_like(counts)
    lookup[counts.argsort(descending=True)[: size - 1]] = torch.arange(1, size)
    return lookup


def remap(batch: dict[str, torch.Tensor], lookup: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**batch, "input_ids": lookup[batch["input_ids"]]}


@torch.no_grad()
def heldout_loss(family, model, batches) -> float:
    model.eval()
    return float(np.mean([float(family.loss(model, batch)) for batch in batches]))


def recover(model, batches, steps: int, family) -> torch.nn.Module:
    model = copy.deepcopy(model)
    sv.train(
        model, batches, steps=steps, lr=1e-3, weight_decay=0.0, progress=False, family=family, mixed_precision="no"
    )
    return model.eval()


@torch.no_grad()
def renormalisation(parent, plan, batches) -> dict[str, float]:
    """The factor 1 / (1 - p_dropped) by which a destination without top-k renormalisation multiplies the kept
    experts' weights, over held-out tokens and every MoE layer, for one plan's kept experts."""
    family = parent.family
    factors = []
    for layer, kept in zip(plan.layers, plan.experts):
        router = family.moe_parts(family.blocks(parent.model)[layer])[0]
        captured = []
        hook = family.blocks(parent.model)[layer].mlp.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
        for batch in batches:
            family.logits(parent.model, batch)
        hook.remove()
        for states in captured:
            probs = family.router_probabilities(router(states)[0])  # (N, E)
            kept_mass = probs[:, kept].sum(-1)
            factors.append((1.0 / kept_mass).flatten())
    factors = torch.cat(factors)
    return {"mean": float(factors.mean()), "p90": float(factors.quantile(0.9))}


def main() -> None:
    args = arguments()
    start = time.time()
    tokenizer = sv.load_parent("smollm2-135m").tokenizer
    stream = sv.text_batches("builtin", tokenizer, seq_len=args.seq_len, batch_size=args.batch_size, shuffle=True)
    vocab = small_vocabulary(stream, args.vocab)
    train = [remap(batch, vocab) for batch in stream]
    heldout = [
        remap(batch, vocab)
        for batch in sv.text_batches(
            "builtin",
            tokenizer,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            split="heldout",
            max_batches=args.eval_batches,
        )
    ]
    model = build_parent(args.vocab, args.experts)
    sv.train(model, train, steps=args.parent_steps, lr=3e-3, weight_decay=0.0, progress=False, mixed_precision="no")
    parent = sv.load_parent(model.eval(), device="cpu")
    family = parent.family
    calibration = [
        remap(batch, vocab)
        for batch in sv.text_batches(
            "builtin",
            tokenizer,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            shuffle=True,
            seed=1,
            max_batches=args.calibration_tokens // (args.seq_len * args.batch_size) + 1,
        )
    ]
    prof = sv.profile(parent, calibration, max_tokens=args.calibration_tokens, progress=False)
    parent_loss = heldout_loss(family, parent.model, heldout)
    load = expert_load(prof)
    print(
        f"parent: held-out {parent_loss:.3f} nats after {args.parent_steps} steps; router entropy "
        f"{router_entropy(prof).round(3).tolist()} (uniform {np.log(args.experts):.3f}); max expert load "
        f"{load.max(1).round(3).tolist()}"
    )
    oracle(args, parent, prof, heldout, parent_loss)
    if args.oracle_only:
        return
    d = parent.dims
    full = sv.DestinationSpec(layers=d.layers, hidden=d.hidden)
    rows, renorm = [], {}
    rng = np.random.default_rng(0)
    for removed in (0.25, 0.5, 0.75):
        keep = d.experts - int(round(removed * d.experts))
        spec = dataclasses.replace(full, experts=keep)
        plans = {name: sv.plan(parent, prof, spec, experts_by=name) for name in EXPERT_ESTIMATORS}
        plans["random"] = dataclasses.replace(
            plans["frequency"],
            experts=[sorted(rng.choice(d.experts, keep, replace=False).tolist()) for _ in range(d.layers)],
        )
        plans["random"].expert_ffn = [[list(range(d.expert_ffn))] * keep for _ in range(d.layers)]
        renorm[removed] = renormalisation(parent, plans["frequency"], heldout)
        for name, p in plans.items():
            child = sv.subclone(parent, p)
            before = heldout_loss(family, child, heldout)
            renormalized = _with_topk_renormalisation(child, family)
            rows.append(
                dict(
                    removed=removed,
                    kept=keep,
                    method=name,
                    before=before,
                    before_renormalized=heldout_loss(family, renormalized, heldout),
                    after=heldout_loss(family, recover(child, train, args.recovery_steps, family), heldout),
                )
            )
            print(rows[-1])
    for folded in (1, 2):
        dense = moe_to_dense(parent, prof, dataclasses.replace(full, experts=folded))
        rows.append(
            dict(
                removed=None,
                kept=folded,
                method=f"moe_to_dense (top {folded} folded)",
                before=heldout_loss(family, dense, heldout),
                before_renormalized=None,
                after=heldout_loss(family, recover(dense, train, args.recovery_steps, family), heldout),
            )
        )
        print(rows[-1])
    p_half = sv.plan(parent, prof, dataclasses.replace(full, experts=d.experts // 2))
    torch.manual_seed(0)
    scratch = family.build(parent.model, p_half.destination_dims, p_half.layers, device="cpu").eval()
    rows.append(
        dict(
            removed=0.5,
            kept=d.experts // 2,
            method="random init",
            before=heldout_loss(family, scratch, heldout),
            before_renormalized=None,
            after=heldout_loss(family, recover(scratch, train, args.recovery_steps, family), heldout),
        )
    )
    print(rows[-1])
    _report(args, parent_loss, prof, rows, renorm, time.time() - start)


def _masked_router_forward(self, hidden_states):
    """OLMoE's router forward with ``self.expert_mask`` (E,) added to the logits: minus infinity drops an expert."""
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    logits = torch.nn.functional.linear(hidden_states, self.weight) + self.expert_mask  # (N, E)
    probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
    top, indices = torch.topk(probs, self.top_k, dim=-1)  # (N, k)
    if self.norm_topk_prob:
        top /= top.sum(dim=-1, keepdim=True)
    return logits, top.to(logits.dtype), indices


def _masked_copy(parent):
    """A copy of the parent whose routers take an expert mask (all experts kept to start with)."""
    model = copy.deepcopy(parent.model).eval()
    routers = [parent.family.moe_parts(block)[0] for block in parent.family.blocks(model)]
    for router in routers:
        router.expert_mask = torch.zeros(router.num_experts)
        router.forward = types.MethodType(_masked_router_forward, router)
    return model, routers


def _keep_only(router, kept) -> None:
    router.expert_mask = torch.full((router.num_experts,), -math.inf)
    router.expert_mask[list(kept)] = 0.0


def oracle(args, parent, prof, heldout, parent_loss) -> None:
    """Every subset of k experts in each layer (the other layers keep all), against each estimator's choice."""
    family, d = parent.family, parent.dims
    start = time.time()
    model, routers = _masked_copy(parent)
    choices = {name: expert_scores(prof, name) for name in EXPERT_ESTIMATORS}
    runs, check = [], {}
    for keep in args.oracle_kept:
        # Masking reproduces slicing: the frequency choice in every layer, masked and subcloned.
        plan = sv.plan(parent, prof, dataclasses.replace(sv.DestinationSpec(d.layers, d.hidden), experts=keep))
        for router, kept in zip(routers, plan.experts):
            _keep_only(router, kept)
        check[keep] = abs(
            heldout_loss(family, model, heldout) - heldout_loss(family, sv.subclone(parent, plan), heldout)
        )
        for layer in range(d.layers):
            for other in routers:
                other.expert_mask = torch.zeros(d.experts)
            losses = {}
            for subset in itertools.combinations(range(d.experts), keep):
                _keep_only(routers[layer], subset)
                losses[subset] = heldout_loss(family, model, heldout)
            runs.append(_placed(layer, keep, losses, choices))
            print({k: v for k, v in runs[-1].items() if k != "losses"})
    _report_oracle(args, runs, check, parent_loss, time.time() - start)


def _placed(layer: int, keep: int, losses: dict, choices: dict) -> dict:
    """Where each estimator's choice in ``layer`` ranks among every subset's loss, and its regret."""
    values = np.array(list(losses.values()))
    best = min(losses, key=losses.get)
    placed = {}
    for name, scores in choices.items():
        chosen = tuple(sorted(select_experts(scores[layer], keep)))
        loss = losses[chosen]
        placed[name] = {
            "experts": list(chosen),
            "loss": loss,
            "rank": int((values < loss).sum()) + 1,
            "regret": loss - losses[best],
        }
    return {
        "layer": layer,
        "kept": keep,
        "subsets": len(losses),
        "best": {"experts": list(best), "loss": losses[best]},
        "worst": float(values.max()),
        "random_mean_regret": float(values.mean() - losses[best]),
        "estimators": placed,
        "losses": {",".join(map(str, s)): v for s, v in losses.items()},
    }


def _report_oracle(args, runs, check, parent_loss, seconds) -> None:
    headline = [
        f"Exhaustive oracle on the trained tiny OLMoE (held-out {parent_loss:.3f} nats, {args.experts} experts, "
        f"top-2): every subset of k experts in one layer at a time, the others kept whole; masking matches "
        f"slicing to {max(check.values()):.1e} nats."
    ]
    for keep in args.oracle_kept:
        mine = [r for r in runs if r["kept"] == keep]
        ranks = {
            name: (
                np.mean([r["estimators"][name]["rank"] for r in mine]),
                max(r["estimators"][name]["regret"] for r in mine),
            )
            for name in EXPERT_ESTIMATORS
        }
        shown = "; ".join(f"{n} mean rank {m:.1f}, worst regret {w:.4f}" for n, (m, w) in ranks.items())
        random = np.mean([r["random_mean_regret"] for r in mine])
        headline.append(
            f"Keep {keep} of {args.experts} ({mine[0]['subsets']} subsets per layer, {len(mine)} layers): {shown}; "
            f"a random subset's mean regret {random:.4f} nats."
        )
    print("\n".join(headline))
    save_results(
        args.oracle_out,
        {"parent_loss": parent_loss, "runs": runs, "masking_check": check, "seconds": seconds, "settings": vars(args)},
        headline,
    )


def _with_topk_renormalisation(model, family):
    """A copy whose routers renormalize the kept top-k weights (as ``norm_topk_prob=True`` would)."""
    model = copy.deepcopy(model)
    for block in family.blocks(model):
        parts = family.moe_parts(block)
        if parts is not None:
            parts[0].norm_topk_prob = True
    return model


def _report(args, parent_loss, prof, rows, renorm, seconds) -> None:
    best = {}
    for removed in (0.25, 0.5, 0.75):
        candidates = [r for r in rows if r["removed"] == removed and r["method"] != "random init"]
        best[removed] = min(candidates, key=lambda r: r["before"])
    dense2 = next(r for r in rows if r["method"].startswith("moe_to_dense (top 2"))
    half = {r["method"]: r for r in rows if r["removed"] == 0.5}
    headline = [
        f"Parent (OLMoE class, 4 x 64, {args.experts} experts top-2, norm_topk_prob=False, vocabulary {args.vocab}) "
        f"trained "
        f"{args.parent_steps} steps: held-out {parent_loss:.3f} nats.",
        *[
            f"{int(k * 100)}% of experts removed: best before training {b['method']} at {b['before']:.3f} nats, "
            f"random choice {next(r for r in rows if r['removed'] == k and r['method'] == 'random')['before']:.3f}."
            for k, b in best.items()
        ],
        f"At 50% removed after {args.recovery_steps} recovery steps: frequency {half['frequency']['after']:.3f}, reap "
        f"{half['reap']['after']:.3f}, random choice {half['random']['after']:.3f}, random init "
        f"{half['random init']['after']:.3f}; MoE-to-dense (2 folded) {dense2['before']:.3f} before, "
        f"{dense2['after']:.3f} after.",
        *[
            f"Without top-k renormalisation, {int(k * 100)}% removed multiplies kept weights by "
            f"{v['mean']:.2f} on average (90th percentile {v['p90']:.2f})."
            for k, v in renorm.items()
        ],
    ]
    print("\n".join(headline))
    save_results(
        args.out,
        {
            "parent_loss": parent_loss,
            "tokens_profiled": prof.tokens,
            "expert_load": expert_load(prof).tolist(),
            "router_entropy": router_entropy(prof).tolist(),
            "rows": rows,
            "renormalisation": {str(k): v for k, v in renorm.items()},
            "seconds": seconds,
            "settings": vars(args),
        },
        headline,
    )


if __name__ == "__main__":
    main()
