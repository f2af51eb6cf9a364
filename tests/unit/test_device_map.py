"""Big-parent dispatch on the CPU: an explicit device map that offloads blocks to ``"cpu"`` and ``"disk"``.

Offloaded parameters are meta placeholders whose values accelerate's hooks bring in when their module runs.
Profile, token trace, block ablation and subclone must give what the same parent gives loaded whole, and the
subclone must land on one real device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.parent import read_parameter
from tiny import tiny_batches, tiny_model, word_tokenizer

# Blocks 1 and 3 on disk, the rest on the CPU. Without a GPU the CPU is accelerate's main device, so "cpu"
# modules stay ordinary tensors and only the "disk" ones are offloaded (with a GPU, "cpu" ones would be too).
LLAMA_MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    tiny_model("llama-untied").save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def whole(parent_dir):
    return sv.load_parent(parent_dir, device="cpu")


@pytest.fixture(scope="module")
def dispatched(parent_dir, tmp_path_factory):
    return sv.load_parent(parent_dir, device_map=LLAMA_MAP, offload_folder=tmp_path_factory.mktemp("offload"))


def test_the_map_offloads_blocks_to_meta_placeholders(dispatched, whole):
    on_meta = {name.split(".")[2] for name, p in dispatched.model.named_parameters() if p.device.type == "meta"}
    assert on_meta == {"1", "3"}
    assert dispatched.input_device == torch.device("cpu")
    name = "model.layers.3.mlp.down_proj.weight"
    torch.testing.assert_close(read_parameter(dispatched.model, name), whole.model.get_submodule(name[:-7]).weight)


def test_profile_of_the_dispatched_parent_equals_the_whole_one(dispatched, whole):
    batches = tiny_batches("llama", count=3)
    a = sv.profile(dispatched, batches, progress=False)
    b = sv.profile(whole, batches, progress=False)
    assert a.tokens == b.tokens
    for name in ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-7)
    a.check_parent(whole)  # same fingerprint, read from the offloaded first block's neighbours


def test_trace_and_ablation_run_through_the_dispatch_hooks(dispatched, whole):
    batch = tiny_batches("llama", count=1)[0]
    a, b = sv.token_trace(dispatched, batch, token_index=3), sv.token_trace(whole, batch, token_index=3)
    np.testing.assert_allclose(a.norms, b.norms, rtol=1e-5)
    heldout = tiny_batches("llama", count=2, seed=3)
    a, b = sv.block_ablation(dispatched, heldout, progress=False), sv.block_ablation(whole, heldout, progress=False)
    assert a.removed == pytest.approx(b.removed, rel=1e-5)
    assert a.duplicated == pytest.approx(b.duplicated, rel=1e-5)


@pytest.mark.parametrize("scaling", ["sqrt", "calibrated"])
def test_subclone_reads_offloaded_weights_and_lands_on_one_device(dispatched, whole, scaling):
    batches = tiny_batches("llama", count=2)
    prof = sv.profile(whole, batches, progress=False)
    spec = sv.DestinationSpec(layers=3, hidden=24, ffn=40, heads=3, kv_heads=1)
    from_dispatched = sv.subclone(dispatched, sv.plan(dispatched, prof, spec, scaling=scaling), batches)
    from_whole = sv.subclone(whole, sv.plan(whole, prof, spec, scaling=scaling), batches)
    devices = {t.device for t in [*from_dispatched.parameters(), *from_dispatched.buffers()]}
    assert devices == {torch.device("cpu")}
    expected = from_whole.state_dict()
    for name, value in from_dispatched.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_model_object_is_dispatched_by_accelerate(tmp_path):
    model = tiny_model("gpt2")
    reference = tiny_model("gpt2")
    device_map = {
        "transformer.wte": "cpu",
        "transformer.wpe": "cpu",
        "transformer.h.0": "cpu",
        "transformer.h.1": "disk",
        "transformer.h.2": "cpu",
        "transformer.h.3": "disk",
        "transformer.ln_f": "cpu",
        "lm_head": "cpu",
    }
    parent = sv.load_parent(model, device_map=device_map, offload_folder=tmp_path)
    assert parent.model.hf_device_map == device_map
    batches = tiny_batches("gpt2", count=2)
    a = sv.profile(parent, batches, progress=False)
    b = sv.profile(sv.load_parent(reference, device="cpu"), batches, progress=False)
    np.testing.assert_allclose(a.residual_abs_sums, b.residual_abs_sums, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(device_map="everywhere"), ["device_map='everywhere'", "auto", "sequential"]),
        (dict(device_map="auto", device="cpu"), ["device='cpu'", "only one"]),
        (dict(device_map={"model.layers.0": "disk"}), ["'disk'", "offload_folder"]),
        (dict(device_map=["cpu"]), ["device_map=['cpu']", "dict"]),
    ],
)
def test_bad_device_maps_are_refused_before_loading(parent_dir, kwargs, fragments):
    with pytest.raises(ValueError) as error:
        sv.load_parent(parent_dir, **kwargs)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_cli_profile_with_a_device_map_file_equals_the_whole_parent(parent_dir, tmp_path, capsys):
    import json
    import random

    from subclone_viz.cli import main
    from tiny import WORDS

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(random.Random(0).choice(WORDS[:20]) for _ in range(600)))
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(LLAMA_MAP))
    common = [
        "profile",
        "--parent",
        str(parent_dir),
        "--data",
        str(corpus),
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--tokens",
        "64",
    ]
    assert (
        main(
            [
                *common,
                "--device-map",
                str(map_file),
                "--offload-folder",
                str(tmp_path / "off"),
                "--out",
                str(tmp_path / "mapped.npz"),
            ]
        )
        == 0
    )
    assert main([*common, "--out", str(tmp_path / "whole.npz")]) == 0
    mapped, whole = sv.Profile.load(tmp_path / "mapped.npz"), sv.Profile.load(tmp_path / "whole.npz")
    np.testing.assert_allclose(mapped.residual_abs_sums, whole.residual_abs_sums, rtol=1e-5)
    capsys.readouterr()
    assert main([*common, "--device-map", "everywhere"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'everywhere'" in error and "auto" in error
