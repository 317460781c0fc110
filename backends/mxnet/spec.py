"""Core-side description of the MXNet backend (no mxnet import here)."""

from pathlib import Path

from pydantic import Field

from backends.mxnet.launch import MxnetKvstore
from ocrbench.backend import BackendSpec
from ocrbench.recipe import ArchParams, column_lstm_param_count


class LstmCtcParams(ArchParams):
    """apache/mxnet example/ctc: a gray ``input_height x input_width`` image read column by column
    (input_width time steps of input_height features) by a unidirectional LSTM, then a dense layer."""

    input_height: int = Field(30, ge=4, le=1024, description="pixels; the features of one time step")
    input_width: int = Field(80, ge=4, le=4096, description="pixels; the number of time steps")
    hidden: int = Field(100, ge=1, le=4096)
    layers: int = Field(2, ge=1, le=16)
    standardize: bool = Field(False, description="standardize each image inside the network (zero mean, unit "
                              "variance over its pixels) before the LSTM; the example does not (False)")

    def time_steps(self) -> int:
        """One step per image column."""
        return self.input_width

    def param_count(self, classes: int) -> int:
        """LSTM layers with two bias vectors each (i2h and h2h, as the example's FullyConnected pair)."""
        return column_lstm_param_count(self.input_height, self.hidden, self.layers, classes)


BACKEND = BackendSpec(
    name="mxnet",
    framework="MXNet",
    distribution="mxnet",
    worker="backends.mxnet.worker",
    requirements=Path(__file__).with_name("requirements.txt"),
    native_archs={"lstm_ctc": LstmCtcParams},
    shared_archs=("crnn",),
    export_formats=("mxnet", "onnx", "weights"),
    online_data=True,
    other_distributions=("mxnet-cu117",),   # the CUDA variant (requirements-cuda11.txt)
    launcher=MxnetKvstore(),
)
