"""Batches of tokens and images to profile a parent and train its subclone, with no download needed.

Subcloning needs data twice: a little to profile the parent (which FFN neurons and heads matter) and more
to train the destination. Both read plain re-iterable objects that yield dicts of CPU tensors, named
as Hugging Face models take them as keyword arguments. Iterating twice yields the same batches.

Text: :func:`text_batches` packs a corpus into full rows. Every document is tokenized without special
tokens (a BERT-style tokenizer would wrap each one in ``[CLS] ... [SEP]``), the documents are joined with
the tokenizer's EOS id (its SEP id when it has no EOS, nothing when it has neither), and the stream is
cut into contiguous ``seq_len`` chunks (the remainder dropped) that are grouped into batches. A tokenizer
that starts every text with BOS (Gemma's) belongs to a model that never saw text without it, so each of its
rows is BOS and ``seq_len - 1`` tokens of the stream (Gemma 3 270M scores about 3.5 nats on held-out rows
with BOS first, 5.6 without). Every row is full, so the attention mask is all ones. Token ids are cached as ``.npy`` files in
``tokens/`` under :func:`cache_dir`, keyed on the corpus, the split and the tokenizer.

Text sources:

* ``"builtin"``: Python's own documentation, which ships with every Python (about 2.1M characters on
  Python 3.11): the 79 help topics of ``pydoc_data.topics`` (documents ``"topics/<key>"``) and, per
  standard-library module, its module, class and function docstrings joined by blank lines (documents
  named by the module path relative to the stdlib, e.g. ``"json/decoder.py"``). The sources are parsed
  with :mod:`ast`, never imported; ``site-packages`` and the ``test``, ``tests``, ``idlelib``, ``lib2to3``
  and ``turtledemo`` directories are skipped. Documents come in sorted name order.
* a local path: a ``.txt`` file (one document), a directory of ``.txt`` files (one document each, named by
  their path relative to the directory) or a ``.jsonl`` file (one document per line, the text in
  ``text_field``, named ``"<file name>:<line number>"``). A string counts as a path when it exists or
  looks like one (starts with ``/``, ``.`` or ``~``, or ends in ``.txt``/``.jsonl``).
* anything else: a Hugging Face dataset name, read with ``datasets.load_dataset`` (needs
  ``pip install subclone_viz[datasets]`` and a hub connection or a local datasets cache).

The train/held-out split is fixed, so a held-out score never saw its text in training: a document is
held out when ``zlib.crc32(name.encode()) % 10 == 0`` (about 10% of the documents), else it is train.
A local source of a single document is split by tokens instead: its last 10% are held out. A Hugging Face
dataset's held-out split is its ``"validation"`` split, else its ``"test"`` split, else the crc32 rule
applied to the ``"train"`` split with documents named ``"<dataset name>:<row index>"``.

Images: :func:`image_batches` yields normalized ``pixel_values`` with integer ``labels``. Its sources are
``"digits"`` (scikit-learn's 1,797 8x8 grey digits, 10 classes; 20% of each class held out by a fixed
seed-0 permutation), a local ``root/<class name>/<image files>`` folder (split by the crc32 rule on the
path relative to ``root``; a file whose header is not an image's is skipped with one warning naming it, an
image that cannot be decoded later raises an error naming it) and Hugging Face image datasets.

Example::

    >>> from subclone_viz.data import image_batches, text_batches
    >>> digits = image_batches("digits", batch_size=32, split="heldout", image_size=16)
    >>> batch = next(iter(digits))
    >>> batch["pixel_values"].shape, batch["labels"].shape
    (torch.Size([32, 1, 16, 16]), torch.Size([32]))
    >>> digits.description
    'sklearn digits (heldout split, ... images, 16x16 grey)'
    >>> import subclone_viz as sv
    >>> tokenizer = sv.load_parent("smollm2-135m").tokenizer    # any Hugging Face tokenizer
    >>> tokens = text_batches("builtin", tokenizer, seq_len=128, batch_size=8)
    >>> next(iter(tokens))["input_ids"].shape
    torch.Size([8, 128])
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import logging
import os
import re
import sys
import sysconfig
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ._atomic import DamagedFileError, file_lock, note_rebuild, read_cache_file, write_cache_file
from .readers import register_reader

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["ImageBatches", "TextBatches", "cache_dir", "image_batches", "text_batches"]

log = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
BUILTIN_TEXT = "builtin"
DIGITS = "digits"

# Bump when the corpus extraction or the packing changes, so that stale token caches are not reused.
_CACHE_FORMAT = 2  # 2: files carry a size and CRC-32 trailer
# Tokenizing this pins down a tokenizer beyond its name: two tokenizers that split it alike are
# interchangeable for the cache.
_TOKENIZER_PROBE = "def subclone(parent):\n    return parent[:, :64]  # Größe, 尺寸, émoji 🙂\n\tDone."
_TOKENIZE_GROUP = 256  # documents per tokenizer call: bounds memory on large datasets, keeps batching fast
_HELDOUT_BUCKET = 10  # crc32 % 10 == 0 is held out
_SINGLE_DOCUMENT_TRAIN_FRACTION = 0.9
_STDLIB_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
)
_DOCUMENTED_NODES = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_LOCAL_TEXT_SUFFIXES = (".txt", ".jsonl")
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DIGITS_HELDOUT_FRACTION = 0.2
_DEFAULT_FOLDER_IMAGE_SIZE = 224


def cache_dir() -> Path:
    """The directory for cached token ids: ``$SUBCLONE_VIZ_CACHE`` if set, else ``~/.cache/subclone_viz``.

    It is created if missing.
    """
    configured = os.environ.get("SUBCLONE_VIZ_CACHE")
    directory = Path(configured).expanduser() if configured else Path.home() / ".cache" / "subclone_viz"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# --------------------------------------------------------------------------------------------------------
# Batching shared by text and images


def _batch_layout(num_items: int, batch_size: int, max_batches: int | None) -> tuple[int, int]:
    """(rows per batch, number of batches) for ``num_items`` rows.

    An incomplete last batch is dropped, unless no full batch exists: then all rows make one smaller batch.
    """
    rows = min(batch_size, num_items)
    num_batches = num_items // rows
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    return rows, num_batches


def _item_order(num_items: int, shuffle: bool, seed: int) -> torch.Tensor:
    """The order rows are served in, the same on every iteration."""
    if not shuffle:
        return torch.arange(num_items)
    return torch.from_numpy(np.random.default_rng(seed).permutation(num_items))


class TextBatches:
    """Packed token batches: iterating yields ``{"input_ids": (B, T), "attention_mask": (B, T)}``.

    Built by :func:`text_batches`. Re-iterable; every iteration yields the same batches.
    """

    def __init__(
        self,
        chunks: torch.Tensor,
        batch_size: int,
        max_batches: int | None,
        shuffle: bool,
        seed: int,
        corpus: str,
        split: str,
    ):
        """chunks: (N, T) int64 token ids, one packed row each; corpus: a readable name of the source."""
        self._chunks = chunks  # (N, T)
        self._order = _item_order(len(chunks), shuffle, seed)  # (N,)
        self.seq_len = chunks.shape[1]
        self.batch_size, self._num_batches = _batch_layout(len(chunks), batch_size, max_batches)
        self.tokens_per_batch = self.batch_size * self.seq_len
        order = f", rows shuffled with seed {seed}" if shuffle else ""
        self.description = f"{corpus} ({split} split, {self._num_batches * self.tokens_per_batch:,} tokens{order})"

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch_index in range(self._num_batches):
            rows = self._order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]  # (B,)
            input_ids = self._chunks[rows]  # (B, T), a copy: callers may modify it in place
            yield {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def __repr__(self) -> str:
        return f"TextBatches({self.description}, {len(self)} batches of {self.batch_size}x{self.seq_len})"


@dataclass(frozen=True)
class _ImageSet:
    """The images of one split: labels in memory, pixels read per batch (an image folder may not fit)."""

    labels: torch.Tensor  # (N,) int64
    read_pixels: Callable[[torch.Tensor], torch.Tensor]  # indices (B,) -> normalized (B, C, H, W) float32
    class_names: list[str]
    channels: int
    image_size: int
    name: str


class ImageBatches:
    """Image batches: iterating yields ``{"pixel_values": (B, C, H, W) float32, "labels": (B,) int64}``.

    Built by :func:`image_batches`. Re-iterable; every iteration yields the same batches.
    """

    def __init__(
        self, images: _ImageSet, batch_size: int, max_batches: int | None, shuffle: bool, seed: int, split: str
    ):
        self._images = images
        self._order = _item_order(len(images.labels), shuffle, seed)  # (N,)
        self.batch_size, self._num_batches = _batch_layout(len(images.labels), batch_size, max_batches)
        self.class_names = list(images.class_names)
        self.num_classes = len(self.class_names)
        self.channels = images.channels
        self.image_size = images.image_size
        colour = "grey" if self.channels == 1 else "RGB"
        self.description = (
            f"{images.name} ({split} split, {self._num_batches * self.batch_size:,} images, "
            f"{self.image_size}x{self.image_size} {colour})"
        )

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch_index in range(self._num_batches):
            rows = self._order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]  # (B,)
            yield {"pixel_values": self._images.read_pixels(rows), "labels": self._images.labels[rows]}

    def __repr__(self) -> str:
        return f"ImageBatches({self.description}, {len(self)} batches of {self.batch_size})"


# --------------------------------------------------------------------------------------------------------
# Argument checks and source resolution


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a split; valid splits: {', '.join(map(repr, SPLITS))}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; it must be an integer >= {minimum}")


def _check_common(split: str, batch_size: int, max_batches: int | None) -> None:
    _check_split(split)
    _check_int("batch_size", batch_size, 1)
    if max_batches is not None:
        _check_int("max_batches", max_batches, 1)


def _split_of(document_name: str) -> str:
    """The fixed split of a document: held out when the crc32 of its name is 0 modulo 10."""
    return "heldout" if zlib.crc32(document_name.encode()) % _HELDOUT_BUCKET == 0 else "train"


def _local_path(source: str | os.PathLike[str]) -> Path | None:
    """The local path ``source`` names, or None when it names a Hugging Face dataset.

    Raises FileNotFoundError for a path that looks local but does not exist: a typo should not send a
    request to the hub.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    looks_local = isinstance(source, os.PathLike) or (
        source.startswith(("/", ".", "~", "\\")) or source.lower().endswith(_LOCAL_TEXT_SUFFIXES)
    )
    if looks_local:
        raise FileNotFoundError(f"source {str(source)!r}: no such file or directory ({path.resolve()})")
    return None


def _import_datasets(source: str) -> Any:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            f"source={source!r} is read as a Hugging Face dataset name, which needs the `datasets` package: "
            f"pip install subclone_viz[datasets]. Or pass a local path, or a built-in source "
            f"('{BUILTIN_TEXT}' for text, '{DIGITS}' for images)."
        ) from error
    return datasets


def _hf_split(source: str, split: str) -> tuple[Any, str]:
    """(the rows of our ``split`` of Hugging Face dataset ``source``, a readable name for them)."""
    datasets = _import_datasets(source)
    try:
        available = datasets.get_dataset_split_names(source)
        if "train" not in available:
            raise ValueError(f"Hugging Face dataset {source!r} has no 'train' split; its splits: {available}")
        upstream_heldout = next((name for name in ("validation", "test") if name in available), None)
        if upstream_heldout is not None:
            upstream_split = "train" if split == "train" else upstream_heldout
            return datasets.load_dataset(source, split=upstream_split), f"{source} [{upstream_split}]"
        train = datasets.load_dataset(source, split="train")
    # The hub's connection errors, its offline-mode error and datasets' DatasetNotFoundError are OSErrors.
    except OSError as error:
        raise FileNotFoundError(
            f"could not load Hugging Face dataset {source!r}: it is not in the local datasets cache and the "
            f"hub could not be reached ({type(error).__name__}: {error}). Use a local .txt/.jsonl path or "
            f"directory, or a built-in source ('{BUILTIN_TEXT}' for text, '{DIGITS}' for images)."
        ) from error
    # No held-out split upstream: carve one out of "train" by the crc32 rule on the row index.
    rows = [index for index in range(len(train)) if _split_of(f"{source}:{index}") == split]
    return train.select(rows), f"{source} [train, crc32 {split}]"


# --------------------------------------------------------------------------------------------------------
# Text corpora


@functools.lru_cache(maxsize=1)
def _builtin_documents() -> tuple[tuple[str, str], ...]:
    """(name, text) of every document of the builtin corpus, in sorted name order."""
    from pydoc_data.topics import topics

    documents = {f"topics/{key}": text for key, text in topics.items() if text.strip()}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for directory, subdirectories, filenames in os.walk(stdlib):
        # Pruning in place stops os.walk from descending into third-party code and test suites.
        subdirectories[:] = [name for name in subdirectories if name not in _STDLIB_SKIPPED_DIRS]
        for filename in filenames:
            if filename.endswith(".py"):
                path = Path(directory, filename)
                text = _module_docstrings(path)
                if text:
                    documents[path.relative_to(stdlib).as_posix()] = text
    return tuple(sorted(documents.items()))


def _module_docstrings(path: Path) -> str:
    """The module, class and function docstrings of a Python file in source order, or "" if unparsable."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return ""  # e.g. a file written for another Python version: skipped, as documented
    definitions = (node for node in ast.walk(tree) if isinstance(node, _DOCUMENTED_NODES))
    nodes = [tree, *sorted(definitions, key=lambda node: (node.lineno, node.col_offset))]
    return "\n\n".join(docstring for node in nodes if (docstring := ast.get_docstring(node)))


def _local_text_documents(path: Path, text_field: str) -> list[tuple[str, str]]:
    """(name, text) of the non-blank documents of a local .txt file, directory of .txt files or .jsonl."""
    if path.is_dir():
        files = sorted(path.rglob("*.txt"), key=lambda file: file.relative_to(path).as_posix())
        if not files:
            raise FileNotFoundError(f"directory {path} holds no .txt files; a text directory needs *.txt files")
        documents = [(file.relative_to(path).as_posix(), _read_utf8(file)) for file in files]
    elif path.suffix.lower() == ".txt":
        documents = [(path.name, _read_utf8(path))]
    elif path.suffix.lower() == ".jsonl":
        documents = _jsonl_documents(path, text_field)
    else:
        raise ValueError(
            f"text source {path} is not supported: pass a .txt file, a directory of .txt files or a .jsonl file"
        )
    documents = [(name, text) for name, text in documents if text.strip()]
    if not documents:
        raise ValueError(f"text source {path} holds no text (every document is blank)")
    return documents


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"text file {path} is not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            f"save it as UTF-8"
        ) from error


def _jsonl_documents(path: Path, text_field: str) -> list[tuple[str, str]]:
    documents = []
    for line_number, line in enumerate(_read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{line_number} is not valid JSON: {error.msg}") from error
        if not isinstance(record, dict) or text_field not in record:
            fields = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"{path}:{line_number} has no text_field={text_field!r}; found {fields}. "
                f"Pass text_field= the name of the text field."
            )
        documents.append((f"{path.name}:{line_number}", str(record[text_field])))
    return documents


def _separator_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id put between documents: EOS, else SEP (BERT-style tokenizers), else none."""
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return tokenizer.sep_token_id


def _leading_bos(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The BOS id the tokenizer puts before every text, if it does (Gemma's does; GPT-2's and SmolLM2's do not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    ids = tokenizer.encode(_TOKENIZER_PROBE)  # with the special tokens it adds by default
    return bos if ids and ids[0] == bos else None


def _tokenize_documents(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """The token ids of ``texts`` joined by the separator id, as one uint32 stream (L,)."""
    separator = _separator_id(tokenizer)
    separator_ids = np.array([] if separator is None else [separator], dtype=np.uint32)
    pieces: list[np.ndarray] = []
    for start in range(0, len(texts), _TOKENIZE_GROUP):
        # No special tokens: the separator alone marks document boundaries. verbose=False silences the
        # "longer than model_max_length" warning: documents are cut into seq_len chunks afterwards.
        group = list(texts[start : start + _TOKENIZE_GROUP])
        for ids in tokenizer(group, add_special_tokens=False, verbose=False)["input_ids"]:
            if pieces:
                pieces.append(separator_ids)
            pieces.append(np.asarray(ids, dtype=np.uint32))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint32)


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    probe_ids = tokenizer.encode(_TOKENIZER_PROBE, add_special_tokens=False)
    return {
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(tokenizer),
        "probe": hashlib.sha256(json.dumps(probe_ids).encode()).hexdigest(),
        "separator": _separator_id(tokenizer),
    }


def _content_hash(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")  # so that ["ab", "c"] and ["a", "bc"] differ
    return digest.hexdigest()


def _cached_token_ids(
    corpus_key: dict[str, Any],
    label: str,
    tokenizer: PreTrainedTokenizerBase,
    texts: Callable[[], Sequence[str]],
) -> np.ndarray:
    """The token stream (L,) of ``texts()``, from the cache when ``corpus_key`` and the tokenizer match.

    ``texts`` is only called on a cache miss, so a cached builtin corpus skips parsing the stdlib. The cache file
    carries its own checksum; a damaged one is rebuilt with a warning. A lock keeps two processes from
    tokenizing the same corpus at once: the second waits and reads the first one's file.
    """
    key = {"format": _CACHE_FORMAT, "corpus": corpus_key, "tokenizer": _tokenizer_fingerprint(tokenizer)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    directory = cache_dir() / "tokens"
    directory.mkdir(exist_ok=True)
    path = directory / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', label)[:80]}-{digest}.npy"
    with file_lock(path):
        try:
            ids = read_token_cache(path)
            if ids is not None:
                return ids
        except DamagedFileError as error:
            note_rebuild("token ids", str(error))
        log.info("tokenizing %s (cached afterwards in %s)", label, path)
        ids = _tokenize_documents(texts(), tokenizer)
        buffer = io.BytesIO()
        np.save(buffer, ids)
        write_cache_file(path, buffer.getvalue())
    return ids


def read_token_cache(path: str | os.PathLike) -> np.ndarray | None:
    """The (L,) uint32 token ids cached in ``path``, or None when there is none; a damaged file raises
    :class:`~subclone_viz._atomic.DamagedFileError` naming it (the caller tokenizes again)."""
    path = Path(path)
    payload = read_cache_file(path)
    return None if payload is None else _token_array(path, payload)


def _token_array(path: Path, payload: bytes) -> np.ndarray:
    """The (L,) uint32 token ids of a checked cache file's payload."""
    try:
        ids = np.load(io.BytesIO(payload), allow_pickle=False)
    except ValueError as error:
        raise DamagedFileError(f"{path} is not a token array ({error})") from error
    if ids.ndim != 1 or ids.dtype != np.uint32:
        raise DamagedFileError(f"{path} holds a {ids.dtype} array of shape {ids.shape}, not (L,) uint32 token ids")
    return ids


def _split_token_ids(
    source: str | os.PathLike[str], split: str, tokenizer: PreTrainedTokenizerBase, text_field: str
) -> tuple[np.ndarray, str]:
    """(the token stream (L,) of ``split`` of ``source``, a readable name of the corpus)."""
    if source == BUILTIN_TEXT:

        def builtin_texts() -> list[str]:
            return [text for name, text in _builtin_documents() if _split_of(name) == split]

        # The corpus is whatever this Python's stdlib documents, hence the Python version in the key.
        corpus_key = {"source": BUILTIN_TEXT, "split": split, "python": sys.version}
        return _cached_token_ids(corpus_key, f"builtin-{split}", tokenizer, builtin_texts), "builtin python docs"

    path = _local_path(source)
    if path is None:
        rows, name = _hf_split(str(source), split)
        if text_field not in rows.column_names:
            raise ValueError(
                f"Hugging Face dataset {name} has no text_field={text_field!r}; its columns: {rows.column_names}"
            )
        fingerprint = getattr(rows, "_fingerprint", None)  # changes whenever the rows do
        corpus_key = {"source": str(source), "rows": name, "fingerprint": fingerprint, "text_field": text_field}
        return _cached_token_ids(corpus_key, f"hf-{name}", tokenizer, lambda: list(rows[text_field])), name

    documents = _local_text_documents(path, text_field)
    if len(documents) == 1:
        texts = [documents[0][1]]
        corpus_key = {"content": _content_hash(texts)}
        ids = _cached_token_ids(corpus_key, f"{path.name}-whole", tokenizer, lambda: texts)
        train_length = int(len(ids) * _SINGLE_DOCUMENT_TRAIN_FRACTION)
        return (ids[:train_length] if split == "train" else ids[train_length:]), path.name
    texts = [text for name, text in documents if _split_of(name) == split]
    corpus_key = {"content": _content_hash(texts)}
    return _cached_token_ids(corpus_key, f"{path.name}-{split}", tokenizer, lambda: texts), path.name


def text_batches(
    source: str | os.PathLike[str] = BUILTIN_TEXT,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seq_len: int = 128,
    batch_size: int = 8,
    split: str = "train",
    max_batches: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    text_field: str = "text",
) -> TextBatches:
    """Packed, fully masked token batches of a corpus (see the module docstring for sources and splits).

    Args:
        source: ``"builtin"`` (Python's documentation), a local ``.txt``/``.jsonl`` file or directory of
            ``.txt`` files, or a Hugging Face dataset name.
        tokenizer: any Hugging Face tokenizer; the parent's, so that token ids match its embeddings.
        seq_len: tokens per row (T), at least 2.
        batch_size: rows per batch (B); a corpus too short for one full batch gives one smaller batch.
        split: ``"train"`` or ``"heldout"``.
        max_batches: serve at most this many batches.
        shuffle: serve the rows in a permutation seeded by ``seed`` (the same on every iteration). The rows are
            ``seq_len`` chunks of the whole split, so the first batches of a shuffled stream sample every part of
            the corpus: the document-diverse calibration sample that the CLI, the report and the widgets profile
            on. Unshuffled, the first batches are the first documents in name order.
        seed: the permutation's seed.
        text_field: the text's field in ``.jsonl`` records and Hugging Face datasets.

    Raises:
        ValueError: a bad argument, or fewer than ``seq_len`` tokens in the split.
        FileNotFoundError: a local path that does not exist, or a Hugging Face dataset that cannot be loaded.
        ImportError: a Hugging Face dataset name without the ``datasets`` package installed.
    """
    if tokenizer is None:
        raise TypeError("text_batches() needs tokenizer=, e.g. the parent model's tokenizer")
    _check_common(split, batch_size, max_batches)
    _check_int("seq_len", seq_len, 2)
    ids, corpus = _split_token_ids(source, split, tokenizer, text_field)  # (L,)
    bos = _leading_bos(tokenizer)
    body = seq_len - (bos is not None)  # stream tokens per row
    num_chunks = len(ids) // body
    if num_chunks == 0:
        raise ValueError(
            f"{corpus} has {len(ids):,} tokens in its {split} split, fewer than seq_len={seq_len}: use a longer "
            f"corpus or a smaller seq_len (a local source of several documents splits them by a crc32 of "
            f"their names, so a handful of documents may leave the held-out split empty)"
        )
    chunks = torch.from_numpy(ids[: num_chunks * body].astype(np.int64)).view(num_chunks, body)  # (N, body)
    if bos is not None:
        chunks = torch.cat([torch.full((num_chunks, 1), bos, dtype=torch.int64), chunks], dim=1)  # (N, T)
    return TextBatches(chunks, batch_size, max_batches, shuffle, seed, corpus, split)


# --------------------------------------------------------------------------------------------------------
# Image sources


def _channel_stats(name: str, value: float | Sequence[float], channels: int) -> torch.Tensor:
    """A per-channel mean or std as a (C, 1, 1) tensor, broadcast from a single number if need be."""
    values = [float(value)] * channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != channels:
        raise ValueError(f"{name}={value!r} has {len(values)} values; the images have {channels} channel(s)")
    if name == "std" and min(values) <= 0:
        raise ValueError(f"std={value!r} must be positive")
    return torch.tensor(values, dtype=torch.float32).view(channels, 1, 1)


def _resize(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, image_size, image_size), bilinear."""
    size = (image_size, image_size)
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)


def _digits_heldout_mask(targets: np.ndarray) -> np.ndarray:
    """(N,) bool: 20% of each class, picked by a seed-0 permutation, so both splits see every digit."""
    rng = np.random.default_rng(0)
    heldout = np.zeros(len(targets), dtype=bool)
    for digit in np.unique(targets):
        members = np.flatnonzero(targets == digit)
        heldout[rng.permutation(members)[: round(len(members) * _DIGITS_HELDOUT_FRACTION)]] = True
    return heldout


def _digits_images(split: str, image_size: int | None, mean: Any, std: Any) -> _ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()  # ships with scikit-learn: no download
    in_split = _digits_heldout_mask(digits.target) == (split == "heldout")
    pixels = torch.from_numpy(digits.images[in_split]).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    if image_size is not None:
        pixels = _resize(pixels, image_size)
    pixels = (pixels - _channel_stats("mean", mean, 1)) / _channel_stats("std", std, 1)
    return _ImageSet(
        labels=torch.from_numpy(digits.target[in_split]).long(),
        read_pixels=lambda rows: pixels[rows],
        class_names=[str(digit) for digit in range(10)],
        channels=1,
        image_size=pixels.shape[-1],
        name="sklearn digits",
    )


def _pil_to_pixels(images: Sequence[Any], image_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """PIL images -> (B, 3, image_size, image_size) float32, normalized with (3, 1, 1) mean and std."""
    from PIL import Image

    arrays = [
        np.asarray(image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)) for image in images
    ]  # each (H, W, 3) uint8
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
    return (pixels - mean) / std


def _folder_images(root: Path, split: str, image_size: int, mean: Any, std: Any) -> _ImageSet:
    from PIL import Image

    if not root.is_dir():
        raise ValueError(f"image source {root} is not a directory; expected a root/<class name>/<images> tree")
    class_dirs = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"{root} has no class directories; expected a root/<class name>/<images> tree")
    files, labels, unreadable = [], [], []
    for label, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.rglob("*")):
            if file.suffix.lower() in _IMAGE_SUFFIXES and _split_of(file.relative_to(root).as_posix()) == split:
                if not _opens_as_image(file):
                    unreadable.append(file)
                    continue
                files.append(file)
                labels.append(label)
    if unreadable:
        shown = ", ".join(str(file.relative_to(root)) for file in unreadable[:5])
        log.warning(
            "skipping %d unreadable image file(s) of %s (%s%s)",
            len(unreadable),
            root,
            shown,
            ", ..." if len(unreadable) > 5 else "",
        )
    if not files:
        raise ValueError(
            f"{root} holds no images of the {split} split (extensions {sorted(_IMAGE_SUFFIXES)}; files are split "
            f"by a crc32 of their path relative to the root, so a handful may leave the held-out split empty)"
        )
    mean_tensor, std_tensor = _channel_stats("mean", mean, 3), _channel_stats("std", std, 3)

    def read_pixels(rows: torch.Tensor) -> torch.Tensor:
        images = []
        for row in rows.tolist():
            try:
                with Image.open(files[row]) as image:
                    images.append(image.convert("RGB"))  # a copy that outlives the closed file
            except (OSError, ValueError) as error:  # its header read, its pixels not: truncated or damaged
                raise DamagedFileError(f"image {files[row]} cannot be decoded ({error})") from error
        return _pil_to_pixels(images, image_size, mean_tensor, std_tensor)

    return _ImageSet(
        labels=torch.tensor(labels, dtype=torch.long),
        read_pixels=read_pixels,
        class_names=[class_dir.name for class_dir in class_dirs],
        channels=3,
        image_size=image_size,
        name=root.name,
    )


def _opens_as_image(file: Path) -> bool:
    """Whether ``file``'s header is an image's (a cheap check; the pixels are decoded per batch)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _hf_images(source: str, split: str, image_size: int, mean: Any, std: Any) -> _ImageSet:
    rows, name = _hf_split(source, split)
    image_column = next((column for column in ("image", "img") if column in rows.column_names), None)
    label_column = next((column for column in ("label", "labels") if column in rows.column_names), None)
    if image_column is None or label_column is None:
        raise ValueError(
            f"Hugging Face dataset {name} needs an 'image' or 'img' column and a 'label' or 'labels' column; "
            f"its columns: {rows.column_names}"
        )
    if len(rows) == 0:
        raise ValueError(f"Hugging Face dataset {name} has no rows")
    labels = torch.tensor(list(rows[label_column]), dtype=torch.long)
    label_feature = rows.features[label_column]
    class_names = (
        list(label_feature.names)
        if hasattr(label_feature, "names")
        else [str(label) for label in range(int(labels.max()) + 1)]
    )
    mean_tensor, std_tensor = _channel_stats("mean", mean, 3), _channel_stats("std", std, 3)

    def read_pixels(batch_rows: torch.Tensor) -> torch.Tensor:
        images = rows[batch_rows.tolist()][image_column]  # decoded to PIL by the dataset's Image feature
        return _pil_to_pixels(images, image_size, mean_tensor, std_tensor)

    return _ImageSet(
        labels=labels,
        read_pixels=read_pixels,
        class_names=class_names,
        channels=3,
        image_size=image_size,
        name=name,
    )


def image_batches(
    source: str | os.PathLike[str] = DIGITS,
    batch_size: int = 64,
    split: str = "train",
    image_size: int | None = None,
    max_batches: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> ImageBatches:
    """Normalized image batches with class labels (see the module docstring for sources and splits).

    Args:
        source: ``"digits"`` (scikit-learn's 8x8 digits), a local ``root/<class name>/<image files>``
            directory, or a Hugging Face image dataset name.
        batch_size: images per batch (B); fewer images than that give one smaller batch.
        split: ``"train"`` or ``"heldout"``.
        image_size: resize to image_size x image_size (bilinear); default 8 for digits (their own size),
            224 otherwise.
        max_batches: serve at most this many batches.
        shuffle: serve the images in a permutation seeded by ``seed`` (the same on every iteration).
        seed: the permutation's seed.
        mean, std: normalization of [0, 1] pixels, one number or one per channel; default 0.5/0.5 for digits,
            ImageNet's for RGB sources.

    Raises:
        ValueError: a bad argument, or a split without images.
        FileNotFoundError: a local path that does not exist, or a Hugging Face dataset that cannot be loaded.
        ImportError: a Hugging Face dataset name without the ``datasets`` package installed.
    """
    _check_common(split, batch_size, max_batches)
    if image_size is not None:
        _check_int("image_size", image_size, 1)
    if source == DIGITS:
        images = _digits_images(split, image_size, 0.5 if mean is None else mean, 0.5 if std is None else std)
    else:
        rgb_size = _DEFAULT_FOLDER_IMAGE_SIZE if image_size is None else image_size
        rgb_mean = _IMAGENET_MEAN if mean is None else mean
        rgb_std = _IMAGENET_STD if std is None else std
        path = _local_path(source)
        if path is None:
            images = _hf_images(str(source), split, rgb_size, rgb_mean, rgb_std)
        else:
            images = _folder_images(path, split, rgb_size, rgb_mean, rgb_std)
    return ImageBatches(images, batch_size, max_batches, shuffle, seed, split)


TOKEN_CACHE_READER = register_reader(
    "token-cache",
    read_token_cache,
    "a corpus's cached token ids (cache_dir()/tokens)",
    cache=True,
)
