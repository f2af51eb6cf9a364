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


@pytest.fixture(scope="session")
def gemma3():
    """Gemma 3 270M; the first load in a session's fresh cache converts its GGUF file (one to two minutes)."""
    return sv.load_parent("gemma3-270m", device="cpu")


@pytest.fixture(scope="session")
def gemma3_heldout(gemma3):
    # Small batches: with a 262,144-token vocabulary the logits of 4 x 128 tokens alone take 0.5 GB, and the
    # output head is most of a forward pass.
    return sv.text_batches("builtin", gemma3.tokenizer, seq_len=128, batch_size=4, split="heldout")


@pytest.fixture(scope="session")
def gemma3_profile(gemma3, gemma3_heldout):
    return sv.profile(gemma3, gemma3_heldout, max_tokens=2048, progress=False)


@pytest.fixture(scope="session")
def gemma3_train_profile(gemma3):
    """Neuron importance for subcloning comes from training text, so held-out scores stay held out."""
    train = sv.text_batches("builtin", gemma3.tokenizer, seq_len=128, batch_size=4, split="train")
    return sv.profile(gemma3, train, max_tokens=2048, progress=False)
