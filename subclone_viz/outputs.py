"""What models write and where they are worse: side-by-side generation and per-token losses.

:func:`generate` runs one prompt through several causal LMs (a parent, its subclone before training, trained
destinations), each with its own ``generate``, greedy or seeded sampling, and streams every new piece of text
to a callback as it is produced (the studio's "compare outputs" tab shows them as they come). The same seed
gives the same samples; a reorder-only destination writes the parent's greedy text token for token.

:func:`token_losses` scores one batch with every model: the loss of each token (the next-token loss of a
causal LM aligned to the token predicted; a masked LM's loss on the family's fixed, seeded 15% of masked
tokens; an image classifier's loss per image), so that a view can colour the text by where a destination is
worse than its parent.

Bad inputs (an empty prompt, ``max_new_tokens`` <= 0, a model without a tokenizer or one that cannot
generate) are refused before any model runs.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> out = sv.generate({"parent": parent}, "The capital of France is", max_new_tokens=4)
    >>> out.texts["parent"]
    ' Paris...'
    >>> batch = dict(parent.tokenizer(["The capital of France is Paris."], return_tensors="pt"))
    >>> losses = sv.token_losses({"parent": parent}, batch)
    >>> losses.losses["parent"].shape            # (sequences, positions); position 0 predicts nothing
    (1, 7)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .cut import NoTokenizerError, Subject, subjects, text_tokenizer
from .errors import UserError
from .lens import check_batch
from .records import Record, register_record

if TYPE_CHECKING:
    from .parent import Parent

    Models = Mapping[str, Parent | nn.Module] | Sequence[Parent | nn.Module] | Parent | nn.Module


class GenerationError(UserError, ValueError):
    """A generation request that cannot run: the message names the bad value and what would be valid."""


@register_record
@dataclass
class Generations(Record):
    """The text each model wrote for one prompt, with the settings that produced it."""

    FORMAT = "subclone_viz.generations"
    VERSION = 1

    prompt: str
    settings: dict[str, Any]  # max_new_tokens, do_sample, seed, temperature, top_k, top_p
    token_ids: dict[str, list[int]]  # per model, the new tokens (the prompt excluded)
    texts: dict[str, str]  # per model, the new text

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "settings": self.settings, "token_ids": self.token_ids, "texts": self.texts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Generations":
        token_ids = {str(k): [int(i) for i in v] for k, v in dict(data["token_ids"]).items()}
        texts = {str(k): str(v) for k, v in dict(data["texts"]).items()}
        if token_ids.keys() != texts.keys():
            raise ValueError(f"token_ids name {sorted(token_ids)} but texts name {sorted(texts)}")
        return cls(prompt=str(data["prompt"]), settings=dict(data["settings"]), token_ids=token_ids, texts=texts)


class _Streamer:
    """A ``generate`` streamer that passes each new piece of decoded text on as soon as it is whole (a piece
    that ends inside a multi-byte character waits for the next token)."""

    def __init__(self, tokenizer: Any, emit: Callable[[str], None] | None):
        self.tokenizer, self.emit = tokenizer, emit
        self.ids: list[int] = []
        self.shown = 0
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if (final or not text.endswith("\ufffd")) and len(text) > self.shown:
            piece, self.shown = text[self.shown :], len(text)
            if self.emit is not None:
                self.emit(piece)


def _emitter(on_token: Callable[[str, str], None] | None, name: str) -> Callable[[str], None] | None:
    """``on_token`` bound to one model's name."""
    if on_token is None:
        return None
    callback = on_token
    return lambda piece: callback(name, piece)


def _check_generation(items: list[Subject], prompt: Any, max_new_tokens: Any, tokenizer: Any) -> list[Any]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError(f"prompt={prompt!r} is empty: give some text to continue")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens={max_new_tokens!r} must be a whole number of tokens, at least 1")
    tokenizers = []
    for item in items:
        if item.family.task != "causal-lm" or not hasattr(item.module, "generate"):
            raise GenerationError(
                f"{item.name} ({item.family.description}, task {item.family.task!r}) does not generate text: "
                f"generate() takes causal language models"
            )
        if tokenizer is not None and item.tokenizer is None:
            item.tokenizer = tokenizer
        tokenizers.append(text_tokenizer(item))
    return tokenizers


def _sampling(do_sample: bool, seed: int, temperature: float, top_k: int | None, top_p: float | None) -> dict:
    if not isinstance(seed, (int, np.integer)):
        raise GenerationError(f"seed={seed!r} must be a whole number")
    if not do_sample:
        return {"do_sample": False}
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise GenerationError(f"temperature={temperature!r} must be a positive number")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise GenerationError(f"top_k={top_k!r} must be a whole number of at least 1 (or None)")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise GenerationError(f"top_p={top_p!r} must lie in (0, 1] (or None)")
    # 0 and 1.0 switch the generation config's own filters off, so only what was asked for applies.
    return {
        "do_sample": True,
        "temperature": float(temperature),
        "top_k": int(top_k or 0),
        "top_p": float(top_p or 1.0),
    }


@torch.no_grad()
def generate(
    models: Models,
    prompt: str,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    on_token: Callable[[str, str], None] | None = None,
    tokenizer: Any = None,
) -> Generations:
    """Continue ``prompt`` with every model, one after the other, each with its own ``generate``.

    Args:
        models: a dict of name -> Parent or model, a list of them, or one.
        prompt: the text to continue.
        max_new_tokens: at most this many new tokens per model (fewer when a model writes its end token).
        do_sample: sample instead of greedy decoding; seed: the seed each model's sampling starts from.
        temperature, top_k, top_p: sampling settings (None: no filter).
        on_token: called as ``on_token(name, text_piece)`` for each new piece of text, as it is produced.
        tokenizer: the tokenizer for models that came without one (default: each model's own).
    """
    items = subjects(models)
    tokenizers = _check_generation(items, prompt, max_new_tokens, tokenizer)
    settings = _sampling(do_sample, seed, temperature, top_k, top_p)
    token_ids, texts = {}, {}
    for item, tok in zip(items, tokenizers):
        module = item.module
        device = next(module.parameters()).device
        encoded = tok(prompt, return_tensors="pt")
        streamer = _Streamer(tok, _emitter(on_token, item.name))
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            generating: Any = module  # a transformers model (its generate is not typed as a module's)
            output = generating.generate(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
                max_new_tokens=int(max_new_tokens),
                pad_token_id=pad,
                streamer=streamer,
                **settings,
            )
        new = output[0, encoded["input_ids"].shape[1] :].tolist()
        token_ids[item.name] = [int(i) for i in new]
        texts[item.name] = tok.decode(new, skip_special_tokens=True)
    return Generations(
        prompt=prompt,
        settings={"max_new_tokens": int(max_new_tokens), "seed": int(seed), **settings},
        token_ids=token_ids,
        texts=texts,
    )


@register_record
@dataclass
class TokenLosses(Record):
    """The loss of every counted token (or image) of one batch for several models; NaN where none counts."""

    FORMAT = "subclone_viz.token_losses"
    VERSION = 1

    task: str
    tokens: list[list[str]] | None  # the batch's tokens as text per sequence (None for images)
    losses: dict[str, np.ndarray]  # per model, (B, T): the loss of predicting token t (images: (B, 1))

    @property
    def names(self) -> list[str]:
        return list(self.losses)

    def mean(self, name: str) -> float:
        return float(np.nanmean(self.losses[name]))

    def difference(self, name: str, reference: str | None = None) -> np.ndarray:
        """(B, T) loss of ``name`` minus the reference's (default: the first model); positive = worse."""
        reference = reference or self.names[0]
        for key in (name, reference):
            if key not in self.losses:
                raise KeyError(f"no model named {key!r}: choose one of {', '.join(self.losses)}")
        return self.losses[name] - self.losses[reference]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tokens": self.tokens,
            "losses": {
                k: [[None if np.isnan(x) else float(x) for x in row] for row in v] for k, v in self.losses.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenLosses":
        losses = {str(k): np.asarray(v, dtype=np.float64) for k, v in dict(data["losses"]).items()}
        shapes = {v.shape for v in losses.values()}
        if not losses or len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"losses must be one (sequences, positions) array per model, got shapes {shapes}")
        return cls(task=str(data["task"]), tokens=data["tokens"], losses=losses)


def _per_token_loss(item: Subject, batch: Mapping[str, torch.Tensor]) -> np.ndarray:
    """(B, T) loss of each counted token for one model (images: (B, 1)), NaN elsewhere."""
    module, family = item.module, item.family
    device = next(module.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if family.task == "image-classification":
        logits = family.logits(module, batch).float()  # (B, C)
        return nn.functional.cross_entropy(logits, batch["labels"], reduction="none")[:, None].cpu().numpy()
    input_ids = batch["input_ids"]  # (B, T)
    if family.task == "masked-lm":
        masker: Any = family  # a masked-LM family (BertFamily) masks the fixed, seeded tokens
        masked, attention_mask, labels = masker.masked_inputs(module, batch)
        logits = module(input_ids=masked, attention_mask=attention_mask).logits.float()  # (B, T, V)
    else:
        logits = family.logits(module, batch)[:, :-1].float()  # (B, T-1, V): position t predicts t+1
        mask = batch.get("attention_mask")
        labels = input_ids[:, 1:].clone()
        if mask is not None:
            labels[mask[:, 1:] == 0] = -100
    loss = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    loss = loss.masked_fill(labels == -100, torch.nan)
    if family.task == "causal-lm":  # align to the predicted token: position 0 is predicted by nothing
        loss = torch.cat([torch.full_like(loss[:, :1], torch.nan), loss], dim=1)
    return loss.cpu().numpy()


@torch.no_grad()
def token_losses(models: Models, batch: Mapping[str, torch.Tensor]) -> TokenLosses:
    """The per-token (per-image) loss of each model on ``batch``.

    Args:
        models: a dict of name -> Parent or model (the first is the reference of :meth:`TokenLosses.difference`),
            a list of them, or one. They must share a task and an output vocabulary.
        batch: input_ids/attention_mask (text) or pixel_values and labels (images).
    """
    items = subjects(models)
    first = items[0]
    tasks = {
        (item.family.task, getattr(item.family.output_module(item.module), "out_features", None)) for item in items
    }
    if len(tasks) != 1:
        raise ValueError(
            f"the models do not share a task and output width ({sorted(tasks, key=str)}): compare models of one parent"
        )
    if first.family.task not in ("causal-lm", "masked-lm", "image-classification"):
        raise ValueError(f"{first.name} ({first.family.description}) has no loss per token: it has no output head")
    for item in items:
        check_batch(item.family, batch, item.name)
    if first.family.task == "image-classification" and not isinstance(batch.get("labels"), torch.Tensor):
        raise ValueError("per-image losses need the batch's labels")
    losses = {}
    for item in items:
        was_training = item.module.training
        item.module.eval()
        try:
            losses[item.name] = _per_token_loss(item, batch)
        finally:
            item.module.train(was_training)
    tokens = None
    tok = next((item.tokenizer for item in items if hasattr(item.tokenizer, "decode")), None)
    if first.family.task != "image-classification" and tok is not None:
        tokens = [[tok.decode([int(i)]) for i in row] for row in batch["input_ids"].tolist()]
    return TokenLosses(task=first.family.task, tokens=tokens, losses=losses)


__all__ = ["GenerationError", "Generations", "NoTokenizerError", "TokenLosses", "generate", "token_losses"]
