"""The orchestration every caller shares (subclone_viz.workflow): batches for a parent, quick mode, the default
destination and the random-init baseline; on tiny parents, a word-level tokenizer and a local corpus."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import subclone_viz as sv
from subclone_viz import workflow
from tiny import WORDS, tiny_batches, tiny_model, word_tokenizer


@pytest.fixture(scope="module")
def llama():
    return sv.load_parent(tiny_model("llama"), device="cpu", processor=word_tokenizer())


@pytest.fixture(scope="module")
def vit():
    return sv.load_parent(tiny_model("vit"), device="cpu", processor={"input_size": (1, 16, 16)})


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = random.Random(0)
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))
    return path


def test_text_batches_follow_the_budget_and_a_token_count(llama, corpus):
    quick = workflow.parent_batches(llama, "heldout", str(corpus), quick=True)
    batch = next(iter(quick))
    assert tuple(batch["input_ids"].shape) == (workflow.QUICK_BUDGET.batch_size, workflow.QUICK_BUDGET.seq_len)
    sized = workflow.parent_batches(llama, "train", str(corpus), seq_len=10, batch_size=3, tokens=61)
    assert len(sized) == 3  # ceil(61 / 30) batches of 3 x 10 tokens
    assert "train split" in sized.description


def test_image_parents_read_images_at_their_input_size(vit):
    batches = workflow.parent_batches(vit, "heldout", "builtin", batch_size=5, max_batches=2)
    batch = next(iter(batches))
    assert tuple(batch["pixel_values"].shape) == (5, 1, 16, 16)  # the digits, resized to the parent's 16 x 16
    assert len(batches) == 2 and batches.description.startswith("sklearn digits (heldout split")


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"tokens": 0}, ["tokens=0", ">= 1"]),
        ({"tokens": 10, "max_batches": 2}, ["tokens=10", "max_batches=2", "not both"]),
    ],
)
def test_bad_batch_arguments_are_refused(llama, corpus, kwargs, fragments):
    with pytest.raises(ValueError) as error:
        workflow.parent_batches(llama, "train", str(corpus), **kwargs)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_a_text_parent_without_a_tokenizer_is_refused_by_name():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    with pytest.raises(ValueError, match="has no tokenizer"):
        workflow.parent_batches(parent, "train")


def test_quick_mode_reads_the_environment_unless_told(monkeypatch):
    monkeypatch.setenv("SUBCLONE_VIZ_QUICK", "1")
    assert sv.quick_mode() and workflow.budget() is workflow.QUICK_BUDGET
    assert not sv.quick_mode(False) and workflow.budget(False) is workflow.DEFAULT_BUDGET
    monkeypatch.delenv("SUBCLONE_VIZ_QUICK")
    assert not sv.quick_mode() and sv.quick_mode(True)


def test_random_init_has_the_plan_shape_and_the_architecture_init(llama):
    prof = sv.profile(llama, tiny_batches("llama", count=1), progress=False)
    chosen = sv.plan(llama, prof, sv.DestinationSpec(layers=2, hidden=24), depth="metric")
    model = sv.random_init(llama, chosen, seed=3)
    subclone = sv.subclone(llama, chosen)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in subclone.state_dict().items()}
    again = sv.random_init(llama, chosen, seed=3)
    weights = dict(model.named_parameters())
    assert all(torch.equal(p, weights[name]) for name, p in again.named_parameters())  # the seed fixes it
    # Random, not sliced: nothing of the parent's embedding survives.
    parent_embedding = llama.model.get_input_embeddings().weight[:, chosen.residual]
    assert not torch.allclose(model.get_input_embeddings().weight, parent_embedding)


def test_random_init_of_a_spec_keeps_the_middle_depth_blocks(llama):
    spec = sv.DestinationSpec(layers=2, hidden=24)
    from_spec = sv.random_init(llama, spec, seed=0)
    from_plan = sv.random_init(llama, sv.plan(llama, None, spec, width="first", scaling="none"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(from_spec.parameters(), from_plan.parameters()))
    with pytest.raises(TypeError, match="SubclonePlan or a DestinationSpec"):
        sv.random_init(llama, {"layers": 2})


def test_parent_figures_are_the_shipped_ones_where_they_ship_and_measured_elsewhere(tmp_path):
    shipped = workflow.parent_figures("smollm2-135m")
    assert shipped.describe().startswith("shipped with subclone_viz")
    assert shipped.profile.num_layers == len(shipped.ablation.removed) == 30
    directory = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    measured = workflow.parent_figures(str(directory), quick=True)
    assert isinstance(measured, workflow.MeasuredFigures)
    assert measured.profile.tokens > 0 and measured.profile.num_layers == len(measured.ablation.removed) == 4
    assert measured.describe().startswith(f"measured now (no shipped figures for {directory})")
