"""Running the library in several processes: which one is the main process, and how their results combine.

Under ``accelerate launch`` (or ``torchrun``) every process runs the same script. Everything in the library
that reads batches, prints, writes or saves goes through this module, so a script written for one process
runs unchanged in N:

* :func:`state` is accelerate's process-wide :class:`~accelerate.PartialState`, made right: a bare
  ``PartialState()`` made earlier on a machine without GPUs (with ``ACCELERATE_USE_CPU=1``) takes a
  launched process for a lone one, so every process believed it was rank 0; :func:`state` notices that the
  launcher started more processes than the state knows and rebuilds it (the user's object sees the fix too,
  accelerate's states share one dictionary);
* :func:`shard` gives each process a disjoint share of an iterable of batches (every P-th one);
  :func:`padded_shard` the same share padded so that every process runs as many forward passes (DDP, FSDP);
* :func:`reduce_sum` adds a tensor of running sums over the processes (``torch.distributed`` all-reduce in
  float64; gloo on CPUs, NCCL on GPUs), :func:`gather_objects` collects one object per process;
* :func:`on_main` runs a function (a save, a print) on the main process only; the others wait for it and get
  the same return value, or the same exception;
* :func:`main_process_first` lets the main process fill a cache before the others read it;
* :func:`alone` runs a block as if this process were the only one (each process trains its own share).

In a single process (no launcher) every function is a cheap no-op: shards are everything, sums are returned
as they are, and the main process is the only one.

Example::

    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from subclone_viz import distributed as dist
    >>> from subclone_viz.families import family_of
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50)).eval()
    >>> family = family_of(model)
    >>> batches = [{"input_ids": torch.randint(0, 50, (2, 8))} for _ in range(4)]
    >>> loss_sum = torch.zeros(2, dtype=torch.float64)                 # (sum of losses, batches)
    >>> with torch.no_grad():
    ...     for batch in dist.shard(batches):                          # every P-th batch under accelerate launch
    ...         loss_sum += torch.tensor([float(family.loss(model, batch)), 1.0], dtype=torch.float64)
    >>> loss_sum = dist.reduce_sum(loss_sum)                           # the same totals on every process
    >>> dist.on_main(print, f"mean loss over {int(loss_sum[1])} batches: {loss_sum[0] / loss_sum[1]:.1f}")
    mean loss over 4 batches: ...

The same script under ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 script.py``
reads half the batches in each process and prints once.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch

T = TypeVar("T")

_on_main_depth = 0  # > 0 while the main process runs a function for on_main
_WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


def _launched_processes() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(_WORLD_SIZE_VARIABLES, 1)


def _use_cpu() -> bool:
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def state():
    """accelerate's process-wide ``PartialState``, rebuilt when an earlier one disagrees with the launcher."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    launched = _launched_processes()
    existing = PartialState._shared_state
    if existing and existing.get("num_processes", 1) != launched:
        # A PartialState() made without cpu=True where there is no GPU ignores ACCELERATE_USE_CPU and sets up one
        # process per launched process, each of them rank 0. Start over with the launcher's view of the world.
        AcceleratorState._reset_state(reset_partial_state=True)
    if PartialState._shared_state:
        return PartialState()
    if launched > 1:
        _leave_the_group_at_exit()
    return PartialState(cpu=_use_cpu() if launched > 1 else False)


@functools.cache
def _leave_the_group_at_exit() -> None:
    """Destroy the process group before the interpreter tears its modules down, rather than leave gloo's
    threads to that teardown, where they are known to abort a process ("terminate called without an active
    exception", exit -6) and the launcher then reports the whole run failed."""
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def num_processes() -> int:
    return state().num_processes


def process_index() -> int:
    return state().process_index


def is_main_process() -> bool:
    return state().is_main_process


def shard(items: Iterable[T]) -> Iterator[T]:
    """This process's share of ``items``: items rank, rank + P, rank + 2P... (all of them in one process)."""
    current = state()
    if current.num_processes == 1:
        return iter(items)
    return itertools.islice(items, current.process_index, None, current.num_processes)


def padded_shard(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """This process's share of ``items`` as ``(item, counts)``, the same number on every process.

    A model wrapped for DDP (buffer broadcasts) or FSDP (parameter all-gathers) talks to the other processes
    in every forward pass, so every process must run as many as the others. Where the last round of P items
    leaves a process without one, it gets that round's first item again with ``counts`` False: run it,
    do not count it.
    """
    current = state()
    if current.num_processes == 1:
        yield from ((item, True) for item in items)
        return
    stream = iter(items)
    while round_ := list(itertools.islice(stream, current.num_processes)):
        if current.process_index < len(round_):
            yield round_[current.process_index], True
        else:
            yield round_[0], False


def reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the processes, in float64, on the device they came from (every process gets it)."""
    current = state()
    if current.num_processes == 1:
        return values
    buffer = values.detach().to(device=current.device, dtype=torch.float64).clone()
    torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
    return buffer.to(values.device)


def barrier() -> None:
    """Wait until every process gets here."""
    current = state()
    if current.num_processes > 1:
        current.wait_for_everyone()


def on_main(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function(*args, **kwargs)`` on the main process only; every process returns its result.

    The other processes wait for it. If it raises, every process raises the same exception (so a refused
    ``FileExistsError`` is one error on every rank, not one error and one hang). The result travels to the
    other processes pickled, between processes of this one launch only.
    """
    global _on_main_depth
    current = state()
    if current.num_processes == 1 or _on_main_depth:
        # Nested (a save inside a save): the outer call already runs on the main process alone.
        return function(*args, **kwargs)
    outcome: list[Any] = [None, None]  # [result, exception]
    if current.is_main_process:
        _on_main_depth += 1
        try:
            outcome[0] = function(*args, **kwargs)
        except Exception as error:  # re-raised below on every process, the main one included
            outcome[1] = error if _picklable(error) else RuntimeError(f"{type(error).__name__}: {error}")
        finally:
            _on_main_depth -= 1
    device = current.device if current.backend == "nccl" else None
    torch.distributed.broadcast_object_list(outcome, src=0, device=device)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def gather_objects(value: T) -> list[T]:
    """One ``value`` per process, in rank order, on every process (pickled between the processes of this launch)."""
    current = state()
    if current.num_processes == 1:
        return [value]
    values: list[Any] = [None] * current.num_processes
    torch.distributed.all_gather_object(values, value)
    return values


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (say, converting a checkpoint into the cache), then the others."""
    current = state()
    if current.num_processes == 1:
        yield
        return
    with current.main_process_first():
        yield


_RANK_VARIABLES = ["RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", *_WORLD_SIZE_VARIABLES]


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """The block runs as if this process were the only one, on its own device: for work dealt out with
    :func:`shard` where each process trains its own models (the budget chooser's pilots), so that training
    inside neither wraps the model in DDP nor waits on an all-reduce the others never join. The launcher's
    view (accelerate's shared state and the rank variables) comes back on exit."""
    current = state()
    if current.num_processes == 1:
        yield
        return
    from accelerate.state import AcceleratorState, GradientState, PartialState

    shared = [PartialState._shared_state, AcceleratorState._shared_state, GradientState._shared_state]
    saved = [dict(values) for values in shared]
    names = [*_RANK_VARIABLES, "ACCELERATE_TORCH_DEVICE"]
    environ = {name: os.environ.pop(name) for name in names if name in os.environ}
    os.environ["ACCELERATE_TORCH_DEVICE"] = str(current.device)  # a lone state would take the first GPU
    for values in shared:
        values.clear()
    try:
        yield
    finally:
        for values, before in zip(shared, saved):
            values.clear()
            values.update(before)
        os.environ.pop("ACCELERATE_TORCH_DEVICE", None)
        os.environ.update(environ)


# "0" turns every progress bar off. App mode (tools/serve_app.py) sets it: Voilà shows a page once all its cells
# have run, when a notebook's closed progress bars are dead widgets ("Error displaying widget: model not found").
PROGRESS_ENVIRONMENT_VARIABLE = "SUBCLONE_VIZ_PROGRESS"


def show_progress(progress: bool) -> bool:
    """Whether this process draws progress bars: only the main one, only if asked, and not with
    ``SUBCLONE_VIZ_PROGRESS=0`` in the environment."""
    return progress and os.environ.get(PROGRESS_ENVIRONMENT_VARIABLE) != "0" and is_main_process()
