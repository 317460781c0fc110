"""Peak worker RSS against dataset size: does any backend hold the train split in memory?

    .venv/bin/python benchmarks/memory_by_size.py [--backend pytorch,...] [--sizes 20000,200000] [--out DIR]

Runs ``benchmarks/memory/lines.yml`` (one epoch, a tiny crnn, ``data.cache: none``) on each backend at each
size, and ``data.cache: auto`` at the smallest size for contrast, and prints the worker's peak RSS (MiB, the
worker process or its largest child, as metrics.json records it). Issue 16: under ``none`` the figure
must not grow with the number of lines. A JSON copy goes to ``DIR/memory_by_size.json``.
"""

from __future__ import annotations

from pathlib import Path

from common import MemoryPeaks, backend_parser, job_spec, metrics, run_recipe, write_table

RECIPE = Path(__file__).resolve().parent / "memory" / "lines.yml"


def main() -> None:
    parser = backend_parser(__doc__, "build/memory-by-size")
    parser.add_argument("--sizes", default="20000,200000", help="comma-separated train split sizes")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    cases = [(size, "none") for size in sizes] + [(sizes[0], "auto")]
    rows = []
    for backend in args.backend.split(","):
        for size, cache in cases:
            peaks = MemoryPeaks()
            run_dir = run_recipe(RECIPE, backend, args.out / backend / f"{size}-{cache}",
                                 [f"data.train_size={size}", f"data.cache={cache}"], memory=peaks)
            train = metrics(run_dir)["train"]
            resolved = job_spec(run_dir)["dataset"]["cache"]
            rows.append({"backend": backend, "train_lines": size, "cache": cache, "resolved": resolved,
                         "peak_rss_mb": train["peak_rss_mb"], "peak_anonymous_mb": peaks.anonymous,
                         "peak_file_backed_mb": peaks.file_backed, "train_s": train["train_s"]})
            print(f"{backend:<11} {size:>7} lines  cache {cache} -> {resolved:<6} "
                  f"peak RSS {train['peak_rss_mb']:6.0f} MiB (anonymous {peaks.anonymous:6.0f}, file-backed "
                  f"{peaks.file_backed:5.0f})  train {train['train_s']:5.0f} s", flush=True)
    write_table(rows, args.out / "memory_by_size.json")


if __name__ == "__main__":
    main()
