"""MindSpore worker: runs inside the mindspore backend's environment (started by ocrbench.worker.bootstrap).

Native data is MindRecord (``mindrecord.py``), read with mindspore.dataset. Inside this backend the **CTC
blank is the last class** and ``charset[k]`` is class k (WarpCTC's convention, also in the exports'
metadata); best paths are converted to ocrbench's blank-0 convention in ``predict``. Training runs in
GRAPH_MODE (the whole step — forward, CTC loss, gradients, global-norm clipping, optimizer — is one
compiled graph; PyNative vs Graph measured in docs/backends.md). Loss: ``nn.CTCLoss(blank=last)`` on
log-softmax, per sample, reduced with ``Trainer.loss_weights`` (the objective's per-sample weights are an
input tensor of the compiled step); ``train.loss_reduction: backend`` is **sum over the batch** (WarpCTC
returns per-sample losses with sensitivity 1 each, i.e. the gradient of the sum), logged per sample. The
partial last batch of an epoch is dropped or kept as ``train.drop_last`` says
(``batch(drop_remainder=...)``; a kept partial batch is a new shape, which GRAPH_MODE compiles once more).
Labels are passed with their true lengths (WarpCTC passes its blank padding to the loss as labels;
ocrbench does not — docs/backends.md).

Images are decoded and resized in the ``mindspore.dataset`` map for every batch (``mindrecord.pipeline``),
with ``data.cache`` memory or none alike: MindSpore's dataset cache needs a separate cache server, and the
MindRecord rows are read by index, so memory is bounded by the batches in flight. The crnn's images are
decoded gray and resized with PIL's bilinear filter, ``ocrbench.preprocess.crnn_gray`` — the same
function as the other backends, so a model moved between frameworks sees the same pixels; its
``keep_ratio`` resizes to height 32 keeping the aspect ratio and pads the normalised image with zeros on
the right to the input width.

Data parallel as WarpCTC's ``--run_distribute``: msrun starts one process per device (GPU, or CPU with
``--nproc``), each calls ``communication.init()`` (NCCL on GPUs, MindSpore's mccl on CPUs), sets
``DATA_PARALLEL`` with ``gradients_mean=True``, reads its MindDataset shard, and the train step averages
gradients over ranks with ``nn.DistributedGradReducer`` (the learning rate times the device count is
the recipe's ``train.lr_scaling: linear``, as upstream).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only

import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402
from mindspore import dataset as ds  # noqa: E402

from backends.mindspore import mindrecord, neutral  # noqa: E402
from backends.mindspore.model import WARPCTC_MEAN, WARPCTC_STD, build, use_im2col  # noqa: E402
from ocrbench import preprocess, weights  # noqa: E402
from ocrbench.codec import from_blank_last  # noqa: E402
from ocrbench.worker import EpochContext, Trainer, compare_logits, serve  # noqa: E402

CHECKPOINT = re.compile(r"(?P<arch>\w+)-(?P<epoch>\d+)-(?P<step>\d+)\.ckpt")


class NetWithLoss(nn.Cell):
    """Network + CTC loss (blank = last class) on log-softmax: the per-sample losses (B,) reduced with the
    per-sample ``weights`` (B,) (``Trainer.loss_weights``'s objective, a graph input); returns that
    objective, the per-sample losses and the logits (T, B, C)."""

    def __init__(self, net: nn.Cell, blank: int):
        super().__init__()
        self.net = net
        self.ctc = nn.CTCLoss(blank=blank, reduction="none", zero_infinity=True)

    def construct(self, images, labels, lengths, weights):
        logits = self.net(images)                                      # (T, B, C)
        steps, batch = logits.shape[0], logits.shape[1]
        input_lengths = ops.fill(ms.int32, (batch,), steps)
        losses = self.ctc(ops.log_softmax(logits, 2), labels, input_lengths, lengths)
        return (losses * weights).sum(), losses, logits


class TrainStep(nn.Cell):
    """One optimizer step as a single graph: forward and loss (once), gradients of the weighted loss,
    gradient averaging over ranks, L2, global-norm clip, update. Returns the per-sample CTC losses and the
    training-mode logits of the step (before the update)."""

    def __init__(self, net_with_loss: nn.Cell, optimizer: nn.Optimizer, clip: float | None, decay: float,
                 ranks: int = 1):
        super().__init__()
        self.net_with_loss, self.optimizer = net_with_loss, optimizer
        self.weights = optimizer.parameters
        self.clip = clip
        self.decay = decay
        # the gradient of the first output (the objective); the losses and logits come along as aux
        self.forward_backward = ops.value_and_grad(net_with_loss, None, self.weights, has_aux=True)
        self.parallel = ranks > 1   # gradients averaged over the ranks (all-reduce) before the update
        self.reducer = (nn.DistributedGradReducer(self.weights, mean=True, degree=ranks) if self.parallel
                        else None)

    def construct(self, images, labels, lengths, weights):
        (_, losses, logits), grads = self.forward_backward(images, labels, lengths, weights)
        if self.parallel:
            grads = self.reducer(grads)
        if self.decay > 0:  # L2 as in the other backends (added to the gradient)
            grads = tuple(g + self.decay * w for g, w in zip(grads, self.weights))
        if self.clip is not None:
            grads = ops.clip_by_global_norm(grads, self.clip)
        self.optimizer(grads)
        return losses, logits


def batch_major_logits(logits: ms.Tensor) -> np.ndarray:
    """Time-major logits (T, B, C) -> float32 numpy (B, T, C)."""
    return logits.asnumpy().transpose(1, 0, 2).astype(np.float32)


class MindSporeTrainer(Trainer):
    framework = "mindspore"
    default_loss_reduction = "sum"   # WarpCTC's: per-sample losses, each with sensitivity 1
    native_loss = "mindspore.nn.CTCLoss(blank=last, reduction='none', zero_infinity=True) on log-softmax"

    def version(self) -> str:
        return ms.__version__

    def setup(self) -> dict:
        job = self.job
        threads = self.threads()
        target = "GPU" if job.gpus >= 1 else "CPU"
        self.require_gpus(lambda: int(ms.hal.is_available("GPU")),
                          hint="the registry's mindspore wheel is a CPU build: pass --python with a GPU "
                               "build")
        ms.set_context(mode=ms.GRAPH_MODE)
        if job.gpus >= 1:
            ms.set_device(target, job.local_rank)   # msrun: one process per GPU
        else:
            ms.set_device(target)
        ms.device_context.cpu.op_tuning.threads_num(threads)   # CPU kernels; MindSpore's default is 25
        info = {"device": target, "threads": threads, "mode": "GRAPH_MODE"}
        self.shard = (1, 0)
        if job.processes > 1:   # started by msrun: join its cluster
            from mindspore.communication import get_group_size, get_rank, init

            init()
            ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                         device_num=get_group_size())
            self.shard = (get_group_size(), get_rank())
            info["distributed"] = {"comm": job.distributed.comm, "group_size": get_group_size()}
        return info

    def seed_framework(self, seed: int) -> None:
        ms.set_seed(seed)
        ds.config.set_seed(seed)   # reset to the epoch's seed for every training epoch (``_data``)

    # ---------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """Canonical dataset -> MindRecord files under native/mindspore (shared by runs on the data)."""
        job = self.job
        self.native = job.native_dir
        reused = all(mindrecord.record_path(self.native, s).is_file() for s in mindrecord.SPLITS)
        if not reused:
            mindrecord.write_native(job.dataset_dir, job.charset.chars, self.native, self.max_label_len)
        return {"format": "MindRecord (image bytes, label padded with the blank, length, id)",
                "path": str(self.native), "reused": reused}

    def _data(self, split: str, epoch: int = 0) -> ds.Dataset:
        train = split == "train"
        if train:
            ds.config.set_seed(self.epoch_seed(epoch))  # each epoch's order reproducible
        workers = max(1, self.job.train["loader_workers"] or 1)
        batch = self.job.train["batch_size"] if train else self.job.eval["batch_size"]
        return mindrecord.pipeline(self.native, split, self.arch, self.height, self.width, batch,
                                   shuffle=train, workers=workers,
                                   drop_remainder=train and self._full_batches(),
                                   shard=self.shard if train else (1, 0), keep_ratio=self.keep_ratio)

    def _full_batches(self) -> bool:
        """``train.drop_last`` (WarpCTC drops the remainder too; full batches keep the graph's shapes
        static) on this rank's shard, unless it is smaller than one batch."""
        return self.drop_last(self._shard_size(), self.job.train["batch_size"])

    def _shard_size(self) -> int:
        return len(self.sample_ids("train")) // self.shard[0]

    # --------------------------------------------------------------------------------------- model
    def build(self) -> dict:
        job = self.job
        self.arch, self.params = job.model["arch"], job.model["params"]
        if self.arch == "warpctc":
            self.channels, self.height = 3, self.params["input_height"]
        else:
            self.channels, self.height = 1, 32
        self.width = self.params["input_width"]
        self.classes = job.charset.num_classes
        self.net = build(self.arch, self.classes, self.network_params)
        self.im2col = job.gpus == 0   # CPU: convolutions as im2col + MatMul (model.Conv2d: ~30x faster)
        use_im2col(self.net, self.im2col)
        self.optimizer = make_optimizer(self.net.trainable_params(), job.train["optimizer"])
        self.step_cell = TrainStep(NetWithLoss(self.net, blank=self.classes - 1), self.optimizer,
                                   clip=job.train["grad_clip"], decay=job.train["optimizer"]["weight_decay"],
                                   ranks=self.shard[0])
        self.step_cell.set_train(True)
        params = sum(p.size for p in self.net.trainable_params())
        return {"arch": self.arch, "params": int(params), "classes": self.classes, "blank": self.classes - 1,
                "mode": "GRAPH_MODE", "conv": "im2col + MatMul" if self.im2col else "Conv2D"}

    def steps_per_epoch(self) -> int:
        return self.epoch_steps(self._shard_size(), self.job.train["batch_size"])   # this rank's shard

    def input_spec(self) -> dict:
        size = {"height": self.height, "width": self.width}
        if self.arch == "warpctc":
            pixels = (f"(x / 255 - mean) / std per BGR channel, mean {list(WARPCTC_MEAN)}, "
                      f"std {list(WARPCTC_STD)}")
            color = "BGR"
            described = preprocess.describe(decode="bgr", mean=list(WARPCTC_MEAN), std=list(WARPCTC_STD),
                                            normalize_first=True, decoder="cv2", interpolation="cv2_linear",
                                            **size)   # WarpCTC resizes the float image
        else:
            pixels, color = "x / 127.5 - 1 for x in 0..255 (range [-1, 1])", "gray"
            described = preprocess.describe(decode="gray", decoder="pil", interpolation="pil_bilinear",
                                            mean=[0.5], std=[0.5], keep_ratio=self.keep_ratio, **size)
        if self.keep_ratio:
            resize = (f"bilinear to height {self.height} keeping the aspect ratio, width "
                      f"min({self.width}, ceil({self.height} w / h)), then padded on the right to "
                      f"{self.width} with zeros after normalising")
        else:
            resize = f"bilinear to {self.height}x{self.width}, aspect ratio not kept"
        return {"shape": [None, self.channels, self.height, self.width], "layout": "NCHW", "color": color,
                "dtype": "float32", "pixels": pixels, "resize": resize, "preprocess": described}

    def output_spec(self) -> dict:
        return {"blank": self.classes - 1, "labels": "charset[k] is class k; the blank is the last class",
                "output": "logits (time, batch, classes), time-major", "layout": "TBC",
                "activation": "logits"}

    def train_epoch(self, ctx: EpochContext) -> None:
        self.step_cell.set_train(True)
        batches = self._data("train", ctx.epoch).create_tuple_iterator(num_epochs=1)
        for images, labels, lengths in ctx.batches(batches):
            logged, _, _ = self._step(images, labels, lengths.asnumpy(), ctx.lr())
            ctx.step(int(images.shape[0]), logged)

    def resume_training(self) -> None:
        """Back to training mode after an evaluation inside an epoch (``predict`` left inference mode)."""
        self.step_cell.set_train(True)

    def _step(self, images: Tensor, labels: Tensor, lengths: np.ndarray, lr: float):
        """One optimizer step (the compiled ``step_cell``) at ``lr`` on blank-last ``labels``; the objective
        is the per-sample CTC losses weighted by ``loss_weights`` (an input tensor of the graph). Returns
        the logged loss, the training-mode logits (T, B, C, blank last) and the per-sample losses (B,)."""
        objective, logged = self.loss_weights(lengths)
        self.optimizer.learning_rate.set_data(Tensor(lr, ms.float32))
        if isinstance(self.optimizer, CorrectedEpsilonAdam):
            eps = self.adam_epsilon(self.optimizer.step_count() + 1)
            self.optimizer.eps.set_data(Tensor(np.float32(eps)))
        losses, logits = self.step_cell(images, labels, Tensor(lengths.astype(np.int32)), Tensor(objective))
        losses = losses.asnumpy()
        return float((losses.astype(np.float64) * logged).sum()), logits, losses

    # --------------------------------------------------------------- neutral weights and the probe
    def neutral_weights(self) -> dict[str, np.ndarray]:
        if self.arch != "crnn":
            raise self._no_neutral()
        return neutral.to_neutral(self.net)

    def load_neutral_weights(self, tensors: dict[str, np.ndarray]) -> None:
        if self.arch != "crnn":
            raise self._no_neutral()
        neutral.from_neutral(self.net, tensors)

    def probe_forward(self, inputs: np.ndarray) -> np.ndarray:
        if self.arch != "crnn":
            raise self._no_neutral()
        self.net.set_train(False)
        logits = self.net(Tensor(np.ascontiguousarray(inputs, dtype=np.float32))).asnumpy()
        self.net.set_train(True)
        return weights.blank_first(logits, axis=2)

    def probe_step(self, inputs, targets, lengths, lr):
        if self.arch != "crnn":
            raise self._no_neutral()
        self.step_cell.set_train(True)
        labels = to_blank_last(targets, self.classes)
        _, logits, losses = self._step(Tensor(np.ascontiguousarray(inputs, dtype=np.float32)),
                                       Tensor(labels), np.asarray(lengths), lr)
        return weights.blank_first(logits.asnumpy(), axis=2), losses

    def weight_arrays(self) -> list[list[np.ndarray]]:
        """This rank's trained parameters."""
        return [[p.asnumpy() for p in self.net.trainable_params()]]

    def predict(self, split: str):
        self.net.set_train(False)
        yield from self._predict_with(self.net, split)
        self.net.set_train(True)

    def predict_exported(self, fmt: str, directory: Path):
        """The eval split through the reloaded MINDIR (dynamic batch; ONNX is run by the core)."""
        if fmt != "mindir":
            return None
        return self._predict_with(nn.GraphCell(ms.load(str(directory / "model.mindir"))), "eval")

    def predict_outputs(self, split: str):
        """Batch-major logits (B, T, C), the blank last (as :meth:`output_spec`)."""
        self.net.set_train(False)
        yield from self._predict_with(self.net, split, head=batch_major_logits)
        self.net.set_train(True)

    def _predict_with(self, net, split: str, head=None):
        """``(ids, head(logits))`` per batch of time-major logits (T, B, C); the default head is the best
        paths (B, T) in the blank-0 convention."""
        head = head or (lambda logits: from_blank_last(logits.argmax(axis=2).asnumpy().T, self.classes))
        ids, offset = self.sample_ids(split), 0
        for images, _, _ in self._data(split).create_tuple_iterator(num_epochs=1):
            out = head(net(images))
            yield ids[offset: offset + len(out)], out
            offset += len(out)

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """``<arch>-<epoch>-<step>.ckpt`` (WarpCTC's naming) with the network and the optimizer state
        (momentum, step)."""
        step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        path = directory / f"{self.arch}-{epoch}-{step}.ckpt"
        ms.save_checkpoint(self.step_cell, str(path))
        return [path]

    def load(self, directory: Path) -> None:
        found = sorted((int(m["epoch"]), p) for p in directory.glob("*.ckpt")
                       if (m := CHECKPOINT.fullmatch(p.name)))
        if not found:
            raise RuntimeError(f"no <arch>-<epoch>-<step>.ckpt checkpoint in {directory}")
        missing, _ = ms.load_param_into_net(self.step_cell, ms.load_checkpoint(str(found[-1][1])))
        if missing:
            raise RuntimeError(f"checkpoint {found[-1][1].name} lacks parameters: {missing[:5]}")

    # --------------------------------------------------------------------------------------- export
    def reference_batch(self, n: int):
        """The first n eval images through the MindRecord pipeline and the logits (T, B, C, blank last)."""
        self.net.set_train(False)
        images, _, _ = next(self._data("eval").create_tuple_iterator(num_epochs=1))
        inputs = images[:n]
        return self.sample_ids("eval")[:inputs.shape[0]], inputs.asnumpy(), self.net(inputs).asnumpy()

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        self.net.set_train(False)
        probe = np.random.default_rng(0).uniform(-1, 1, (2, self.channels, self.height, self.width))
        probe = Tensor(probe.astype(np.float32))
        expected = self.net(probe).asnumpy()       # as trained and evaluated (im2col on the CPU)
        use_im2col(self.net, False)                # exports hold MindSpore's plain Conv2D
        if fmt == "mindir":   # dynamic batch (a shape with None); the ONNX exporter only takes fixed shapes
            dynamic = Tensor(shape=[None, self.channels, self.height, self.width], dtype=ms.float32)
            ms.export(self.net, dynamic, file_name=str(directory / "model"), file_format="MINDIR")
            path = directory / "model.mindir"
            graph = nn.GraphCell(ms.load(str(path)))
            compare_logits("MINDIR", expected, graph(probe).asnumpy())
            return [path]
        if fmt == "onnx":   # batch 1: "Export ONNX format model not support dynamic shape mode"
            return export_onnx(self.net, probe[:1], expected[:, :1], directory)
        raise ValueError(f"unknown export format {fmt!r}")


def export_onnx(net: nn.Cell, probe: Tensor, expected: np.ndarray, directory: Path) -> list[Path]:
    """ONNX through ``mindspore.export``, then a check that onnxruntime runs it and agrees."""
    import onnxruntime

    ms.export(net, probe, file_name=str(directory / "model"), file_format="ONNX")
    path = directory / "model.onnx"
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: probe.asnumpy()})[0]
        compare_logits("ONNX (onnxruntime)", expected, got)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return [path]


def to_blank_last(targets: np.ndarray, classes: int) -> np.ndarray:
    """Blank-0 class indices (ocrbench's; padding 0) -> this backend's blank-last ones (padding the blank),
    int32."""
    return ((np.asarray(targets, dtype=np.int64) - 1) % classes).astype(np.int32)


class CorrectedEpsilonAdam(nn.Adam):
    """``nn.Adam`` whose epsilon is a parameter of the compiled step, set before every step.

    MindSpore's Adam kernel computes ``w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)``
    (measured; its docstring says ``lr * m_hat / (sqrt(v_hat) + eps)``), so the worker sets epsilon to
    ``Trainer.adam_epsilon(t)``, which makes the update PyTorch's."""

    def __init__(self, params, learning_rate: float, beta1: float, beta2: float, eps: float):
        super().__init__(params, learning_rate=learning_rate, beta1=beta1, beta2=beta2, eps=eps)
        self.eps = ms.Parameter(Tensor(np.float32(eps)), name="adam_corrected_eps", requires_grad=False)

    def step_count(self) -> int:
        """Steps taken so far."""
        return int(self.global_step.asnumpy().reshape(-1)[0])


def make_optimizer(params: list, spec: dict) -> nn.Optimizer:
    """The recipe's optimizer; weight decay is applied as L2 in the train step, the lr set every step."""
    lr = float(spec["lr"])  # the optimizer keeps it as the Parameter ``learning_rate``
    if spec["name"] == "sgd":
        return nn.Momentum(params, learning_rate=lr, momentum=spec["momentum"])
    if spec["name"] == "adam":
        return CorrectedEpsilonAdam(params, learning_rate=lr, beta1=spec["betas"][0], beta2=spec["betas"][1],
                                    eps=spec["eps"])
    if spec["name"] == "rmsprop":
        return nn.RMSProp(params, learning_rate=lr, momentum=spec["momentum"])
    if spec["name"] == "adadelta":
        return nn.Adadelta(params, learning_rate=lr)
    raise ValueError(f"unknown optimizer {spec['name']!r}")


def main(argv: list[str]) -> None:
    serve(MindSporeTrainer, argv)
