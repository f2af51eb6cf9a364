"""Helpers of the fuzzed-reader suite (test_fuzz_readers.py): a valid file of every kind the library reads, made
from tiny random models, and the damage done to it.

Damage is plain data (:class:`Damage`), drawn by hypothesis from :func:`damages` and applied by :func:`apply`
to a fresh copy of a valid file: truncated at a byte, bytes flipped, emptied, replaced by a file of another
kind or by a directory; for a directory kind, the same done to one of its files, a file removed, or the whole
directory replaced by a file or an empty directory.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings

# Every fuzz test runs a fixed number of examples from a fixed seed: the same cases on every run and machine.
settings.register_profile(
    "subclone_viz-fuzz",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("subclone_viz-fuzz")
FILE_DAMAGE = ("truncate", "flip", "empty", "other-kind", "directory")
DIRECTORY_DAMAGE = ("remove-file", "whole-as-file", "whole-emptied")
_HEADER = 1024  # flips favour the first bytes, where formats keep their lengths and offsets


@dataclass(frozen=True)
class Damage:
    """One way of damaging a file kind's valid copy (its repr is the falsifying example hypothesis prints)."""

    how: str
    member: str = ""  # the file inside a directory kind ("" for the file or directory itself)
    at: int = 0  # truncate: the bytes kept
    flips: tuple[tuple[int, int], ...] = ()  # flip: (position, XOR mask) pairs
    other: str = ""  # other-kind / whole-as-file: the file kind whose valid bytes replace it


def files_of(path: Path) -> dict[str, int]:
    """Each file's path relative to ``path`` (a directory kind) with its size; ``{"": size}`` for a file."""
    if path.is_file():
        return {"": path.stat().st_size}
    return {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


@st.composite
def damages(draw, files: dict[str, int], directory: bool, others: list[str]) -> Damage:
    """A :class:`Damage` of a valid file whose files are ``files`` (see :func:`files_of`)."""
    hows = FILE_DAMAGE + (DIRECTORY_DAMAGE if directory else ())
    how = draw(st.sampled_from(hows))
    if how in ("whole-as-file", "whole-emptied"):
        return Damage(how, other=draw(st.sampled_from(others)) if how == "whole-as-file" else "")
    member = draw(st.sampled_from(sorted(files)))
    size = files[member]
    if how == "truncate" and size > 0:
        return Damage(how, member, at=draw(st.integers(0, size - 1)))
    if how == "flip" and size > 0:
        position = st.one_of(st.integers(0, min(size, _HEADER) - 1), st.integers(0, size - 1))
        flips = draw(
            st.lists(st.tuples(position, st.integers(1, 255)), min_size=1, max_size=8, unique_by=lambda flip: flip[0])
        )
        return Damage(how, member, flips=tuple(flips))
    if how == "other-kind":
        return Damage(how, member, other=draw(st.sampled_from(others)))
    return Damage("directory" if how in ("truncate", "flip") else how, member)  # an empty file: nothing to cut


def apply(damage: Damage, target: Path, other_files: dict[str, Path]) -> Path:
    """Damage the valid copy at ``target`` in place; returns the path that was damaged."""
    if damage.how == "whole-emptied":
        shutil.rmtree(target)
        target.mkdir()
        return target
    if damage.how == "whole-as-file":
        shutil.rmtree(target)
        target.write_bytes(other_files[damage.other].read_bytes())
        return target
    path = target / damage.member if damage.member else target
    if damage.how == "remove-file":
        path.unlink()
    elif damage.how == "directory":
        path.unlink()
        path.mkdir()
    elif damage.how == "other-kind":
        path.write_bytes(other_files[damage.other].read_bytes())
    else:
        data = bytearray(path.read_bytes())
        if damage.how == "truncate":
            del data[damage.at :]
        elif damage.how == "empty":
            data.clear()
        for position, mask in damage.flips:
            data[position] ^= mask
        path.write_bytes(bytes(data))
    return path


def copy_valid(source: Path, destination: Path) -> Path:
    """A copy of a valid file or directory, modification times kept (as caches' manifests recorded them)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        return Path(shutil.copytree(source, destination, symlinks=True))
    return Path(shutil.copy2(source, destination))


class WarningLines(logging.Handler):
    """Collects the warning lines the library logs while a damaged file is read."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> "WarningLines":
        logging.getLogger("subclone_viz").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("subclone_viz").removeHandler(self)


def write_tiny_gguf(model, tokens: list[str], path: Path) -> Path:
    """A tiny Llama (``tiny_model("llama")``) as an fp32 GGUF file with a SentencePiece-style vocabulary, the way
    llama.cpp's converter lays one out (tensor names of its llama architecture)."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocabulary = ["<unk>", "<s>", "</s>", *(f"\u2581{t}" for t in tokens)]
    vocabulary += [f"<0x{i:02X}>" for i in range(config.vocab_size - len(vocabulary))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocabulary)
    writer.add_token_scores([0.0] * len(vocabulary))
    writer.add_token_types([2, 3, 3] + [1] * len(tokens) + [6] * (len(vocabulary) - 3 - len(tokens)))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    roles = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ]
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    for block in range(config.num_hidden_layers):
        names.update({f"model.layers.{block}.{ours}.weight": f"blk.{block}.{theirs}.weight" for ours, theirs in roles})
    state = model.state_dict()
    for ours, theirs in names.items():
        writer.add_tensor(theirs, state[ours].detach().float().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
