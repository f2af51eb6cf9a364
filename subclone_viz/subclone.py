"""Applying a plan: slice the parent's weights into a destination of the parent's own class.

Every parameter is resolved against its family's slicing rules: each axis is a residual, FFN, head, fused
q|k|v or kept axis, and takes the plan's indices for it (block parameters those of the destination layer's
source block). The destination is built on the meta device and every tensor is then filled from the parent,
so no time goes into a random initialization that would be overwritten.

Scaling: ``"sqrt"`` multiplies each linear weight whose fan-in shrank from n to n' by sqrt(n / n') (biases,
norms and embeddings untouched); ``"calibrated"`` instead runs calibration batches through parent and
destination and scales the output (weight and bias) of each linear layer whose fan-in was cut so that its
standard deviation over the kept output channels equals the parent's, layer by layer in forward order.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, split="heldout")
    >>> prof = sv.profile(parent, heldout, max_tokens=512, progress=False)
    >>> p = sv.plan(parent, prof, sv.DestinationSpec(layers=20, hidden=384))
    >>> destination = sv.subclone(parent, p)
    >>> type(destination).__name__                      # the parent's own class
    'LlamaForCausalLM'
    >>> destination.subclone_info["scales"]             # the factor applied to each scaled weight
    {...}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
from torch import nn

from .capture import forward_until_seen, to_device, token_mask
from .families import Family, axis_indices
from .parent import Parent, parent_fingerprint, read_parameter, same_parent
from .plan import SCALING_METHODS, DestinationSpec, Strategy, SubclonePlan, plan, register_strategy

DEFAULT_CALIBRATION_BATCHES = 4


def _slice(tensor: torch.Tensor, indices: list) -> torch.Tensor:
    """Select ``indices[axis]`` along each axis; a list of lists selects per expert (axis 0 already cut to the
    kept experts), each expert its own neurons."""
    for axis, index in enumerate(indices):
        if index is None:
            continue
        if index and isinstance(index[0], list):
            tensor = torch.stack(
                [
                    expert.index_select(axis - 1, torch.as_tensor(kept, device=tensor.device))
                    for expert, kept in zip(tensor, index)
                ]
            )
        else:
            tensor = tensor.index_select(axis, torch.as_tensor(index, device=tensor.device))
    return tensor


def _source_name(family: Family, plan: "SubclonePlan", name: str, layer: int | None) -> str:
    return name if layer is None else family.block_param_name(name, plan.layers[layer])


@torch.no_grad()
def subclone(
    parent: "Parent",
    plan: "SubclonePlan",
    calibration_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    calibration_batch_count: int = DEFAULT_CALIBRATION_BATCHES,
) -> nn.Module:
    """Build the destination that ``plan`` describes, with weights sliced from ``parent``.

    Args:
        parent: the parent the plan was made for.
        plan: from :func:`~subclone_viz.plan`.
        calibration_batches: batches for ``scaling="calibrated"`` (ignored otherwise).
        calibration_batch_count: how many of them to calibrate on (joined into one forward pass).

    Returns a model of the parent's class, in eval mode, on the parent's (first) device and dtype, with a
    ``subclone_info`` dict (the plan and the scale factors applied).
    """
    family = parent.family
    if plan.family != family.name or not same_parent(plan.parent, parent_fingerprint(parent)):
        raise ValueError(
            f"this plan was made for {plan.parent['name']!r} ({plan.parent_dims}), not for {parent.name!r}; "
            f"plan again with this parent"
        )
    scaling = SCALING_METHODS[plan.scaling]
    if scaling.needs_batches and calibration_batches is None:
        raise ValueError(f"scaling={plan.scaling!r} needs calibration_batches (a few batches of the parent's data)")
    destination = family.build(parent.model, plan.destination_dims, plan.layers)
    destination = destination.to_empty(device=parent.input_device).to(parent.dtype).eval()
    if hasattr(destination, "tie_weights"):
        destination.tie_weights()  # before filling, so that a tied head is one tensor with the embedding
    for name, param in destination.named_parameters():
        info = family.param_info(name)
        # Read one parent tensor at a time: offloaded (device_map) ones come from CPU or disk on demand.
        source = read_parameter(parent.model, _source_name(family, plan, name, info.block))
        sliced = _slice(source, [axis_indices(plan, axis, info.block) for axis in info.rule.axes])
        if sliced.shape != param.shape:
            raise RuntimeError(f"slicing {name} gave {tuple(sliced.shape)}, the destination wants {tuple(param.shape)}")
        param.copy_(sliced)
    _copy_buffers(parent, plan, destination)
    scales = scaling.function(parent, plan, destination, calibration_batches, calibration_batch_count)
    destination.subclone_info = {"plan": plan.to_dict(), "scales": scales}
    destination.subclone_processor = parent.processor
    return destination


def _copy_buffers(parent: "Parent", plan: "SubclonePlan", destination: nn.Module) -> None:
    """Buffers (rotary frequencies, position ids) depend on head size and positions, which never change;
    those the family derives from the widths (Gemma's embedding scale) are computed for the destination."""
    family = parent.family
    source_buffers = dict(parent.model.named_buffers())
    derived = family.derived_buffers(destination)
    for name, buffer in list(destination.named_buffers()):
        if name in derived:
            value = derived[name].to(device=buffer.device, dtype=buffer.dtype)
        elif _buffer_rule(family, name) is not None:  # sliced like a parameter (a router's correction bias)
            block = _buffer_block(family, name)
            source = source_buffers[_source_name(family, plan, name, block)]
            axes = _buffer_rule(family, name).axes
            value = _slice(source, [axis_indices(plan, axis, block) for axis in axes]).to(buffer.device, copy=True)
        else:
            info_block = _buffer_block(family, name)
            source = source_buffers.get(_source_name(family, plan, name, info_block))
            if source is None or source.shape != buffer.shape:
                raise RuntimeError(f"no parent buffer of shape {tuple(buffer.shape)} for the destination's {name}")
            value = source.to(buffer.device, copy=True)
        owner, _, attr = name.rpartition(".")
        setattr(destination.get_submodule(owner) if owner else destination, attr, value)


def _buffer_rule(family: Family, name: str):
    return next((rule for rule in family.buffer_rules if re.fullmatch(rule.pattern, name)), None)


def _buffer_block(family: Family, name: str) -> int | None:
    prefix = family.block_list + "."
    if name.startswith(prefix):
        return int(name[len(prefix) :].split(".", 1)[0])
    return None


class _RunningStd:
    """The standard deviation of values that arrive in parts (Chan et al.'s pairwise merge, in float64)."""

    def __init__(self) -> None:
        self.count, self.mean, self.squares = 0, 0.0, 0.0  # squares: sum of squared deviations from the mean

    def add(self, values: torch.Tensor) -> None:
        values = values.double()
        count = values.numel()
        if count == 0:
            return
        mean = float(values.mean())
        squares = float(((values - mean) ** 2).sum())
        total = self.count + count
        delta = mean - self.mean
        self.squares += squares + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def std(self) -> float:
        """Unbiased, as ``torch.std``."""
        return math.sqrt(self.squares / max(self.count - 1, 1))


def _calibrate(
    parent: "Parent",
    plan: "SubclonePlan",
    destination: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    count: int,
) -> dict[str, float]:
    """Scale each linear layer so that its output std (over kept channels) matches the parent's.

    Running sums, no stored activations: the parent's statistics stream over the calibration batches; the
    destination runs once on the batches joined, so that each layer's scale is set, in forward order, from
    the outputs of the layers before it already scaled. Both forwards stop after the last scaled layer,
    whose output is computed in chunks (an LM head's logits are never held whole).
    """
    parts = [batch for batch, _ in zip(batches, range(count))]
    if not parts:
        raise ValueError("calibration_batches is empty")
    sources, kept = _calibrated_layers(parent, plan, destination)
    if not sources:
        return {}
    parent_std = _parent_stds(parent, sources, kept, parts)
    return _scale_destination(parent.family, destination, parent_std, parts, parent.input_device)


def _calibrated_layers(
    parent: "Parent", plan: "SubclonePlan", destination: nn.Module
) -> tuple[dict[str, str], dict[str, list[int] | None]]:
    """The destination's linear layers whose fan-in was cut: each one's parent layer, and the parent layer's
    output channels it kept (None: all)."""
    family = parent.family
    parent_shapes = {name: p.shape for name, p in parent.model.named_parameters()}
    kept: dict[str, list[int] | None] = {}  # destination module -> kept output channels of its parent module
    sources: dict[str, str] = {}  # destination module -> parent module
    for name, param in destination.named_parameters():
        info = family.param_info(name)
        router = getattr(family, "router", None)
        if info.rule.fan_in_axis is None or param.dim() != 2 or (router and name.endswith(f".{router}.weight")):
            continue  # fused experts (3-D) and routers (which return tuples) keep their sliced weights
        source_param = _source_name(family, plan, name, info.block)
        if param.shape[info.rule.fan_in_axis] == parent_shapes[source_param][info.rule.fan_in_axis]:
            continue  # like sqrt, calibration compensates for a cut fan-in; an uncut layer keeps its weights
        module = name.rsplit(".", 1)[0]
        sources[module] = source_param.rsplit(".", 1)[0]
        kept[module] = axis_indices(plan, info.rule.axes[1 - info.rule.fan_in_axis], info.block)
    return sources, kept


def _parent_stds(
    parent: "Parent",
    sources: dict[str, str],
    kept: dict[str, list[int] | None],
    parts: list[dict[str, torch.Tensor]],
) -> dict[str, "_RunningStd"]:
    """The parent's side: one running std per destination layer, over the kept channels of its source layer's
    output, streamed batch by batch."""
    parent_std = {module: _RunningStd() for module in sources}
    by_source: dict[str, list[str]] = {}
    for module, source in sources.items():
        by_source.setdefault(source, []).append(module)

    def observe_parent(source: str, rows: torch.Tensor) -> None:
        for module in by_source[source]:
            parent_std[module].add(rows if kept[module] is None else rows[:, kept[module]])

    parent_modules = {source: parent.model.get_submodule(source) for source in by_source}
    for part in parts:
        batch = to_device(part, parent.input_device)
        forward_until_seen(
            lambda: parent.family.logits(parent.model, batch), parent_modules, observe_parent, mask=token_mask(part)
        )
    return parent_std


def _scale_destination(
    family: Family,
    destination: nn.Module,
    parent_std: dict[str, "_RunningStd"],
    parts: list[dict[str, torch.Tensor]],
    device: torch.device,
) -> dict[str, float]:
    """The destination's side: its layers scaled one after the other, in forward order, on all calibration
    tokens at once; each layer's scale by weight name."""
    joined = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    destination_std = {module: _RunningStd() for module in parent_std}
    scales: dict[str, float] = {}

    def scale_layer(module_name: str, module: nn.Module) -> float:
        scale = parent_std[module_name].std / max(destination_std[module_name].std, 1e-12)
        scales[f"{module_name}.weight"] = scale
        module.weight.mul_(scale)
        if getattr(module, "bias", None) is not None:
            module.bias.mul_(scale)
        return scale

    destination_modules = {module: destination.get_submodule(module) for module in parent_std}
    batch = to_device(joined, device)
    forward_until_seen(
        lambda: family.logits(destination, batch),
        destination_modules,
        lambda name, rows: destination_std[name].add(rows),
        scale_layer,
        mask=token_mask(joined),
    )
    return scales


def _scale_none(parent: Parent, plan: SubclonePlan, destination: nn.Module, batches, count: int) -> dict[str, float]:
    return {}


def _scale_sqrt(parent: Parent, plan: SubclonePlan, destination: nn.Module, batches, count: int) -> dict[str, float]:
    """The paper's scaling: every weight whose fan-in shrank from n to n' times sqrt(n / n')."""
    family = parent.family
    parent_shapes = {name: p.shape for name, p in parent.model.named_parameters(remove_duplicate=False)}
    scales: dict[str, float] = {}
    for name, param in destination.named_parameters():
        info = family.param_info(name)
        axis = info.rule.fan_in_axis
        full = parent_shapes[_source_name(family, plan, name, info.block)]
        if axis is not None and param.shape[axis] < full[axis]:
            scales[name] = math.sqrt(full[axis] / param.shape[axis])
            param.mul_(scales[name])
    return scales


# The scalings of plan.SCALING_METHODS (declared there, so that a plan finds them before this module is imported).
SQRT_SCALING = Strategy(
    "sqrt", _scale_sqrt, description="the paper: each weight whose fan-in shrank from n to n' times sqrt(n / n')"
)
NO_SCALING = Strategy("none", _scale_none, description="the sliced weights as they are")
CALIBRATED_SCALING = Strategy(
    "calibrated",
    _calibrate,
    needs_batches=True,
    description="scale each linear layer so that its output std matches the parent's, on calibration batches",
)
for _strategy in (SQRT_SCALING, NO_SCALING, CALIBRATED_SCALING):
    register_strategy(SCALING_METHODS, _strategy)


def random_init(
    parent: Parent,
    shape: SubclonePlan | DestinationSpec,
    seed: int | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A destination of ``shape`` with the architecture's own random initialization: the subclone's baseline.

    Args:
        parent: the loaded parent (its class and config are the destination's).
        shape: a plan (its dims and kept blocks: per-layer settings such as sliding-window layer types follow
            them) or a spec (planned without data: the blocks ``depth="middle"`` keeps).
        seed: seeds torch before the weights are drawn (None: the current random state).
        device: where to build it (default: the parent's input device).
    """
    if isinstance(shape, DestinationSpec):
        shape = plan(parent, None, shape, width="first", scaling="none")
    elif not isinstance(shape, SubclonePlan):
        raise TypeError(f"shape must be a SubclonePlan or a DestinationSpec, not {type(shape).__name__}")
    if seed is not None:
        torch.manual_seed(seed)
    return parent.family.build(
        parent.model, shape.destination_dims, shape.layers, device=parent.input_device if device is None else device
    )
