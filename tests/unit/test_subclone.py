"""The family battery, on a tiny model of every family and every model_type the families claim: every
parameter resolves to a rule, reorder-only plans reproduce the parent, slices stay consistent, a width and
depth cut runs a forward and a training step, and a saved destination reloads through its own library's
loader with identical outputs. Then the planner's and subcloner's own behaviour."""

import copy
import dataclasses
import json
import re

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.families import AXES, FAMILIES, axis_indices, family_of
from subclone_viz.parent import _auto_class
from tiny import TINY_FAMILIES, tiny_batches, tiny_model


def test_every_family_and_claimed_model_type_has_a_tiny_model():
    covered = {}
    for name in TINY_FAMILIES:
        model = tiny_model(name)
        covered.setdefault(family_of(model).name, set()).add(
            getattr(getattr(model, "config", None), "model_type", None)
        )
    for family in FAMILIES.values():
        assert family.name in covered, f"family {family.name!r} has no tiny model in tests/tiny.py"
        missing = set(family.model_types) - covered[family.name]
        assert not missing, f"{family.name} claims model_type(s) {sorted(missing)} that no tiny model tests"


def test_unsupported_models_name_the_supported_families():
    headless = tiny_model("llama").model  # a LlamaModel: a claimed model_type without its LM head
    with pytest.raises(sv.UnsupportedArchitectureError, match="LlamaModel \\(model_type 'llama'\\).*gemma \\(Gemma\\)"):
        family_of(headless)
    with pytest.raises(sv.UnsupportedArchitectureError, match="unsupported architecture Linear; supported families"):
        family_of(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_every_parameter_resolves_to_a_rule(name):
    model = tiny_model(name)
    family = family_of(model)
    for pname, param in model.named_parameters():
        rule = family.rule_for(pname)
        assert len(rule.axes) == param.dim(), f"{pname}: rule names {rule.axes} for shape {tuple(param.shape)}"
        assert set(rule.axes) <= set(AXES)
        assert rule.fan_in_axis is None or rule.axes[rule.fan_in_axis] != "keep"
    if family.library == "transformers":
        # A config without architectures loads with the Auto class of the family claiming its model_type;
        # a saved one (architectures recorded) as the model's own class.
        config = copy.deepcopy(model.config)
        assert _auto_class(config).__name__ == type(family).auto_class
        config.architectures = [type(model).__name__]
        assert type(_auto_class(config).from_config(config)) is type(model)


@pytest.fixture(params=list(TINY_FAMILIES), scope="module")
def setup(request):
    name = request.param
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    return name, parent, batches, sv.profile(parent, batches, progress=False)


def outputs(parent, model, batch):
    with torch.no_grad():
        return parent.family.logits(model, batch)


def full_spec(dims):
    return sv.DestinationSpec(
        layers=dims.layers, hidden=dims.hidden, ffn=dims.ffn, heads=dims.heads, kv_heads=dims.kv_heads
    )


def test_reorder_only_plan_reproduces_parent(setup):
    name, parent, batches, prof = setup
    p = sv.plan(parent, prof, full_spec(parent.dims))
    assert p.residual != sorted(p.residual), "the importance plan should actually reorder channels"
    neurons = [n for layer in p.expert_ffn for n in layer] if p.experts else p.ffn  # MoE: each expert's own
    assert any(f != sorted(f) for f in neurons) and any(h != sorted(h) for h in p.heads), "and neurons and heads"
    if p.experts:
        assert any(e != sorted(e) for e in p.experts), "and experts, with their router rows"
    child = sv.subclone(parent, p)
    assert type(child) is type(parent.model)
    for batch in batches:
        expected = outputs(parent, parent.model, batch)
        if parent.family.task == "encoder":  # a bare encoder outputs the residual stream, in the plan's order
            expected = expected[..., p.residual]
        torch.testing.assert_close(outputs(parent, child, batch), expected, atol=1e-4, rtol=1e-4)


def test_residual_axes_share_one_index_set(setup):
    name, parent, batches, prof = setup
    spec = sv.DestinationSpec(layers=2, hidden=parent.dims.hidden // 2)
    p = sv.plan(parent, prof, spec)
    child = sv.subclone(parent, p, calibration_batches=batches)
    family = parent.family
    source = dict(parent.model.named_parameters())
    for pname, param in child.named_parameters():
        info = family.param_info(pname)
        parent_name = pname if info.block is None else family.block_param_name(pname, p.layers[info.block])
        expected = source[parent_name]
        for axis, kind in enumerate(info.rule.axes):
            if kind == "residual":
                assert axis_indices(p, kind, info.block) == p.residual
            index = axis_indices(p, kind, info.block)
            if index and isinstance(index[0], list):  # per kept expert (axis 0 already holds the kept experts)
                expected = torch.stack([e.index_select(axis - 1, torch.tensor(i)) for e, i in zip(expected, index)])
            elif index is not None:
                expected = expected.index_select(axis, torch.tensor(index))
        scale = child.subclone_info["scales"].get(pname, 1.0)
        torch.testing.assert_close(param, expected * scale, msg=f"{pname} is not the planned slice")


def test_shapes_match_spec(setup):
    name, parent, batches, prof = setup
    dims = parent.dims
    kv = max(1, dims.kv_heads // 2)
    heads = kv * dims.queries_per_kv
    hidden = heads * dims.head_dim if parent.family.heads_follow_hidden else dims.hidden // 2
    spec = sv.DestinationSpec(layers=3, hidden=hidden, ffn=dims.ffn // 2, heads=heads, kv_heads=kv)
    child = sv.subclone(parent, sv.plan(parent, prof, spec))
    got = parent.family.dims(child)
    assert (got.layers, got.hidden, got.ffn, got.heads, got.kv_heads) == (3, hidden, dims.ffn // 2, heads, kv)
    out = outputs(parent, child, batches[0])
    assert torch.isfinite(out).all()
    if parent.family.task == "encoder":
        return  # a bare encoder has no loss to train on
    child.train()
    before = {n: p.detach().clone() for n, p in child.named_parameters()}
    loss = parent.family.loss(child, batches[0])
    loss.backward()
    torch.optim.SGD(child.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in child.parameters() if p.grad is not None)
    changed = [n for n, p in child.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2, "a training step should move most parameters"


@pytest.mark.parametrize("width", ["importance", "uniform", "first"])
@pytest.mark.parametrize("depth", ["middle", "first", "last", "metric"])
def test_strategies_give_valid_plans(setup, width, depth):
    name, parent, batches, prof = setup
    p = sv.plan(parent, prof, sv.DestinationSpec(layers=2, hidden=parent.dims.hidden // 2), depth=depth, width=width)
    assert len(p.layers) == 2 and len(set(p.residual)) == len(p.residual) == parent.dims.hidden // 2
    assert p == sv.plan(
        parent, prof, sv.DestinationSpec(layers=2, hidden=parent.dims.hidden // 2), depth=depth, width=width
    ), "the same inputs must give the same plan"
    assert sv.SubclonePlan.from_dict(json.loads(json.dumps(p.to_document()))) == p
    sv.subclone(parent, p)


def test_save_reload_identical_outputs(setup, tmp_path):
    name, parent, batches, prof = setup
    p = sv.plan(parent, prof, sv.DestinationSpec(layers=3, hidden=parent.dims.hidden // 2))
    child = sv.subclone(parent, p)
    path = sv.save_destination(child, p, tmp_path / "dest")
    record = json.loads((path / "subclone.json").read_text())
    assert record["plan"]["residual"] == p.residual and record["scaling"] == "sqrt"
    assert (path / "README.md").read_text().startswith("---")
    assert any(f.suffix == ".safetensors" for f in path.iterdir())
    reloaded = reload(parent.family, path)
    assert type(reloaded) is type(child)
    for batch in batches:
        torch.testing.assert_close(outputs(parent, reloaded, batch), outputs(parent, child, batch), atol=0, rtol=0)


def reload(family, path):
    """A saved destination through its own library's loader: timm, or the family's transformers Auto class."""
    if family.library == "timm":
        import timm

        return timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    import transformers

    return getattr(transformers, family.auto_class).from_pretrained(path).eval()


@pytest.mark.parametrize("name", ["gemma", "gemma2", "gemma3"])
def test_gemma_recomputes_embed_scale_and_follows_layer_types(name, tmp_path):
    parent = sv.load_parent(tiny_model(name), device="cpu")  # hidden 32
    p = sv.plan(parent, None, sv.DestinationSpec(layers=[1, 3, 2], hidden=16), width="first")
    child = sv.subclone(parent, p)
    assert float(child.model.embed_tokens.embed_scale) == pytest.approx(16**0.5)
    types = getattr(parent.model.config, "layer_types", None)
    if types is not None:
        assert child.config.layer_types == [types[1], types[3], types[2]] and len(set(types)) == 2
    reloaded = reload(parent.family, sv.save_destination(child, p, tmp_path / "dest"))
    assert float(reloaded.model.embed_tokens.embed_scale) == float(child.model.embed_tokens.embed_scale)


def test_heads_cut_keeps_parent_head_outputs():
    """With the residual stream whole, the kept heads' attention outputs are the parent's, through the
    model's own attention code (Phi-3's fused GQA q|k|v, Gemma's single KV head, Llama's groups)."""
    for name in ("phi3", "gemma3", "llama", "qwen3"):
        parent = sv.load_parent(tiny_model(name), device="cpu")
        dims = parent.dims
        kv = max(1, dims.kv_heads // 2)
        heads = kv * dims.queries_per_kv
        if heads == dims.heads:  # one KV group (Gemma): keep every head, reordered by importance
            heads = dims.heads
        batches = tiny_batches(name)
        prof = sv.profile(parent, batches, progress=False)
        spec = sv.DestinationSpec(layers=dims.layers, hidden=dims.hidden, ffn=dims.ffn, heads=heads, kv_heads=kv)
        p = sv.plan(parent, prof, spec, depth="first", scaling="none")
        child = sv.subclone(parent, p)
        captured = {}
        for key, model in (("parent", parent.model), ("child", child)):
            block = parent.family.blocks(model)[0]
            module = parent.family.attention_output_module(block)
            handle = module.register_forward_pre_hook(lambda m, a, key=key: captured.__setitem__(key, a[0]))
            outputs(parent, model, batches[0])
            handle.remove()
        kept = axis_indices(p, "q_heads", 0)
        torch.testing.assert_close(
            captured["child"],
            captured["parent"][..., kept],
            atol=1e-5,
            rtol=1e-5,
            msg=f"{name}: kept heads' outputs differ from the parent's",
        )


def test_per_layer_config_it_cannot_follow_is_refused():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    parent.model.config.no_rope_layers = [1, 0, 1, 1]
    p = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=48), width="first")
    with pytest.raises(ValueError, match=re.escape("config.no_rope_layers holds one entry per block")):
        sv.subclone(parent, p)


def test_gpt2_attention_scaled_by_block_index_only_keeps_leading_blocks():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    parent.model.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(ValueError, match=r"parent blocks \[0, 3\] cannot keep their attention"):
        sv.subclone(parent, sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=16), width="first"))
    p = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=32), depth="first", width="first")
    child = sv.subclone(parent, p)
    assert child.config.scale_attn_by_inverse_layer_idx


def test_save_refuses_non_empty_directory(tmp_path):
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    p = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=16), width="uniform")
    child = sv.subclone(parent, p)
    target = tmp_path / "dest"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sv.save_destination(child, p, target)
    assert [f.name for f in target.iterdir()] == ["keep.txt"]
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")], "no staging directory may be left behind"
    sv.save_destination(child, p, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "subclone.json").exists()


def test_growing_depth_duplicates_middle_blocks():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    p = sv.plan(parent, None, sv.DestinationSpec(layers=7, hidden=48), width="first")
    assert p.layers[0] == 0 and p.layers[-1] == 3 and len(p.layers) == 7
    assert sorted(set(p.layers)) == [0, 1, 2, 3] and p.layers == sorted(p.layers)
    child = sv.subclone(parent, p)
    assert parent.family.dims(child).layers == 7


def test_middle_depth_keeps_first_and_last():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    assert sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=32), width="first").layers == [0, 3]
    assert sv.plan(parent, None, sv.DestinationSpec(layers=3, hidden=32), width="first").layers == [0, 1, 3]


def test_gqa_keeps_whole_groups():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")  # 6 heads, 2 KV heads: 3 queries per KV
    prof = sv.profile(parent, tiny_batches("llama"), progress=False)
    p = sv.plan(parent, prof, sv.DestinationSpec(layers=4, hidden=24, heads=3, kv_heads=1))
    for heads, groups in zip(p.heads, p.kv_heads):
        assert len(groups) == 1 and sorted(heads) == [3 * groups[0] + r for r in range(3)]
    assert p.kv_heads[0] == [int(np.argmax(prof.head_importance[p.layers[0]].reshape(2, 3).sum(1)))]


def test_sqrt_scaling_factors():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    p = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=12, ffn=20, heads=3, kv_heads=1), width="first")
    scales = sv.subclone(parent, p).subclone_info["scales"]
    assert scales["model.layers.0.self_attn.q_proj.weight"] == pytest.approx((48 / 12) ** 0.5)
    assert scales["model.layers.0.self_attn.o_proj.weight"] == pytest.approx((6 / 3) ** 0.5)
    assert scales["model.layers.0.mlp.down_proj.weight"] == pytest.approx((80 / 20) ** 0.5)
    assert "model.embed_tokens.weight" not in scales and "model.norm.weight" not in scales


def test_calibrated_scaling_matches_parent_std():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    batches = tiny_batches("gpt2", pad=False)
    p = sv.plan(parent, None, sv.DestinationSpec(layers=4, hidden=16), width="uniform", scaling="calibrated")
    child = sv.subclone(parent, p, calibration_batches=batches)
    stds = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: stds.setdefault(n, []).append(o))
        for n, m in [("parent", parent.model.transformer.h[0].mlp.c_fc), ("child", child.transformer.h[0].mlp.c_fc)]
    ]
    joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    outputs(parent, parent.model, joined)
    outputs(parent, child, joined)
    for h in hooks:
        h.remove()
    kept = p.ffn[0]
    assert float(stds["child"][0].std()) == pytest.approx(float(stds["parent"][0][..., kept].std()), rel=1e-4)
    with pytest.raises(ValueError, match="calibration_batches"):
        sv.subclone(parent, p)


def scales_of_one_joined_forward(parent, p, batches):
    """The reference: calibration as first written, with the whole outputs of two forwards (parent, then the
    destination scaled layer by layer inside its hooks) on the batches joined into one."""
    from subclone_viz.subclone import _source_name

    family, dest = parent.family, sv.subclone(parent, dataclasses.replace(p, scaling="none"))
    batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    mask = batch.get("attention_mask")
    mask = None if mask is None or bool(mask.all()) else mask.reshape(-1).bool()

    def rows(t):
        flat = t.reshape(-1, t.shape[-1])
        return (flat[mask] if mask is not None and flat.shape[0] == mask.numel() else flat).float()

    shapes = {name: q.shape for name, q in parent.model.named_parameters()}
    linears = []
    for name, param in dest.named_parameters():
        info = family.param_info(name)
        axis = info.rule.fan_in_axis
        if (
            axis is None
            or param.dim() != 2
            or param.shape[axis] == shapes[_source_name(family, p, name, info.block)][axis]
        ):
            continue
        if getattr(family, "router", None) and name.endswith(f".{family.router}.weight"):
            continue  # routers return tuples: calibration leaves them as sliced
        module = name.rsplit(".", 1)[0]
        linears.append(
            (module, _source_name(family, p, module, info.block), axis_indices(p, info.rule.axes[1 - axis], info.block))
        )
    parent_std, scales = {}, {}
    hooks = [
        parent.model.get_submodule(source).register_forward_hook(
            lambda m, a, out, source=source, kept=kept: parent_std.__setitem__(
                source, float((rows(out) if kept is None else rows(out)[:, kept]).std())
            )
        )
        for _, source, kept in linears
    ]
    outputs(parent, parent.model, batch)

    def dest_hook(module, args, out, name, source):
        scale = parent_std[source] / max(float(rows(out).std()), 1e-12)
        scales[f"{name}.weight"] = scale
        module.weight.mul_(scale)
        if getattr(module, "bias", None) is not None:
            module.bias.mul_(scale)
        return out * scale

    hooks += [
        dest.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name, source=source: dest_hook(m, a, out, name, source)
        )
        for name, source, _ in linears
    ]
    outputs(parent, dest, batch)
    for hook in hooks:
        hook.remove()
    return scales


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_streamed_calibration_gives_the_scales_of_one_joined_forward(name):
    """Running sums that stop after the last scaled layer: the same scales as whole outputs, on every family
    (LM heads, a pooler and a classifier head included)."""
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    dims = parent.dims
    spec = sv.DestinationSpec(layers=dims.layers - 1, hidden=dims.hidden // 2, ffn=dims.ffn // 2)
    p = sv.plan(parent, None, spec, width="uniform", scaling="calibrated")
    scales = sv.subclone(parent, p, calibration_batches=batches).subclone_info["scales"]
    expected = scales_of_one_joined_forward(parent, p, batches)
    assert len(scales) >= 4 * (dims.layers - 1) and scales.keys() == expected.keys()
    for layer, scale in expected.items():
        assert scales[layer] == pytest.approx(scale, rel=1e-4), layer


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(layers=0, hidden=32), "layers=0"),
        (dict(layers=[], hidden=32), "at least one"),
        (dict(layers=[0, 9], hidden=32), "0 to 3"),
        (dict(layers=2, hidden=20), "hidden=20 is not a multiple of the head size 8: choose one of 8, 16, 24, 32"),
        (dict(layers=2, hidden=64), "hidden=64 is out of range"),
        (dict(layers=2, hidden=16, heads=3), "heads = hidden / head size"),
        (dict(layers=2, hidden=16, ffn=1000), "ffn=1000"),
    ],
)
def test_invalid_specs_name_the_valid_range(spec, message):
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    with pytest.raises(sv.SpecError, match=message):
        sv.plan(parent, None, sv.DestinationSpec(**spec), width="first")


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(layers=2, hidden=24, heads=4), "heads=4 is not valid with hidden=24: choose one of 3, 6"),
        (dict(layers=2, hidden=9, heads=6), "heads=6 is not valid with hidden=9: choose one of 3 "),
        (dict(layers=2, hidden=20), "hidden=20 is not a multiple of any valid head count"),
        (dict(layers=2, hidden=24, heads=3, kv_heads=2), "use kv_heads=1"),
        (dict(layers=2, hidden=24, heads=9), "heads=9"),
    ],
)
def test_invalid_gqa_specs(spec, message):
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    with pytest.raises(sv.SpecError, match=message):
        sv.plan(parent, None, sv.DestinationSpec(**spec), width="first")


def test_every_offered_llama_width_saves(tmp_path):
    """transformers refuses to save a config whose heads do not divide the hidden width; no offered width may."""
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    choices = sv.spec_choices(parent)
    assert 20 not in choices["hidden"] and 24 in choices["hidden"]
    for hidden in (9, 30, 42):
        p = sv.plan(parent, None, sv.DestinationSpec(layers=1, hidden=hidden), width="first")
        sv.save_destination(sv.subclone(parent, p), p, tmp_path / str(hidden))


def test_unset_widths_follow_parent_ratios():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")  # hidden 48, ffn 80, 6 heads, 2 KV
    p = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=24), width="first")
    assert p.dims["ffn"] == 40 and p.dims["heads"] == 3 and p.dims["kv_heads"] == 1


def test_plan_errors():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    with pytest.raises(sv.SpecError, match="profile"):
        sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=16))
    with pytest.raises(sv.SpecError, match="width='widest'"):
        sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=16), width="widest")
    with pytest.raises(sv.SpecError, match="depth='middle'"):
        sv.plan(parent, None, sv.DestinationSpec(layers=6, hidden=16), depth="first", width="first")
    other = sv.load_parent(tiny_model("gpt2", seed=3), device="cpu")
    prof = sv.profile(other, tiny_batches("gpt2"), progress=False)
    with pytest.raises(sv.ProfileMismatchError):
        sv.plan(parent, prof, sv.DestinationSpec(layers=2, hidden=16))


def test_block_ablation_shapes():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    result = sv.block_ablation(parent, tiny_batches("llama"), progress=False)
    assert len(result.removed) == len(result.duplicated) == 4
    assert all(np.isfinite(result.removed)) and result.baseline > 0
    assert len(set(np.round(result.removed, 6))) > 1, "removing different blocks should change the loss differently"


@pytest.mark.parametrize("name", [n for n in TINY_FAMILIES if n != "bert"])
def test_hooked_block_ablation_equals_subclones_with_that_block_list(name):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batches = tiny_batches(name)
    result = sv.block_ablation(parent, batches, progress=False)
    dims = parent.dims
    full = dict(hidden=dims.hidden, ffn=dims.ffn, heads=dims.heads, kv_heads=dims.kv_heads)

    def subclone_loss(layers):
        p = sv.plan(parent, None, sv.DestinationSpec(layers=layers, **full), width="first", scaling="none")
        return sv.evaluate(sv.subclone(parent, p), parent.family, batches).loss

    assert result.baseline == pytest.approx(sv.evaluate(parent.model, parent.family, batches).loss)
    for block in (0, 2):
        assert result.removed[block] == pytest.approx(subclone_loss([i for i in range(4) if i != block]), rel=1e-5)
        assert result.duplicated[block] == pytest.approx(subclone_loss(sorted([*range(4), block])), rel=1e-5)


def test_bare_encoder_has_no_loss():
    parent = sv.load_parent(tiny_model("bert"), device="cpu")
    with pytest.raises(ValueError, match="AutoModelForMaskedLM"):
        parent.family.loss(parent.model, tiny_batches("bert")[0])


@pytest.mark.parametrize("name", [n for n in TINY_FAMILIES if n != "bert"])
def test_every_family_has_a_finite_loss(name):
    parent = sv.load_parent(tiny_model(name), device="cpu")
    assert torch.isfinite(parent.family.loss(parent.model, tiny_batches(name)[0]))


def test_evaluate_shows_a_progress_bar_only_when_asked_or_long(capsys):
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama")
    quiet = sv.evaluate(parent.model, parent.family, batches)  # short: the delayed bar never appears
    assert capsys.readouterr().err == ""
    shown = sv.evaluate(parent.model, parent.family, batches, max_batches=2, progress=True)
    assert "evaluate" in capsys.readouterr().err and shown.batches == 2
    assert quiet.loss == sv.evaluate(parent.model, parent.family, batches, progress=False).loss
