"""PaddleOCR worker: runs inside the paddleocr backend's environment (started by ocrbench.worker.bootstrap).

No paddleocr wheel ships ppocr's training stack, so the model and training loop are ocrbench's own, on
paddle; every edge speaks PaddleOCR's formats (``ppocr_formats.py``): SimpleDataSet label lists and a
dict file as native data, the PaddleOCR training config, ``latest`` / ``best_accuracy`` checkpoints
(``.pdparams`` / ``.pdopt`` / ``.states``), an inference model with ``inference.yml``.

Conventions are PaddleOCR's and ocrbench's alike: blank 0, dict line k -> class k + 1; logits (T, B, C)
time-major. Loss: ``paddle.nn.CTCLoss(blank=0, reduction="none")`` on logits, per sample, reduced with
``Trainer.loss_weights``; ``train.loss_reduction: backend`` is the batch mean (not normalised by label
length), as ppocr's CTCLoss, logged per sample. The partial last batch of an epoch is dropped or kept as
``train.drop_last`` says.

Data parallel as PaddleOCR's ``python -m paddle.distributed.launch``: one process per device (GPU, or
CPU with ``--nproc``, gloo), ``init_parallel_env()``, the model wrapped in ``paddle.DataParallel``
(gradients averaged over ranks) and each rank's batches from a ``DistributedBatchSampler`` (its share of
the epoch, reshuffled per epoch); rank 0 alone evaluates the plain model and writes results.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import paddle
from PIL import Image

from backends.paddleocr import neutral, ppocr_formats
from backends.paddleocr.model import InferenceOutput, build
from ocrbench import atomic, preprocess
from ocrbench.codec import pad_targets
from ocrbench.labels import read_label_file
from ocrbench.predictions import paired_with_labels
from ocrbench.protocol import Protocol, sequence_accuracy
from ocrbench.worker import EpochContext, Trainer, compare_logits, serve

HEIGHT = 32


def read_bgr(path: Path) -> np.ndarray:
    """An image file as uint8 BGR HWC, decoded like PaddleOCR's DecodeImage (``cv2.imdecode``, colour)."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can decode")
    return image


def resize_norm_bgr(bgr: np.ndarray, width: int) -> np.ndarray:
    """PaddleOCR's resize_norm_img: height 32, width ``preprocess.keep_ratio_width`` (min(W, ceil(32 * w /
    h))) keeping the aspect ratio, ``cv2.resize`` with INTER_LINEAR (no antialiasing) as PaddleOCR and
    paddlex do, so paddleocr's own predictor sees the same pixels. Returns the resized uint8 HWC image
    (normalised and right-padded later, per batch)."""
    h, w = bgr.shape[:2]
    resized_w = preprocess.keep_ratio_width(h, w, HEIGHT, width)
    return cv2.resize(bgr, (resized_w, HEIGHT), interpolation=cv2.INTER_LINEAR)


def read_gray(path: Path, width: int, keep_ratio: bool) -> np.ndarray:
    """The shared crnn's image: decoded gray with PIL, resized with PIL's bilinear filter to 32 x ``width``
    (stretched) or, with ``keep_ratio``, to 32 x ``preprocess.keep_ratio_width`` (at most ``width``: padded
    later, after normalising, by :func:`to_batch`). uint8 HWC (32, w, 1) in 0..255."""
    with Image.open(path) as img:
        gray = img.convert("L")
        resized_w = width
        if keep_ratio:
            resized_w = preprocess.keep_ratio_width(gray.height, gray.width, HEIGHT, width)
        gray = gray.resize((resized_w, HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)[:, :, None]


class Images:
    """Canonical images -> uint8 HWC arrays in 0..255, ready for :func:`to_batch`.

    ``crnn_mobilenetv3``: BGR via OpenCV, aspect ratio kept (see resize_norm_bgr). ``crnn``: gray via PIL,
    32 x W, or keeping the aspect ratio with ``keep_ratio`` (see read_gray). With ``cache`` (``data.cache:
    memory``) a decoded image is kept after its first use; without it every access decodes again, so
    memory is bounded by the batch.
    """

    def __init__(self, dataset_dir: Path, arch: str, width: int, keep_ratio: bool, cache: bool):
        self.dataset_dir, self.arch, self.width, self.keep_ratio = dataset_dir, arch, width, keep_ratio
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

    def __getitem__(self, relpath: str) -> np.ndarray:
        if self._cache is not None and relpath in self._cache:
            return self._cache[relpath]
        path = self.dataset_dir / relpath
        if self.arch == "crnn_mobilenetv3":
            image = resize_norm_bgr(read_bgr(path), self.width)
        else:
            image = read_gray(path, self.width, self.keep_ratio)
        if self._cache is not None:
            self._cache[relpath] = image
        return image


def to_batch(images: list[np.ndarray], width: int) -> np.ndarray:
    """uint8 HWC images (each at most ``width`` wide) -> float32 (B, C, 32, width): (x / 255 - 0.5) / 0.5
    = x / 127.5 - 1 in [-1, 1], then zero-padded on the right to ``width`` (``preprocess.pad_right``:
    PaddleOCR pads after normalising)."""
    return np.stack([preprocess.pad_right((image.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32), width,
                                          axis=2) for image in images])


class PaddleTrainer(Trainer):
    framework = "paddle"
    default_loss_reduction = "mean"   # ppocr's CTCLoss: per-sample losses averaged over the batch
    native_loss = "paddle.nn.CTCLoss(blank=0, reduction='none') on logits (warpctc)"

    def version(self) -> str:
        return paddle.__version__

    def setup(self) -> dict:
        job = self.job
        self.require_gpus(lambda: (paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda()
                                   else 0),
                          hint="a CPU build? point the backend at an interpreter with paddlepaddle-gpu via "
                               "--python")
        if job.gpus >= 1:
            paddle.set_device(f"gpu:{job.local_rank}")
        else:
            paddle.set_device("cpu")
        threads = self.threads()
        paddle.base.core.set_num_threads(threads)   # the CPU math library's pool (Paddle's default: 1)
        info = {"device": paddle.get_device(), "threads": threads}
        self.parallel = job.processes > 1
        if self.parallel:   # started by paddle.distributed.launch: join its process group
            paddle.distributed.init_parallel_env()
            info["distributed"] = {"comm": job.distributed.comm,
                                   "paddle_world_size": paddle.distributed.get_world_size()}
        return info

    def seed_framework(self, seed: int) -> None:
        paddle.seed(seed)

    # ---------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """SimpleDataSet label lists (paths relative to the canonical dataset, the data_dir) + dict."""
        job = self.job
        self.native = job.native_dir
        reused = ppocr_formats.native_ready(self.native)
        if not reused:
            ppocr_formats.write_native(job.dataset_dir, job.charset.chars, self.native)
        self.samples = {split: read_label_file(self.native / ppocr_formats.LABEL_LISTS[split])
                        for split in ("train", "eval")}
        return {"format": "PaddleOCR SimpleDataSet (path<TAB>text label lists + dict.txt)",
                "path": str(self.native), "reused": reused}

    # --------------------------------------------------------------------------------------- model
    def build(self) -> dict:
        job = self.job
        self.arch, self.params = job.model["arch"], job.model["params"]
        self.width = self.params["input_width"]
        self.channels = 3 if self.arch == "crnn_mobilenetv3" else 1
        self.images = Images(job.dataset_dir, self.arch, self.width, self.keep_ratio, cache=self.cache_images)
        self.model = build(self.arch, job.charset.num_classes, self.network_params)
        self.trained = paddle.DataParallel(self.model) if self.parallel else self.model   # what trains
        self.sampler = None
        if self.parallel:   # this rank's batches of each epoch (train.drop_last, of this rank's share)
            # the sampler pads the shares to equal size
            share = -(-len(self.samples["train"]) // job.processes)
            self.sampler = paddle.io.DistributedBatchSampler(
                self.samples["train"], job.train["batch_size"], shuffle=True,
                drop_last=self.drop_last(share, job.train["batch_size"]))
        self.optimizer = make_optimizer(self.model, job.train)
        self.ctc = paddle.nn.CTCLoss(blank=0, reduction="none")
        self.best = {"acc": -1.0, "epoch": 0}
        self.is_best = False
        if job.rank == 0:   # rank 0 writes (two ranks replacing one file raced: a missing temp file)
            ppocr_formats.write_train_config(job, self.native, job.run_dir / "config.yml")
        params = sum(int(np.prod(p.shape)) for p in self.model.parameters() if not p.stop_gradient)
        return {"arch": self.arch, "params": params, "classes": job.charset.num_classes,
                "paddleocr_config": "config.yml"}

    def steps_per_epoch(self) -> int:
        if self.sampler is not None:
            return len(self.sampler)
        return self.epoch_steps(len(self.samples["train"]), self.job.train["batch_size"])

    def input_spec(self) -> dict:
        if self.arch == "crnn_mobilenetv3":
            return {"shape": [None, 3, HEIGHT, None], "layout": "NCHW", "color": "BGR", "dtype": "float32",
                    "pixels": "(x / 255 - 0.5) / 0.5 (range [-1, 1])",
                    "resize": f"height 32 keeping the aspect ratio, width at most {self.width}, zero-padded "
                              f"on the right to {self.width} (PaddleOCR resize_norm_img)",
                    "preprocess": preprocess.describe(decode="bgr", decoder="cv2", height=HEIGHT,
                                                      width=self.width, keep_ratio=True,
                                                      interpolation="cv2_linear", mean=[0.5], std=[0.5])}
        resize = f"bilinear to {HEIGHT}x{self.width}, aspect ratio not kept"
        if self.keep_ratio:
            resize = (f"bilinear to height {HEIGHT} keeping the aspect ratio, width min({self.width}, "
                      f"ceil({HEIGHT} w / h)), zero-padded on the right to {self.width} after normalising")
        return {"shape": [None, 1, HEIGHT, self.width], "layout": "NCHW", "color": "gray", "dtype": "float32",
                "pixels": "x / 127.5 - 1 for x in 0..255 (range [-1, 1])", "resize": resize,
                "preprocess": preprocess.describe(decode="gray", decoder="pil", height=HEIGHT,
                                                  width=self.width, keep_ratio=self.keep_ratio,
                                                  interpolation="pil_bilinear", mean=[0.5], std=[0.5])}

    def _batches(self, split: str, order: list[int], batch_size: int, drop_last: bool):
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            yield self._batch(split, order[start: start + batch_size])

    def _batch(self, split: str, indices: list[int]):
        """(ids, images (B, C, 32, W) float32, targets (B, max_len) blank-0 padded, lengths) of samples."""
        chosen = [self.samples[split][i] for i in indices]
        images = to_batch([self.images[s.path] for s in chosen], self.width)
        targets, lengths = pad_targets([s.text for s in chosen], self.job.charset, self.max_label_len)
        return [s.path for s in chosen], images, targets, lengths

    def _train_batches(self, epoch: int):
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch_seed(epoch))
            return (self._batch("train", indices) for indices in self.sampler)
        order = self.epoch_order(epoch, len(self.samples["train"]))
        batch = self.job.train["batch_size"]
        return self._batches("train", order, batch, self.drop_last(len(order), batch))

    def train_epoch(self, ctx: EpochContext) -> None:
        self.model.train()
        for _, images, targets, lengths in ctx.batches(self._train_batches(ctx.epoch)):
            logged, _, _ = self._step(paddle.to_tensor(images), targets, lengths, ctx.lr())
            ctx.step(len(lengths), float(logged))

    def resume_training(self) -> None:
        """Back to training mode after an evaluation inside an epoch (``predict`` left inference mode)."""
        self.model.train()

    def _step(self, images: paddle.Tensor, targets: np.ndarray, lengths: np.ndarray, lr: float):
        """One optimizer step at ``lr`` (gradients averaged over ranks by ``paddle.DataParallel``, clip and
        L2 in the optimizer); the objective is the per-sample CTC losses weighted by ``loss_weights``.
        Returns the logged loss, the logits (T, B, C) and the per-sample losses (B,), detached."""
        self.optimizer.set_lr(lr)
        logits = self.trained(images)                                          # (T, B, C)
        steps, batch = logits.shape[0], logits.shape[1]
        losses = self.ctc(logits, paddle.to_tensor(np.asarray(targets, dtype=np.int32)),
                          paddle.full([batch], steps, dtype="int64"),
                          paddle.to_tensor(np.asarray(lengths, dtype=np.int64))).reshape([batch])
        objective, logged = (paddle.to_tensor(w) for w in self.loss_weights(lengths))
        (losses * objective).sum().backward()
        self.optimizer.step()
        self.optimizer.clear_grad()
        losses = losses.detach()
        return (losses * logged).sum(), logits.detach(), losses

    # --------------------------------------------------------------- neutral weights and the probe
    def neutral_weights(self) -> dict[str, np.ndarray]:
        if self.arch != "crnn":
            raise self._no_neutral()
        return neutral.to_neutral(self.model)

    def load_neutral_weights(self, tensors: dict[str, np.ndarray]) -> None:
        if self.arch != "crnn":
            raise self._no_neutral()
        neutral.from_neutral(self.model, tensors)

    @paddle.no_grad()
    def probe_forward(self, inputs: np.ndarray) -> np.ndarray:
        if self.arch != "crnn":
            raise self._no_neutral()
        self.model.eval()
        return self.model(paddle.to_tensor(np.ascontiguousarray(inputs, dtype=np.float32))).numpy()

    def probe_step(self, inputs, targets, lengths, lr):
        if self.arch != "crnn":
            raise self._no_neutral()
        self.model.train()
        _, logits, losses = self._step(paddle.to_tensor(np.ascontiguousarray(inputs, dtype=np.float32)),
                                       targets, lengths, lr)
        return logits.numpy(), losses.numpy()

    def weight_arrays(self) -> list[list[np.ndarray]]:
        """This rank's trained parameters."""
        return [[p.numpy() for p in self.model.parameters() if not p.stop_gradient]]

    def predict(self, split: str):
        return self._predict_with(split, lambda logits: logits.argmax(axis=2).numpy().T)   # (B, T)

    def predict_outputs(self, split: str):
        """Batch-major logits (B, T, C), the blank 0, before the softmax the exports apply."""
        return self._predict_with(split, lambda logits: logits.numpy().transpose(1, 0, 2).astype(np.float32))

    @paddle.no_grad()
    def _predict_with(self, split: str, head):
        """``(ids, head(logits))`` per batch of the trained network's time-major logits (T, B, C)."""
        self.model.eval()
        order = list(range(len(self.samples[split])))
        for ids, images, _, _ in self._batches(split, order, self.job.eval["batch_size"], False):
            yield ids, head(self.model(paddle.to_tensor(images)))

    def predict_exported(self, fmt: str, directory: Path):
        """The eval split through the reloaded inference model (softmax, batch-major; ONNX: the core)."""
        if fmt != "paddle":
            return None
        model = paddle.jit.load(str(directory / "inference"))
        model.eval()
        return self._predict_reloaded(model)

    @paddle.no_grad()
    def _predict_reloaded(self, model):
        order = list(range(len(self.samples["eval"])))
        for ids, images, _, _ in self._batches("eval", order, self.job.eval["batch_size"], False):
            yield ids, model(paddle.to_tensor(images)).argmax(axis=2).numpy()     # (B, T)

    def on_evaluated(self, epoch: int, predictions: Path) -> None:
        """PaddleOCR keeps ``best_accuracy`` by eval accuracy: ocrbench.protocol's sequence accuracy (the
        normalisation and exact-match rule of metrics.json's seq_acc), not a second implementation."""
        labels = {s.path: s.text for s in self.samples["eval"]}
        acc = sequence_accuracy(paired_with_labels(predictions, labels),
                                Protocol(**self.job.eval["protocol"]), self.job.charset.chars)
        self.is_best = acc >= self.best["acc"]
        if self.is_best:
            self.best = {"acc": acc, "epoch": epoch}

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """``latest.{pdparams,pdopt,states}`` in ``directory``, copied to ``best_accuracy.*`` beside the
        run's checkpoints (outliving them) when the epoch's eval accuracy is the best so far (PaddleOCR's
        tools/program.py convention)."""
        states = {"epoch": epoch,
                  "best_model_dict": {"acc": self.best["acc"], "best_epoch": self.best["epoch"]},
                  "arch": self.arch}
        written = ppocr_formats.save_checkpoint(directory, "latest", self.model.state_dict(),
                                                self.optimizer.state_dict(), states)
        if self.is_best:
            for path in written:
                best = self.job.path("checkpoints") / path.name.replace("latest", "best_accuracy", 1)
                atomic.write_bytes(best, path.read_bytes())
            self.is_best = False
        return written

    def load(self, directory: Path) -> None:
        model, optimizer, states = ppocr_formats.load_checkpoint(directory, "latest")
        self.model.set_state_dict(model)
        self.optimizer.set_state_dict(optimizer)
        best = states.get("best_model_dict", {})
        self.best = {"acc": float(best.get("acc", -1.0)), "epoch": int(best.get("best_epoch", 0))}

    # --------------------------------------------------------------------------------------- export
    def output_spec(self) -> dict:
        return {"blank": 0, "labels": "charset[k] is class k + 1; the blank is class 0",
                "output": "probabilities (batch, time, classes), batch-major, softmax applied "
                          "(PaddleOCR's inference-model layout)", "layout": "BTC", "activation": "softmax"}

    def reference_batch(self, n: int):
        """The first n eval images as the exports take them and their softmax output (B, T, C)."""
        self.model.eval()
        chosen = self.samples["eval"][:n]
        inputs = to_batch([self.images[s.path] for s in chosen], self.width)
        with paddle.no_grad():
            outputs = InferenceOutput(self.model)(paddle.to_tensor(inputs)).numpy()
        return [s.path for s in chosen], inputs, outputs

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        self.model.eval()
        exported = InferenceOutput(self.model)
        probe = (np.random.default_rng(0).uniform(-1, 1, (2, self.channels, HEIGHT, self.width))
                 .astype(np.float32))
        expected = exported(paddle.to_tensor(probe)).numpy()
        if fmt == "paddle":
            return ppocr_formats.export_inference(exported, self.job, self.arch, self.params, directory,
                                                  self.channels, probe, expected)
        if fmt == "onnx":
            return export_onnx(self, directory, opset, probe, expected)
        raise ValueError(f"unknown export format {fmt!r}")


def export_onnx(trainer: PaddleTrainer, directory: Path, opset: int, probe: np.ndarray,
                expected: np.ndarray) -> list[Path]:
    """ONNX through paddle2onnx from a temporary inference model, checked in onnxruntime."""
    import onnxruntime
    import paddle2onnx

    staging = directory / ".inference"
    model_file = ppocr_formats.jit_save(InferenceOutput(trainer.model), staging / "inference",
                                        trainer.channels)
    path = directory / "model.onnx"
    try:
        paddle2onnx.export(str(model_file), str(staging / "inference.pdiparams"), str(path),
                           opset_version=opset, enable_onnx_checker=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: probe})[0]
    try:
        compare_logits("ONNX (paddle2onnx, onnxruntime)", expected, got)
    except RuntimeError:
        path.unlink(missing_ok=True)
        raise
    return [path]


def make_optimizer(model: paddle.nn.Layer, train: dict) -> paddle.optimizer.Optimizer:
    """The recipe's optimizer with L2 weight decay (PaddleOCR's regularizer) and global-norm clipping;
    the lr is set every step from the shared schedule."""
    spec = train["optimizer"]
    decay = paddle.regularizer.L2Decay(spec["weight_decay"]) if spec["weight_decay"] else None
    clip = paddle.nn.ClipGradByGlobalNorm(train["grad_clip"]) if train["grad_clip"] else None
    common = {"learning_rate": spec["lr"], "parameters": model.parameters(), "weight_decay": decay,
              "grad_clip": clip}
    if spec["name"] == "adam":
        return paddle.optimizer.Adam(beta1=spec["betas"][0], beta2=spec["betas"][1], epsilon=spec["eps"],
                                     **common)
    if spec["name"] == "sgd":
        return paddle.optimizer.Momentum(momentum=spec["momentum"], **common)
    if spec["name"] == "rmsprop":
        return paddle.optimizer.RMSProp(momentum=spec["momentum"], **common)
    if spec["name"] == "adadelta":
        return paddle.optimizer.Adadelta(**common)
    raise ValueError(f"unknown optimizer {spec['name']!r}")


def main(argv: list[str]) -> None:
    serve(PaddleTrainer, argv)
