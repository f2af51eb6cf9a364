"""Defaults defined once: the command line, the widgets, the report's workflow and the library functions take
their training steps, profile token counts and plan strategies from subclone_viz.settings, whose fields carry
the help text a parser is generated from."""

import importlib
import inspect
from dataclasses import fields

import pytest

from subclone_viz.errors import ConfigurationError
from subclone_viz.settings import PlanStrategy, ProfileSettings, TrainSettings

# The modules, not the package's functions of the same names.
cli, plan, profile, settings, sizing, widgets, workflow = (
    importlib.import_module(f"subclone_viz.{name}")
    for name in ("cli", "plan", "profile", "settings", "sizing", "widgets", "workflow")
)


def _defaults(command: str, *required: str) -> dict:
    return vars(cli.build_parser().parse_args([command, *required]))


def test_every_setting_carries_its_help_and_the_fixed_lists_their_choices():
    for cls in (ProfileSettings, PlanStrategy, TrainSettings):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    choices = {f.name: f.metadata.get("choices") for f in fields(PlanStrategy)}
    assert choices["depth"] == ("middle", "first", "last", "metric") and "sqrt" in choices["scaling"]


def test_the_command_line_reads_the_defaults_from_the_settings():
    tokens, train, strategy = ProfileSettings(), TrainSettings(), PlanStrategy()
    assert _defaults("profile")["tokens"] == tokens.tokens
    assert _defaults("ablate")["tokens"] == tokens.ablation_tokens
    made = _defaults("subclone", "--hidden", "64", "--out", "x")
    assert (made["profile_tokens"], made["eval_tokens"]) == (tokens.subclone_tokens, tokens.eval_tokens)
    assert (made["depth"], made["width"], made["scaling"]) == (strategy.depth, strategy.width, strategy.scaling)
    assert _defaults("compare", "--hidden", "64", "--out", "x")["steps"] == train.steps
    assert _defaults("study", "--out", "x")["steps"] == settings.STUDY_STEPS


def test_the_library_widgets_and_workflow_read_the_same_defaults():
    strategy = PlanStrategy()
    for function in (plan.plan, sizing.size_grid):
        parameters = inspect.signature(function).parameters
        assert [parameters[name].default for name in ("depth", "width", "scaling")] == [
            strategy.depth,
            strategy.width,
            strategy.scaling,
        ]
    assert inspect.signature(plan.plan).parameters["importance"].default == strategy.importance
    assert inspect.signature(profile.profile).parameters["shards"].default == ProfileSettings().shards
    assert workflow.DEFAULT_BUDGET.profile_tokens == ProfileSettings().tokens
    for app in (widgets.SubcloneStudio, widgets.Explorer):
        assert inspect.signature(app).parameters["steps"].default == settings.INTERACTIVE_STEPS


def test_a_bad_setting_is_refused_naming_it():
    with pytest.raises(ConfigurationError, match="tokens=0 must be a positive whole number"):
        ProfileSettings(tokens=0)
    with pytest.raises(ValueError, match="steps=0"):
        TrainSettings(steps=0)
