"""The capture layer on every family: one report per block that chains residual layer to residual layer, the
module roles' activations in their shapes, hooks gone afterwards; and resumed forwards that equal full ones."""

import weakref

import pytest
import torch

import subclone_viz as sv
from subclone_viz.capture import (
    CountedRows,
    capture_blocks,
    counted_rows,
    forward_until_seen,
    to_device,
    token_mask,
)
from tiny import TINY_FAMILIES, tiny_batches, tiny_model


@pytest.fixture(params=list(TINY_FAMILIES), scope="module")
def tiny(request):
    name = request.param
    return name, sv.load_parent(tiny_model(name), device="cpu"), tiny_batches(name)


@torch.no_grad()
def test_every_block_reports_once_and_the_steps_chain(tiny):
    name, parent, batches = tiny
    family, model, dims = parent.family, parent.model, parent.dims
    steps, ffn, attention = [], {}, {}
    with capture_blocks(
        family, model, on_block=steps.append, on_ffn=ffn.__setitem__, on_attention=attention.__setitem__
    ):
        family.logits(model, batches[0])
    assert [step.index for step in steps] == list(range(dims.layers))
    for before, after in zip(steps, steps[1:]):
        assert after.input is before.output  # the residual stream: one block's output enters the next
    if family.residual_sum_module(family.blocks(model)[0]) is not None:
        assert not torch.equal(steps[0].total, steps[0].output)  # the pre-norm sum, not the normed output
    else:
        assert steps[0].total is steps[0].output
    tokens = steps[0].input.shape[:2]
    assert sorted(ffn) == list(range(dims.layers)) and all(a.shape == (*tokens, dims.ffn) for a in ffn.values())
    for i, block in enumerate(family.blocks(model)):  # an MoE layer has no dense FFN: zeros (experts.py reads it)
        assert (family.ffn_activation_module(block) is None) == (not ffn[i].any())
    assert attention[0].shape == (*tokens, dims.heads * dims.head_dim)
    assert not any(block._forward_hooks or block._forward_pre_hooks for block in family.blocks(model))


def test_counted_rows_drop_padding_and_keep_per_sequence_rows():
    batch = tiny_batches("llama")[0]  # the first sequence ends in 4 padding tokens
    mask = token_mask(batch)
    hidden = torch.randn(2, 12, 5)
    assert counted_rows(hidden, mask).shape == (2 * 12 - 4, 5)
    assert counted_rows(hidden[:, 0], mask).shape == (2, 5)  # one row per sequence: nothing to drop
    assert token_mask({"input_ids": batch["input_ids"], "attention_mask": torch.ones(2, 12)}) is None
    assert to_device({**batch, "note": "kept"}, "cpu")["note"] == "kept"


def test_square_sums_from_the_kept_magnitudes_are_bit_identical_and_leave_the_activation_alone():
    mask = token_mask(tiny_batches("llama")[0])
    activation = torch.randn(2, 12, 7)
    original = activation.clone()
    rows = CountedRows(lambda t: counted_rows(t, mask))
    abs_sum = rows.abs_sum(activation).clone()
    square, count = rows.square_sum(activation)  # squares the |rows| the abs sum kept, in place
    fresh = counted_rows(activation, mask)
    assert torch.equal(square, fresh.square().sum(0).double()) and count == fresh.shape[0]
    assert torch.equal(rows.abs_sum(activation), abs_sum) and torch.equal(abs_sum, fresh.abs().sum(0).double())
    assert torch.equal(activation, original)
    other = torch.randn(2, 12, 7)
    rows.abs_sum(other)  # the kept magnitudes are other's now: activation's square sum is computed afresh
    rows.forget()
    assert torch.equal(rows.square_sum(activation)[0], square)


def test_counted_rows_keeps_no_activation_alive_and_a_reused_id_gets_fresh_sums():
    rows = CountedRows(lambda t: counted_rows(t, None))
    activation = torch.randn(2, 5, 3)
    rows.abs_sum(activation)
    alive = weakref.ref(activation)
    del activation
    assert alive() is None  # the model frees its activations when it is done with them, profiled or not
    for _ in range(50):  # CPython soon hands a dead tensor's id to a new one: its sums must not be the old ones
        fresh = torch.randn(2, 5, 3)
        assert torch.equal(rows.abs_sum(fresh), fresh.reshape(-1, 3).abs().sum(0).double())
        assert torch.equal(rows.square_sum(fresh)[0], fresh.reshape(-1, 3).square().sum(0).double())
        del fresh


@pytest.mark.parametrize("name", [n for n in TINY_FAMILIES if n != "bert"])
def test_block_ablation_reusing_prefixes_equals_full_forwards(name):
    """Suffix reuse changes the cost, not a number: every variant equals the whole forward with a hooked block."""
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    reused = sv.block_ablation(parent, batches, progress=False)
    plain = sv.block_ablation(parent, batches, progress=False, reuse_prefix=False)
    assert reused.baseline == plain.baseline
    assert reused.removed == plain.removed  # the same operations on the same inputs: bit for bit
    assert reused.duplicated == plain.duplicated
    assert len(set(reused.removed)) == len(reused.removed)  # each block's removal changes the loss its own way
    assert all(type(block).__name__ not in ("_PassOn", "_Resume") for block in parent.family.blocks(parent.model))


@torch.no_grad()
def test_forward_until_seen_stops_after_the_last_module_and_chunks_its_output():
    parent = sv.load_parent(tiny_model("llama-untied"), device="cpu")
    model, batch = parent.model, tiny_batches("llama")[0]
    mask = token_mask(batch)
    watched = {"up": model.model.layers[0].mlp.up_proj, "head": model.lm_head}
    expected = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, out, n=n: expected.__setitem__(n, counted_rows(out, mask)))
        for n, m in watched.items()
    ]
    parent.family.logits(model, batch)
    for hook in hooks:
        hook.remove()
    seen = {}
    forward_until_seen(
        lambda: parent.family.logits(model, batch),
        watched,
        lambda name, rows: seen.setdefault(name, []).append(rows),
        mask=mask,
        chunk_elements=97 * 5,
    )
    assert len(seen["up"]) == 1 and len(seen["head"]) == 4  # 20 counted tokens, 5 rows of 97 logits a chunk
    for name in watched:
        torch.testing.assert_close(torch.cat(seen[name]), expected[name])

    ran = []
    hook = model.model.layers[1].register_forward_hook(lambda *args: ran.append(True))
    forward_until_seen(lambda: parent.family.logits(model, batch), {"up": watched["up"]}, lambda name, rows: None)
    hook.remove()
    assert ran == []  # the forward stopped at block 0's up projection
    with pytest.raises(RuntimeError, match="never ran"):
        forward_until_seen(lambda: None, watched, lambda name, rows: None)
