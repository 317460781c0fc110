"""``ocrbench equivalence``: does every backend's shared ``crnn`` compute the same function?

One set of neutral weights (``ocrbench.weights.shared_init``) and one fixed batch of canonical images and
labels go to every backend's worker (job stage ``equivalence``; the driver's probe). Each loads the weights
through its converter and returns, in the canonical conventions: the inference-mode logits, one training
step's training-mode logits and per-sample CTC losses, the weights after that step and the inference-mode
logits after it (BN running statistics updated). This is run twice per backend: SGD without momentum, and
Adam with the recipe's epsilon — same learning rate, gradient clip off, loss reduction ``sum``.

The core then compares every pair of backends (docs/equivalence.md states the measures and tolerances):

* ``forward``: max |Δ| of the inference-mode logits (tolerance 1e-4);
* ``loss``: the batch's summed per-sample CTC loss, relative difference (1e-4);
* ``train_forward``: max |Δ| of the training-mode logits (batch statistics; 1e-4);
* ``sgd`` / ``adam``: the updated trainable weights, max over tensors of max |Δ| / max |w| (1e-4);
  ``sgd_update`` / ``adam_update``: the same for the update w1 - w0 (reported);
* ``bn_stats``: the BN running statistics after the step, max |Δ| / max |stat| (1e-4);
* ``eval_after``: max |Δ| of the inference-mode logits after the step (1e-4).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ocrbench import atomic, datasets, distributed, envs, processes, weights
from ocrbench.codec import Charset, pad_targets
from ocrbench.crnn_layout import BATCH_NORM_AFTER
from ocrbench.errors import OcrbenchError
from ocrbench.job import Job
from ocrbench.plan import plan
from ocrbench.recipe import validate_data
from ocrbench.results import read_events

HEIGHT = 32
BATCH = 8
OPTIMIZERS = {   # the two probe steps: lr, betas and eps are the recipe defaults; no momentum, no clip
    "sgd": {"name": "sgd", "lr": 0.01, "momentum": 0.0},
    "adam": {"name": "adam", "lr": 0.001},
}
# the probe network: every backend's crnn smoke size on a small captcha set (its eval split is the batch)
PROBE_RECIPE = {
    "name": "equivalence",
    "model": {"arch": "crnn", "params": {"input_width": 100, "channels": [8, 16, 32, 32, 64, 64, 64],
                                         "hidden": 32},
              "init": "shared"},
    "data": {"source": "captcha", "width": 160, "height": 60, "min_len": 3, "max_len": 5,
             "charset": "0123456789", "train_size": 16, "eval_size": BATCH, "seed": 7},
    "train": {"epochs": 1, "batch_size": BATCH, "seed": 3, "loss_reduction": "sum", "grad_clip": None},
}
TOLERANCES = {"forward": 1e-4, "loss": 1e-4, "train_forward": 1e-4, "grad": 1e-4, "sgd": 1e-4,
              "adam": 1e-4, "bn_stats": 1e-4, "eval_after": 1e-4}
MEASURES = ("forward", "loss", "train_forward", "grad", "sgd", "adam", "adam_all", "adam_left_out",
            "grad_noise", "bn_stats", "eval_after")
# conv biases followed by batch norm: BN subtracts the batch mean, so their gradient is exactly zero and
# what a framework computes for it is rounding noise — the probe's measured noise floor
ZERO_GRADIENT = tuple(f"conv{i}.bias" for i in BATCH_NORM_AFTER)
NOISE_FACTOR = 10.0   # adam: elements whose gradient is above 10x that floor in both backends


@dataclass
class Probe:
    """One backend's probe outputs for one optimizer (arrays from ``equivalence/output.npz``)."""

    backend: str
    optimizer: str
    arrays: dict[str, np.ndarray]

    def after(self) -> dict[str, np.ndarray]:
        return {k.removeprefix("after/"): v for k, v in self.arrays.items() if k.startswith("after/")}


@dataclass
class Report:
    """Pairwise differences of the probes: ``pairs[(a, b)][measure]``, and the tolerances."""

    backends: list[str]
    pairs: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=lambda: dict(TOLERANCES))

    def worst(self, measure: str) -> float:
        return max((d[measure] for d in self.pairs.values()), default=0.0)

    def failures(self) -> list[str]:
        limits = self.tolerances
        return [f"{a} vs {b}: {m} {d[m]:.3g} > {limits[m]:g}"
                for (a, b), d in self.pairs.items() for m in limits if not d[m] <= limits[m]]

    def to_json(self) -> dict:
        return {"backends": self.backends, "tolerances": self.tolerances,
                "pairs": [{"a": a, "b": b, **d} for (a, b), d in self.pairs.items()]}


# ------------------------------------------------------------------------------------- the batch
def probe_batch(dataset: datasets.PreparedDataset, width: int) -> dict[str, np.ndarray]:
    """The eval split as canonical model input: gray, PIL bilinear to 32 x ``width``, ``x / 127.5 - 1``
    (float32 NCHW), with padded blank-0 targets and label lengths."""
    samples = dataset.samples("eval")
    images = []
    for sample in samples:
        with Image.open(dataset.root / sample.path) as img:
            gray = img.convert("L").resize((width, HEIGHT), Image.Resampling.BILINEAR)
        images.append(np.asarray(gray, dtype=np.float32) / np.float32(127.5) - np.float32(1.0))
    charset = Charset(dataset.charset)
    targets, lengths = pad_targets([s.text for s in samples], charset, max(len(s.text) for s in samples))
    return {"inputs": np.stack(images)[:, None], "targets": targets.astype(np.int32),
            "lengths": lengths.astype(np.int32)}


# --------------------------------------------------------------------------------- running probes
def run_probes(backends: list[str], out: Path, console) -> list[Probe]:
    """Every backend's probe for each optimizer of OPTIMIZERS, in ``out/<backend>-<optimizer>/``."""
    probes = []
    for backend, optimizer in itertools.product(backends, OPTIMIZERS):
        probes.append(run_probe(backend, optimizer, out / f"{backend}-{optimizer}", console))
    return probes


def probe_recipe(backend: str, optimizer: str) -> dict:
    recipe = copy.deepcopy(PROBE_RECIPE)
    recipe["backend"] = backend
    recipe["train"]["optimizer"] = dict(OPTIMIZERS[optimizer])
    return recipe


def run_probe(backend: str, optimizer: str, run_dir: Path, console) -> Probe:
    """One probe: shared-init weights (train.seed of PROBE_RECIPE) and the eval batch through ``backend``'s
    worker with ``optimizer``; raises an OcrbenchError naming the backend if the worker fails."""
    from ocrbench.runner import Runner, job_spec

    p = plan(validate_data(probe_recipe(backend, optimizer), "equivalence probe"), None)
    dataset = datasets.prepare(p.resolved["data"], Path.cwd(), log=lambda _: None)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "equivalence").mkdir(exist_ok=True)
    batch = probe_batch(dataset, p.resolved["model"]["params"]["input_width"])
    np.savez(run_dir / "equivalence" / "input.npz", **batch)
    runner = Runner(p, run_dir.parent, distributed.Topology(), None, ["ocrbench", "equivalence"], console)
    python, _ = envs.resolve_python(p.spec, None)
    launch = runner.launch(python, run_dir)
    job = job_spec(p, run_dir, dataset, launch, resume=False)
    job = dataclasses.replace(job, stage="equivalence", init_weights=runner.init_weights(run_dir, dataset))
    atomic.write_json(run_dir / "job.json", job.to_json())
    (run_dir / "events.jsonl").unlink(missing_ok=True)
    processes.follow(launch, run_dir, console, None)
    return _read_probe(backend, optimizer, run_dir, job)


def _read_probe(backend: str, optimizer: str, run_dir: Path, job: Job) -> Probe:
    events = read_events(run_dir / "events.jsonl")
    errors = [e for e in events if e["event"] == "error"]
    output = run_dir / "equivalence" / "output.npz"
    if errors or not output.is_file():
        reason = errors[-1]["message"] if errors else "the worker ended without writing its probe"
        raise OcrbenchError(f"equivalence probe of {backend} ({optimizer}) failed: {reason}",
                            hint=f"details in {run_dir / 'native.log'}")
    with np.load(output, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    initial = weights.read(job.init_weights).tensors   # the shared-init weights the worker started from
    arrays.update({f"before/{k}": v for k, v in initial.items()})
    return Probe(backend, optimizer, arrays)


# ------------------------------------------------------------------------------------ comparing
def compare(probes: list[Probe]) -> Report:
    """Pairwise differences of every measure (module docstring) over the backends of ``probes``."""
    by = {(p.backend, p.optimizer): p for p in probes}
    backends = sorted({p.backend for p in probes})
    report = Report(backends)
    for a, b in itertools.combinations(backends, 2):
        report.pairs[(a, b)] = pair_differences(by[(a, "sgd")], by[(b, "sgd")], by[(a, "adam")],
                                                by[(b, "adam")])
    return report


def pair_differences(sgd_a: Probe, sgd_b: Probe, adam_a: Probe, adam_b: Probe) -> dict[str, float]:
    x, y = sgd_a.arrays, sgd_b.arrays
    loss_a, loss_b = float(x["losses"].astype(np.float64).sum()), float(y["losses"].astype(np.float64).sum())
    stats = [n for n in sgd_a.after() if "running_" in n]
    grad_a, grad_b = gradients(sgd_a), gradients(sgd_b)
    noise = max(float(np.abs(g[n]).max()) for g in (grad_a, grad_b) for n in ZERO_GRADIENT)
    defined = {n: np.minimum(np.abs(grad_a[n]), np.abs(grad_b[n])) > NOISE_FACTOR * noise for n in grad_a}
    return {
        "forward": max_abs(x["eval_logits"], y["eval_logits"]),
        "loss": abs(loss_a - loss_b) / max(abs(loss_a), 1e-12),
        "train_forward": max_abs(x["train_logits"], y["train_logits"]),
        "grad": relative({n: g for n, g in grad_a.items() if n not in ZERO_GRADIENT}, grad_b),
        "sgd": relative(sgd_a.after(), sgd_b.after(), trainable=True),
        "adam": relative(adam_a.after(), adam_b.after(), trainable=True, where=defined),
        "adam_all": relative(adam_a.after(), adam_b.after(), trainable=True),
        "adam_left_out": 1.0 - sum(int(m.sum()) for m in defined.values()) / sum(m.size
                                                                              for m in defined.values()),
        "grad_noise": noise,
        "bn_stats": relative({n: sgd_a.after()[n] for n in stats}, {n: sgd_b.after()[n] for n in stats}),
        "eval_after": max_abs(x["eval_logits_after"], y["eval_logits_after"]),
    }


def gradients(sgd: Probe) -> dict[str, np.ndarray]:
    """The trainable tensors' gradients of the probe's loss, from its plain SGD step: (w0 - w1) / lr."""
    lr = OPTIMIZERS["sgd"]["lr"]
    after = sgd.after()
    return {n: (sgd.arrays[f"before/{n}"].astype(np.float64) - after[n]) / lr
            for n in after if "running_" not in n}


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def relative(a: dict[str, np.ndarray], b: dict[str, np.ndarray], trainable: bool = False,
             where: dict[str, np.ndarray] | None = None) -> float:
    """max over tensors of max |a - b| / max |a| (BN running statistics left out when ``trainable``; with
    ``where``, the difference only over each tensor's elements where its mask is true)."""
    worst = 0.0
    for name, value in a.items():
        if trainable and "running_" in name:
            continue
        scale = max(float(np.abs(value).max()), 1e-12)
        diff = np.abs(value.astype(np.float64) - b[name].astype(np.float64))
        if where is not None:
            diff = diff[where[name]]
        worst = max(worst, float(diff.max()) / scale if diff.size else 0.0)
    return worst


def write_report(report: Report, path: Path) -> None:
    atomic.write_text(path, json.dumps(report.to_json(), indent=2) + "\n")
