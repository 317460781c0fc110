"""SIGKILL of the worker at random steps, then ``ocrbench run --resume``: steps lost and resume equality.

    .venv/bin/python benchmarks/kill_resume.py [--backend pytorch,...] [--kills 3] [--seed 1] [--out DIR]

Per backend: one uninterrupted run of the fault tests' recipe (``tests/faults.py``: the shared crnn, 320
captchas, 2 epochs of 20 Adam steps, ``train.checkpoint_every: 5``), then ``--kills`` runs each killed
with SIGKILL (no handler runs) at a random step (``random.Random(seed)``) and resumed. For each: the step
it was killed at, the step of the checkpoint it resumed from, the steps lost (the work redone), whether
the resumed run's eval predictions equal the uninterrupted run's, and the max |Δ| of the final weights
(the neutral weights export). A JSON copy goes to ``DIR/kill_resume.json``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from common import backend_parser, write_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from faults import (events_of, fault_recipe, kill_worker_at_random_step, max_weight_diff,  # noqa: E402
                    predictions)


def ocrbench(*args: str) -> None:
    command = [str(Path(sys.executable).parent / "ocrbench"), *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = backend_parser(__doc__, "build/kill-resume")
    parser.add_argument("--kills", type=int, default=3, help="killed runs per backend")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kill steps")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for backend in args.backend.split(","):
        out = args.out / backend
        recipe = fault_recipe(out, backend)
        ocrbench("run", str(recipe), "--out", str(out / "straight"))
        (straight,) = (out / "straight").iterdir()
        for kill in range(args.kills):
            run_dir, killed = kill_worker_at_random_step(recipe, out / f"killed-{kill}", rng)
            ocrbench("run", "--resume", str(run_dir))
            resumed = next(e for e in events_of(run_dir) if e["event"] == "resumed")
            row = {"backend": backend, "killed_at_step": killed["last_step"],
                   "resumed_from_step": resumed["step"], "steps_lost": killed["last_step"] - resumed["step"],
                   "same_predictions": predictions(run_dir) == predictions(straight),
                   "max_weight_diff": max_weight_diff(straight, run_dir)}
            rows.append(row)
            print(f"{backend:<11} killed at step {row['killed_at_step']:>2}, resumed from "
                  f"{row['resumed_from_step']:>2} ({row['steps_lost']} lost): same predictions "
                  f"{row['same_predictions']}, final weights max |diff| {row['max_weight_diff']:.3g}",
                  flush=True)
    write_table(rows, args.out / "kill_resume.json")


if __name__ == "__main__":
    main()
