"""A fast, helpful command line: help without torch, every subcommand described with an example, a spec
checked against the parent's config before any weights load, and a misspelt or unreachable parent refused at
once. The timings themselves live in bench/bench_cli.py; these tests check the structure that makes them fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import subclone_viz as sv
from subclone_viz import parent as parent_module
from subclone_viz.choices import closest_alias
from subclone_viz.cli import SUBCOMMAND_HELP, build_parser, main, subcommand_parsers
from subclone_viz.importance import ESTIMATORS
from subclone_viz.parent import ParentLoadError, parent_skeleton
from tiny import tiny_model, word_tokenizer

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "numpy")
# Runs ``python -m subclone_viz ARGS`` as the console script does, then reports which heavy modules it imported.
RUN_MAIN_AND_LIST_HEAVY = f"""
import runpy, sys
sys.argv = ["subclone-viz", *sys.argv[1:]]
try:
    runpy.run_module("subclone_viz", run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    assert exit_.code in (0, None), exit_.code
print("HEAVY", *sorted(name for name in {HEAVY!r} if name in sys.modules))
"""


def heavy_modules_after(*argv: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after ``python -m subclone_viz ARGV``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", RUN_MAIN_AND_LIST_HEAVY, *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "usage: subclone-viz" in done.stdout
    return done.stdout.strip().splitlines()[-1].split()[1:]


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert (code, out, len(lines)) == (2, "", 1), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------ no torch for help


def test_help_imports_no_torch():
    assert heavy_modules_after("--help") == []


@pytest.mark.parametrize("command", ["subclone", "compare"])
def test_a_subcommands_help_imports_no_torch(command):
    assert heavy_modules_after(command, "--help") == []


def test_importing_the_package_imports_no_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"import sys, subclone_viz as sv; sv.__version__; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_every_public_name_still_resolves_and_functions_keep_their_names():
    import subclone_viz.plan  # noqa: F401  (binds the module on the package: the function must win)
    import subclone_viz.profile  # noqa: F401

    for name in sv.__all__:
        assert getattr(sv, name) is not None, name
    assert callable(sv.plan) and sv.plan.__module__ == "subclone_viz.plan"
    assert callable(sv.profile) and sv.profile.__module__ == "subclone_viz.profile"
    assert set(sv.__all__) <= set(dir(sv))
    with pytest.raises(AttributeError, match="no attribute 'lod_parent'"):
        sv.lod_parent  # noqa: B018


# ------------------------------------------------------------------------------------------------ help texts


def test_every_subcommand_has_a_description_and_an_example():
    parsers = subcommand_parsers(build_parser())
    assert set(parsers) == set(SUBCOMMAND_HELP), "give each subcommand its entry in cli.SUBCOMMAND_HELP"
    for name, command in parsers.items():
        text = command.format_help()
        description, example = SUBCOMMAND_HELP[name]
        assert " ".join(description.split()) in " ".join(text.split()), name
        assert "example:\n  subclone-viz " + name in text, name
        assert " ".join(text.split("example:")[1].replace("\\", " ").split()) == example, name


def test_the_parsers_names_are_the_registered_builtin_ones():
    from subclone_viz import choices
    from subclone_viz.plan import DEPTHS, SCALING_METHODS, WIDTHS

    assert choices.ESTIMATOR_NAMES == tuple(ESTIMATORS)[: len(choices.ESTIMATOR_NAMES)]
    assert choices.DEPTH_STRATEGIES == tuple(DEPTHS)[: len(choices.DEPTH_STRATEGIES)]
    assert choices.WIDTH_STRATEGIES == tuple(WIDTHS)[: len(choices.WIDTH_STRATEGIES)]
    assert choices.SCALINGS == tuple(SCALING_METHODS)[: len(choices.SCALINGS)]


def test_importance_help_lists_every_builtin_estimator():
    help_text = " ".join(subcommand_parsers(build_parser())["subclone"].format_help().split())
    assert all(name in help_text for name in ESTIMATORS)


# ------------------------------------------------------------------------------------------------ checks before work


@pytest.fixture(scope="module")
def config_only_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose weights are damaged: anything that loads them fails, reading its config does not."""
    directory = tmp_path_factory.mktemp("config-only")
    tiny_model("llama").save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    (directory / "model.safetensors").write_bytes(b"not weights")
    return directory


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["subclone", "--layers", "3", "--hidden", "99"], ["hidden=99", "<= 48"]),
        (["subclone", "--layers", "5", "--depth", "first", "--hidden", "24"], ["layers=5", "depth='middle'"]),
        (["compare", "--layers", "2", "--hidden", "24", "--heads", "4"], ["heads=4"]),
        (["study", "--sizes", "2x24,3x480"], ["hidden=480", "<= 48"]),
        (["report", "--layers", "2", "--hidden", "1000"], ["hidden=1000"]),
    ],
)
def test_a_spec_that_cannot_fit_fails_from_the_config_alone(config_only_parent, tmp_path, capsys, argv, fragments):
    out = tmp_path / ("report.html" if argv[0] == "report" else "out")
    code = main([*argv, "--parent", str(config_only_parent), "--out", str(out)])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, *fragments)
    assert not out.exists()


def test_the_damaged_weights_are_what_a_fitting_spec_then_meets(config_only_parent, tmp_path, capsys):
    code = main(
        [
            "subclone",
            "--parent",
            str(config_only_parent),
            "--layers",
            "2",
            "--hidden",
            "24",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "could not read the weights")


def test_the_skeleton_has_the_parents_shape_and_no_weights(config_only_parent):
    skeleton = parent_skeleton(config_only_parent)
    assert skeleton.dims == sv.load_parent(tiny_model("llama"), device="cpu").dims
    assert {p.device.type for p in skeleton.model.parameters()} == {"meta"}
    assert parent_skeleton("vit-digits") is None  # its shape is known by loading it


def test_a_misspelt_alias_fails_at_once_with_did_you_mean(monkeypatch, capsys):
    def no_hub(*args, **kwargs):
        raise AssertionError("a misspelt alias must not reach transformers or the hub")

    monkeypatch.setattr(parent_module, "_load_hf", no_hub)
    monkeypatch.setattr(parent_module, "_hub_unreachable", no_hub)
    code = main(["info", "--parent", "smolm2-135m"])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, "'smolm2-135m'", "did you mean 'smollm2-135m'?")
    assert closest_alias("gemma-270m") == "gemma3-270m" and closest_alias("bert-base-uncased") is None


def test_a_misspelt_parent_is_refused_before_torch_is_imported():
    wrapper = f"""
import runpy, sys
sys.argv = ["subclone-viz", *sys.argv[1:]]
try:
    runpy.run_module("subclone_viz", run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    print("EXIT", exit_.code)
print("HEAVY", *sorted(name for name in {HEAVY!r} if name in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", wrapper, "profile", "--parent", "smolm2-135m"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split("\n")[:2] == ["EXIT 2", "HEAVY"], done.stdout + done.stderr
    assert_one_line_error(2, "", done.stderr, "'smolm2-135m'", "did you mean 'smollm2-135m'?")


def test_a_hub_id_that_is_not_downloaded_fails_at_once_offline(monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code = main(["info", "--parent", "some-org/not-downloaded"])
    captured = capsys.readouterr()
    assert_one_line_error(
        code, captured.out, captured.err, "'some-org/not-downloaded'", "HF_HUB_OFFLINE is set", "smollm2-135m"
    )


def test_an_unreachable_hub_is_found_with_one_quick_connection(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # the discard port: nothing listens
    assert "127.0.0.1 cannot be reached" in parent_module._hub_unreachable()
    with pytest.raises(ParentLoadError, match="hub cannot be reached"):
        sv.load_parent("some-org/not-downloaded", device="cpu")


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (
            ["compare", "--layers", "2", "--hidden", "24", "--lr-preset", "fast", "--out", "x"],
            ["--lr-preset", "invalid choice: 'fast'", "'tuned'", "'paper'"],
        ),
        (
            ["subclone", "--layers", "2", "--hidden", "24", "--importance", "tayler", "--out", "x"],
            ["invalid choice: 'tayler'", "did you mean 'taylor'?"],
        ),
        (
            ["compare", "--layers", "2", "--hidden", "24", "--lr", "random=fast", "--out", "x"],
            ["'fast' is not a number"],
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(config_only_parent, capsys, argv, fragments):
    code = main([*argv, "--parent", str(config_only_parent)])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.out, captured.err, *fragments)
