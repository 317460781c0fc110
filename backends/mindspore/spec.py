"""Core-side description of the MindSpore backend (no mindspore import here)."""

from pathlib import Path

from pydantic import Field

from backends.mindspore.launch import Msrun
from ocrbench.backend import BackendSpec
from ocrbench.recipe import ArchParams, column_lstm_param_count


class WarpCtcParams(ArchParams):
    """MindSpore model_zoo WarpCTC: a BGR ``3 x input_height x input_width`` image read column by column
    (input_width time steps of 3 * input_height features) by a stacked unidirectional LSTM, then Dense."""

    input_height: int = Field(64, ge=4, le=1024, description="pixels; 3 x height features per time step")
    input_width: int = Field(160, ge=4, le=4096, description="pixels; the number of time steps")
    hidden: int = Field(512, ge=1, le=4096)
    layers: int = Field(2, ge=1, le=16)

    def time_steps(self) -> int:
        """One step per image column."""
        return self.input_width

    def param_count(self, classes: int) -> int:
        """nn.LSTM layers (input and recurrent weights, two bias vectors each) + Dense with bias."""
        return column_lstm_param_count(3 * self.input_height, self.hidden, self.layers, classes)


BACKEND = BackendSpec(
    name="mindspore",
    framework="MindSpore",
    distribution="mindspore",
    worker="backends.mindspore.worker",
    requirements=Path(__file__).with_name("requirements.txt"),
    native_archs={"warpctc": WarpCtcParams},
    shared_archs=("crnn",),
    export_formats=("mindir", "onnx", "weights"),
    launcher=Msrun(),
    cuda_unavailable="mindspore 2.10.0 on PyPI is the CPU/Ascend build and mindspore-gpu stops at 1.10.0 "
                     "(wheels for Python 3.7-3.9 only)",
)
