"""The paper's observations and the subcloning recipe on real weights: the embedded SmolLM2-135M parent
and held-out Python documentation text."""

import numpy as np
import pytest

import subclone_viz as sv

pytestmark = pytest.mark.slow


def test_profile_shows_the_additive_residual_pattern(smollm2, smollm2_profile):
    assert smollm2_profile.tokens >= 4096
    ratio = smollm2_profile.block_metrics["f_over_sum"]
    layers = len(ratio)
    middle = ratio[layers // 4 : 3 * layers // 4]
    assert ratio[0] > middle.max(), f"first block {ratio[0]:.3f} vs middle blocks up to {middle.max():.3f}"
    adjacent = smollm2_profile.rank_consistency().adjacent_spearman()
    assert np.median(adjacent) > 0.8, f"median adjacent-layer Spearman {np.median(adjacent):.3f}"


@pytest.mark.parametrize(
    "spec, ceiling",
    [
        (sv.DestinationSpec(layers=20, hidden=576), 6.5),
        (sv.DestinationSpec(layers=30, hidden=384, ffn=1024, heads=6, kv_heads=2), 8.0),
    ],
    ids=["20x576", "30x384"],
)
def test_subclones_start_far_below_random_init(smollm2, smollm2_train_profile, smollm2_heldout, spec, ceiling):
    eval_batches = [batch for batch, _ in zip(smollm2_heldout, range(2))]
    p = sv.plan(smollm2, smollm2_train_profile, spec)
    child = sv.subclone(smollm2, p)
    loss = sv.evaluate(child, smollm2.family, eval_batches).loss
    random = sv.random_init(smollm2, p, device="cpu")
    random_loss = sv.evaluate(random, smollm2.family, eval_batches).loss
    assert random_loss > 10.0, "a random init starts near ln(49152) = 10.8 nats"
    assert loss < ceiling, f"subclone {spec} starts at {loss:.2f} nats"
