"""Every control of every explorer driven with bad inputs: each error shows as one line in the view, nothing
raises out of a callback, and the view is left consistent (no trace of an old text beside a new one).

Bad inputs: empty and blank texts, a text far over the token limit, emoji, control characters, rapid repeats,
out-of-range cells, and folders that are empty, hold control characters or already hold the destination.
Tiny random parents from tests/tiny.py; a byte-level tokenizer built in memory splits an emoji into its four
bytes, as SmolLM2's does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import subclone_viz as sv
from subclone_viz import plots, widgets
from subclone_viz.errors import UserError
from subclone_viz.trace import TraceInputError, _byte_decoder, token_traces
from tiny import VOCAB, tiny_batches, tiny_model

EMOJI = "w1 😀 w2"
CONTROL = "w1\x00w2\x1b[31m\tw3\r\n"


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE without merges over a few bytes: every byte one token, as GPT-2-style vocabularies split
    a character they have no token for. Ids stay below the tiny models' VOCAB."""
    stand_in = {byte: char for char, byte in _byte_decoder().items()}
    chars = sorted({stand_in[b] for b in b"w0123456789 \t\r\n\x00\x1b["} | {stand_in[b] for b in "😀".encode()})
    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    assert len(vocab) < VOCAB
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


@pytest.fixture(scope="module")
def llama():
    parent = sv.load_parent(tiny_model("llama"), processor=byte_tokenizer())
    batches = tiny_batches("llama", count=2, pad=False)
    return parent, sv.profile(parent, batches, progress=False), batches


@pytest.fixture
def studio(llama, tmp_path: Path) -> widgets.SubcloneStudio:
    parent, profile, batches = llama
    return widgets.SubcloneStudio(parent, profile, batches, batches, save_dir=tmp_path / "subclones", steps=2)


def shown_error(html: str) -> bool:
    return 'class="widget-error"' in html or "#b00020" in html


def one_line(text: str | None) -> bool:
    return text is not None and "\n" not in text and len(text) < 400


# ------------------------------------------------------------------------------------------------ token trace


def test_token_trace_refuses_an_empty_text_up_front(llama) -> None:
    parent = llama[0]
    for text in ("", "   "):
        with pytest.raises(TraceInputError, match="empty") as caught:
            sv.token_trace(parent, text, -1)
        assert isinstance(caught.value, UserError)


def test_split_characters_show_their_bytes_and_the_text_they_belong_to(llama) -> None:
    parent = llama[0]
    traces = token_traces(parent, EMOJI)
    assert [t.token_index for t in traces] == list(range(len(traces)))
    tokens, spans = traces[0].tokens, traces[0].spans
    assert "\ufffd" not in "".join(tokens)
    assert tokens[3:7] == ["<F0>", "<9F>", "<98>", "<80>"] and spans[3:7] == ["😀"] * 4
    np_trace = sv.token_trace(parent, EMOJI, token_index=5)
    assert (np_trace.norms == traces[5].norms).all()  # the cached traces are the single-token ones

    explorer = widgets.ResidualExplorer(parent, llama[1], text=EMOJI)
    labels = [label for label, _ in explorer.token.options]
    assert labels[3] == "3: '<F0>' (part of '😀')" and labels[0] == "0: 'w'"


def test_bad_texts_show_one_line_and_clear_the_old_trace(llama) -> None:
    parent, profile, _ = llama
    explorer = widgets.ResidualExplorer(parent, profile, text="w1 w2")
    huge = "w1 " * 6000  # 18,000 characters
    for bad, expected in (
        ("", "empty"),
        ("  \t ", "empty"),
        (huge, f"at most {widgets.MAX_TRACE_TOKENS}"),
        ("w1 " * (widgets.MAX_TRACE_TOKENS // 2 + 1), f"at most {widgets.MAX_TRACE_TOKENS}"),
    ):
        explorer.text.value = "w3 w4"
        assert explorer.trace is not None and explorer.last_error is None
        explorer.text.value = bad
        assert expected in explorer.last_error and one_line(explorer.last_error), bad[:20]
        assert shown_error(explorer.trace_message.value)
        assert explorer.trace is None and explorer.token.options == ()
        assert explorer.trace_figure.layout.annotations, "a placeholder, not the previous text's trace"
        explorer.layer.value = 1  # the slider still works, with nothing to mark
    explorer.text.value = CONTROL  # control characters are text like any other
    assert explorer.last_error is None and not shown_error(explorer.trace_message.value)
    assert all(label.isprintable() for label, _ in explorer.token.options)


def test_rapid_repeats_leave_the_last_text_traced(llama) -> None:
    parent, profile, _ = llama
    explorer = widgets.ResidualExplorer(parent, profile, text="w1")
    for k in range(30):
        explorer.text.value = f"w{k % 7} w{k % 5} {'😀' if k % 3 else ''}"
        explorer.token.value = explorer.token.options[0][1]
        explorer.layer.value = k % (profile.num_layers + 1)
        explorer.metric.value = ("f_over_sum", "f_over_x", "one_minus_cos", "all")[k % 4]
    assert explorer.trace.token_index == 0 and explorer.last_error is None
    assert len(explorer._traces) <= widgets.CACHED_TEXTS
    expected = sv.token_trace(parent, explorer.text.value, token_index=0)
    assert list(explorer.trace_figure.data[0].y) == pytest.approx(list(expected.norms))


def test_an_unexpected_error_is_one_line_with_its_type(llama, monkeypatch) -> None:
    parent, profile, _ = llama
    explorer = widgets.ResidualExplorer(parent, profile, text="w1 w2")

    def broken(*args, **kwargs):
        raise RuntimeError("cannot reshape tensor of 0 elements\ninto shape [1, 0, -1]")

    monkeypatch.setattr(plots, "residual_ratio", broken)
    explorer.metric.value = "all"
    assert explorer.last_error.startswith("RuntimeError: cannot reshape") and one_line(explorer.last_error)
    assert shown_error(explorer.metric_message.value)
    monkeypatch.undo()
    explorer.metric.value = "f_over_x"
    assert explorer.last_error is None and explorer.metric_message.value == ""


# ------------------------------------------------------------------------------------------------ importance


def test_importance_controls_at_their_limits(llama) -> None:
    _, profile, _ = llama
    explorer = widgets.ImportanceExplorer(profile)
    for _ in range(3):
        for control in (explorer.massive_count, explorer.k, explorer.ffn_layer):
            control.value = control.max
            control.value = control.min
        explorer.kind.value = "topk" if explorer.kind.value == "spearman" else "spearman"
        explorer.log.value = not explorer.log.value
    assert explorer.last_error is None and explorer.message.value == ""


# ------------------------------------------------------------------------------------------------ studio


def test_an_empty_or_odd_save_folder_is_refused_before_any_work(studio, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(widgets, "subclone", lambda *a, **k: calls.append(1) or pytest.fail("subcloned"))
    for folder, expected in (
        ("", "'save under' box is empty"),
        ("   ", "'save under' box is empty"),
        ("runs\x00x", "control character"),
    ):
        studio.save_dir.value = folder
        studio.subclone_button.click()
        assert expected in studio.last_error and one_line(studio.last_error)
        assert shown_error(studio.result.value)
    assert calls == []


def test_an_existing_destination_is_refused_before_redoing_the_work(studio, monkeypatch) -> None:
    studio.subclone_button.click()
    first = studio.last_result
    assert first is not None and studio.last_error is None
    monkeypatch.setattr(widgets, "subclone", lambda *a, **k: pytest.fail("subcloned again"))
    for _ in range(3):  # rapid repeats
        studio.subclone_button.click()
        assert "tick 'overwrite'" in studio.last_error and "overwrite=True" not in studio.last_error
    assert studio.last_result is first and not studio.subclone_button.disabled


def test_odd_but_valid_folders_save(studio, tmp_path: Path) -> None:
    studio.save_dir.value = str(tmp_path / "leçons 😀")
    studio.subclone_button.click()
    assert studio.last_error is None and studio.last_result.path.parent.name == "leçons 😀"
    studio.save_dir.value = str(tmp_path / ("x" * 300))  # too long a name for the file system
    studio.subclone_button.click()
    assert one_line(studio.last_error) and shown_error(studio.result.value)


def test_training_controls_with_bad_inputs_and_rapid_clicks(studio) -> None:
    studio.inits.value = ()
    studio.train_button.click()
    assert "choose at least one initialization" in studio.last_error
    studio.inits.value = ("random",)
    studio.steps.value = 10**9  # clamped by the box
    assert studio.steps.value == studio.steps.max
    threads = set()
    for _ in range(5):
        studio.train_button.click()
        threads.add(studio.training_thread)
    assert len(threads) == 1, "repeated clicks start one run"
    for _ in range(5):
        studio.stop_button.click()
    studio.training_thread.join(timeout=120)
    assert studio.comparison.stopped_early and not studio.train_button.disabled


def test_sliders_dragged_back_and_forth_keep_a_valid_plan(studio) -> None:
    for k in range(20):
        studio.layers.value = studio.layers.max if k % 2 else studio.layers.min
        studio.hidden.value = studio.hidden.options[k % len(studio.hidden.options)]
    assert studio.plan is not None and studio.plan.destination_dims.layers == studio.layers.value


# ------------------------------------------------------------------------------------------------ size grid, stability


def test_a_cell_outside_the_grid_is_explained(studio, llama) -> None:
    parent, profile, batches = llama
    explorer = widgets.SizeGridExplorer(parent, profile, batches, studio=studio, layers=[2], hidden=[24])
    with pytest.raises(UserError, match="outside the grid"):
        explorer.select(3, 0)
    explorer._clicked(None, type("P", (), {"xs": [5], "ys": [0]})(), None)
    assert "outside the grid" in explorer.last_error and shown_error(explorer.cell_info.value)


def test_stability_controls_rapidly(llama) -> None:
    parent, profile, batches = llama
    explorer = widgets.StabilityExplorer(parent, profile, batches, resamples=3, max_batches=1)
    for k in range(6):
        explorer.resamples.value = explorer.resamples.min if k % 2 else 5
        explorer.method.value = widgets.METHODS[k % len(widgets.METHODS)]
    assert explorer.last_error is None and explorer.stability is not None


# ------------------------------------------------------------------------------------------------ progress


def test_training_status_says_step_i_of_n_elapsed_and_left_for_each_init(studio) -> None:
    assert studio.run_length.options[1][1] == widgets.LONGER_RUN * studio.steps.value
    studio.run_length.value = studio.run_length.options[1][1]
    assert studio.steps.value == widgets.LONGER_RUN * 2
    studio.run_length.value = studio.run_length.options[0][1]
    seen = []
    original = studio._on_record

    def record(history, record):
        original(history, record)
        seen.append(studio.progress_text())

    studio._on_record = record
    studio.inits.value = ("random", "subclone")
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    assert any(
        text.startswith("random: step 1 of 2, 0:0") and "left" in text and "then subclone (about" in text
        for text in seen
    ), seen
    assert any(text.startswith("random: done, 2 steps in") and "subclone: step" in text for text in seen), seen
    final = studio.train_status.value
    assert "training done" in final and "random: done, 2 steps" in final and "subclone: done, 2 steps" in final


def test_progress_estimates_from_the_pace_so_far(studio) -> None:
    studio._inits, studio._steps = ["random", "subclone"], 10
    studio._progress = {"random": [100.0, float("nan")]}
    studio.live_histories = {"random": type("H", (), {"last_step": 4})()}
    assert studio.progress_text(now=108.0) == (
        "random: step 4 of 10, 0:08 elapsed, about 0:12 left | then subclone (about 0:20 each) | about 0:32 left in all"
    )
