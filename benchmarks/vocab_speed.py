"""Large-vocabulary speed: each backend's training samples/s at 1,001 classes vs 11, same network and batch.

    .venv/bin/python benchmarks/vocab_speed.py [--backend pytorch,tensorflow,...] [--out DIR] [--set K=V]

Runs ``benchmarks/vocab/captcha_11.yml`` and ``benchmarks/vocab/zh_1001.yml`` (identical network, 32 x 100
input, batch 32, Adam; only the data and so the vocabulary and label lengths differ) through ``ocrbench run``
on each backend, one run at a time, and prints per backend:

- ``samples/s``: steady-state training throughput, from the run's JSON-lines step events between the first
  event past a quarter of the epoch and the last one (graph tracing and first-step allocation left out);
- ``ratio``: zh_1001 / captcha_11 — issue 16 asks for >= 0.6.

Run it on an otherwise idle machine: the two halves of a ratio are measured minutes apart, in one run of
this script. A JSON copy of the table goes to ``DIR/vocab_speed.json``.
"""

from __future__ import annotations

from pathlib import Path

from common import backend_parser, metrics, run_recipe, write_table

from ocrbench import results
from ocrbench.results import read_events

HERE = Path(__file__).resolve().parent
RECIPES = {"captcha_11": HERE / "vocab" / "captcha_11.yml", "zh_1001": HERE / "vocab" / "zh_1001.yml"}


def steady_samples_per_s(events_file: Path, batch: int) -> float:
    """Images per second after warm-up (``ocrbench.results.steady_samples_per_s``), or exit naming
    the file."""
    rate = results.steady_samples_per_s(read_events(events_file), batch)
    if rate is None:
        raise SystemExit(f"{events_file}: fewer than two step events spanning time; cannot measure "
                         "throughput")
    return rate


def main() -> None:
    parser = backend_parser(__doc__, "build/vocab-speed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to both recipes (e.g. model.params.input_width=160)")
    args = parser.parse_args()
    rows = []
    for backend in args.backend.split(","):
        figures = {}
        for name, recipe in RECIPES.items():
            run_dir = run_recipe(recipe, backend, args.out / backend / name, args.overrides)
            batch = metrics(run_dir)["train"]["batch_size"]
            figures[name] = steady_samples_per_s(run_dir / "events.jsonl", batch)
        rows.append({"backend": backend, **figures, "ratio": figures["zh_1001"] / figures["captcha_11"]})
        print(f"{backend:<11} captcha_11 {figures['captcha_11']:7.1f}/s  "
              f"zh_1001 {figures['zh_1001']:7.1f}/s  "
              f"ratio {rows[-1]['ratio']:.2f}", flush=True)
    write_table(rows, args.out / "vocab_speed.json")


if __name__ == "__main__":
    main()
