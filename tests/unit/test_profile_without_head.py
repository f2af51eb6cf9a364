"""The profile stops before the output layer (an LM head, a classifier) and its results stay identical."""

import importlib

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.capture import forward_before
from tiny import TINY_FAMILIES, tiny_batches, tiny_model


def _whole_forward(run, module):
    run()
    return False


@pytest.mark.parametrize("family_name", sorted(TINY_FAMILIES))
def test_profile_without_the_head_is_identical(family_name, monkeypatch):
    parent = sv.load_parent(tiny_model(family_name), device="cpu")
    batches = tiny_batches(family_name)
    head = parent.family.output_module(parent.model)
    calls = []
    handle = head.register_forward_hook(lambda *args: calls.append(1)) if head is not None else None
    skipped = sv.profile(parent, batches, progress=False)
    assert calls == []  # the output layer never ran
    monkeypatch.setattr(importlib.import_module("subclone_viz.profile"), "forward_before", _whole_forward)
    whole = sv.profile(parent, batches, progress=False)
    if handle is not None:
        assert len(calls) == len(batches)
        handle.remove()
    for name in ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums"):
        np.testing.assert_array_equal(getattr(skipped, name), getattr(whole, name), err_msg=name)
    assert skipped.stats.keys() == whole.stats.keys()
    for name in whole.stats:
        np.testing.assert_array_equal(skipped.stats[name], whole.stats[name], err_msg=name)


def test_forward_before_stops_at_the_module_and_reports_whether_it_did():
    model = tiny_model("llama")
    family = sv.family_of(model)
    batch = tiny_batches("llama")[0]
    ran = []
    model.model.norm.register_forward_hook(lambda *args: ran.append("norm"))
    with torch.no_grad():
        assert forward_before(lambda: family.logits(model, batch), model.lm_head) is True
        assert ran == ["norm"]
        assert forward_before(lambda: family.logits(model, batch), None) is False
    assert not model.lm_head._forward_pre_hooks  # the stop hook is gone
