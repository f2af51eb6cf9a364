"""The streaming profiler against a brute-force computation from full hidden states, on every family."""

import importlib

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.capture import CountedRows
from tiny import TINY_FAMILIES, tiny_batches, tiny_model


def brute_force(parent, batches):
    """Capture every hidden state in full, then compute each statistic directly in float64."""
    family = parent.family
    captured = {"x": {}, "y": {}, "s": {}, "ffn": {}, "attn": {}}
    handles = []
    for i, block in enumerate(family.blocks(parent.model)):
        handles.append(
            block.register_forward_pre_hook(
                lambda m, a, k, i=i: captured["x"].setdefault(i, []).append(a[0] if a else k["hidden_states"]),
                with_kwargs=True,
            )
        )
        handles.append(
            block.register_forward_hook(
                lambda m, a, o, i=i: captured["y"].setdefault(i, []).append(o[0] if isinstance(o, tuple) else o)
            )
        )
        if family.residual_sum_module(block) is not None:
            handles.append(
                family.residual_sum_module(block).register_forward_pre_hook(
                    lambda m, a, i=i: captured["s"].setdefault(i, []).append(a[0])
                )
            )
        if family.ffn_activation_module(block) is not None:  # None: an MoE layer (tests/unit/test_moe.py)
            handles.append(
                family.ffn_activation_module(block).register_forward_pre_hook(
                    lambda m, a, i=i: captured["ffn"].setdefault(i, []).append(a[0])
                )
            )
        handles.append(
            family.attention_output_module(block).register_forward_pre_hook(
                lambda m, a, i=i: captured["attn"].setdefault(i, []).append(a[0])
            )
        )
    masks = []
    with torch.no_grad():
        for batch in batches:
            family.logits(parent.model, batch)
            mask = batch.get("attention_mask")
            masks.append(None if mask is None else mask.reshape(-1).bool())
    for h in handles:
        h.remove()

    def rows(tensors):
        out = []
        for t, mask in zip(tensors, masks):
            flat = t.reshape(-1, t.shape[-1]).double()
            out.append(flat if mask is None else flat[mask])
        return torch.cat(out)

    layers = len(captured["x"])
    metrics, residual, ffn, attn = [], [rows(captured["x"][0]).abs().mean(0)], [], []
    for i in range(layers):
        x, y = rows(captured["x"][i]), rows(captured["y"][i])
        total = rows(captured["s"][i]) if captured["s"] else y
        f = total - x
        cos = torch.nn.functional.cosine_similarity(x, total, dim=-1)
        metrics.append(
            [
                (f.norm(dim=-1) / total.norm(dim=-1)).mean(),
                (f.norm(dim=-1) / x.norm(dim=-1)).mean(),
                (1 - cos).mean(),
            ]
        )
        residual.append(y.abs().mean(0))
        ffn.append(
            rows(captured["ffn"][i]).abs().mean(0)
            if i in captured["ffn"]
            else torch.zeros(parent.dims.ffn, dtype=torch.float64)
        )
        attn.append(rows(captured["attn"][i]).abs().mean(0))
    return {
        "tokens": x.shape[0],
        "metrics": torch.tensor(metrics).numpy(),
        "residual": torch.stack(residual).numpy(),
        "ffn": torch.stack(ffn).numpy(),
        "attn": torch.stack(attn).numpy(),
    }


@pytest.fixture(params=list(TINY_FAMILIES))
def family_name(request):
    return request.param


def test_streamed_statistics_equal_brute_force(family_name):
    parent = sv.load_parent(tiny_model(family_name), device="cpu")
    batches = tiny_batches(family_name)
    prof = sv.profile(parent, batches, progress=False)
    expected = brute_force(parent, batches)
    assert prof.tokens == expected["tokens"]
    got = np.stack([prof.block_metrics[name] for name in ("f_over_sum", "f_over_x", "one_minus_cos")], axis=1)
    np.testing.assert_allclose(got, expected["metrics"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(prof.residual_importance, expected["residual"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(prof.ffn_importance, expected["ffn"], rtol=1e-5, atol=1e-7)
    per_channel = prof.attn_abs_sums / prof.tokens
    np.testing.assert_allclose(per_channel, expected["attn"], rtol=1e-5, atol=1e-7)
    heads = parent.dims.heads
    np.testing.assert_allclose(
        prof.head_importance, expected["attn"].reshape(len(expected["attn"]), heads, -1).mean(-1), rtol=1e-5
    )


def test_shortcuts_give_the_statistics_of_a_profile_without_them_to_the_bit(family_name, monkeypatch):
    """The profile reuses a block's output norms as the next block's x norms and squares the |rows| of the last
    abs sum in place; computed afresh every time, each statistic is the same to the last bit."""
    parent = sv.load_parent(tiny_model(family_name), device="cpu")
    batches = tiny_batches(family_name, pad=True)
    fast = sv.profile(parent, batches, progress=False)
    accumulator = importlib.import_module("subclone_viz.profile")._Accumulator
    on_block = accumulator.on_block

    def without_kept_norms(self, step):
        self._output_norms = None
        on_block(self, step)

    def square_afresh(self, t):
        rows = self.rows(t)
        return rows.square().sum(0).double(), rows.shape[0]

    monkeypatch.setattr(accumulator, "on_block", without_kept_norms)
    monkeypatch.setattr(CountedRows, "square_sum", square_afresh)
    slow = sv.profile(parent, batches, progress=False)
    assert fast.sums().keys() == slow.sums().keys()
    for name, value in slow.sums().items():
        np.testing.assert_array_equal(fast.sums()[name], value, err_msg=name)


def test_the_model_leaves_in_the_mode_it_came_in():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama", count=1)
    parent.model.eval()
    evaluated = sv.profile(parent, batches, progress=False)
    assert not any(module.training for module in parent.model.modules())
    parent.model.train()
    trained = sv.profile(parent, batches, progress=False)
    assert all(module.training for module in parent.model.modules())
    np.testing.assert_array_equal(trained.block_sums, evaluated.block_sums)
    parent.model.eval()
    parent.model.model.layers[0].train()  # one module left in training mode: the whole model is put in eval mode
    partly = sv.profile(parent, batches, progress=False)
    np.testing.assert_array_equal(partly.block_sums, evaluated.block_sums)
    assert not any(module.training for module in parent.model.modules())


def test_padding_tokens_do_not_count():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama", count=1, pad=True)
    prof = sv.profile(parent, batches, progress=False)
    assert prof.tokens == int(batches[0]["attention_mask"].sum())
    # Changing what sits under the padding must not change any statistic... of unpadded rows: right padding
    # cannot influence earlier positions of a causal model, so the whole profile is identical.
    altered = [dict(batches[0], input_ids=batches[0]["input_ids"].clone())]
    altered[0]["input_ids"][0, -4:] = 5
    prof2 = sv.profile(parent, altered, progress=False)
    np.testing.assert_allclose(prof.residual_abs_sums, prof2.residual_abs_sums, rtol=1e-6)
    np.testing.assert_allclose(prof.block_sums, prof2.block_sums, rtol=1e-6)


def test_shards_merge_exactly():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    batches = tiny_batches("gpt2", count=4)
    whole = sv.profile(parent, batches, progress=False)
    merged = sv.profile(parent, batches[:1], progress=False) + sv.profile(parent, batches[1:], progress=False)
    assert merged.tokens == whole.tokens
    for name in ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-6)


def test_max_tokens_stops_early():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    prof = sv.profile(parent, tiny_batches("gpt2", count=5, pad=False), max_tokens=30, progress=False)
    assert prof.tokens == 48  # two batches of 2 x 12: the second one crosses 30
    with pytest.raises(ValueError, match="max_tokens=0"):
        sv.profile(parent, tiny_batches("gpt2"), max_tokens=0, progress=False)


def test_save_load_roundtrip_and_parent_check(tmp_path):
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    prof = sv.profile(parent, tiny_batches("llama"), progress=False, source="tiny random batches")
    path = prof.save(tmp_path / "p.npz")
    with pytest.raises(FileExistsError):
        prof.save(path)
    loaded = sv.Profile.load(path)
    assert loaded.source == "tiny random batches" and loaded.tokens == prof.tokens
    assert loaded.version == sv.__version__
    np.testing.assert_array_equal(loaded.shared_ranking(), prof.shared_ranking())
    loaded.check_parent(parent)
    other = sv.load_parent(tiny_model("llama", seed=5), device="cpu")
    with pytest.raises(sv.ProfileMismatchError, match="profile the parent you subclone from"):
        loaded.check_parent(other)
    with pytest.raises(sv.ProfileMismatchError):
        loaded + sv.profile(sv.load_parent(tiny_model("gpt2"), device="cpu"), tiny_batches("gpt2"), progress=False)


def test_rank_consistency_shapes_and_identity():
    parent = sv.load_parent(tiny_model("vit"), device="cpu")
    prof = sv.profile(parent, tiny_batches("vit"), progress=False)
    consistency = prof.rank_consistency(k=8)
    layers = parent.dims.layers + 1
    assert consistency.spearman.shape == (layers, layers)
    np.testing.assert_allclose(np.diag(consistency.spearman), 1.0)
    np.testing.assert_allclose(np.diag(consistency.topk_overlap), 1.0)
    assert np.all(consistency.topk_overlap <= 1.0) and np.all(consistency.topk_overlap >= 0.0)
    ranking = prof.shared_ranking()
    assert sorted(ranking.tolist()) == list(range(parent.dims.hidden))
    with pytest.raises(ValueError, match="k=0"):
        prof.rank_consistency(k=0)
