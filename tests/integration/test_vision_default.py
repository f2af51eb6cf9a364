"""The embedded vision parent end to end: the digits ViT trains (in the test session's cache), reloads from
its cache, and a half-width subclone trains next to a random init with accuracy curves."""

import json
import os

import pytest
import torch

import subclone_viz as sv
from subclone_viz.vision import VIT_DIGITS_NOTE, vit_digits_dir, vit_digits_history, vit_digits_parent

pytestmark = pytest.mark.slow
ONE_TORCH_THREAD = True  # a 1.2M-parameter ViT trains fastest on one thread


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """Trained in the session's cache (the one tests/conftest.py gives every test), never the home cache."""
    with pytest.MonkeyPatch.context() as patch:
        if "SUBCLONE_VIZ_CACHE" not in os.environ:
            patch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield vit_digits_parent(device="cpu", progress=False)


@pytest.fixture(scope="module")
def heldout():
    return sv.image_batches("digits", batch_size=512, split="heldout")


def test_digits_vit_is_trained_here_and_good(parent, heldout):
    training = parent.info["training"]
    print(
        f"\ndigits ViT: {training['seconds']} s, {training['steps']} steps, "
        f"held-out accuracy {training['heldout_accuracy']:.3f}"
    )
    assert training["heldout_accuracy"] > 0.9
    assert "trained here on scikit-learn's 8x8 digits" in parent.description
    assert parent.info["note"] == VIT_DIGITS_NOTE
    assert parent.family.name == "vit" and parent.dims.hidden == 128 and parent.dims.layers == 6
    # The reported accuracy is the cached model's own.
    assert sv.evaluate(parent.model, parent.family, heldout).accuracy == pytest.approx(training["heldout_accuracy"])
    assert vit_digits_history()["evals"][-1]["accuracy"] == training["heldout_accuracy"]
    config = json.loads((vit_digits_dir() / "config.json").read_text())
    assert config["description"] == VIT_DIGITS_NOTE and config["model_args"]["img_size"] == [8, 8]
    assert (vit_digits_dir() / "model.safetensors").is_file()


def test_second_load_reads_the_cache(parent):
    before = (vit_digits_dir() / "training.json").read_text()
    again = sv.load_parent("vit-digits", device="cpu")
    assert (vit_digits_dir() / "training.json").read_text() == before
    torch.testing.assert_close(again.model.state_dict(), parent.model.state_dict())
    assert list(again.processor["mean"]) == [0.5] and tuple(again.processor["input_size"]) == (1, 8, 8)


def test_subclone_trains_next_to_random_init_with_accuracy_curves(parent, heldout):
    train_batches = sv.image_batches("digits", batch_size=64, shuffle=True)
    spec = sv.DestinationSpec(layers=6, hidden=64)
    result = sv.compare(parent, spec, train_batches, steps=40, eval_batches=heldout, eval_every=10, progress=False)
    for row in result.summary_table():
        print(
            f"\n{row['init']}: accuracy {row['initial_accuracy']:.3f} -> {row['final_accuracy']:.3f}, "
            f"loss {row['initial_loss']:.3f} -> {row['final_loss']:.3f}, speedup {row['speedup']}"
            f"{' (lower bound)' if row['speedup_lower_bound'] else ''}"
        )
    random, subclone = result.histories["random"], result.histories["subclone"]
    for history in (random, subclone):
        assert [r.step for r in history.evals] == [0, 10, 20, 30, 40]
        assert all(0.0 <= r.accuracy <= 1.0 for r in history.evals)
    assert result.plans["subclone"]["dims"]["hidden"] == 64 and result.plans["subclone"]["dims"]["heads"] == 2
    # The subclone inherits what the parent learned; random init starts near chance (10 classes).
    assert random.evals[0].accuracy < 0.25
    assert subclone.evals[-1].accuracy > random.evals[-1].accuracy
    assert result.metrics["subclone"]["speedup"] > 1
