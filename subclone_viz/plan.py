"""Planning a destination: which blocks, residual channels, FFN neurons and heads to keep.

A :class:`DestinationSpec` says what the user wants (layers and widths); :func:`plan` turns it, a profile and
the parent's shape into a :class:`SubclonePlan`: a plain, JSON-serializable record of exactly which indices
are kept and which weight scaling applies. The same inputs always give the same plan.

Strategies (method.md, sections 2 and 3):

* depth: ``"middle"`` (the paper: keep the first and last blocks, drop a contiguous middle run; growing
  depth duplicates middle blocks), ``"first"`` (the first N' blocks), ``"last"`` (the last N' blocks),
  ``"metric"`` (drop the blocks with the lowest ||f(x)||/||x+f(x)||), or an explicit list of parent blocks;
* width: ``"importance"`` (the paper: one shared ranking of the residual stream, a per-layer ranking of FFN
  neurons, whole heads ranked per layer, keeping whole KV groups), ``"uniform"`` (evenly spaced indices, no
  data: the weight-selection baseline), ``"first"`` (leading indices, no reordering: the paper's ablation);
* scaling: ``"sqrt"`` (the paper), ``"none"``, ``"calibrated"`` (match each linear layer's output std);
* importance: which estimator scores the channels, neurons and heads that ``width="importance"`` ranks
  (:mod:`subclone_viz.importance`: ``"paper"``, ``"layer_normalized"``, ``"norm_input"``, ``"norm_output"``,
  ``"weight_aware"``, ``"taylor"``).

Each strategy is a :class:`Strategy` (a named callable) in an open registry, :data:`DEPTHS`, :data:`WIDTHS` or
:data:`SCALING_METHODS`; :func:`register_strategy` adds one, and the name tuples ``DEPTH_STRATEGIES``,
``WIDTH_STRATEGIES`` and ``SCALINGS`` follow the registries.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, shuffle=True)
    >>> prof = sv.profile(parent, train, max_tokens=512, progress=False)
    >>> spec = sv.DestinationSpec(layers=20, hidden=384, ffn=1024, heads=6, kv_heads=2)
    >>> p = sv.plan(parent, prof, spec)      # depth="middle", width="importance", scaling="sqrt", importance="paper"
    >>> p.layers
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
    >>> p.summary()
    '20 layers (parent blocks [0, ..., 29]), hidden 384, FFN 1024, 6 heads / 2 KV; depth=middle, width=importance...'
    >>> path = p.save("plan.json")          # every kept index; sv.SubclonePlan.load(path) reads it back, checked
    >>> sv.SubclonePlan.load(path) == p
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ._version import __version__
from .errors import UserError
from .experts import (
    DEFAULT_EXPERT_ESTIMATOR,
    EXPERT_ESTIMATORS,
    expert_neuron_importance,
    expert_scores,
    select_experts,
    shared_neuron_importance,
)
from .families import Dims
from .families.moe import MoEFamily
from .importance import DEFAULT_ESTIMATOR, ESTIMATORS, estimate_importance
from .parent import parent_fingerprint
from .records import Record, register_record
from .registry import Registry
from .settings import PlanStrategy

if TYPE_CHECKING:
    from .parent import Parent
    from .profile import Profile


class SpecError(UserError, ValueError):
    """A destination spec the parent cannot give; the message names the valid choices."""


@dataclass(frozen=True)
class Strategy:
    """A named planning strategy.

    Attributes:
        name: what ``plan(..., depth=/width=/scaling=NAME)`` calls it.
        function: a depth strategy is ``(parent_layers, layers, profile) -> parent block indices``; a width
            strategy ``(parent, profile, dims, layers, importance) -> WidthChoice``; a scaling
            ``(parent, plan, destination, calibration_batches, batch_count) -> {parameter: factor}``, applied
            in place to the freshly sliced destination.
        needs_profile: it ranks by a profile (``plan`` then refuses ``profile=None``).
        needs_batches: a scaling that runs calibration batches (``subclone`` then refuses none).
        description: one line for listings.
    """

    name: str
    function: Callable[..., Any]
    needs_profile: bool = False
    needs_batches: bool = False
    description: str = ""


@dataclass
class WidthChoice:
    """The indices a width strategy keeps: residual channels, and per destination block FFN neurons, query
    heads and KV heads."""

    residual: list[int]
    ffn: list[list[int]]
    heads: list[list[int]]
    kv_heads: list[list[int]]


def _check_strategy(name: str, strategy: object) -> None:
    if not isinstance(strategy, Strategy) or strategy.name != name or not callable(strategy.function):
        raise TypeError(f"{name!r}: expected a plan.Strategy named {name!r} with a callable function, got {strategy!r}")


# The strategies by name, open to plugins: register_strategy(DEPTHS, Strategy("my-depth", function)).
DEPTHS: Registry[Strategy] = Registry("depth strategy", "subclone_viz.depth_strategies", check=_check_strategy)
WIDTHS: Registry[Strategy] = Registry("width strategy", "subclone_viz.width_strategies", check=_check_strategy)
SCALING_METHODS: Registry[Strategy] = Registry(
    "scaling",
    "subclone_viz.scalings",
    check=_check_strategy,
    declared={
        name: f"subclone_viz.subclone:{attribute}"
        for name, attribute in (("sqrt", "SQRT_SCALING"), ("none", "NO_SCALING"), ("calibrated", "CALIBRATED_SCALING"))
    },
)
# Their names, following later registrations (choices for the command line and the widgets).
DEPTH_STRATEGIES = DEPTHS.names()
WIDTH_STRATEGIES = WIDTHS.names()
SCALINGS = SCALING_METHODS.names()


_DEFAULTS = PlanStrategy()  # the strategies a plan uses unless told otherwise


def register_strategy(registry: Registry[Strategy], strategy: Strategy, replace: bool = False) -> Strategy:
    """Add ``strategy`` to one of :data:`DEPTHS`, :data:`WIDTHS` or :data:`SCALING_METHODS`."""
    return registry.register(strategy.name, strategy, replace=replace)


def _choices(values: Sequence[int], limit: int = 12) -> str:
    values = list(values)
    if len(values) <= limit:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[: limit // 2])) + ", ..., " + ", ".join(map(str, values[-3:]))


@dataclass(frozen=True)
class DestinationSpec:
    """What the destination should look like.

    Args:
        layers: a block count, or an explicit list of parent block indices (repeats duplicate blocks).
        hidden: residual width d'.
        ffn: FFN hidden width (default: the parent's FFN/hidden ratio times ``hidden``).
        heads: query heads (default: follows ``hidden``).
        kv_heads: key/value heads of grouped-query models (default: keeps the parent's queries per KV head).
        experts: routed experts kept in every MoE layer (default: all of the parent's).
        experts_per_tok: experts each token is routed to (default: the parent's, capped at ``experts``).
        expert_ffn: each expert's FFN width (default: the parent's expert width times hidden / parent hidden;
            Mixtral, OLMoE and gpt-oss store one width for both, so there it follows ``ffn``).
        shared_ffn: the shared expert's FFN width (Qwen2-MoE, DeepSeek-V3; default: proportional to hidden).
        q_lora_rank, kv_lora_rank: DeepSeek-V3's MLA ranks; they are kept whole, so only the parent's values
            are accepted (given to say so explicitly).
    """

    layers: int | tuple[int, ...] | list[int]
    hidden: int
    ffn: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    experts: int | None = None
    experts_per_tok: int | None = None
    expert_ffn: int | None = None
    shared_ffn: int | None = None
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None

    def __repr__(self) -> str:
        # The mixture-of-experts fields show only when set, so that a dense spec reads as it always has.
        dense = ("layers", "hidden", "ffn", "heads", "kv_heads")
        shown = [f"{name}={getattr(self, name)!r}" for name in dense]
        shown += [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name not in dense and getattr(self, f.name) is not None
        ]
        return f"DestinationSpec({', '.join(shown)})"

    def resolve(self, parent: Dims, heads_follow_hidden: bool) -> Dims:
        """The destination's full dims, or a :class:`SpecError` naming the valid range."""
        layers = self._layer_count(parent)
        hidden = self.hidden
        if not isinstance(hidden, (int, np.integer)) or not 1 <= hidden <= parent.hidden:
            raise SpecError(f"hidden={hidden!r} is out of range: choose 1 <= hidden <= {parent.hidden} (the parent's)")
        ratio = parent.queries_per_kv
        if heads_follow_hidden:
            valid = [h * parent.head_dim for h in range(1, parent.heads + 1)]
            if hidden % parent.head_dim:
                raise SpecError(
                    f"hidden={hidden} is not a multiple of the head size {parent.head_dim}: choose one of {_choices(valid)}"
                )
            heads = hidden // parent.head_dim
            if heads % ratio:  # grouped-query attention with heads that follow the width (OLMoE): whole groups
                whole = [h * parent.head_dim for h in range(ratio, parent.heads + 1, ratio)]
                raise SpecError(
                    f"hidden={hidden} gives {heads} heads, not a multiple of the parent's {ratio} queries per "
                    f"KV head: choose one of {_choices(whole)}"
                )
            if self.heads is not None and self.heads != heads:
                raise SpecError(
                    f"heads={self.heads} disagrees with hidden={hidden}: in this family heads = hidden / head size "
                    f"{parent.head_dim} = {heads}"
                )
        else:
            # head_dim is its own field here, but transformers still checks that heads divide the hidden width.
            valid = _llama_heads(parent, hidden)
            if not valid:
                widths = [h for h in range(1, parent.hidden + 1) if _llama_heads(parent, h)]
                raise SpecError(
                    f"hidden={hidden} is not a multiple of any valid head count "
                    f"({_choices(range(ratio, parent.heads + 1, ratio))}): choose one of {_choices(widths)}"
                )
            heads = self.heads
            if heads is None and self.kv_heads is not None:
                heads = self.kv_heads * ratio
            if heads is None:
                proportional = parent.heads * hidden / parent.hidden
                heads = min(valid, key=lambda h: (abs(h - proportional), h))
            if heads not in valid:
                raise SpecError(
                    f"heads={heads} is not valid with hidden={hidden}: choose one of {_choices(valid)} (at most the "
                    f"parent's {parent.heads}"
                    + (f", a multiple of its {ratio} queries per KV head" if ratio > 1 else "")
                    + ", dividing the hidden width)"
                )
        kv_heads = heads // ratio
        if self.kv_heads is not None and self.kv_heads != kv_heads:
            raise SpecError(
                f"kv_heads={self.kv_heads} does not keep the parent's {ratio} queries per KV head: with heads={heads} "
                f"use kv_heads={kv_heads}"
            )
        ffn = self.ffn if self.ffn is not None else max(1, int(round(parent.ffn * hidden / parent.hidden)))
        if not isinstance(ffn, (int, np.integer)) or not 1 <= ffn <= parent.ffn:
            raise SpecError(f"ffn={ffn!r} is out of range: choose 1 <= ffn <= {parent.ffn} (the parent's)")
        dims = Dims(
            layers=layers, hidden=int(hidden), ffn=int(ffn), heads=heads, kv_heads=kv_heads, head_dim=parent.head_dim
        )
        return self._resolve_experts(parent, dims)

    def _resolve_experts(self, parent: Dims, dims: Dims) -> Dims:
        """``dims`` with the expert counts and widths, checked against the parent's (dense parents: unchanged)."""
        given = {k: getattr(self, k) for k in ("experts", "experts_per_tok", "expert_ffn", "shared_ffn")}
        if not parent.experts:
            named = [f"{k}={v}" for k, v in given.items() if v is not None]
            if named:
                raise SpecError(f"{', '.join(named)}: this parent is dense, it has no experts to keep")
            return dims
        experts = parent.experts if self.experts is None else self.experts
        if not isinstance(experts, (int, np.integer)) or not 1 <= experts <= parent.experts:
            raise SpecError(
                f"experts={experts!r} is out of range: choose 1 <= experts <= {parent.experts} (the "
                f"parent's routed experts per layer)"
            )
        top_k = min(parent.experts_per_tok, experts) if self.experts_per_tok is None else self.experts_per_tok
        if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= experts:
            raise SpecError(
                f"experts_per_tok={top_k!r} is above the {experts} experts kept (or below 1): choose "
                f"1 <= experts_per_tok <= {experts}"
            )
        widths = {}
        for key, parent_width in (("expert_ffn", parent.expert_ffn), ("shared_ffn", parent.shared_ffn)):
            width = given[key]
            if width is None:
                width = max(1, int(round(parent_width * dims.hidden / parent.hidden))) if parent_width else 0
            elif not isinstance(width, (int, np.integer)) or not 1 <= width <= parent_width:
                raise SpecError(f"{key}={width!r} is out of range: choose 1 <= {key} <= {parent_width} (the parent's)")
            widths[key] = int(width)
        return dataclasses.replace(
            dims,
            experts=int(experts),
            experts_per_tok=int(top_k),
            mla_q_dim=parent.mla_q_dim,
            mla_kv_dim=parent.mla_kv_dim,
            **widths,
        )

    def _layer_count(self, parent: Dims) -> int:
        if isinstance(self.layers, (list, tuple)):
            if not self.layers:
                raise SpecError("layers=[] keeps no block: give at least one parent block index")
            bad = [i for i in self.layers if not isinstance(i, (int, np.integer)) or not 0 <= i < parent.layers]
            if bad:
                raise SpecError(f"layers contains {bad}: parent block indices run from 0 to {parent.layers - 1}")
            return len(self.layers)
        if not isinstance(self.layers, (int, np.integer)) or self.layers < 1:
            raise SpecError(
                f"layers={self.layers!r} is not valid: give a count of at least 1, or a list of block indices"
            )
        if self.layers > 2 * parent.layers:
            raise SpecError(
                f"layers={self.layers} is out of range: choose 1 <= layers <= {2 * parent.layers} (beyond the parent's "
                f"{parent.layers}, middle blocks are duplicated, at most doubling the depth), or a list of block indices"
            )
        return int(self.layers)


def spec_choices(parent: "Parent") -> dict[str, list[int]]:
    """The valid values of every spec field for this parent (for sliders and help texts)."""
    dims, family = parent.dims, parent.family
    ratio = dims.queries_per_kv
    if family.heads_follow_hidden:
        hidden = [h * dims.head_dim for h in range(1, dims.heads + 1)]
    else:
        hidden = [h for h in range(1, dims.hidden + 1) if _llama_heads(dims, h)]
    heads = list(range(ratio, dims.heads + 1, ratio))
    choices = {
        "layers": list(range(1, 2 * dims.layers + 1)),
        "hidden": hidden,
        "ffn": list(range(1, dims.ffn + 1)),
        "heads": heads,
        "kv_heads": [h // ratio for h in heads],
    }
    if dims.experts:  # mixtures of experts: expert counts the router can route (DeepSeek-V3: whole groups)
        groups = _moe(parent).expert_groups(parent.model)
        choices["experts"] = [
            e for e in range(1, dims.experts + 1) if e % groups == 0 and (groups == 1 or e >= 2 * groups)
        ]
        choices["experts_per_tok"] = list(range(1, dims.experts + 1))
        choices["expert_ffn"] = list(range(1, dims.expert_ffn + 1))
    return choices


@register_record
@dataclass
class SubclonePlan(Record):
    """Exactly what a destination keeps. Per-layer lists are indexed by destination layer.

    Saved with ``save(path)`` and read back, checked, with ``load(path)``; ``version`` is the subclone_viz
    release that made it (``library_version`` in the file, whose ``version`` is the record layout's).
    """

    FORMAT = "subclone_viz.plan"
    VERSION = 1
    READS = (0,)  # plans written before records were versioned: no format, ``version`` the library's

    parent: dict[str, Any]
    family: str
    parent_dims: dict[str, int]
    dims: dict[str, int]
    layers: list[int]
    residual: list[int]
    ffn: list[list[int]]
    heads: list[list[int]]
    kv_heads: list[list[int]]
    depth: str
    width: str
    scaling: str
    profile_source: str | None = None
    profile_tokens: int | None = None
    version: str = __version__
    notes: dict[str, Any] = field(default_factory=dict)
    importance: str = DEFAULT_ESTIMATOR
    # Mixtures of experts (empty for dense parents): per destination layer, the parent experts kept, in the
    # destination's order; each kept expert's FFN neurons; the shared expert's neurons.
    experts: list[list[int]] = field(default_factory=list)
    expert_ffn: list[list[list[int]]] = field(default_factory=list)
    shared_ffn: list[list[int]] = field(default_factory=list)
    experts_by: str | None = None

    @property
    def destination_dims(self) -> Dims:
        return Dims(**self.dims)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["library_version"] = data.pop("version")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SubclonePlan":
        """A plan from :meth:`to_dict` (e.g. read back from ``subclone.json``), checked: every field present,
        one index list per destination block, of the destination's widths, within the parent's."""
        if not isinstance(data, dict):
            raise ValueError(f"a plan is a JSON object, not a {type(data).__name__}")
        data = {key: value for key, value in data.items() if key != "format"}
        layout = data.pop("version", None)  # the record layout's number, or (older plans) the library's version
        data.setdefault("library_version", layout if isinstance(layout, str) else __version__)
        data["version"] = data.pop("library_version")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
        if missing or unknown:
            raise ValueError(f"not a subclone plan: missing {missing}, unknown {unknown}")
        plan = cls(**data)
        try:
            dims, parent = Dims(**plan.dims), Dims(**plan.parent_dims)
        except TypeError as error:
            raise ValueError(
                f"plan dims {plan.dims} / parent_dims {plan.parent_dims} are incomplete ({error})"
            ) from None
        per_block = {
            "ffn": (plan.ffn, dims.ffn, parent.ffn),
            "heads": (plan.heads, dims.heads, parent.heads),
            "kv_heads": (plan.kv_heads, dims.kv_heads, parent.kv_heads),
        }
        problems = []
        if len(plan.layers) != dims.layers or not all(0 <= i < parent.layers for i in plan.layers):
            problems.append(f"layers {plan.layers} for {dims.layers} blocks of a {parent.layers}-block parent")
        if len(plan.residual) != dims.hidden or not all(0 <= i < parent.hidden for i in plan.residual):
            problems.append(f"{len(plan.residual)} residual indices for hidden {dims.hidden} (parent {parent.hidden})")
        for name, (lists, width, parent_width) in per_block.items():
            if len(lists) != dims.layers or any(
                len(kept) != width or not all(0 <= i < parent_width for i in kept) for kept in lists
            ):
                problems.append(f"{name} indices are not {dims.layers} lists of {width} below {parent_width}")
        problems += _expert_problems(plan, dims, parent)
        if problems:
            raise ValueError(f"inconsistent subclone plan: {'; '.join(problems)}")
        return plan

    def summary(self) -> str:
        d = self.destination_dims
        return (
            f"{d.layers} layers (parent blocks {self.layers}), hidden {d.hidden}, FFN {d.ffn}, "
            f"{d.heads} heads / {d.kv_heads} KV; depth={self.depth}, width={self.width}"
            + (f" ({self.importance})" if self.width == "importance" else "")
            + f", scaling={self.scaling}"
            + (
                f"; {d.experts} of {self.parent_dims['experts']} experts (top-{d.experts_per_tok}, width "
                f"{d.expert_ffn}{', by ' + self.experts_by if self.experts_by else ''})"
                if d.experts
                else ""
            )
        )


def _expert_problems(plan: SubclonePlan, dims: Dims, parent: Dims) -> list[str]:
    """What is wrong with a read-back plan's expert lists (nothing for a dense plan)."""
    if not dims.experts:
        return [] if not (plan.experts or plan.expert_ffn) else ["expert lists in a plan without experts"]
    problems = []
    if len(plan.experts) != dims.layers or any(
        len(kept) != dims.experts or not all(0 <= e < parent.experts for e in kept) for kept in plan.experts
    ):
        problems.append(f"experts are not {dims.layers} lists of {dims.experts} below {parent.experts}")
    if len(plan.expert_ffn) != dims.layers or any(
        len(layer) != dims.experts
        or any(len(n) != dims.expert_ffn or not all(0 <= i < parent.expert_ffn for i in n) for n in layer)
        for layer in plan.expert_ffn
    ):
        problems.append(f"expert_ffn is not {dims.layers} x {dims.experts} lists of {dims.expert_ffn} neurons")
    if dims.shared_ffn and (
        len(plan.shared_ffn) != dims.layers
        or any(len(n) != dims.shared_ffn or not all(0 <= i < parent.shared_ffn for i in n) for n in plan.shared_ffn)
    ):
        problems.append(f"shared_ffn is not {dims.layers} lists of {dims.shared_ffn} neurons")
    return problems


def plan(
    parent: "Parent",
    profile: "Profile | None",
    spec: DestinationSpec,
    depth: str | Sequence[int] = _DEFAULTS.depth,
    width: str = _DEFAULTS.width,
    scaling: str = _DEFAULTS.scaling,
    importance: str = _DEFAULTS.importance,
    experts_by: str = DEFAULT_EXPERT_ESTIMATOR,
) -> SubclonePlan:
    """Choose the blocks and indices a destination keeps.

    Args:
        parent: the loaded parent.
        profile: its profile; needed by ``width="importance"`` and ``depth="metric"``, checked against the parent.
        spec: the destination's layers and widths.
        depth: ``"middle"``, ``"first"``, ``"last"``, ``"metric"``, or a list of parent block indices
            (:data:`DEPTHS`).
        width: ``"importance"``, ``"uniform"`` or ``"first"`` (:data:`WIDTHS`).
        scaling: ``"sqrt"``, ``"none"`` or ``"calibrated"`` (:data:`SCALING_METHODS`).
        importance: the estimator ``width="importance"`` ranks by (:data:`~subclone_viz.importance.ESTIMATORS`).
        experts_by: for mixture-of-experts parents, the expert-selection estimator ``width="importance"`` keeps
            the highest-scoring experts of each layer by (:data:`~subclone_viz.experts.EXPERT_ESTIMATORS`).
    """
    _check_strategies(profile, depth, width, scaling, importance)
    if experts_by not in EXPERT_ESTIMATORS:
        raise SpecError(
            f"experts_by={experts_by!r} is not an expert estimator: choose one of {', '.join(EXPERT_ESTIMATORS)}"
        )
    if profile is not None:
        profile.check_parent(parent)
    parent_dims = parent.dims
    spec = _with_depth_blocks(spec, depth)
    dims = _check_family_spec(parent, spec, spec.resolve(parent_dims, parent.family.heads_follow_hidden))
    if isinstance(spec.layers, (list, tuple)):
        layers, depth_name = [int(i) for i in spec.layers], "explicit"
    else:
        layers, depth_name = select_layers(parent_dims.layers, dims.layers, depth, profile), depth
    kept = WIDTHS[width].function(parent, profile, dims, layers, importance)
    moe = _plan_experts(parent, profile, dims, layers, width, experts_by) if dims.experts else {}
    return SubclonePlan(
        parent=parent_fingerprint(parent),
        family=parent.family.name,
        parent_dims=parent_dims.to_dict(),
        dims=dims.to_dict(),
        layers=layers,
        residual=_ints(kept.residual),
        ffn=[_ints(f) for f in kept.ffn],
        heads=[_ints(h) for h in kept.heads],
        kv_heads=[_ints(g) for g in kept.kv_heads],
        depth=depth_name,
        width=width,
        scaling=scaling,
        profile_source=profile.source if profile is not None else None,
        profile_tokens=profile.tokens if profile is not None else None,
        importance=importance,
        **moe,
    )


def _moe(parent: "Parent") -> MoEFamily:
    """The parent's adapter as a mixture-of-experts one (callers check ``dims.experts`` first)."""
    return cast(MoEFamily, parent.family)


def _check_family_spec(parent: "Parent", spec: DestinationSpec, dims: Dims) -> Dims:
    """What the family adds to a resolved spec: one width for FFN and experts where the config stores one,
    MLA ranks kept whole, expert counts its router can route (DeepSeek-V3's groups)."""
    family, parent_dims = parent.family, parent.dims
    config: Any = getattr(parent.model, "config", None)
    for key in ("q_lora_rank", "kv_lora_rank"):
        value, kept = getattr(spec, key), getattr(config, key, None)
        if value is not None and value != kept:
            raise SpecError(
                f"{key}={value!r} cuts an MLA rank: "
                + (
                    f"the parent's ranks are kept whole (q_lora_rank={config.q_lora_rank}, kv_lora_rank="
                    f"{config.kv_lora_rank}) because the latent is shared by every head and normalized as a whole; "
                    f"leave {key} unset"
                    if kept is not None
                    else "this parent has no multi-head latent attention"
                )
            )
    fields = getattr(family, "config_fields", {})
    if dims.experts and fields.get("expert_ffn") == fields.get("ffn"):  # one config value for both widths
        if spec.ffn is not None and spec.expert_ffn is not None and spec.ffn != spec.expert_ffn:
            raise SpecError(
                f"ffn={spec.ffn} and expert_ffn={spec.expert_ffn} differ, but {family.name} stores one "
                f"width ({fields['ffn']}) for its experts: give one of them"
            )
        width = spec.expert_ffn if spec.expert_ffn is not None else dims.ffn
        if not 1 <= width <= parent_dims.expert_ffn:
            raise SpecError(f"expert_ffn={width!r} is out of range: choose 1 <= expert_ffn <= {parent_dims.expert_ffn}")
        dims = dataclasses.replace(dims, ffn=width, expert_ffn=width)
    tied = _moe(parent).tied_shared_width(parent.model, dims) if dims.experts else None
    if tied is not None:
        if spec.shared_ffn is not None and spec.shared_ffn != tied:
            raise SpecError(
                f"shared_ffn={spec.shared_ffn} does not follow expert_ffn={dims.expert_ffn}: {family.name} "
                f"derives the shared experts' width from the experts' ({tied}); leave shared_ffn unset"
            )
        dims = dataclasses.replace(dims, shared_ffn=tied)
    if dims.experts:
        problem = _moe(parent).check_experts(parent_dims, dims, parent.model)
        if problem:
            raise SpecError(problem)
    return dims


def _plan_experts(
    parent: "Parent", profile: "Profile | None", dims: Dims, layers: list[int], width: str, experts_by: str
) -> dict[str, Any]:
    """The kept experts of every destination layer, each one's neurons, and the shared expert's neurons; a
    :class:`SpecError` when the kept blocks cannot keep their dense or MoE kind in the destination."""
    problem = _moe(parent).check_layer_sources(parent.model, layers)
    if problem:
        raise SpecError(problem)
    parent_dims = parent.dims
    groups = _moe(parent).expert_groups(parent.model)
    if width == "importance":
        profile = cast("Profile", profile)  # checked by _check_strategies: importance needs a profile
        try:
            scores = expert_scores(profile, experts_by)  # (L, E)
        except ValueError as error:
            raise SpecError(str(error)) from error
        neurons = expert_neuron_importance(profile)  # (L, E, F)
        shared = shared_neuron_importance(profile) if dims.shared_ffn else np.zeros((parent_dims.layers, 0))
        experts = [select_experts(scores[b], dims.experts, groups) for b in layers]
        expert_ffn = [
            [np.argsort(-neurons[b, e], kind="stable")[: dims.expert_ffn] for e in kept]
            for b, kept in zip(layers, experts)
        ]
        shared_ffn = (
            [np.argsort(-shared[b], kind="stable")[: dims.shared_ffn] for b in layers] if dims.shared_ffn else []
        )
    else:
        pick = _evenly_spaced if width == "uniform" else _leading
        per_group = parent_dims.experts // groups
        kept = [g * per_group + int(i) for g in range(groups) for i in pick(per_group, dims.experts // groups)]
        experts = [kept for _ in layers]
        expert_ffn = [[pick(parent_dims.expert_ffn, dims.expert_ffn) for _ in kept] for _ in layers]
        shared_ffn = [pick(parent_dims.shared_ffn, dims.shared_ffn) for _ in layers] if dims.shared_ffn else []
    return dict(
        experts=[_ints(e) for e in experts],
        expert_ffn=[[[int(i) for i in n] for n in layer] for layer in expert_ffn],
        shared_ffn=[[int(i) for i in n] for n in shared_ffn],
        experts_by=experts_by if width == "importance" else None,
    )


def _check_strategies(
    profile: "Profile | None", depth: str | Sequence[int], width: str, scaling: str, importance: str
) -> None:
    """Refuse unknown strategy names, and a missing profile for a strategy that ranks by one, before any work."""
    if not isinstance(width, str) or width not in WIDTHS:
        raise SpecError(f"width={width!r} is not a width strategy: choose one of {', '.join(WIDTHS)}")
    if not isinstance(scaling, str) or scaling not in SCALING_METHODS:
        raise SpecError(f"scaling={scaling!r} is not a scaling: choose one of {', '.join(SCALING_METHODS)}")
    if importance not in ESTIMATORS:
        raise SpecError(
            f"importance={importance!r} is not an importance estimator: choose one of {', '.join(ESTIMATORS)}"
        )
    if isinstance(depth, str) and depth not in DEPTHS:
        raise SpecError(
            f"depth={depth!r} is not a depth strategy: choose one of {', '.join(DEPTHS)} or a list of blocks"
        )
    kinds = (("width", width, WIDTHS), ("depth", depth, DEPTHS))
    ranking = [f"{kind}={name!r}" for kind, name, known in kinds if isinstance(name, str) and known[name].needs_profile]
    if profile is None and ranking:
        free = [
            f"{kind} {' / '.join(repr(n) for n in known if not known[n].needs_profile)}" for kind, _, known in kinds
        ]
        raise SpecError(
            f"{' and '.join(ranking)} rank by a profile: pass profile=sv.profile(parent, batches), or use "
            f"{' and '.join(free)}"
        )


def _with_depth_blocks(spec: DestinationSpec, depth: str | Sequence[int]) -> DestinationSpec:
    """``spec`` with the explicit blocks of a ``depth`` list as its layers (checked to agree with it)."""
    if isinstance(depth, str):
        return spec
    if isinstance(spec.layers, (list, tuple)):
        raise SpecError("give explicit blocks either as spec.layers or as depth, not both")
    if spec.layers != len(depth):
        raise SpecError(f"depth lists {len(depth)} blocks but spec.layers={spec.layers}; make them agree")
    return dataclasses.replace(spec, layers=list(depth))


def check_spec(parent: "Parent", spec: DestinationSpec, depth: str | Sequence[int] = "middle") -> Dims:
    """The destination's dims, or the :class:`SpecError` :func:`plan` would raise for this spec and depth.

    Reads only the parent's shape, never its weights or a profile, so a
    :func:`~subclone_viz.parent.parent_skeleton` (the architecture from the config alone) will do: a spec that
    cannot fit fails before any weights load. ``"metric"`` depth is checked as ``"first"``, which refuses the
    same shapes (deeper than the parent) with the same advice.
    """
    spec = _with_depth_blocks(spec, depth)
    dims = _check_family_spec(parent, spec, spec.resolve(parent.dims, parent.family.heads_follow_hidden))
    layers = list(spec.layers) if isinstance(spec.layers, (list, tuple)) else None
    if isinstance(depth, str) and layers is None:
        layers = select_layers(parent.dims.layers, dims.layers, "first" if depth == "metric" else depth)
    problem = _moe(parent).check_layer_sources(parent.model, layers or []) if dims.experts else None
    if problem:
        raise SpecError(problem)
    return dims


def select_layers(parent_layers: int, layers: int, depth: str, profile: "Profile | None" = None) -> list[int]:
    """The parent blocks a destination of ``layers`` blocks keeps, in order, by the depth strategy ``depth``."""
    return DEPTHS[depth].function(parent_layers, layers, profile)


def _no_growth(parent_layers: int, layers: int) -> None:
    if layers > parent_layers:
        raise SpecError(
            f"layers={layers} is deeper than the parent's {parent_layers}: growing depth duplicates middle blocks, "
            f"so use depth='middle' (or an explicit list of blocks)"
        )


def _depth_middle(n: int, layers: int, profile: "Profile | None") -> list[int]:
    if layers > n:
        return _grow_middle(n, layers)
    front = (layers + 1) // 2
    return list(range(front)) + list(range(n - (layers - front), n))


def _depth_first(n: int, layers: int, profile: "Profile | None") -> list[int]:
    _no_growth(n, layers)
    return list(range(layers))


def _depth_last(n: int, layers: int, profile: "Profile | None") -> list[int]:
    _no_growth(n, layers)
    return list(range(n - layers, n))


def _depth_metric(n: int, layers: int, profile: "Profile | None") -> list[int]:
    _no_growth(n, layers)
    scores = profile.block_metrics["f_over_sum"]
    return _ints(np.sort(np.argsort(-scores, kind="stable")[:layers]))


def _width_importance(
    parent: "Parent", profile: "Profile | None", dims: Dims, layers: list[int], importance: str
) -> WidthChoice:
    try:
        scores = estimate_importance(profile, parent, importance)
    except ValueError as error:  # statistics the profile lacks: a usage error, named as such
        raise SpecError(str(error)) from error
    heads_kv = [_select_heads(scores.heads[b], parent.dims, dims) for b in layers]
    return WidthChoice(
        residual=np.argsort(-scores.residual, kind="stable")[: dims.hidden],
        ffn=[np.argsort(-scores.ffn[b], kind="stable")[: dims.ffn] for b in layers],
        heads=[h for h, _ in heads_kv],
        kv_heads=[g for _, g in heads_kv],
    )


def _width_picking(pick: Callable[[int, int], np.ndarray]):
    """A data-free width strategy keeping ``pick(parent width, kept width)`` of every axis, the same in every
    block (whole KV groups, with their query heads)."""

    def width(parent: "Parent", profile: "Profile | None", dims: Dims, layers: list[int], importance: str):
        parent_dims = parent.dims
        groups = pick(parent_dims.kv_heads, dims.kv_heads)
        return WidthChoice(
            residual=pick(parent_dims.hidden, dims.hidden),
            ffn=[pick(parent_dims.ffn, dims.ffn) for _ in layers],
            heads=[_heads_of_groups(groups, parent_dims.queries_per_kv) for _ in layers],
            kv_heads=[groups for _ in layers],
        )

    return width


def _llama_heads(parent: Dims, hidden: int) -> list[int]:
    """Head counts a destination of this hidden width may have when head_dim is free: multiples of the
    queries per KV head, at most the parent's, that divide the width."""
    return [h for h in range(parent.queries_per_kv, parent.heads + 1, parent.queries_per_kv) if hidden % h == 0]


def _grow_middle(n: int, layers: int) -> list[int]:
    """Duplicate middle blocks, centre first, each next to its original; the first and last stay single."""
    middle = list(range(1, n - 1)) or list(range(n))
    centre = (n - 1) / 2
    order = sorted(middle, key=lambda i: (abs(i - centre), i))
    copies = [1] * n
    for k in range(layers - n):
        copies[order[k % len(order)]] += 1
    return [i for i in range(n) for _ in range(copies[i])]


def _select_heads(scores: np.ndarray, parent: Dims, dims: Dims) -> tuple[list[int], list[int]]:
    """Keep whole KV groups by the summed importance of their query heads; within a group, heads by score."""
    ratio = parent.queries_per_kv
    group_scores = scores.reshape(parent.kv_heads, ratio).sum(1)
    groups = np.argsort(-group_scores, kind="stable")[: dims.kv_heads]
    heads = []
    for g in groups:
        members = np.arange(g * ratio, (g + 1) * ratio)
        heads.extend(members[np.argsort(-scores[members], kind="stable")])
    return heads, groups


def _heads_of_groups(groups: Sequence[int], ratio: int) -> list[int]:
    return [g * ratio + r for g in groups for r in range(ratio)]


def _evenly_spaced(n: int, k: int) -> np.ndarray:
    return np.linspace(0, n - 1, k).round().astype(int)


def _leading(n: int, k: int) -> np.ndarray:
    return np.arange(k)


def _ints(values: Sequence[int]) -> list[int]:
    return [int(v) for v in values]


for _registry, _strategy in (
    (
        DEPTHS,
        Strategy(
            "middle",
            _depth_middle,
            description="the paper: keep the first and last blocks, drop a "
            "contiguous middle run (growing depth duplicates middle blocks)",
        ),
    ),
    (DEPTHS, Strategy("first", _depth_first, description="the first N' blocks")),
    (DEPTHS, Strategy("last", _depth_last, description="the last N' blocks")),
    (
        DEPTHS,
        Strategy(
            "metric",
            _depth_metric,
            needs_profile=True,
            description="drop the blocks with the lowest ||f(x)|| / ||x + f(x)||",
        ),
    ),
    (
        WIDTHS,
        Strategy(
            "importance",
            _width_importance,
            needs_profile=True,
            description="the paper: rank by an importance estimator",
        ),
    ),
    (WIDTHS, Strategy("uniform", _width_picking(_evenly_spaced), description="evenly spaced indices, no data")),
    (WIDTHS, Strategy("first", _width_picking(_leading), description="leading indices, no reordering")),
):
    register_strategy(_registry, _strategy)
