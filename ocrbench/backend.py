"""Backend specs and the plugin registry (entry-point group ``ocrbench.backends``).

A backend is two halves:

* a **spec** (:class:`BackendSpec`), loaded in the core environment through the entry point; it names the
  framework, the pinned requirements of its environment, its architectures (with parameter models for
  validation), export formats and its native distributed launch (an :class:`ocrbench.distributed.Launcher`).
  It must not import the framework.
* a **worker** module, run inside the backend's own environment, which implements
  :class:`ocrbench.worker.Trainer` and calls :func:`ocrbench.worker.serve`.

See docs/backends.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ocrbench.distributed import Launcher
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import SHARED_ARCHS, Section

ENTRY_POINT_GROUP = "ocrbench.backends"


@dataclass(frozen=True)
class BackendSpec:
    """What the core needs to know about a backend, without importing its framework."""

    name: str                 # the recipe's ``backend`` value, e.g. "pytorch"
    framework: str            # display name, e.g. "PyTorch"
    distribution: str         # pip distribution whose version is the framework version, e.g. "torch"
    worker: str               # module run in the backend env, e.g. "backends.pytorch.worker"
    requirements: Path        # pinned requirements.txt for its environment
    native_archs: dict[str, type[Section] | None] = field(default_factory=dict)  # arch -> params model
    shared_archs: tuple[str, ...] = ("crnn",)   # architectures from docs/architectures.md it implements
    export_formats: tuple[str, ...] = ()       # the first is its native format (recipes may say "native")
    online_data: bool = False  # can stream captchas on the fly (data.online: true)
    python: str = "3.11"      # interpreter version for its environment
    other_distributions: tuple[str, ...] = ()   # also accepted in a --python interpreter (e.g. a GPU build)
    launcher: Launcher | None = None   # native distributed launch (backends/<name>/launch.py); None: 1 device
    # why the package registries hold no CUDA build of the pinned framework for ``python`` (a backend
    # with ``requirements-cuda<major>.txt`` files has one; without either, none is known)
    cuda_unavailable: str = ""

    def __post_init__(self) -> None:
        """Refuse a launcher that is not a Launcher (such as the launcher name earlier versions took)."""
        if self.launcher is not None and not isinstance(self.launcher, Launcher):
            raise OcrbenchError(f"backend {self.name!r}: BackendSpec.launcher is {self.launcher!r}, not an "
                                "ocrbench.distributed.Launcher",
                                hint="give an instance of the backend's Launcher subclass, or None for a "
                                     "backend that trains on one device only (docs/backends.md, "
                                     "'Distributed launch')")

    @property
    def distributions(self) -> tuple[str, ...]:
        return (self.distribution, *self.other_distributions)

    @property
    def archs(self) -> dict[str, type[Section] | None]:
        """Every architecture this backend accepts, with its parameter model."""
        shared = {name: SHARED_ARCHS[name] for name in self.shared_archs}
        return {**shared, **self.native_archs}

    @property
    def cuda_requirements(self) -> dict[int, Path]:
        """CUDA major version -> ``requirements-cuda<major>.txt`` beside ``requirements``: the lines that
        replace the ``distribution`` pin of requirements.txt in that CUDA variant (ocrbench.envs)."""
        found = {}
        for path in self.requirements.parent.glob("requirements-cuda*.txt"):
            major = path.stem.removeprefix("requirements-cuda")
            if major.isdigit():
                found[int(major)] = path
        return dict(sorted(found.items()))

    @property
    def smoke_recipe(self) -> Path:
        """The backend's CI smoke recipe, ``smoke.yml`` beside its requirements (``ocrbench smoke``)."""
        return self.requirements.with_name("smoke.yml")

    @property
    def package_root(self) -> Path:
        """Directory of the worker's top-level package (given to the worker bootstrap)."""
        top = self.worker.split(".")[0]
        return Path(_find_package_dir(top))


def _find_package_dir(top: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise OcrbenchError(f"cannot locate the package {top!r} of a backend worker")
    return list(spec.submodule_search_locations)[0]


def load_backends() -> dict[str, BackendSpec]:
    """Every registered backend, by name. A broken plugin is reported, not ignored."""
    found: dict[str, BackendSpec] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = entry.load()
        except Exception as exc:  # a third-party plugin may fail in any way; name it and go on
            raise OcrbenchError(f"backend plugin {entry.name!r} ({entry.value}) failed to load: "
                                f"{exc}") from None
        if not isinstance(spec, BackendSpec):
            raise OcrbenchError(f"backend plugin {entry.name!r} ({entry.value}) is not a BackendSpec")
        found[spec.name] = spec
    if not found:
        raise OcrbenchError("no backends are registered",
                            hint="install ocrbench with pip (pip install -e .) so its entry points exist")
    return dict(sorted(found.items()))


def get_backend(name: str) -> BackendSpec:
    """The backend called ``name``, or an error listing the known ones."""
    backends = load_backends()
    if name not in backends:
        import difflib

        close = difflib.get_close_matches(name, list(backends), n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        raise OcrbenchError(f"unknown backend {name!r} (known: {', '.join(backends)})", hint=hint)
    return backends[name]
