"""distributed.py in one process (no launcher): every helper is the identity, and the main process is this one.

The multi-process behaviour is tested by launching 2 CPU processes in tests/integration/test_distributed.py.
"""

from __future__ import annotations

import pytest
import torch

from subclone_viz import distributed


def test_one_process_is_the_main_one_and_shards_are_everything():
    assert distributed.num_processes() == 1 and distributed.process_index() == 0 and distributed.is_main_process()
    assert list(distributed.shard(iter(range(5)))) == [0, 1, 2, 3, 4]
    assert list(distributed.padded_shard(range(3))) == [(0, True), (1, True), (2, True)]


def test_reductions_and_gathers_return_this_process_values():
    values = torch.tensor([1.5, 2.0])
    assert torch.equal(distributed.reduce_sum(values), values)
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]


def test_on_main_runs_the_function_and_raises_its_error():
    assert distributed.on_main(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(FileExistsError, match="exists"):
        distributed.on_main(lambda: (_ for _ in ()).throw(FileExistsError("p.npz exists")))
    assert distributed.show_progress(True) and not distributed.show_progress(False)
