"""The job spec, ``job.json``: the file contract between the core and a backend worker.

The core builds a :class:`Job` (``ocrbench.runner.job_spec``) and writes it with :meth:`Job.to_json`; the
worker reads it back with :meth:`Job.read`. Both sides use these frozen dataclasses, so every key of the
file, its type and its default is declared here, once (docs/backends.md, "The job spec"). Reading is
strict: a file of another schema, an unknown key, a missing key or a value of the wrong type is an error
naming the key.

* :class:`Job` — the run: where it lives, what it trains on, the recipe's ``model`` / ``train`` / ``eval``
  / ``export`` sections (resolved; their keys and defaults are the recipe's, docs/recipes.md), the GPUs on
  this node, and what the worker is asked to do (``stage``, ``resume``);
* :class:`Dataset` — the prepared canonical dataset and the backend's native copy of it;
* :class:`Distributed` — how this process joins the run (world size, launcher, rank variables, the batch
  and learning-rate arithmetic), from ``ocrbench.distributed``'s ``Launch.job``.

Standard library only (imported by workers, inside every backend's environment).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocrbench.errors import OcrbenchError

JOB_SCHEMA = "ocrbench.job/2"
# train (then export), or ``ocrbench export``: the last checkpoint exported again
# equivalence: one probe batch through the network (ocrbench.equivalence), nothing trained or exported
# predict: the last checkpoint on the dataset's eval split, decoded with confidences (ocrbench predict)
STAGES = ("train", "export", "equivalence", "predict")
CACHE_POLICIES = ("memory", "none")   # data.cache as resolved by the core (ocrbench.plan.resolve_cache)
DEFAULT_PATHS = {"events": "events.jsonl", "native_log": "native.log", "checkpoints": "checkpoints",
                 "predictions": "predictions", "exports": "exports"}


class JobSpecError(OcrbenchError):
    """A job spec that cannot be read: the message names the file (or key) and what is wrong."""


@dataclass(frozen=True, kw_only=True)
class Distributed:
    """How this process takes part in the run (docs/distributed.md). One process on one device by default.

    ``world_size`` counts data-parallel replicas (devices) over all nodes; ``processes`` the worker
    processes over all nodes; ``local_replicas`` the devices this process drives itself (TensorFlow's
    MirroredStrategy, MXNet's context list; 1 when the launcher starts one process per device).
    ``rank_env`` / ``local_rank_env`` name the variables the launcher sets to this process's rank and its
    index on the node (None: rank 0). ``engine``, ``comm``, ``kvstore`` and ``strategy`` say which
    native engine to join; the last five keys are the recipe's batch / learning-rate rules applied
    (``train.batch_size`` and ``train.optimizer.lr`` of the job already hold the per-device results).
    """

    world_size: int = 1
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1
    device: str = "cpu"                  # cpu | gpu
    launcher: str = "python"
    rank_env: str | None = None
    local_rank_env: str | None = None
    local_replicas: int = 1
    processes: int = 1
    engine: str | None = None
    comm: str | None = None              # torchrun / paddle / msrun: nccl, gloo, mccl
    kvstore: str | None = None           # MXNet: device, local, dist_sync, dist_device_sync
    strategy: str | None = None          # TensorFlow: MirroredStrategy, MultiWorkerMirroredStrategy
    batch_scope: str = "per_device"      # per_device | global
    per_device_batch: int | None = None
    global_batch: int | None = None
    lr_scaling: str = "none"             # none | linear | sqrt
    base_lr: float | None = None
    lr: float | None = None

    def __post_init__(self):
        if self.device not in ("cpu", "gpu"):
            raise JobSpecError(f"job spec: distributed.device: {self.device!r} is not cpu or gpu")
        for name in ("world_size", "nnodes", "nproc_per_node", "local_replicas", "processes"):
            if getattr(self, name) < 1:
                raise JobSpecError(f"job spec: distributed.{name}: {getattr(self, name)} is not a positive "
                                   "count")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "Distributed":
        """From the job file's ``distributed`` object, or from ``ocrbench.distributed.Launch.job`` (the one
        place where the core's launch dict becomes the typed spec)."""
        return _build(cls, data, "distributed")


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """The prepared canonical dataset (``dir``: images, ``train.txt``, ``eval.txt``, ``charset.txt``) and
    ``native_dir``, where the backend keeps its native copy (shared by every run on the same data)."""

    dir: Path
    native_dir: Path
    fingerprint: str
    charset: str
    max_label_len: int                   # the longest label over both splits
    train: str = "train.txt"
    eval: str = "eval.txt"
    online: dict | None = None           # the captcha data settings when training renders them on the fly
    cache: str = "none"                  # memory: keep decoded training images; none: decode every batch

    def __post_init__(self):
        if self.cache not in CACHE_POLICIES:
            raise JobSpecError(f"job spec: dataset.cache: {self.cache!r} is not one of "
                               f"{', '.join(CACHE_POLICIES)}")

    def to_json(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


@dataclass(frozen=True, kw_only=True)
class Job:
    """One worker's job. ``model``, ``train``, ``eval`` and ``export`` are the recipe's resolved sections,
    except that ``train.batch_size`` is the per-device batch and ``train.optimizer.lr`` the scaled learning
    rate (the recipe's own values are in ``distributed``). ``gpus``: GPUs this node trains on (0 = CPU)."""

    run_id: str
    run_dir: Path
    backend: str
    dataset: Dataset
    model: dict
    train: dict
    eval: dict
    export: dict
    gpus: int = 0
    distributed: Distributed = field(default_factory=Distributed)
    stage: str = "train"
    resume: bool = False
    recipe_path: str | None = None
    init_weights: Path | None = None     # neutral weights (ocrbench.weights) to start from: model.init
    paths: dict = field(default_factory=lambda: dict(DEFAULT_PATHS))

    def __post_init__(self):
        if self.stage not in STAGES:
            raise JobSpecError(f"job spec: stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        missing = sorted(set(DEFAULT_PATHS) - set(self.paths))
        if missing:
            raise JobSpecError(f"job spec: paths: missing {', '.join(missing)}")

    # ------------------------------------------------------------------------------------ the file
    def to_json(self) -> dict[str, Any]:
        """The ``job.json`` document (``schema`` first)."""
        return {"schema": JOB_SCHEMA, **_plain(dataclasses.asdict(self))}

    @classmethod
    def from_json(cls, data: Any, origin: str = "job spec") -> "Job":
        if not isinstance(data, dict):
            raise JobSpecError(f"{origin}: not a job spec (the top level is not an object)")
        schema = data.get("schema")
        if schema != JOB_SCHEMA:
            raise JobSpecError(f"{origin}: unsupported job spec {schema!r}; this ocrbench reads {JOB_SCHEMA}",
                               hint="a run directory written by another ocrbench version: start a new run")
        try:
            return _build(cls, {k: v for k, v in data.items() if k != "schema"}, "")
        except JobSpecError as exc:
            raise JobSpecError(f"{origin}: {exc.message.removeprefix('job spec: ')}", exc.hint) from None

    @classmethod
    def read(cls, path: Path) -> "Job":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JobSpecError(f"{path}: cannot read the job spec ({exc})") from None
        return cls.from_json(data, str(path))

    # -------------------------------------------------------------------------------- accessors
    @property
    def dataset_dir(self) -> Path:
        return self.dataset.dir

    @property
    def native_dir(self) -> Path:
        """Where the backend keeps its native copy of the dataset (shared by runs on the same data)."""
        return self.dataset.native_dir

    @property
    def charset(self):
        """The charset as an ``ocrbench.codec.Charset`` (class 0 is the blank, charset[i] class i + 1)."""
        from ocrbench.codec import Charset

        return Charset(self.dataset.charset)

    @property
    def world_size(self) -> int:
        """Data-parallel replicas over all nodes (1 = one device)."""
        return self.distributed.world_size

    @property
    def local_replicas(self) -> int:
        return self.distributed.local_replicas

    @property
    def processes(self) -> int:
        """Worker processes of the run over all nodes (> 1: this process joins a launcher's group)."""
        return self.distributed.processes

    @property
    def process_batch(self) -> int:
        """Images this process loads per step: the per-device batch times its local replicas."""
        return int(self.train["batch_size"]) * self.local_replicas

    @property
    def rank(self) -> int:
        """This process's rank among the worker processes (0 writes the results), from the variable the
        launcher sets (``distributed.rank_env``); 0 without one."""
        name = self.distributed.rank_env
        return int(os.environ.get(name, "0")) if name else 0

    @property
    def local_rank(self) -> int:
        """This process's index on its node (which GPU it uses)."""
        name = self.distributed.local_rank_env
        return int(os.environ.get(name, "0")) if name else 0

    def path(self, name: str) -> Path:
        """A run-directory path from the ``paths`` table (events, predictions, checkpoints, ...)."""
        return self.run_dir / self.paths[name]


# ------------------------------------------------------------------------------------------ reading
def _plain(value: Any) -> Any:
    """JSON-ready: paths as strings, containers copied."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from JSON data: unknown and missing keys and wrongly typed
    values are errors naming the key (``where`` is the key path so far)."""
    label = where or "(top level)"
    if not isinstance(data, dict):
        raise JobSpecError(f"job spec: {label}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise JobSpecError(f"job spec: {label}: unknown key(s) {', '.join(unknown)} "
                           f"(known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise JobSpecError(f"job spec: {key}: required key is missing")
            continue
        values[name] = _convert(hints[name], data[name], key)
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise JobSpecError(f"job spec: {key}: must not be null")
    for option in options:
        if dataclasses.is_dataclass(option):
            return _build(option, value, key)
        if option is Path and isinstance(value, str):
            return Path(value)
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool, dict) and isinstance(value, option):
            return value
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    raise JobSpecError(f"job spec: {key}: expected {wanted}, got {value!r}")
