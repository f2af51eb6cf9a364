"""The logit lens at chosen positions (``positions=``) reads exactly what the full lens reads there, runs the
head on those rows only, and refuses positions outside the batch before any forward."""

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.lens import LogitLens, through_depth
from tiny import tiny_batches, tiny_model

FIELDS = ("top_ids", "top_probs", "target_rank", "target_prob", "targets")


@pytest.mark.parametrize("family_name", ["llama", "gemma3", "bert-mlm"])
def test_chosen_positions_equal_the_full_lens_there(family_name):
    parent = sv.load_parent(tiny_model(family_name), device="cpu")
    batch = tiny_batches(family_name)[0]
    full = sv.logit_lens(parent, None, batch, top_k=3)
    length = batch["input_ids"].shape[1]
    some = sv.logit_lens(parent, None, batch, top_k=3, positions=[1, -1])
    assert some.positions == [1, length - 1]
    for field in FIELDS:
        whole = getattr(full, field)
        expected = whole[:, [1, length - 1]] if field == "targets" else whole[:, :, [1, length - 1]]
        np.testing.assert_allclose(getattr(some, field), expected, rtol=1e-6, atol=1e-8, err_msg=field)
    assert some.predictions(layer=-1, sequence=1, position=length - 1) == full.predictions(-1, 1, length - 1)
    again = LogitLens.from_dict(some.to_dict())
    assert again.positions == some.positions
    np.testing.assert_array_equal(again.top_ids, some.top_ids)


def test_the_head_reads_only_the_chosen_rows():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batch = tiny_batches("llama")[0]
    rows = []
    head = parent.family.output_module(parent.model)
    handle = head.register_forward_pre_hook(lambda module, args: rows.append(args[0].reshape(-1, args[0].shape[-1])))
    try:
        sv.logit_lens(parent, None, batch, positions=[2])
    finally:
        handle.remove()
    sequences = batch["input_ids"].shape[0]
    # The forward stops as the head is called (its own call sees every row); then one readout of every layer's rows.
    assert len(rows) == 2
    assert rows[1].shape[0] == (parent.dims.layers + 1) * sequences  # one row per layer and sequence: no other


def test_through_depth_at_a_chosen_position_and_a_position_not_read():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batch = tiny_batches("llama")[0]
    plan = sv.plan(parent, sv.profile(parent, [batch], progress=False), sv.DestinationSpec(layers=2, hidden=24))
    child = sv.subclone(parent, plan)
    full = through_depth(sv.logit_lens(parent, None, batch), sv.logit_lens(child, None, batch), 0, 3)
    chosen = through_depth(
        sv.logit_lens(parent, None, batch, positions=[3]), sv.logit_lens(child, None, batch, positions=[3]), 0, 3
    )
    assert [row["parent_rank"] for row in chosen] == [row["parent_rank"] for row in full]
    assert [row["destination_rank"] for row in chosen] == [row["destination_rank"] for row in full]
    with pytest.raises(ValueError, match=r"position 2 was not read: this lens read positions \[3\]"):
        sv.logit_lens(parent, None, batch, positions=[3]).predictions(layer=0, position=2)


def test_positions_outside_the_batch_are_refused_before_any_forward(monkeypatch):
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batch = tiny_batches("llama")[0]
    length = batch["input_ids"].shape[1]
    ran = []
    monkeypatch.setattr(parent.family, "logits", lambda *a, **k: ran.append(1))
    with pytest.raises(ValueError, match=f"positions=\\[{length}\\]: the batch's positions run from 0 to {length - 1}"):
        sv.logit_lens(parent, None, batch, positions=[length])
    with pytest.raises(ValueError, match="names a position twice"):
        sv.logit_lens(parent, None, batch, positions=[1, 1 - length])
    with pytest.raises(ValueError, match="positions=\\[\\]"):
        sv.logit_lens(parent, None, batch, positions=[])
    assert ran == []


def test_rank_counts_the_ids_more_likely_than_the_target():
    torch.manual_seed(0)
    logits = torch.randn(7, 50)
    targets = torch.tensor([0, 5, 49, 3, -1, 12, 7])
    from subclone_viz.lens import _scores

    _, _, rank, prob = _scores(logits, targets, 3)
    for n, target in enumerate(targets.tolist()):
        if target < 0:
            assert rank[n] == -1 and torch.isnan(prob[n])
        else:
            assert rank[n] == sum(1 for v in logits[n].tolist() if v > logits[n, target].item())
            assert rank.dtype == torch.int64
