"""Live display of a worker's events: a rich progress bar (epoch, step, loss, samples/s, ETA) and one
line per evaluation, scored by the core as it happens. Works in a terminal and in CI logs."""

from __future__ import annotations

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ocrbench.errors import OcrbenchError


class EventProgress:
    def __init__(self, console, scorer):
        self.console = console
        self.scorer = scorer
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[sps]} samples/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False)
        self.task = None
        self.epochs = 0

    def __enter__(self) -> "EventProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def handle(self, event: dict) -> None:
        """Update the display for one event from events.jsonl."""
        kind = event["event"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)

    def _on_start(self, e: dict) -> None:
        self.console.print(f"worker: {e['framework']} {e['version']} on {e.get('device', '?')} "
                           f"(python {e.get('python')}, pid {e.get('pid')})")

    def _on_prepared(self, e: dict) -> None:
        self.console.print(f"native data: {e.get('format', '?')} at {e.get('path', '?')} "
                           f"({'reused' if e.get('reused') else 'built'} in {e['seconds']:.1f} s)")

    def _on_model(self, e: dict) -> None:
        blank = e.get("blank", 0)
        where = "" if blank == 0 else " in the backend, converted to 0 for ocrbench"
        self.console.print(f"model: {e.get('arch')} with {e.get('params', 0):,} parameters, "
                           f"{e.get('classes')} classes (blank {blank}{where})")

    def _on_resumed(self, e: dict) -> None:
        self.console.print(f"resumed after epoch {e['epoch']} (step {e['step']})")

    def _on_train_begin(self, e: dict) -> None:
        self.epochs = e["epochs"]
        if e["epochs"] == 0:   # train.epochs 0: the initial weights are only evaluated and exported
            self.progress.console.print("train: 0 epochs — evaluating the initial weights")
            return
        total = e["epochs"] * e["steps_per_epoch"]
        done = (e["start_epoch"] - 1) * e["steps_per_epoch"]
        self.task = self.progress.add_task("train", total=total, completed=done, epoch=e["start_epoch"],
                                           epochs=e["epochs"], loss="-", sps="-")

    def _on_step(self, e: dict) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=e["step"], epoch=e["epoch"], loss=f"{e['loss']:.4f}",
                                 sps=f"{e['samples_per_s']:.0f}")

    def _on_epoch_end(self, e: dict) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=e["step"], epoch=e["epoch"], loss=f"{e['loss']:.4f}",
                                 sps=f"{e['samples'] / max(e['train_s'], 1e-9):.0f}")

    def _on_eval(self, e: dict) -> None:
        try:
            s = self.scorer(e["predictions"])
            scores = f"seq_acc {s['seq_acc']:.4f}  char_acc {s['char_acc']:.4f}  1-NED {s['ned']:.4f}"
        except OcrbenchError as exc:
            scores = f"[red]cannot score: {escape(exc.message)}[/red]"
        where = f"step {e['step']} (epoch {e['epoch']}/{self.epochs})" if e.get("mid_epoch") \
            else f"epoch {e['epoch']}/{self.epochs}"
        self.console.print(f"{where}: {scores}  "
                           f"({e['n']} images, {e['images_per_s']:.0f} images/s, wall {e['wall_s']:.1f} s)")

    def _on_export(self, e: dict) -> None:
        if e["ok"]:
            self.console.print(f"export {e['format']}: {', '.join(e['files'])} ({e['bytes']:,} bytes)")
        else:
            self.console.print(f"[yellow]export {e['format']} failed: {escape(e['error'])}[/yellow]")

    def _on_error(self, e: dict) -> None:
        self.console.print(f"[red]worker error: {e['type']}: {escape(e['message'])}[/red] (see native.log)")
