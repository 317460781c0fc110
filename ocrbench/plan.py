"""A recipe bound to its backend, checked before anything starts: architecture and its parameters,
export formats, online data, and whether the backend can train on the requested devices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocrbench import ctc_feasibility, distributed, hardware
from ocrbench.backend import BackendSpec, get_backend
from ocrbench.errors import OcrbenchError
from ocrbench.recipe import Recipe, validate_arch_params, validate_data


WEIGHTS_ARCHS = ("crnn",)   # architectures with a neutral weights layout (ocrbench.weights)


@dataclass
class Plan:
    """A validated recipe bound to its backend."""

    recipe: Recipe
    resolved: dict
    spec: BackendSpec
    recipe_path: Path | None
    base_dir: Path

    def time_steps(self) -> int:
        """T, the model's CTC output steps per image (its architecture's ``time_steps``)."""
        schema = self.spec.archs[self.recipe.model.arch]
        return schema.model_validate(self.resolved["model"]["params"]).time_steps()

    def check_ctc(self, dataset_dir: Path) -> ctc_feasibility.Feasibility:
        """Check every label of the prepared dataset against T (``ocrbench.ctc_feasibility``)."""
        arch, params = self.recipe.model.arch, self.resolved["model"]["params"]
        width = f"input_width {params['input_width']}, " if "input_width" in params else ""
        return ctc_feasibility.check(dataset_dir, self.time_steps(), self.recipe.data.on_bad_sample,
                                     f"model.arch {arch}: {width}T = {self.time_steps()}")


def plan(recipe: Recipe, recipe_path: Path | None) -> Plan:
    """Check the recipe against its backend: architecture, its parameters, export formats."""
    origin = str(recipe_path) if recipe_path else "recipe"
    spec = get_backend(recipe.backend)
    archs = spec.archs
    arch = recipe.model.arch
    if arch not in archs:
        raise OcrbenchError(f"{origin}: model.arch: backend {spec.name!r} has no architecture {arch!r} "
                            f"(it has: {', '.join(archs)})")
    params = validate_arch_params(arch, recipe.model.params, archs[arch], origin)
    formats = export_formats(recipe.export.formats, spec)
    unsupported = [f for f in formats if f not in spec.export_formats]
    if unsupported:
        raise OcrbenchError(f"{origin}: export.formats: {spec.name} cannot export {unsupported} "
                            f"(it can: {', '.join(spec.export_formats)}, "
                            f"or 'native' for {spec.export_formats[0]})")
    if arch not in WEIGHTS_ARCHS and "weights" in formats:
        raise OcrbenchError(f"{origin}: export.formats: 'weights' (neutral weights) exists for the shared "
                            f"{', '.join(WEIGHTS_ARCHS)} only, not model.arch {arch!r}")
    if arch not in WEIGHTS_ARCHS and recipe.model.init != "framework":
        raise OcrbenchError(f"{origin}: model.init: only the shared {', '.join(WEIGHTS_ARCHS)} can start "
                            f"from neutral weights, not model.arch {arch!r}",
                            hint="use model.init: framework for a backend's own architecture")
    if getattr(recipe.data, "online", False) and not spec.online_data:
        raise OcrbenchError(f"{origin}: data.online: backend {spec.name!r} cannot stream captchas on the fly",
                            hint="set data.online: false (train on the prepared dataset)")
    resolved = recipe.resolved()
    resolved["model"]["params"] = params
    resolved["export"]["formats"] = formats
    recipe = validate_data(resolved, origin)  # round-trip: the resolved recipe is itself a valid recipe
    base_dir = recipe_path.parent if recipe_path else Path.cwd()
    return Plan(recipe, recipe.resolved(), spec, recipe_path, base_dir)


CACHE_LIMIT_BYTES = 512 * 2**20   # data.cache: auto keeps decoded images in memory up to this size


def resolve_cache(policy: str, train_images: int, params: dict) -> str:
    """``data.cache`` for the workers: ``memory`` or ``none``. ``auto`` estimates the decoded train split
    as ``train_images x height x input_width x 3`` bytes (uint8, up to 3 channels; height 32 unless the
    architecture has ``input_height``) and keeps it in memory only under CACHE_LIMIT_BYTES."""
    if policy != "auto":
        return policy
    height, width = params.get("input_height", 32), params.get("input_width", 100)
    return "memory" if train_images * height * width * 3 <= CACHE_LIMIT_BYTES else "none"


def export_formats(requested: list[str], spec: BackendSpec) -> list[str]:
    """The recipe's export formats with ``native`` replaced by the backend's own format (its first one,
    e.g. torchscript, mxnet, savedmodel, mindir, paddle), so one recipe can ask every backend for its
    native export and ONNX."""
    formats: list[str] = []
    for fmt in requested:
        concrete = spec.export_formats[0] if fmt == "native" and spec.export_formats else fmt
        if concrete not in formats:
            formats.append(concrete)
    return formats


def check_topology(t: distributed.Topology, spec: BackendSpec, check_visible: bool = True) -> None:
    """Fail before anything starts if the backend cannot train this way, or (``check_visible``) fewer
    GPUs are visible here than requested."""
    if t.distributed:
        check_launcher(t, spec)
    if check_visible:
        visible = hardware.gpus()
        if t.gpus > len(visible):
            raise OcrbenchError(f"--gpus {t.gpus}: only {len(visible)} GPU(s) visible on this machine",
                                hint="use --gpus 0 to run on the CPU, or check nvidia-smi / "
                                     "CUDA_VISIBLE_DEVICES")


def check_launcher(t: distributed.Topology, spec: BackendSpec) -> None:
    """Refuse a distributed topology (world size > 1) the backend's launcher cannot start: none at all,
    CPU replicas without CPU collectives, or what the launcher's own ``check`` refuses."""
    if spec.launcher is None:
        raise OcrbenchError(f"backend {spec.name!r} trains on one device only "
                            "(it has no distributed launcher)",
                            hint="use --gpus 1 or --gpus 0")
    if t.device == "cpu" and not spec.launcher.cpu_data_parallel:
        raise OcrbenchError(f"--nproc {t.nproc}: {spec.framework} ({spec.name}) cannot train "
                            "data-parallel on CPUs here (its collectives need GPUs)",
                            hint="use --gpus N on a machine with GPUs, or --nproc 1")
    spec.launcher.check(t)
