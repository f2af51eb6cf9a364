"""The parser generated from the settings' fields: the same flags, defaults and help as the hand-written parser it
replaced (tests/unit/cli_parser_snapshot.json, taken from it before the change), plugins' names in the help
without importing them, and a destination spec the parent's config rules out refused before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from subclone_viz import cli
from subclone_viz.cli import Flag, add_fields, build_parser, refuse_misfit, subcommand_parsers
from subclone_viz.parent import parent_skeleton
from subclone_viz.parent_config import ParentDims, SpecDoesNotFitError, check_spec_fits, config_dims
from subclone_viz.plan import DestinationSpec, SpecError, check_spec
from subclone_viz.settings import PlanStrategy, ProfileSettings, TrainSettings, setting
from tiny import tiny_model

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("cli_parser_snapshot.json")
# Flags added since the snapshot, by subcommand (a new subcommand is all new).
ADDED = {"report": {"--no-cut", "--budget-grid"}}


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def describe(parser: argparse.ArgumentParser) -> dict[str, dict]:
    """Every flag of every subcommand as the snapshot records it."""
    found = {}
    for name, command in subcommand_parsers(parser).items():
        flags = {}
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            key = action.option_strings[0] if action.option_strings else action.dest
            flags[key] = {
                "options": action.option_strings,
                "dest": action.dest,
                "default": _plain(action.default),
                "help": action.help,
                "choices": _plain(action.choices),
                "required": action.required,
                "nargs": _plain(action.nargs),
                "metavar": _plain(action.metavar),
                "type": getattr(action.type, "__name__", None),
                "action": type(action).__name__,
            }
        found[name] = flags
    return found


def test_every_subcommand_keeps_its_flags_defaults_types_and_help():
    before, now = json.loads(SNAPSHOT.read_text()), describe(build_parser())
    for command, flags in before.items():
        assert set(now[command]) == set(flags) | ADDED.get(command, set()), command
        for flag, facts in flags.items():
            assert now[command][flag] == facts, f"{command} {flag}"


def test_the_settings_flags_take_their_defaults_and_choices_from_the_fields():
    flags = describe(build_parser())
    assert flags["profile"]["--tokens"]["default"] == ProfileSettings().tokens
    assert flags["compare"]["--schedule"]["choices"] == list(
        TrainSettings.__dataclass_fields__["schedule"].metadata["choices"]
    )
    assert flags["subclone"]["--width"]["default"] == PlanStrategy().width
    assert flags["compare"]["--distill-alpha"]["default"] is None  # "not given": the help names the field's
    assert f"(default {TrainSettings().distill_alpha:g})" in flags["compare"]["--distill-alpha"]["help"]


@dataclass(frozen=True)
class Toy:
    count: int = setting(3, "how many")
    rate: float | None = setting(None, "how fast")
    mode: str = setting("a", "which mode", ("a", "b"))
    verbose: bool = setting(False, "say more")


def test_add_fields_types_defaults_help_choices_and_booleans():
    parser = argparse.ArgumentParser()
    add_fields(parser, Toy(), "count", "rate", "mode", "verbose")
    args = parser.parse_args([])
    assert (args.count, args.rate, args.mode, args.verbose) == (3, None, "a", False)
    args = parser.parse_args(["--count", "5", "--rate", "0.5", "--mode", "b", "--verbose"])
    assert (args.count, args.rate, args.mode, args.verbose) == (5, 0.5, "b", True)
    helps = {action.dest: action.help for action in parser._actions}
    assert helps["count"] == "how many (default 3)" and helps["rate"] == "how fast"
    for bad in (["--count", "0"], ["--rate", "-1"], ["--mode", "c"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_a_flag_renames_a_field_and_changes_its_default_and_help():
    parser = argparse.ArgumentParser()
    add_fields(parser, Toy(), Flag("count", "--n", "items (default {default})", default=7))
    action = parser._actions[-1]
    assert (action.option_strings, action.dest, action.default, action.help) == (["--n"], "n", 7, "items (default 7)")


def test_an_open_list_names_the_installed_plugins_without_importing_them(tmp_path):
    info = tmp_path / "toy_strategies-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-strategies\nVersion: 1.0\n")
    # The module does not exist: listing the name must not import it.
    (info / "entry_points.txt").write_text("[subclone_viz.width_strategies]\nzigzag = toy_missing_module:zigzag\n")
    code = (
        "import sys, contextlib, io\n"
        "from subclone_viz.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    main(['subclone', '--help'])\n"
        "print('zigzag' in out.getvalue(), 'torch' in sys.modules, 'toy_missing_module' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False", "False"], done.stderr


# ------------------------------------------------------------------------------------------------ the torch-free check


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    tiny_model("llama").save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    "spec",
    [
        DestinationSpec(layers=2, hidden=1000),
        DestinationSpec(layers=9, hidden=24),
        DestinationSpec(layers=[0, 1, 7], hidden=24),
        DestinationSpec(layers=2, hidden=24, ffn=500),
    ],
    ids=["too wide", "too deep", "no such block", "FFN too wide"],
)
def test_the_config_refuses_what_the_full_check_refuses_with_its_words(llama_dir, spec):
    with pytest.raises(SpecError) as full:
        check_spec(parent_skeleton(str(llama_dir)), spec)
    with pytest.raises(SpecDoesNotFitError) as quick:
        check_spec_fits(config_dims(str(llama_dir)), spec.layers, spec.hidden, spec.ffn)
    assert str(quick.value) == str(full.value)


def test_what_may_fit_is_left_to_the_full_check():
    dims = ParentDims(layers=4, hidden=48, ffn=80, heads=6)
    check_spec_fits(dims, 8, 48, 80)  # at the bounds: passes here
    check_spec_fits(dims, 2, 25)  # no valid head count: only the full check knows the family's rule
    assert config_dims("vit-digits") is None and config_dims("no/such-hub-id") is None


def test_a_config_without_plain_dimensions_is_not_read(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    assert config_dims(str(tmp_path)) is None
    (tmp_path / "config.json").write_text("{not json")
    assert config_dims(str(tmp_path)) is None


def test_the_parsed_commands_name_their_specs(llama_dir, tmp_path):
    parse = build_parser().parse_args
    common = ["--parent", str(llama_dir), "--out", str(tmp_path / "x")]
    assert "hidden=1000" in refuse_misfit(parse(["subclone", *common, "--layers", "2", "--hidden", "1000"]))
    assert "parent block indices" in refuse_misfit(parse(["subclone", *common, "--hidden", "24", "--depth", "0,9"]))
    assert "layers=20" in refuse_misfit(parse(["study", *common, "--sizes", "2x24,20x24"]))
    assert refuse_misfit(parse(["compare", *common, "--layers", "2", "--hidden", "24"])) is None
    assert refuse_misfit(parse(["info", "--parent", str(llama_dir)])) is None


def test_a_spec_that_cannot_fit_is_refused_before_torch_is_imported(llama_dir, tmp_path):
    code = (
        "import sys\n"
        "from subclone_viz.cli import main\n"
        f"code = main(['subclone', '--parent', {str(llama_dir)!r}, '--layers', '2', '--hidden', '1000', "
        f"'--out', {str(tmp_path / 'never')!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert (
        done.stderr.strip()
        == "subclone-viz: error: hidden=1000 is out of range: choose 1 <= hidden <= 48 (the parent's)"
    )
    assert not (tmp_path / "never").exists()


def test_no_runner_is_longer_than_sixty_lines():
    import ast

    for module in ("cli", "cli_commands"):
        tree = ast.parse((ROOT / "subclone_viz" / f"{module}.py").read_text())
        long = [
            f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 62
        ]
        assert not long, long


def test_the_cli_names_the_budget_chooser_default():
    import inspect

    from subclone_viz.budget import budget_grid

    assert inspect.signature(budget_grid).parameters["pilot_fraction"].default == cli.PILOT_FRACTION
