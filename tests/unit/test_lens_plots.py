"""The figures of what a cut loses, from real records on tiny models: both backends where offered."""

import numpy as np
import pytest

import subclone_viz as sv
from subclone_viz import plots
from tiny import tiny_batches, tiny_model, word_tokenizer


@pytest.fixture(scope="module")
def cut():
    parent = sv.load_parent(tiny_model("llama"), device="cpu", processor=word_tokenizer())
    batches = tiny_batches("llama")
    plan = sv.plan(parent, sv.profile(parent, batches, progress=False), sv.DestinationSpec(layers=2, hidden=24))
    return parent, batches, plan, sv.subclone(parent, plan)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_lens_and_similarity_figures(cut, backend):
    parent, batches, plan, child = cut
    lenses = {"parent": sv.logit_lens(parent, None, batches[0]), "subclone": sv.logit_lens(child, None, batches[0])}
    fig = plots.lens_loss(lenses, backend=backend)
    similarity = sv.layer_similarity(parent, child, plan, batches)
    heat = plots.similarity_heatmap(similarity, backend=backend)
    lines = plots.similarity_by_layer({"before": similarity, "again": similarity}, backend=backend)
    if backend == "plotly":
        np.testing.assert_array_equal(fig.data[1].x, [0, *(b + 1 for b in plan.layers)])
        assert heat.data[0].z.shape == (5, 3) and list(heat.data[1].y) == similarity.matches
        assert len(lines.data) == 4


def test_predictions_through_depth_marks_removed_blocks(cut):
    parent, batches, plan, child = cut
    p, d = sv.logit_lens(parent, None, batches[0]), sv.logit_lens(child, None, batches[0])
    fig = plots.predictions_through_depth(p, d, sequence=1, position=3)
    cells = fig.data[0].cells.values
    removed = [b for b in range(parent.dims.layers) if b not in plan.layers]
    assert [cells[2][b + 1] for b in removed] == ["skipped (block removed)"] * len(removed)
    assert all("skipped" not in cells[2][b + 1] for b in plan.layers)
    with pytest.raises(ValueError, match="outside the batch"):
        plots.predictions_through_depth(p, d, sequence=5)


def test_token_loss_html_colours_worse_tokens_red(cut):
    parent, batches, plan, child = cut
    losses = sv.token_losses({"parent": parent, "subclone": child}, batches[0])
    text = plots.token_loss_html(losses, "subclone", sequence=1)
    delta = losses.difference("subclone")[1]
    assert text.count("rgba(214, 39, 40") == int((delta > 0).sum())
    assert text.count("rgba(31, 119, 180") == int((delta <= 0).sum())


def test_image_predictions_title_each_model():
    parent = sv.load_parent(tiny_model("vit"), device="cpu")
    batch = tiny_batches("vit")[0]
    lens = sv.logit_lens(parent, None, batch)
    fig = plots.image_predictions({"parent": lens, "copy": lens}, batch["pixel_values"].numpy(), count=2)
    assert len(fig.data) == 2
    assert "parent: " in fig.layout.annotations[0].text and "copy: " in fig.layout.annotations[0].text


def test_report_shows_what_the_cut_loses(cut, tmp_path):
    from subclone_viz.report import build_report

    parent, batches, plan, child = cut
    prof = sv.profile(parent, batches, progress=False)
    lenses = {"parent": sv.logit_lens(parent, None, batches[0]), "subclone": sv.logit_lens(child, None, batches[0])}
    similarity = sv.layer_similarity(parent, child, plan, batches)
    page = build_report(
        parent, prof, plan, lenses=lenses, similarities={"before training": similarity}, out=tmp_path / "report.html"
    ).read_text()
    assert '<section id="cut">' in page and 'href="#cut"' in page
    assert 'id="figure-lens-loss"' in page and 'id="figure-similarity-0"' in page
    assert f"{lenses['subclone'].loss[-1]:.4g}" in page
    plain = build_report(parent, prof, plan, out=tmp_path / "plain.html").read_text()
    assert '<section id="cut">' not in plain
