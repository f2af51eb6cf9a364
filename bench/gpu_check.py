"""The GPU check: one short, prepared run of every path that differs on a GPU, with its figures in one JSON file.

GPU time comes in minutes, one run at a time, so this script is prepared and tested on the CPU beforehand
(``--cpu-dry-run``, run by ``tests/integration/test_gpu_check.py``) and runs on a GPU in one go, within its
time limit (``--budget-s``, default 480 s). Each stage is timed and recorded on its own; a stage that fails
records its error and the rest still run, so one bad path costs no GPU time for the others. Stages:

1. **load**: each parent on the device in bf16: load time, memory allocated.
2. **profile**: the streaming profile's time over a plain forward on the same batches, and over a forward
   without the head (the decoder stack only); target at most 1.05x the latter.
3. **subclone**: the middle destination subcloned on the GPU against the same plan subcloned on the CPU in
   fp32: the largest difference in units of bf16's resolution at each tensor's scale.
4. **train**: ``compare`` of random init against the subclone, bf16 autocast: tokens per second of each, the
   speedup per step, the peak memory.
5. **fsdp**: ``accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1`` training a few
   steps with a checkpoint, then a second launch resuming it (on the CPU the same launches run without FSDP,
   which accelerate runs on GPUs only).
6. **widgets**: the explorers' callbacks (metric menu, layer slider, k slider) on the device.
7. **device_map**: the parent with half of its blocks offloaded to the CPU: the profile agrees with the whole
   parent's, and the GPU holds less.

Parents: the embedded ``smollm2-135m`` and ``gemma3-270m`` when their packages are installed; with
``--random-weights`` (or when a package is missing) the same architectures with random weights, which time
the same kernels but make the training speedup meaningless (it is then not reported). The device tool's
working-tree limit (64 MiB) leaves the embedded GGUF files behind, so a lent GPU runs with random weights.

Usage::

    python bench/gpu_check.py                          # on a GPU; writes bench/results/gpu/gpu_check.json
    python bench/gpu_check.py --cpu-dry-run --out /tmp/dry.json   # minutes on a CPU, tiny models
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import subclone_viz as sv  # noqa: E402
from subclone_viz import distributed  # noqa: E402, F401  (used by the launched script as gpu_check.distributed)
from subclone_viz.parent import resolve_device  # noqa: E402, F401  (likewise gpu_check.resolve_device)
from subclone_viz.workflow import default_destination  # noqa: E402
from _results import save_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("load", "profile", "subclone", "train", "fsdp", "widgets", "device_map")
PROFILE_TARGET = 1.05  # the profile over a forward without the head


@dataclass(frozen=True)
class Size:
    """How big each stage runs: the GPU run, or the CPU dry run's tiny version."""

    batch_size: int
    seq_len: int
    batches: int
    train_steps: int
    fsdp_steps: int
    spec: dict[str, int]


GPU_SIZE = Size(
    batch_size=16,
    seq_len=256,
    batches=8,
    train_steps=300,
    fsdp_steps=6,
    spec=dict(layers=20, hidden=384, ffn=1024, heads=6, kv_heads=2),
)
DRY_SIZE = Size(
    batch_size=2,
    seq_len=16,
    batches=3,
    train_steps=4,
    fsdp_steps=2,
    spec=dict(layers=3, hidden=36, ffn=48, heads=3, kv_heads=1),
)

# The embedded parents' architectures, for --random-weights (read off their converted configs).
RANDOM_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "smollm2-135m": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            vocab_size=49152,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            rope_theta=100000.0,
        ),
    ),
    "gemma3-270m": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            hidden_size=640,
            intermediate_size=2048,
            num_hidden_layers=18,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            vocab_size=262144,
            max_position_embeddings=32768,
            sliding_window=512,
            layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
            tie_word_embeddings=True,
        ),
    ),
    # The dry run's stand-in: a tiny Llama with grouped-query attention.
    "tiny-llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=97,
            max_position_embeddings=64,
            tie_word_embeddings=True,
        ),
    ),
}


class Check:
    """Runs the stages against one deadline, recording each one's figures, or its error, and its seconds."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s
        self.results: dict[str, Any] = {}

    def stage(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if time.monotonic() > self.deadline:
            self.results[name] = {"status": "skipped", "why": "the time budget ran out before this stage"}
            return None
        began = time.perf_counter()
        try:
            figures = run()
            self.results[name] = {"status": "ok", "seconds": round(time.perf_counter() - began, 2), **figures}
        except Exception as error:  # a failing stage is a finding to report, not a reason to stop the others
            self.results[name] = {
                "status": "failed",
                "seconds": round(time.perf_counter() - began, 2),
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-3000:],
            }
        print(f"[{name}] {json.dumps(self.results[name], default=str)[:400]}", flush=True)
        return self.results[name]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_mib(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {
        "allocated_mib": round(torch.cuda.memory_allocated(device) / 2**20, 1),
        "peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
    }


def random_parent(name: str, device: torch.device, dtype: torch.dtype) -> sv.Parent:
    import transformers

    config_class, model_class, fields = RANDOM_CONFIGS[name]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**fields))
    return sv.load_parent(model, device=device, dtype=dtype)


def load(name: str, device: torch.device, dtype: torch.dtype, random_weights: bool) -> tuple[sv.Parent, bool]:
    """The parent, and whether its weights are real."""
    if not random_weights and name in RANDOM_CONFIGS and name != "tiny-llama":
        try:
            return sv.load_parent(name, device=device, dtype=dtype), True
        except sv.ParentLoadError as error:
            print(f"{name}: {error}; using random weights of the same architecture", flush=True)
    return random_parent(name, device, dtype), False


def token_batches(parent: sv.Parent, size: Size, seed: int) -> list[dict[str, torch.Tensor]]:
    """Random token ids: timings and agreement checks do not depend on the text."""
    vocab = parent.model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(3, vocab, (size.batch_size, size.seq_len), generator=generator),
            "attention_mask": torch.ones(size.batch_size, size.seq_len, dtype=torch.long),
        }
        for _ in range(size.batches)
    ]


def timed(run: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """The median seconds of ``run`` after one warm-up call."""
    run()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def stage_profile(parent: sv.Parent, batches: list[dict[str, torch.Tensor]]) -> tuple[dict[str, Any], sv.Profile]:
    device, family, model = parent.input_device, parent.family, parent.model
    on_device = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
    decoder = model.get_decoder()

    @torch.no_grad()
    def forwards(head: bool) -> None:
        for batch in on_device:
            family.logits(model, batch) if head else decoder(**batch, use_cache=False)

    full = timed(lambda: forwards(True), device)
    no_head = timed(lambda: forwards(False), device)
    profiles: list[sv.Profile] = []
    profile_s = timed(lambda: profiles.append(sv.profile(parent, batches, progress=False)), device)
    ratio = profile_s / no_head
    figures = {
        "forward_s": round(full, 4),
        "forward_without_head_s": round(no_head, 4),
        "profile_s": round(profile_s, 4),
        "profile_over_forward": round(profile_s / full, 3),
        "profile_over_forward_without_head": round(ratio, 3),
        "target": PROFILE_TARGET,
        "meets_target": ratio <= PROFILE_TARGET,
        "tokens": profiles[-1].tokens,
        **memory_mib(device),
    }
    return figures, profiles[-1]


def stage_subclone(parent: sv.Parent, prof: sv.Profile, spec: sv.DestinationSpec) -> dict[str, Any]:
    plan = sv.plan(parent, prof, spec)
    on_device = sv.subclone(parent, plan)
    cpu_parent = sv.load_parent(copy.deepcopy(parent.model).to("cpu", torch.float32), device="cpu", dtype=torch.float32)
    on_cpu = sv.subclone(cpu_parent, plan)
    expected = on_cpu.state_dict()
    worst_name, worst = "", 0.0
    for name, value in on_device.state_dict().items():
        reference = expected[name].float()
        scale = reference.abs().max().clamp_min(1e-12)
        # bf16 keeps 8 bits of mantissa: a rounding error of one unit in the last place is 2^-8 of the scale.
        ulps = ((value.detach().float().cpu() - reference).abs().max() / (scale * 2.0**-8)).item()
        if ulps > worst:
            worst_name, worst = name, ulps
    del cpu_parent
    return {
        "plan": plan.summary(),
        "device_dtype": str(next(on_device.parameters()).dtype),
        "worst_tensor": worst_name,
        "worst_bf16_ulps": round(worst, 2),
        "agrees": worst <= 2.0,
        "parameters": sum(p.numel() for p in on_device.parameters()),
    }


def stage_train(
    parent: sv.Parent, prof: sv.Profile, spec: sv.DestinationSpec, size: Size, batches, heldout, real_weights: bool
) -> dict[str, Any]:
    device = parent.input_device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = sv.compare(
        parent,
        spec,
        batches,
        inits=["random", "subclone"],
        steps=size.train_steps,
        eval_every=max(1, size.train_steps // 10),
        eval_batches=heldout,
        profile=prof,
        progress=False,
        mixed_precision="auto",
    )
    tokens = size.train_steps * size.batch_size * size.seq_len
    figures: dict[str, Any] = {"steps": size.train_steps, "tokens_per_run": tokens, **memory_mib(device)}
    for init, history in result.histories.items():
        trained = max(record.time for record in history.steps)
        figures[init] = {
            "tokens_per_s": round(tokens / trained, 1),
            "trained_s": round(trained, 2),
            "initial_loss": history.evals[0].loss,
            "final_loss": history.evals[-1].loss,
            "precision": history.config.get("mixed_precision"),
        }
    if real_weights:
        figures["speedup"] = sv.speedup(result.histories["random"], result.histories["subclone"]).to_dict()
    else:
        figures["speedup"] = "not measured: random parent weights make a subclone no better than random init"
    return figures


FSDP_WORKER = """
import json, sys, threading, torch
import subclone_viz as sv
sys.path.insert(0, {bench!r})
import gpu_check
size = gpu_check.DRY_SIZE if {dry!r} else gpu_check.GPU_SIZE
parent = gpu_check.random_parent({name!r}, gpu_check.resolve_device("auto"), torch.float32)
batches = gpu_check.token_batches(parent, size, seed=1)
plan = sv.plan(parent, sv.profile(parent, batches, progress=False), sv.DestinationSpec(**size.spec))
model = sv.subclone(parent, plan)
checkpoints, mode, half = sys.argv[1], sys.argv[2], size.fsdp_steps
stop = threading.Event()
# "first" stops half way, as a killed job would, after the checkpoint at its evaluation; "resume" continues it.
stop_half_way = lambda history, record: hasattr(record, "loss") and record.step == half and stop.set()
history = sv.train(model, batches, steps=2 * half, lr=1e-3, weight_decay=0.0, eval_every=half,
                   eval_batches=batches[:1], checkpoint_dir=None if mode == "whole" else checkpoints,
                   resume=mode == "resume", stop=stop, callback=stop_half_way if mode == "first" else None,
                   progress=False)
if gpu_check.distributed.is_main_process():
    print("RESULT " + json.dumps({{"evals": [(r.step, r.loss) for r in history.evals],
                                  "stopped_early": history.stopped_early,
                                  "processes": history.config.get("num_processes"),
                                  "distributed": str(gpu_check.distributed.state().distributed_type)}}))
"""


def stage_fsdp(name: str, size: Size, dry: bool, scratch: Path) -> dict[str, Any]:
    worker = scratch / "fsdp_worker.py"
    worker.write_text(FSDP_WORKER.format(bench=str(Path(__file__).resolve().parent), dry=dry, name=name))
    checkpoints = scratch / "fsdp_checkpoints"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    launcher += ["--cpu"] if dry else ["--config_file", str(ROOT / "configs/accelerate/fsdp.yaml")]
    runs = {}
    for mode in ("first", "resume", "whole"):
        done = subprocess.run(
            [*launcher, str(worker), str(checkpoints), mode], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        if done.returncode != 0:
            raise RuntimeError(f"the {mode} launch exited {done.returncode}: {done.stderr[-2000:]}")
        line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")][-1]
        runs[mode] = json.loads(line.removeprefix("RESULT "))
    # The resumed run must continue the checkpointed one: the same evaluations as a run never interrupted.
    resumed, whole = runs["resume"]["evals"], runs["whole"]["evals"]
    worst = max(abs(a[1] - b[1]) / abs(b[1]) for a, b in zip(resumed, whole))
    return {
        "fsdp": not dry,
        "runs": runs,
        "resumed_equals_whole": [a[0] for a in resumed] == [b[0] for b in whole] and worst < 1e-2,
        "worst_relative_loss_difference": worst,
    }


def stage_widgets(parent: sv.Parent, prof: sv.Profile) -> dict[str, Any]:
    from subclone_viz import widgets

    residual = widgets.ResidualExplorer(parent, prof)
    importance = widgets.ImportanceExplorer(prof)
    metrics = [value for _, value in residual.metric.options]
    importance.kind.value = "topk"
    changes = {
        "metric menu": [
            lambda n=n: setattr(residual.metric, "value", metrics[(n + 1) % len(metrics)]) for n in range(5)
        ],
        "layer slider": [
            lambda n=n: setattr(residual.layer, "value", (3 * n + 1) % (prof.num_layers + 1)) for n in range(5)
        ],
        "k slider": [lambda n=n: setattr(importance.k, "value", 8 + 8 * n) for n in range(5)],
    }
    figures = {}
    for control, calls in changes.items():
        seconds = []
        for call in calls:
            synchronize(parent.input_device)
            began = time.perf_counter()
            call()
            synchronize(parent.input_device)
            seconds.append(time.perf_counter() - began)
        figures[control] = {
            "median_ms": round(statistics.median(seconds) * 1e3, 1),
            "max_ms": round(max(seconds) * 1e3, 1),
        }
    return figures


def split_map(model: torch.nn.Module, block_list: str, placed: Any, offloaded: set[int]) -> dict[str, Any]:
    """A device map that puts every module on ``placed`` except the blocks in ``offloaded``, on the CPU."""
    device_map: dict[str, Any] = {}

    def walk(module: torch.nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == block_list:
                device_map.update({f"{path}.{i}": "cpu" if i in offloaded else placed for i in range(len(child))})
            elif block_list.startswith(path + "."):
                walk(child, path + ".")
            else:
                device_map[path] = placed

    walk(model, "")
    return device_map


def stage_device_map(parent: sv.Parent, batches, prof: sv.Profile, scratch: Path) -> dict[str, Any]:
    device = parent.input_device
    blocks = len(parent.family.blocks(parent.model))
    model = copy.deepcopy(parent.model).to("cpu")
    placed = "cpu" if device.type == "cpu" else device.index or 0
    device_map = split_map(model, parent.family.block_list, placed, set(range(blocks // 2, blocks)))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
    dispatched = sv.load_parent(model, device_map=device_map, offload_folder=scratch / "offload")
    held = (torch.cuda.memory_allocated(device) - before) / 2**20 if device.type == "cuda" else None
    offloaded = sv.profile(dispatched, batches, progress=False)
    worst = max(
        abs(a - b) / max(abs(b), 1e-12)
        for a, b in zip(offloaded.residual_abs_sums.ravel().tolist(), prof.residual_abs_sums.ravel().tolist())
    )
    return {
        "blocks_on_cpu": blocks - blocks // 2,
        "of_blocks": blocks,
        "gpu_mib_held": None if held is None else round(held, 1),
        "worst_relative_difference": worst,
        "agrees": worst < 2e-2,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    dry = args.cpu_dry_run
    size = DRY_SIZE if dry else GPU_SIZE
    device = torch.device("cpu" if dry else "cuda")
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; pass --cpu-dry-run to check the script on the CPU")
    dtype = torch.float32 if dry else torch.bfloat16
    names = ["tiny-llama"] if dry else args.parents
    check = Check(args.budget_s)
    environment = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "dry_run": dry,
    }
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    per_parent: dict[str, Any] = {}
    for index, name in enumerate(names):
        check.results = {}
        loaded: dict[str, Any] = {}

        def load_stage() -> dict[str, Any]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            began = time.perf_counter()
            loaded["parent"], loaded["real"] = load(name, device, dtype, args.random_weights or dry)
            return {
                "load_s": round(time.perf_counter() - began, 2),
                "real_weights": loaded["real"],
                "parameters": sum(p.numel() for p in loaded["parent"].model.parameters()),
                **memory_mib(device),
            }

        if check.stage("load", load_stage) is None or "parent" not in loaded:
            per_parent[name] = check.results
            continue
        parent = loaded["parent"]
        batches = token_batches(parent, size, seed=1)
        heldout = token_batches(parent, size, seed=2)[:2]
        spec = (
            sv.DestinationSpec(**size.spec) if name in ("smollm2-135m", "tiny-llama") else default_destination(parent)
        )
        profiled: dict[str, sv.Profile] = {}

        def profile_stage() -> dict[str, Any]:
            figures, profiled["profile"] = stage_profile(parent, batches)
            return figures

        check.stage("profile", profile_stage)
        if "profile" in profiled:
            prof = profiled["profile"]
            check.stage("subclone", lambda: stage_subclone(parent, prof, spec))
            if index == 0:  # training, FSDP, widgets and the device map once, on the first parent
                check.stage("train", lambda: stage_train(parent, prof, spec, size, batches, heldout, loaded["real"]))
                check.stage("fsdp", lambda: stage_fsdp(name, size, dry, scratch))
                check.stage("widgets", lambda: stage_widgets(parent, prof))
                check.stage("device_map", lambda: stage_device_map(parent, batches, prof, scratch))
        per_parent[name] = check.results
        del parent, loaded
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"environment": environment, "size": size.__dict__, "parents": per_parent}


def headline(figures: dict[str, Any]) -> list[str]:
    lines = []
    for name, stages in figures["parents"].items():
        failed = [stage for stage, result in stages.items() if result.get("status") != "ok"]
        profile = stages.get("profile", {})
        if profile.get("status") == "ok":
            lines.append(
                f"{name} on {figures['environment']['device']}: profile "
                f"{profile['profile_over_forward_without_head']}x a forward without the head "
                f"({profile['profile_over_forward']}x the whole forward)"
            )
        if failed:
            lines.append(f"{name}: stages not ok: {', '.join(failed)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny models on the CPU: checks the script")
    parser.add_argument(
        "--parents",
        type=lambda text: text.split(","),
        default=["smollm2-135m", "gemma3-270m"],
        help="comma list of parents (default smollm2-135m,gemma3-270m)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights of the parents' architectures (no embedded packages needed)",
    )
    parser.add_argument("--budget-s", type=float, default=480.0, help="stages not started by then are skipped")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON to write (default bench/results/gpu/gpu_check.json; dry run: required)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.parents if name not in RANDOM_CONFIGS]
    if unknown:
        parser.error(f"--parents {','.join(unknown)}: choose from {', '.join(RANDOM_CONFIGS)}")
    if args.cpu_dry_run and args.out is None:
        parser.error("--cpu-dry-run needs --out (its figures must not replace a GPU run's)")
    figures = run(args)
    out = args.out or Path("gpu/gpu_check.json")
    path = save_results(out, figures, headline=headline(figures))
    print(f"wrote {path}")
    failed = [
        f"{name}:{stage}"
        for name, stages in figures["parents"].items()
        for stage, result in stages.items()
        if result.get("status") == "failed"
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
