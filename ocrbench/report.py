"""Render an ``ocrbench.compare.Comparison``: terminal table (rich), markdown, csv, json, html.

Every text format shows the same cells (``cells``); csv and json carry raw numbers instead. The best
value per ranked column is highlighted (bold), directions are declared once in ``ocrbench.compare.METRICS``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass

from ocrbench.compare import HIGHER, Comparison, Metric, Row

TEXT_COLUMN_MAX = 40  # characters; longer text (recipe differences, failure reasons) folds onto more lines
FORMATS = ("table", "markdown", "csv", "json", "html")
SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json", ".html": "html",
                  ".htm": "html", ".txt": "table"}


def arrow(metric: Metric) -> str:
    return "" if metric.better is None else ("↑" if metric.better == HIGHER else "↓")


@dataclass
class Grid:
    """The table as strings: headers, cells per row, and which cells hold a column's best value."""

    headers: list[str]
    cells: list[list[str]]
    best: list[list[bool]]


def number(value: float, digits: int) -> str:
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def metric_cell(comparison: Comparison, row: Row, metric: Metric) -> str:
    stat = row.values[metric.key]
    if stat.mean is None:
        return "-"
    text = number(stat.mean, metric.digits)
    if stat.std is not None and metric.better is not None:
        text += f" ± {number(stat.std, metric.digits)}"
    ratio = comparison.ratio(row, metric)
    if ratio is not None and row is not comparison.baseline:
        text += f" (×{ratio:.2f})"
    return text


def text_columns(comparison: Comparison) -> list[str]:
    columns = ["backend", "framework", "arch", "init"]
    if comparison.show_devices:
        columns.append("devices")
    if comparison.show_loss:
        columns.append("loss")
    if comparison.show_seeds:
        columns.append("seeds")
    return columns


def grid(comparison: Comparison) -> Grid:
    texts = text_columns(comparison)
    differs = ["recipe differs"] if comparison.varying else []
    headers = ["run", *texts, *differs,
               *[f"{m.title} {arrow(m)}".strip() for m in comparison.metrics], "native format", "status"]
    best_rows = {m.key: comparison.best(m) for m in comparison.metrics}
    cells, best = [], []
    for index, row in enumerate(comparison.rows):
        params = "; ".join(f"{k}={v}" for k, v in row.params.items())
        fixed = [row.label, *[row.text[c] for c in texts], *([params] if differs else [])]
        metric_cells = [metric_cell(comparison, row, m) for m in comparison.metrics]
        cells.append([*fixed, *metric_cells, row.text["native format"], row.text["status"]])
        best.append([False] * len(fixed) + [index in best_rows[m.key] for m in comparison.metrics]
                    + [False, False])
    return Grid(headers, cells, best)


def preamble(comparison: Comparison) -> list[str]:
    """The lines stated once above the table: like-for-like or not, common parameters, legend."""
    lines = []
    runs = [run for row in comparison.rows for run in row.runs]
    if comparison.mismatches:
        lines.append("NOT LIKE-FOR-LIKE (compared with --force): " + "; ".join(comparison.mismatches))
    elif runs:
        m = runs[0].metrics
        split = "" if comparison.eval_on else f", eval n = {m['eval']['n']}"
        lines.append(f"{len(runs)} run(s), like-for-like: dataset {str(m['dataset']['fingerprint'])[:12]} "
                     f"({m['dataset']['source']}{split}), same charset, eval protocol and input size")
    if comparison.eval_on:
        other = comparison.eval_on
        lines.append(f"accuracy and eval img/s scored on another dataset: {other['fingerprint'][:12]} "
                     f"({other['source']}, eval n = {other['splits']['eval']}, `ocrbench eval --data`, "
                     f"{other['engine']} engine); every other figure is from training")
    machines = {json.dumps({k: r.metrics["hardware"].get(k) for k in ("cpu_model", "cores", "gpus")},
                           sort_keys=True)
                for r in runs}
    if len(machines) > 1:
        lines.append("note: the runs come from different machines; compare their timings with care")
    elif runs:
        hw = runs[0].metrics["hardware"]
        gpus = ", ".join(g.get("name", "?") for g in hw.get("gpus") or []) or "no GPU"
        lines.append(f"machine: {hw.get('cpu_model')}, {hw.get('cores')} cores, {gpus}")
    if comparison.show_loss:
        reductions = {}
        for row in comparison.rows:
            if row.runs and row.text["loss"] != "-":
                reductions.setdefault(row.text["loss"], []).append(row.text["backend"])
        lines.append("note: the backends reduce the CTC loss differently ("
                     + "; ".join(f"{', '.join(dict.fromkeys(names))}: {loss}"
                                 for loss, names in reductions.items())
                     + "), so their loss values and curves are not on one scale (the loss column)")
    if comparison.common:
        lines.append("common recipe parameters: "
                     + "; ".join(f"{k}={v}" for k, v in comparison.common.items()))
    lines.append("↑ higher is better, ↓ lower is better; best per column in bold; ± = sample std over seeds"
                 + (f"; (×r) = ratio to {comparison.baseline.label}" if comparison.baseline else ""))
    return lines


# ------------------------------------------------------------------------------------------ renderers
def render_table(comparison: Comparison, console) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    for line in preamble(comparison):
        style = "bold red" if line.startswith("NOT LIKE") else "dim"
        console.print(f"[{style}]{escape(line)}[/{style}]", soft_wrap=True)
    g = grid(comparison)
    table = Table(show_header=True, header_style="bold", box=box.SIMPLE_HEAVY)
    metric_titles = {f"{m.title} {arrow(m)}".strip() for m in comparison.metrics}
    widths = []
    for index, header in enumerate(g.headers):
        longest = max([len(header)] + [len(cells[index]) for cells in g.cells])
        if header in metric_titles:
            widths.append(min(longest, 18))
            table.add_column(header, justify="right", no_wrap=True, min_width=widths[-1])
        else:
            widths.append(min(longest, TEXT_COLUMN_MAX))
            table.add_column(header, overflow="fold", min_width=widths[-1], max_width=TEXT_COLUMN_MAX)
    for cells, best in zip(g.cells, g.best):
        table.add_row(*[f"[bold green]{escape(c)}[/bold green]" if b else escape(c)
                        for c, b in zip(cells, best)])
    narrow = console.width
    console.width = max(narrow, sum(widths) + 3 * len(widths) + 2)  # a narrow terminal wraps, never crushes
    try:
        console.print(table)
    finally:
        console.width = narrow


def markdown(comparison: Comparison) -> str:
    g = grid(comparison)
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731 - one-line helper
    lines = [f"> {escape(line)}" for line in preamble(comparison)]
    lines += ["", "| " + " | ".join(escape(h) for h in g.headers) + " |",
              "|" + "|".join("---" for _ in g.headers) + "|"]
    for cells, best in zip(g.cells, g.best):
        lines.append("| " + " | ".join(f"**{escape(c)}**" if b else escape(c) for c, b in zip(cells, best))
                     + " |")
    return "\n".join(lines) + "\n"


def records(comparison: Comparison) -> list[dict]:
    """One flat record per row with raw numbers (csv and json)."""
    out = []
    for row in comparison.rows:
        record = {"run": row.label, "runs": [r.run_id for r in row.runs], **row.text, **row.params}
        for m in comparison.metrics:
            stat = row.values[m.key]
            record[m.key] = stat.mean
            record[f"{m.key}_std"] = stat.std
            record[f"{m.key}_n"] = stat.n
            if comparison.baseline is not None:
                record[f"{m.key}_ratio"] = comparison.ratio(row, m)
        out.append(record)
    return out


def csv_text(comparison: Comparison) -> str:
    rows = records(comparison)
    for row in rows:
        row["runs"] = " ".join(row["runs"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["run"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def json_text(comparison: Comparison) -> str:
    best = {m.key: [comparison.rows[i].label for i in sorted(comparison.best(m))] for m in comparison.metrics}
    document = {
        "like_for_like": comparison.like_for_like,
        "mismatches": comparison.mismatches,
        "eval_on": comparison.eval_on,
        "common_parameters": comparison.common,
        "varying_parameters": comparison.varying,
        "baseline": comparison.baseline.label if comparison.baseline else None,
        "metrics": [{"key": m.key, "title": m.title, "better": m.better} for m in comparison.metrics],
        "best": best,
        "rows": records(comparison),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
td.best { font-weight: bold; background: #e6f4e6; }
p.warn { color: #b00; font-weight: bold; }
p.note { color: #555; }
img { max-width: 100%; margin-top: 1.5em; }
"""


def html_text(comparison: Comparison, plot_png: bytes | None) -> str:
    """One self-contained file: the table, the stated-once lines, and the plot embedded as base64 PNG."""
    g = grid(comparison)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>ocrbench compare</title>",
             f"<style>{HTML_STYLE}</style></head><body>", "<h1>ocrbench compare</h1>"]
    for line in preamble(comparison):
        css = "warn" if line.startswith("NOT LIKE") else "note"
        parts.append(f"<p class='{css}'>{html.escape(line)}</p>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in g.headers)
                 + "</tr></thead><tbody>")
    for cells, best in zip(g.cells, g.best):
        parts.append("<tr>" + "".join(f"<td class='best'>{html.escape(c)}</td>" if b
                                      else f"<td>{html.escape(c)}</td>"
                                      for c, b in zip(cells, best)) + "</tr>")
    parts.append("</tbody></table>")
    if plot_png:
        encoded = base64.b64encode(plot_png).decode("ascii")
        parts.append(f"<img alt='eval accuracy against wall time and loss against step' "
                     f"src='data:image/png;base64,{encoded}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(comparison: Comparison, fmt: str, plot_png: bytes | None = None) -> str:
    """Text of a non-terminal format."""
    if fmt == "markdown":
        return markdown(comparison)
    if fmt == "csv":
        return csv_text(comparison)
    if fmt == "json":
        return json_text(comparison)
    if fmt == "html":
        return html_text(comparison, plot_png)
    if fmt == "table":
        from rich.console import Console

        console = Console(file=io.StringIO(), width=200, no_color=True, highlight=False)
        render_table(comparison, console)
        return console.file.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def render_equivalence(report, console) -> None:
    """``ocrbench equivalence``: one row per measure (ocrbench.equivalence) with its tolerance, the worst
    pair and its figure (red beyond the tolerance); every pair's figures are in equivalence.json."""
    from rich.table import Table

    from ocrbench.equivalence import MEASURES

    table = Table(title=f"equivalence of the shared crnn over {len(report.pairs)} pairs of "
                        f"{', '.join(report.backends)}")
    for column, justify in (("measure", "left"), ("tolerance", "right"), ("worst pair", "left"),
                            ("worst", "right"), ("best", "right")):
        table.add_column(column, justify=justify)
    for measure in MEASURES:
        values = {pair: figures[measure] for pair, figures in report.pairs.items()}
        pair = max(values, key=values.get)
        tolerance = report.tolerances.get(measure)
        worst = f"{values[pair]:.2e}"
        if tolerance is not None and not values[pair] <= tolerance:
            worst = f"[red]{worst}[/red]"
        table.add_row(measure, f"{tolerance:g}" if tolerance is not None else "(reported)",
                      f"{pair[0]} / {pair[1]}", worst, f"{min(values.values()):.2e}")
    console.print(table)
