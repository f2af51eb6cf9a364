"""The paper's observations and the subcloning recipe on a second real parent: the embedded Gemma 3 270M
(Gemma family: sandwich norms, q/k norms, embedding scale, multi-query attention, a 262,144-token
vocabulary) on Python documentation text.

The first test to need the parent converts its GGUF file into the session's cache (about one to two
minutes); README says what the whole module costs.
"""

import numpy as np
import pytest
import torch

import subclone_viz as sv

pytestmark = pytest.mark.slow


def test_parent_is_cached_with_its_tokenizer_and_provenance(gemma3):
    assert type(gemma3.model).__name__ == "Gemma3ForCausalLM" and gemma3.family.name == "gemma"
    assert gemma3.dims.to_dict() == dict(layers=18, hidden=640, ffn=2048, heads=4, kv_heads=1, head_dim=256)
    cached = sv.cache_dir() / "parents" / "gemma3-270m"
    files = {f.name for f in cached.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= files and not any(".gguf" in f for f in files)
    leftovers = [f.name for f in cached.parent.iterdir() if f.name.startswith(".") and f.suffix != ".lock"]
    assert not leftovers, f"staging or GGUF scratch left beside the cache: {leftovers}"
    again = sv.load_parent("gemma3-270m", device="cpu")  # from the cache this time
    for (name, mine), theirs in zip(gemma3.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(mine, theirs), name
    text = "The capital of France is Paris."
    assert again.tokenizer(text)["input_ids"] == gemma3.tokenizer(text)["input_ids"]
    assert gemma3.provenance["license"] == "gemma" and gemma3.provenance["quantization"] == "Q4_K_M"


def test_profile_shows_the_additive_residual_pattern(gemma3_profile):
    assert gemma3_profile.tokens >= 2048
    ratio = gemma3_profile.block_metrics["f_over_sum"]
    layers = len(ratio)
    middle = ratio[layers // 4 : 3 * layers // 4]
    assert ratio[0] > middle.max(), f"first block {ratio[0]:.3f} vs middle blocks up to {middle.max():.3f}"
    adjacent = gemma3_profile.rank_consistency().adjacent_spearman()
    assert np.median(adjacent) > 0.8, f"median adjacent-layer Spearman {np.median(adjacent):.3f}"


def test_reorder_only_plan_is_exact(gemma3, gemma3_train_profile, gemma3_heldout):
    """Every block, every channel, neuron and head kept, in importance order: the same function."""
    p = sv.plan(gemma3, gemma3_train_profile, sv.DestinationSpec(layers=18, hidden=640))
    assert p.residual != sorted(p.residual), "the plan reorders the residual channels"
    child = sv.subclone(gemma3, p)
    batch = {key: value[:2, :64] for key, value in next(iter(gemma3_heldout)).items()}
    with torch.no_grad():
        expected = gemma3.family.logits(gemma3.model, batch)
        got = gemma3.family.logits(child, batch)
    # fp32 sums in another order: differences at the level of float rounding of logits about 30 in size.
    relative = float((got - expected).abs().max() / expected.abs().max())
    assert relative < 1e-5, f"reordered child differs from the parent by {relative:.2e} of the largest logit"


def test_width_and_depth_subclone_starts_far_below_random_init(gemma3, gemma3_train_profile, gemma3_heldout):
    """16 of 18 blocks (the paper's middle cut) at width 576 of 640. Gemma takes cuts harder than SmolLM2 (README,
    "The paper's observations"), so the cut is milder than SmolLM2's test's."""
    eval_batches = [batch for batch, _ in zip(gemma3_heldout, range(2))]
    p = sv.plan(gemma3, gemma3_train_profile, sv.DestinationSpec(layers=16, hidden=576))
    assert len(p.layers) == 16 and p.dims["hidden"] == 576
    child = sv.subclone(gemma3, p)
    loss = sv.evaluate(child, gemma3.family, eval_batches).loss
    random = sv.random_init(gemma3, p, seed=0)
    random_loss = sv.evaluate(random, gemma3.family, eval_batches).loss
    assert random_loss > 12.0, "a random init starts near ln(262144) = 12.5 nats"
    assert loss < 8.0, f"subclone 16 x 576 starts at {loss:.2f} nats (random init: {random_loss:.2f})"
