"""The contract a backend implements: the :class:`Trainer` base class, its loss description
(:class:`LossSpec`) and the export check every trainer may use (:func:`compare_logits`). Standard library
and numpy only."""

from __future__ import annotations

import abc
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ocrbench.job import Job
from ocrbench.labels import read_label_file
from ocrbench.worker.events import EpochContext

LOSS_REDUCTIONS = {
    "mean": "the per-sample CTC losses averaged over the batch",
    "sum": "the per-sample CTC losses summed over the batch",
    "char_mean": "each sample's CTC loss divided by its label length, then averaged over the batch",
}
LOSS_UNITS = {"per_sample": "per sample", "per_char": "per label character"}


@dataclass(frozen=True)
class LossSpec:
    """How a backend's training loss is reduced, recorded in metrics.json (``train.loss``) so that
    ``ocrbench compare`` can say when two runs' losses are not on one scale.

    ``reduction`` (a key of LOSS_REDUCTIONS): how the per-sample CTC losses of a batch become the loss whose
    gradient is taken — with ``sum`` the gradient is the batch size times that of ``mean``.
    ``logged`` (``per_sample`` or ``per_char``): what the loss reported to ``EpochContext.step`` and
    returned by ``train_epoch`` (the loss curves) is an average of. ``native``: the framework's call.
    """

    reduction: str
    logged: str
    native: str

    def __post_init__(self):
        if self.reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"LossSpec.reduction {self.reduction!r}: "
                             f"use one of {', '.join(LOSS_REDUCTIONS)}")
        if self.logged not in LOSS_UNITS:
            raise ValueError(f"LossSpec.logged {self.logged!r}: use one of {', '.join(LOSS_UNITS)}")

    def to_json(self) -> dict:
        return asdict(self)


DEFAULT_OUTPUT_SPEC = {"blank": 0, "labels": "charset[k] is class k + 1; the blank is class 0",
                       "output": "logits (time, batch, classes), time-major", "layout": "TBC",
                       "activation": "logits"}
SHUFFLE_SEED_STRIDE = 100_003   # Trainer.epoch_seed: seed * stride + epoch
PREPROCESS_PARAMS = ("keep_ratio",)   # model.params keys of the data pipeline, not of the network


Batches = Iterable[tuple[list[str], np.ndarray]]


class EpochOrder:
    """A sampler of training-sample indices in :meth:`Trainer.epoch_order` of the current epoch (set with
    :meth:`set_epoch` before each epoch); PyTorch's and Gluon's DataLoaders take it as ``sampler``."""

    def __init__(self, trainer: "Trainer", n: int):
        self._trainer, self._n, self.epoch = trainer, n, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self._trainer.epoch_order(self.epoch, self._n))

    def __len__(self) -> int:
        return self._n


class Trainer(abc.ABC):
    """What a backend implements: the framework-specific parts of a run. The driver (:func:`run_job`)
    constructs nothing: :func:`serve` makes ``TrainerClass(job)``, then the driver calls ``setup``,
    :meth:`seed_everything`, ``prepare``, ``build``, the epoch loop (``train_epoch``, ``predict``, ``save``)
    and ``export`` (docs/backends.md has the order and every event).

    Conventions, the same for every backend:

    * **labels**: class 0 is the CTC blank, ``charset[i]`` is class ``i + 1`` (``ocrbench.codec``); a
      framework whose native convention differs converts inside its worker (``codec.from_blank_last``);
    * **best paths** (``predict``, ``predict_exported``): int arrays ``(batch, time)``, batch-major, of the
      argmax class per step in that convention, yielded with the batch's sample ids (the canonical label
      files' image paths), in label-file order;
    * **training policies** are the recipe's, identical in every backend: the per-step learning rate
      (``EpochContext.lr``), the partial last batch (``train.drop_last``: use :meth:`drop_last` /
      :meth:`epoch_steps`), Adam's epsilon (``train.optimizer.eps``), the seeds (:meth:`seed_everything`,
      :meth:`epoch_seed`), the label-length limit (:attr:`max_label_len`);
    * **data-parallel runs**: ``setup`` joins the framework's engine as ``job.distributed`` says, may return
      ``distributed`` (what it set up, recorded in metrics.json) and trains on ``job.process_batch`` images
      per step (this process's share); only rank 0 evaluates, checkpoints and exports.
    """

    framework: str = ""   # the framework's name in events, e.g. "torch"
    default_loss_reduction: str = "mean"   # what ``train.loss_reduction: backend`` means here
    native_loss: str = ""   # the framework call that gives the per-sample CTC losses (metrics.json)

    def __init__(self, job: Job):
        self.job = job
        self._sample_ids: dict[str, list[str]] = {}

    # ------------------------------------------------------------------- what every backend provides
    @abc.abstractmethod
    def version(self) -> str:
        """The framework's version string."""

    @abc.abstractmethod
    def setup(self) -> dict:
        """Devices (``job.gpus``, ``job.local_rank``; :meth:`require_gpus`), threads (:meth:`threads`) and
        the distributed engine. Returns what goes into the ``start`` event: ``{"device": ..., ...}``, and
        ``distributed`` for a data-parallel run. Seeds are set next, by :meth:`seed_everything`."""

    @abc.abstractmethod
    def seed_framework(self, seed: int) -> None:
        """Seed the framework's own generators (Python's and numpy's are seeded by the driver)."""

    @abc.abstractmethod
    def prepare(self) -> dict:
        """Convert the canonical dataset (``job.dataset_dir``) into the native format under
        ``job.native_dir`` — written atomically, reused if present (ranks on one machine hold a lock
        around this call). Returns ``{"format", "path", "reused", ...}``."""

    @abc.abstractmethod
    def build(self) -> dict:
        """Model, optimizer (``train.optimizer``, with ``eps`` for Adam), loss and data pipeline. Returns
        ``{"arch", "params", "classes", ...}`` (``params``: trainable parameter count)."""

    @abc.abstractmethod
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (:meth:`epoch_steps` of this process's share of the split)."""

    @abc.abstractmethod
    def train_epoch(self, ctx: EpochContext) -> None:
        """One epoch: iterate the epoch's training batches, in its seeded order, through
        ``ctx.batches(...)`` (after a mid-epoch resume it leaves out the steps already taken); before each
        step take the learning rate from ``ctx.lr()``, after it call ``ctx.step(images, loss)`` with the
        step's logged loss (as :meth:`loss_spec` describes it; a callable is evaluated lazily). The epoch's
        mean loss is the mean of those (``ctx.mean_loss``). ``ctx.step`` may write a checkpoint
        (``train.checkpoint_every``), so the model and optimizer must be consistent when it is called."""

    @abc.abstractmethod
    def predict(self, split: str) -> Batches:
        """Inference on ``split`` in label-file order: ``(ids, best_paths)`` batches, best paths an int
        array ``(batch, time)`` in the blank-0 convention."""

    @abc.abstractmethod
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """A native checkpoint of model and optimizer during or after ``epoch`` (1-based) into
        ``directory``: an empty staging directory that the driver commits by renaming it once this
        returns (``ocrbench.worker.checkpoints``), so files need no temporary names. Returns the files
        written. Files meant to outlive later checkpoints (a best-accuracy copy) go in
        ``job.path("checkpoints")``."""

    @abc.abstractmethod
    def load(self, directory: Path) -> None:
        """Restore model and optimizer from the checkpoint in ``directory`` (a committed step directory,
        its files verified by the driver)."""

    @abc.abstractmethod
    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        """One deployable format into ``directory`` (empty, created by the driver); returns its files.
        An exception is recorded as that export's failure; the run goes on."""

    @abc.abstractmethod
    def input_spec(self) -> dict:
        """The model input: ``shape``, ``layout``, ``color``, ``dtype``, ``pixels`` (value range), ``resize``,
        and ``preprocess`` (``ocrbench.preprocess.describe``) that the core replays to run exports."""

    def loss_spec(self) -> LossSpec:
        """How the CTC loss is reduced (:attr:`loss_reduction`) and what the logged loss is an average of
        (metrics.json ``train.loss``); ``native`` is the backend's :attr:`native_loss`."""
        reduction = self.loss_reduction
        return LossSpec(reduction=reduction, logged="per_char" if reduction == "char_mean" else "per_sample",
                        native=self.native_loss)

    # -------------------------------------------------------------------- optional hooks (defaults)
    def output_spec(self) -> dict:
        """Blank index, label convention, layout and ``activation`` (``logits`` or ``softmax``) of the
        exports' outputs (their metadata); the default is blank 0 with time-major logits
        ``(time, batch, classes)``. The ``blank`` is also that of :meth:`predict_outputs`."""
        return dict(DEFAULT_OUTPUT_SPEC)

    def predict_outputs(self, split: str) -> Iterable[tuple[list[str], np.ndarray]]:
        """Like :meth:`predict`, but the network's outputs: ``(ids, logits)`` batches, logits float32
        ``(batch, time, classes)``, **batch-major**, before any softmax, in the class order of
        :meth:`output_spec` (its ``blank``). ``ocrbench predict --engine native`` decodes them with
        confidences (``ocrbench.recognition``), the way the core decodes an ONNX export's outputs."""
        raise NotImplementedError(f"the {self.framework} backend cannot give its network's outputs "
                                  "(Trainer.predict_outputs), so `ocrbench predict --engine native` cannot "
                                  "run it")

    def on_evaluated(self, epoch: int, predictions: Path) -> None:
        """Called after each evaluation (at an epoch's end, or inside epoch ``epoch`` with
        ``train.eval_every_steps``) with its predictions file, before the next ``save``."""

    def resume_training(self) -> None:
        """Called after an evaluation inside an epoch (``train.eval_every_steps``), before the epoch's next
        step: put the network back into training mode if ``predict`` left it in inference mode (a
        framework with a module-wide mode flag: PyTorch, Paddle, MindSpore). The default does nothing, for
        frameworks whose training step chooses the mode itself (Gluon's ``autograd.record``, Keras's
        ``training=True``)."""

    def predict_exported(self, fmt: str, directory: Path) -> Batches | None:
        """Like ``predict("eval")`` through the export in ``directory`` reloaded by the framework; None for
        a format it does not reload (ONNX: the core runs that one). The core compares the predictions."""
        return None

    def reference_batch(self, n: int) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        """``(ids, inputs, outputs)``: the first ``n`` eval images as the exports take them, made by the
        backend's own pipeline, and the framework's output for them as the exports return it; saved as
        ``reference.npz`` beside every export (``ocrbench.export_parity``). None: no reference."""
        return None

    def weight_arrays(self) -> list[list[np.ndarray]] | None:
        """The trained weights of each replica this process holds (one list per replica, a fixed order);
        their digests show that the replicas of a data-parallel run agree. None: not reported."""
        return None

    # ----------------------------------------------- neutral weights and equivalence probes (shared crnn)
    def neutral_weights(self) -> dict[str, np.ndarray]:
        """The model's weights under the canonical names and layouts of ``ocrbench.weights`` (BN running
        statistics included), float32 numpy arrays; the backend's ``neutral.py`` converts."""
        raise self._no_neutral()

    def load_neutral_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Set the model's weights (and BN running statistics) from canonical tensors (checked by the core
        against the recipe's network before the worker starts)."""
        raise self._no_neutral()

    def probe_forward(self, inputs: np.ndarray) -> np.ndarray:
        """The network in inference mode on canonical ``inputs``, float32 ``(B, 1, 32, W)`` NCHW in [-1, 1]:
        logits ``(T, B, classes)``, time-major, class 0 the blank (the equivalence probe)."""
        raise self._no_neutral()

    def probe_step(self, inputs: np.ndarray, targets: np.ndarray, lengths: np.ndarray,
                   lr: float) -> tuple[np.ndarray, np.ndarray]:
        """One training step on canonical ``inputs`` (as :meth:`probe_forward`), padded ``targets`` (blank-0
        classes) and label ``lengths``, through the same code as ``train_epoch`` (its loss reduction,
        optimizer, clip) at learning rate ``lr``. Returns the step's training-mode logits ``(T, B, classes)``
        (blank 0) and per-sample CTC losses ``(B,)`` (negative log-likelihoods, before the update)."""
        raise self._no_neutral()

    def _no_neutral(self) -> NotImplementedError:
        return NotImplementedError(f"the {self.framework} backend has no neutral weights for "
                                   f"model.arch {self.job.model['arch']!r} (only the shared crnn has them)")

    # --------------------------------------------------------------------------- shared helpers
    @property
    def loss_reduction(self) -> str:
        """``train.loss_reduction``, with ``backend`` replaced by :attr:`default_loss_reduction`."""
        chosen = self.job.train.get("loss_reduction", "backend")
        return self.default_loss_reduction if chosen == "backend" else chosen

    def adam_epsilon(self, step: int) -> float:
        """``train.optimizer.eps`` for step ``step`` (1-based) of a framework whose Adam adds epsilon to
        ``sqrt(v)`` and folds the bias correction into the step size (MXNet, Keras, MindSpore's CPU kernel):
        ``eps * sqrt(1 - beta2^step)``. With it their update is ``lr * m_hat / (sqrt(v_hat) + eps)``, the
        rule PyTorch and Paddle compute, so Adam is one rule in every backend (docs/recipes.md); without
        it epsilon acts 1 / sqrt(1 - beta2^t) times larger (31.6x at step 1 with beta2 0.999)."""
        spec = self.job.train["optimizer"]
        return float(spec["eps"]) * float(np.sqrt(1.0 - float(spec["betas"][1]) ** step))

    def loss_weights(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample weights ``(objective, logged)``, float32 ``(B,)``, for label ``lengths``: the loss whose
        gradient is taken is ``sum(objective * losses)`` (:attr:`loss_reduction`: 1/B for mean, 1 for sum,
        1/(B * length) for char_mean), the logged loss ``sum(logged * losses)`` (per sample, or per
        character for char_mean). Every backend reduces its per-sample CTC losses with these."""
        lengths = np.asarray(lengths, dtype=np.float32)
        batch = np.float32(max(len(lengths), 1))
        per_char = self.loss_reduction == "char_mean"
        logged = 1.0 / (batch * np.maximum(lengths, 1.0)) if per_char else np.full_like(lengths, 1.0 / batch)
        objective = np.ones_like(lengths) if self.loss_reduction == "sum" else logged
        return objective.astype(np.float32), logged.astype(np.float32)

    @property
    def seed(self) -> int:
        """The recipe's ``train.seed``."""
        return int(self.job.train["seed"])

    def seed_everything(self) -> None:
        """Seed Python's ``random``, numpy's global generator and the framework (:meth:`seed_framework`)
        from ``train.seed``; the driver calls it right after ``setup``."""
        random.seed(self.seed)
        np.random.seed(self.seed)
        self.seed_framework(self.seed)

    def epoch_seed(self, epoch: int) -> int:
        """The shuffle seed of training epoch ``epoch``: ``seed * 100003 + epoch``, so an epoch's order is
        the same after a resume."""
        return self.seed * SHUFFLE_SEED_STRIDE + epoch

    def epoch_order(self, epoch: int, n: int) -> list[int]:
        """The order of ``n`` training samples in epoch ``epoch`` (1-based): numpy's
        ``RandomState(epoch_seed(epoch)).permutation(n)`` — a function of the seed and the epoch only, so a
        resumed run replays it (PyTorch, MXNet and Paddle train in this order; TensorFlow's and
        MindSpore's shuffles are seeded with ``epoch_seed`` too)."""
        return np.random.RandomState(self.epoch_seed(epoch)).permutation(n).tolist()

    @property
    def keep_ratio(self) -> bool:
        """The shared crnn's ``model.params.keep_ratio``: resize keeping the aspect ratio and pad (false for
        architectures without the key, and for jobs written before it existed)."""
        return bool(self.job.model["params"].get("keep_ratio", False))

    @property
    def network_params(self) -> dict:
        """``model.params`` without the keys that describe preprocessing rather than the network
        (PREPROCESS_PARAMS): what a backend passes to its network's constructor."""
        return {k: v for k, v in self.job.model["params"].items() if k not in PREPROCESS_PARAMS}

    @property
    def cache_images(self) -> bool:
        """Whether decoded training images may be kept in memory (``data.cache`` resolved by the core:
        ``memory``); otherwise every batch is decoded again and memory is bounded by the batch."""
        return self.job.dataset.cache == "memory"

    @property
    def max_label_len(self) -> int:
        """The longest label of the dataset: the width of padded label tensors."""
        return self.job.dataset.max_label_len

    def threads(self) -> int:
        """CPU threads for the framework's intra-op pool in this process: ``train.threads``, which the core
        always resolves (``runner.process_threads``: the recipe's, else the cores available divided among
        the worker processes on the machine); every core for a job spec written before it did. Every
        backend sets its framework's pools from this in ``setup`` and reports the number it set in the
        ``start`` event (``threads``)."""
        return int(self.job.train["threads"] or os.cpu_count() or 1)

    def sample_ids(self, split: str) -> list[str]:
        """The sample ids of ``split`` (``train`` or ``eval``) in label-file order."""
        if split not in self._sample_ids:
            name = {"train": self.job.dataset.train, "eval": self.job.dataset.eval}[split]
            self._sample_ids[split] = [s.path for s in read_label_file(self.job.dataset_dir / name)]
        return self._sample_ids[split]

    def drop_last(self, samples: int, batch: int) -> bool:
        """Whether an epoch of ``samples`` images in batches of ``batch`` leaves out its partial last batch:
        ``train.drop_last``, unless there is not even one full batch (then the partial one trains)."""
        return bool(self.job.train["drop_last"]) and samples >= batch

    def epoch_steps(self, samples: int, batch: int) -> int:
        """Steps of an epoch of ``samples`` images in batches of ``batch``, under :meth:`drop_last`."""
        if self.drop_last(samples, batch):
            return samples // batch
        return -(-samples // batch)

    def require_gpus(self, visible: Callable[[], int], needed: int = 1, hint: str = "") -> None:
        """When the job asks for GPUs: fail unless the framework sees ``needed`` of them (``visible()`` is
        only called then). ``hint`` says what to do (e.g. point ``--python`` at a CUDA build)."""
        if self.job.gpus < 1:
            return
        seen = visible()
        if seen < needed:
            raise RuntimeError(f"--gpus asked for {needed} GPU(s) but this {self.framework} build sees "
                               f"{seen} "
                               f"({self.framework} {self.version()}{'; ' + hint if hint else ''})")


def compare_logits(what: str, expected: np.ndarray, got: np.ndarray, atol: float = 1e-3) -> None:
    """Check an exported model's logits on a fixed batch against the framework's own (same shape, all
    within ``atol``); raise a RuntimeError naming the export otherwise (recorded in metrics.json)."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        raise RuntimeError(f"{what} export gives logits of shape {got.shape}, the framework {expected.shape}")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    if not diff <= atol:
        raise RuntimeError(f"{what} export disagrees with the framework: "
                           f"max |logit diff| {diff:.3g} > {atol}")
