"""Mixture-of-experts parents: expert statistics against brute force, expert selection, spec errors, routing.

Runs on the tiny model of every registered MoE family (the battery in test_subclone.py, test_profile.py and
test_capture.py runs on them too).
"""

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.experts import EXPERT_ESTIMATORS, expert_scores
from subclone_viz.families import FAMILIES
from subclone_viz.families.moe import MoEFamily
from subclone_viz.plan import SpecError
from tiny import tiny_batches, tiny_model

MOE_MODELS = [name for family in FAMILIES.values() if issubclass(family, MoEFamily) for name in family.tiny_models()]


def test_every_moe_family_is_tested():
    assert {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v3"} <= set(MOE_MODELS)


def brute_force_experts(parent, batches):
    """Every MoE block's input captured whole; the model's own router run on it again, every expert on every
    token it was routed to, in float64 sums. Checks that the experts recomputed from the 3-D weights add up to
    what the model's experts module (its grouped-matmul implementation) returned."""
    family = parent.family
    parts = [family.moe_parts(block) for block in family.blocks(parent.model)]
    seen = {i: [] for i, p in enumerate(parts) if p is not None}
    shared = {}
    handles = []
    for i in seen:
        router, experts, _ = parts[i]
        handles.append(
            experts.register_forward_hook(
                lambda m, a, out, i=i: seen[i].append((a[0].detach().clone(), out.detach().clone()))
            )
        )
        if parts[i][2] is not None:  # the shared expert's activation, every token
            handles.append(
                parts[i][2].down_proj.register_forward_pre_hook(
                    lambda m, a, i=i: shared.setdefault(i, []).append(a[0].detach().clone())
                )
            )
    masks = []
    with torch.no_grad():
        for batch in batches:
            family.logits(parent.model, batch)
            masks.append(batch["attention_mask"].reshape(-1).bool())
    for h in handles:
        h.remove()
    d = parent.dims
    stats = {
        name: np.zeros((d.layers, d.experts)) for name in ("expert_tokens", "expert_prob", "expert_reap", "expert_norm")
    }
    stats["expert_ffn_abs"] = np.zeros((d.layers, d.experts, d.expert_ffn))
    stats["router_entropy"] = np.zeros(d.layers)
    with torch.no_grad():
        for i, calls in seen.items():
            router, experts, _ = parts[i]
            for (states, returned), mask in zip(calls, masks):
                logits, weights, indices = router(states)
                recomputed = torch.zeros_like(states)
                probs = family.router_probabilities(logits).double()
                stats["expert_prob"][i] += probs[mask].sum(0).numpy()
                stats["router_entropy"][i] += float(-(probs * probs.clamp_min(1e-30).log()).sum(-1)[mask].sum())
                for e in range(d.experts):
                    token, slot = torch.where(indices == e)
                    activation, output = family.expert_forward(experts, e, states[token])
                    g = weights[token, slot]
                    recomputed.index_add_(0, token, (output * g[:, None]).to(states.dtype))
                    counted = mask[token]
                    norm = output.double().norm(dim=-1)[counted]
                    stats["expert_tokens"][i, e] += int(counted.sum())
                    stats["expert_norm"][i, e] += float(norm.sum())
                    stats["expert_reap"][i, e] += float((g.double()[counted] * norm).sum())
                    stats["expert_ffn_abs"][i, e] += activation.double().abs()[counted].sum(0).numpy()
                torch.testing.assert_close(recomputed, returned, atol=1e-5, rtol=1e-4)
    if d.shared_ffn:
        stats["shared_ffn_abs"] = np.zeros((d.layers, d.shared_ffn))
        for i, calls in shared.items():
            for activation, mask in zip(calls, masks):
                stats["shared_ffn_abs"][i] += activation.reshape(-1, d.shared_ffn).double().abs()[mask].sum(0).numpy()
    return stats


@pytest.mark.parametrize("name", MOE_MODELS)
def test_expert_statistics_equal_brute_force(name):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    prof = sv.profile(parent, batches, progress=False)
    expected = brute_force_experts(parent, batches)
    for key, value in expected.items():
        np.testing.assert_allclose(prof.stats[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    moe_layers = expected["expert_tokens"].sum(1) > 0
    top_k = parent.dims.experts_per_tok
    np.testing.assert_allclose(prof.stats["expert_tokens"][moe_layers].sum(1), prof.tokens * top_k)
    coselect = prof.stats["expert_coselect"]
    np.testing.assert_allclose(np.diagonal(coselect, axis1=1, axis2=2), prof.stats["expert_tokens"])
    np.testing.assert_allclose(coselect, np.swapaxes(coselect, 1, 2))


@pytest.mark.parametrize("name", MOE_MODELS)
def test_fewer_experts_keep_the_highest_scoring_and_route(name, tmp_path):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    prof = sv.profile(parent, batches, progress=False)
    d = parent.dims
    keep = d.experts // 2
    for estimator in EXPERT_ESTIMATORS:
        p = sv.plan(
            parent, prof, sv.DestinationSpec(layers=d.layers, hidden=d.hidden, experts=keep), experts_by=estimator
        )
        scores = expert_scores(prof, estimator)
        groups = parent.family.expert_groups(parent.model)
        per_group = d.experts // groups
        for layer, kept in zip(p.layers, p.experts):
            for g in range(groups):  # the best of each routing group (one group outside DeepSeek-V3)
                members = [e for e in kept if e // per_group == g]
                others = [e for e in range(g * per_group, (g + 1) * per_group) if e not in members]
                assert min(scores[layer][members]) >= max(scores[layer][others], default=-np.inf), (estimator, layer)
    child = sv.subclone(parent, p)
    got = parent.family.dims(child)
    assert (got.experts, got.experts_per_tok) == (keep, min(d.experts_per_tok, keep))
    child.train()
    loss = parent.family.loss(child, batches[0])
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", MOE_MODELS)
def test_width_depth_and_experts_cut_saves_reloads_and_trains(name, tmp_path):
    import transformers

    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    prof = sv.profile(parent, batches, progress=False)
    d = parent.dims
    spec = sv.DestinationSpec(
        layers=3, hidden=d.hidden // 2, experts=d.experts // 2, experts_per_tok=1, expert_ffn=d.expert_ffn // 2
    )
    p = sv.plan(parent, prof, spec, experts_by="reap")
    child = sv.subclone(parent, p)
    path = sv.save_destination(child, p, tmp_path / "dest")
    reloaded = getattr(transformers, parent.family.auto_class).from_pretrained(path).eval()
    with torch.no_grad():
        for batch in batches:
            torch.testing.assert_close(
                parent.family.logits(reloaded, batch), parent.family.logits(child, batch), atol=0, rtol=0
            )
    got = parent.family.dims(reloaded)
    assert (got.layers, got.hidden, got.experts, got.experts_per_tok, got.expert_ffn) == (
        3,
        d.hidden // 2,
        d.experts // 2,
        1,
        d.expert_ffn // 2,
    )
    child.train()
    loss = parent.family.loss(child, batches[0])
    loss.backward()
    torch.optim.SGD(child.parameters(), lr=0.1).step()
    assert torch.isfinite(loss) and all(torch.isfinite(q).all() for q in child.parameters())


@pytest.mark.parametrize(
    "name, spec, message",
    [
        ("mixtral", dict(experts=7), "experts=7 is out of range: choose 1 <= experts <= 6"),
        ("mixtral", dict(experts=2, experts_per_tok=3), "experts_per_tok=3 is above the 2 experts kept"),
        ("mixtral", dict(ffn=12, expert_ffn=8), "stores one width"),
        ("qwen2_moe", dict(expert_ffn=17), "expert_ffn=17 is out of range"),
        ("deepseek_v3", dict(experts=5), "multiple of n_group=2 with at least two experts per group, one of [4, 6, 8]"),
        ("deepseek_v3", dict(experts=4, experts_per_tok=3), "more than the 2 experts a token can reach"),
        ("deepseek_v3", dict(q_lora_rank=8), "q_lora_rank=8 cuts an MLA rank"),
        ("deepseek_v3", dict(kv_lora_rank=6), "kv_lora_rank=6 cuts an MLA rank"),
        ("deepseek_v3", dict(layers=[1, 0, 3]), "only allows them first"),
        ("olmoe", dict(hidden=24), "hidden=24 gives 3 heads, not a multiple of the parent's 2 queries per KV head"),
        ("llama", dict(experts=2), "this parent is dense"),
        ("llama", dict(q_lora_rank=4), "no multi-head latent attention"),
    ],
)
def test_bad_expert_specs_are_refused_before_any_work(name, spec, message):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    spec = {"layers": 3, "hidden": parent.dims.hidden, **spec}  # hidden may be overridden
    with pytest.raises(SpecError, match=re_escape(message)):
        sv.plan(parent, None, sv.DestinationSpec(**spec), width="first")


def re_escape(text):
    import re

    return re.escape(text)


def test_unknown_expert_estimator_names_the_registered_ones():
    parent = sv.load_parent(tiny_model("mixtral"), device="cpu")
    with pytest.raises(SpecError, match="frequency, router_mass, reap"):
        sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=32), width="first", experts_by="loudest")


def test_grouped_routing_keeps_experts_in_their_groups():
    parent = sv.load_parent(tiny_model("deepseek_v3"), device="cpu")  # 8 experts in 2 groups of 4
    p = sv.plan(parent, None, sv.DestinationSpec(layers=4, hidden=32, experts=4), width="uniform")
    assert all(sorted(e // 4 for e in kept) == [0, 0, 1, 1] for kept in p.experts)
    child = sv.subclone(parent, p)
    bias = parent.model.model.layers[1].mlp.gate.e_score_correction_bias
    torch.testing.assert_close(child.model.layers[1].mlp.gate.e_score_correction_bias, bias[p.experts[1]])


@pytest.mark.parametrize("name", [n for n in MOE_MODELS if n != "deepseek_v3"])
def test_moe_to_dense_computes_the_mean_gate_weighted_sum_of_the_kept_experts(name):
    from subclone_viz.moe_dense import moe_to_dense

    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    prof = sv.profile(parent, batches, progress=False)
    d = parent.dims
    dense = moe_to_dense(parent, prof, sv.DestinationSpec(layers=d.layers, hidden=d.hidden, experts=3), scaling="none")
    got = parent.family.dims(dense)
    assert (got.experts, got.experts_per_tok, got.expert_ffn) == (1, 1, 3 * d.expert_ffn)
    info = dense.subclone_info["moe_to_dense"]
    family = parent.family
    block = next(i for i, b in enumerate(family.blocks(parent.model)) if family.moe_parts(b))
    x = torch.randn(5, d.hidden)
    parent_experts = family.moe_parts(family.blocks(parent.model)[block])[1]
    expected = sum(
        g * family.expert_forward(parent_experts, e, x)[1]
        for e, g in zip(info["experts"][block], info["mean_gate"][block])
    )
    dense_experts = family.moe_parts(family.blocks(dense)[block])[1]
    order = dense.subclone_info["plan"]["residual"]  # the destination's residual channels, in the plan's order
    with torch.no_grad():
        torch.testing.assert_close(
            family.expert_forward(dense_experts, 0, x[:, order])[1], expected[:, order], atol=1e-5, rtol=1e-4
        )
        assert torch.isfinite(family.loss(dense, batches[0]))


def test_deepseek_has_no_dense_form():
    from subclone_viz.moe_dense import moe_to_dense

    parent = sv.load_parent(tiny_model("deepseek_v3"), device="cpu")
    with pytest.raises(SpecError, match="expert groups"):
        moe_to_dense(parent, None, sv.DestinationSpec(layers=2, hidden=32))


def test_stability_resamples_the_expert_choices_like_the_dense_rankings():
    from subclone_viz.experts import expert_scores, select_experts
    from subclone_viz.stability import resample_counts

    parent = sv.load_parent(tiny_model("mixtral"), device="cpu")  # 4 MoE blocks of 6 experts, width 24
    prof = sv.profile(parent, tiny_batches("mixtral", count=8), progress=False, shards=4)
    spec = sv.DestinationSpec(layers=4, hidden=32, ffn=12, experts=3)  # Mixtral: ffn is the experts' width
    st = sv.stability(parent, prof, spec, resamples=6, experts_by="frequency", seed=3)
    assert st.expert_frequency.shape == (4, 6) and st.expert_ffn_frequency.shape == (4, 6, 24)
    assert st.expert_jaccard.shape == st.expert_ffn_jaccard.shape == st.residual_jaccard.shape == (6,)
    # The frequencies are those of re-selecting on each resample's own expert scores, drawn as stability draws.
    rng, expected = np.random.default_rng(3), np.zeros((4, 6))
    for _ in range(6):
        scores = expert_scores(
            prof.resample(resample_counts(4, np.flatnonzero(prof.shards["tokens"]), "bootstrap", rng))
        )
        for b in range(4):
            expected[b, select_experts(scores[b], 3)] += 1
    np.testing.assert_allclose(st.expert_frequency, expected / 6)
    # Each kept expert keeps 12 of its own neurons.
    np.testing.assert_allclose(st.expert_ffn_frequency.sum(-1), 12 * st.expert_frequency)
    summary = st.summary()["mean_jaccard_with_full"]
    assert 0 <= summary["experts"] <= 1 and 0 <= summary["expert_ffn"] <= 1
    assert {"experts", "expert_ffn"} <= set(st.pairwise_jaccard)
    whole = sv.stability(
        parent, prof, sv.DestinationSpec(layers=4, hidden=32, experts=6), resamples=2, loss_resamples=0
    )
    np.testing.assert_allclose(whole.expert_jaccard, 1.0)  # keeping every expert cannot change
    np.testing.assert_allclose(whole.expert_frequency, 1.0)
    dense = sv.load_parent(tiny_model("llama"), device="cpu")
    dense_prof = sv.profile(dense, tiny_batches("llama", count=4), progress=False, shards=2)
    plain = sv.stability(dense, dense_prof, sv.DestinationSpec(layers=2, hidden=48), resamples=2, loss_resamples=0)
    assert plain.expert_frequency is None and "experts" not in plain.summary()["mean_jaccard_with_full"]


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_expert_views(backend):
    from subclone_viz import plots

    parent = sv.load_parent(tiny_model("qwen2_moe"), device="cpu")  # block 1 is dense
    prof = sv.profile(parent, tiny_batches("qwen2_moe"), progress=False)
    load = plots.expert_load_heatmap(prof, backend=backend)
    curves = plots.expert_neuron_curves(prof, layer=0, backend=backend)
    if backend == "plotly":
        z = np.asarray(load.data[0].z)
        np.testing.assert_allclose(z.sum(1), [1, 0, 1, 1])  # each MoE block's shares sum to 1; the dense one is 0
        assert len(curves.data) == parent.dims.experts
    else:
        assert len(curves.axes[0].lines) == parent.dims.experts
    dense = sv.load_parent(tiny_model("llama"), device="cpu")
    with pytest.raises(ValueError, match="no expert statistics"):
        plots.expert_load_heatmap(sv.profile(dense, tiny_batches("llama"), progress=False))


def test_active_parameters_count_top_k_of_the_routed_experts():
    from subclone_viz.experts import parameter_counts

    parent = sv.load_parent(tiny_model("mixtral"), device="cpu")  # 4 MoE blocks, 6 experts of (48 + 24) x 32, top-2
    counts = parameter_counts(parent.model, parent.family)
    routed = 4 * 6 * (48 * 32 + 32 * 24)
    assert counts["total"] - counts["active"] == routed - routed * 2 // 6
    dense = sv.load_parent(tiny_model("llama"), device="cpu")
    assert len(set(parameter_counts(dense.model, dense.family).values())) == 1


def test_importance_explorer_and_studio_show_experts():
    from subclone_viz import widgets

    parent = sv.load_parent(tiny_model("qwen2_moe"), device="cpu")  # block 1 is dense
    batches = tiny_batches("qwen2_moe")
    prof = sv.profile(parent, batches, progress=False)
    explorer = widgets.ImportanceExplorer(prof)
    assert list(explorer.expert_layer.options) == [0, 2, 3]
    explorer.expert_layer.value = 2
    assert len(explorer.expert_neuron_figure.data) == parent.dims.experts
    studio = widgets.SubcloneStudio(parent, prof, batches)
    assert list(studio.experts.options) == list(range(1, 7))
    studio.experts.value = 3
    assert studio.spec().experts == 3 and studio.plan.destination_dims.experts == 3


def test_report_has_an_experts_section(tmp_path):
    from subclone_viz.report import build_report

    parent = sv.load_parent(tiny_model("mixtral"), device="cpu")
    prof = sv.profile(parent, tiny_batches("mixtral"), progress=False)
    p = sv.plan(parent, prof, sv.DestinationSpec(layers=3, hidden=32, experts=3))
    page = build_report(parent, prof, plan=p, out=tmp_path / "report.html").read_text()
    assert 'id="experts"' in page and f"block {p.layers[-1]}: {p.experts[-1]}" in page
