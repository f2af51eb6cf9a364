"""Honest speedups: each initialization trains at its own tuned learning rate, every speedup names the rates
behind it, a speedup against a random init that had not converged is marked, and the paper's rates stay one
option away. Tiny random models from tests/tiny.py; a few training steps each."""

from __future__ import annotations

import pytest

import subclone_viz as sv
from subclone_viz.compare import (
    CONVERGED_SECOND_HALF_SHARE,
    Comparison,
    compare,
    learning_rate_note,
    reference_converged,
    speedup,
    speedup_text,
)
from subclone_viz.errors import ConfigurationError
from subclone_viz.inits import HYPERPARAMETERS, INITS, LR_PRESETS, default_hyperparameters, hyperparameter_source
from subclone_viz.report import _comparison_section
from subclone_viz.train import EvalRecord, History
from tiny import tiny_batches, tiny_model


def history(losses: list[float], every: int = 2, label: str = "run") -> History:
    evals = [
        EvalRecord(step=i * every, seen=i * every * 10, loss=loss, accuracy=None, time=0.1 * i * every)
        for i, loss in enumerate(losses)
    ]
    return History(config={}, evals=evals, label=label)


@pytest.fixture(scope="module")
def gpt2_parent():
    return sv.load_parent(tiny_model("gpt2"), device="cpu")


# ------------------------------------------------------------------------------------------------ the table


def test_the_table_is_the_one_source_of_every_default():
    assert LR_PRESETS == ("tuned", "paper")
    for preset, regimes in HYPERPARAMETERS.items():
        for regime, starts in regimes.items():
            assert set(starts) == {"random", "inherited"}, (preset, regime)
            assert all(rates.source for rates in starts.values())


def test_tuned_language_rates_come_from_the_speedup_study():
    assert default_hyperparameters("causal-lm", "random") == (3e-3, 0.1)
    assert default_hyperparameters("causal-lm", "subclone") == (1e-3, 0.001)
    assert default_hyperparameters("masked-lm", "random+distill") == (3e-3, 0.1)  # a +distill init: its start's
    assert "speedup_study" in hyperparameter_source("causal-lm", "subclone")


def test_the_paper_preset_gives_the_papers_rates():
    for init in INITS:
        inherited = INITS[init].strategies is not None
        assert default_hyperparameters("causal-lm", init, "paper") == ((1e-4, 0.001) if inherited else (1e-4, 0.1))
        assert default_hyperparameters("image-classification", init, "paper") == (
            (1e-4, 0.005) if inherited else (2e-3, 0.2)
        )
    assert "Table 1" in hyperparameter_source("causal-lm", "random", "paper")


def test_an_unknown_preset_or_init_names_the_valid_ones():
    with pytest.raises(ConfigurationError, match="lr_preset='fast'.*tuned, paper"):
        default_hyperparameters("causal-lm", "random", "fast")
    with pytest.raises(ConfigurationError, match="init='randum'.*random"):
        default_hyperparameters("causal-lm", "randum")


# ------------------------------------------------------------------------------------------------ compare


def test_compare_trains_each_init_at_its_tuned_rate_and_records_why(gpt2_parent):
    batches = tiny_batches("gpt2", count=2)
    result = compare(
        gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), batches, steps=2, eval_batches=batches, progress=False
    )
    rates = {init: h.config["lr"] for init, h in result.histories.items()}
    assert rates == {"random": 3e-3, "subclone": 1e-3}
    assert result.config["lr_preset"] == "tuned"
    assert result.config["learning_rates"]["random"]["source"] == hyperparameter_source("causal-lm", "random")
    note = result.lr_note()
    assert note.startswith("learning rates: random 0.003, subclone 0.001 (tuned: ")


def test_compare_with_the_paper_preset_and_a_set_rate(gpt2_parent):
    batches = tiny_batches("gpt2", count=2)
    result = compare(
        gpt2_parent,
        sv.DestinationSpec(layers=2, hidden=16),
        batches,
        steps=2,
        eval_batches=batches,
        inits=["random", "subclone", "no-scaling"],
        lrs={"no-scaling": 5e-4},
        lr_preset="paper",
        progress=False,
    )
    rates = {init: (h.config["lr"], h.config["weight_decay"]) for init, h in result.histories.items()}
    assert rates == {"random": (1e-4, 0.1), "subclone": (1e-4, 0.001), "no-scaling": (5e-4, 0.001)}
    sources = {init: rate["source"] for init, rate in result.config["learning_rates"].items()}
    assert sources["no-scaling"] == "set by the caller" and "Table 1" in sources["random"]
    assert result.lr_note() == (
        "learning rates: random 0.0001, subclone 0.0001 (paper: Samragh et al. (2023), "
        "Table 1); no-scaling 0.0005 (set by the caller)"
    )


def test_a_comparison_saved_before_the_sources_still_names_its_rates(gpt2_parent, tmp_path):
    batches = tiny_batches("gpt2", count=2)
    result = compare(
        gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), batches, steps=2, eval_batches=batches, progress=False
    )
    del result.config["learning_rates"]
    loaded = Comparison.load(result.save(tmp_path / "run"))
    assert loaded.lr_note() == "learning rates: random 0.003, subclone 0.001 (source not recorded)"


# ------------------------------------------------------------------------------------------------ convergence


def test_a_random_init_still_falling_is_not_converged():
    falling = [10.9, 10.8, 10.7, 10.55, 10.4]  # the second half brings 60% of the drop: cut short
    settled = [10.9, 8.0, 7.2, 7.05, 7.0]  # the second half brings 5%
    assert reference_converged(history(falling).evals) is False
    assert reference_converged(history(settled).evals) is True
    assert reference_converged(history([10.9, 10.0]).evals) is None  # no midpoint to judge by
    assert reference_converged(history([10.9, 11.0, 11.2]).evals) is False  # never fell
    assert 0 < CONVERGED_SECOND_HALF_SHARE < 1


def test_a_speedup_over_an_unconverged_baseline_is_marked_as_a_bound():
    random = history([10.9, 10.8, 10.7, 10.55, 10.4])
    subclone = history([9.0, 8.0, 7.5, 7.2, 7.0])
    gain = speedup(random, subclone)
    assert gain.speedup_lower_bound and gain.reference_converged is False
    assert speedup_text(gain.to_dict()) == "more than 4x (at this budget: random init not converged)"
    settled = speedup(history([10.9, 8.0, 7.2, 7.05, 7.0]), history([9.0, 7.5, 7.1, 6.9, 6.8]))
    assert settled.reference_converged is True
    assert "converged" not in speedup_text(settled.to_dict())


def test_the_cli_table_marks_and_explains_an_unconverged_baseline():
    from subclone_viz.cli_commands import _convergence_note

    rows = [{"speedup": 4.0, "speedup_lower_bound": False, "reached": True, "reference_converged": False}]
    assert speedup_text(rows[0], compact=True) == "4.00x*"
    assert speedup_text({**rows[0], "reached": False}, compact=True) == "<4.00x*"
    assert (
        speedup_text({**rows[0], "speedup_lower_bound": True, "reference_converged": True}, compact=True) == ">=4.00x"
    )
    assert _convergence_note(rows)[0].startswith("* at this budget only: random init had not converged")
    assert _convergence_note([{**rows[0], "reference_converged": True}]) == []


def test_the_report_names_the_rates_and_the_bound(gpt2_parent):
    batches = tiny_batches("gpt2", count=2)
    result = compare(
        gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), batches, steps=2, eval_batches=batches, progress=False
    )
    result.metrics["subclone"]["reference_converged"] = False
    section = _comparison_section(result)
    assert "Learning rates: random 0.003, subclone 0.001 (tuned: " in section
    assert "Random init had not converged" in section


def test_learning_rate_note_groups_runs_by_source():
    note = learning_rate_note(
        {
            "random": {"lr": 3e-3, "source": "tuned"},
            "subclone": {"lr": 1e-3, "source": "tuned"},
            "uniform": {"lr": 5e-4, "source": "set by the caller"},
        }
    )
    assert note == "learning rates: random 0.003, subclone 0.001 (tuned); uniform 0.0005 (set by the caller)"
