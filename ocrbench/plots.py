"""``ocrbench compare --plot``: eval accuracy against wall time and training loss against step.

matplotlib with the Agg backend (no display). One line per run, labelled by backend (and seed when a
backend has several runs). The figure is 12 x 4.5 inches at 100 dpi: a 1200 x 450 pixel PNG.
"""

from __future__ import annotations

import io

from ocrbench.compare import Comparison, Run

FIGSIZE_IN = (12.0, 4.5)
DPI = 100


def run_labels(runs: list[Run]) -> list[str]:
    """Backend names, with the seed (and then the run id) added only where needed to tell lines apart."""
    labels = [r.metrics["backend"]["name"] for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.metrics['backend']['name']} seed {r.metrics['seed']}" for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({r.run_id})" for label, r in zip(labels, runs)]
    return labels


def figure_png(comparison: Comparison) -> bytes:
    """The two panels as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for row in comparison.rows for run in row.runs]
    figure, (acc_axes, loss_axes) = plt.subplots(1, 2, figsize=FIGSIZE_IN, dpi=DPI)
    for run, label in zip(runs, run_labels(runs)):
        curve = run.metrics["train"]["curve"]
        evaluated = [p for p in curve
                     if p.get("eval_seq_acc") is not None and p.get("eval_wall_s") is not None]
        if evaluated:
            acc_axes.plot([p["eval_wall_s"] for p in evaluated], [100 * p["eval_seq_acc"] for p in evaluated],
                          marker="o", label=label)
        losses = run.metrics["train"].get("loss_curve") or [p for p in curve if p.get("loss") is not None]
        if losses:
            loss_axes.plot([p["step"] for p in losses], [p["loss"] for p in losses], label=label)
    accuracies = [100 * p["eval_seq_acc"] for r in runs for p in r.metrics["train"]["curve"]
                  if p.get("eval_seq_acc") is not None]
    acc_axes.set_ylim(bottom=max(0.0, min(accuracies, default=0.0) - 5), top=100.5)
    target = next((r.metrics["train"]["target_acc"] for r in runs if r.metrics["train"]["target_acc"]), None)
    if target:
        acc_axes.axhline(100 * target, color="grey", linestyle="--", linewidth=1,
                         label=f"target {100 * target:g} %")
    acc_axes.set(title="Eval sequence accuracy against wall time",
                 xlabel="wall time since training start (s)", ylabel="sequence accuracy (%)")
    loss_title = "Training loss against step" + (" (reduced differently: not one scale)"
                                                 if comparison.show_loss else "")
    loss_axes.set(title=loss_title, xlabel="optimizer step", ylabel="CTC loss (log scale)")
    if all(p["loss"] > 0 for r in runs for p in (r.metrics["train"].get("loss_curve") or [])):
        loss_axes.set_yscale("log")
    for axes in (acc_axes, loss_axes):
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    title = "ocrbench compare" + ("" if comparison.like_for_like else " (NOT like-for-like)")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()
