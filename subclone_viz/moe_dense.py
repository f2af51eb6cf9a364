"""MoE to dense: fold the chosen experts of every layer into one FFN that every token runs.

A mixture of experts computes y = sum over the top-k experts of g_j(x) f_j(x). The dense destination keeps the
parent's class with a single expert routed to every token (``num_experts=1``, ``num_experts_per_tok=1``: its
router weight is 1 whatever the router says), whose FFN is the kept experts side by side, each expert's
``down_proj`` block scaled by its mean routing weight over the calibration tokens, E[g_j(x)] (0 where a token was
not routed to j). So the dense FFN computes sum_j E[g_j] f_j(x), the routed sum with each weight replaced by its
mean (the route of ``krafton-ai/moe-to-dense``, without the distillation that follows it there).

``experts=1`` is the most-loaded expert alone (by ``experts_by``, "frequency" by default); ``experts=k`` folds the
k best experts into an FFN k times as wide, the same active width as routing to k of them. Everything else (the
residual width, heads, depth, each expert's neurons, the shared expert) follows an ordinary plan of k experts.
DeepSeek-V3's grouped router cannot route one expert, so it has no dense form here.

Example::

    >>> import torch
    >>> import subclone_viz as sv
    >>> from subclone_viz.families import FAMILIES
    >>> parent = sv.load_parent(FAMILIES["mixtral"].tiny_models()["mixtral"](), device="cpu")
    >>> batches = [{"input_ids": torch.randint(0, 97, (2, 12))} for _ in range(2)]
    >>> prof = sv.profile(parent, batches, progress=False)
    >>> dense = moe_to_dense(parent, prof, sv.DestinationSpec(layers=4, hidden=32, experts=2))
    >>> parent.family.dims(dense)      # one expert of twice the width: every token runs both kept experts
    Dims(layers=4, hidden=32, ffn=48, heads=4, kv_heads=2, head_dim=8, experts=1, experts_per_tok=1, expert_ffn=48)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from .families.moe import MoEFamily
from .plan import SpecError, plan
from .subclone import subclone

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import DestinationSpec
    from .profile import Profile


@torch.no_grad()
def moe_to_dense(
    parent: "Parent", profile: "Profile", spec: "DestinationSpec", experts_by: str = "frequency", **plan_options
) -> nn.Module:
    """A one-expert destination of the parent's class whose expert is the kept experts of each layer, folded.

    Args:
        parent: a mixture-of-experts parent.
        profile: its profile (the experts' mean routing weights come from it).
        spec: the destination; ``spec.experts`` experts per layer are folded (default 1, the most loaded).
        experts_by: the expert-selection estimator that picks them.
        plan_options: ``depth``, ``width``, ``scaling``, ``importance`` as for :func:`~subclone_viz.plan`.
    """
    family = cast(MoEFamily, parent.family)
    if not parent.dims.experts:
        raise SpecError(f"{parent.name} is dense already: moe_to_dense needs a mixture-of-experts parent")
    if family.expert_groups(parent.model) > 1:
        raise SpecError(f"{family.name} routes by expert groups, which one expert cannot fill: it has no dense form")
    k = spec.experts or 1
    routed = dataclasses.replace(spec, experts=k, experts_per_tok=k)
    p = plan(parent, profile, routed, experts_by=experts_by, **plan_options)
    sparse = subclone(parent, p)
    mean_gate = profile.stats["expert_gate"] / max(profile.tokens, 1)  # (L, E): E[g_j(x)] over every token
    dims = p.destination_dims
    tied = family.config_fields.get("expert_ffn") == family.config_fields.get("ffn")
    dense_dims = dataclasses.replace(
        dims,
        experts=1,
        experts_per_tok=1,
        expert_ffn=k * dims.expert_ffn,
        ffn=k * dims.expert_ffn if tied else dims.ffn,
    )
    dense = family.build(parent.model, dense_dims, p.layers).to_empty(device=parent.input_device)
    dense = dense.to(parent.dtype).eval()
    if hasattr(dense, "tie_weights"):
        dense.tie_weights()
    source: dict[str, torch.Tensor] = dict(sparse.named_parameters())
    for name, param in dense.named_parameters():
        info = family.param_info(name)
        value = source[name]
        if "experts" in info.rule.axes and info.block is not None:
            kept = p.experts[info.block]
            weights = mean_gate[p.layers[info.block]][kept]  # (k,) for the kept experts
            value = _fold(name, value, info.rule.axes, weights, family.router)
        param.copy_(value)
    buffers = dict(sparse.named_buffers())
    for name, _ in list(dense.named_buffers()):  # rotary frequencies: the same in both
        owner, _, attr = name.rpartition(".")
        setattr(dense.get_submodule(owner) if owner else dense, attr, buffers[name].clone())
    info_before = cast("dict[str, Any]", sparse.subclone_info)
    dense.subclone_info = {
        **info_before,
        "moe_to_dense": {
            "experts": p.experts,
            "mean_gate": [[float(g) for g in mean_gate[b][kept]] for b, kept in zip(p.layers, p.experts)],
        },
    }
    dense.subclone_processor = parent.processor
    return dense


def _fold(name: str, value: torch.Tensor, axes: tuple[str, ...], weights: np.ndarray, router: str) -> torch.Tensor:
    """One expert (axis 0 of length 1) from the k kept experts of a fused tensor: FFN axes side by side (a
    [gate | up] axis as all gates then all ups), outputs weighted by the mean gates; router rows become one
    zero row (a single expert's weight is 1 whatever its logit)."""
    if f".{router}." in name:
        return torch.zeros_like(value[:1])
    w = torch.as_tensor(weights, dtype=value.dtype, device=value.device).reshape(-1, *[1] * (value.dim() - 1))
    ffn_axis = next((i for i, a in enumerate(axes) if a.startswith("expert_")), None)
    if ffn_axis is None:  # a per-expert output bias (gpt-oss's down_proj_bias): the weighted sum
        return (value * w).sum(0, keepdim=True)
    side_by_side = ffn_axis - 1  # the FFN axis of one expert's slice
    if axes[ffn_axis] == "expert_gate_up":
        gate, up = value.chunk(2, dim=ffn_axis)
        return torch.cat([*gate, *up], dim=side_by_side).unsqueeze(0)
    if axes[ffn_axis] == "expert_gate_up_il":  # (gate, up) pairs stay pairs
        return torch.cat(list(value), dim=side_by_side).unsqueeze(0)
    return torch.cat(list(value * w), dim=side_by_side).unsqueeze(0)  # down_proj: expert j's output times E[g_j]
