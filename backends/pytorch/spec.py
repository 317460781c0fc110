"""Core-side description of the PyTorch backend (no torch import here)."""

from pathlib import Path

from ocrbench.backend import BackendSpec

BACKEND = BackendSpec(
    name="pytorch",
    framework="PyTorch",
    distribution="torch",
    worker="backends.pytorch.worker",
    requirements=Path(__file__).with_name("requirements.txt"),
    shared_archs=("crnn",),
    export_formats=("torchscript", "onnx"),
    summary="CRNN of crnn.pytorch / CRNN_Chinese_Characters_Rec; LMDB (DTRB layout); nn.CTCLoss, blank 0",
)
