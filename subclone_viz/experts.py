"""Mixture-of-experts statistics: what the router did, what each expert computed, and which experts to keep.

A profile of an MoE parent (:func:`~subclone_viz.profile.profile`) adds these running sums to
``Profile.stats``, per layer (zeros for dense layers), over the counted tokens:

=========================  =====================================================================================
``expert_tokens`` (L, E)   tokens routed to each expert (its load)
``expert_prob`` (L, E)     router probability mass: the sum of each expert's probability over all tokens
``expert_gate`` (L, E)     the router weights the model applied (renormalized where the config renormalizes)
``expert_norm`` (L, E)     sum over routed tokens of ||f_j(x)||, the expert's output before its weight
``expert_reap`` (L, E)     sum over routed tokens of g_j(x) * ||f_j(x)|| (REAP's numerator)
``expert_ffn_abs`` (L,E,F) sum over routed tokens of |activation| of each expert's FFN neurons
``expert_coselect`` (L,E,E) tokens routed to both experts i and j (the diagonal is the load)
``router_entropy`` (L,)    sum over tokens of the entropy of the router's probabilities (nats)
``router_tokens`` (L,)     tokens the router saw (0 for dense layers)
``shared_ffn_abs`` (L, S)  sum of |activation| of the shared expert's neurons over every token
=========================  =====================================================================================

Expert outputs are recomputed from the fused 3-D weights (:meth:`MoEFamily.expert_forward`) on the arguments the
experts module receives, so the statistics do not depend on the experts implementation (eager, batched or
grouped matmuls) and are exact sums that shard and merge like the rest of the profile.

The expert-selection estimators (:data:`EXPERT_ESTIMATORS`) turn them into one score per expert and layer;
``plan(..., experts_by=NAME)`` keeps the highest. ``reap`` is REAP's criterion (Lasby et al. 2025): the mean,
over the tokens routed to an expert, of its router weight times the norm of its output.

Example::

    >>> import subclone_viz as sv
    >>> from subclone_viz.families import FAMILIES
    >>> parent = sv.load_parent(FAMILIES["mixtral"].tiny_models()["mixtral"](), device="cpu")
    >>> import torch
    >>> batches = [{"input_ids": torch.randint(0, 97, (2, 12))} for _ in range(2)]
    >>> prof = sv.profile(parent, batches, progress=False)
    >>> prof.stats["expert_tokens"].sum(1)          # every token goes to top-2 experts in each of 4 layers
    array([96., 96., 96., 96.])
    >>> list(EXPERT_ESTIMATORS)
    ['frequency', 'router_mass', 'reap', 'mean_norm', 'summed_norm']
    >>> expert_scores(prof, "reap").shape
    (4, 6)
    >>> counts = parameter_counts(parent.model, parent.family)   # top-2 of 6 experts: a third of them active
    >>> counts["active"] < counts["total"]
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from .capture import counted_rows
from .families.moe import MoEFamily
from .registry import Registry

if TYPE_CHECKING:
    from .parent import Parent
    from .profile import Profile

DEFAULT_EXPERT_ESTIMATOR = "frequency"
EXPERT_STATS = (
    "expert_tokens",
    "expert_prob",
    "expert_gate",
    "expert_norm",
    "expert_reap",
    "expert_ffn_abs",
    "expert_coselect",
    "router_entropy",
    "router_tokens",
)


def is_moe(parent: "Parent") -> bool:
    """Whether ``parent`` is a mixture of experts (its family reads routers and fused experts)."""
    return parent.dims.experts > 0 and hasattr(parent.family, "moe_parts")


class ExpertSums:
    """The running sums of :data:`EXPERT_STATS` for one profiling pass, per batch, fed by hooks on every MoE
    layer's router, experts and shared expert. ``accumulator.mask`` says which tokens count."""

    def __init__(self, parent: "Parent", accumulator):
        self.acc = accumulator
        self.family = cast(MoEFamily, parent.family)
        dims = parent.dims
        self.layers, self.experts, self.width, self.shared = dims.layers, dims.experts, dims.expert_ffn, dims.shared_ffn
        self.parts = [self.family.moe_parts(block) for block in self.family.blocks(parent.model)]
        self.sums: list[dict[str, torch.Tensor]] = [{} for _ in range(self.layers)]

    def _add(self, layer: int, name: str, value: torch.Tensor) -> None:
        value = value.double()
        store = self.sums[layer]
        store[name] = value if name not in store else store[name] + value

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        return counted_rows(t, self.acc.mask)

    def on_router(self, layer: int, logits: torch.Tensor) -> None:
        probs = self.family.router_probabilities(self._rows(logits))  # (N, E)
        self._add(layer, "expert_prob", probs.sum(0))
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # (N,)
        self._add(layer, "router_entropy", entropy.sum())
        self._add(layer, "router_tokens", torch.tensor(float(probs.shape[0]), device=probs.device))

    def on_experts(self, layer: int, experts: torch.nn.Module, states, indices, weights) -> None:
        chosen, gates = self._rows(indices).long(), self._rows(weights)  # (N, k) each
        states = states.reshape(-1, states.shape[-1])  # (tokens, d), in the model's dtype for expert_forward
        if self.acc.mask is not None and states.shape[0] == self.acc.mask.numel():
            states = states[self.acc.mask.to(states.device)]
        one_hot = torch.zeros(chosen.shape[0], self.experts, device=chosen.device).scatter_(1, chosen, 1.0)  # (N, E)
        self._add(layer, "expert_tokens", one_hot.sum(0))
        self._add(layer, "expert_coselect", one_hot.T @ one_hot)
        norm, reap, gate = (torch.zeros(self.experts, device=chosen.device) for _ in range(3))
        ffn = torch.zeros(self.experts, self.width, device=chosen.device)
        for expert in range(self.experts):
            token, slot = torch.where(chosen == expert)
            if token.numel() == 0:
                continue
            activation, output = self.family.expert_forward(experts, expert, states[token])
            g, output_norm = gates[token, slot], output.float().norm(dim=-1)
            norm[expert], reap[expert], gate[expert] = output_norm.sum(), (g * output_norm).sum(), g.sum()
            ffn[expert] = activation.float().abs().sum(0)
        for name, value in (
            ("expert_norm", norm),
            ("expert_reap", reap),
            ("expert_gate", gate),
            ("expert_ffn_abs", ffn),
        ):
            self._add(layer, name, value)

    def on_shared(self, layer: int, activation: torch.Tensor) -> None:
        self._add(layer, "shared_ffn_abs", self._rows(activation).abs().sum(0))

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        e = self.experts
        shapes = {
            "expert_tokens": (e,),
            "expert_prob": (e,),
            "expert_gate": (e,),
            "expert_norm": (e,),
            "expert_reap": (e,),
            "expert_ffn_abs": (e, self.width),
            "expert_coselect": (e, e),
            "router_entropy": (),
            "router_tokens": (),
        }
        if self.shared:
            shapes["shared_ffn_abs"] = (self.shared,)
        return shapes

    def take_sums(self) -> dict[str, torch.Tensor]:
        """This batch's sums stacked per statistic (dense layers: zeros); resets them."""
        device = next((v.device for store in self.sums for v in store.values()), torch.device("cpu"))
        taken = {}
        for name, shape in self._shapes().items():
            rows = []
            for layer, store in enumerate(self.sums):
                if name not in store and self.parts[layer] is not None and name != "shared_ffn_abs":
                    raise RuntimeError(f"an expert hook never fired: layer {layer} computed no {name}")
                rows.append(
                    store[name].to(device) if name in store else torch.zeros(shape, dtype=torch.float64, device=device)
                )
            taken[name] = torch.stack(rows)
        self.sums = [{} for _ in range(self.layers)]
        return taken

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Within the ``with``, every forward feeds the sums."""
        handles = []
        for layer, parts in enumerate(self.parts):
            if parts is None:
                continue
            router, experts, shared = parts
            shared_down: Any = shared.down_proj if shared is not None else None
            handles.append(
                router.register_forward_hook(
                    lambda m, a, out, layer=layer: self.on_router(layer, out[0] if isinstance(out, tuple) else out)
                )
            )
            handles.append(
                experts.register_forward_pre_hook(
                    lambda m, args, kwargs, layer=layer: self.on_experts(layer, m, *_experts_args(args, kwargs)),
                    with_kwargs=True,
                )
            )
            if shared_down is not None:
                handles.append(
                    shared_down.register_forward_pre_hook(lambda m, args, layer=layer: self.on_shared(layer, args[0]))
                )
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _experts_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(states, indices, weights) as the experts module was called: positionally or by keyword."""
    values = list(args) + list(kwargs.values())
    return values[0], values[1], values[2]


# ------------------------------------------------------------------------------------------ selection estimators


@dataclass(frozen=True)
class ExpertEstimator:
    """A named way to score experts from a profile's sums: (L, E), higher keeps first."""

    name: str
    description: str
    score: Callable[["Profile"], np.ndarray]


def _per_routed_token(profile: "Profile", name: str) -> np.ndarray:
    return profile.stats[name] / np.maximum(profile.stats["expert_tokens"], 1.0)


EXPERT_ESTIMATORS: Registry[ExpertEstimator] = Registry("expert estimator", "subclone_viz.expert_estimators")
for _estimator in (
    ExpertEstimator("frequency", "tokens routed to the expert (its load)", lambda p: p.stats["expert_tokens"]),
    ExpertEstimator(
        "router_mass",
        "the router's probability for the expert, summed over every token",
        lambda p: p.stats["expert_prob"],
    ),
    ExpertEstimator(
        "reap",
        "mean over routed tokens of router weight x ||expert output|| (REAP)",
        lambda p: _per_routed_token(p, "expert_reap"),
    ),
    ExpertEstimator(
        "mean_norm", "mean over routed tokens of ||expert output||", lambda p: _per_routed_token(p, "expert_norm")
    ),
    ExpertEstimator(
        "summed_norm",
        "sum over routed tokens of ||expert output|| (frequency x mean norm)",
        lambda p: p.stats["expert_norm"],
    ),
):
    EXPERT_ESTIMATORS.register(_estimator.name, _estimator)


def expert_scores(profile: "Profile", estimator: str = DEFAULT_EXPERT_ESTIMATOR) -> np.ndarray:
    """(L, E) scores of ``estimator`` (a name in :data:`EXPERT_ESTIMATORS`); dense layers score 0."""
    chosen = EXPERT_ESTIMATORS[estimator]
    if "expert_tokens" not in profile.stats:
        raise ValueError(
            "this profile holds no expert statistics: profile the MoE parent with this version's "
            "sv.profile(parent, batches)"
        )
    return np.asarray(chosen.score(profile), dtype=np.float64)


def expert_neuron_importance(profile: "Profile") -> np.ndarray:
    """(L, E, F) mean |activation| of each expert's neurons over the tokens routed to that expert."""
    return profile.stats["expert_ffn_abs"] / np.maximum(profile.stats["expert_tokens"], 1.0)[..., None]


def shared_neuron_importance(profile: "Profile") -> np.ndarray:
    """(L, S) mean |activation| of the shared expert's neurons over every token."""
    return profile.stats["shared_ffn_abs"] / max(profile.tokens, 1)


def expert_load(profile: "Profile") -> np.ndarray:
    """(L, E) share of each layer's routed slots that each expert took (rows of MoE layers sum to 1)."""
    tokens = profile.stats["expert_tokens"]
    return tokens / np.maximum(tokens.sum(1, keepdims=True), 1.0)


def router_entropy(profile: "Profile") -> np.ndarray:
    """(L,) mean router entropy per token in nats (0 for dense layers); ln(E) is uniform routing."""
    return profile.stats["router_entropy"] / np.maximum(profile.stats["router_tokens"], 1.0)


def select_experts(scores: np.ndarray, keep: int, groups: int = 1) -> list[int]:
    """The ``keep`` highest of one layer's expert ``scores``, the same number from each of the router's ``groups``
    (experts stay in their group's block of indices, groups in order), highest first within a group."""
    per_group = len(scores) // groups
    kept: list[int] = []
    for g in range(groups):
        members = np.arange(g * per_group, (g + 1) * per_group)
        kept.extend(int(e) for e in members[np.argsort(-scores[members], kind="stable")][: keep // groups])
    return kept


def _routed_experts(model: torch.nn.Module, family) -> list[torch.nn.Module]:
    """The routed experts module of every MoE block of ``model``."""
    return [parts[1] for block in family.blocks(model) if (parts := family.moe_parts(block)) is not None]


def active_matmul_weights(model: torch.nn.Module, family) -> int:
    """Weights one token multiplies by: every linear layer outside the routed experts (a tied head counted again,
    as :func:`~subclone_viz.sizing.matmul_weights` counts it), each router's weight, and the experts' matrices,
    fused 3-D or linear, at ``experts_per_tok / experts`` of their size. Expert biases are left out like every
    bias."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    linear = (torch.nn.Linear, Conv1D)
    dims = family.dims(model)
    parts = [p for block in family.blocks(model) if (p := family.moe_parts(block)) is not None] if dims.experts else []
    routed = [experts for _, experts, _ in parts]
    inside = {id(m) for experts in routed for m in experts.modules()}
    dense = sum(m.weight.numel() for m in model.modules() if isinstance(m, linear) and id(m) not in inside)
    # Routers that hold their (E, d) weight as a bare parameter (transformers 5's top-k routers) multiply too.
    dense += sum(router.weight.numel() for router, _, _ in parts if not isinstance(router, linear))
    expert_weights = sum(
        p.numel()
        for experts in routed
        for name, p in experts.named_parameters()
        if p.ndim == 3 or (p.ndim == 2 and name.endswith("weight"))  # (E, out, in) fused or one expert's linear
    )
    return dense + expert_weights * dims.experts_per_tok // max(dims.experts, 1)


def parameter_counts(model: torch.nn.Module, family) -> dict[str, int]:
    """Total parameters, and the parameters one token uses (active): the routed experts count
    ``experts_per_tok / experts`` of their size, everything else whole (tied tensors once)."""
    dims = family.dims(model)
    total = sum(p.numel() for p in model.parameters())
    if not dims.experts:
        return {"total": total, "active": total}
    routed = sum(p.numel() for experts in _routed_experts(model, family) for p in experts.parameters())
    return {"total": total, "active": total - routed + routed * dims.experts_per_tok // dims.experts}
