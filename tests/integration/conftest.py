"""Shared fixtures for tests on the embedded pretrained parents (slow: they load real weights)."""

import pytest

import subclone_viz as sv


@pytest.fixture(scope="session")
def smollm2():
    return sv.load_parent("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smollm2_heldout(smollm2):
    return sv.text_batches("builtin", smollm2.tokenizer, seq_len=256, batch_size=8, split="heldout")


@pytest.fixture(scope="session")
def smollm2_profile(smollm2, smollm2_heldout):
    return sv.profile(smollm2, smollm2_heldout, max_tokens=4096, progress=False)


@pytest.fixture(scope="session")
def smollm2_train_profile(smollm2):
    """Neuron importance for subcloning comes from training text, so held-out scores stay held out."""
    train = sv.text_batches("builtin", smollm2.tokenizer, seq_len=256, batch_size=8, split="train")
    return sv.profile(smollm2, train, max_tokens=4096, progress=False)
