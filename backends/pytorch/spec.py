"""Core-side description of the PyTorch backend (no torch import here)."""

from pathlib import Path

from backends.pytorch.launch import Torchrun
from ocrbench.backend import BackendSpec

BACKEND = BackendSpec(
    name="pytorch",
    framework="PyTorch",
    distribution="torch",
    worker="backends.pytorch.worker",
    requirements=Path(__file__).with_name("requirements.txt"),
    shared_archs=("crnn",),
    export_formats=("torchscript", "onnx", "weights"),
    launcher=Torchrun(),
)
