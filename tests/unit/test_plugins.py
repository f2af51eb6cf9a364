"""A separately installed package extends subclone_viz through entry points alone: a family (with its tiny
models, so the registry-bound battery tests it), an importance estimator (with running sums of its own, which
the profiler collects) and a parent source. The package is written to a temporary directory with a
``.dist-info`` holding ``entry_points.txt``, which ``importlib.metadata`` finds on ``sys.path`` as it finds an
installed wheel."""

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import subclone_viz as sv
from subclone_viz.families import FAMILIES
from subclone_viz.importance import ESTIMATORS
from subclone_viz.parent import SOURCES

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
"""A subclone_viz plugin: a Llama-like architecture of its own, an estimator and a parent source."""
import numpy as np
import torch
import transformers as tf

from subclone_viz.capture import RunningSums
from subclone_viz.families import TINY_VOCAB
from subclone_viz.families.llama import LlamaFamily
from subclone_viz.importance import Estimator, Importance
from subclone_viz.parent import LoadedSource


class PluginConfig(tf.LlamaConfig):
    model_type = "plugin_llama"


class PluginForCausalLM(tf.LlamaForCausalLM):
    config_class = PluginConfig


tf.AutoConfig.register("plugin_llama", PluginConfig, exist_ok=True)
tf.AutoModelForCausalLM.register(PluginConfig, PluginForCausalLM, exist_ok=True)


class PluginFamily(LlamaFamily):
    name = "plugin_llama"
    description = "Plugin Llama"
    model_types = ("plugin_llama",)

    @classmethod
    def tiny_models(cls):
        config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=TINY_VOCAB, max_position_embeddings=64)
        return {"plugin_llama": lambda: PluginForCausalLM(PluginConfig(**config))}


class CubeSums(RunningSums):
    """plugin_cube (L+1, d): sums over tokens of |x|^3 at every residual layer."""

    def __init__(self, parent, rows):
        super().__init__(rows)
        self.stores = {"plugin_cube": [None] * (parent.dims.layers + 1)}

    def on_block(self, step):
        if step.index == 0:
            self.add("plugin_cube", 0, self.rows(step.input).abs().pow(3).sum(0))
        self.add("plugin_cube", step.index + 1, self.rows(step.output).abs().pow(3).sum(0))


def _cube(profile, parent):
    residual = np.cbrt(profile.stats["plugin_cube"] / profile.tokens).sum(0)
    return Importance(residual, profile.ffn_importance, profile.head_importance)


CUBE = Estimator("plugin_cube", "cube-root of mean |x|^3", ("plugin_cube",), _cube, collects=(CubeSums,))


def tiny_source(request):
    if request.source != "plugin-tiny":
        return None
    torch.manual_seed(0)
    model = PluginFamily.tiny_models()["plugin_llama"]()
    return LoadedSource(model, None, "plugin-tiny", {"source": "plugin"})
'''

ENTRY_POINTS = """
[subclone_viz.families]
plugin_llama = svplugin:PluginFamily

[subclone_viz.estimators]
plugin_cube = svplugin:CUBE

[subclone_viz.sources]
plugin-tiny = svplugin:tiny_source
"""


def write_plugin(directory: Path) -> Path:
    (directory / "svplugin.py").write_text(textwrap.dedent(PLUGIN))
    info = directory / "svplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: svplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return directory


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plugin on sys.path, with every registry's entry points read again; removed afterwards."""
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path)))
    importlib.invalidate_caches()
    registries = ((FAMILIES, "plugin_llama"), (ESTIMATORS, "plugin_cube"), (SOURCES, "plugin-tiny"))
    for registry, _ in registries:
        registry._plugins_loaded = False
    yield
    for registry, name in registries:
        if name in registry:
            registry.unregister(name)
        registry._plugins_loaded = True
    sys.modules.pop("svplugin", None)


def test_entry_points_add_a_family_an_estimator_and_a_source(plugin):
    from tiny import tiny_batches

    assert "plugin_llama" in FAMILIES and "plugin_cube" in ESTIMATORS and "plugin-tiny" in SOURCES
    parent = sv.load_parent("plugin-tiny", device="cpu")
    assert parent.family.name == "plugin_llama" and parent.info["source"] == "plugin"
    prof = sv.profile(parent, tiny_batches("llama", count=2), progress=False)
    # The profiler collected the plugin estimator's running sums without knowing its name.
    assert prof.stats["plugin_cube"].shape == (5, 32)  # (L+1, d)
    assert "plugin_cube" in sv.importance.available_estimators(prof)
    chosen = sv.plan(parent, prof, sv.DestinationSpec(layers=2, hidden=16), importance="plugin_cube")
    cube = sv.estimate_importance(prof, parent, "plugin_cube").residual
    assert chosen.residual == sorted(range(32), key=lambda j: (-cube[j], j))[:16]
    assert type(sv.subclone(parent, chosen)).__name__ == "PluginForCausalLM"


def test_the_family_battery_tests_a_plugin_family(tmp_path):
    """tests/tiny.py builds the battery from the registry, so an installed plugin family is tested like a
    built-in one (run in a fresh interpreter: the battery is parametrized at collection)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(write_plugin(tmp_path)), str(ROOT)])}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/unit/test_subclone.py",
            "-k",
            "plugin_llama or every_family",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = int(result.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 8, result.stdout[-2000:]
