"""The one place that hooks a model's blocks, and runs only the blocks after a cut (suffix reuse).

Everything that looks inside a forward pass (the profile, the token trace, the block ablation, calibrated
scaling, the size grid) goes through here. Hooks are placed through the family adapter's module roles, so
this module never names a model class:

* :func:`capture_blocks` calls back once per block with a :class:`BlockStep`: the hidden state entering
  the block x, the sum x + f(x) (for post-norm blocks the pre-norm sum, read at the input of
  ``family.residual_sum_module``; otherwise the block's output) and the block's output; and, when asked,
  with each block's FFN hidden activation (the input of ``family.ffn_activation_module``) and per-head
  attention output (the input of ``family.attention_output_module``);
* :func:`capture_modules` reports the input and output of any named modules (the norms and linear layers
  that the profile's importance estimators read);
* :func:`to_device`, :func:`token_mask` and :func:`counted_rows` move a batch to the model and keep only
  the tokens that count (attention mask 1);
* :func:`record_stream` keeps the hidden state at every residual layer of one forward pass, and
  :func:`resumed` runs a later forward from one of them: the blocks before the cut are replaced by
  stand-ins that cost nothing, so only the suffix runs. The model's own forward still computes the
  arguments each block takes (rotary position embeddings, the attention mask of each layer type), so a
  resumed block receives exactly what it receives in a full pass, at the same position in the block list;
* :func:`forward_before` runs a forward that stops as a module (the output layer) is called, and
  :func:`forward_until_seen` runs a forward only as far as a set of layers and streams their outputs (the
  last one in chunks), for statistics such as calibrated scaling's; :func:`forward_peak_bytes` measures
  the memory a forward allocates (the CPU keeps no allocator statistics, so there it follows the tensors).

Example::

    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from subclone_viz.capture import capture_blocks, record_stream, resumed
    >>> from subclone_viz.families import family_of
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
    ...                                      num_attention_heads=4, vocab_size=50)).eval()
    >>> family = family_of(model)
    >>> batch = {"input_ids": torch.randint(0, 50, (2, 8))}
    >>> steps = []
    >>> with torch.no_grad(), capture_blocks(family, model, on_block=steps.append):
    ...     _ = family.logits(model, batch)
    >>> steps[1].input.shape                                  # x entering block 1
    torch.Size([2, 8, 32])
    >>> blocks = list(family.blocks(model))
    >>> with torch.no_grad():
    ...     with record_stream(family, model) as stream:
    ...         full = family.loss(model, batch)
    ...     with resumed(family, model, 1, stream.states[1], blocks[1:], stream.output_like):
    ...         again = family.loss(model, batch)             # runs blocks 1 and 2 only
    ...     with resumed(family, model, 1, stream.states[1], [None, blocks[2]], stream.output_like):
    ...         without_block_1 = family.loss(model, batch)   # block 1 removed
    >>> torch.allclose(again, full), bool(without_block_1 != full)
    (True, True)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .families import Family


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """``batch`` with every tensor on ``device`` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def token_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The flattened attention mask (B*T,), or None when every token counts (no padding, or images)."""
    mask = batch.get("attention_mask")
    if mask is None:
        return None
    flat = mask.reshape(-1).bool()
    return None if bool(flat.all()) else flat


def counted_rows(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, X) -> (counted tokens, X) in fp32. A tensor with one row per sequence (a pooler's output) has
    no padding to drop and keeps every row."""
    rows = t.reshape(-1, t.shape[-1])
    if mask is not None and rows.shape[0] == mask.numel():
        rows = rows[mask.to(rows.device)]
    return rows.float()


def block_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """The hidden state a block is called with: its first positional argument or ``hidden_states=``."""
    return args[0] if args else kwargs["hidden_states"]


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden state a block returns (blocks return a tensor or a tuple led by one)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` in the same form (a tensor or a tuple led by one) with its hidden state replaced."""
    return (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden


@dataclass
class BlockStep:
    """What one block did in one forward pass. Tensors are (B, T, d), on the block's device."""

    index: int
    input: torch.Tensor  # x
    total: torch.Tensor  # x + f(x): the pre-norm sum of a post-norm block, otherwise the output
    output: torch.Tensor  # what the block passes on
    returned: Any = field(repr=False)  # the block's own return value (a tensor or a tuple led by one)


@contextmanager
def capture_blocks(
    family: Family,
    model: nn.Module,
    on_block: Callable[[BlockStep], None] | None = None,
    on_ffn: Callable[[int, torch.Tensor], None] | None = None,
    on_attention: Callable[[int, torch.Tensor], None] | None = None,
) -> Iterator[None]:
    """Within the ``with``, every forward of ``model`` reports each block through the callbacks.

    Args:
        family: the model's adapter (it says where the blocks and their module roles are).
        model: the model to hook.
        on_block: called after block i ran, with its :class:`BlockStep`.
        on_ffn: called with (i, FFN hidden activation (B, T, ffn)) as block i computes it; with zeros after a
            block whose ``family.ffn_activation_module`` is None (a mixture-of-experts layer without a dense FFN,
            whose experts :mod:`subclone_viz.experts` reads).
        on_attention: called with (i, per-head attention output (B, T, heads * head_dim)) before the output
            projection of block i.
    """
    hooks = _BlockHooks(on_block, on_ffn, on_attention)
    try:
        for i, block in enumerate(family.blocks(model)):
            hooks.attach(family, model, i, block)
        yield
    finally:
        hooks.remove()


class _BlockHooks:
    """The hooks :func:`capture_blocks` puts on a model's blocks, and what they hold between a block's input
    and its output."""

    def __init__(
        self,
        on_block: Callable[[BlockStep], None] | None,
        on_ffn: Callable[[int, torch.Tensor], None] | None,
        on_attention: Callable[[int, torch.Tensor], None] | None,
    ) -> None:
        self.on_block, self.on_ffn, self.on_attention = on_block, on_ffn, on_attention
        self.inputs: dict[int, torch.Tensor] = {}  # block -> x, held until the block's output arrives
        self.sums: dict[int, torch.Tensor] = {}  # block -> pre-norm x + f(x) (post-norm blocks only)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, family: Family, model: nn.Module, i: int, block: nn.Module) -> None:
        """Hook block ``i`` for each callback given."""
        if self.on_block is not None:
            self.handles.append(block.register_forward_pre_hook(partial(self._remember_input, i), with_kwargs=True))
            self.handles.append(block.register_forward_hook(partial(self._report_block, self.on_block, i)))
            sum_module = family.residual_sum_module(block)
            if sum_module is not None:
                self.handles.append(sum_module.register_forward_pre_hook(partial(self._remember_sum, i)))
        if self.on_ffn is not None:
            ffn_module = family.ffn_activation_module(block)
            if ffn_module is not None:
                self.handles.append(ffn_module.register_forward_pre_hook(partial(_report_input, self.on_ffn, i)))
            else:  # a mixture-of-experts layer: no dense FFN, so every FFN statistic adds 0
                no_ffn = partial(_report_no_ffn, self.on_ffn, i, family.dims(model).ffn)
                self.handles.append(block.register_forward_hook(no_ffn))
        if self.on_attention is not None:
            module = family.attention_output_module(block)
            self.handles.append(module.register_forward_pre_hook(partial(_report_input, self.on_attention, i)))

    def remove(self) -> None:
        """Take every hook off and drop what they held."""
        for handle in self.handles:
            handle.remove()
        self.inputs.clear()
        self.sums.clear()

    def _remember_input(self, i: int, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.inputs[i] = block_input(args, kwargs)

    def _remember_sum(self, i: int, module: nn.Module, args: tuple) -> None:
        self.sums[i] = args[0]

    def _report_block(
        self, on_block: Callable[[BlockStep], None], i: int, module: nn.Module, args: tuple, output: Any
    ) -> None:
        y = hidden_of(output)
        on_block(BlockStep(index=i, input=self.inputs.pop(i), total=self.sums.pop(i, y), output=y, returned=output))


def _report_input(callback: Callable[[int, torch.Tensor], None], i: int, module: nn.Module, args: tuple) -> None:
    callback(i, args[0])


def _report_no_ffn(
    on_ffn: Callable[[int, torch.Tensor], None], i: int, width: int, module: nn.Module, args: tuple, output: Any
) -> None:
    y = hidden_of(output)
    on_ffn(i, y.new_zeros(*y.shape[:-1], width))


@contextmanager
def capture_modules(
    modules: dict[str, nn.Module],
    on_call: Callable[[str, torch.Tensor, Any], None],
    inputs_only: Collection[str] = (),
) -> Iterator[None]:
    """Within the ``with``, every call of one of ``modules`` reports ``(name, its input, its output)``.

    For modules the block roles do not name: the norms on the residual stream and the linear layers that
    read it (the profile's importance statistics). The input is the first positional argument; a tuple output
    reports its first element. The modules named in ``inputs_only`` report ``(name, input, None)`` as they are
    called, so that a forward stopped there (:func:`forward_before`) still reports them.
    """

    def report(name: str):
        def hook(module, args, output):
            on_call(name, args[0], hidden_of(output))

        return hook

    def report_input(name: str):
        def hook(module, args):
            on_call(name, args[0], None)

        return hook

    handles = [
        module.register_forward_pre_hook(report_input(name))
        if name in inputs_only
        else module.register_forward_hook(report(name))
        for name, module in modules.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class CountedRows:
    """Turns a (B, T, X) activation into the (counted tokens, X) fp32 rows that count (``rows(t)``), and computes
    their column sums of |rows| and rows², once per tensor.

    Several hooks read one tensor: a block's output is the input of the next block's first norm (the profile's
    residual |activation| and the norm statistics), and q, k and v read one normed tensor. The sums of the last
    few tensors seen are kept, each under a weak reference to its tensor (a dead reference marks an ``id`` that
    another tensor may have taken), so each is computed once without keeping an activation alive longer than
    the model does; :meth:`forget` drops them at the end of a batch.

    Most tensors that get both sums get |rows| first (a norm's output, then the layers reading it; an FFN
    activation or per-head output, whose |.| the profile sums before the estimators' squares): the |rows| of the
    last :meth:`abs_sum` are kept until the next, and a square sum of the same tensor squares them in place,
    which gives exactly rows² without a second pass over the activation. Such intermediates go into
    :meth:`scratch` buffers, kept for the whole pass and grown to the most rows seen: a fresh (N, X) tensor
    per activation costs the first touch of its memory, and also slowed the model's own operations around it.
    """

    KEPT = 4  # the reuses are a block apart at most: its output, then the next block's norm

    def __init__(self, rows: Callable[[torch.Tensor], torch.Tensor]):
        self.rows = rows
        self._seen: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}  # id -> (its tensor, sums by kind)
        self._magnitudes: tuple[weakref.ref, torch.Tensor] | None = None  # (tensor, |its rows|) of the last abs_sum
        self._scratch: dict[tuple, torch.Tensor] = {}  # (use, columns, dtype, device) -> (most rows, columns)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.rows(t)

    def _sums(self, t: torch.Tensor) -> dict[str, Any]:
        entry = self._seen.get(id(t))
        if entry is None or entry[0]() is not t:
            if len(self._seen) >= self.KEPT:
                del self._seen[next(iter(self._seen))]
            entry = self._seen[id(t)] = (weakref.ref(t), {})
        return entry[1]

    def scratch(self, use: str, like: torch.Tensor) -> torch.Tensor:
        """An uninitialized (N, X) buffer shaped as the rows ``like``, one per ``use``, reused for the whole pass:
        valid until the next call with the same ``use``."""
        rows, columns = like.shape
        key = (use, columns, like.dtype, like.device)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._scratch[key] = like.new_empty((rows, columns))
        return buffer[:rows]

    def abs_sum(self, t: torch.Tensor) -> torch.Tensor:
        """sum over counted rows of |t|, (X,) in fp64."""
        sums = self._sums(t)
        if "abs" not in sums:
            rows = self.rows(t)
            # Only the last abs_sum's |rows| are read again (squares), so one buffer serves them all.
            magnitudes = torch.abs(rows, out=self.scratch("abs", rows))
            sums["abs"] = magnitudes.sum(0).double()
            self._magnitudes = (weakref.ref(t), magnitudes)
        return sums["abs"]

    def square_sum(self, t: torch.Tensor) -> tuple[torch.Tensor, int]:
        """sum over counted rows of t², (X,) in fp64, and how many rows counted."""
        sums = self._sums(t)
        if "square" not in sums:
            if self._magnitudes is not None and self._magnitudes[0]() is t:
                magnitudes = self._magnitudes[1]
                self._magnitudes = None
                squares = magnitudes.mul_(magnitudes)  # |x|·|x| is x·x to the last bit
            else:
                squares = self.rows(t).square()
            sums["square"], sums["count"] = squares.sum(0).double(), squares.shape[0]
        return sums["square"], sums["count"]

    def forget(self) -> None:
        """Drop the kept sums and |rows| (the end of a batch); the scratch buffers stay for the next."""
        self._seen.clear()
        self._magnitudes = None


class RunningSums:
    """Per-layer running sums fed by the capture hooks, taken once per batch (fp64, on the first layer's device).

    A subclass names its sums in ``stores`` (name -> one slot per layer, module or norm), adds to them from the
    callbacks it overrides and says which further modules it watches in ``modules`` (their calls reach
    :meth:`on_module`). ``rows`` turns a (B, T, X) activation into the (counted tokens, X) rows that count; as a
    :class:`CountedRows` (a plain function is wrapped in one) it also gives the column sums that several
    collectors read (``rows.abs_sum(t)``, ``rows.square_sum(t)``), computed once per tensor.
    """

    def __init__(self, rows: Callable[[torch.Tensor], torch.Tensor]):
        self.rows = rows if isinstance(rows, CountedRows) else CountedRows(rows)
        self.stores: dict[str, list[torch.Tensor | None]] = {}
        self.modules: dict[str, nn.Module] = {}

    def add(self, name: str, index: int, value: torch.Tensor) -> None:
        """Add ``value`` (in fp64) to slot ``index`` of the sum ``name``."""
        store = self.stores[name]
        value = value.double()
        store[index] = value if store[index] is None else store[index] + value

    def on_block(self, step: BlockStep) -> None:
        """After block ``step.index`` ran."""

    def on_ffn(self, i: int, activation: torch.Tensor) -> None:
        """Block ``i``'s FFN hidden activation, (B, T, ffn)."""

    def on_attention(self, i: int, per_head: torch.Tensor) -> None:
        """Block ``i``'s per-head attention output, (B, T, heads * head_dim)."""

    def on_module(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        """A call of the watched module ``name`` with input ``x`` and output ``y``."""

    def metadata(self) -> dict[str, Any]:
        """What a profile records beside the sums to read them later (which modules the slots are)."""
        return {}

    def take_sums(self) -> dict[str, torch.Tensor]:
        """The sums since the last call, stacked per name; resets them. Every slot must have been filled."""
        if any(v is None for store in self.stores.values() for v in store):
            raise RuntimeError(
                f"{type(self).__name__}: a capture hook never fired: the model's forward skipped a "
                f"block, a norm or a linear layer"
            )
        device = next((v.device for store in self.stores.values() for v in store), torch.device("cpu"))
        taken = {
            name: torch.stack([v.to(device) for v in store]) if store else torch.zeros(0, dtype=torch.float64)
            for name, store in self.stores.items()
        }
        for store in self.stores.values():
            store[:] = [None] * len(store)
        return taken


@dataclass
class ResidualStream:
    """The hidden state at every residual layer of one forward pass: ``states[i]`` enters block i (i < L),
    ``states[L]`` leaves the last block (None where a resumed forward did not run). ``output_like`` is a
    block's return value, the form that stand-in blocks give theirs in."""

    states: list[torch.Tensor | None]
    output_like: Any = None


@contextmanager
def record_stream(family: Family, model: nn.Module) -> Iterator[ResidualStream]:
    """Within the ``with``, a forward of ``model`` fills the yielded :class:`ResidualStream` (run one forward)."""
    stream = ResidualStream(states=[None] * (len(family.blocks(model)) + 1))

    def keep(step: BlockStep) -> None:
        stream.states[step.index] = step.input
        stream.states[step.index + 1] = step.output
        if stream.output_like is None:
            stream.output_like = step.returned

    with capture_blocks(family, model, on_block=keep):
        yield stream


class _PassOn(nn.Module):
    """Stands in for a block: returns the hidden state it receives, in the form the real blocks return."""

    def __init__(self, output_like: Any):
        super().__init__()
        self.output_like = output_like

    def forward(self, *args, **kwargs):
        return with_hidden(self.output_like, block_input(args, kwargs))


class _Resume(nn.Module):
    """Stands at the cut: ignores the hidden state it receives and continues from a stored one, through a
    block (called with the arguments the model gives this position) or straight on."""

    def __init__(self, hidden: torch.Tensor, block: nn.Module | None, output_like: Any):
        super().__init__()
        self.hidden = hidden
        self.block = block
        self.output_like = output_like

    def forward(self, *args, **kwargs):
        if self.block is None:
            return with_hidden(self.output_like, self.hidden)
        if args:
            args = (self.hidden, *args[1:])
        else:
            kwargs = {**kwargs, "hidden_states": self.hidden}
        return self.block(*args, **kwargs)


@contextmanager
def resumed(
    family: Family,
    model: nn.Module,
    start: int,
    hidden: torch.Tensor,
    blocks: Sequence[nn.Module | None],
    output_like: Any,
) -> Iterator[None]:
    """Within the ``with``, a forward of ``model`` skips the blocks before position ``start`` and continues
    from ``hidden`` there: ``blocks[0]`` runs at position ``start`` on ``hidden``, ``blocks[1]`` at
    ``start + 1`` on what that returned, and so on (None passes the hidden state on unchanged).

    The block list keeps its length, so every position receives the arguments the model computes for it
    (per-layer attention types follow the position). ``hidden`` must come from the same batch (a
    :func:`record_stream` of it); the embeddings still run and are discarded, which costs next to nothing.

    Args:
        family: the model's adapter.
        model: the model whose blocks are swapped for the duration of the ``with``.
        start: the position of the cut, 0 <= start < L.
        hidden: (B, T, d) the hidden state to continue from.
        blocks: the modules at positions start..L-1 (``L - start`` of them): the model's own or others.
        output_like: a block's return value (:attr:`ResidualStream.output_like`), the form stand-ins return.
    """
    block_list = family.blocks(model)
    count = len(block_list)
    if not 0 <= start < count or start + len(blocks) != count:
        raise ValueError(
            f"resuming at position {start} with {len(blocks)} blocks does not fill a list of {count} blocks: "
            f"pass {count - start} blocks for positions {start}..{count - 1}"
        )
    originals = list(block_list)
    stand_ins = [_PassOn(output_like) for _ in range(start)]
    stand_ins.append(_Resume(hidden, blocks[0], output_like))
    stand_ins += [_PassOn(output_like) if block is None else block for block in blocks[1:]]
    try:
        for position, module in enumerate(stand_ins):
            block_list[position] = module
        yield
    finally:
        for position, module in enumerate(originals):
            block_list[position] = module


class _SeenAll(Exception):
    """Raised by a hook of :func:`forward_until_seen` once nothing more of the forward is needed."""


def forward_before(run: Callable[[], Any], module: nn.Module | None) -> bool:
    """Run a forward (``run()``) that stops as ``module`` is called: neither it nor anything after it runs.

    For passes that read only what comes before a model's output layer (the profile's statistics, the hidden
    states of the logit lens and of layer similarity): a language model's head is the largest single layer.
    Hooks registered on ``module`` before this call still see its input. Returns whether the forward stopped
    there (False when ``module`` is None or the forward never called it, and then it ran whole).
    """
    if module is None:
        run()
        return False

    def stop(module, args):
        raise _SeenAll

    handle = module.register_forward_pre_hook(stop)
    try:
        run()
    except _SeenAll:
        return True
    finally:
        handle.remove()
    return False


def forward_until_seen(
    run: Callable[[], Any],
    modules: dict[str, nn.Module],
    observe: Callable[[str, torch.Tensor], None],
    finish: Callable[[str, nn.Module], float | None] | None = None,
    mask: torch.Tensor | None = None,
    chunk_elements: int = 2**24,
) -> None:
    """Run a forward (``run()``) only as far as it takes to see the output of every module in ``modules``.

    Each module's output rows for the counted tokens (``mask``, see :func:`counted_rows`), (rows, out) in
    fp32, go to ``observe(name, rows)``; then ``finish(name, module)`` may return a factor that the output
    the forward continues with is multiplied by. The last module to run is not called at all: its output
    is computed from its input in chunks of about ``chunk_elements`` values, each passed to ``observe``, and
    the forward stops there, so a large output (a language model's logits) is never held whole and the
    layers after it never run. The modules take one input tensor (linear layers).
    """
    pending: set[str] = set(modules)
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def before(name: str):
        def hook(module, args):
            if pending != {name}:
                return None
            x = args[0]
            rows = x.reshape(-1, x.shape[-1])  # (tokens or sequences, in)
            if mask is not None and rows.shape[0] == mask.numel():
                rows = rows[mask.to(rows.device)]
            step = max(1, chunk_elements // max(module.weight.shape))
            for chunk in rows.split(step):
                observe(name, module.forward(chunk).float())  # forward(): the module's own hooks stay out
            if finish is not None:
                finish(name, module)
            pending.clear()
            raise _SeenAll

        return hook

    def after(name: str):
        def hook(module, args, output):
            pending.discard(name)
            observe(name, counted_rows(output, mask))
            factor = None if finish is None else finish(name, module)
            return None if factor is None else output * factor

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(before(name)))
            handles.append(module.register_forward_hook(after(name)))
        run()
    except _SeenAll:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if pending:
        raise RuntimeError(f"the forward never ran {sorted(pending)}: it skipped a layer it was expected to run")


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensors that the ops of a forward create, while they live, and keeps the peak.

    A storage counts from the op that creates it until its last tensor seen here is freed (views and
    in-place results share a storage and count once). Buffers that a kernel uses internally are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.holders: dict[int, int] = {}  # storage address -> tensors alive that were seen on it

    def _release(self, address: int, nbytes: int) -> None:
        self.holders[address] -= 1
        if self.holders[address] == 0:
            del self.holders[address]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            address, nbytes = storage.data_ptr(), storage.nbytes()
            if address not in self.holders:
                self.holders[address] = 0
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            self.holders[address] += 1
            weakref.finalize(tensor, self._release, address, nbytes)
        return out


def tokens_per_sequence(
    family: Family, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device | str
) -> int:
    """How many tokens the blocks see per sequence: the text length, or (images) patches plus prefix tokens,
    found by running one image to the first block."""
    if "input_ids" in batch:
        return int(batch["input_ids"].shape[1])
    steps: list[BlockStep] = []
    one = to_device({k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}, device)
    with capture_blocks(family, model, on_block=steps.append):
        family.logits(model, one)
    return steps[0].input.shape[1]


def forward_peak_bytes(run: Callable[[], Any], device: torch.device) -> int:
    """The peak memory that a forward (``run()``) allocates beyond what was allocated before it, in bytes.

    On CUDA this is the caching allocator's own peak; elsewhere (the CPU keeps no allocator statistics)
    the peak of the bytes of the tensors alive during the forward, followed op by op.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    counter = _LiveTensorBytes()
    with counter:
        run()
    return counter.peak
