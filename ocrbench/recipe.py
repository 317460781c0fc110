"""The recipe: one YAML format for every backend, validated with clear, key-path-naming errors.

Every key and its default is documented in docs/recipes.md. Relative paths inside a recipe are resolved
against the recipe file's directory. Loading uses ``yaml.safe_load`` only.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ocrbench.errors import OcrbenchError


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------------- model
InputWidth = Annotated[int, Field(ge=16, le=4096, multiple_of=4,
                                  description="image width in pixels after resizing (height is fixed at 32)")]
ConvChannels = Annotated[list[Annotated[int, Field(ge=1, le=4096)]],
                         Field(min_length=7, max_length=7,
                               description="output channels of the 7 convolutions")]
REFERENCE_CHANNELS = [64, 128, 256, 256, 512, 512, 512]  # crnn's and ShadowNet's published widths


class ArchParams(Section):
    """Base of every architecture's ``model.params`` model (shared and backend-native alike)."""

    def time_steps(self) -> int:
        """T, the number of CTC output steps for one image: a label needs ``len + adjacent repeats`` of
        them (``ocrbench.ctc_feasibility``). Every architecture states its own."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many CTC steps it outputs")


class CrnnParams(ArchParams):
    """Parameters of the shared ``crnn`` architecture (docs/architectures.md).

    Defaults are the reference CRNN (crnn.pytorch / CRNN_Chinese_Characters_Rec): 8,317,963 parameters for
    11 classes. Input is gray, ``32 x input_width`` pixels; the output has ``input_width / 4 + 1`` steps.
    """

    input_width: InputWidth = 100
    channels: ConvChannels = Field(default_factory=lambda: list(REFERENCE_CHANNELS))
    hidden: int = Field(256, ge=1, le=4096, description="LSTM hidden units per direction")
    keep_ratio: bool = Field(False, description="resize to height 32 keeping the aspect ratio (width "
                             "ceil(32 w / h), at most input_width) and pad the normalised image on the "
                             "right with zeros to input_width (PaddleOCR's rec resize); false: stretch to "
                             "32 x input_width")

    def time_steps(self) -> int:
        """``input_width / 4 + 1``: the conv stack's width strides total 4, and its last conv (kernel 2,
        no padding) adds one column."""
        return self.input_width // 4 + 1

    def param_count(self, classes: int) -> int:
        """Trainable parameters of this instance (the formula of docs/architectures.md).

        Convolutions have biases; BatchNorm (after convs 2, 4, 6) counts gamma and beta; each LSTM
        direction has input and recurrent weights and two bias vectors (4 x hidden each).
        """
        from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS

        total, previous = 0, 1
        for index, (out, kernel) in enumerate(zip(self.channels, KERNELS)):
            total += kernel * kernel * previous * out + out
            total += 2 * out if index in BATCH_NORM_AFTER else 0
            previous = out

        def bilstm(inputs: int, hidden: int) -> int:
            return 2 * (4 * hidden * (inputs + hidden) + 8 * hidden)

        h = self.hidden
        total += bilstm(previous, h) + (2 * h * h + h)
        total += bilstm(h, h) + (2 * h * classes + classes)
        return total


def column_lstm_param_count(inputs: int, hidden: int, layers: int, classes: int) -> int:
    """Parameters of ``layers`` stacked unidirectional LSTMs (input and recurrent weights, two bias
    vectors each, as cuDNN / MXNet / MindSpore) followed by a Dense layer with bias to ``classes``: the
    column-reading networks (MXNet ``lstm_ctc``, MindSpore ``warpctc``)."""
    total = 0
    for _ in range(layers):
        total += 4 * hidden * (inputs + hidden) + 8 * hidden
        inputs = hidden
    return total + hidden * classes + classes


SHARED_ARCHS: dict[str, type[ArchParams]] = {"crnn": CrnnParams}


class InitFrom(Section):
    """``model.init: {from: PATH}``: start from a neutral weights file (``ocrbench.weights``) or from the
    weights export of a finished run (``RUN/exports/weights/model.safetensors``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              serialize_by_alias=True)

    from_: str = Field(alias="from", min_length=1, description="a model.safetensors file or a run directory; "
                       "relative to the recipe's directory")


class ModelSection(Section):
    arch: str = "crnn"
    params: dict[str, Any] = Field(default_factory=dict)
    init: Literal["framework", "shared"] | InitFrom = Field(
        "framework", description="framework: each framework's own initialiser; shared: weights drawn once "
        "by the core from train.seed (ocrbench.weights.INIT_SCHEME) and loaded by every backend; "
        "{from: PATH}: neutral weights of the shared crnn (a file or a run directory)")


# ------------------------------------------------------------------------------------------------ data
class _DataCommon(Section):
    on_bad_sample: Literal["error", "skip"] = "error"
    workers: int | None = Field(None, ge=1, le=256,
                                description="processes for preparation; default all cores")
    cache: Literal["auto", "memory", "none"] = Field(
        "auto", description="memory: workers keep every decoded training image in memory after its first "
        "use; none: they decode each batch again (memory bounded by the batch); auto: memory when the "
        "decoded train split fits in 512 MiB (ocrbench.plan.resolve_cache)")


class CaptchaData(_DataCommon):
    """Synthetic captchas rendered by the ``captcha`` package, made deterministic by ``seed``."""

    source: Literal["captcha"]
    width: int = Field(160, ge=16, le=2048)
    height: int = Field(60, ge=16, le=1024)
    min_len: int = Field(4, ge=1, le=64)
    max_len: int = Field(4, ge=1, le=64)
    charset: str = Field("0123456789", min_length=1)
    fonts: list[str] = Field(default_factory=list, description="TrueType files; empty = DroidSansMono")
    font_sizes: list[Annotated[int, Field(ge=4, le=512)]] = Field([42, 50, 56], min_length=1)
    train_size: int = Field(10000, ge=1, le=10_000_000)
    eval_size: int = Field(1000, ge=1, le=10_000_000)
    seed: int = Field(0, ge=0)
    noise: bool = Field(True, description="false: clean text instead of a captcha — upright, dark on "
                                          "light, no rotation, warping, overlap, noise or smoothing "
                                          "(the smoke recipes' learnable task)")
    online: bool = Field(False, description="render fresh training captchas on the fly in the worker "
                                            "every epoch (backends that support it); eval stays fixed")

    @model_validator(mode="after")
    def _lengths(self) -> "CaptchaData":
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) is larger than max_len ({self.max_len})")
        return self

    @field_validator("charset")
    @classmethod
    def _unique(cls, value: str) -> str:
        return _check_unique(value)


class _DictionaryKeys(Section):
    """Where the charset comes from: ``charset`` (the characters themselves) or ``charset_file`` (a
    dictionary file, read by ``ocrbench.dictionaries``: one character per line, as PaddleOCR's
    ``ppocr_keys_v1.txt``; a first line ``blank`` is CRNN_Chinese's ``char_std_5990.txt`` convention)."""

    charset: str | None = Field(None, description="characters; default: every character in the labels")
    charset_file: str | None = Field(None, description="dictionary file, one character per line")
    charset_encoding: str = Field("utf-8", min_length=1,
                                  description="the dictionary file's encoding: utf-8, gbk "
                                              "(char_std_5990.txt), "
                                              "gb18030, ... or auto (UTF-8, then GB18030)")
    use_space_char: bool = Field(False, description="add the space as the last class (PaddleOCR's "
                                                    "use_space_char)")

    @field_validator("charset")
    @classmethod
    def _unique(cls, value: str | None) -> str | None:
        return None if value is None else _check_unique(value)

    @model_validator(mode="after")
    def _one_charset(self):
        if self.charset and self.charset_file:
            raise ValueError("set either charset or charset_file, not both")
        return self


class _ImportedData(_DataCommon, _DictionaryKeys):
    pass


class AugmentSection(Section):
    """Light, seeded augmentation of synthetic text lines; each sample draws its own values uniformly
    from these ranges (gray levels 0-255, pixels, degrees)."""

    background: tuple[Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)]] = (170, 255)
    ink: tuple[Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)]] = (0, 90)
    noise: float = Field(6.0, ge=0, le=64,
                         description="largest std of the Gaussian pixel noise (gray levels)")
    blur: float = Field(0.3, ge=0, le=1, description="probability of a Gaussian blur")
    blur_radius: float = Field(1.0, ge=0, le=8, description="largest blur radius (pixels)")
    rotate: float = Field(2.0, ge=0, le=30, description="largest rotation either way (degrees)")
    spacing: int = Field(2, ge=0, le=32, description="largest extra space between characters (pixels)")
    margin: tuple[Annotated[int, Field(ge=0, le=256)], Annotated[int, Field(ge=0, le=256)]] = (2, 12)

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentSection":
        for name in ("background", "ink", "margin"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: the range [{low}, {high}] is reversed")
        return self


class TextLinesData(_DataCommon, _DictionaryKeys):
    """Synthetic text lines drawn by ``ocrbench.textlines``, deterministic in ``seed``: characters drawn
    from the charset (Chinese lines), or words from a word list (English words), in the given fonts."""

    source: Literal["textlines"]
    words_file: str | None = Field(None, description="word list, one word per line (UTF-8); words with "
                                   "characters outside the charset or lengths outside the range are left out")
    wordlist: Literal["english"] | None = Field(None, description="english: the english-words package's "
                                                "web2 list (lower-case, letters only)")
    min_len: int = Field(2, ge=1, le=256)
    max_len: int = Field(10, ge=1, le=256)
    height: int = Field(32, ge=16, le=512, description="image height in pixels; the width follows the text")
    fonts: list[str] = Field(default_factory=lambda: ["noto-sans-sc"], min_length=1,
                             description="built-in font names (docs/recipes.md) or font file paths")
    font_sizes: list[Annotated[int, Field(ge=4, le=512)]] = Field([22, 24, 26], min_length=1,
                                                                   description="pixels per em")
    augment: AugmentSection | None = Field(default_factory=AugmentSection,
                                           description="null: no augmentation (dark on light, upright)")
    train_size: int = Field(10000, ge=1, le=10_000_000)
    eval_size: int = Field(1000, ge=1, le=10_000_000)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "TextLinesData":
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) is larger than max_len ({self.max_len})")
        if self.words_file and self.wordlist:
            raise ValueError("set either words_file or wordlist, not both")
        if not (self.charset or self.charset_file):
            raise ValueError("a charset is needed: set charset or charset_file")
        too_big = [s for s in self.font_sizes if s > self.height]
        if too_big:
            raise ValueError(f"font_sizes {too_big} are larger than the image height ({self.height} px)")
        return self


class LabelFileData(_ImportedData):
    """Your images plus ``path<TAB>text`` label files (PaddleOCR SimpleDataSet / DTRB gt format)."""

    source: Literal["labelfile"]
    root: str = Field(description="directory the label file paths are relative to")
    train: str
    eval: str
    delimiter: str = Field("\t", min_length=1)


class LmdbData(_ImportedData):
    """LMDB databases in the DTRB / crnn.pytorch layout (1-based ``image-%09d`` / ``label-%09d``)."""

    source: Literal["lmdb"]
    train: str
    eval: str


class FilenamesData(_ImportedData):
    """Image directories whose file names carry the label, as MindSpore WarpCTC's ``data/train`` and
    ``data/test``: ``<index>-<text>.png`` (the label is everything after the first ``-``)."""

    source: Literal["filenames"]
    train: str = Field(description="directory of training images (WarpCTC: data/train)")
    eval: str = Field(description="directory of evaluation images (WarpCTC: data/test)")
    separator: str = Field("-", min_length=1, description="the label follows the first separator in the name")


class CsvData(_ImportedData):
    """Competition-style CSV label files (``name,value`` columns: image file name, text) and a folder of
    images. Such files are often GB2312/GBK-encoded: ``encoding: auto`` tries UTF-8, then GB18030 (a
    superset of GB2312 and GBK)."""

    source: Literal["csv"]
    root: str = Field(description="directory the image names are relative to")
    train: str
    eval: str
    name_column: str = Field("name", min_length=1)
    text_column: str = Field("value", min_length=1)
    encoding: str = Field("auto", min_length=1,
                          description="auto, or a Python codec name (gb2312, gbk, utf-8, ...)")


DataSection = Annotated[Union[CaptchaData, TextLinesData, LabelFileData, LmdbData, FilenamesData, CsvData],
                        Field(discriminator="source")]



def _data_sources() -> dict[str, type[Section]]:
    """``data.source`` value -> its section model, read from the ``DataSection`` union itself."""
    union = get_args(DataSection)[0]
    return {get_args(model.model_fields["source"].annotation)[0]: model for model in get_args(union)}


DATA_SOURCES = _data_sources()


def _check_unique(chars: str) -> str:
    dupes = sorted({c for c in chars if chars.count(c) > 1})
    if dupes:
        raise ValueError(f"charset repeats {''.join(dupes)!r}")
    return chars


# ----------------------------------------------------------------------------------------------- train
class OptimizerSection(Section):
    name: Literal["adam", "sgd", "rmsprop", "adadelta"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and rmsprop only")
    weight_decay: float = Field(0.0, ge=0, le=1)
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam only")
    eps: float = Field(1e-8, gt=0, le=1, description="adam only: the term added to the denominator "
                       "(every backend passes it to its framework's Adam; 1e-8 is the usual default)")


class ScheduleSection(Section):
    """Learning-rate schedule, evaluated per optimizer step by ocrbench.schedule (shared by backends)."""

    name: Literal["constant", "multistep", "cosine", "poly"] = "constant"
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, description="epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)
    power: float = Field(1.0, gt=0)
    end_lr: float = Field(0.0, ge=0)


class TrainSection(Section):
    epochs: int = Field(10, ge=0, le=100_000, description="0: no training — the initial weights (e.g. "
                        "model.init from another framework's run) are evaluated and exported")
    batch_size: int = Field(64, ge=1, le=65_536)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    lr_schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    seed: int = Field(0, ge=0)
    target_acc: float | None = Field(None, gt=0, le=1, description="sequence accuracy for time-to-target")
    stop_at_target: bool = Field(False, description="end training at the first evaluation whose sequence "
                                 "accuracy reaches target_acc (then checkpoint, final predictions and "
                                 "exports as after the last epoch); one worker process only")
    grad_clip: float | None = Field(None, gt=0, description="global gradient-norm clip")
    drop_last: bool = Field(True, description="leave out each epoch's partial last batch (every backend "
                            "alike); a split smaller than one batch still trains on its one partial batch")
    loader_workers: int = Field(0, ge=0, le=64)
    log_every: int = Field(20, ge=1)
    eval_every: int = Field(1, ge=1, description="epochs between evaluations")
    eval_every_steps: int = Field(0, ge=0, description="optimizer steps between evaluations inside an "
                                  "epoch (0: evaluate at epochs' ends only, as eval_every says); each is a "
                                  "point of the accuracy curve and may end the run with stop_at_target")
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps between checkpoints inside an "
                                  "epoch (0: one checkpoint at each epoch's end only); a killed run resumed "
                                  "with --resume loses at most this many steps")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads per worker process; default "
                                "all cores, divided among the processes of a data-parallel CPU run")
    batch_scope: Literal["per_device", "global"] = Field(
        "per_device", description="per_device: batch_size images on every device (global batch = "
        "batch_size x world size); global: batch_size images per step over all devices (split evenly; "
        "must divide)")
    loss_reduction: Literal["backend", "mean", "sum", "char_mean"] = Field(
        "backend", description="how a batch's per-sample CTC losses become the loss whose gradient is "
        "taken, in every backend alike: mean, sum, or char_mean (each divided by its label length, then "
        "averaged); backend: the backend's reference choice (docs/backends.md)")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="learning rate x world size (linear, as MindSpore WarpCTC's device_num), x its "
        "square root (sqrt), or unchanged (none); applies when training on several devices")

    @model_validator(mode="after")
    def _stop_needs_a_target(self) -> "TrainSection":
        if self.stop_at_target and self.target_acc is None:
            raise ValueError("train.stop_at_target needs train.target_acc (the sequence accuracy to stop at)")
        return self


# ------------------------------------------------------------------------------------------------ eval
class ProtocolSection(Section):
    """How predictions and labels are normalised before scoring (written into every result)."""

    case: Literal["sensitive", "lower", "upper"] = "sensitive"
    spaces: Literal["keep", "strip", "remove"] = "keep"
    charset_filter: bool = Field(False, description="drop characters outside the charset before scoring")


class EvalSection(Section):
    protocol: ProtocolSection = Field(default_factory=ProtocolSection)
    batch_size: int = Field(256, ge=1, le=65_536)


class ExportSection(Section):
    formats: list[str] = Field(default_factory=list)
    onnx_opset: int = Field(18, ge=7, le=30)


class RuntimeSection(Section):
    gpus: int = Field(0, ge=0, le=1024)
    python: dict[str, str] = Field(default_factory=dict,
                                   description="backend name -> interpreter to use instead of its env")


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    backend: str = "pytorch"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    export: ExportSection = Field(default_factory=ExportSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in, as plain JSON data."""
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """sha256 over everything that defines the experiment (``runtime`` excluded)."""
        data = self.resolved()
        data.pop("runtime", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------- loading & errors
def load_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe file with ``yaml.safe_load``; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OcrbenchError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OcrbenchError(f"{path}: cannot read recipe ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise OcrbenchError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise OcrbenchError(f"{path}: a recipe must be a mapping of keys (name, backend, model, data, ...)")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override in place; the value is parsed as YAML (``3``, ``[1,2]``)."""
    if "=" not in assignment:
        raise OcrbenchError(f"--set {assignment!r}: expected key.path=value (for example train.epochs=3)")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise OcrbenchError(f"--set {assignment!r}: empty key in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise OcrbenchError(f"--set {assignment!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                backend: str | None = None) -> tuple[Recipe, Path]:
    """Load, override and validate a recipe. Returns the recipe and its absolute path."""
    path = Path(path).expanduser().resolve()
    data = load_yaml(path)
    for assignment in overrides or []:
        apply_override(data, assignment)
    if backend:
        data["backend"] = backend
    return validate_data(data, str(path)), path


def validate_data(data: dict[str, Any], origin: str) -> Recipe:
    """Validate raw recipe data; every problem is reported with its key path, no traceback."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        lines = [format_error(err, data) for err in exc.errors()]
        raise OcrbenchError(f"{origin}: invalid recipe\n" + "\n".join(f"  - {ln}" for ln in lines)) from None


def format_error(err: dict[str, Any], data: dict[str, Any]) -> str:
    """One pydantic error as ``key.path: problem`` with a suggestion for misspelt keys."""
    loc = _clean_loc(err["loc"], data)
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1], data)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
        allowed = f" (allowed here: {', '.join(sorted(known))})" if known and not close else ""
        return f"{key}: unknown key{hint}{allowed}"
    if kind == "missing":
        return f"{key}: required key is missing"
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    message = err["msg"].removeprefix("Value error, ")
    return f"{key}: {message}{shown}"


def _clean_loc(loc: tuple, data: dict[str, Any]) -> tuple:
    """Drop pydantic's union tag (``data.captcha.width`` -> ``data.width``)."""
    if len(loc) >= 2 and loc[0] == "data" and isinstance(data.get("data"), dict):
        if loc[1] == data["data"].get("source"):
            return (loc[0], *loc[2:])
    return tuple(loc)


def _known_keys(loc: tuple, data: dict[str, Any]) -> list[str]:
    """Field names valid at ``loc`` in the recipe model (for 'did you mean')."""
    model: Any = Recipe
    for part in loc:
        if part == "data" and model is Recipe:
            source = data.get("data", {}).get("source") if isinstance(data.get("data"), dict) else None
            model = DATA_SOURCES.get(source)
            if model is None:
                return []
            continue
        field = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(getattr(model, "model_fields", {}))


def validate_arch_params(arch: str, params: dict[str, Any], schema: type[Section] | None,
                         origin: str) -> dict[str, Any]:
    """Validate ``model.params`` against the architecture's parameter model; returns them with defaults."""
    if schema is None:
        if params:
            raise OcrbenchError(f"{origin}: model.params: architecture {arch!r} takes no parameters")
        return {}
    try:
        return schema.model_validate(params).model_dump(mode="json")
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ("model", "params", *err["loc"])
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(err["loc"][-1]), list(schema.model_fields), n=1)
                hint = f"; did you mean 'model.params.{close[0]}'?" if close else \
                    f" (allowed: {', '.join(schema.model_fields)})"
                lines.append(f"{'.'.join(map(str, loc))}: unknown key{hint}")
            else:
                lines.append(f"{'.'.join(map(str, loc))}: {err['msg']} (got {err.get('input')!r})")
        raise OcrbenchError(f"{origin}: invalid recipe\n" + "\n".join(f"  - {ln}" for ln in lines)) from None
