"""How long the subclone studio's default run takes on SmolLM2: the lesson must end within about three minutes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_studio_lesson.py [--steps 40] [--threads 1]

Builds the studio as notebook 3 does (lesson batches of ``widgets.LESSON_BATCHES`` from the built-in text, two
held-out batches, the default destination, the default initializations random and subclone) and presses Train,
then waits for the run to end. Records the wall time from the click to the end, the process's CPU time (with one
torch thread, what the run takes on an idle core: on a shared machine the wall time follows the load), each
initialization's time and the status lines the learner saw. The profile (2,048 tokens) only decides which channels are kept; it does
not change the time a step takes. Figures go to ``bench/results/widgets/studio_lesson.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import subclone_viz as sv
from subclone_viz import widgets
from _results import save_results

TARGET_SECONDS = 180


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=widgets.LESSON_STEPS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a class laptop: 1 busy core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parent = sv.load_parent("smollm2-135m")
    train = sv.text_batches("builtin", parent.tokenizer, shuffle=True, **widgets.LESSON_BATCHES)
    heldout = sv.text_batches("builtin", parent.tokenizer, split="heldout", max_batches=2, **widgets.LESSON_BATCHES)
    prof = sv.profile(parent, train, max_tokens=2048, progress=False)
    studio = widgets.SubcloneStudio(parent, prof, train, heldout, save_dir="/tmp/bench-lesson", steps=args.steps)
    statuses = []
    original = studio._on_record
    studio._on_record = lambda history, record: (original(history, record), statuses.append(studio.progress_text()))
    start, cpu_start = time.perf_counter(), time.process_time()
    studio.train_button.click()
    studio.training_thread.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    spans = {init: end - begin for init, (begin, end) in studio._progress.items()}
    rows = studio.comparison.summary_table()
    figures = {
        "steps": args.steps,
        "inits": list(spans),
        "batches": train.description,
        "eval_batches": heldout.description,
        "destination": studio.plan.summary(),
        "wall_seconds": round(wall, 1),
        # CPU seconds of this process: with one torch thread, about what the run takes on an idle core.
        "cpu_seconds": round(cpu, 1),
        "seconds_per_init": {k: round(v, 1) for k, v in spans.items()},
        "seconds_per_step": round(wall / (args.steps * len(spans)), 2),
        "target_seconds": TARGET_SECONDS,
        "losses": {row["init"]: [row["initial_loss"], row["final_loss"]] for row in rows},
        "speedups": {row["init"]: widgets.speedup_text(row) for row in rows},
        "status_midway": statuses[len(statuses) // 3] if statuses else None,
        "status_final": studio.train_status.value,
    }
    headline = [
        f"The studio's default run ({args.steps} steps of {', '.join(spans)} on "
        f"{train.description}) took {wall:.0f} s from the click to the table at a load average of "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, and {cpu:.0f} CPU seconds: about that long on "
        f"an idle core ({'within' if cpu <= TARGET_SECONDS else 'over'} the {TARGET_SECONDS} s goal)."
    ]
    print(save_results("widgets/studio_lesson.json", figures, headline))
    print(headline[0])
    print(figures)


if __name__ == "__main__":
    main()
