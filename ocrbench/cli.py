"""The ``ocrbench`` command line. Heavy modules are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ocrbench.completion import complete_backends, complete_recipes, complete_run_dirs

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="One YAML recipe in, native CRNN/CTC jobs in five frameworks out, one metrics JSON.")
env_app = typer.Typer(no_args_is_help=True, help="Per-backend virtual environments.")
app.add_typer(env_app, name="env")
log_app = typer.Typer(no_args_is_help=True, help="Send finished runs to an experiment tracker.")
app.add_typer(log_app, name="log")

def examples(*commands: str) -> str:
    """A command's --help epilog: its usage examples, one per line."""
    return "Examples:\n\n" + "\n\n".join(f"  {command}" for command in commands)


def finished_run_argument():
    """The RUN_DIR argument of the commands that use a finished run (completes run directories)."""
    return typer.Argument(..., help="A finished run directory.", autocompletion=complete_run_dirs)


SET_HELP = "Override a recipe key, e.g. --set train.epochs=3 (repeatable; the value is parsed as YAML)."


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def friendly(func):
    """Turn OcrbenchError into a clear message and exit code 2, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ocrbench.errors import OcrbenchError

        try:
            return func(*args, **kwargs)
        except OcrbenchError as exc:
            from rich.markup import escape

            console = _console(stderr=True)
            console.print(f"[bold red]error:[/bold red] {escape(exc.message)}", soft_wrap=True)
            if exc.hint:
                console.print(f"  hint: {escape(exc.hint)}", soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            _console(stderr=True).print("interrupted")
            raise typer.Exit(130)

    return wrapper


@app.command(epilog=examples("ocrbench validate recipes/captcha.yml",
                             "ocrbench validate recipes/captcha.yml --backend mxnet --set train.epochs=1"))
@friendly
def validate(recipe: Path = typer.Argument(..., help="Recipe YAML file.", autocompletion=complete_recipes),
             set_: List[str] = typer.Option([], "--set", help=SET_HELP),
             backend: Optional[str] = typer.Option(None, "--backend", autocompletion=complete_backends,
                                                   help="Run the recipe on this backend.")):
    """Check a recipe (keys, types, ranges, backend, architecture) and print it with defaults filled in."""
    import yaml

    from ocrbench.recipe import load_recipe
    from ocrbench.plan import plan

    loaded, path = load_recipe(recipe, set_, backend)
    p = plan(loaded, path)
    typer.echo(yaml.safe_dump(p.resolved, sort_keys=False, allow_unicode=True), nl=False)
    _console(stderr=True).print(f"{path}: valid ({p.spec.name}, arch {p.recipe.model.arch})")


@app.command(epilog=examples("ocrbench prepare recipes/captcha_pytorch.yml",
                             "ocrbench prepare recipes/captcha_pytorch.yml --verify"))
@friendly
def prepare(recipe: Path = typer.Argument(..., help="Recipe YAML file.", autocompletion=complete_recipes),
            set_: List[str] = typer.Option([], "--set", help=SET_HELP),
            rebuild: bool = typer.Option(False, "--rebuild", help="Delete the prepared dataset (and its "
                                         "backends' native copies) and build it again."),
            verify: bool = typer.Option(False, "--verify", help="Check every image's sha256 and the "
                                        "fingerprint of a prepared dataset (exit 1 naming what changed).")):
    """Prepare (or find) the recipe's canonical dataset and print its directory and fingerprint."""
    from ocrbench import datasets
    from ocrbench.errors import OcrbenchError
    from ocrbench.plan import plan
    from ocrbench.recipe import load_recipe

    loaded, path = load_recipe(recipe, set_)
    p = plan(loaded, path)
    console = _console(stderr=True)
    if rebuild and verify:
        raise OcrbenchError("--rebuild and --verify: give one (a rebuilt dataset is new)")
    prepared = datasets.prepare(loaded.resolved()["data"], path.parent, log=console.print, rebuild=rebuild)
    if verify:
        problems = datasets.verify(prepared.root)
        for problem in problems:
            console.print(f"[bold red]damaged:[/bold red] {prepared.root}: {problem}", soft_wrap=True)
        if problems:
            console.print(f"  hint: rebuild it with `ocrbench prepare {recipe} --rebuild`")
            raise typer.Exit(1)
        console.print(f"dataset: verified {prepared.root}: every image matches its sha256 and the "
                      "fingerprint matches")
    ctc = p.check_ctc(prepared.root)
    console.print(f"dataset: every label fits T = {ctc.steps} CTC steps "
                  f"({p.spec.name}, {p.recipe.model.arch})"
                  if not (ctc.skipped or ctc.eval_infeasible) else
                  f"dataset: {ctc.skipped} training label(s) over T = {ctc.steps} left out "
                  f"({ctc.train}), {ctc.eval_infeasible} evaluation label(s) cannot be emitted")
    typer.echo(f"{prepared.root}\t{prepared.fingerprint}")


DIST_PANEL = "Several devices / machines (docs/distributed.md)"
MLFLOW_PANEL = "MLflow tracking (docs/tracking.md)"


@app.command(epilog=examples("ocrbench run recipes/captcha_mxnet.yml --gpus 2",
                             "ocrbench run recipes/captcha.yml --backend all --mlflow"))
@friendly
def run(recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML file (omit with --resume).",
                                                    autocompletion=complete_recipes),
        backend: Optional[str] = typer.Option(None, "--backend", autocompletion=complete_backends,
                                              help="Run the recipe on this backend; 'a,b' or 'all' (every "
                                                   "installed backend) runs it on each in turn and "
                                                   "compares."),
        set_: List[str] = typer.Option([], "--set", help=SET_HELP),
        gpus: Optional[int] = typer.Option(None, "--gpus", min=0, rich_help_panel=DIST_PANEL,
                                           help="GPUs to use on this machine, one data-parallel replica "
                                                "each; 0 = CPU (default: the recipe's runtime.gpus)."),
        nproc: Optional[int] = typer.Option(None, "--nproc", min=1, rich_help_panel=DIST_PANEL,
                                            help="Data-parallel CPU replicas on this machine (worker "
                                                 "processes, or CPU devices for TensorFlow/MXNet), where "
                                                 "the framework has CPU collectives."),
        nnodes: int = typer.Option(1, "--nnodes", min=1, rich_help_panel=DIST_PANEL,
                                   help="Machines in the run (each runs this command with its --node-rank)."),
        node_rank: Optional[int] = typer.Option(None, "--node-rank", min=0, rich_help_panel=DIST_PANEL,
                                                help="This machine's index, 0..nnodes-1 (node 0 writes the "
                                                     "results; default 0, or every node with "
                                                     "--print-command)."),
        master_addr: Optional[str] = typer.Option(None, "--master-addr", rich_help_panel=DIST_PANEL,
                                                  help="Node 0's address, reachable from every node."),
        master_port: Optional[int] = typer.Option(None, "--master-port", rich_help_panel=DIST_PANEL,
                                                  help="Rendezvous port on node 0 (default 29500 across "
                                                       "machines, a free port on one)."),
        hosts: Optional[str] = typer.Option(None, "--hosts", rich_help_panel=DIST_PANEL,
                                            help="Every node's address, comma-separated, node 0 first "
                                                 "(TensorFlow's TF_CONFIG needs them all)."),
        print_command: bool = typer.Option(False, "--print-command", rich_help_panel=DIST_PANEL,
                                           help="Print the native launch command(s) and environment; run "
                                                "nothing."),
        launcher: str = typer.Option("native", "--launcher", rich_help_panel=DIST_PANEL,
                                     help="native: start the framework's launcher here; slurm: write an "
                                          "sbatch script that does it on every node of a Slurm allocation."),
        submit: bool = typer.Option(False, "--submit", rich_help_panel=DIST_PANEL,
                                    help="With --launcher slurm: submit the script with sbatch."),
        out: Path = typer.Option(Path("runs"), "--out", help="Directory for run directories."),
        python: Optional[str] = typer.Option(None, "--python",
                                             help="Use this interpreter for the backend instead of its env."),
        resume: Optional[Path] = typer.Option(None, "--resume", autocompletion=complete_run_dirs,
                                              help="Continue an interrupted run directory."),
        init_from: Optional[Path] = typer.Option(None, "--init-from", autocompletion=complete_run_dirs,
                                                 help="Start from neutral weights: a finished run directory "
                                                      "(its `ocrbench export RUN --format weights`) or a "
                                                      "model.safetensors file; sets model.init. With --set "
                                                      "train.epochs=0 the model is only evaluated and "
                                                      "exported (serve another framework's model)."),
        mlflow: bool = typer.Option(False, "--mlflow", rich_help_panel=MLFLOW_PANEL,
                                    help="Log the run to MLflow as it trains (needs ocrbench[mlflow])."),
        mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", rich_help_panel=MLFLOW_PANEL,
                                                 help="Tracking URI (implies --mlflow; default "
                                                      "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                                                      "here, which `mlflow ui` opens)."),
        mlflow_experiment: Optional[str] = typer.Option(None, "--mlflow-experiment",
                                                        rich_help_panel=MLFLOW_PANEL,
                                                        help="Experiment name (default: the recipe's "
                                                             "name).")):
    """Run a recipe end to end: prepare data, train, evaluate, export, write metrics.json."""
    from ocrbench import distributed
    from ocrbench.errors import OcrbenchError
    from ocrbench.recipe import load_recipe
    from ocrbench.plan import plan
    from ocrbench.runner import Runner, load_run
    from ocrbench.tracking import Tracking

    tracking = (Tracking(mlflow_uri, mlflow_experiment) if mlflow or mlflow_uri or mlflow_experiment
                else None)
    if launcher not in ("native", "slurm"):
        raise OcrbenchError(f"--launcher {launcher!r}: use native or slurm")
    if submit and launcher != "slurm":
        raise OcrbenchError("--submit submits a Slurm script: give --launcher slurm too")
    many = backend is not None and (backend.strip() == "all" or "," in backend)
    if many:
        if resume is not None or python is not None or print_command or launcher != "native":
            raise OcrbenchError("--backend all / a,b runs a recipe on several backends: --resume, --python, "
                                "--print-command and --launcher slurm apply to one backend",
                                hint="set runtime.python per backend in the recipe instead")
        if recipe is None:
            raise OcrbenchError("give a recipe file to run on several backends")
    if init_from is not None:
        if resume is not None:
            raise OcrbenchError("--init-from starts a new run; --resume continues one from its checkpoint")
        set_ = [*set_, "model.init=" + json.dumps({"from": str(init_from.expanduser().resolve())})]
    if resume is not None:
        if recipe is not None or backend or set_:
            raise OcrbenchError("--resume continues a run as it was recorded; give no recipe, --backend "
                                "or --set")
        loaded, job = load_run(resume)
        recipe_path = Path(job.recipe_path) if job.recipe_path else None
        if gpus is None and nproc is None and job.distributed.device == "cpu":   # the devices it had
            nproc = job.distributed.nproc_per_node
        gpus = job.gpus if gpus is None else gpus
    elif recipe is None:
        raise OcrbenchError("give a recipe file (or --resume RUN_DIR)")
    elif not many:
        loaded, recipe_path = load_recipe(recipe, set_, backend)

    def where(default_gpus: int) -> "distributed.Topology":
        # Slurm knows node 0 at run time
        address = master_addr or ("<host0>" if launcher == "slurm" else None)
        return distributed.topology(default_gpus if gpus is None else gpus, nproc, nnodes, node_rank or 0,
                                    address, master_port, hosts)

    if many:
        _run_many(recipe, backend, set_, where, out, tracking)
        return
    p = plan(loaded, recipe_path)
    t = where(p.recipe.runtime.gpus)
    console = _console()
    if print_command:
        from ocrbench.runner import launch_commands

        nodes = range(t.nnodes) if node_rank is None else [t.node_rank]
        typer.echo(launch_commands(p, t, out, python, nodes), nl=False)
        return
    if launcher == "slurm":
        from ocrbench import slurm

        script = slurm.write_script(p, t, recipe, set_, out, python, master_port)
        console.print(f"sbatch script: {script}")
        if submit:
            console.print(slurm.submit(script))
        return
    runner = Runner(p, out, t, python, sys.argv, console, resume_dir=resume.resolve() if resume else None,
                    mlflow=tracking)
    metrics_path, metrics = runner.run()
    if metrics is None:   # a node other than 0: its ranks trained, node 0 wrote the results
        return
    _summary(console, metrics_path, metrics)
    if metrics["status"] != "ok":
        raise typer.Exit(1)


def _run_many(recipe: Path, choice: str, set_: list[str], where, out: Path, tracking) -> None:
    """The recipe on each chosen backend in turn, then the comparison of what ran."""
    from ocrbench import compare, multirun, report
    from ocrbench.errors import OcrbenchError
    from ocrbench.recipe import load_recipe

    console = _console()
    names, left_out = multirun.select_backends(choice, installed_only=True)
    if left_out:
        console.print(f"not installed, left out: {', '.join(left_out)} (ocrbench env install NAME)")
    if not names:
        raise OcrbenchError("no backend environment is installed",
                            hint="ocrbench env install pytorch (or all)")
    outcomes = multirun.run_each(names, lambda name: load_recipe(recipe, set_, name), out, where,
                                 sys.argv, console, mlflow=tracking)
    runs = [compare.Run(o.metrics_path.resolve(), o.metrics) for o in outcomes if o.metrics is not None]
    not_started = [compare.not_started_row(o.backend, o.not_started) for o in outcomes if o.not_started]
    console.rule("[bold]comparison")
    report.render_table(compare.build(runs, force=True, not_started=not_started), console)
    console.print(f"run directories: {out}/ (ocrbench compare {out} --plot compare.png --output report.html)")
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def _summary(console, path: Path, m: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    if m["status"] != "ok":
        console.print(f"[bold red]run failed[/bold red] ({m['error']['stage']}): "
                      f"{escape(m['error']['message'])}")
        console.print(f"details: {path.parent / 'native.log'}; metrics: {path}")
        return
    e, t = m["eval"], m["train"]
    table = Table(title=f"{m['run_id']}", show_header=True)
    for column in ("seq acc", "char acc", "CER", "1-NED", "train s", "samples/s", "eval img/s", "peak RSS MB",
                   "params"):
        table.add_column(column, justify="right")
    table.add_row(f"{e['seq_acc']:.4f}", f"{e['char_acc']:.4f}", f"{e['cer']:.4f}", f"{e['ned']:.4f}",
                  f"{t['wall_s']:.1f}", "-" if t["samples_per_s"] is None else f"{t['samples_per_s']:.1f}",
                  f"{e['images_per_s'] or 0:.0f}",
                  f"{t['peak_rss_mb'] or 0:.0f}", f"{m['model']['params']:,}")
    console.print(table)
    if t["target_acc"] is not None:
        reached = ("not reached" if t["time_to_target_s"] is None
                   else f"reached at {t['time_to_target_s']:.1f} s")
        console.print(f"target seq acc {t['target_acc']}: {reached}")
    _print_exports(console, m)
    console.print(f"metrics: {path}")


def _print_exports(console, m: dict) -> None:
    from rich.markup import escape

    for x in m["exports"]:
        console.print(f"export {x['format']}: " + (f"{x['path']} ({x['bytes']:,} bytes)" if x["ok"]
                                                   else f"[yellow]failed: {escape(x['error'])}[/yellow]"))
        if x.get("parity"):
            _print_parity(console, x["parity"])


@app.command(epilog=examples("ocrbench smoke",
                             "ocrbench smoke --backend pytorch,mxnet --junit build/smoke.xml"))
@friendly
def smoke(backend: str = typer.Option("all", "--backend", autocompletion=complete_backends,
                                      help="'all' or a comma-separated list of backends."),
          junit: Optional[Path] = typer.Option(None, "--junit",
                                               help="Also write the results as JUnit XML here."),
          out: Path = typer.Option(Path("runs/smoke"), "--out",
                                   help="Directory for the smoke run directories."),
          install: bool = typer.Option(False, "--install",
                                       help="Install (or update) each backend's env first."),
          set_: List[str] = typer.Option([], "--set", help=SET_HELP)):
    """Run each backend's tiny synthetic smoke recipe (seconds to a minute each) and report pass/fail.

    A backend passes when its run completes, is scored, reaches its recipe's train.target_acc (the learning
    threshold; a recipe without one proves plumbing only) and every export it asks for is made and checked.
    Exits 1 if any backend fails."""
    from rich.markup import escape
    from rich.table import Table

    from ocrbench import multirun
    from ocrbench.backend import get_backend
    from ocrbench.recipe import load_recipe

    console = _console()
    names, _ = multirun.select_backends(backend, installed_only=False)
    outcomes = multirun.run_each(names, lambda name: load_recipe(get_backend(name).smoke_recipe, set_, name),
                                 out, None, sys.argv, console, install=install)
    table = Table(title="ocrbench smoke", show_header=True)
    for column in ("backend", "result", "seconds", "seq acc", "must reach", "reason"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        failure = multirun.smoke_failure(outcome)
        acc = outcome.metrics["eval"]["seq_acc"] if outcome.metrics else None
        target = multirun.learning_threshold(outcome.metrics) if outcome.metrics else None
        table.add_row(outcome.backend,
                      "[green]pass[/green]" if failure is None else "[bold red]FAIL[/bold red]",
                      f"{outcome.seconds:.1f}", "-" if acc is None else f"{acc:.4f}",
                      "- (plumbing only)" if target is None else f"{target:g}", escape(failure or ""))
    console.print(table)
    if junit is not None:
        multirun.write_junit(junit, outcomes)
        console.print(f"JUnit XML: {junit}")
    if any(multirun.smoke_failure(o) is not None for o in outcomes):
        raise typer.Exit(1)


@app.command("compare", epilog=examples("ocrbench compare runs/",
                                        "ocrbench compare runs/ --plot compare.png --output report.html"))
@friendly
def compare_(paths: List[Path] = typer.Argument(..., autocompletion=complete_run_dirs,
                                             help="Run directories, metrics.json files or folders of runs."),
             fmt: Optional[str] = typer.Option(None, "--format",
                                               help="table, markdown, csv, json or html (default: table, or "
                                                    "from --output's suffix)."),
             output: Optional[Path] = typer.Option(None, "--output", help="Write the report to this file "
                                                   "(the terminal still shows the table)."),
             plot: Optional[Path] = typer.Option(None, "--plot", help="Write the curves as a PNG here."),
             baseline: Optional[str] = typer.Option(None, "--baseline",
                                                    help="Run id or directory: show every figure also as a "
                                                         "ratio."),
             force: bool = typer.Option(False, "--force", help="Compare runs that are not like-for-like (the "
                                                              "output says so)."),
             eval_on: Optional[str] = typer.Option(None, "--eval", help="A dataset fingerprint (6+ "
                                                   "characters): show the accuracy each run scored on it "
                                                   "with `ocrbench eval --data`.")):
    """Put runs side by side: accuracy, speed, memory, sizes; seeds aggregated; best values highlighted."""
    from ocrbench import atomic, compare, report
    from ocrbench.errors import OcrbenchError

    if fmt is None:
        fmt = report.SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output else "table"
    if fmt not in report.FORMATS:
        raise OcrbenchError(f"--format {fmt!r}: choose one of {', '.join(report.FORMATS)}")
    runs = compare.load_runs(paths)
    if eval_on is not None:
        runs = compare.on_other_dataset(runs, eval_on)
    comparison = compare.build(runs, force=force, baseline=baseline)
    png = None
    if plot is not None or fmt == "html":
        from ocrbench.plots import figure_png

        png = figure_png(comparison)
    console = _console()
    if output is None and fmt == "table":
        report.render_table(comparison, console)
    elif output is None:
        typer.echo(report.render(comparison, fmt, png), nl=False)
    else:
        report.render_table(comparison, console)
        atomic.write_text(output, report.render(comparison, fmt, png))
        console.print(f"{fmt} report: {output}")
    if plot is not None:
        atomic.write_bytes(plot, png)
        console.print(f"plot: {plot}")


@app.command(epilog=examples("ocrbench export runs/captcha-pytorch-20261206-1015",
                             "ocrbench export runs/captcha-pytorch-20261206-1015 --format onnx"))
@friendly
def export(run_dir: Path = finished_run_argument(),
           formats: List[str] = typer.Option([], "--format", help="Export only this format (repeatable; "
                                             "'native' = the backend's own); default: the recipe's.")):
    """Export a finished run again from its last checkpoint and check the exports.

    Each export is reloaded by its framework and compared; the ONNX export also runs in onnxruntime
    without the framework on the eval split. metrics.json records it all (exit 1 if an export failed)."""
    from ocrbench.reexport import export_run

    console = _console()
    metrics, exported = export_run(run_dir.resolve(), formats or None, console, sys.argv)
    _print_exports(console, metrics)
    if not all(x["ok"] for x in metrics["exports"] if x["format"] in exported):
        raise typer.Exit(1)


@app.command("eval", epilog=examples("ocrbench eval runs/captcha-pytorch-20261206-1015",
                                     "ocrbench eval runs/captcha-pytorch-20261206-1015 "
                                     "--data recipes/captcha_dejavu.yml"))
@friendly
def eval_(run_dir: Path = finished_run_argument(),
          exported: str = typer.Option("onnx", "--exported", help="Without --data: which export to check "
                                                                   "on the run's eval split (onnx)."),
          data: Optional[Path] = typer.Option(None, "--data", help="Score the run on another dataset: a "
                                              "recipe (its data section) or a label file (path<TAB>text)."),
          engine: str = typer.Option("onnx", "--engine", help="With --data: onnx (the ONNX export in "
                                     "onnxruntime) or native (the framework, from the last checkpoint)."),
          charset_filter: bool = typer.Option(False, "--charset-filter", help="With --data: drop label "
                                              "characters the model cannot output instead of refusing.")):
    """Without --data: check the run's ONNX export in onnxruntime on its eval split (exports[].parity).
    With --data: score the run on another dataset, into evals/<fingerprint>.json (metrics.json untouched)."""
    console = _console()
    if data is None:
        from ocrbench.export_parity import evaluate_run

        _print_parity(console, evaluate_run(run_dir, exported))
        return
    from ocrbench.cross_eval import evaluate_on

    record, path = evaluate_on(run_dir.resolve(), data, engine, charset_filter, _console(stderr=True),
                               sys.argv)
    e = record["eval"]
    rate = f"{e['images_per_s']:.0f} images/s" if e["images_per_s"] else "-"
    console.print(f"{record['run_id']} on {data} (dataset {record['dataset']['fingerprint'][:12]}, "
                  f"n = {e['n']}): seq acc {e['seq_acc']:.4f}, char acc {e['char_acc']:.4f}, "
                  f"1-NED {e['ned']:.4f}; engine {record['engine']['runtime']}, {rate}")
    console.print(f"record: {path}")


@app.command(epilog=examples("ocrbench predict runs/captcha-pytorch-20261206-1015 sample.png",
                             "ocrbench predict runs/captcha-pytorch-20261206-1015 crops/ "
                             "--format csv --output texts.csv"))
@friendly
def predict(run_dir: Path = finished_run_argument(),
            images: List[Path] = typer.Argument(..., help="Image files, folders of images, or label files "
                                                          "(.txt/.tsv, path<TAB>text lines)."),
            engine: str = typer.Option("onnx", "--engine", help="onnx: the run's ONNX export in "
                                       "onnxruntime (no framework); native: the framework, from the last "
                                       "checkpoint."),
            fmt: Optional[str] = typer.Option(None, "--format", help="table, jsonl or csv (default: table, "
                                              "or from --output's suffix)."),
            output: Optional[Path] = typer.Option(None, "--output", help="Write the results to this file "
                                                  "(jsonl or csv)."),
            confidence: str = typer.Option("mean", "--confidence", help="Which confidence the table and the "
                                           "'confidence' field show: mean or min of the per-step maximum "
                                           "probability."),
            batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per onnxruntime call.")):
    """Read the text in images with a trained run: text and confidence per image.

    Exit 1 when some input could not be read (the others still get their results)."""
    from ocrbench import atomic
    from ocrbench import predict as predicting

    fmt = predicting.check_options(fmt, output, confidence)
    status = _console(stderr=True)
    result = predicting.predict(run_dir.resolve(), images, engine, status, sys.argv, batch_size)
    if output is not None:
        atomic.write_text(output, predicting.render(result, fmt, confidence))
        status.print(f"{fmt}: {output}")
    elif fmt == "table":
        predicting.print_table(_console(), result, confidence)
    else:
        typer.echo(predicting.render(result, fmt, confidence), nl=False)
    for line in predicting.summary(result):
        status.print(line, soft_wrap=True)
    for failure in result.outcome.failures.values():
        status.print(f"[bold red]error:[/bold red] {failure.path}: {failure.reason}", soft_wrap=True)
    if result.outcome.failures:
        raise typer.Exit(1)


def _print_parity(console, parity: dict) -> None:
    if "error" in parity:
        console.print(f"[yellow]  parity check failed: {parity['error']}[/yellow]")
        return
    line = (f"  {parity['runtime']}: seq acc {parity['seq_acc']:.4f} "
            f"(trained model {parity['native_seq_acc']:.4f}), "
            f"identical predictions {100 * parity['identical']:.2f} % of {parity['n']}")
    if "latency_ms_p50" in parity:
        line += (f", max |diff| {parity['max_abs_diff']}, "
                 f"preprocess max |diff| {parity['preprocess_max_diff']}, "
                 f"batch-1 latency p50 {parity['latency_ms_p50']:.2f} ms / "
                 f"p95 {parity['latency_ms_p95']:.2f} ms, "
                 f"{parity['throughput_ips']:.0f} images/s at batch 32")
    console.print(line)


@app.command(epilog=examples("ocrbench equivalence", "ocrbench equivalence --backend pytorch,mindspore"))
@friendly
def equivalence(backend: str = typer.Option("all", "--backend", autocompletion=complete_backends,
                                            help="Backends to check, 'a,b' or 'all' "
                                                 "(every installed backend; at least two)."),
                out: Path = typer.Option(Path("build/equivalence"), "--out",
                                         help="Directory for the probe runs and equivalence.json.")):
    """Check that the backends' shared crnn computes the same function.

    One set of shared-init neutral weights and one fixed batch go through every backend: inference
    logits, the CTC loss, one SGD and one Adam step, and the BN statistics after it, compared pairwise
    (docs/equivalence.md). Exit 1 if a pair differs beyond a tolerance.

    Example: ocrbench equivalence --backend pytorch,mxnet"""
    from ocrbench import equivalence as eq
    from ocrbench import multirun
    from ocrbench.errors import OcrbenchError
    from ocrbench.report import render_equivalence

    names, left_out = multirun.select_backends(backend, installed_only=True)
    if len(names) < 2:
        raise OcrbenchError(f"--backend {backend}: at least two installed backends are needed "
                            f"(installed: {', '.join(names) or 'none'}; not installed: "
                            f"{', '.join(left_out) or 'none'})", hint="ocrbench env install NAME")
    console = _console()
    report = eq.compare(eq.run_probes(names, out, console))
    eq.write_report(report, out / "equivalence.json")
    render_equivalence(report, console)
    console.print(f"written: {out / 'equivalence.json'}")
    if report.failures():
        for line in report.failures():
            console.print(f"[red]beyond tolerance:[/red] {line}")
        raise typer.Exit(1)


@app.command(epilog=examples("ocrbench bench", "ocrbench bench recipes/captcha.yml --backend paddleocr "
                                                "--mode paddleocr=to_static --json bench.json"))
@friendly
def bench(recipe: Path = typer.Argument(Path("recipes/captcha.yml"), autocompletion=complete_recipes,
                                        help="A recipe of the shared crnn (default: recipes/captcha.yml)."),
          backend: str = typer.Option("all", "--backend", autocompletion=complete_backends,
                                      help="'all' (every installed backend) or a comma-separated list."),
          steps: int = typer.Option(30, "--steps", min=1, help="Timed steps per round of each minimal loop."),
          rounds: int = typer.Option(5, "--rounds", min=1, help="Rounds of timed steps (the median counts)."),
          warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed steps before them."),
          epochs: int = typer.Option(2, "--epochs", min=1, help="Epochs of each ocrbench run (the ratio uses "
                                                                "the last one's steady rate)."),
          threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                                help="Framework threads (default: the cores available)."),
          mode: List[str] = typer.Option([], "--mode", help="BACKEND=MODE: a minimal loop's fast path, e.g. "
                                         "paddleocr=to_static, pytorch=compile, tensorflow=xla."),
          out: Path = typer.Option(Path("runs/bench"), "--out", help="Directory for the ocrbench runs."),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here."),
          set_: List[str] = typer.Option([], "--set", help=SET_HELP + " Applies to the ocrbench runs.")):
    """Is each backend as fast as its framework allows? Runs each backend's minimal training loop
    (benchmarks/minimal) and a short ocrbench run of the same configuration back to back, and prints the
    rates, their ratio and where the run's time went (docs/benchmarks.md). Measure on an otherwise idle
    machine."""
    from ocrbench import atomic, multirun
    from ocrbench import bench as benchmark

    console = _console()
    modes = dict(_key_value(m, "--mode") for m in mode)
    settings = benchmark.BenchSettings(steps=steps, warmup=warmup, rounds=rounds, epochs=epochs,
                                       threads=threads, modes=modes, overrides=list(set_))
    names, _ = multirun.select_backends(backend, installed_only=backend == "all")
    rows = [benchmark.bench_backend(name, recipe, settings, out, sys.argv, console) for name in names]
    console.print(benchmark.table(rows))
    for line in benchmark.notes(rows):
        console.print(line, soft_wrap=True)
    if json_out is not None:
        atomic.write_json(json_out, benchmark.document(rows, str(recipe), settings))
        console.print(f"JSON: {json_out}")
    if any(row.error for row in rows):
        raise typer.Exit(1)


def _key_value(text: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` of a repeatable option, or a clear error naming the option."""
    from ocrbench.errors import OcrbenchError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise OcrbenchError(f"{option} {text!r}: write it as KEY=VALUE, e.g. paddleocr=to_static")
    return key.strip(), value.strip()


@app.command(epilog=examples("ocrbench backends"))
@friendly
def backends():
    """List the registered backends and whether their environments are installed."""
    from rich.table import Table

    from ocrbench import envs
    from ocrbench.backend import load_backends

    table = Table(show_header=True)
    for column in ("backend", "framework", "architectures", "exports", "environment"):
        table.add_column(column)
    for spec in load_backends().values():
        state = envs.status(spec)
        env = (f"installed ({spec.distribution} {state.framework_version})" if state.installed
               else state.detail)
        table.add_row(spec.name, spec.framework, ", ".join(spec.archs), ", ".join(spec.export_formats), env)
    _console().print(table)


@env_app.command("install", epilog=examples("ocrbench env install pytorch",
                                            "ocrbench env install all --cuda"))
@friendly
def env_install(name: str = typer.Argument(..., help="Backend name, or 'all'.",
                                           autocompletion=complete_backends),
                force: bool = typer.Option(False, "--force", help="Rebuild even if up to date."),
                cuda: bool = typer.Option(False, "--cuda", help="Install the framework's CUDA build from the "
                                          "package registries (the newest CUDA major defined; with 'all', "
                                          "the backends that have none are named and left as they are)."),
                cuda_major: Optional[int] = typer.Option(None, "--cuda-major", min=1,
                                                         help="This CUDA major version (implies --cuda)."),
                cpu: bool = typer.Option(False, "--cpu", help="Install the CPU build (the default for a new "
                                         "env; an installed CUDA env is otherwise kept)."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Resolve the requirements and print "
                                             "what would be installed; install nothing.")):
    """Create (or update) a backend's virtual environment from its pinned requirements (CPU or CUDA)."""
    from ocrbench import envs
    from ocrbench.backend import get_backend, load_backends
    from ocrbench.errors import OcrbenchError

    if cpu and (cuda or cuda_major is not None):
        raise OcrbenchError("--cpu and --cuda: give one")
    specs = list(load_backends().values()) if name == "all" else [get_backend(name)]
    console = _console(stderr=True)
    for spec in specs:
        try:
            variant = envs.choose_variant(spec, cuda, cuda_major)
        except OcrbenchError as exc:
            if name != "all":
                raise
            console.print(f"{spec.name}: left as it is: {exc.message}", soft_wrap=True)
            continue
        if dry_run:
            pins = envs.resolve(spec, variant)
            console.print(f"{spec.name} ({variant}): resolves to {len(pins)} packages")
            typer.echo("\n".join(f"{spec.name}\t{variant}\t{pin}" for pin in pins))
            continue
        envs.install(spec, force=force, log=console.print, variant=None if not (cpu or cuda or cuda_major)
                     else variant)


@env_app.command("list", epilog=examples("ocrbench env list"))
@friendly
def env_list():
    """Show each backend's environment: installed or not, CPU or CUDA, interpreter, framework version,
    and which CUDA builds the package registries hold for it."""
    from rich.table import Table

    from ocrbench import envs
    from ocrbench.backend import load_backends

    table = Table(show_header=True)
    for column in ("backend", "installed", "variant", "interpreter", "framework", "CUDA builds", "note"):
        table.add_column(column, overflow="fold")
    for spec in load_backends().values():
        s = envs.status(spec)
        cuda = (", ".join(envs.variants(spec)[1:]) or
                f"none on the registries ({spec.cuda_unavailable or 'not defined'}); use --python")
        table.add_row(spec.name, "yes" if s.installed else "no", s.variant or "-", str(s.python or "-"),
                      f"{spec.distribution} {s.framework_version}" if s.framework_version else "-", cuda,
                      s.detail)
    _console().print(table)


@log_app.command("mlflow", epilog=examples("ocrbench log mlflow runs/captcha-pytorch-20261206-1015",
                                           "ocrbench log mlflow runs/ --uri http://mlflow.example:5000 "
                                           "--experiment captcha-sweep"))
@friendly
def log_mlflow(run_dirs: List[Path] = typer.Argument(..., autocompletion=complete_run_dirs,
                                                    help="Finished run directories, or folders of "
                                                    "them (e.g. the --out of a --backend all sweep)."),
               uri: Optional[str] = typer.Option(None, "--uri", help="Tracking URI (default "
                                                 "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."),
               experiment: Optional[str] = typer.Option(None, "--experiment",
                                                        help="Experiment name (default: each run's recipe "
                                                             "name).")):
    """Upload finished runs to MLflow: one MLflow run per run directory, its curves, final metrics,
    metrics.json, recipe, plot and exports."""
    from ocrbench.compare import find_metrics_files
    from ocrbench.tracking import log_finished, require_mlflow

    require_mlflow()
    console = _console()
    for metrics_file in find_metrics_files(run_dirs):
        run_id = log_finished(metrics_file.parent, uri, experiment)
        console.print(f"mlflow: {metrics_file.parent} -> run {run_id}")


def _terminate(signum, frame) -> None:
    """SIGTERM ends ocrbench like Ctrl-C: the worker is stopped and a failed metrics.json is written."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":
    main()
