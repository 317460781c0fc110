"""PyTorch worker: runs inside the pytorch backend's environment (started by ocrbench.worker.bootstrap).

Native data is LMDB in the crnn.pytorch / DTRB layout (1-based keys; the original image bytes, so one copy
serves every resize policy). Images are read gray (PIL) and resized bilinear (PIL) to 32 x input_width, or
with ``model.params.keep_ratio`` to height 32 keeping the aspect ratio (width at most input_width), then
scaled to [-1, 1] (x / 127.5 - 1) and, when narrower, zero-padded on the right to input_width after that
scaling. Decoded images stay in memory only under ``data.cache: memory``. Loss is nn.CTCLoss with blank 0
(ocrbench's convention is PyTorch's own, so nothing is converted), mean reduction (each sample's loss is
divided by its target length, then averaged — PyTorch's default — unless ``train.loss_reduction`` says
otherwise; the per-sample losses are reduced with ``Trainer.loss_weights``). The partial
last batch of an epoch is dropped or kept as ``train.drop_last`` says (``DataLoader(drop_last=...)``).

Data parallel: started by torchrun (one process per GPU, or per CPU replica with ``--nproc``), each rank
joins the process group (NCCL on GPUs, gloo on CPUs), trains a DistributedDataParallel wrapper (gradients
averaged over ranks) on its DistributedSampler share of every epoch; rank 0 alone evaluates the plain
module and writes results.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from backends.pytorch import neutral
from backends.pytorch.model import CRNN
from ocrbench import preprocess
from ocrbench.codec import Charset, pad_targets
from ocrbench.labels import read_label_file
from ocrbench.lmdb_layout import LmdbReader, write_lmdb
from ocrbench.worker import EpochContext, EpochOrder, Trainer, serve

CHECKPOINT = "last.pt"
HEIGHT = 32


class LmdbImages(Dataset):
    """Samples of a DTRB-layout LMDB as (uint8 gray image (32, w) in 0..255, text).

    Decoded gray with PIL and resized with PIL's bilinear filter to 32 x ``width`` or, with ``keep_ratio``,
    to 32 x ``preprocess.keep_ratio_width(h, w, 32, width)`` (at most ``width``: :class:`Collate` pads it
    after normalising): ``preprocess.crnn_gray``, the shared crnn's one pipeline. With ``cache`` a decoded
    image is kept in memory after its first use (``data.cache: memory``); without it every access decodes
    again, so memory is bounded by the batch.
    """

    def __init__(self, path: Path, width: int, keep_ratio: bool = False, cache: bool = True):
        self.path = path
        self.width = width
        self.keep_ratio = keep_ratio
        self._reader: LmdbReader | None = None
        counter = LmdbReader(path)   # only for the length; each process opens its own reader to read
        self._length = len(counter)
        counter.close()
        self._cache: dict[int, tuple[np.ndarray, str]] | None = {} if cache else None

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        if self._reader is None:  # opened lazily: one handle per DataLoader worker process
            self._reader = LmdbReader(self.path)
        raw, text = self._reader[index]
        sample = (preprocess.crnn_gray(raw, HEIGHT, self.width, self.keep_ratio), text)
        if self._cache is not None:
            self._cache[index] = sample
        return sample


def normalise(gray: np.ndarray) -> np.ndarray:
    """uint8 pixels in 0..255 -> float32 x / 127.5 - 1 in [-1, 1], the float32 arithmetic of
    :func:`to_input` (divide, then subtract, each rounded to float32)."""
    return gray.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


class Collate:
    """A batch of (image, text) samples -> (images, padded targets (blank 0), target lengths).

    Stretched images stack to uint8 (B, 1, 32, W) in 0..255 (:func:`to_input` scales them). With
    ``keep_ratio`` each image is scaled to [-1, 1] (:func:`normalise`) and zero-padded on the right to
    ``width`` after that (``preprocess.pad_right``): float32 (B, 1, 32, W), already the model's input.
    """

    def __init__(self, charset: Charset, max_len: int, width: int, keep_ratio: bool = False):
        self.charset = charset
        self.max_len = max_len
        self.width = width
        self.keep_ratio = keep_ratio

    def __call__(self, batch):
        if self.keep_ratio:
            stacked = np.stack([preprocess.pad_right(normalise(image), self.width, axis=1)
                                for image, _ in batch])
        else:
            stacked = np.stack([image for image, _ in batch])
        images = torch.from_numpy(stacked)[:, None]
        targets, lengths = pad_targets([text for _, text in batch], self.charset, self.max_len)
        return images, torch.from_numpy(targets), torch.from_numpy(lengths)


# PyTorch's documented layout for convolutional networks: the model's 4-d weights and every input batch
# channels-last (NHWC in memory, still indexed NCHW), so oneDNN / cuDNN run convolutions and pooling
# without reordering. Same function, same shapes; 1.4-1.6x the training samples/s of the default layout
# on the 2-core CPU (docs/benchmarks.md).
MEMORY_FORMAT = torch.channels_last


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A :class:`Collate` batch -> the model's float32 input (B, 1, 32, W) in [-1, 1] on ``device``, in
    :data:`MEMORY_FORMAT`: uint8 pixels 0..255 are scaled (x / 127.5 - 1); float32 images (keep-ratio
    batches, normalised and padded by Collate) are only moved."""
    if images.dtype != torch.uint8:
        return images.to(device, non_blocking=True).contiguous(memory_format=MEMORY_FORMAT)
    scaled = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return scaled.contiguous(memory_format=MEMORY_FORMAT)


def best_paths(logits: torch.Tensor) -> np.ndarray:
    """Time-major logits (T, B, C) -> argmax classes (B, T), batch-major."""
    return logits.argmax(2).transpose(0, 1).cpu().numpy()


def batch_major_logits(logits: torch.Tensor) -> np.ndarray:
    """Time-major logits (T, B, C) -> float32 numpy (B, T, C)."""
    return logits.transpose(0, 1).float().cpu().numpy()


class TorchTrainer(Trainer):
    framework = "torch"
    default_loss_reduction = "char_mean"   # nn.CTCLoss's own 'mean', as crnn.pytorch trains
    native_loss = "torch.nn.CTCLoss(blank=0, reduction='none', zero_infinity=True) on log-softmax"

    def version(self) -> str:
        return torch.__version__

    def setup(self) -> dict:
        job = self.job
        threads = self.threads()
        torch.set_num_threads(threads)        # intra-op (OpenMP/oneDNN); inter-op: PyTorch's default
        self.require_gpus(lambda: torch.cuda.device_count() if torch.cuda.is_available() else 0,
                          hint=f"CUDA {torch.version.cuda}")
        if job.gpus >= 1:
            self.device = torch.device("cuda", job.local_rank)   # torchrun: one process per GPU
            torch.cuda.set_device(self.device)
            name = torch.cuda.get_device_name(self.device)
        else:
            self.device = torch.device("cpu")
            name = "cpu"
        info = {"device": name, "threads": torch.get_num_threads(), "cuda": torch.version.cuda}
        if job.processes > 1:   # torchrun set RANK, WORLD_SIZE, MASTER_ADDR/PORT
            dist.init_process_group(backend=job.distributed.comm)
            info["distributed"] = {"comm": dist.get_backend(), "torch_world_size": dist.get_world_size()}
        return info

    def seed_framework(self, seed: int) -> None:
        torch.manual_seed(seed)

    # ---------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """Canonical dataset -> one LMDB per split under the dataset's native/pytorch directory."""
        job = self.job
        reused = True
        for split in ("train", "eval"):
            target = job.native_dir / split
            if not (target / "data.mdb").is_file():
                reused = False
                samples = read_label_file(job.dataset_dir / f"{split}.txt")
                pairs = ((job.dataset_dir.joinpath(s.path).read_bytes(), s.text) for s in samples)
                write_lmdb(target, pairs)
        return {"format": "lmdb (crnn.pytorch/DTRB layout, 1-based keys)", "path": str(job.native_dir),
                "reused": reused}

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Batches of ``split``; a data-parallel training loader reads this rank's DistributedSampler
        share (its shuffle seeded by the recipe's seed and the epoch, see ``train_epoch``). A training
        loader leaves out the partial last batch as ``train.drop_last`` says."""
        width, keep_ratio = self.params["input_width"], self.keep_ratio
        dataset = LmdbImages(self.job.native_dir / split, width, keep_ratio, cache=self.cache_images)
        workers = self.job.train["loader_workers"]
        generator = torch.Generator().manual_seed(self.seed)
        sampler = None
        if shuffle:   # the epoch's order: Trainer.epoch_order, or this rank's DistributedSampler share
            sampler = (DistributedSampler(dataset, shuffle=True, seed=self.seed) if dist.is_initialized()
                       else EpochOrder(self, len(dataset)))
        share = len(sampler) if sampler is not None else len(dataset)   # the images this rank reads
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          num_workers=workers, drop_last=shuffle and self.drop_last(share, batch_size),
                          collate_fn=Collate(self.job.charset, self.max_label_len, width, keep_ratio),
                          generator=generator, persistent_workers=workers > 0,
                          pin_memory=self.device.type == "cuda")

    # --------------------------------------------------------------------------------------- model
    def build(self) -> dict:
        job = self.job
        self.params = job.model["params"]
        classes = job.charset.num_classes
        # keep_ratio is preprocessing (the data pipeline's), not a layer of the network
        network = CRNN(classes, channels=self.params["channels"], hidden=self.params["hidden"],
                       input_width=self.params["input_width"])
        self.model = network.to(self.device, memory_format=MEMORY_FORMAT)
        self.trained = self.model   # what train_epoch calls: the DDP wrapper in a data-parallel run
        if dist.is_initialized():
            self.trained = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.optimizer = make_optimizer(self.model, job.train["optimizer"])
        self.criterion = nn.CTCLoss(blank=0, reduction="none", zero_infinity=True)   # per sample
        self.train_loader = self._loader("train", job.train["batch_size"], shuffle=True)
        self.eval_loader = self._loader("eval", job.eval["batch_size"], shuffle=False)
        params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"arch": job.model["arch"], "params": params, "classes": classes}

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def input_spec(self) -> dict:
        width, keep_ratio = self.params["input_width"], self.keep_ratio
        resize = f"bilinear to {HEIGHT}x{width}, aspect ratio not kept"
        if keep_ratio:
            resize = (f"bilinear to height {HEIGHT} keeping the aspect ratio, width min({width}, "
                      f"ceil({HEIGHT} w / h)), zero-padded on the right to {width} after normalising")
        return {"shape": [None, 1, HEIGHT, width], "layout": "NCHW", "color": "gray",
                "dtype": "float32", "pixels": "x / 127.5 - 1 for x in 0..255 (range [-1, 1])",
                "resize": resize,
                "preprocess": preprocess.describe(decode="gray", decoder="pil", height=HEIGHT, width=width,
                                                  keep_ratio=keep_ratio, interpolation="pil_bilinear",
                                                  mean=[0.5], std=[0.5])}

    def train_epoch(self, ctx: EpochContext) -> None:
        self.model.train()
        self.train_loader.sampler.set_epoch(ctx.epoch)
        for images, targets, lengths in ctx.batches(self.train_loader):
            logged, _, _ = self._step(to_input(images, self.device), targets, lengths, ctx.lr())
            ctx.step(len(lengths), lambda value=logged: value.item())

    def resume_training(self) -> None:
        """Back to training mode after an evaluation inside an epoch (``predict`` left inference mode)."""
        self.model.train()

    def _step(self, inputs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, lr: float):
        """One optimizer step at ``lr``; returns the logged loss, the logits (T, B, C) and the per-sample
        CTC losses (B,), detached. The objective is the per-sample losses weighted by ``loss_weights``."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits = self.trained(inputs)
        steps, batch = logits.shape[:2]
        input_lengths = torch.full((batch,), steps, dtype=torch.long)
        losses = self.criterion(logits.log_softmax(2), targets, input_lengths, lengths)
        objective, logged = (torch.from_numpy(w).to(self.device) for w in self.loss_weights(lengths.numpy()))
        self.optimizer.zero_grad(set_to_none=True)
        (losses * objective).sum().backward()
        clip = self.job.train["grad_clip"]
        if clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        losses = losses.detach()
        return (losses * logged).sum(), logits.detach(), losses

    # --------------------------------------------------------------- neutral weights and the probe
    def neutral_weights(self) -> dict[str, np.ndarray]:
        return neutral.to_neutral(self.model)

    def load_neutral_weights(self, tensors: dict[str, np.ndarray]) -> None:
        neutral.from_neutral(self.model, tensors)

    @torch.no_grad()
    def probe_forward(self, inputs: np.ndarray) -> np.ndarray:
        self.model.eval()
        return self.model(to_input(torch.from_numpy(inputs), self.device)).cpu().numpy()

    def probe_step(self, inputs, targets, lengths, lr):
        self.model.train()
        batch = to_input(torch.from_numpy(inputs), self.device)
        _, logits, losses = self._step(batch, torch.from_numpy(targets), torch.from_numpy(lengths), lr)
        return logits.cpu().numpy(), losses.cpu().numpy()

    def weight_arrays(self) -> list[list[np.ndarray]]:
        """This rank's trained parameters (batch-norm running statistics are per rank and left out)."""
        return [[p.detach().cpu().numpy() for p in self.model.parameters()]]

    @torch.no_grad()
    def predict(self, split: str):
        self.model.eval()
        return self._predict_with(self.model, split, self.device)

    def predict_exported(self, fmt: str, directory: Path):
        """The eval split through the reloaded TorchScript export (ONNX is run by the core)."""
        if fmt != "torchscript":
            return None
        return self._predict_with(torch.jit.load(str(directory / "model.ts")).eval(), "eval",
                                  torch.device("cpu"))

    def predict_outputs(self, split: str):
        self.model.eval()
        return self._predict_with(self.model, split, self.device, head=batch_major_logits)

    @torch.no_grad()
    def _predict_with(self, model, split: str, device: torch.device, head=None):
        """``(ids, head(logits))`` per batch; the default head is the best paths (B, T), batch-major."""
        head = head or best_paths
        ids = self.sample_ids(split)
        offset = 0
        loader = (self.eval_loader if split == "eval"
                  else self._loader(split, self.job.eval["batch_size"], False))
        for images, _, _ in loader:
            out = head(model(to_input(images, device)))
            yield ids[offset: offset + len(out)], out
            offset += len(out)

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """Model + optimizer state as plain tensors/dicts (loadable with weights_only=True)."""
        path = directory / CHECKPOINT
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "epoch": epoch, "params": dict(self.params), "charset": self.job.charset.chars,
                    "torch_rng": torch.get_rng_state()}, path)
        return [path]

    def load(self, directory: Path) -> None:
        state = torch.load(directory / CHECKPOINT, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])

    # --------------------------------------------------------------------------------------- export
    def reference_batch(self, n: int):
        """The first n eval images through the LMDB pipeline and the model's logits (T, B, C) for them."""
        self.model.eval()
        images, _, _ = next(iter(self.eval_loader))
        inputs = to_input(images[:n], self.device)
        with torch.no_grad():
            outputs = self.model(inputs)
        return self.sample_ids("eval")[:len(inputs)], inputs.cpu().numpy(), outputs.cpu().numpy()

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        model = copy.deepcopy(self.model).cpu().eval()
        example = torch.zeros(2, 1, HEIGHT, self.params["input_width"])
        if fmt == "torchscript":
            path = directory / "model.ts"
            with torch.no_grad():
                torch.jit.trace(model, example).save(str(path))
            return [path]
        if fmt == "onnx":
            path = directory / "model.onnx"
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                              external_data=False,
                              input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), verbose=False)
            return sorted(p for p in directory.iterdir() if p.name.startswith("model.onnx"))
        raise ValueError(f"unknown export format {fmt!r}")


def make_optimizer(model: nn.Module, spec: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer; the lr is overwritten each step from the shared schedule."""
    params, lr, decay = model.parameters(), spec["lr"], spec["weight_decay"]
    if spec["name"] == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(spec["betas"]), eps=spec["eps"],
                                weight_decay=decay)
    if spec["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec["momentum"], weight_decay=decay)
    if spec["name"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=spec["momentum"], weight_decay=decay)
    if spec["name"] == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=decay)
    raise ValueError(f"unknown optimizer {spec['name']!r}")


def main(argv: list[str]) -> None:
    serve(TorchTrainer, argv)
