"""How a destination relates to its parent: which parent block each of its layers came from, checked.

The views that put a parent and a destination side by side (the logit lens, layer similarity, generations and
per-token losses) take models in several forms: a :class:`~subclone_viz.Parent`, a bare model, or a destination
made by :func:`~subclone_viz.subclone` (which carries its plan in ``subclone_info`` and its parent's tokenizer
in ``subclone_processor``). This module turns each into a :class:`Subject` (the module, its adapter, its
tokenizer, a display name) and labels its residual layers by the parent block they came from, after checking
that the plan describes this model. A plan that does not fit is refused before any forward runs.

Residual layer 0 is the embedding output, layer j + 1 the output of block j; a destination's layer j + 1 comes
from parent block ``plan.layers[j]``.

Example::

    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from subclone_viz.cut import layer_labels, subject
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
    ...                                      num_attention_heads=4, vocab_size=50))
    >>> s = subject(model)
    >>> s.name, s.sources
    ('LlamaForCausalLM', [None, 0, 1, 2])
    >>> layer_labels([None, 0, 5, 9], destination=True)
    ['embedding', 'block 0 (parent 0)', 'block 1 (parent 5)', 'block 2 (parent 9)']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from torch import nn

from .errors import UserError
from .families import Family, family_of
from .parent import Parent, parent_fingerprint, same_parent
from .plan import SubclonePlan


class PlanMismatchError(UserError, ValueError):
    """A plan that does not describe the model (or the parent) it was handed with."""


class NoTokenizerError(UserError, ValueError):
    """Text was asked of a model that came without a tokenizer."""


@dataclass
class Subject:
    """A model as the comparison views use it.

    Attributes:
        module: the model itself.
        family: its adapter.
        tokenizer: its tokenizer or image processor (None when unknown).
        name: a display name.
        plan: the plan it was cut by (None for a parent or a model of unknown origin).
        sources: per residual layer, the parent block it came from (None for the embedding).
    """

    module: nn.Module
    family: Family
    tokenizer: Any
    name: str
    plan: "SubclonePlan | None"
    sources: list[int | None]

    @property
    def labels(self) -> list[str]:
        return layer_labels(self.sources, destination=self.plan is not None)


def layer_labels(sources: Sequence[int | None], destination: bool) -> list[str]:
    """'embedding', then 'block j' (with '(parent i)' for a destination) per residual layer."""
    labels = ["embedding"]
    for j, source in enumerate(sources[1:]):
        labels.append(f"block {j} (parent {source})" if destination else f"block {j}")
    return labels


def plan_of(model: nn.Module, plan: "SubclonePlan | Mapping[str, Any] | None" = None) -> "SubclonePlan | None":
    """The plan given, else the one a destination made by :func:`~subclone_viz.subclone` carries, else None."""

    if plan is None:
        plan = getattr(model, "subclone_info", {}).get("plan")
    if plan is None or isinstance(plan, SubclonePlan):
        return plan
    try:
        return SubclonePlan.from_dict(dict(plan))
    except (TypeError, ValueError) as error:
        raise PlanMismatchError(f"plan is not a subclone plan: {error}") from None


def check_plan(plan: "SubclonePlan", model: nn.Module, family: Family, name: str) -> None:
    """Refuse a plan whose family, block count or widths are not the model's."""
    dims = family.dims(model)
    wanted = plan.destination_dims
    if plan.family != family.name or (dims.layers, dims.hidden) != (wanted.layers, wanted.hidden):
        raise PlanMismatchError(
            f"the plan ({plan.family}, {wanted.layers} layers x hidden {wanted.hidden}) does not describe {name} "
            f"({family.name}, {dims.layers} layers x hidden {dims.hidden}); pass the plan it was cut by"
        )


def check_parent(plan: "SubclonePlan", parent: "Subject") -> None:
    """Refuse a plan made for another parent than ``parent`` (compared by fingerprint where one is known)."""

    dims = parent.family.dims(parent.module)
    if plan.family != parent.family.name or plan.parent_dims != dims.to_dict():
        raise PlanMismatchError(
            f"the plan was made for a {plan.family} parent of {plan.parent_dims}, not for {parent.name} "
            f"({parent.family.name}, {dims.to_dict()}); pass the destination's own parent"
        )
    fingerprint = parent_fingerprint(Parent(parent.module, parent.tokenizer, parent.family, parent.name))
    if not same_parent(plan.parent, fingerprint):
        raise PlanMismatchError(
            f"the plan was made for {plan.parent.get('name')!r}, whose weights differ from {parent.name}'s; "
            f"pass the destination's own parent"
        )


def subject(
    model: "Parent | nn.Module",
    family: Family | None = None,
    plan: "SubclonePlan | Mapping[str, Any] | None" = None,
    name: str | None = None,
    tokenizer: Any = None,
) -> Subject:
    """``model`` (a Parent, a destination or any supported model) as a :class:`Subject`, its plan checked."""

    if isinstance(model, Parent):
        module, family, tokenizer = model.model, family or model.family, tokenizer or model.tokenizer
        name = name or model.name
    elif isinstance(model, nn.Module):
        module = model
        family = family or family_of(model)
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "subclone_processor", None)
        name = name or type(model).__name__
    else:
        raise TypeError(f"expected a Parent or a model (torch.nn.Module), not {type(model).__name__}")
    plan = plan_of(module, plan)
    layers = len(family.blocks(module))
    if plan is not None:
        check_plan(plan, module, family, name)
        sources = [None, *plan.layers]
    else:
        sources = [None, *range(layers)]
    return Subject(module=module, family=family, tokenizer=tokenizer, name=name, plan=plan, sources=sources)


def subjects(
    models: "Mapping[str, Parent | nn.Module] | Sequence[Parent | nn.Module] | Parent | nn.Module",
) -> list[Subject]:
    """Several models by name (a mapping), or in order (names from each model); at least one."""
    if isinstance(models, Mapping):
        items = [subject(model, name=str(name)) for name, model in models.items()]
    elif isinstance(models, (list, tuple)):
        items = [subject(model) for model in models]
    elif isinstance(models, nn.Module) or hasattr(models, "family"):
        items = [subject(cast(Any, models))]
    else:
        raise TypeError(
            f"models must be a model, a list of models or a dict of name -> model, not {type(models).__name__}"
        )
    if not items:
        raise ValueError("no models given: pass one model, a list, or a dict of name -> model")
    names = [s.name for s in items]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name in {names}: pass a dict of distinct names -> models")
    return items


def text_tokenizer(item: Subject) -> Any:
    """The model's tokenizer, or a :class:`NoTokenizerError` saying how to give one."""
    tokenizer = item.tokenizer
    if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise NoTokenizerError(
            f"{item.name} has no tokenizer: load it with sv.load_parent(..., processor=tokenizer), or use a "
            f"destination made by sv.subclone (it keeps its parent's tokenizer)"
        )
    return tokenizer
