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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .capture import BlockStep, capture_blocks, to_device

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
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def _as_batch(parent: "Parent", batch_or_text: str | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(batch_or_text, str):
        if parent.tokenizer is None or not callable(parent.tokenizer):
            raise ValueError(
                f"cannot tokenize text: the parent {parent.name!r} has no tokenizer; pass a batch dict instead"
            )
        encoded = parent.tokenizer(batch_or_text, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if isinstance(batch_or_text, dict):
        return batch_or_text
    raise TypeError(
        f"batch_or_text must be a string or a batch dict (input_ids / pixel_values), not {type(batch_or_text).__name__}"
    )


def _token_texts(parent: "Parent", input_ids: torch.Tensor | None) -> list[str] | None:
    tokenizer = parent.tokenizer
    if input_ids is None or tokenizer is None or not hasattr(tokenizer, "decode"):
        return None
    # Decoding one id at a time keeps a readable text per token (no byte-level markers such as 'Ġ').
    return [tokenizer.decode([int(i)]) for i in input_ids.tolist()]


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
        batch_or_text: a string (tokenized with ``parent.tokenizer``) or a batch dict as the data module yields.
        token_index: position in the sequence; negative counts from the end (-1: the last position).
        sequence_index: which sequence of the batch.
    """
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

    length = steps[0].input.shape[1]  # tokens the blocks see (for images: patches and prefix tokens)
    if not -length <= token_index < length:
        raise ValueError(f"token_index={token_index} is out of range: choose 0 to {length - 1} (or -{length} to -1)")
    token_index %= length
    mask = batch.get("attention_mask")
    if mask is not None and mask.shape[-1] == length and not bool(mask[0, token_index]):
        raise ValueError(f"token_index={token_index} is a padding position (attention_mask 0); pick a real token")

    def vector(t: torch.Tensor) -> np.ndarray:
        return t[0, token_index].double().cpu().numpy()  # (d,)

    states = [vector(steps[0].input)] + [vector(step.output) for step in steps]  # L+1 vectors of (d,)
    f_over_sum = []
    for step in steps:
        x, total = vector(step.input), vector(step.total)  # x + f(x): the pre-norm sum for post-norm blocks
        total_norm = np.linalg.norm(total)
        f_over_sum.append(np.linalg.norm(total - x) / total_norm if total_norm > 0 else float("nan"))
    input_ids = batch.get("input_ids")
    return TokenTrace(
        parent=parent.name,
        sequence_index=sequence_index,
        token_index=token_index,
        tokens=_token_texts(parent, None if input_ids is None else input_ids[0]),
        norms=np.array([np.linalg.norm(h) for h in states]),
        cos_to_previous=np.array([_cosine(a, b) for a, b in zip(states[:-1], states[1:])]),
        cos_to_final=np.array([_cosine(h, states[-1]) for h in states]),
        f_over_sum=np.array(f_over_sum),
    )
