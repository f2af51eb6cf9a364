"""The speedup study: best learning rate per init, speedups against the best random run, and its file."""

from __future__ import annotations

import copy
import json
import math

import pytest

import subclone_viz as sv
from subclone_viz._atomic import DamagedFileError, OutputExistsError
from subclone_viz.compare import compare, speedup
from subclone_viz.forecast import ForecastPrior, LearningCurve, steps_to_reach
from subclone_viz.study import SpeedupStudy, best_lr_text, speedup_study
from subclone_viz.train import History, TrainSettings
from tiny import simulated_study, tiny_batches, tiny_model

SIZES = [sv.DestinationSpec(layers=3, hidden=24), sv.DestinationSpec(layers=2, hidden=16)]
SETTINGS = dict(steps=3, eval_every=1, seed=0)


@pytest.fixture(scope="module")
def parent():
    return sv.load_parent(tiny_model("gpt2"), device="cpu")


@pytest.fixture(scope="module")
def data(parent):
    batches, heldout = tiny_batches("gpt2", count=3, seed=2), tiny_batches("gpt2", count=2, seed=4)
    return batches, heldout, sv.profile(parent, batches, progress=False)


@pytest.fixture(scope="module")
def study(parent, data) -> SpeedupStudy:
    batches, heldout, prof = data
    return speedup_study(
        parent,
        SIZES,
        batches,
        heldout,
        profile=prof,
        random_lrs=[1e-3, 1e-2],
        subclone_lrs=[1e-3],
        distill_sizes=[SIZES[1]],
        distill_inits=["subclone+distill"],
        progress=False,
        **SETTINGS,
    )


def test_each_init_keeps_its_best_learning_rate_and_speedups_are_over_the_best_random_run(parent, data, study):
    batches, heldout, prof = data
    assert [size["label"] for size in study.sizes] == ["3 x 24", "2 x 16"]
    for spec, size in zip(SIZES, study.sizes):
        runs = {
            lr: compare(
                parent,
                spec,
                batches,
                inits=["random"],
                eval_batches=heldout,
                profile=prof,
                lrs={"random": lr},
                progress=False,
                **SETTINGS,
            ).histories["random"]
            for lr in (1e-3, 1e-2)
        }
        best = min(runs, key=lambda lr: runs[lr].evals[-1].loss)
        assert size["best_lr"]["random"] == best
        assert size["final_loss"]["random"] == runs[best].evals[-1].loss  # the same batches, the same run
        subclone = compare(
            parent,
            spec,
            batches,
            inits=["subclone"],
            eval_batches=heldout,
            profile=prof,
            lrs={"subclone": 1e-3},
            progress=False,
            **SETTINGS,
        ).histories["subclone"]
        assert size["speedups"]["subclone"]["speedup"] == speedup(runs[best], subclone).speedup
        assert size["speedups"]["random"]["speedup"] == speedup(runs[best], runs[best]).speedup
        assert set(size["runs"]["random"]) == {"0.001", "0.01"}
    # The teacher trains at its start's best learning rate, on the distilled size only.
    assert "subclone+distill" not in study.sizes[0]["speedups"]
    assert study.sizes[1]["best_lr"]["subclone+distill"] == study.sizes[1]["best_lr"]["subclone"]
    assert study.config["steps"] == 3 and study.config["tokens_per_run"] > 0
    rows = study.table()
    assert [(row["destination"], row["init"]) for row in rows] == [
        ("3 x 24", "random"),
        ("3 x 24", "subclone"),
        ("2 x 16", "random"),
        ("2 x 16", "subclone"),
        ("2 x 16", "subclone+distill"),
    ]


def test_a_study_round_trips_through_its_file_and_is_never_replaced_unasked(study, tmp_path):
    path = study.save(tmp_path / "study.json")
    loaded = SpeedupStudy.load(path)
    assert loaded.to_dict() == json.loads(json.dumps(study.to_dict()))
    with pytest.raises(OutputExistsError):
        study.save(path)
    assert study.save(path, overwrite=True) == path
    from subclone_viz import plots

    figure = plots.speedup_by_size(loaded.sizes)
    assert {trace.name for trace in figure.data} >= {
        "subclone, per optimizer step",
        "subclone+distill, per second of training",
    }


def _damaged(study: SpeedupStudy, edit) -> dict:
    data = json.loads(json.dumps(study.to_document()))
    edit(data)
    return data


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format="something else"), "not a .subclone_viz.speedup_study. one"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.pop("sizes"), "'sizes' list"),
        (lambda d: d["config"].update(parent="smollm2"), "lacks the parent it was measured on"),
        (lambda d: d["sizes"][0].pop("speedups"), "size record 0 lacks speedups"),
        (lambda d: d["sizes"][1]["final_loss"].pop("subclone"), "size record 1 needs 'final_loss' for exactly"),
        (lambda d: d["sizes"][0]["speedups"]["subclone"].update(speedup=-2.0), "not a positive number"),
        (lambda d: d["sizes"][0]["initial_loss"].update(random=float("nan")), "not a finite number"),
        (lambda d: d["sizes"][0].update(parameters="many"), "positive whole 'parameters'"),
    ],
)
def test_a_damaged_or_hand_edited_study_file_is_named_with_what_is_wrong(study, tmp_path, edit, message):
    path = tmp_path / "study.json"
    path.write_text(json.dumps(_damaged(study, edit)))
    with pytest.raises(DamagedFileError, match=message) as error:
        SpeedupStudy.load(path)
    assert str(path) in str(error.value)


def test_a_truncated_study_file_is_named(study, tmp_path):
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study.to_document())[:200])
    with pytest.raises(DamagedFileError, match="not valid JSON"):
        SpeedupStudy.load(path)


def test_studies_of_other_sizes_merge_largest_first_and_only_when_comparable(study):
    first = SpeedupStudy(study.config, study.sizes[1:])
    second = SpeedupStudy(study.config, study.sizes[:1])
    merged = SpeedupStudy.merge([first, second])
    assert [size["label"] for size in merged.sizes] == ["3 x 24", "2 x 16"]
    with pytest.raises(ValueError, match=r"size '2 x 16', seed 0: random at lr 0.001 was run twice"):
        SpeedupStudy.merge([first, first])
    other_budget = SpeedupStudy(dict(study.config, steps=300), study.sizes[:1])
    with pytest.raises(ValueError, match="differ in steps"):
        SpeedupStudy.merge([first, other_budget])


def test_studies_of_other_seeds_combine_each_size_with_the_spread_of_its_speedups(parent, data, tmp_path):
    batches, heldout, prof = data
    seeded = [
        speedup_study(
            parent,
            SIZES[1:],
            batches,
            heldout,
            profile=prof,
            random_lrs=[1e-2],
            subclone_lrs=[1e-2],
            progress=False,
            steps=4,
            eval_every=1,
            seed=seed,
        )
        for seed in (0, 1)
    ]
    merged = SpeedupStudy.merge(seeded)
    (size,) = merged.sizes
    assert merged.config["seeds"] == [0, 1] and [record["seed"] for record in size["seeds"]] == [0, 1]
    finals = [study.sizes[0]["final_loss"]["subclone"] for study in seeded]
    assert size["final_loss"]["subclone"] == pytest.approx(sum(finals) / 2)
    gains = [study.sizes[0]["speedups"]["subclone"]["speedup"] for study in seeded]
    combined = size["speedups"]["subclone"]
    if None in gains:
        assert combined["speedup"] is None and combined["speedup_range"] is None
    else:
        assert combined["speedup"] == pytest.approx(math.sqrt(gains[0] * gains[1]))
        assert combined["speedup_range"] == [min(gains), max(gains)]
    row = next(row for row in merged.table() if row["init"] == "subclone")
    assert row["seeds"] == 2 and row["speedup_range"] == combined["speedup_range"]
    assert SpeedupStudy.load(merged.save(tmp_path / "study.json")).sizes == merged.sizes
    # A merged study merges again with a third seed, and its seed records are checked when read back.
    assert SpeedupStudy.merge([merged, SpeedupStudy(dict(seeded[0].config, seed=2), seeded[0].sizes)]).config[
        "seeds"
    ] == [0, 1, 2]
    assert row["best_lr_seeds"] == [0.01, 0.01] and best_lr_text(row) == "0.01"
    # Seeds that chose other rates: the rate most chose (a tie: the lowest seed's), every seed's beside it.
    other = copy.deepcopy(seeded[1].sizes)
    other[0]["runs"]["subclone"]["0.5"] = other[0]["runs"]["subclone"].pop("0.01")
    other[0]["best_lr"]["subclone"] = 0.5
    disagreeing = SpeedupStudy.merge([seeded[0], SpeedupStudy(seeded[1].config, other)])
    row = next(row for row in disagreeing.table() if row["init"] == "subclone")
    assert row["best_lr"] == 0.01 and row["best_lr_seeds"] == [0.01, 0.5]
    assert best_lr_text(row) == "0.01 (seeds: 0.01, 0.5)"
    damaged = json.loads(merged.to_json())
    del damaged["sizes"][0]["seeds"][1]["final_loss"]
    with pytest.raises(ValueError, match="seed record 1 that lacks final_loss"):
        SpeedupStudy.from_dict(damaged)


def test_sweeps_run_as_separate_jobs_join_and_find_the_best_rate_again(parent, data):
    batches, heldout, prof = data
    common = dict(profile=prof, progress=False, steps=3, eval_every=1, seed=0)
    both = speedup_study(parent, SIZES[1:], batches, heldout, random_lrs=[1e-3], subclone_lrs=[1e-3], **common)
    alone = speedup_study(parent, SIZES[1:], batches, heldout, random_lrs=[1e-2], subclone_lrs=[], **common)
    assert set(alone.sizes[0]["runs"]) == {"random"} and alone.config["subclone_lrs"] == []
    joined = SpeedupStudy.merge([both, alone])
    (size,) = joined.sizes
    assert "seeds" not in size and joined.config["random_lrs"] == [1e-3, 1e-2]
    assert set(size["runs"]["random"]) == {"0.001", "0.01"}
    finals = {lr: run["evals"][-1]["loss"] for lr, run in size["runs"]["random"].items()}
    assert size["best_lr"]["random"] == float(min(finals, key=finals.get))
    reference = History.from_dict(size["runs"]["random"][str(size["best_lr"]["random"])])
    subclone = History.from_dict(size["runs"]["subclone"]["0.001"])
    assert size["speedups"]["subclone"] == speedup(reference, subclone).to_dict()
    with pytest.raises(ValueError, match="with distill_sizes: at least one"):
        speedup_study(parent, SIZES[1:], batches, heldout, subclone_lrs=[], distill_sizes=SIZES[1:], **common)


def test_beyond_budget_forecasts_when_random_init_would_reach_the_subclones_final_loss():
    study = simulated_study()
    size = study.sizes[0]
    random = History.from_dict(size["runs"]["random"]["0.001"])
    subclone = History.from_dict(size["runs"]["subclone"]["0.001"])
    prior = ForecastPrior(C=0.002, decay=0.99)
    (row,) = study.beyond_budget(prior=prior)
    assert row["destination"] == "4 x 64" and row["init"] == "subclone" and row["seed"] is None
    expected = steps_to_reach(random, subclone.evals[-1].loss, prior=prior)
    assert row["steps"] == expected.steps and row["steps"] > 300 and row["budget"] == 300
    # The truth: a random run of the forecast's length, simulated, ends at the subclone's final loss.
    longer = LearningCurve.simulate(
        TrainSettings(steps=row["steps"], lr=1e-3).learning_rates(), 2.0, 3.0, 0.5, 0.002, every=10
    )
    assert longer.losses[-1] == pytest.approx(subclone.evals[-1].loss, abs=2e-3)
    assert "forecast" in row["text"] and "x the budget" in row["text"]
    assert (
        SpeedupStudy(
            {"parent": {"name": "simulated"}}, [dict(size, final_loss={"random": 2.1, "subclone": 2.5})]
        ).beyond_budget()
        == []
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(random_lrs=[]), "random_lrs=\\[\\]: give at least one learning rate"),
        (dict(subclone_lrs=[0.0]), "subclone_lrs=\\[0.0\\]"),
        (dict(distill_inits=["subclone"]), "distill_inits \\['subclone'\\] are not distilled inits"),
        (dict(distill_sizes=[sv.DestinationSpec(layers=1, hidden=8)]), "are not among specs"),
        (dict(specs=[sv.DestinationSpec(layers=2, hidden=17)]), "hidden"),
        (dict(specs=[]), "specs is empty"),
        (dict(steps=0), "steps"),
        (dict(warmpu=3), "warmpu"),
    ],
)
def test_bad_study_arguments_are_named_before_any_training(parent, data, kwargs, message):
    batches, heldout, prof = data
    arguments = dict(specs=SIZES, random_lrs=[1e-3], subclone_lrs=[1e-3], profile=prof, progress=False, steps=1)
    arguments.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):  # TypeError: an unknown keyword, as in compare
        speedup_study(parent, batches=batches, eval_batches=heldout, **arguments)
