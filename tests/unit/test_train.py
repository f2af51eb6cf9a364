"""Training and comparing initializations on tiny random parents: records, schedules, determinism, resume,
stopping, distillation, the speedup rule on hand-made histories, and the comparison's bookkeeping."""

import copy
import json
import threading

import pytest
import torch

import subclone_viz as sv
from subclone_viz.compare import INITS, compare, initial_destination, speedup
from subclone_viz.train import EvalRecord, History, StepRecord, TrainSettings, distillation_loss, train
from tiny import tiny_batches, tiny_model


def text_batches_of_lengths(lengths, batch_size=2, seed=0):
    """Unpadded token batches whose sizes differ, so the order they were served in shows in ``seen``."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for length in lengths:
        ids = torch.randint(3, 97, (batch_size, length), generator=generator)  # (B, T)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


def losses(history):
    return [r.loss for r in history.steps]


def quick(model, batches, steps=6, **kwargs):
    kwargs.setdefault("progress", False)
    return train(
        model, batches, steps=steps, lr=kwargs.pop("lr", 1e-3), weight_decay=kwargs.pop("weight_decay", 0.01), **kwargs
    )


# ---------------------------------------------------------------------------------------------------- train


def test_train_records_every_step_and_evaluation():
    batches = tiny_batches("gpt2", count=3)
    heldout = tiny_batches("gpt2", count=2, seed=9)
    history = quick(tiny_model("gpt2"), batches, steps=7, eval_batches=heldout, eval_every=3, label="run")
    assert [r.step for r in history.steps] == list(range(1, 8))
    assert [r.step for r in history.evals] == [0, 3, 6, 7]
    per_batch = int(batches[0]["attention_mask"].sum())  # padding is not counted
    assert [r.seen for r in history.steps] == [per_batch * k for k in range(1, 8)]
    assert [r.seen for r in history.evals] == [0, 3 * per_batch, 6 * per_batch, 7 * per_batch]
    assert history.unit == "tokens" and history.label == "run" and not history.stopped_early
    assert history.config["mixed_precision"] == "no" or torch.cuda.is_available()
    times = [r.time for r in history.steps]
    assert times == sorted(times)
    assert all(r.accuracy is None for r in history.evals)


def test_training_lowers_the_loss():
    batch = tiny_batches("llama", count=1)
    history = quick(tiny_model("llama"), batch, steps=25, lr=1e-2, eval_batches=batch, eval_every=25)
    assert history.evals[-1].loss < history.evals[0].loss - 1.0


def test_image_classifier_reports_accuracy_and_counts_images():
    batches = tiny_batches("vit", count=2, batch_size=4)
    history = quick(tiny_model("vit"), batches, steps=2, eval_batches=batches)
    assert history.unit == "images"
    assert [r.seen for r in history.steps] == [4, 8]
    assert all(0.0 <= r.accuracy <= 1.0 for r in history.evals)


def test_batches_are_cycled_in_order():
    batches = text_batches_of_lengths([8, 10, 12])
    history = quick(tiny_model("gpt2"), batches, steps=7)
    seen = [0] + [r.seen for r in history.steps]
    assert [b - a for a, b in zip(seen, seen[1:])] == [16, 20, 24, 16, 20, 24, 16]


def test_warmup_then_cosine_schedule():
    history = quick(tiny_model("gpt2"), tiny_batches("gpt2"), steps=20, lr=1e-3, warmup=4)
    lrs = [r.lr for r in history.steps]
    assert lrs[:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert 0 < lrs[-1] < 1e-4


def test_constant_and_linear_schedules():
    model = tiny_model("gpt2")
    constant = quick(model, tiny_batches("gpt2"), steps=6, lr=1e-3, warmup=2, schedule="constant")
    assert [r.lr for r in constant.steps] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3, 1e-3])
    linear = quick(tiny_model("gpt2"), tiny_batches("gpt2"), steps=4, lr=1e-3, warmup=0, schedule="linear")
    assert [r.lr for r in linear.steps] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_default_warmup_is_five_percent():
    history = quick(tiny_model("gpt2"), tiny_batches("gpt2"), steps=40)
    assert history.config["warmup"] == 2
    assert history.steps[0].lr == pytest.approx(history.config["lr"] / 3)


def test_weight_decay_spares_biases_and_norms():
    model = tiny_model("gpt2")
    norm_before = model.transformer.ln_f.weight.detach().clone()
    # A learning rate so small that Adam's update is negligible next to a huge decay of matrices.
    quick(model, tiny_batches("gpt2"), steps=1, lr=1e-12, weight_decay=1e10, warmup=0, max_grad_norm=None)
    torch.testing.assert_close(model.transformer.ln_f.weight, norm_before)
    assert model.transformer.h[0].mlp.c_fc.weight.abs().max() < 1e-1


def test_same_seed_same_history_and_the_seed_matters():
    batches = tiny_batches("gpt2")  # GPT-2's dropout makes the loss depend on the seed
    first = quick(tiny_model("gpt2"), batches, steps=5, eval_batches=batches, seed=3)
    again = quick(tiny_model("gpt2"), batches, steps=5, eval_batches=batches, seed=3)
    other = quick(tiny_model("gpt2"), batches, steps=5, eval_batches=batches, seed=4)
    assert losses(first) == losses(again)
    assert [r.loss for r in first.evals] == [r.loss for r in again.evals]
    assert losses(first) != losses(other)


def test_resume_gives_the_uninterrupted_history(tmp_path):
    batches, heldout = tiny_batches("gpt2", count=3), tiny_batches("gpt2", count=2, seed=5)
    settings = dict(steps=9, eval_batches=heldout, eval_every=2, seed=1)
    reference_model = tiny_model("gpt2")
    reference = quick(reference_model, batches, **settings)

    stop = threading.Event()

    def stop_after_step_5(history, record):
        if isinstance(record, StepRecord) and record.step == 5:
            stop.set()

    interrupted = quick(
        tiny_model("gpt2"), batches, checkpoint_dir=tmp_path, stop=stop, callback=stop_after_step_5, **settings
    )
    assert interrupted.stopped_early and interrupted.last_step == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004"]

    resumed_model = tiny_model("gpt2", seed=7)  # other weights: the checkpoint must replace them
    resumed = quick(resumed_model, batches, checkpoint_dir=tmp_path, resume=True, **settings)
    assert not resumed.stopped_early
    assert [r.step for r in resumed.steps] == [r.step for r in reference.steps]
    assert losses(resumed) == pytest.approx(losses(reference), abs=1e-6)
    assert [r.lr for r in resumed.steps] == pytest.approx([r.lr for r in reference.steps])
    assert [r.seen for r in resumed.steps] == [r.seen for r in reference.steps]
    assert [r.step for r in resumed.evals] == [0, 2, 4, 6, 8, 9]
    assert [r.loss for r in resumed.evals] == pytest.approx([r.loss for r in reference.evals], abs=1e-6)
    for (name, a), b in zip(reference_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000009"]


def test_resume_refuses_other_settings(tmp_path):
    batches = tiny_batches("gpt2")
    quick(tiny_model("gpt2"), batches, steps=4, eval_batches=batches, eval_every=2, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="lr: checkpoint 0.001 vs now 0.002"):
        quick(
            tiny_model("gpt2"),
            batches,
            steps=4,
            lr=2e-3,
            eval_batches=batches,
            eval_every=2,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_resume_without_a_checkpoint_starts_afresh(tmp_path):
    batches = tiny_batches("gpt2")
    fresh = quick(tiny_model("gpt2"), batches, steps=3)
    resumed = quick(tiny_model("gpt2"), batches, steps=3, checkpoint_dir=tmp_path / "new", resume=True)
    assert losses(resumed) == losses(fresh)


def test_stop_event_set_before_training_trains_nothing():
    stop = threading.Event()
    stop.set()
    batches = tiny_batches("gpt2")
    history = quick(tiny_model("gpt2"), batches, steps=5, eval_batches=batches, stop=stop)
    assert history.stopped_early
    assert history.steps == [] and [r.step for r in history.evals] == [0]


def test_ctrl_c_stops_cleanly_with_the_history_so_far():
    def interrupt_at_step_2(history, record):
        if isinstance(record, StepRecord) and record.step == 2:
            raise KeyboardInterrupt

    model = tiny_model("gpt2")
    history = quick(model, tiny_batches("gpt2"), steps=5, callback=interrupt_at_step_2)
    assert history.stopped_early and history.last_step == 2
    assert not model.training


def test_callback_sees_steps_and_evaluations_in_order():
    seen = []
    batches = tiny_batches("gpt2")
    quick(
        tiny_model("gpt2"),
        batches,
        steps=4,
        eval_batches=batches,
        eval_every=2,
        callback=lambda history, record: seen.append((type(record).__name__, record.step)),
    )
    assert seen == [
        ("EvalRecord", 0),
        ("StepRecord", 1),
        ("StepRecord", 2),
        ("EvalRecord", 2),
        ("StepRecord", 3),
        ("StepRecord", 4),
        ("EvalRecord", 4),
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps=0"),
        (dict(schedule="step"), "schedule='step' is not a schedule; choose one of cosine, linear, constant"),
        (dict(mixed_precision="fp8"), "mixed_precision='fp8' is not valid; choose one of auto, no, bf16, fp16"),
        (dict(warmup=99), "warmup=99"),
        (dict(eval_every=0), "eval_every=0"),
        (dict(lr=0.0), "lr=0.0"),
        (dict(resume=True), "resume=True needs the checkpoint_dir"),
        (dict(distill_alpha=1.5), "distill_alpha=1.5 must be between 0"),
        (dict(distill_temperature=0), "distill_temperature=0 must be positive"),
    ],
)
def test_bad_training_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        quick(tiny_model("gpt2"), tiny_batches("gpt2"), **kwargs)


def test_settings_and_keyword_overrides_are_one_run():
    batches = tiny_batches("gpt2")
    settings = TrainSettings(steps=3, lr=1e-3, weight_decay=0.01, seed=2)
    by_settings = train(tiny_model("gpt2"), batches, settings, progress=False)
    by_keywords = quick(tiny_model("gpt2"), batches, steps=3, seed=2)
    overridden = train(
        tiny_model("gpt2"),
        batches,
        TrainSettings(steps=9, lr=5.0, weight_decay=0.01, seed=2),
        steps=3,
        lr=1e-3,
        progress=False,
    )
    assert losses(by_settings) == losses(by_keywords) == losses(overridden)
    assert by_settings.config["lr"] == 1e-3 and by_settings.config["max_grad_norm"] == 1.0


def test_unknown_setting_and_missing_lr_are_named():
    with pytest.raises(TypeError, match=r"unknown training setting\(s\) \['stepz'\]; valid ones: steps, lr"):
        quick(tiny_model("gpt2"), tiny_batches("gpt2"), stepz=3)
    with pytest.raises(ValueError, match="lr is not set"):
        train(tiny_model("gpt2"), tiny_batches("gpt2"), steps=2, weight_decay=0.0, progress=False)
    with pytest.raises(ValueError, match="max_grad_norm=0"):
        TrainSettings(max_grad_norm=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_half_precision_request_falls_back_to_fp32_on_cpu():
    with pytest.warns(UserWarning, match="ignored on a CPU"):
        history = quick(tiny_model("gpt2"), tiny_batches("gpt2"), steps=1, mixed_precision="bf16")
    assert history.config["mixed_precision"] == "no"


# ---------------------------------------------------------------------------------------------------- distill


def test_distillation_loss_is_zero_for_the_same_logits_and_scales_with_t_squared():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=generator), torch.randn(2, 5, 7, generator=generator)
    assert distillation_loss(student, student).item() == pytest.approx(0.0, abs=1e-6)
    p_teacher = torch.softmax(teacher / 2, -1)
    by_hand = (p_teacher * (p_teacher.log() - torch.log_softmax(student / 2, -1))).sum(-1).mean()
    assert distillation_loss(student, teacher, temperature=2.0).item() == pytest.approx(4 * by_hand.item(), rel=1e-5)


def test_distillation_loss_masks_padding_and_uses_the_shared_vocabulary():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 4, 6, generator=generator), torch.randn(2, 4, 6, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    changed = student.clone()
    changed[mask == 0] = 100.0  # padding positions: whatever the student says there must not count
    masked = distillation_loss(student, teacher, mask=mask)
    assert distillation_loss(changed, teacher, mask=mask) == pytest.approx(masked)
    assert distillation_loss(changed, teacher) != pytest.approx(distillation_loss(student, teacher))
    wider_teacher = torch.cat([teacher, torch.randn(2, 4, 3, generator=generator)], dim=-1)  # padded vocabulary
    assert distillation_loss(student, wider_teacher, mask=mask) == pytest.approx(masked)
    with pytest.raises(ValueError, match="10 classes and the teacher 4"):
        distillation_loss(torch.zeros(2, 10), torch.zeros(2, 4))


def test_distillation_gradient_reaches_the_student_only():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(3, 10, generator=generator, requires_grad=True)  # class logits
    teacher = torch.randn(3, 10, generator=generator, requires_grad=True)
    distillation_loss(student, teacher.detach()).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_alpha_zero_trains_exactly_like_no_teacher():
    batches = tiny_batches("gpt2")
    plain = quick(tiny_model("gpt2"), batches, steps=4, eval_batches=batches, eval_every=2)
    student = tiny_model("gpt2")
    zero = quick(
        student,
        batches,
        steps=4,
        eval_batches=batches,
        eval_every=2,
        teacher=tiny_model("gpt2", seed=5),
        distill_alpha=0.0,
    )
    assert losses(zero) == losses(plain)
    assert [r.loss for r in zero.evals] == [r.loss for r in plain.evals]
    assert all(r.distill_loss > 0 for r in zero.steps) and all(r.distill_loss is None for r in plain.steps)
    assert (zero.config["teacher"], zero.config["distill_alpha"]) == ("GPT2LMHeadModel", 0.0)
    assert (plain.config["teacher"], plain.config["distill_alpha"]) == (None, None)


def test_distilling_from_an_identical_teacher_starts_at_zero_kl():
    student = tiny_model("llama")  # no dropout: the student's training forward equals the teacher's
    history = quick(student, tiny_batches("llama"), steps=2, teacher=copy.deepcopy(student), distill_alpha=0.5)
    assert history.steps[0].distill_loss == pytest.approx(0.0, abs=1e-6)
    assert history.steps[1].distill_loss > 1e-6  # the student moved after one step


def test_masked_lm_teacher_sees_the_students_masked_tokens():
    student = tiny_model("bert-mlm")
    for module in student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    history = quick(student, tiny_batches("bert"), steps=1, teacher=copy.deepcopy(student))
    assert history.steps[0].distill_loss == pytest.approx(0.0, abs=1e-6)


def test_distillation_pulls_the_student_to_the_teacher_which_stays_untouched_in_eval_mode():
    teacher = tiny_model("llama", seed=7)
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    modes = []
    teacher.register_forward_pre_hook(lambda module, args: modes.append((module.training, torch.is_grad_enabled())))
    batch = tiny_batches("llama", count=1)
    history = quick(tiny_model("llama"), batch, steps=20, lr=1e-2, teacher=teacher, distill_alpha=1.0)
    assert history.steps[-1].distill_loss < 0.5 * history.steps[0].distill_loss
    assert set(modes) == {(False, False)} and len(modes) == 20  # one eval-mode, no-grad forward per step
    assert teacher.training  # its mode is given back
    assert all(p.grad is None for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)


def test_image_classifier_distills_its_class_logits():
    batches = tiny_batches("vit", count=2, batch_size=4)
    history = quick(tiny_model("vit"), batches, steps=2, teacher=tiny_model("vit", seed=3), eval_batches=batches)
    assert all(r.distill_loss > 0 for r in history.steps)
    assert history.unit == "images"


def test_training_clock_leaves_out_evaluations():
    batches = tiny_batches("gpt2")
    heldout = tiny_batches("gpt2", count=30, seed=3)  # evaluations far dearer than the 2 steps
    history = quick(tiny_model("gpt2"), batches, steps=2, eval_batches=heldout, eval_every=1)
    assert history.evals[0].time == 0.0
    assert [r.time for r in history.evals[1:]] == [r.time for r in history.steps]


def test_history_round_trips_through_json_and_csv(tmp_path):
    batches = tiny_batches("vit", count=2)
    history = quick(tiny_model("vit"), batches, steps=3, eval_batches=batches, eval_every=2, label="vit")
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history
    path = history.save(tmp_path / "h.json")
    assert History.load(path) == history
    with pytest.raises(FileExistsError, match="overwrite=True"):
        history.save(path)
    rows = history.to_csv(tmp_path / "h.csv").read_text().splitlines()
    assert rows[0] == "step,seen,train_loss,lr,train_time,eval_loss,eval_accuracy,eval_time,distill_loss"
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2", "3"]
    assert rows[1].split(",")[2] == ""  # no training loss before the first step
    assert float(rows[3].split(",")[5]) == history.evals[1].loss


def test_history_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        History.from_dict({"label": "x", "losses": []})


# ---------------------------------------------------------------------------------------------------- speedup


def history_of(*points, seconds_per_step=0.0):
    return History(
        evals=[EvalRecord(step=s, seen=s, loss=l, accuracy=None, time=s * seconds_per_step) for s, l in points]
    )


def test_speedup_interpolates_between_evaluations():
    reference = history_of((0, 4.0), (10, 3.0), (20, 2.0))
    other = history_of((0, 4.0), (10, 2.5), (20, 1.5))
    result = speedup(reference, other)
    assert result.target_loss == 2.0 and result.reference_steps == 20
    assert result.steps == pytest.approx(15.0)  # 2.5 -> 1.5 between steps 10 and 20 crosses 2.0 halfway
    assert result.speedup == pytest.approx(20 / 15)
    assert result.reached and not result.speedup_lower_bound


def test_speedup_per_second_charges_the_dearer_steps():
    reference = history_of((0, 4.0), (10, 3.0), (20, 2.0), seconds_per_step=1.0)
    other = history_of((0, 4.0), (10, 2.5), (20, 1.5), seconds_per_step=2.0)  # a teacher doubles a step's cost
    result = speedup(reference, other)
    assert result.speedup == pytest.approx(20 / 15)
    assert (result.reference_seconds, result.seconds) == pytest.approx((20.0, 30.0))
    assert result.speedup_per_second == pytest.approx(20 / 30)


def test_speedup_of_the_reference_itself_is_one():
    reference = history_of((0, 4.0), (10, 3.0), (20, 2.0))
    assert speedup(reference, reference).speedup == 1.0


def test_speedup_when_the_reference_got_there_before_its_end():
    reference = history_of((0, 4.0), (10, 2.0), (20, 2.2))  # best at step 10, final loss 2.2
    other = history_of((0, 4.0), (10, 3.0), (20, 2.2))
    result = speedup(reference, other)
    assert result.reference_steps == pytest.approx(9.0)  # 4.0 -> 2.0 over 10 steps crosses 2.2 at 9
    assert result.speedup == pytest.approx(9 / 20)


def test_speedup_already_there_at_step_zero_is_a_lower_bound():
    reference = history_of((0, 4.0), (10, 3.0), (20, 2.0))
    other = history_of((0, 1.9), (5, 1.8), (20, 1.0))
    result = speedup(reference, other)
    assert result.speedup == pytest.approx(20 / 5)  # "more than 4x": the first evaluation after 0 is at step 5
    assert result.speedup_lower_bound and result.reached and result.steps == 0


def test_speedup_never_reached_is_below_one():
    reference = history_of((0, 4.0), (10, 3.0), (20, 2.0))
    other = history_of((0, 4.0), (20, 3.0), (40, 2.5))
    result = speedup(reference, other)
    assert not result.reached and result.steps is None
    assert result.speedup == pytest.approx(20 / 40)


def test_speedup_is_undefined_when_the_reference_never_improved():
    reference = history_of((0, 2.0), (10, 2.5))
    assert speedup(reference, history_of((0, 3.0), (10, 1.0))).speedup is None


def test_speedup_needs_evaluations():
    with pytest.raises(ValueError, match="no evaluations"):
        speedup(History(), history_of((0, 1.0)))


# ---------------------------------------------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def vit_parent():
    return sv.load_parent(tiny_model("vit"), device="cpu")


@pytest.fixture(scope="module")
def gpt2_parent():
    return sv.load_parent(tiny_model("gpt2"), device="cpu")


def test_compare_trains_each_init_on_the_same_batches(gpt2_parent):
    batches, heldout = text_batches_of_lengths([8, 10, 12]), tiny_batches("gpt2", count=2, seed=4)
    spec = sv.DestinationSpec(layers=2, hidden=16)
    result = compare(gpt2_parent, spec, batches, steps=4, eval_batches=heldout, eval_every=2, progress=False)
    assert list(result.histories) == ["random", "subclone"]
    random, subclone = result.histories["random"], result.histories["subclone"]
    assert [r.seen for r in random.steps] == [r.seen for r in subclone.steps] == [16, 36, 60, 76]
    assert (random.config["lr"], random.config["weight_decay"]) == (3e-3, 0.1)  # tuned lr, the paper's decay
    assert (subclone.config["lr"], subclone.config["weight_decay"]) == (1e-3, 0.001)
    assert result.plans["random"] is None
    plan = result.plans["subclone"]
    assert (plan["depth"], plan["width"], plan["scaling"]) == ("middle", "importance", "sqrt")
    assert plan["dims"]["hidden"] == 16 and plan["layers"] == [0, 3]
    assert result.metrics["random"]["target_loss"] == random.evals[-1].loss
    assert result.metrics["subclone"]["speedup"] == speedup(random, subclone).speedup
    assert result.metrics["subclone"]["speedup_per_second"] == speedup(random, subclone).speedup_per_second
    assert result.metrics["subclone"]["initial_loss"] == subclone.evals[0].loss
    assert result.metrics["subclone"]["final_loss"] == subclone.evals[-1].loss
    assert result.config["destination"]["hidden"] == 16
    table = result.summary_table()
    assert [row["init"] for row in table] == ["random", "subclone"]
    assert table[1]["speedup"] == result.metrics["subclone"]["speedup"]
    assert table[1]["train_seconds"] == subclone.steps[-1].time > 0


def test_compare_same_seed_same_comparison(gpt2_parent):
    batches = tiny_batches("gpt2")
    spec = sv.DestinationSpec(layers=2, hidden=16)
    runs = [compare(gpt2_parent, spec, batches, steps=3, eval_batches=batches, progress=False) for _ in range(2)]
    for init in ("random", "subclone"):
        assert losses(runs[0].histories[init]) == losses(runs[1].histories[init])


def test_every_init_on_a_vision_parent(vit_parent):
    batches = tiny_batches("vit", count=2, batch_size=4)
    spec = sv.DestinationSpec(layers=2, hidden=16)
    result = compare(
        vit_parent,
        spec,
        batches,
        inits=list(INITS),
        steps=2,
        eval_batches=batches,
        lrs={"uniform": 5e-4},
        weight_decays={"random": 0.3},
        progress=False,
    )
    assert list(result.histories) == list(INITS)
    for init, recipe in INITS.items():
        history, plan = result.histories[init], result.plans[init]
        assert history.config["teacher"] == (type(vit_parent.model).__name__ if recipe.distill else None)
        assert all((r.distill_loss is not None) == recipe.distill for r in history.steps)
        if recipe.strategies is None:
            assert plan is None
        else:
            assert {k: plan[k] for k in recipe.strategies} == recipe.strategies
    configs = {init: (h.config["lr"], h.config["weight_decay"]) for init, h in result.histories.items()}
    assert configs["random"] == (2e-3, 0.3)
    assert configs["random+distill"] == (2e-3, 0.2)  # the paper's from-random defaults (no vision sweep)
    assert configs["subclone"] == configs["subclone+distill"] == (1e-4, 0.005)
    assert configs["uniform"] == (5e-4, 0.005)
    assert all(row["final_accuracy"] is not None for row in result.summary_table())
    assert result.config["distill"] == {"alpha": 0.5, "temperature": 1.0}


def test_random_init_has_the_subclone_shape_and_its_own_init(vit_parent):
    spec = sv.DestinationSpec(layers=2, hidden=16)
    batches = tiny_batches("vit")
    prof = sv.profile(vit_parent, batches, progress=False)
    random, none = initial_destination(vit_parent, spec, "random", prof, batches, seed=0)
    subclone, plan = initial_destination(vit_parent, spec, "subclone", prof, batches, seed=0)
    assert none is None and plan.scaling == "sqrt"
    shapes = {name: p.shape for name, p in subclone.named_parameters()}
    assert {name: p.shape for name, p in random.named_parameters()} == shapes
    assert all(p.dtype == torch.float32 for p in random.parameters())
    assert not torch.equal(random.blocks[0].attn.qkv.weight, subclone.blocks[0].attn.qkv.weight)
    again, _ = initial_destination(vit_parent, spec, "random", prof, batches, seed=0)
    torch.testing.assert_close(random.state_dict(), again.state_dict())


def test_unknown_init_lists_the_valid_ones(gpt2_parent):
    with pytest.raises(ValueError, match="unknown initialization.*'subclone-calibrated'.*'uniform'"):
        compare(gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), tiny_batches("gpt2"), inits=["random", "pretty"])


def test_overrides_must_name_compared_inits(gpt2_parent):
    with pytest.raises(ValueError, match="lrs names \\['uniform'\\]"):
        compare(gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), tiny_batches("gpt2"), lrs={"uniform": 1e-3})


def test_compare_stop_skips_the_remaining_inits(gpt2_parent):
    stop = threading.Event()

    def stop_during_the_first_run(history, record):
        if isinstance(record, StepRecord) and record.step == 1:
            stop.set()

    batches = tiny_batches("gpt2")
    result = compare(
        gpt2_parent,
        sv.DestinationSpec(layers=2, hidden=16),
        batches,
        steps=5,
        eval_batches=batches,
        callback=stop_during_the_first_run,
        stop=stop,
        progress=False,
    )
    assert result.stopped_early
    assert list(result.histories) == ["random"] and result.histories["random"].last_step == 1


def test_compare_without_heldout_batches_warns(gpt2_parent):
    batches = tiny_batches("gpt2")
    with pytest.warns(UserWarning, match="without eval_batches"):
        result = compare(gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), batches, steps=1, progress=False)
    assert result.config["eval_batches"] == "the first 4 training batches"


def test_compare_checkpoints_each_init_separately(gpt2_parent, tmp_path):
    batches = tiny_batches("gpt2")
    compare(
        gpt2_parent,
        sv.DestinationSpec(layers=2, hidden=16),
        batches,
        steps=2,
        eval_batches=batches,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random", "subclone"]
    assert [p.name for p in (tmp_path / "subclone").iterdir()] == ["step-00000002"]


def test_comparison_save_writes_everything_and_refuses_a_non_empty_dir(gpt2_parent, tmp_path):
    batches = tiny_batches("gpt2")
    result = compare(
        gpt2_parent, sv.DestinationSpec(layers=2, hidden=16), batches, steps=2, eval_batches=batches, progress=False
    )
    target = tmp_path / "run"
    result.save(target)
    assert sorted(p.name for p in target.iterdir()) == ["histories.json", "random.csv", "subclone.csv", "summary.json"]
    summary = json.loads((target / "summary.json").read_text())
    assert summary["table"] == json.loads(json.dumps(result.summary_table()))
    assert summary["plans"]["subclone"]["scaling"] == "sqrt"
    loaded = sv.Comparison.load(target)
    assert loaded.histories == result.histories and loaded.metrics == result.metrics
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        result.save(target)
    (target / "summary.json").write_text("{}")
    result.save(target, overwrite=True)
    assert json.loads((target / "summary.json").read_text())["plans"] == result.plans
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory left behind
