"""The views of what a cut loses, driven without a browser: predictions through depth in the residual explorer,
the studio's compare-outputs and similarity tabs, image predictions for a ViT."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from test_widgets import word_tokenizer

import subclone_viz as sv
from subclone_viz import widgets
from tiny import tiny_batches, tiny_model

TEXT = "w3 w14 w15 w92 w65"


def _llama():
    parent = sv.load_parent(tiny_model("llama"), processor=word_tokenizer())
    batches = tiny_batches("llama", count=2, pad=False)
    return parent, sv.profile(parent, batches, progress=False), batches


def test_predictions_through_depth_follow_the_studios_destination(tmp_path: Path) -> None:
    parent, profile, batches = _llama()
    explorer = widgets.Explorer(parent, profile, batches, grid_layers=[4], grid_hidden=[48], save_dir=tmp_path)
    depth = explorer.residual.depth
    depth.text.value = TEXT
    assert [label for label, _ in depth.token.options][-1] == "4: 'w65'"
    assert table_rows(depth.table.value)[0] == ["layer", "parent"] and len(table_rows(depth.table.value)) == 1 + 5
    studio = explorer.studio
    studio.layers.value, studio.hidden.value = 2, 24
    result = studio.subclone()
    rows = table_rows(depth.table.value)
    assert rows[0] == ["layer", "parent", "destination"]
    removed = [b for b in range(4) if b not in result.plan.layers]
    assert [rows[b + 2][2] for b in removed] == ["skipped (block removed)"] * len(removed)
    shown = depth.table.value
    depth.token.value = 1  # a redraw from the lenses already read
    expected = depth.lenses["parent"].predictions(2, 0, 1)
    assert depth.table.value != shown
    assert table_rows(depth.table.value)[3][1].startswith(f"{expected[0][0]!r} {expected[0][1]:.2f}")
    assert len(depth.loss_figure.data) == 2


def table_rows(page: str) -> list[list[str]]:
    """The header and body rows of an HTML table, each as its cells' texts."""
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    return [[html.unescape(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)] for row in rows]


def test_compare_outputs_streams_every_model_and_colours_the_losses(tmp_path: Path) -> None:
    parent, profile, batches = _llama()
    studio = widgets.SubcloneStudio(parent, profile, batches, batches, save_dir=tmp_path, steps=2)
    studio.hidden.value = 24
    studio.subclone()
    studio.inits.value = ("random", "subclone")
    studio.train()
    studio.training_thread.join(timeout=120)
    assert sorted(studio.trained_models) == ["random", "subclone"]
    outputs = studio.views.outputs
    outputs.prompt.value, outputs.max_new_tokens.value = TEXT, 5
    generations = outputs.generate()
    assert list(generations.texts) == ["parent", "subclone (untrained)", "random (trained)", "subclone (trained)"]
    shown = [box.value for box in outputs.outputs.children]
    for box, (name, text) in zip(shown, generations.texts.items()):
        assert name in box and text.strip().split(" ")[-1] in box
    assert list(outputs.loss_model.options) == ["subclone (untrained)", "random (trained)", "subclone (trained)"]
    assert "rgba(" in outputs.loss_text.value
    outputs.prompt.value = "  "
    assert outputs.generate() is None and "is empty" in outputs.message.value
    similarities = studio.views.similarity.measure()
    assert list(similarities) == ["before training", "after training"]
    assert len(studio.views.similarity.figures.children) == 3
    assert not np.allclose(similarities["before training"].cka, similarities["after training"].cka)


def test_image_parent_shows_predicted_classes(tmp_path: Path) -> None:
    parent = sv.load_parent(tiny_model("vit"))
    batches = tiny_batches("vit", count=2, batch_size=3)
    profile = sv.profile(parent, batches, progress=False)
    studio = widgets.SubcloneStudio(parent, profile, batches, batches, save_dir=tmp_path, steps=2)
    assert studio.views.outputs is None
    studio.subclone()
    lenses = studio.views.images.predict()
    assert list(lenses) == ["parent", "subclone (untrained)"]
    assert len(studio.views.images.figure.data) == 3
    residual = widgets.ResidualExplorer(parent, profile, batch=batches[0])
    assert [label for label, _ in residual.depth.token.options] == ["image 0", "image 1", "image 2"]
