"""What every mixture-of-experts adapter shares: fused experts, a router, optional shared experts and dense layers.

A mixture-of-experts (MoE) layer replaces the FFN by ``experts`` FFNs of width ``expert_ffn`` and a router that
sends each token to ``experts_per_tok`` of them. transformers 5 stores the experts **fused**, as 3-D
parameters (expert on axis 0), and may run them through batched or grouped matmuls, so no linear layer of an
expert is ever called: the profile reads the experts' inputs (the token states, the chosen experts and their
weights, the arguments of ``mlp.experts``) and recomputes each expert's activation from the 3-D weights with
:meth:`MoEFamily.expert_forward`, whatever the experts implementation.

A subclass says, as class attributes: where the router and the experts live (``router``, ``experts_module``),
the shared expert if any (``shared_expert``, a dense MLP whose ``down_proj`` input the profile reads), how the
router turns logits into probabilities (``routing``: ``"softmax"`` over all experts then top-k, gpt-oss's
``"topk_softmax"``, DeepSeek-V3's ``"sigmoid"``), and which config fields hold the expert counts and widths
(``config_fields``). The rules name the expert axes with the kinds of :mod:`.axes` (``"experts"``,
``"expert_ffn"``, ``"expert_gate_up"``...).

``num_experts`` and the expert width are single config values, so a destination keeps the same number of
experts, of the same width, in every MoE layer; each layer still chooses which experts, and each expert which
neurons.

Example::

    >>> from subclone_viz.families import FAMILIES, family_of
    >>> model = FAMILIES["mixtral"].tiny_models()["mixtral"]()
    >>> family = family_of(model)
    >>> family.dims(model)
    Dims(layers=4, hidden=32, ffn=24, heads=4, kv_heads=2, head_dim=8, experts=6, experts_per_tok=2, expert_ffn=24)
    >>> family.rule_for("model.layers.0.mlp.experts.gate_up_proj").axes
    ('experts', 'expert_gate_up', 'residual')
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ._hf import build_model, resized_config
from .base import HF_CONFIG_FIELDS, CausalLMFamily, Dims

Routing = Literal["softmax", "topk_softmax", "sigmoid"]

_MOE_FIELDS = ("experts", "experts_per_tok", "expert_ffn", "shared_ffn")


class MoEFamily(CausalLMFamily):
    """A causal LM whose FFNs are (some or all) mixtures of experts with fused 3-D expert weights."""

    router = "mlp.gate"  # the router module, relative to a block: returns (logits, weights, indices)
    experts_module = "mlp.experts"  # called as experts(states (N, d), indices (N, k), weights (N, k))
    shared_expert: str | None = None  # a dense MLP run on every token beside the routed experts
    routing: Routing = "softmax"
    renormalize_field: str | None = "norm_topk_prob"  # None: the kept top-k weights are always renormalized
    heads_follow_hidden = False
    final_norm = "model.norm"  # every MoE decoder here ends its blocks with the Llama-style norm
    config_fields = dict(
        HF_CONFIG_FIELDS,
        experts="num_experts",
        experts_per_tok="num_experts_per_tok",
        expert_ffn="moe_intermediate_size",
    )

    # ------------------------------------------------------------------ shape
    def dims(self, model: nn.Module) -> Dims:
        base = super().dims(model)
        c = model.config
        moe = {
            key: int(getattr(c, self.config_fields[key], 0) or 0) for key in _MOE_FIELDS if key in self.config_fields
        }
        moe.setdefault("shared_ffn", self.shared_width(model))
        return Dims(**{**base.to_dict(), **moe, **self.extra_dims(model)})

    def shared_width(self, model: nn.Module) -> int:
        """The shared experts' FFN width (0 without one)."""
        return 0

    def extra_dims(self, model: nn.Module) -> dict[str, int]:
        """Further Dims fields the family fills (MLA's per-head row counts)."""
        return {}

    def build(self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"):
        # Only the fields this config has (Qwen3-MoE shares Qwen2-MoE's fields but has no shared expert).
        changes = {attr: getattr(dims, key) for key, attr in self.config_fields.items() if hasattr(model.config, attr)}
        if not self.heads_follow_hidden:
            changes["head_dim"] = dims.head_dim
        changes.update(self.layer_changes(model, dims, layer_sources))
        return build_model(model, resized_config(model, changes, layer_sources), device)

    def layer_changes(self, model: nn.Module, dims: Dims, layer_sources: list[int]) -> dict:
        """Config changes that make the destination's dense and MoE layers follow their source blocks."""
        return {}

    def renormalizes(self, model: nn.Module) -> bool:
        """Whether the router divides the kept top-k weights by their sum (then dropping experts only changes
        which experts a token reaches; without it the kept weights grow as the softmax loses the dropped ones)."""
        return self.renormalize_field is None or bool(getattr(model.config, self.renormalize_field, False))

    def expert_groups(self, model: nn.Module) -> int:
        """How many groups the router chooses among first (DeepSeek-V3's ``n_group``); 1 elsewhere."""
        return 1

    def tied_shared_width(self, model: nn.Module, dims: Dims) -> int | None:
        """The shared experts' width that the destination's expert width implies, where the config derives one
        from the other (DeepSeek-V3: ``moe_intermediate_size * n_shared_experts``); None where it is free."""
        return None

    def check_experts(self, parent: Dims, dims: Dims, model: nn.Module) -> str | None:
        """A message when the destination's expert counts cannot be routed (None when they can)."""
        return None

    def check_layer_sources(self, model: nn.Module, layer_sources: list[int]) -> str | None:
        """A message when the destination's blocks cannot keep their dense/MoE kind in its config (None: fine)."""
        return None

    # ------------------------------------------------------------------ modules
    def ffn_activation_module(self, block: nn.Module) -> nn.Module | None:
        try:
            return block.get_submodule(self.ffn_activation)
        except AttributeError:
            return None  # an MoE layer: its experts are read through moe_parts

    def moe_parts(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module | None] | None:
        """(router, experts, shared expert or None) of an MoE block; None for a dense block."""
        try:
            experts = block.get_submodule(self.experts_module)
        except AttributeError:
            return None
        shared = None
        if self.shared_expert:
            try:
                shared = block.get_submodule(self.shared_expert)
            except AttributeError:  # a family member without one (Qwen3-MoE beside Qwen2-MoE)
                pass
        return block.get_submodule(self.router), experts, shared

    def router_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, E) logits -> (N, E) router probabilities (DeepSeek-V3's sigmoid scores, normalized per token)."""
        logits = logits.float()
        if self.routing == "sigmoid":
            scores = logits.sigmoid()
            return scores / scores.sum(-1, keepdim=True)
        return logits.softmax(-1)

    def expert_forward(self, experts: Any, expert: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert ``expert`` on token states x (n, d): its hidden activation (n, F) and its output f(x) (n, d),
        before the router weight. The [gate | up] layout of Mixtral, Qwen, OLMoE and DeepSeek."""
        gate, up = nn.functional.linear(x, experts.gate_up_proj[expert]).chunk(2, dim=-1)
        activation = experts.act_fn(gate) * up
        return activation, nn.functional.linear(activation, experts.down_proj[expert])


def moe_block_indices(family: MoEFamily, model: nn.Module) -> list[int]:
    """The blocks of ``model`` that are mixtures of experts."""
    return [i for i, block in enumerate(family.blocks(model)) if family.moe_parts(block) is not None]


def dense_layers_for(sources: list[int], dense: set[int]) -> list[int]:
    """Destination positions whose source block is dense (the config list that keeps them dense)."""
    return [j for j, source in enumerate(sources) if source in dense]
