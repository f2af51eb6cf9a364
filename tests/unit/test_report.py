"""The HTML report: self-contained (plotly.js inlined once, no external script), atomic, never overwriting;
and the headless main job end to end on a tiny parent with a word-level tokenizer and a local corpus."""

from __future__ import annotations

import importlib
import importlib.util
import random
import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

import subclone_viz as sv
from subclone_viz.report import build_report, run_report
from tiny import WORDS, simulated_study, tiny_batches, tiny_model, word_tokenizer


@pytest.fixture(scope="module")
def records():
    parent = sv.load_parent(tiny_model("llama"), device="cpu", processor=word_tokenizer())
    batches = tiny_batches("llama", count=2)
    prof = sv.profile(parent, batches, progress=False)
    return {
        "parent": parent,
        "profile": prof,
        "plan": sv.plan(parent, prof, sv.DestinationSpec(layers=3, hidden=30)),
        "ablation": sv.block_ablation(parent, batches, progress=False),
        "grid": sv.size_grid(parent, prof, [2, 3], [30, 48], batches, progress=False),
        "trace": sv.token_trace(parent, "w1 w2 w3 w4", token_index=2),
    }


class FakeComparison:
    """What the report reads of a subclone_viz.compare.Comparison."""

    histories = {
        "random": {"label": "random", "records": [{"step": 0, "eval_loss": 4.6}, {"step": 4, "eval_loss": 4.5}]},
        "subclone": {"label": "subclone", "records": [{"step": 0, "eval_loss": 4.2}, {"step": 4, "eval_loss": 4.0}]},
    }

    def summary_table(self):
        return [
            {"init": "random", "final_loss": 4.5, "speedup": 1.0},
            {"init": "subclone", "final_loss": 4.0, "speedup": 3.25},
        ]


def external_scripts(page: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=", page, flags=re.IGNORECASE)


def test_the_page_is_self_contained_with_plotly_js_inlined_once(records, tmp_path):
    out = build_report(
        records["parent"],
        records["profile"],
        plan=records["plan"],
        ablation=records["ablation"],
        comparison=FakeComparison(),
        grid=records["grid"],
        trace=records["trace"],
        out=tmp_path / "report.html",
    )
    page = out.read_text(encoding="utf-8")
    plotly_js = get_plotlyjs()
    assert page.count(plotly_js) == 1
    assert external_scripts(page) == []
    # plotly.js mentions its CDN in its own source (topojson); the page adds no other reference to it.
    assert page.count("cdn.plot.ly") == plotly_js.count("cdn.plot.ly")
    for name in (
        "residual-ratio",
        "block-ablation",
        "token-trace",
        "channel-heatmap",
        "massive-activations",
        "rank-spearman",
        "rank-topk",
        "ffn-importance",
        "head-importance",
        "grid-loss",
        "grid-params",
        "grid-flops_per_token",
        "grid-latency",
        "grid-memory",
        "grid-pareto",
        "curves-eval_loss",
    ):
        assert page.count(f'id="figure-{name}"') == 1, name
    assert records["parent"].description in page
    assert records["plan"].summary() in page
    assert ">3.25<" in page  # the comparison's summary table
    assert page.count("<tr") >= records["profile"].num_layers + 1  # the per-block table
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_without_optional_records_only_the_profile_sections_appear(records, tmp_path):
    page = build_report(None, records["profile"], out=tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="figure-residual-ratio"' in page and 'id="figure-channel-heatmap"' in page
    for absent in ("block-ablation", "token-trace", "grid-loss", "curves-eval_loss"):
        assert f'id="figure-{absent}"' not in page
    assert records["profile"].parent["description"] in page


def test_an_existing_report_is_kept_unless_overwrite(records, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("an earlier report")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_report(records["parent"], records["profile"], out=out)
    assert out.read_text() == "an earlier report"
    build_report(records["parent"], records["profile"], out=out, overwrite=True)
    assert get_plotlyjs() in out.read_text(encoding="utf-8")


def test_bad_output_names_are_refused(records, tmp_path):
    with pytest.raises(ValueError, match=r"\.html"):
        build_report(records["parent"], records["profile"], out=tmp_path / "report.pdf")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(records, tmp_path, monkeypatch):
    import subclone_viz.report as report

    def broken_figure(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report.plots, "head_importance", broken_figure)
    with pytest.raises(RuntimeError, match="plotting failed"):
        build_report(records["parent"], records["profile"], out=tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


def test_the_trace_records_the_tokens_of_a_text(records):
    trace = records["trace"]
    assert trace.tokens == ["w1", "w2", "w3", "w4"] and trace.token == "w3"


def test_default_destination_is_two_thirds_of_the_parent(records):
    assert sv.default_destination(records["parent"]) == sv.DestinationSpec(
        layers=3, hidden=33
    )  # two thirds of 48, snapped to a width the 3 or 6 heads divide


@pytest.fixture
def corpus(tmp_path) -> Path:
    rng = random.Random(0)
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))  # 2,700 train + 300 held-out tokens
    return path


def test_run_report_quick_writes_every_section(records, corpus, tmp_path, capsys):
    out = run_report(records["parent"], out=tmp_path / "demo.html", quick=True, data=str(corpus), progress=False)
    page = out.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1 and external_scripts(page) == []
    for name in (
        "residual-ratio",
        "block-ablation",
        "token-trace",
        "grid-loss",
        "stability-residual",
        "stability-ffn",
        "stability-heads",
    ):
        assert f'id="figure-{name}"' in page, name
    assert "rows shuffled with seed 0" in page  # calibrated on a document-diverse sample of the training split
    if importlib.util.find_spec("subclone_viz.compare") is not None:
        assert 'id="figure-curves-eval_loss"' in page and ">subclone<" in page
    assert "starts, before any training, at a held-out loss of" in page
    err = capsys.readouterr().err
    assert "[report" in err and "wrote" in err  # progress goes to stderr


def test_run_report_refuses_an_existing_file_before_any_work(records, tmp_path, monkeypatch):
    profile_module = importlib.import_module("subclone_viz.profile")  # the package's .profile is the function

    def must_not_run(*args, **kwargs):
        raise AssertionError("profiled although the report could not be written")

    monkeypatch.setattr(profile_module, "profile", must_not_run)
    out = tmp_path / "demo.html"
    out.write_text("keep me")
    with pytest.raises(FileExistsError):
        run_report(records["parent"], out=out, quick=True)
    assert out.read_text() == "keep me"


def hand_made_study(parent_name: str) -> sv.SpeedupStudy:
    from subclone_viz.study import SpeedupStudy

    def gain(value, lower_bound=False, reached=True):
        return {"speedup": value, "speedup_per_second": value, "speedup_lower_bound": lower_bound, "reached": reached}

    def size(label, parameters, subclone):
        inits = {"random": 1e-3, "subclone": 3e-4}
        return {
            "label": label,
            "parameters": parameters,
            "best_lr": inits,
            "initial_loss": {"random": 10.9, "subclone": 6.5},
            "final_loss": {"random": 7.0, "subclone": 5.0},
            "speedups": {"random": gain(1.0), "subclone": subclone},
        }

    config = {
        "parent": {"name": parent_name, "description": f"{parent_name} for the test"},
        "steps": 150,
        "tokens_per_run": 76800,
        "eval_every": 5,
        "data": "train text",
        "heldout": "held-out text",
        "device": "cpu",
        "random_lrs": [1e-3],
        "subclone_lrs": [3e-4],
    }
    return SpeedupStudy(
        config,
        [
            size("24 x 480", 70_000_000, gain(8.0, lower_bound=True)),
            size("8 x 288", 20_000_000, gain(0.5, reached=False)),
        ],
    )


def test_a_speedup_study_gets_its_own_section_with_the_figure_and_the_table(records, tmp_path):
    name = records["parent"].name
    page = build_report(
        records["parent"], records["profile"], study=hand_made_study(name), out=tmp_path / "r.html"
    ).read_text(encoding="utf-8")
    assert page.count('id="figure-speedup-by-size"') == 1 and 'href="#speedup"' in page
    assert "more than 8x" in page and "never reached random" in page
    assert "76,800 training tokens" in page and f"{name} for the test" in page
    assert "was measured on" not in page  # the same parent: no warning
    other = build_report(
        records["parent"], records["profile"], study=hand_made_study("another-model"), out=tmp_path / "other.html"
    ).read_text(encoding="utf-8")
    assert f"This study was measured on another-model, not on {name}" in other


def test_the_study_section_names_its_seeds_and_forecasts_past_the_budget(records, tmp_path):
    study = simulated_study()
    study.config["seeds"] = [0, 1]
    page = build_report(records["parent"], records["profile"], study=study, out=tmp_path / "r.html").read_text(
        encoding="utf-8"
    )
    assert "Seeds [0, 1]" in page and "random init (forecast)" in page
    assert "x the budget), forecast; 80% interval" in page


def test_run_report_reads_and_checks_a_study_file_before_any_work(records, tmp_path, monkeypatch):
    from subclone_viz._atomic import DamagedFileError

    profile_module = importlib.import_module("subclone_viz.profile")
    monkeypatch.setattr(profile_module, "profile", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    damaged = tmp_path / "study.json"
    damaged.write_text(
        '{"format": "subclone_viz.speedup_study", "version": 1, "config": {"parent": {"name": "p"}}, "sizes": [{}]}'
    )
    with pytest.raises(DamagedFileError, match=f"{damaged}: size record 0 lacks label"):
        run_report(records["parent"], out=tmp_path / "demo.html", quick=True, study=damaged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]


@pytest.fixture
def budget(records, tmp_path, monkeypatch):
    """A budget grid of two sizes of the tiny parent: two pilots of 12 steps, trained in seconds."""
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))
    batches = tiny_batches("llama", count=2, pad=False)
    prior = sv.ForecastPrior(C=0.05, decay=0.9, C_spread=0.01, scale=1.5, runs=7, source="a test prior")
    return sv.budget_grid(
        records["parent"],
        records["profile"],
        [2],
        [24, 48],
        batches,
        batches,
        tokens=24 * 48,
        prior=prior,
        progress=False,
    )


def test_a_budget_grid_gets_its_own_section_with_the_forecasts(records, budget, tmp_path):
    page = build_report(records["parent"], records["profile"], budget=budget, out=tmp_path / "r.html").read_text(
        encoding="utf-8"
    )
    assert page.count('id="figure-budget-pareto"') == 1 and 'href="#budget"' in page
    best = budget.best()
    assert f"{best['forecast']['loss']:.3f} nats [{best['forecast']['low']:.3f}" in page
    assert f"The pilots cost {budget.pilot_cost:.0%} of training the chosen size" in page
    assert "a test prior (7 calibration runs)" in page and "These are forecasts, not measurements" in page
    table = page[page.index('id="budget"') :]
    rows = re.findall(r"<tr><td class=\"text\">(\d+ x \d+)</td>", table)
    assert sorted(rows) == ["2 x 24", "2 x 48"]  # one row per cell, each with its interval
    for cell in budget.cells:
        assert f"<td>{cell['forecast']['high']:.4g}</td>" in table


def test_run_report_reads_and_checks_a_budget_file_before_any_work(records, budget, tmp_path, monkeypatch):
    from subclone_viz._atomic import DamagedFileError

    profile_module = importlib.import_module("subclone_viz.profile")
    monkeypatch.setattr(profile_module, "profile", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    damaged = budget.save(tmp_path / "budget.json")
    damaged.write_text(damaged.read_text().replace('"pilot_steps": 12', '"pilot_steps": -1', 1))
    with pytest.raises(DamagedFileError, match="budget.json.*pilot_steps=-1 must be a positive integer"):
        run_report(records["parent"], out=tmp_path / "demo.html", quick=True, budget=damaged)
    assert not (tmp_path / "demo.html").exists()
