"""MXNet worker: runs inside the mxnet backend's environment (started by ocrbench.worker.bootstrap).

Native data is MXNet RecordIO (``.rec`` + ``.idx`` written with mxnet.recordio): the record header's label
is the zero-padded class vector (1-based classes, 0 = padding = blank), the payload the original PNG/JPEG.
It is read with ``gluon.data.RecordFileDataset``; the example's ``lstm_ctc`` decodes gray and resizes with
``mx.image`` (OpenCV), the shared crnn with ``preprocess.crnn_gray`` (PIL, as every backend's crnn), to
the model's input: stretched to H x W, or for the shared crnn with ``model.params.keep_ratio`` to height 32
keeping the aspect ratio (width at most W), scaled to the model's pixel range and zero-padded on the right
to W after that scaling. The RecordIO payload is the original image, so one native copy serves every resize
policy. Decoded images stay in memory only under ``data.cache: memory``. With ``data.online: true``
training captchas are instead rendered on the fly, a fresh deterministic set every epoch, like the
example's generator.

Loss is ``ctc_loss(..., blank_label='first')`` (blank 0, as in the example and the core), one value per
sample, reduced with ``Trainer.loss_weights`` (``train.loss_reduction``; the backend's own is the example's
mean over the batch). The crnn's BatchNorm running variance is corrected after each step to fold in the
unbiased batch variance, as PyTorch does (``_unbias_running_vars``). The partial last batch of an epoch is
dropped or kept as ``train.drop_last`` says (``DataLoader(last_batch="discard" / "keep")``). Checkpoints
follow the example's convention ``ocr-symbol.json`` + ``ocr-NNNN.params`` (1-based epoch), plus
``ocr-NNNN.states`` (optimizer state, saved with ``mx.nd.save``: no pickle anywhere, so nothing executes code
on load).

Data parallel, as the example's ``--gpu N`` / ``--cpu N``: one process drives a list of contexts
(``mx.gpu(i)`` or ``mx.cpu(i)``); each step's batch is split over them (``split_and_load``) and the
gluon Trainer's kvstore sums their gradients (``device`` on GPUs, ``local`` on CPUs). Across machines the
kvstore is ``dist_sync`` (ps-lite: a scheduler, one server and one worker per node, started by the core
with DMLC_* variables); each worker reads its shard of the training set and the kvstore sums gradients
over workers too. Gradients are then updated on the workers (``update_on_kvstore=False``) so the shared
per-step learning-rate schedule applies.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from backends.mxnet import neutral
from backends.mxnet.model import CRNN, PIXEL_SCALE, build
from ocrbench import preprocess
from ocrbench.codec import pad_targets
from ocrbench.labels import read_label_file
from ocrbench.worker import EpochContext, EpochOrder, Job, Trainer, compare_logits, serve

PREFIX = "ocr"
SPLITS = ("train", "eval")


class InputImage:
    """How an encoded image (PNG/JPEG bytes) becomes one sample of the model's input.

    ``lstm_ctc`` (the example's pipeline): decoded gray and resized with ``mx.image.imresize(interp=1)``
    (MXNet's OpenCV, INTER_LINEAR); the shared crnn (``pil``): ``preprocess.crnn_gray`` (PIL gray, PIL
    bilinear), the one crnn pipeline of every backend. Either gives uint8 (1, height, width) in 0..255
    that :meth:`MxnetTrainer._to_input` scales per batch. With ``keep_ratio`` the width is
    ``preprocess.keep_ratio_width`` (at most ``width``) and the image is scaled here, ``x * scale + shift``
    in float32 (the model's pixel range, PIXEL_SCALE), then zero-padded
    on the right to ``width`` (``preprocess.pad_right``): float32 (1, height, width), the model's input.
    """

    def __init__(self, height: int, width: int, keep_ratio: bool, scale: float, shift: float, pil: bool):
        self.height, self.width, self.keep_ratio = height, width, keep_ratio
        self.scale, self.shift = np.float32(scale), np.float32(shift)
        self.pil = pil

    def resize(self, encoded: bytes) -> np.ndarray:
        """Encoded image -> resized uint8 (1, height, w), w = width unless keep_ratio."""
        if self.pil:
            return preprocess.crnn_gray(encoded, self.height, self.width, self.keep_ratio)[None]
        image = mx.image.imdecode(encoded, flag=0)                      # (H_in, W_in, 1) uint8
        width = self.width
        if self.keep_ratio:
            width = preprocess.keep_ratio_width(image.shape[0], image.shape[1], self.height, self.width)
        return mx.image.imresize(image, width, self.height, interp=1).asnumpy().transpose(2, 0, 1)

    def finish(self, resized: np.ndarray) -> np.ndarray:
        """A :meth:`resize` result as the sample the loader batches: unchanged uint8 when stretched; scaled
        and zero-padded float32 (1, height, width) with keep_ratio."""
        if not self.keep_ratio:
            return resized
        return preprocess.pad_right(resized.astype(np.float32) * self.scale + self.shift, self.width, axis=2)


class RecordImages(gluon.data.Dataset):
    """(image, float label vector) from a RecordIO file, the image as :class:`InputImage` makes it. With
    ``cache`` (``data.cache: memory``) resized images are kept in memory after their first use (uint8, before
    scaling); without it every access decodes again, so memory is bounded by the batch."""

    def __init__(self, rec: Path, image: InputImage, cache: bool):
        self.records = gluon.data.RecordFileDataset(str(rec))   # raw records: header + encoded image
        self.image = image
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        if self._cache is not None and index in self._cache:
            resized, label = self._cache[index]
        else:
            header, encoded = mx.recordio.unpack(self.records[index])
            resized, label = self.image.resize(encoded), np.asarray(header.label, dtype=np.float32)
            if self._cache is not None:
                self._cache[index] = (resized, label)
        return self.image.finish(resized), label


class OnlineCaptchas(gluon.data.Dataset):
    """``size`` fresh captchas per epoch, rendered by ocrbench's deterministic renderer
    (split ``online-<epoch>``), so every epoch sees new images and the run is still reproducible."""

    def __init__(self, config: dict, epoch: int, image: InputImage, charset, max_len: int):
        self.config, self.epoch = config, epoch
        self.image = image
        self.charset, self.max_len = charset, max_len

    def __len__(self) -> int:
        return self.config["train_size"]

    def __getitem__(self, index: int):
        from ocrbench.captcha_renderer import render_captcha

        png, text = render_captcha(self.config, f"online-{self.epoch}", index)
        resized = self.image.resize(png)
        targets, _ = pad_targets([text], self.charset, self.max_len)
        return self.image.finish(resized), targets[0].astype(np.float32)


def best_paths(logits: nd.NDArray) -> np.ndarray:
    """Time-major logits (T, B, C) -> argmax classes (B, T), batch-major."""
    return nd.argmax(logits, axis=2).transpose().asnumpy().astype(np.int64)


def batch_major_logits(logits: nd.NDArray) -> np.ndarray:
    """Time-major logits (T, B, C) -> float32 numpy (B, T, C)."""
    return logits.transpose((1, 0, 2)).asnumpy().astype(np.float32)


class MxnetTrainer(Trainer):
    framework = "mxnet"
    default_loss_reduction = "mean"   # the example's: per-sample losses, gradients averaged over the batch
    native_loss = "mx.nd.ctc_loss(blank_label='first', use_label_lengths=True) per sample"

    def version(self) -> str:
        return mx.__version__

    def setup(self) -> dict:
        job = self.job
        replicas = job.local_replicas
        self.require_gpus(mx.context.num_gpus, needed=replicas,
                          hint="install a CUDA build, e.g. mxnet-cu112, and pass --python")
        if job.gpus >= 1:
            self.ctxs = [mx.gpu(i) for i in range(replicas)]
        else:
            self.ctxs = [mx.cpu(i) for i in range(replicas)] if replicas > 1 else [mx.cpu()]
        self.ctx = self.ctxs[0]   # evaluation, checkpoints and exports
        # MXNet sizes its OpenMP pool from OMP_NUM_THREADS at import; the core sets it to train.threads
        threads = int(os.environ.get("OMP_NUM_THREADS") or self.threads())
        info = {"device": ", ".join(str(c) for c in self.ctxs), "threads": threads}
        self.kvstore, self.shard = None, (1, 0)
        kind = job.distributed.kvstore
        if kind and "dist" in kind:   # ps-lite numbers the workers: this one reads data shard kv.rank
            self.kvstore = mx.kv.create(kind)
            self.shard = (self.kvstore.num_workers, self.kvstore.rank)
            info["distributed"] = {"kvstore": self.kvstore.type, "ps_rank": self.kvstore.rank,
                                   "ps_workers": self.kvstore.num_workers}
        elif kind:
            self.kvstore = kind
            info["distributed"] = {"kvstore": kind, "contexts": len(self.ctxs)}
        return info

    def seed_framework(self, seed: int) -> None:
        mx.random.seed(seed)

    # ---------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """Canonical dataset -> ``<split>.rec`` + ``<split>.idx`` under the dataset's native/mxnet dir."""
        job = self.job
        target = job.native_dir / "recordio"
        reused = (target / "eval.rec").is_file()
        if not reused:
            tmp = job.native_dir / f".recordio.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for split in SPLITS:
                self._write_split(job, split, tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        self.rec_dir = target
        return {"format": "MXNet RecordIO (.rec + .idx, label = zero-padded classes)", "path": str(target),
                "reused": reused, "online": bool(job.dataset.online)}

    @staticmethod
    def _write_split(job: Job, split: str, out: Path) -> None:
        samples = read_label_file(job.dataset_dir / f"{split}.txt")
        targets, _ = pad_targets([s.text for s in samples], job.charset, job.dataset.max_label_len)
        writer = mx.recordio.MXIndexedRecordIO(str(out / f"{split}.idx"), str(out / f"{split}.rec"), "w")
        for index, (sample, target) in enumerate(zip(samples, targets)):
            header = mx.recordio.IRHeader(0, target.astype(np.float32), index, 0)
            writer.write_idx(index, mx.recordio.pack(header, (job.dataset_dir / sample.path).read_bytes()))
        writer.close()

    @property
    def is_crnn(self) -> bool:
        """The shared crnn (its one image pipeline, neutral weights), not the example's lstm_ctc."""
        return self.job.model["arch"] == "crnn"

    def _input_size(self) -> tuple[int, int]:
        params = self.job.model["params"]
        return params.get("input_height", 32), params["input_width"]

    def _input_image(self) -> InputImage:
        height, width = self._input_size()
        return InputImage(height, width, self.keep_ratio, self.scale, self.shift, pil=self.is_crnn)

    def _records(self, split: str) -> RecordImages:
        if split not in self._datasets:
            self._datasets[split] = RecordImages(self.rec_dir / f"{split}.rec", self._input_image(),
                                                 cache=self.cache_images)
        return self._datasets[split]

    def _loader(self, split: str, epoch: int = 0) -> gluon.data.DataLoader:
        online = self.job.dataset.online
        workers = self.job.train["loader_workers"]
        if split == "train":   # this worker's shard (all of it on one machine), this process's batch
            if online:
                shard = OnlineCaptchas(online, epoch, self._input_image(), self.job.charset,
                                       self.max_label_len).shard(*self.shard)
            else:
                shard = self._records(split).shard(*self.shard)
            batch = self.job.process_batch
            last_batch = "discard" if self.drop_last(len(shard), batch) else "keep"
            order = None
            if not online:   # the epoch's order (Trainer.epoch_order) over this worker's shard
                order = EpochOrder(self, len(shard))
                order.set_epoch(epoch)
            return gluon.data.DataLoader(shard, batch, sampler=order, num_workers=workers,
                                         last_batch=last_batch)
        return gluon.data.DataLoader(self._records(split), self.job.eval["batch_size"], shuffle=False)

    # --------------------------------------------------------------------------------------- model
    def build(self) -> dict:
        job = self.job
        arch = job.model["arch"]
        self.scale, self.shift, self.pixels = PIXEL_SCALE[arch]
        self.net = build(arch, job.charset.num_classes, self.network_params)
        self.net.initialize(mx.init.Xavier(factor_type="in", magnitude=2.34), ctx=self.ctxs)
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.trainer = gluon.Trainer(self.net.collect_params(), *optimizer_args(job.train["optimizer"]),
                                     kvstore=self.kvstore,
                                     update_on_kvstore=False if self.kvstore is not None else None)
        if isinstance(self.kvstore, mx.kv.KVStore):
            self._share_initial_weights()
        self._datasets: dict[str, gluon.data.Dataset] = {}
        self.train_loader = self._loader("train")
        self.trainable = [p for p in self.net.collect_params().values() if p.grad_req != "null"]
        height, width = self._input_size()
        self.norms = self.net.batch_norms(height, width) if isinstance(self.net, CRNN) else []
        params = sum(p.data().size for p in self.trainable)
        return {"arch": arch, "params": int(params), "classes": job.charset.num_classes,
                "hybridized": True}

    def _share_initial_weights(self) -> None:
        """Across machines: every worker takes ps-lite worker 0's initial weights now, before any gradient.

        gluon.Trainer does this lazily inside the first ``allreduce_grads``, which then issues the weight
        pull and the first gradient push-pull of each key without ordering them (mxnet 1.9.1 on CPU, where
        the kvstore swaps its receive buffer for the gradient array). The server's value of a key becomes the
        summed gradient once every worker has pushed it, so a worker whose weight pull was served late
        started from that sum instead of the weights: one parameter off, replicas that disagree (seen in
        about 1 run in 3 on a loaded 2-core machine). Waiting for the pull here keeps them identical.
        ``_init_kvstore``/``_init_params`` are the Trainer's own steps (mxnet is pinned to 1.9.1).
        """
        self.trainer._init_kvstore()
        self.trainer._init_params()
        mx.nd.waitall()

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def input_spec(self) -> dict:
        height, width = self._input_size()
        pil = self.is_crnn
        resize = f"bilinear to {height}x{width}, aspect ratio not kept"
        if self.keep_ratio:
            resize = (f"bilinear to height {height} keeping the aspect ratio, width min({width}, "
                      f"ceil({height} w / h)), zero-padded on the right to {width} after normalising")
        return {"shape": [None, 1, height, width], "layout": "NCHW", "color": "gray", "dtype": "float32",
                "pixels": self.pixels, "resize": resize,
                # lstm_ctc: decoded gray and resized by MXNet's OpenCV (flag=0, interp=1); crnn: PIL
                "preprocess": preprocess.describe(decode="gray", decoder="pil" if pil else "cv2",
                                                  height=height, width=width, keep_ratio=self.keep_ratio,
                                                  interpolation="pil_bilinear" if pil else "cv2_linear",
                                                  mean=[-self.shift / self.scale / 255],
                                                  std=[1 / (self.scale * 255)])}

    def _to_input(self, images, context=None) -> nd.NDArray:
        """A loader batch -> the model's float32 input on ``context``: uint8 pixels 0..255 are scaled
        (``x * scale + shift``); float32 batches (keep_ratio: scaled and padded by InputImage) are only
        moved."""
        if images.dtype != np.uint8:
            return images.as_in_context(context or self.ctx)
        return images.as_in_context(context or self.ctx).astype("float32") * self.scale + self.shift

    def train_epoch(self, ctx: EpochContext) -> None:
        self.train_loader = self._loader("train", ctx.epoch)   # online: the epoch's captchas
        for images, labels in ctx.batches(self.train_loader):
            logged, _, _ = self._step(images, labels, ctx.lr())
            ctx.step(images.shape[0], lambda value=logged: value.asscalar())

    def _step(self, images, labels, lr: float):
        """One optimizer step at ``lr`` on this process's batch (a loader batch: images as ``_to_input``
        takes them, zero-padded 1-based label vectors); returns the logged loss (an NDArray scalar on
        ``self.ctx``), the logits (T, B, C) and the per-sample CTC losses (B,), all contexts' parts
        concatenated in batch order.

        The objective is the per-sample losses weighted by ``loss_weights`` over the whole process batch;
        the kvstore sums the contexts' (and workers') gradients and ``update(processes)`` averages them over
        the worker processes (as DDP averages over ranks): with ``mean`` that is today's global-batch mean.
        """
        lengths = (labels > 0).sum(axis=1).asnumpy()
        objective, logged = (nd.array(w, dtype="float32") for w in self.loss_weights(lengths))
        processes = self.job.processes
        before = self._running_vars()
        losses, logits, sizes = self._forward_backward(images, labels, objective)
        self.trainer.allreduce_grads()
        clip = self.job.train["grad_clip"]
        if clip:  # the gradients are still summed over the processes here; update() divides by them
            for c in self.ctxs:   # every context holds the same summed gradients after allreduce
                gluon.utils.clip_global_norm([p.grad(c) for p in self.trainable], clip * processes)
        self.trainer.set_learning_rate(lr)
        optimizer = self.trainer.optimizer
        if isinstance(optimizer, mx.optimizer.Adam):   # MXNet adds epsilon to sqrt(v): see adam_epsilon
            optimizer.epsilon = self.adam_epsilon(optimizer.num_update + 1)
        self.trainer.update(processes)
        self._unbias_running_vars(before, sizes)
        losses = nd.concat(*[loss.as_in_context(self.ctx) for loss in losses], dim=0)
        logits = nd.concat(*[part.as_in_context(self.ctx) for part in logits], dim=1)
        return (losses * logged.as_in_context(self.ctx)).sum(), logits, losses

    def _forward_backward(self, images, labels, objective):
        """Per-sample CTC losses (one array per context, the batch split over the contexts); their sum
        weighted by ``objective`` is back-propagated. Returns the losses, the logits (T, b, C) of each
        context and each context's sample count."""
        parts = zip(gluon.utils.split_and_load(images, self.ctxs, even_split=False),
                    gluon.utils.split_and_load(labels, self.ctxs, even_split=False),
                    gluon.utils.split_and_load(objective, self.ctxs, even_split=False))
        with autograd.record():
            losses, logits, weighted = [], [], []
            for part_images, part_labels, part_weights in parts:
                lengths = (part_labels > 0).sum(axis=1)
                out = self.net(self._to_input(part_images, part_images.context))          # (T, B, C)
                loss = nd.ctc_loss(out, part_labels, label_lengths=lengths, use_label_lengths=True,
                                   blank_label="first")                                   # (B,)
                losses.append(loss)
                logits.append(out)
                weighted.append((loss * part_weights).sum())
        autograd.backward(weighted)
        return [loss.detach() for loss in losses], [out.detach() for out in logits], \
            [int(out.shape[1]) for out in logits]

    # ------------------------------------------------- batch-norm running variance (unbiased, as PyTorch)
    def _running_vars(self) -> list[list[nd.NDArray]]:
        """Each BatchNorm's running variance on each context, copied before a step (crnn only)."""
        return [[norm.running_var.data(c).copy() for c in self.ctxs] for norm, _ in self.norms]

    def _unbias_running_vars(self, before: list[list[nd.NDArray]], sizes: list[int]) -> None:
        """MXNet's BatchNorm folds the *biased* batch variance into ``running_var`` (measured, mxnet 1.9.1);
        PyTorch (and the other backends of the shared crnn) fold the unbiased one, var * n / (n - 1) over the
        n = batch x H x W values of a channel. Recover the batch variance from the update and redo it so:
        ``running = m * old + (1 - m) * var * n / (n - 1)``, per context (each normalises its own part).

        On CPU the running statistics are written by the BatchNorm *backward* operator, which the engine does
        not list as writing them (a hybridized block's cached op): read right after ``autograd.backward`` they
        may still be the old ones (measured: one layer of three, every time). The read of ``data`` therefore
        goes through an op that also reads the layer's ``gamma`` gradient, which that backward operator
        writes: the engine runs it after that operator, without blocking Python."""
        for (norm, area), olds in zip(self.norms, before):
            momentum = norm._kwargs["momentum"]
            for c, old, samples in zip(self.ctxs, olds, sizes):
                n = samples * area
                if n < 2:
                    continue
                data, grad = norm.running_var.data(c), norm.gamma.grad(c)
                updated = nd.where(grad == grad, data, data)   # ordered after the backward (see above)
                data[:] = momentum * old + (updated - momentum * old) * (n / (n - 1))

    # --------------------------------------------------------------- neutral weights and the probe
    def _crnn(self) -> CRNN:
        if not isinstance(self.net, CRNN):
            raise self._no_neutral()
        return self.net

    def neutral_weights(self) -> dict[str, np.ndarray]:
        nd.waitall()   # the BN backward's untracked running-statistics writes (_unbias_running_vars)
        return neutral.to_neutral(self._crnn(), self.ctx)

    def load_neutral_weights(self, tensors: dict[str, np.ndarray]) -> None:
        neutral.from_neutral(self._crnn(), tensors)

    def probe_forward(self, inputs: np.ndarray) -> np.ndarray:
        """Outside ``autograd.record`` gluon runs in inference mode (BN running statistics)."""
        return self._crnn()(nd.array(inputs, ctx=self.ctx, dtype="float32")).asnumpy()

    def probe_step(self, inputs, targets, lengths, lr):
        self._crnn()
        labels = np.zeros_like(targets, dtype=np.float32)   # the loader's label vectors: 0 pads
        for row, length in enumerate(lengths):
            labels[row, :length] = targets[row, :length]
        _, logits, losses = self._step(nd.array(inputs, dtype="float32"), nd.array(labels, dtype="float32"),
                                       lr)
        nd.waitall()   # the running statistics too, before the next inference forward reads them
        return logits.asnumpy(), losses.asnumpy()

    def weight_arrays(self) -> list[list[np.ndarray]]:
        """The trained parameters on each context (one list per context)."""
        return [[p.data(c).asnumpy() for p in self.trainable] for c in self.ctxs]

    def predict(self, split: str):
        return self._predict_with(self.net, split)

    def predict_exported(self, fmt: str, directory: Path):
        """The eval split through the reloaded symbol + params export (ONNX is run by the core)."""
        if fmt != "mxnet":
            return None
        block = gluon.SymbolBlock.imports(str(directory / "model-symbol.json"), ["data"],
                                          str(directory / "model-0000.params"), ctx=self.ctx)
        return self._predict_with(block, "eval")

    def predict_outputs(self, split: str):
        return self._predict_with(self.net, split, head=batch_major_logits)

    def _predict_with(self, net, split: str, head=None):
        """``(ids, head(logits))`` per batch; the default head is the best paths (B, T), batch-major."""
        head = head or best_paths
        ids = self.sample_ids(split)
        offset = 0
        for images, _ in self._loader(split):
            out = head(net(self._to_input(images)))
            yield ids[offset: offset + len(out)], out
            offset += len(out)

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """``ocr-symbol.json`` + ``ocr-NNNN.params`` (HybridBlock.export) + ``ocr-NNNN.states``."""
        self.net.export(str(directory / PREFIX), epoch)
        states = directory / f"{PREFIX}-{epoch:04d}.states"
        nd.save(str(states), optimizer_state(self.trainer))
        return [directory / f"{PREFIX}-symbol.json", directory / f"{PREFIX}-{epoch:04d}.params", states]

    def load(self, directory: Path) -> None:
        epochs = sorted(int(m.group(1)) for p in directory.glob(f"{PREFIX}-*.params")
                        if (m := re.fullmatch(rf"{PREFIX}-(\d+)\.params", p.name)))
        if not epochs:
            raise RuntimeError(f"no {PREFIX}-NNNN.params checkpoint in {directory}")
        self.net.collect_params().load(str(directory / f"{PREFIX}-{epochs[-1]:04d}.params"), ctx=self.ctxs)
        states = directory / f"{PREFIX}-{epochs[-1]:04d}.states"
        if states.is_file():
            restore_optimizer_state(self.trainer, nd.load(str(states)))

    # --------------------------------------------------------------------------------------- export
    def reference_batch(self, n: int):
        """The first n eval images through the RecordIO pipeline and the network's logits (T, B, C)."""
        images, _ = next(iter(self._loader("eval")))
        inputs = self._to_input(images[:n])
        return self.sample_ids("eval")[:inputs.shape[0]], inputs.asnumpy(), self.net(inputs).asnumpy()

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        height, width = self._input_size()
        self.net(nd.zeros((1, 1, height, width), ctx=self.ctx))  # a hybridized block exports after a forward
        if fmt == "mxnet":
            self.net.export(str(directory / "model"), 0)
            return [directory / "model-symbol.json", directory / "model-0000.params"]
        if fmt == "onnx":
            return export_onnx(self.net, directory, self._input_size(), opset, self._to_input)
        raise ValueError(f"unknown export format {fmt!r}")


def optimizer_args(spec: dict) -> tuple[str, dict]:
    """gluon.Trainer optimizer name and parameters; the lr is set every step from the shared schedule."""
    common = {"learning_rate": spec["lr"], "wd": spec["weight_decay"]}
    if spec["name"] == "sgd":
        return "sgd", {**common, "momentum": spec["momentum"]}
    if spec["name"] == "adam":
        return "adam", {**common, "beta1": spec["betas"][0], "beta2": spec["betas"][1],
                        "epsilon": spec["eps"]}
    if spec["name"] == "rmsprop":
        return "rmsprop", {**common, "gamma2": spec["momentum"], "centered": False}
    if spec["name"] == "adadelta":
        return "adadelta", common
    raise ValueError(f"unknown optimizer {spec['name']!r}")


def optimizer_state(trainer: gluon.Trainer) -> dict[str, nd.NDArray]:
    """The updater's per-parameter state (momentum, Adam moments) and update counts as NDArrays."""
    updater = trainer._updaters[0]  # gluon exposes state only through pickling save_states; avoid pickle
    saved = {"num_update": nd.array([trainer._optimizer.num_update])}
    for index, state in updater.states.items():
        parts = state if isinstance(state, (tuple, list)) else (state,)
        for part, value in enumerate(parts):
            if value is not None:
                saved[f"{index}.{part}.{len(parts)}"] = value
        saved[f"count.{index}"] = nd.array([trainer._optimizer._index_update_count.get(index, 0)])
    return saved


def restore_optimizer_state(trainer: gluon.Trainer, saved: dict[str, nd.NDArray]) -> None:
    updater = trainer._updaters[0]
    grouped: dict[int, dict[int, nd.NDArray]] = {}
    sizes: dict[int, int] = {}
    for key, value in saved.items():
        if key == "num_update":
            trainer._optimizer.num_update = int(value.asscalar())
        elif key.startswith("count."):
            trainer._optimizer._index_update_count[int(key[6:])] = int(value.asscalar())
        else:
            index, part, size = (int(v) for v in key.split("."))
            grouped.setdefault(index, {})[part] = value
            sizes[index] = size
    for index, parts in grouped.items():
        values = tuple(parts.get(i) for i in range(sizes[index]))
        updater.states[index] = values if sizes[index] > 1 else values[0]
        updater.states_synced[index] = False  # copied to the right context on the next update


def export_onnx(net, directory: Path, size: tuple[int, int], opset: int, to_input) -> list[Path]:
    """ONNX through MXNet's own exporter (mx.onnx), then a check that onnxruntime runs it and agrees.

    mx.onnx in MXNet 1.9.1 takes no opset argument: it targets the installed onnx package's newest
    opset, for which several of its converters are wrong; it is pinned to ``min(opset, 13)`` here.
    """
    import onnx

    height, width = size
    symbol_prefix = directory / ".native"
    net.export(str(symbol_prefix), 0)
    used = min(opset, 13)
    newest = onnx.defs.onnx_opset_version
    onnx.defs.onnx_opset_version = lambda: used
    path = directory / "model.onnx"
    try:
        mx.onnx.export_model(f"{symbol_prefix}-symbol.json", f"{symbol_prefix}-0000.params",
                             in_shapes=[(1, 1, height, width)], in_types=[np.float32],
                             onnx_file_path=str(path), dynamic=True,
                             dynamic_input_shapes=[(None, 1, height, width)])
    finally:
        onnx.defs.onnx_opset_version = newest
        for leftover in directory.glob(".native*"):
            leftover.unlink()
    check_onnx(net, path, height, width, to_input)
    return [path]


def check_onnx(net, path: Path, height: int, width: int, to_input) -> None:
    """Run the ONNX file in onnxruntime on a fixed batch and compare with MXNet's own logits."""
    import onnxruntime

    images = nd.array(np.random.default_rng(0).integers(0, 256, (2, 1, height, width)), dtype="uint8")
    inputs = to_input(images)
    expected = net(inputs).asnumpy()
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: inputs.asnumpy()})[0]
    except Exception as exc:
        path.unlink(missing_ok=True)
        first_line = str(exc).strip().splitlines()[0][:300]
        raise RuntimeError(f"mx.onnx {mx.__version__} wrote a graph that onnxruntime "
                           f"{onnxruntime.__version__} cannot run: {first_line}") from None
    try:
        compare_logits(f"mx.onnx {mx.__version__}", expected, got)
    except RuntimeError:
        path.unlink(missing_ok=True)
        raise


def main(argv: list[str]) -> None:
    serve(MxnetTrainer, argv)
