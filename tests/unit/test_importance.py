"""Importance estimators, the profile's shards, and the stability view, on tiny random models.

The new statistics are checked against a brute-force capture of the same activations, the weight-aware
scores against a hand computation from the weights, and the Taylor sums against autograd run separately.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz import plots
from subclone_viz.importance import ESTIMATORS, linear_readers
from subclone_viz.stability import resample_counts
from tiny import tiny_batches, tiny_model

LLAMA_SPEC = sv.DestinationSpec(layers=3, hidden=24, ffn=40, heads=3, kv_heads=1)


def profiled(name: str = "llama", taylor: bool = True, shards: int = 4, batches=None):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name, count=4) if batches is None else batches
    prof = sv.profile(parent, batches, progress=False, shards=shards)
    if taylor:
        prof = sv.add_taylor(prof, parent, batches, progress=False)
    return parent, batches, prof


@pytest.fixture(scope="module")
def llama():
    return profiled("llama")


def spec_for(parent) -> sv.DestinationSpec:
    d = parent.dims
    if parent.family.heads_follow_hidden:
        return sv.DestinationSpec(layers=d.layers - 1, hidden=d.hidden // 2, ffn=d.ffn // 2)
    return LLAMA_SPEC


# ------------------------------------------------------------------------------------------------ the registry


@pytest.mark.parametrize("family_name", ["gpt2", "llama", "bert-mlm", "vit"])
def test_every_estimator_scores_every_unit_with_the_right_shapes_deterministically(family_name):
    parent, batches, prof = profiled(family_name)
    _, _, again = profiled(family_name)
    d = parent.dims
    for name in ESTIMATORS:
        scores = sv.estimate_importance(prof, parent, name)
        assert scores.residual.shape == (d.hidden,), name
        assert scores.ffn.shape == (d.layers, d.ffn), name
        assert scores.heads.shape == (d.layers, d.heads), name
        for array in (scores.residual, scores.ffn, scores.heads):
            assert np.isfinite(array).all() and (array >= 0).all(), name
        repeat = sv.estimate_importance(again, parent, name)
        np.testing.assert_allclose(repeat.residual, scores.residual, rtol=1e-9, err_msg=name)
        spec = spec_for(parent)
        assert sv.plan(parent, prof, spec, importance=name) == sv.plan(parent, again, spec, importance=name), name


def test_each_estimator_ranks_differently_from_the_paper(llama):
    parent, _, prof = llama
    paper = sv.estimate_importance(prof, parent, "paper")
    for name in ESTIMATORS:
        if name == "paper":
            continue
        scores = sv.estimate_importance(prof, parent, name)
        differs = [
            not np.array_equal(
                np.argsort(-getattr(scores, kind), axis=-1, kind="stable"),
                np.argsort(-getattr(paper, kind), axis=-1, kind="stable"),
            )
            for kind in ("residual", "ffn", "heads")
        ]
        assert any(differs), f"{name} ranks exactly like the paper on the tiny Llama"


def test_paper_estimator_is_the_default_and_reproduces_the_shared_ranking(llama):
    parent, _, prof = llama
    default = sv.plan(parent, prof, LLAMA_SPEC)
    assert default == sv.plan(parent, prof, LLAMA_SPEC, importance="paper")
    assert default.importance == "paper"
    assert default.residual == prof.shared_ranking()[: LLAMA_SPEC.hidden].tolist()
    for p_layer, block in zip(default.ffn, default.layers):
        assert p_layer == np.argsort(-prof.ffn_importance[block], kind="stable")[: LLAMA_SPEC.ffn].tolist()
    assert sv.SubclonePlan.from_dict(json.loads(json.dumps(default.to_document()))) == default


def test_layer_normalization_stops_one_massive_layer_from_deciding(llama):
    parent, _, prof = llama
    sums = np.ones_like(prof.residual_abs_sums)  # (L+1, d)
    sums[:, 8:16] = 10.0  # every layer prefers channels 8-15 ...
    sums[2, :8] = 1e6  # ... but one layer has massive activations on channels 0-7
    changed = sv.Profile(**{**prof.__dict__, "residual_abs_sums": sums})
    paper = np.argsort(-sv.estimate_importance(changed, parent, "paper").residual, kind="stable")
    normalized = np.argsort(-sv.estimate_importance(changed, parent, "layer_normalized").residual, kind="stable")
    assert set(paper[:8]) == set(range(8))
    assert set(normalized[:8]) == set(range(8, 16))


def test_unknown_or_unmeasured_estimators_fail_clearly(llama, tmp_path):
    parent, batches, prof = llama
    with pytest.raises(sv.SpecError, match="importance='wanda' is not an importance estimator: choose one of paper"):
        sv.plan(parent, prof, LLAMA_SPEC, importance="wanda")
    without_taylor = sv.profile(parent, batches, progress=False)
    with pytest.raises(sv.SpecError, match="add_taylor"):
        sv.plan(parent, without_taylor, LLAMA_SPEC, importance="taylor")
    old = sv.Profile(**{**prof.__dict__, "stats": {}, "shards": {}})  # as saved before the estimators existed
    with pytest.raises(sv.SpecError, match="norm_in_abs"):
        sv.plan(parent, old, LLAMA_SPEC, importance="norm_input")
    assert sv.plan(parent, old, LLAMA_SPEC).residual == sv.plan(parent, prof, LLAMA_SPEC).residual


# ------------------------------------------------------------------------------------------------ statistics


def brute_force_inputs(parent, batches, modules):
    """Every (input, output) of ``modules`` over ``batches``, padding rows dropped, float64."""
    seen = {name: ([], []) for name in modules}

    def record(name):
        def hook(module, args, output):
            seen[name][0].append(args[0])
            seen[name][1].append(output)

        return hook

    handles = [parent.model.get_submodule(name).register_forward_hook(record(name)) for name in modules]
    masks = []
    with torch.no_grad():
        for batch in batches:
            parent.family.logits(parent.model, batch)
            masks.append(batch["attention_mask"].reshape(-1).bool())
    for h in handles:
        h.remove()

    def rows(tensors):
        return torch.cat([t.reshape(-1, t.shape[-1])[m].double() for t, m in zip(tensors, masks)])

    return {name: (rows(i), rows(o)) for name, (i, o) in seen.items()}


def test_norm_and_reader_statistics_equal_brute_force(llama):
    parent, batches, prof = llama
    norms, readers = prof.extra["norms"], prof.extra["residual_readers"]
    assert len(norms) == 2 * parent.dims.layers + 1  # two per block and the final norm
    assert readers == [r.module for r in linear_readers(parent, "residual")]
    assert "lm_head" in readers  # the tied head reads the residual stream too
    captured = brute_force_inputs(parent, batches, norms + readers)
    for n, name in enumerate(norms):
        x, y = captured[name]
        np.testing.assert_allclose(prof.stats["norm_in_abs"][n], x.abs().sum(0).numpy(), rtol=1e-5)
        np.testing.assert_allclose(prof.stats["norm_out_abs"][n], y.abs().sum(0).numpy(), rtol=1e-5)
    for m, name in enumerate(readers):
        x, _ = captured[name]
        np.testing.assert_allclose(prof.stats["residual_in_sq"][m], x.square().sum(0).numpy(), rtol=1e-5)
        assert prof.stats["residual_in_rows"][m] == prof.tokens


def test_weight_aware_scores_equal_a_hand_computation(llama):
    parent, _, prof = llama
    scores = sv.estimate_importance(prof, parent, "weight_aware")
    model, tokens = parent.model, prof.tokens
    expected = np.zeros(parent.dims.hidden)
    for m, name in enumerate(prof.extra["residual_readers"]):
        weight = model.get_submodule(name).weight.detach().double().abs()  # (out, d)
        expected += weight.sum(0).numpy() * np.sqrt(prof.stats["residual_in_sq"][m] / tokens)
    np.testing.assert_allclose(scores.residual, expected, rtol=1e-6)
    block = 1
    down = model.model.layers[block].mlp.down_proj.weight.detach().double().abs()  # (d, ffn)
    np.testing.assert_allclose(
        scores.ffn[block], down.sum(0).numpy() * np.sqrt(prof.stats["ffn_in_sq"][block] / tokens), rtol=1e-6
    )


def test_taylor_sums_equal_autograd_on_the_activations(llama):
    parent, batches, prof = llama
    family, model = parent.family, parent.model
    block = 2
    expected = torch.zeros(parent.dims.ffn, dtype=torch.float64)
    for batch in batches:
        kept = {}
        handle = family.ffn_activation_module(family.blocks(model)[block]).register_forward_pre_hook(
            lambda m, a: kept.setdefault("a", a[0])
        )
        loss = family.loss(model, batch)
        handle.remove()
        (grad,) = torch.autograd.grad(loss, [kept["a"]])
        product = (kept["a"] * grad).reshape(-1, parent.dims.ffn)[batch["attention_mask"].reshape(-1).bool()]
        expected += product.double().sum(0).detach()
    np.testing.assert_allclose(prof.stats["taylor_ffn"][block], expected.numpy(), rtol=1e-4, atol=1e-10)
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients are left behind


# ------------------------------------------------------------------------------------------------ shards


def test_shards_sum_to_the_totals_and_resample_without_a_second_pass(llama):
    parent, _, prof = llama
    assert prof.num_shards == 4 and prof.shards["tokens"].sum() == prof.tokens
    for name, total in prof.sums().items():
        np.testing.assert_allclose(prof.shards[name].sum(0), total, rtol=1e-9, err_msg=name)
    everything = prof.resample(np.ones(4, dtype=int))
    np.testing.assert_allclose(everything.residual_abs_sums, prof.residual_abs_sums, rtol=1e-12)
    assert everything.tokens == prof.tokens
    half = prof.resample([1, 0, 1, 0])
    assert half.tokens == prof.shards["tokens"][[0, 2]].sum()
    np.testing.assert_allclose(half.stats["norm_in_abs"], prof.shards["norm_in_abs"][[0, 2]].sum(0))
    doubled = prof.resample([2, 0, 0, 0])
    np.testing.assert_allclose(doubled.ffn_importance, prof.resample([1, 0, 0, 0]).ffn_importance, rtol=1e-12)
    with pytest.raises(ValueError, match="must be 4 non-negative shard counts"):
        prof.resample([1, 1])
    with pytest.raises(ValueError, match="not all zero"):
        prof.resample([0, 0, 0, 0])


def test_shards_and_statistics_survive_save_load_and_merge(llama, tmp_path):
    parent, _, prof = llama
    loaded = sv.Profile.load(prof.save(tmp_path / "p.npz"))
    assert loaded.stats.keys() == prof.stats.keys() and loaded.shards.keys() == prof.shards.keys()
    for name in prof.shards:
        np.testing.assert_array_equal(loaded.shards[name], prof.shards[name])
    assert sv.plan(parent, loaded, LLAMA_SPEC, importance="weight_aware") == sv.plan(
        parent, prof, LLAMA_SPEC, importance="weight_aware"
    )
    merged = prof + loaded
    assert merged.num_shards == 4 and merged.tokens == 2 * prof.tokens  # same shard count: added shard-wise
    np.testing.assert_allclose(merged.shards["ffn_abs_sums"], 2 * prof.shards["ffn_abs_sums"])
    np.testing.assert_allclose(merged.stats["taylor_ffn"], 2 * prof.stats["taylor_ffn"])
    with pytest.raises(ValueError, match="keeps no per-shard sums"):
        sv.Profile(**{**prof.__dict__, "shards": {}}).resample([1])


def test_profile_rejects_a_bad_shard_count(llama):
    parent, batches, _ = llama
    with pytest.raises(ValueError, match="shards=0 must be a whole number of shards from 1 to 1024"):
        sv.profile(parent, batches, shards=0, progress=False)


# ------------------------------------------------------------------------------------------------ stability


def test_stability_frequencies_and_overlaps_are_consistent(llama):
    parent, batches, prof = llama
    st = sv.stability(parent, prof, LLAMA_SPEC, resamples=6, heldout=batches[:1], loss_resamples=2, seed=3)
    assert st.residual_frequency.shape == (parent.dims.hidden,)
    assert st.residual_frequency.sum() == pytest.approx(LLAMA_SPEC.hidden)  # each resample keeps exactly 24
    np.testing.assert_allclose(st.ffn_frequency.sum(1), LLAMA_SPEC.ffn)
    np.testing.assert_allclose(st.head_frequency.sum(1), LLAMA_SPEC.heads)
    for values in (st.residual_jaccard, st.ffn_jaccard, st.head_jaccard):
        assert values.shape == (6,) and ((0 <= values) & (values <= 1)).all()
    assert len(st.losses) == 2 and np.isfinite(st.losses).all() and np.isfinite(st.full_loss)
    again = sv.stability(parent, prof, LLAMA_SPEC, resamples=6, heldout=batches[:1], loss_resamples=2, seed=3)
    np.testing.assert_array_equal(again.residual_frequency, st.residual_frequency)
    np.testing.assert_array_equal(again.losses, st.losses)
    summary = st.summary()
    assert summary["resamples"] == 6 and summary["loss"]["values"] == st.losses.round(4).tolist()


def test_identical_shards_give_perfect_stability():
    batch = tiny_batches("llama", count=1)[0]
    parent, _, prof = profiled("llama", taylor=False, batches=[batch] * 4)
    for method in ("bootstrap", "halves"):
        st = sv.stability(parent, prof, LLAMA_SPEC, resamples=4, method=method)
        assert set(np.unique(st.residual_frequency)) <= {0.0, 1.0}
        assert st.residual_jaccard.min() == 1.0 and st.pairwise_jaccard["ffn"] == 1.0
        assert len(st.losses) == 0 and st.full_loss is None


def test_varied_shards_disagree_somewhere(llama):
    parent, _, prof = llama
    st = sv.stability(parent, prof, LLAMA_SPEC, resamples=8, importance="paper")
    assert ((st.ffn_frequency > 0) & (st.ffn_frequency < 1)).any()
    assert st.pairwise_jaccard["ffn"] < 1.0


def test_halves_draw_half_of_the_nonempty_shards_and_bootstrap_all():
    rng = np.random.default_rng(0)
    nonempty = np.array([0, 1, 2, 4, 5])
    halves = resample_counts(6, nonempty, "halves", rng)
    assert halves.sum() == 2 and set(np.flatnonzero(halves)) <= set(nonempty)
    boot = resample_counts(6, nonempty, "bootstrap", rng)
    assert boot.sum() == 5 and boot[3] == 0


def test_stability_rejects_bad_arguments(llama):
    parent, batches, prof = llama
    with pytest.raises(ValueError, match="method='jackknife' is not a resampling method"):
        sv.stability(parent, prof, LLAMA_SPEC, method="jackknife")
    with pytest.raises(ValueError, match="resamples=1 must be a whole number of at least 2"):
        sv.stability(parent, prof, LLAMA_SPEC, resamples=1)
    one_shard = sv.profile(parent, batches, progress=False, shards=1)
    with pytest.raises(ValueError, match="1 non-empty shard"):
        sv.stability(parent, one_shard, LLAMA_SPEC)
    with pytest.raises(sv.SpecError, match="hidden=1000"):
        sv.stability(parent, prof, sv.DestinationSpec(layers=3, hidden=1000))


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_selection_stability_figures(llama, backend):
    parent, batches, prof = llama
    st = sv.stability(parent, prof, LLAMA_SPEC, resamples=4, heldout=batches[:1], loss_resamples=2)
    for kind in plots.STABILITY_KINDS:
        fig = plots.selection_stability(st, kind, backend=backend)
        if backend == "plotly":
            values = np.asarray(fig.data[0].y if kind == "residual" else fig.data[0].z)
            expected = {
                "residual": np.sort(st.residual_frequency)[::-1],
                "ffn": -np.sort(-st.ffn_frequency, axis=1),
                "heads": st.head_frequency,
            }[kind]
            np.testing.assert_allclose(values, expected)
            assert "loss before training" in fig.layout.title.text
        else:
            assert "loss before training" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="kind='layers' is not a selection kind"):
        plots.selection_stability(st, "layers")


# ------------------------------------------------------------------------------------------------ data


def test_a_shuffled_stream_samples_many_documents_from_its_first_batch(tmp_path):
    from tiny import WORDS, word_tokenizer

    corpus = tmp_path / "docs"
    corpus.mkdir()
    for index in range(20):  # document i repeats one word: its tokens name it
        (corpus / f"doc{index:02d}.txt").write_text(" ".join([WORDS[index]] * 64))
    tokenizer = word_tokenizer()

    def documents_in_first_batch(**options) -> int:
        batch = next(iter(sv.text_batches(corpus, tokenizer, seq_len=8, batch_size=8, **options)))
        words = set(tokenizer.convert_ids_to_tokens(batch["input_ids"].reshape(-1).tolist()))
        return len(words & set(WORDS[:20]))

    assert documents_in_first_batch() <= 2
    assert documents_in_first_batch(shuffle=True, seed=0) >= 5
    assert (
        "rows shuffled with seed 4" in sv.text_batches(corpus, tokenizer, seq_len=8, shuffle=True, seed=4).description
    )


def test_a_saved_profile_whose_shards_do_not_add_up_is_refused(llama, tmp_path):
    from subclone_viz._atomic import DamagedFileError

    _, _, prof = llama
    shards = dict(prof.shards)
    shards["ffn_abs_sums"] = shards["ffn_abs_sums"] * 2  # no longer the total split in shards
    path = sv.Profile(**{**prof.__dict__, "shards": shards}).save(tmp_path / "bad.npz")
    with pytest.raises(DamagedFileError, match="shards of ffn_abs_sums do not add up"):
        sv.Profile.load(path)
    stats = {**prof.stats, "norm_in_abs": prof.stats["norm_in_abs"] * np.nan}
    path = sv.Profile(**{**prof.__dict__, "stats": stats, "shards": {}}).save(tmp_path / "nan.npz")
    with pytest.raises(DamagedFileError, match="statistic norm_in_abs is not a finite float array"):
        sv.Profile.load(path)
