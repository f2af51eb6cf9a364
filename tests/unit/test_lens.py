"""What a cut loses, on a tiny model of every family: the logit lens equals the model's own output at the last
layer, a reorder-only destination scores 1.0 in similarity and writes the parent's greedy text, per-token
losses agree with the family's loss, and bad inputs are refused before any model runs."""

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.errors import UserError
from subclone_viz.families.base import NoReadoutError
from tiny import TINY_FAMILIES, WORDS, tiny_batches, tiny_model, word_tokenizer

CAUSAL = [n for n in TINY_FAMILIES if sv.family_of(tiny_model(n)).task == "causal-lm"]


def full_spec(dims):
    return sv.DestinationSpec(
        layers=dims.layers, hidden=dims.hidden, ffn=dims.ffn, heads=dims.heads, kv_heads=dims.kv_heads
    )


@pytest.fixture(params=list(TINY_FAMILIES), scope="module")
def reordered(request):
    """(name, parent, batches, a reorder-only plan, its destination) for every tiny family."""
    name = request.param
    tokenizer = word_tokenizer() if name in CAUSAL else None
    parent = sv.load_parent(tiny_model(name), device="cpu", processor=tokenizer)
    batches = tiny_batches(name)
    plan = sv.plan(parent, sv.profile(parent, batches, progress=False), full_spec(parent.dims))
    assert plan.residual != sorted(plan.residual)
    return name, parent, batches, plan, sv.subclone(parent, plan)


def test_lens_last_layer_is_the_models_own_output(reordered):
    name, parent, batches, plan, child = reordered
    if parent.family.task == "encoder":
        with pytest.raises(NoReadoutError, match="no output head"):
            sv.logit_lens(parent, None, batches[0])
        return
    for model in (parent, child):
        lens = sv.logit_lens(model, None, batches[0], top_k=4)
        module = model.model if isinstance(model, sv.Parent) else model
        with torch.no_grad():
            logits = parent.family.logits(module, batches[0]).float()
        logits = logits[:, None] if logits.dim() == 2 else logits  # images: one position
        top = torch.log_softmax(logits, -1).topk(4, dim=-1)
        np.testing.assert_array_equal(lens.top_ids[-1], top.indices.numpy())
        np.testing.assert_allclose(lens.top_probs[-1], top.values.exp().numpy(), rtol=1e-5, atol=1e-7)
        assert len(lens.labels) == parent.dims.layers + 1 and lens.labels[0] == "embedding"
    if parent.family.task == "causal-lm":
        torch.testing.assert_close(
            float(lens.loss[-1]), float(parent.family.loss(child, batches[0]).detach()), rtol=1e-5, atol=1e-5
        )


def test_lens_labels_destination_layers_by_parent_block():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama")
    plan = sv.plan(parent, sv.profile(parent, batches, progress=False), sv.DestinationSpec(layers=2, hidden=24))
    lens = sv.logit_lens(sv.subclone(parent, plan), None, batches[0])
    assert lens.sources == [None, *plan.layers]
    assert lens.labels == ["embedding", f"block 0 (parent {plan.layers[0]})", f"block 1 (parent {plan.layers[1]})"]
    assert (lens.target_rank[:, 0, -4:] == -1).all()  # padding predicts nothing
    again = sv.LogitLens.from_dict(lens.to_dict())
    np.testing.assert_array_equal(again.top_ids, lens.top_ids)
    np.testing.assert_allclose(again.loss, lens.loss)


def test_reorder_only_plan_scores_one_everywhere(reordered):
    name, parent, batches, plan, child = reordered
    similarity = sv.layer_similarity(parent, child, plan, batches)
    assert similarity.matches == list(range(parent.dims.layers + 1))
    np.testing.assert_allclose(similarity.cka, 1.0, atol=1e-6)
    np.testing.assert_allclose(similarity.cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.diag(similarity.cosine_matrix), similarity.cosine)


def test_similarity_of_a_cut_matches_a_brute_force_cka():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    batches = tiny_batches("gpt2", pad=False)
    plan = sv.plan(parent, sv.profile(parent, batches, progress=False), sv.DestinationSpec(layers=2, hidden=16))
    child = sv.subclone(parent, plan)
    similarity = sv.layer_similarity(parent, child, None, batches)
    with torch.no_grad():
        xs = [parent.model(**b, output_hidden_states=True).hidden_states for b in batches]
        ys = [child(**b, output_hidden_states=True).hidden_states for b in batches]
    for j, m in enumerate(similarity.matches[:-1]):  # HF's last hidden state is after the final norm
        x = torch.cat([h[m].reshape(-1, 32) for h in xs]).double()
        y = torch.cat([h[j].reshape(-1, 16) for h in ys]).double()
        cos = torch.nn.functional.cosine_similarity(x[:, plan.residual], y, dim=-1)  # (tokens,)
        assert similarity.cosine[j] == pytest.approx(float(cos.mean()), rel=1e-5)
        x, y = x - x.mean(0), y - y.mean(0)
        expected = (y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())
        assert similarity.cka[j] == pytest.approx(float(expected), rel=1e-6)
    assert similarity.cka[-1] < 1


@pytest.mark.parametrize("name", CAUSAL)
def test_reorder_only_destination_writes_the_parents_greedy_text(name, reordered_generation):
    parent, child = reordered_generation(name)
    streamed = []
    out = sv.generate(
        {"parent": parent, "subclone": child},
        " ".join(WORDS[:6]),
        max_new_tokens=8,
        on_token=lambda model, piece: streamed.append((model, piece)),
    )
    assert out.token_ids["subclone"] == out.token_ids["parent"] and len(out.token_ids["parent"]) == 8
    assert "".join(p for m, p in streamed if m == "parent") == out.texts["parent"]
    sampled = [sv.generate({"subclone": child}, "w1 w2", 6, do_sample=True, seed=7, top_k=20) for _ in range(2)]
    assert sampled[0].token_ids == sampled[1].token_ids


@pytest.fixture(scope="module")
def reordered_generation():
    def make(name):
        parent = sv.load_parent(tiny_model(name), device="cpu", processor=word_tokenizer())
        batches = tiny_batches(name)
        plan = sv.plan(parent, sv.profile(parent, batches, progress=False), full_spec(parent.dims))
        return parent, sv.subclone(parent, plan)

    return make


@pytest.mark.parametrize("name", ["llama", "bert-mlm", "vit"])
def test_token_losses_average_to_the_familys_loss(name):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batch = tiny_batches(name)[0]
    losses = sv.token_losses({"parent": parent}, batch)
    with torch.no_grad():
        expected = float(parent.family.loss(parent.model, batch))
    assert losses.mean("parent") == pytest.approx(expected, rel=1e-5)
    if name == "llama":
        assert np.isnan(losses.losses["parent"][:, 0]).all() and np.isnan(losses.losses["parent"][0, -4:]).all()
    np.testing.assert_array_equal(losses.difference("parent"), np.where(np.isnan(losses.losses["parent"]), np.nan, 0))


def test_bad_inputs_are_refused_before_any_work(monkeypatch):
    tokenizer = word_tokenizer()
    parent = sv.load_parent(tiny_model("llama"), device="cpu", processor=tokenizer)
    ran = []
    monkeypatch.setattr(type(parent.model), "generate", lambda *a, **k: ran.append(1))
    with pytest.raises(sv.GenerationError, match="prompt='' is empty"):
        sv.generate(parent, "", 5)
    with pytest.raises(sv.GenerationError, match="max_new_tokens=0 must be"):
        sv.generate(parent, "w1", 0)
    bare = tiny_model("llama")
    with pytest.raises(sv.NoTokenizerError, match="other has no tokenizer: load it"):
        sv.generate({"parent": parent, "other": bare}, "w1", 3)
    with pytest.raises(sv.GenerationError, match="does not generate text"):
        sv.generate(sv.load_parent(tiny_model("bert-mlm"), device="cpu", processor=tokenizer), "w1", 3)
    assert ran == []
    assert issubclass(sv.GenerationError, UserError) and issubclass(sv.PlanMismatchError, UserError)


def test_a_plan_that_does_not_fit_is_refused():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama")
    prof = sv.profile(parent, batches, progress=False)
    plan = sv.plan(parent, prof, sv.DestinationSpec(layers=2, hidden=24))
    other = sv.plan(parent, prof, sv.DestinationSpec(layers=3, hidden=24))
    child = sv.subclone(parent, plan)
    with pytest.raises(sv.PlanMismatchError, match="does not describe"):
        sv.layer_similarity(parent, child, other, batches)
    with pytest.raises(sv.PlanMismatchError, match="does not describe"):
        sv.logit_lens(child, None, batches[0], plan=other)
    stranger = sv.load_parent(tiny_model("llama", seed=5), device="cpu")
    with pytest.raises(sv.PlanMismatchError, match="weights differ"):
        sv.layer_similarity(stranger, child, plan, batches)
    gpt2 = sv.load_parent(tiny_model("gpt2"), device="cpu")
    with pytest.raises(sv.PlanMismatchError, match="made for a llama parent"):
        sv.layer_similarity(gpt2, child, plan, batches)
    with pytest.raises(ValueError, match="top_k=0 must be"):
        sv.logit_lens(parent, None, batches[0], top_k=0)
    with pytest.raises(ValueError, match="reads batches with a 'input_ids' tensor"):
        sv.logit_lens(parent, None, {"pixel_values": torch.zeros(1)})
