"""Tests of subclone_viz.widgets: controls drive library calls, and the figures and state show their results.

Tiny random parents from tests/tiny.py; the text ones get a word-level tokenizer built in memory ("w0".."w94"
are one token each), so the token picker has real tokens without any download. Nothing here needs a front
end: button clicks and value changes fire their handlers in the kernel, and the tests read the figures'
data and the explorers' state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.basedatatypes import Undefined
from plotly.callbacks import Points
from plotly.utils import PlotlyJSONEncoder
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import subclone_viz as sv
from subclone_viz import widgets
from subclone_viz.plan import select_layers
from subclone_viz.profile import BLOCK_METRICS
from tiny import VOCAB, tiny_batches, tiny_model

TEXT = "w3 w14 w15 w92 w65"


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per word w0..w94; ids fit the tiny models' vocabulary of VOCAB."""
    vocab = {"[UNK]": 0, "</s>": 1, **{f"w{i}": i + 2 for i in range(VOCAB - 2)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")


@pytest.fixture(scope="module")
def llama():
    """A tiny grouped-query Llama parent (4 blocks, 48 wide, 6 heads / 2 KV) with its profile and batches."""
    parent = sv.load_parent(tiny_model("llama"), processor=word_tokenizer())
    batches = tiny_batches("llama", count=2, pad=False)
    return parent, sv.profile(parent, batches, progress=False), batches


@pytest.fixture
def studio(llama, tmp_path: Path) -> widgets.SubcloneStudio:
    parent, profile, batches = llama
    return widgets.SubcloneStudio(parent, profile, batches, batches, save_dir=tmp_path / "subclones", steps=3)


def removed_blocks(figure: go.FigureWidget) -> set[int]:
    """Blocks the residual-ratio figure marks removed (x markers)."""
    trace = figure.data[0]
    return {int(x) for x, symbol in zip(trace.x, trace.marker.symbol) if symbol == "x"}


# ------------------------------------------------------------------------------------------------ residual


def test_residual_metric_dropdown_redraws_the_metric(llama) -> None:
    parent, profile, _ = llama
    explorer = widgets.ResidualExplorer(parent, profile, text=TEXT)
    np.testing.assert_allclose(explorer.residual_figure.data[0].y, profile.block_metrics["f_over_sum"])
    explorer.metric.value = "one_minus_cos"
    np.testing.assert_allclose(explorer.residual_figure.data[0].y, profile.block_metrics["one_minus_cos"])
    explorer.metric.value = "all"
    assert len(explorer.residual_figure.data) == len(BLOCK_METRICS)
    assert explorer.ablation_figure is None


def test_ablation_is_plotted_beside_the_metrics(llama) -> None:
    parent, profile, batches = llama
    ablation = sv.block_ablation(parent, batches, progress=False)
    explorer = widgets.ResidualExplorer(parent, profile, ablation, text=TEXT)
    removed = next(t for t in explorer.ablation_figure.data if t.name == "block removed")
    np.testing.assert_allclose(removed.y, ablation.removed)


def test_token_picker_traces_the_chosen_token(llama) -> None:
    parent, profile, _ = llama
    explorer = widgets.ResidualExplorer(parent, profile, text=TEXT)
    assert [label for label, _ in explorer.token.options] == [f"{i}: {w!r}" for i, w in enumerate(TEXT.split())]
    assert explorer.trace.token_index == 4  # the last token first

    explorer.token.value = 1
    expected = sv.token_trace(parent, TEXT, token_index=1)
    assert explorer.trace.token == "w14"
    np.testing.assert_allclose(explorer.trace_figure.data[0].y, expected.norms)

    explorer.text.value = "w7 w8"
    assert [value for _, value in explorer.token.options] == [0, 1]
    assert explorer.trace.token == "w8"
    np.testing.assert_allclose(explorer.trace_figure.data[0].y, sv.token_trace(parent, "w7 w8", -1).norms)


def test_layer_slider_moves_the_marker_and_the_readout(llama) -> None:
    parent, profile, _ = llama
    explorer = widgets.ResidualExplorer(parent, profile, text=TEXT)
    explorer.layer.value = 3
    assert {shape.x0 for shape in explorer.trace_figure.layout.shapes} == {3}  # one line per subplot
    assert f"{explorer.trace.f_over_sum[2]:.3f}" in explorer.layer_readout.value
    assert explorer.layer.max == profile.num_layers


def test_image_parent_picks_images_of_a_batch() -> None:
    parent = sv.load_parent(tiny_model("vit"))
    batches = tiny_batches("vit", count=2, batch_size=3)
    profile = sv.profile(parent, batches, progress=False)
    explorer = widgets.ResidualExplorer(parent, profile, batch=batches[0])
    assert explorer.text is None
    assert [value for _, value in explorer.token.options] == [0, 1, 2]
    explorer.token.value = 2
    assert explorer.trace.sequence_index == 2
    np.testing.assert_allclose(
        explorer.trace_figure.data[0].y, sv.token_trace(parent, batches[0], 0, sequence_index=2).norms
    )


# ------------------------------------------------------------------------------------------------ importance


def test_importance_controls_redraw_their_figures(llama) -> None:
    _, profile, _ = llama
    explorer = widgets.ImportanceExplorer(profile)
    ranked = profile.residual_importance[:, profile.shared_ranking()]
    np.testing.assert_allclose(explorer.channel_figure.data[0].z, np.log10(ranked))
    explorer.log.value = False
    np.testing.assert_allclose(explorer.channel_figure.data[0].z, ranked)

    np.testing.assert_allclose(explorer.consistency_figure.data[0].z, profile.rank_consistency().spearman)
    assert explorer.k.disabled
    explorer.kind.value = "topk"
    explorer.k.value = 5
    np.testing.assert_allclose(explorer.consistency_figure.data[0].z, profile.rank_consistency(5).topk_overlap)

    explorer.ffn_layer.value = 2
    np.testing.assert_allclose(explorer.ffn_figure.data[0].y, np.sort(profile.ffn_importance[2])[::-1])

    explorer.massive_count.value = 3
    assert len(explorer.massive_figure.data) == 3 + 1  # three channels and the median
    np.testing.assert_allclose(explorer.head_figure.data[0].z, profile.head_importance)


# ------------------------------------------------------------------------------------------------ studio


def test_layer_slider_marks_removed_blocks(studio: widgets.SubcloneStudio) -> None:
    studio.layers.value = 3
    assert removed_blocks(studio.residual_figure) == {2}  # middle: keep 0, 1 and 3
    studio.layers.value = 2
    assert removed_blocks(studio.residual_figure) == {1, 2}
    assert studio.plan.layers == [0, 3]
    studio.depth.value = "first"
    assert removed_blocks(studio.residual_figure) == {2, 3}
    studio.layers.value = 4
    assert removed_blocks(studio.residual_figure) == set()


class BrowserLayout:
    """The layout a browser holds for a FigureWidget: the kernel's layout when it is attached, with every later
    relayout and update message from the kernel merged in by the front end's rule (plotly's widget model and
    Plotly.relayout alike): a key set to null is removed, any other replaces the old value, and a key the
    message does not name stays as it was."""

    def __init__(self, figure: go.FigureWidget) -> None:
        self.layout = figure.layout.to_plotly_json()
        figure.observe(self._merge, names=["_py2js_relayout", "_py2js_update"])

    def _merge(self, change: dict) -> None:
        message = change["new"] or {}
        for key, value in (message.get("relayout_data") or message.get("layout_data") or {}).items():
            if value is None:
                self.layout.pop(key, None)
            else:
                self.layout[key] = value

    def shapes(self) -> list:
        return list(self.layout.get("shapes") or [])


class BrowserTraces:
    """The traces a browser holds for a FigureWidget: the kernel's when it is attached, with every later trace
    message merged in by the front end's rule: added traces appended, deleted ones removed, and a restyle (alone or
    in an update) sets each named property of each trace it lists, a null removing it, a value left undefined
    leaving it as it was."""

    def __init__(self, figure: go.FigureWidget) -> None:
        self.traces = [trace.to_plotly_json() for trace in figure.data]
        self.messages: list[str] = []
        names = ["_py2js_addTraces", "_py2js_deleteTraces", "_py2js_restyle", "_py2js_update", "_py2js_relayout"]
        figure.observe(self._merge, names=names)

    def _merge(self, change: dict) -> None:
        message = change["new"]
        if message is None:  # plotly resets each message property right after sending it
            return
        self.messages.append(change["name"].removeprefix("_py2js_"))
        if "trace_data" in message:
            self.traces.extend(message["trace_data"])
        for index in sorted(message.get("delete_inds") or [], reverse=True):
            del self.traces[index]
        style = message.get("restyle_data") or message.get("style_data") or {}
        indexes = message.get("restyle_traces") or message.get("style_traces") or []
        for key, values in style.items():
            for index, value in zip(indexes, values):
                if value is None:
                    self.traces[index].pop(key, None)
                elif value is not Undefined:
                    self.traces[index][key] = value


def same_traces(browser: list[dict], figure: go.Figure) -> bool:
    wanted = [trace.to_plotly_json() for trace in figure.data]
    strip = [[{k: v for k, v in t.items() if k != "uid"} for t in traces] for traces in (browser, wanted)]
    return json.dumps(strip[0], cls=PlotlyJSONEncoder) == json.dumps(strip[1], cls=PlotlyJSONEncoder)


def test_a_redraw_with_the_same_kinds_of_traces_restyles_them_in_one_message() -> None:
    before = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], zmin=0, zmax=4, colorscale="Blues", name="spearman"))
    figure = widgets._figure(before, 300)
    browser = BrowserTraces(figure)
    after = go.Figure(go.Heatmap(z=np.array([[0.5, 1.0], [1.0, 0.5]]), name="top-k"))
    widgets._refresh(figure, after)
    assert browser.messages == ["update"]  # one Plotly.update: one redraw, where a delete and an add made two more
    assert same_traces(browser.traces, after) and same_traces([t.to_plotly_json() for t in figure.data], after)
    assert figure.data[0].zmin is None and "colorscale" not in browser.traces[0]  # what the new figure lacks is gone
    widgets._refresh(figure, go.Figure([go.Scatter(x=[1, 2], y=[3, 4]), go.Scatter(x=[1], y=[2])]))
    assert browser.messages[1:] == ["deleteTraces", "addTraces"]  # other kinds: replaced
    assert [t["type"] for t in browser.traces] == ["scatter", "scatter"]


def test_the_browser_clears_the_removed_band_when_every_block_is_kept(llama, tmp_path: Path) -> None:
    parent, profile, batches = llama
    studio = widgets.SubcloneStudio(parent, profile, batches, batches, save_dir=tmp_path / "subclones")
    browser = BrowserLayout(studio.residual_figure)
    assert browser.shapes(), "the default destination (3 of 4 blocks) shows a removed band"
    studio.show_spec(sv.DestinationSpec(layers=4, hidden=48))  # notebook 05: every block kept
    assert studio.residual_figure.layout.shapes == () and browser.shapes() == []
    studio.layers.value = 2
    assert len(browser.shapes()) == len(studio.residual_figure.layout.shapes) == 1  # one band over blocks 1-2
    studio.layers.value = 4
    assert studio.residual_figure.layout.shapes == () and browser.shapes() == []
    assert set(browser.layout) >= set(studio.residual_figure.layout.to_plotly_json())


def test_width_sliders_offer_only_valid_values(studio: widgets.SubcloneStudio, llama) -> None:
    parent = llama[0]
    choices = sv.spec_choices(parent)
    for control, field in ((studio.hidden, "hidden"), (studio.ffn, "ffn"), (studio.heads, "heads")):
        assert list(control.options) == choices[field]
    studio.hidden.value = 24
    resolved = sv.DestinationSpec(layers=1, hidden=24).resolve(parent.dims, parent.family.heads_follow_hidden)
    assert (studio.ffn.value, studio.heads.value) == (resolved.ffn, resolved.heads)
    assert studio.plan.destination_dims.hidden == 24


def test_an_invalid_spec_is_explained_not_planned(studio: widgets.SubcloneStudio) -> None:
    studio.depth.value = "first"
    studio.layers.value = 6  # deeper than the parent: only "middle" can grow
    assert studio.plan is None
    assert "depth='middle'" in studio.plan_error
    studio.subclone_button.click()
    assert studio.last_result is None
    assert studio.last_error == studio.plan_error


def test_subclone_button_scores_and_saves(studio: widgets.SubcloneStudio, llama) -> None:
    parent, _, batches = llama
    studio.hidden.value = 24
    studio.subclone_button.click()
    result = studio.last_result
    assert studio.last_error is None and result is not None
    assert result.params == sum(p.numel() for p in result.model.parameters())
    assert result.loss == pytest.approx(sv.evaluate(result.model, parent.family, batches).loss)
    saved = json.loads((result.path / "subclone.json").read_text())
    assert saved["plan"]["layers"] == studio.plan.layers
    assert str(result.path) in studio.result.value

    studio.subclone_button.click()  # the same destination again: refused without overwrite
    assert "overwrite" in studio.last_error
    assert studio.last_result is result
    studio.overwrite.value = True
    studio.subclone_button.click()
    assert studio.last_error is None and studio.last_result is not result


def test_train_runs_compare_with_live_curves(studio: widgets.SubcloneStudio) -> None:
    studio.hidden.value = 24
    studio.inits.value = ("random", "subclone", "no-scaling")
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    comparison = studio.comparison
    assert comparison is not None and not comparison.stopped_early
    assert list(comparison.histories) == ["random", "subclone", "no-scaling"]
    assert all(h.last_step == 3 for h in comparison.histories.values())
    eval_curves = studio.curve_figures["eval_loss"].data
    assert [t.name for t in eval_curves] == ["random", "subclone", "no-scaling"]
    np.testing.assert_allclose(eval_curves[1].y, [r.loss for r in comparison.histories["subclone"].evals])
    assert "speedup" in studio.summary.value and "speedup_per_second" in studio.summary.value
    assert not studio.train_button.disabled and studio.stop_button.disabled


def test_stop_button_stops_training(studio: widgets.SubcloneStudio) -> None:
    studio.hidden.value = 24
    studio.steps.value = 5000
    studio.train_button.click()
    studio.stop_button.click()
    studio.training_thread.join(timeout=120)
    assert studio.comparison.stopped_early
    assert list(studio.comparison.histories) == ["random"]  # the second init never started
    assert studio.comparison.histories["random"].last_step < 5000


def test_encoder_parent_subclones_without_a_loss(tmp_path: Path) -> None:
    parent = sv.load_parent(tiny_model("bert"))
    batches = tiny_batches("bert", count=2)
    profile = sv.profile(parent, batches, progress=False)
    studio = widgets.SubcloneStudio(parent, profile, batches, save_dir=tmp_path)
    assert studio.heads.disabled  # BERT's heads follow its width
    assert studio.train_button.disabled
    studio.subclone_button.click()
    assert studio.last_result.loss is None and studio.last_result.path.is_dir()


# ------------------------------------------------------------------------------------------------ size grid


def test_selecting_a_cell_sets_the_studio(studio: widgets.SubcloneStudio, llama) -> None:
    parent, profile, batches = llama
    explorer = widgets.SizeGridExplorer(parent, profile, batches, studio=studio, layers=[2, 3], hidden=[12, 24, 36])
    studio.depth.value, studio.width.value = "first", "uniform"
    spec = explorer.select(1, 2)
    assert spec == sv.DestinationSpec(layers=3, hidden=36)
    assert (studio.layers.value, studio.hidden.value) == (3, 36)
    assert (studio.depth.value, studio.width.value, studio.scaling.value) == ("middle", "importance", "sqrt")
    assert studio.plan.layers == select_layers(parent.dims.layers, 3, "middle")
    assert removed_blocks(studio.residual_figure) == {2}
    (outline,) = explorer.figures["loss"].layout.shapes
    assert (outline.x0, outline.y0) == (2 - 0.5, 1 - 0.5)
    assert all(not figure.layout.shapes for name, figure in explorer.figures.items() if name != "loss")
    assert f"{explorer.grid.loss[1, 2]:.3f}" in explorer.cell_info.value


def test_clicking_a_heatmap_cell_selects_it(studio: widgets.SubcloneStudio, llama) -> None:
    parent, profile, batches = llama
    explorer = widgets.SizeGridExplorer(parent, profile, batches, studio=studio, layers=[2, 3], hidden=[12, 24])
    for i, j in [(0, 1), (1, 0)]:  # the second click lands on redrawn traces
        heatmap = explorer.figures["params"].data[0]
        heatmap._dispatch_on_click(Points(point_inds=[[i, j]], xs=[j], ys=[i], trace_name="", trace_index=0), None)
        assert explorer.selected == (i, j)
        assert (studio.layers.value, studio.hidden.value) == (explorer.grid.layers[i], explorer.grid.hidden[j])


def test_an_invalid_cell_is_explained_not_sent(studio: widgets.SubcloneStudio, llama) -> None:
    parent, profile, batches = llama
    explorer = widgets.SizeGridExplorer(parent, profile, batches, studio=studio, layers=[2], hidden=[24, 64])
    assert math.isnan(explorer.grid.loss[0, 1])  # wider than the parent's 48
    before = studio.spec()
    assert explorer.select(0, 1) is None
    assert "hidden=64" in explorer.cell_info.value
    assert explorer.selected is None and studio.spec() == before


def test_explorer_links_the_size_grid_to_the_studio(llama, tmp_path: Path) -> None:
    parent, profile, batches = llama
    explorer = widgets.Explorer(parent, profile, batches, grid_layers=[2, 4], grid_hidden=[24], save_dir=tmp_path)
    assert len(explorer.widget.children) == 5
    assert explorer.widget.get_title(3) == "Sizes" and explorer.widget.get_title(4) == "Calibration"
    explorer.sizes.select(0, 0)
    assert (explorer.studio.layers.value, explorer.studio.hidden.value) == (2, 24)


def test_explorer_of_an_image_parent_traces_held_out_images(tmp_path: Path) -> None:
    parent = sv.load_parent(tiny_model("vit"))
    batches = tiny_batches("vit", count=2, batch_size=3)
    profile = sv.profile(parent, batches, progress=False)
    explorer = widgets.Explorer(parent, profile, batches, grid_layers=[4], grid_hidden=[16], save_dir=tmp_path)
    assert explorer.residual.text is None and len(explorer.residual.token.options) == 3
    assert list(explorer.studio.curve_figures) == ["train_loss", "eval_loss", "eval_accuracy"]


# ------------------------------------------------------------------------------------------------ estimators and stability


def test_studio_importance_menu_replans_with_the_chosen_estimator(studio, llama) -> None:
    parent, profile, _ = llama
    assert "taylor" not in studio.importance.options  # the profile has no gradient pass
    assert studio.plan.importance == "paper"
    studio.importance.value = "layer_normalized"
    expected = sv.plan(parent, profile, studio.spec(), depth=studio.depth.value, importance="layer_normalized")
    assert studio.plan == expected
    studio.width.value = "uniform"
    assert studio.importance.disabled


def test_stability_explorer_resamples_on_every_control_and_scores_on_demand(llama) -> None:
    parent, profile, batches = llama
    explorer = widgets.StabilityExplorer(parent, profile, batches, resamples=4, max_batches=1)
    assert set(explorer.figures) == {"residual", "ffn", "heads"} and explorer.error is None
    assert explorer.stability.residual_frequency.sum() == pytest.approx(explorer.hidden.value)
    explorer.hidden.value = 24
    bars = np.asarray(explorer.figures["residual"].data[0].y)
    np.testing.assert_allclose(bars, np.sort(explorer.stability.residual_frequency)[::-1])
    assert bars.sum() == pytest.approx(24)
    assert len(explorer.stability.losses) == 0
    explorer.loss_resamples.value = 2
    explorer.loss_button.click()
    assert len(explorer.stability.losses) == 2 and "held-out loss before training" in explorer.summary.value


def test_stability_explorer_explains_a_profile_without_shards(llama) -> None:
    parent, profile, batches = llama
    old = sv.Profile(**{**profile.__dict__, "shards": {}})
    explorer = widgets.StabilityExplorer(parent, old, batches)
    assert explorer.stability is None and explorer.figures == {}
    assert "keeps no per-shard sums" in explorer.summary.value
