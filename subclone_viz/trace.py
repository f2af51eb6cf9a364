"""One token's hidden state followed through the depth of a parent: how little each block changes it.

The profile averages the additive residual property over many tokens; a trace shows it for a single token.
One forward pass with hooks on the blocks records that token's vector at every residual layer (the embedding
output, then every block output) and, per block, how large the block's update f(x) is next to x + f(x).
For post-norm blocks (BERT) the update is measured on the pre-norm sum, as in the profile.

Per residual layer l = 0..L: ``norms[l]`` = ||h_l||, ``cos_to_final[l]`` = cos(h_l, h_L). Per block i = 0..L-1:
``cos_to_previous[i]`` = cos(h_i, h_{i+1}) (the block's input against its output) and ``f_over_sum[i]`` =
||f(x)|| / ||x + f(x)||. In a pretrained model the cosines stay close to 1 through the middle of the network.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> trace = sv.token_trace(parent, "The quick brown fox jumps over the lazy dog.", token_index=-2)
    >>> trace.token
    ' dog'
    >>> trace.tokens                    # for a token picker
    ['The', ' quick', ' brown', ' fox', ' jumps', ' over', ' the', ' lazy', ' dog', '.']
    >>> trace.cos_to_previous.shape     # cosine between each block's input and output
    (30,)
    >>> emoji = sv.token_trace(parent, "Hi 😀", token_index=-1)   # an emoji is four bytes over two tokens
    >>> emoji.tokens, emoji.spans       # the bytes of a split character, and the text each token stands for
    (['Hi', ' <F0><9F><98>', '<80>'], ['Hi', ' 😀', '😀'])
    >>> sv.token_trace(parent, "", token_index=-1)
    Traceback (most recent call last):
    ...
    subclone_viz.trace.TraceInputError: the text is empty (''): type a sentence to trace
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .capture import BlockStep, capture_blocks, to_device
from .errors import UserError

if TYPE_CHECKING:
    from .parent import Parent


@dataclass
class TokenTrace:
    """One token's hidden state through depth. Residual layers are 0 (embedding output) to L (last block)."""

    parent: str
    sequence_index: int
    token_index: int
    tokens: list[str] | None  # the sequence's tokens as text (None without a tokenizer, e.g. images)
    norms: np.ndarray  # (L+1,) ||h_l||
    cos_to_previous: np.ndarray  # (L,) cos(h_i, h_{i+1}): block i's input against its output
    cos_to_final: np.ndarray  # (L+1,) cos(h_l, h_L)
    f_over_sum: np.ndarray  # (L,) ||f(x)|| / ||x + f(x)|| of block i for this token
    spans: list[str] | None = None  # the stretch of the text each token stands for (None without offsets)

    @property
    def num_layers(self) -> int:
        return len(self.f_over_sum)

    @property
    def token(self) -> str | None:
        """The traced token's text, when the sequence came with a tokenizer."""
        return None if self.tokens is None else self.tokens[self.token_index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "sequence_index": self.sequence_index,
            "token_index": self.token_index,
            "tokens": self.tokens,
            "norms": self.norms.tolist(),
            "cos_to_previous": self.cos_to_previous.tolist(),
            "cos_to_final": self.cos_to_final.tolist(),
            "f_over_sum": self.f_over_sum.tolist(),
            "spans": self.spans,
        }


class TraceInputError(UserError, ValueError):
    """A text or position :func:`token_trace` cannot follow: empty, with no tokens, or out of range."""


def _as_batch(parent: "Parent", batch_or_text: str | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(batch_or_text, str):
        if parent.tokenizer is None or not callable(parent.tokenizer):
            raise ValueError(
                f"cannot tokenize text: the parent {parent.name!r} has no tokenizer; pass a batch dict instead"
            )
        if not batch_or_text.strip():
            raise TraceInputError(f"the text is empty ({batch_or_text!r}): type a sentence to trace")
        encoded = parent.tokenizer(batch_or_text, return_tensors="pt")
        if encoded["input_ids"].shape[-1] == 0:
            raise TraceInputError(f"the text {batch_or_text[:40]!r} has no tokens for this tokenizer: type words")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if isinstance(batch_or_text, dict):
        return batch_or_text
    raise TypeError(
        f"batch_or_text must be a string or a batch dict (input_ids / pixel_values), not {type(batch_or_text).__name__}"
    )


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet read backwards: the printable character that stands for each byte -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_ins[chr(byte)] = byte
        else:
            stand_ins[chr(256 + extra)] = byte
            extra += 1
    return stand_ins


def _token_bytes(tokenizer: Any, token_id: int) -> bytes | None:
    """The raw bytes of one token: a byte-fallback piece ('<0xF0>') or a byte-level BPE piece ('ĠðŁĺ')."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str):
        return None
    fallback = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
    if fallback:
        return bytes([int(fallback.group(1), 16)])
    stand_ins = _byte_decoder()
    return bytes(stand_ins[c] for c in piece) if piece and all(c in stand_ins for c in piece) else None


def readable_token(tokenizer: Any, token_id: int) -> str:
    """One token's text as a reader can read it: its decoded text, except that the bytes of a character split
    across tokens (an emoji in a byte-level vocabulary) show as ``<F0><9F>`` rather than as '\ufffd'."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" not in text or not hasattr(tokenizer, "convert_ids_to_tokens"):
        return text
    raw = _token_bytes(tokenizer, int(token_id))
    if raw is None:
        return text
    # surrogateescape keeps every byte that is not part of a whole UTF-8 character as U+DC80..U+DCFF.
    return "".join(
        f"<{ord(c) - 0xDC00:02X}>" if 0xDC80 <= ord(c) <= 0xDCFF else c
        for c in raw.decode("utf-8", errors="surrogateescape")
    )


def _token_texts(parent: "Parent", input_ids: torch.Tensor | None) -> list[str] | None:
    tokenizer = parent.tokenizer
    if input_ids is None or tokenizer is None or not hasattr(tokenizer, "decode"):
        return None
    # Decoding one id at a time keeps a readable text per token (no byte-level markers such as 'Ġ').
    return [readable_token(tokenizer, int(i)) for i in input_ids.tolist()]


def _token_spans(parent: "Parent", text: str | dict, count: int) -> list[str] | None:
    """The stretch of ``text`` each token stands for (a fast tokenizer's offsets), or None."""
    if not isinstance(text, str):
        return None
    try:
        offsets = parent.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):  # a slow tokenizer keeps no offsets
        return None
    return [text[start:end] for start, end in offsets] if len(offsets) == count else None


@dataclass
class _Pass:
    """One forward pass's residual states of one sequence, as float64 arrays of (T, d) per block."""

    inputs: list[np.ndarray]  # block i's input x
    totals: list[np.ndarray]  # block i's x + f(x)
    outputs: list[np.ndarray]  # what block i passes on
    batch: dict[str, torch.Tensor]

    @property
    def length(self) -> int:
        return self.inputs[0].shape[0]

    def measures(self) -> dict[str, np.ndarray]:
        """Every position's measures at once: norms and cos_to_final (L+1, T), cos_to_previous and f_over_sum
        (L, T). A zero vector's cosine or ratio is NaN."""
        states = np.stack([self.inputs[0], *self.outputs])  # (L+1, T, d)
        norms = np.linalg.norm(states, axis=-1)  # (L+1, T)
        inputs, totals = np.stack(self.inputs), np.stack(self.totals)  # (L, T, d)
        total_norms = np.linalg.norm(totals, axis=-1)  # (L, T)
        with np.errstate(divide="ignore", invalid="ignore"):
            return {
                "norms": norms,
                "cos_to_previous": _nan_where_zero(
                    np.einsum("ltd,ltd->lt", states[:-1], states[1:]), norms[:-1] * norms[1:]
                ),
                "cos_to_final": _nan_where_zero(np.einsum("ltd,td->lt", states, states[-1]), norms * norms[-1]),
                "f_over_sum": _nan_where_zero(np.linalg.norm(totals - inputs, axis=-1), total_norms),
            }


def _nan_where_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _forward(parent: "Parent", batch_or_text: str | dict[str, torch.Tensor], sequence_index: int) -> tuple[_Pass, int]:
    """Run one sequence of the batch through ``parent`` with block hooks; (its states, the sequence index)."""
    batch = _as_batch(parent, batch_or_text)
    first = batch.get("input_ids", batch.get("pixel_values"))
    if first is None:
        raise ValueError(f"the batch has neither input_ids nor pixel_values (keys: {sorted(batch)})")
    if not -first.shape[0] <= sequence_index < first.shape[0]:
        raise ValueError(f"sequence_index={sequence_index} is out of range: the batch holds {first.shape[0]} sequences")
    sequence_index %= first.shape[0]
    # One sequence is enough: run only it, so a long batch costs a single row's forward pass.
    batch = {k: v[sequence_index : sequence_index + 1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    family = parent.family
    steps: list[BlockStep] = []
    was_training = parent.model.training
    parent.model.eval()
    try:
        with capture_blocks(family, parent.model, on_block=steps.append):
            family.logits(parent.model, to_device(batch, parent.input_device))
    finally:
        parent.model.train(was_training)
    if len(steps) != len(family.blocks(parent.model)):
        raise RuntimeError("a tracing hook never fired: the model's forward skipped a block")

    def states(t: torch.Tensor) -> np.ndarray:
        return t[0].double().cpu().numpy()  # (T, d)

    return _Pass(
        [states(s.input) for s in steps], [states(s.total) for s in steps], [states(s.output) for s in steps], batch
    ), sequence_index


def _trace_at(
    parent: "Parent",
    run: _Pass,
    measures: dict[str, np.ndarray],
    token_index: int,
    sequence_index: int,
    tokens: list[str] | None,
    spans: list[str] | None,
) -> TokenTrace:
    length = run.length  # tokens the blocks see (for images: patches and prefix tokens)
    if not -length <= token_index < length:
        raise TraceInputError(
            f"token_index={token_index} is out of range: choose 0 to {length - 1} (or -{length} to -1)"
        )
    token_index %= length
    mask = run.batch.get("attention_mask")
    if mask is not None and mask.shape[-1] == length and not bool(mask[0, token_index]):
        raise TraceInputError(f"token_index={token_index} is a padding position (attention_mask 0); pick a real token")

    return TokenTrace(
        parent=parent.name,
        sequence_index=sequence_index,
        token_index=token_index,
        tokens=tokens,
        **{name: values[:, token_index].copy() for name, values in measures.items()},
        spans=spans,
    )


def _tokens_of(parent: "Parent", run: _Pass, batch_or_text: str | dict) -> tuple[list[str] | None, list[str] | None]:
    input_ids = run.batch.get("input_ids")
    tokens = _token_texts(parent, None if input_ids is None else input_ids[0])
    return tokens, (_token_spans(parent, batch_or_text, len(tokens)) if tokens is not None else None)


@torch.no_grad()
def token_trace(
    parent: "Parent",
    batch_or_text: str | dict[str, torch.Tensor],
    token_index: int,
    sequence_index: int = 0,
) -> TokenTrace:
    """Follow one token's hidden state through every block of ``parent`` (one forward pass).

    Args:
        parent: a loaded parent.
        batch_or_text: a string (tokenized with ``parent.tokenizer``; an empty one is refused) or a batch dict
            as the data module yields.
        token_index: position in the sequence; negative counts from the end (-1: the last position).
        sequence_index: which sequence of the batch.
    """
    run, sequence_index = _forward(parent, batch_or_text, sequence_index)
    tokens, spans = _tokens_of(parent, run, batch_or_text)
    return _trace_at(parent, run, run.measures(), token_index, sequence_index, tokens, spans)


@torch.no_grad()
def token_traces(
    parent: "Parent", batch_or_text: str | dict[str, torch.Tensor], sequence_index: int = 0
) -> list[TokenTrace]:
    """The trace of every position of one sequence, from a single forward pass (a token picker's cache).

    Padding positions are left out; ``traces[i].token_index`` says which position each one follows.
    """
    run, sequence_index = _forward(parent, batch_or_text, sequence_index)
    tokens, spans = _tokens_of(parent, run, batch_or_text)
    mask = run.batch.get("attention_mask")
    positions = [i for i in range(run.length) if mask is None or mask.shape[-1] != run.length or bool(mask[0, i])]
    measures = run.measures()
    return [_trace_at(parent, run, measures, i, sequence_index, tokens, spans) for i in positions]
