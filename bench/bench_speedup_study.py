"""The speedup study on SmolLM2-135M: how much faster than random init does a destination train, mild to harsh?

A preset of ``subclone-viz study`` (:func:`subclone_viz.study.speedup_study`): for each destination size
(24 x 480, 20 x 384, 8 x 288 of SmolLM2-135M's 30 x 576), random init and the paper's subclone each train at
every learning rate of a small sweep (1e-3 / 3e-3 and 3e-4 / 1e-3) and keep their best (lowest final held-out
loss), so that no speedup comes from a poor learning rate for random init. The middle size is also trained
with the parent as teacher (``subclone+distill``, ``random+distill``, at their start's best learning rate), so
that the gain of the start and the gain of the teacher separate. Every run sees the same batches in the same
order (one seed). Speedup: the steps random needs to reach its own final held-out loss over the steps the
other needs, and the same in seconds of training.

Writes ``--out``/study.json (every history, the sweeps, the table), ``speedup_by_size.png`` and a
self-contained ``speedup_by_size.html``, and prints the table. Any ``subclone-viz study`` option given here
replaces the preset's (``--steps 2000 --batch-size 32 --seq-len 256 --device cuda`` on a GPU). Each size can
run as its own job (``--sizes 20x384 --out A``, ...) and ``--merge A/study.json B/study.json --out C`` joins
them; that is how the figures in README were taken, two jobs side by side on the 2-core CPU:

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speedup_study.py --sizes 20x384 --out runs/mid
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speedup_study.py --sizes 24x480 --distill-sizes '' --out runs/mild
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_speedup_study.py --sizes 8x288 --distill-sizes '' --out runs/harsh
    .venv/bin/python bench/bench_speedup_study.py --merge runs/{mid,mild,harsh}/study.json \
        --out bench/results/speedup_study --overwrite
"""

from __future__ import annotations

import sys

from subclone_viz.cli import main

PRESET = [
    "study",
    "--parent",
    "smollm2-135m",
    "--sizes",
    "24x480,20x384,8x288",
    "--distill-sizes",
    "20x384",
    "--random-lrs",
    "1e-3,3e-3",
    "--subclone-lrs",
    "3e-4,1e-3",
    "--steps",
    "60",
    "--eval-every",
    "5",
    "--batch-size",
    "4",
    "--seq-len",
    "128",
    "--eval-tokens",
    "1024",
    "--out",
    "bench/results/speedup_study",
]

if __name__ == "__main__":
    # Merging reads the sizes and budget from the saved studies: only the output options apply.
    sys.exit(main(["study", *sys.argv[1:]] if "--merge" in sys.argv else PRESET + sys.argv[1:]))
