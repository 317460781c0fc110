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
    """The descriptive columns shown after the metrics (``backend`` leads the table instead)."""
    columns = ["framework", "arch", "init"]
    if comparison.show_devices:
        columns.append("devices")
    if comparison.show_loss:
        columns.append("loss")
    if comparison.show_seeds:
        columns.append("seeds")
    return columns


LEADING = ("run", "backend")   # the columns every format shows first, then the metrics


def short_values(values: list[str]) -> list[str]:
    """The values of one differing recipe key, shortened to what differs: paths lose the leading and
    trailing components they all share (``/data/a/fonts/x.ttf`` and ``/data/a/fonts/y.ttf`` -> ``…/x.ttf``
    and ``…/y.ttf``); other values are cut to TEXT_COLUMN_MAX characters."""
    if len(values) > 1 and all("/" in v for v in values):
        parts = [v.split("/") for v in values]
        lead = 0
        while all(len(p) > lead + 1 for p in parts) and len({p[lead] for p in parts}) == 1:
            lead += 1
        trail = 0
        while all(len(p) > lead + trail + 1 for p in parts) and len({p[-1 - trail] for p in parts}) == 1:
            trail += 1
        values = [("…/" if lead else "") + "/".join(p[lead:len(p) - trail] if trail else p[lead:])
                  + ("/…" if trail else "") for p in parts]
    return [v if len(v) <= TEXT_COLUMN_MAX else v[:TEXT_COLUMN_MAX - 1] + "…" for v in values]


def grid(comparison: Comparison) -> Grid:
    """Columns in reading order: run and backend, the metrics, the descriptive columns, one column per
    recipe key that differs between the runs (short values), native format, status."""
    texts = text_columns(comparison)
    headers = [*LEADING, *[f"{m.title} {arrow(m)}".strip() for m in comparison.metrics], *texts,
               *comparison.varying, "native format", "status"]
    best_rows = {m.key: comparison.best(m) for m in comparison.metrics}
    differing = {key: short_values([row.params.get(key, "") for row in comparison.rows])
                 for key in comparison.varying}
    cells, best = [], []
    for index, row in enumerate(comparison.rows):
        metric_cells = [metric_cell(comparison, row, m) for m in comparison.metrics]
        after = [*[row.text[c] for c in texts], *[differing[k][index] for k in comparison.varying],
                 row.text["native format"], row.text["status"]]
        cells.append([row.label, row.text["backend"], *metric_cells, *after])
        best.append([False] * len(LEADING) + [index in best_rows[m.key] for m in comparison.metrics]
                    + [False] * len(after))
    return Grid(headers, cells, best)


def like_for_like_line(comparison: Comparison) -> str | None:
    """One line: the NOT-LIKE-FOR-LIKE warning (its details in :func:`mismatch_lines`), or what makes
    the runs like-for-like."""
    runs = [run for row in comparison.rows for run in row.runs]
    if comparison.mismatches:
        return f"NOT LIKE-FOR-LIKE (compared with --force): {len(comparison.mismatches)} difference(s)"
    if not runs:
        return None
    m = runs[0].metrics
    split = "" if comparison.eval_on else f", eval n = {m['eval']['n']}"
    return (f"{len(runs)} run(s), like-for-like: dataset {str(m['dataset']['fingerprint'])[:12]} "
            f"({m['dataset']['source']}{split}), same charset, eval protocol and input size")


def preamble(comparison: Comparison, details: bool = True) -> list[str]:
    """The lines stated once above the table: like-for-like or not, notes, legend. With ``details``
    (the text formats) the mismatches and the common recipe parameters are lines too; the HTML report
    folds them instead."""
    lines = []
    headline = like_for_like_line(comparison)
    if headline:
        lines.append(headline)
    if details:
        lines += [f"  - {mismatch}" for mismatch in comparison.mismatches]
    runs = [run for row in comparison.rows for run in row.runs]
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
    if comparison.common and details:
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
        style = "bold red" if line.startswith(("NOT LIKE", "  - ")) else "dim"
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
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 0.5em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: separate; border-spacing: 0; font-size: 0.85em; }
th, td { border-right: 1px solid #ddd; border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right;
         white-space: nowrap; background: #fff; }
th { background: #f2f2f2; position: sticky; top: 0; }
th.text, td.text { text-align: left; }
th.lead, td.lead { position: sticky; left: 0; z-index: 1; text-align: left; }
th.lead { z-index: 2; }
td.lead { background: #fafafa; }
td.best { font-weight: bold; background: #e6f4e6; }
details { margin: 0.4em 0; }
summary { cursor: pointer; }
details.warn > summary, p.warn { color: #b00; font-weight: bold; }
p.note { color: #555; margin: 0.3em 0; }
dl.params { display: grid; grid-template-columns: max-content auto; gap: 0 1.5em; font-size: 0.85em; }
dl.params dt { font-family: monospace; color: #555; }
dl.params dd { margin: 0; font-family: monospace; }
img { max-width: 100%; margin-top: 1.5em; }
"""


def _html_cell(tag: str, text: str, classes: list[str]) -> str:
    css = f" class='{' '.join(classes)}'" if classes else ""
    return f"<{tag}{css}>{html.escape(text)}</{tag}>"


def _html_table(comparison: Comparison) -> list[str]:
    """The table in a horizontal scroll box; the run column stays in view (sticky) while it scrolls."""
    g = grid(comparison)
    metric_columns = range(len(LEADING), len(LEADING) + len(comparison.metrics))

    def classes(i: int, best: bool = False) -> list[str]:
        return ((["lead"] if i == 0 else []) + (["text"] if i not in metric_columns else [])
                + (["best"] if best else []))

    parts = ["<div class='scroll'><table><thead><tr>"
             + "".join(_html_cell("th", h, classes(i)) for i, h in enumerate(g.headers))
             + "</tr></thead><tbody>"]
    for cells, best in zip(g.cells, g.best):
        parts.append("<tr>" + "".join(_html_cell("td", c, classes(i, b))
                                      for i, (c, b) in enumerate(zip(cells, best))) + "</tr>")
    parts.append("</tbody></table></div>")
    return parts


def html_text(comparison: Comparison, plot_png: bytes | None) -> str:
    """One self-contained page, read top to bottom: the like-for-like line (a NOT-LIKE-FOR-LIKE warning
    with its differences folded), the table with the metrics right after run and backend, the notes,
    the common recipe parameters as a folded key/value list, and the plot (base64 PNG) under the table."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>ocrbench compare</title>",
             "<meta name='viewport' content='width=device-width'>",
             f"<style>{HTML_STYLE}</style></head><body>", "<h1>ocrbench compare</h1>"]
    headline = like_for_like_line(comparison)
    notes = preamble(comparison, details=False)[1 if headline else 0:]
    if comparison.mismatches:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in comparison.mismatches)
        parts.append(f"<details class='warn' id='mismatches'><summary>{html.escape(headline)}</summary>"
                     f"<ul>{items}</ul></details>")
    elif headline:
        parts.append(f"<p class='note'>{html.escape(headline)}</p>")
    parts += _html_table(comparison)
    parts += [f"<p class='note'>{html.escape(line)}</p>" for line in notes]
    if comparison.common:
        parts.append(f"<details id='common'><summary>common recipe parameters ({len(comparison.common)})"
                     "</summary><dl class='params'>"
                     + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                               for k, v in comparison.common.items()) + "</dl></details>")
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
