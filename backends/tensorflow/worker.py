"""TensorFlow worker: runs inside the tensorflow backend's environment (started by ocrbench.worker.bootstrap).

Native data is CRNN_Tensorflow's TFRecords layout (see ``tfrecords.py``), read with tf.data. Inside this
backend the **CTC blank is the last class** and character ``charset[k]`` is class ``k`` (upstream's
convention, also in the exports' metadata); best paths are converted to ocrbench's blank-0 convention in
``predict`` (``ocrbench.codec.from_blank_last``). Images are NHWC; ShadowNet reads BGR, the shared crnn
reads gray, both scaled to [-1, 1]. With the crnn's ``keep_ratio`` the images are resized to height 32
keeping their aspect ratio (width ``ocrbench.preprocess.keep_ratio_width``), normalised and padded on the
right with zeros (0.0, after normalising) to the input width, per image in the tf.data map. Loss:
``tf.nn.ctc_loss`` on sparse labels (the native CTC kernel, blank last), one value per sample, reduced with
``Trainer.loss_weights`` (``train.loss_reduction``; the backend's own is upstream's mean over the batch).
The partial last batch of an epoch is dropped or kept as ``train.drop_last`` says
(``padded_batch(drop_remainder=...)``).
The training step is a ``tf.function`` without XLA (measured slower on CPU; see docs/backends.md).

Memory: with ``data.cache: memory`` the parsed records are cached by tf.data and each epoch shuffles them
in a buffer of the whole split; with ``none`` nothing whole-split is held but the record
byte offsets and the epoch's order (the same seeded order: ``tfrecords.shuffled_order``), and the records
are read from the files as the batches need them.

Data parallel with tf.distribute: on one machine a ``MirroredStrategy`` over the GPUs, or over N logical
CPU devices (``--nproc N``: the CPU is split with ``set_logical_device_configuration``, gradients summed
by ``ReductionToOneDevice``); across machines a ``MultiWorkerMirroredStrategy`` (ring all-reduce) from
the ``TF_CONFIG`` the core sets on each node. Every step's global batch is split over the replicas; each
replica weights its samples' CTC losses with ``loss_weights`` of its own labels divided by the replicas in
sync, and ``apply_gradients`` sums the replicas' gradients: the average of the replicas' objectives (as
DDP averages ranks), with ``mean`` the global mean — what ``tf.nn.compute_average_loss`` (the replica's sum
over its batch x the replicas) gave before.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from backends.tensorflow import neutral, tfrecords  # noqa: E402
from backends.tensorflow.model import HEIGHT, build, input_channels  # noqa: E402
from ocrbench import preprocess  # noqa: E402
from ocrbench.codec import from_blank_last  # noqa: E402
from ocrbench.weights import blank_first  # noqa: E402
from ocrbench.worker import EpochContext, Job, Trainer, compare_logits, serve  # noqa: E402

SHUFFLE_BUFFER = 100_000


class TensorFlowTrainer(Trainer):
    framework = "tensorflow"
    default_loss_reduction = "mean"   # upstream's: the per-sample losses averaged over the batch
    native_loss = "tf.nn.ctc_loss(sparse labels, blank_index=-1) per sample"

    def version(self) -> str:
        return tf.__version__

    def setup(self) -> dict:
        job = self.job
        threads = self.threads()
        set_threads(threads)
        gpus = tf.config.list_physical_devices("GPU")
        self.require_gpus(lambda: len(gpus), hint="the registry's tensorflow-cpu has no CUDA: point the "
                          "backend at an interpreter with a CUDA build via --python")
        self.device = "/GPU:0" if job.gpus >= 1 else "/CPU:0"
        if job.gpus == 0 and gpus:
            tf.config.set_visible_devices([], "GPU")
        self.strategy = self._strategy(job)   # after the device and thread settings, before any op
        info = {"device": self.device, "threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "keras": keras.__version__}
        if self.strategy is not None:
            info["device"] = ", ".join(self.strategy.extended.worker_devices)
            info["distributed"] = {"strategy": type(self.strategy).__name__,
                                   "replicas_in_sync": self.strategy.num_replicas_in_sync}
        return info

    def seed_framework(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)   # Python's, numpy's and TensorFlow's generators

    @staticmethod
    def _strategy(job: Job):
        """The tf.distribute strategy the job asks for (None: one device, no strategy)."""
        kind = job.distributed.strategy
        if kind == "MultiWorkerMirroredStrategy":   # TF_CONFIG names the workers and this one's index
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING)
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        if kind == "MirroredStrategy" and job.local_replicas > 1:
            if job.gpus:
                return tf.distribute.MirroredStrategy([f"/GPU:{i}" for i in range(job.local_replicas)])
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(job.local_replicas)])
            return tf.distribute.MirroredStrategy([f"/CPU:{i}" for i in range(job.local_replicas)],
                                                  cross_device_ops=tf.distribute.ReductionToOneDevice())
        return None

    @property
    def global_batch(self) -> int:
        """Images per optimizer step over every replica of every worker."""
        return self.job.train["batch_size"] * self.job.world_size

    # ---------------------------------------------------------------------------------------- data
    def prepare(self) -> dict:
        """Canonical dataset -> TFRecords + dictionaries under native/tensorflow/<W>x32 (stretched) or
        <W>x32-keepratio (the crnn's keep_ratio), shared by runs."""
        job = self.job
        self.width = job.model["params"]["input_width"]
        self.native = job.native_dir / tfrecords.native_name(self.width, self.keep_ratio)
        reused = (self.native / "char_dict" / "ord_map.json").is_file()
        if not reused:
            tfrecords.write_native(job.dataset_dir, job.charset.chars, self.native, self.width,
                                   self.keep_ratio)
        self.records = {split: tfrecords.parsed_records(self.native, split, self.width, self.keep_ratio,
                                                        cache=self.cache_images)
                        for split in ("train", "eval")}
        self.index = None if self.cache_images else tfrecords.RecordIndex(
            tfrecords.record_files(self.native, "train"))
        self.sizes = {split: len(self.sample_ids(split)) for split in ("train", "eval")}
        layout = "images/labels/imagepaths" + ("/widths, aspect ratio kept" if self.keep_ratio else "")
        return {"format": f"tfrecords (CRNN_Tensorflow layout: {layout} + char_dict, ord_map)",
                "path": str(self.native), "reused": reused,
                "cache": "memory (tf.data cache)" if self.cache_images else "none (streamed from the files)"}

    # --------------------------------------------------------------------------------------- model
    def build(self) -> dict:
        job = self.job
        arch = job.model["arch"]
        self.arch, self.params = arch, job.model["params"]
        self.classes = job.charset.num_classes          # characters + 1; blank = classes - 1
        scope = self.strategy.scope() if self.strategy is not None else tf.device(self.device)
        with scope:
            self.model = build(arch, self.classes, self.network_params)
            self.optimizer = make_optimizer(job.train["optimizer"])
            self.optimizer.build(self.model.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.steps = self.model.output_shape[1]
        self._train_step = self._make_train_step()
        self._logits = tf.function(lambda x: self.model(x, training=False), input_signature=[self._spec()])
        params = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        return {"arch": arch, "params": params, "classes": self.classes, "blank": self.classes - 1,
                "xla": False}

    def _spec(self, dtype=tf.float32) -> tf.TensorSpec:
        return tf.TensorSpec([None, HEIGHT, self.width, input_channels(self.arch)], dtype, name="image")

    def normalise(self, images_bgr: tf.Tensor) -> tf.Tensor:
        """uint8 BGR (..., 32, w, 3) in 0..255 -> float32 in [-1, 1], NHWC: gray (one channel,
        ``tf.image.rgb_to_grayscale`` of the float RGB) for crnn, BGR for shadownet."""
        x = tf.cast(images_bgr, tf.float32)
        if input_channels(self.arch) == 1:
            x = tf.image.rgb_to_grayscale(x[..., ::-1])
        return x / 127.5 - 1.0

    def to_input(self, batch: tf.Tensor) -> tf.Tensor:
        """A pipeline batch -> the model input float32 (B, 32, W, C) in [-1, 1]. Stretched records arrive
        as uint8 BGR and are normalised here (inside the train step's graph); keep-ratio batches were
        normalised and zero-padded per image by the pipeline (``keep_ratio_input``), and the probe's canonical
        batches are model input already: float32 passes unchanged."""
        return batch if batch.dtype == tf.float32 else self.normalise(batch)

    def keep_ratio_input(self, image, labels, length, sample_id):
        """One keep-ratio record (uint8 BGR (32, w, 3), w <= W) -> normalised float32 (32, W, C), padded on
        the right with zeros *after* normalising (0.0, not a black pixel)."""
        x = self.normalise(image)
        x = tf.pad(x, [[0, 0], [0, self.width - tf.shape(x)[1]], [0, 0]])
        return tf.ensure_shape(x, [HEIGHT, self.width, input_channels(self.arch)]), labels, length, sample_id

    def _transform(self):
        """The per-record map before batching: the keep-ratio normalise-and-pad, or nothing."""
        return self.keep_ratio_input if self.keep_ratio else None

    def _replica_step(self, images, labels, lengths):
        """One replica's training step (the one step function of ``train_epoch`` and ``probe_step``):
        ``images`` as ``to_input`` takes them, zero-padded classes (blank last) and label lengths. The
        objective is the per-sample CTC losses weighted by ``loss_weights`` of this replica's labels,
        divided by the replicas in sync (``apply_gradients`` sums over them). Returns the logged loss (this
        replica's share of it), the logits (B, T, C) and the per-sample losses (B,)."""
        variables = self.model.trainable_variables
        decay = self.job.train["optimizer"]["weight_decay"]
        clip = self.job.train["grad_clip"]
        replicas = self.strategy.num_replicas_in_sync if self.strategy is not None else 1
        batch = tf.shape(images)[0]
        objective, logged = tf.numpy_function(self.loss_weights, [lengths], [tf.float32, tf.float32],
                                              stateful=False)
        objective, logged = (tf.reshape(w, [batch]) / replicas for w in (objective, logged))
        sparse = dense_to_sparse(labels, lengths)
        with tf.GradientTape() as tape:
            logits = self.model(self.to_input(images), training=True)          # (B, T, C)
            losses = tf.nn.ctc_loss(sparse, logits, None, tf.fill([batch], self.steps),
                                    logits_time_major=False, blank_index=-1)
            loss = tf.reduce_sum(losses * objective)
        grads = tape.gradient(loss, variables)
        if replicas > 1 and (decay or clip):   # decay and clipping apply to the summed gradient
            grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if decay:  # L2 as in the other backends' optimizers (added to the gradient, not decoupled)
            grads = [g + decay * v for g, v in zip(grads, variables)]
        if clip:
            grads, _ = tf.clip_by_global_norm(grads, clip)
        if replicas > 1 and (decay or clip):   # apply_gradients sums over replicas again
            grads = [g / replicas for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        return tf.reduce_sum(losses * logged), logits, losses

    def _label_specs(self) -> list[tf.TensorSpec]:
        return [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]

    def _make_train_step(self):
        """``_replica_step`` for the pipeline's batches, under the strategy when there is one; returns the
        step's logged loss (summed over the replicas' shares)."""
        strategy = self.strategy
        images = (tf.TensorSpec([None, HEIGHT, self.width, input_channels(self.arch)], tf.float32)
                  if self.keep_ratio else tf.TensorSpec([None, HEIGHT, self.width, 3], tf.uint8))
        signature = [images, *self._label_specs()]
        if strategy is None:
            return tf.function(lambda *batch: self._replica_step(*batch)[0], input_signature=signature)

        @tf.function
        def distributed_step(images, labels, lengths):
            per_replica = strategy.run(lambda *batch: self._replica_step(*batch)[0],
                                       args=(images, labels, lengths))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return distributed_step

    def _drop_remainder(self) -> bool:
        """``train.drop_last``: the partial last global batch is left out (each epoch's shuffle leaves out
        different samples), unless the split is smaller than one batch."""
        return self.drop_last(self.sizes["train"], self.global_batch)

    def steps_per_epoch(self) -> int:
        return self.epoch_steps(self.sizes["train"], self.global_batch)

    def input_spec(self) -> dict:
        gray = input_channels(self.arch) == 1
        color = "gray (0.2989 R + 0.587 G + 0.114 B, tf.image.rgb_to_grayscale)" if gray else "BGR"
        # TFRecords hold PIL-resized pixels (tfrecords.load_bgr); gray is computed in TF after the resize
        described = preprocess.describe(decode="rgb" if gray else "bgr", decoder="pil", height=HEIGHT,
                                        width=self.width, interpolation="pil_bilinear", mean=[0.5], std=[0.5],
                                        layout="NHWC", to_gray=preprocess.TF_GRAY if gray else None,
                                        keep_ratio=self.keep_ratio)
        if self.keep_ratio:
            resize = (f"bilinear (PIL) to height {HEIGHT} keeping the aspect ratio, width min({self.width}, "
                      f"ceil({HEIGHT} w / h)), then padded on the right to {self.width} with zeros after "
                      "normalising")
        else:
            resize = f"bilinear to {HEIGHT}x{self.width}, aspect ratio not kept"
        return {"shape": [None, HEIGHT, self.width, input_channels(self.arch)], "layout": "NHWC",
                "color": color, "dtype": "float32", "pixels": "x / 127.5 - 1 for x in 0..255 (range [-1, 1])",
                "resize": resize, "preprocess": described}

    def output_spec(self) -> dict:
        return {"blank": self.classes - 1, "labels": "charset[k] is class k; the blank is the last class",
                "output": "logits (batch, time, classes), batch-major", "layout": "BTC",
                "activation": "logits"}

    def _train_batches(self, epoch: int) -> tf.data.Dataset:
        """The epoch's training batches in its seeded order (``epoch_seed``): the cached records shuffled
        in a whole-split buffer (``data.cache: memory``), or the same order read record by record from the
        files (``none``: only the order and the record offsets are whole-split)."""
        seed, drop = self.epoch_seed(epoch), self._drop_remainder()
        if self.cache_images:
            return tfrecords.batches(self.records["train"], self.global_batch, seed, SHUFFLE_BUFFER,
                                     drop_remainder=drop, transform=self._transform())
        order = tfrecords.shuffled_order(len(self.index), seed, SHUFFLE_BUFFER)
        records = tfrecords.streamed_records(self.native, "train", self.width, order, self.keep_ratio,
                                             self.index)
        return tfrecords.batches(records, self.global_batch, drop_remainder=drop, transform=self._transform())

    def train_epoch(self, ctx: EpochContext) -> None:
        data = self._train_batches(ctx.epoch)
        if self.strategy is not None:   # each replica gets its slice of every global batch
            data = self.strategy.experimental_distribute_dataset(data.map(lambda *x: x[:3]).with_options(
                shard_by_data()))
        share = self.job.processes
        # under a strategy: the images still to come this epoch, over every worker
        left = self.sizes["train"] - ctx.skip * self.global_batch
        with tf.device(self.device):
            for images, labels, lengths, *_ in ctx.batches(data):
                self._set_lr(ctx.lr())
                loss = self._train_step(images, labels, lengths)
                taken = min(self.global_batch, left)
                left -= taken
                ctx.step(taken // share if self.strategy else int(images.shape[0]), float(loss))

    def _set_lr(self, lr: float) -> None:
        """The step's learning rate and, for Adam, its epsilon: Keras adds epsilon to sqrt(v) and folds
        the bias correction into the step size, so ``Trainer.adam_epsilon`` makes the update PyTorch's."""
        self.optimizer.learning_rate.assign(lr)
        if isinstance(self.optimizer, keras.optimizers.Adam):
            self.optimizer.epsilon.assign(self.adam_epsilon(int(self.optimizer.iterations.numpy()) + 1))

    # --------------------------------------------------------------- neutral weights and the probe
    def _crnn(self) -> keras.Model:
        if self.arch != "crnn":
            raise self._no_neutral()
        return self.model

    def neutral_weights(self) -> dict[str, np.ndarray]:
        return neutral.to_neutral(self._crnn())

    def load_neutral_weights(self, tensors: dict[str, np.ndarray]) -> None:
        neutral.from_neutral(self._crnn(), tensors)

    def probe_forward(self, inputs: np.ndarray) -> np.ndarray:
        """Canonical NCHW -> NHWC, the inference-mode logits (B, T, C; blank last) -> (T, B, C), blank 0."""
        self._crnn()
        with tf.device(self.device):
            logits = self._logits(tf.constant(inputs.transpose(0, 2, 3, 1))).numpy()
        return blank_first(logits.transpose(1, 0, 2), axis=2)

    def probe_step(self, inputs, targets, lengths, lr):
        """``_replica_step`` on the canonical batch (NCHW -> NHWC; blank-0 classes -> blank last: class
        k + 1 -> k), without a strategy (the probe is one device)."""
        self._crnn()
        if self.strategy is not None:
            raise NotImplementedError("the equivalence probe runs on one device, not under "
                                      f"{type(self.strategy).__name__}")
        if not hasattr(self, "_probe_step"):
            spec = tf.TensorSpec([None, HEIGHT, self.width, input_channels(self.arch)], tf.float32)
            self._probe_step = tf.function(self._replica_step, input_signature=[spec, *self._label_specs()])
        lengths = np.asarray(lengths, dtype=np.int32)
        mask = np.arange(targets.shape[1])[None, :] < lengths[:, None]
        labels = np.where(mask, targets - 1, 0).astype(np.int32)   # padding is masked by the lengths
        with tf.device(self.device):
            self._set_lr(lr)
            _, logits, losses = self._probe_step(tf.constant(inputs.transpose(0, 2, 3, 1)),
                                                 tf.constant(labels), tf.constant(lengths))
        return blank_first(logits.numpy().transpose(1, 0, 2), axis=2), losses.numpy()

    def weight_arrays(self) -> list[list[np.ndarray]]:
        """The trained variables as each local replica holds them (one list per replica)."""
        variables = self.model.trainable_variables
        if self.strategy is None:
            return [[v.numpy() for v in variables]]
        per_variable = [self.strategy.experimental_local_results(getattr(v, "value", v)) for v in variables]
        return [[values[i].numpy() for values in per_variable] for i in range(len(per_variable[0]))]

    def predict(self, split: str):
        return self._predict_with(self._logits, split)

    def predict_exported(self, fmt: str, directory: Path):
        """The eval split through the reloaded SavedModel (its ``logits`` output) or the TFLite model in
        TFLite's interpreter (ONNX is run by the core)."""
        if fmt == "savedmodel":
            serve = tf.saved_model.load(str(directory / "saved_model")).signatures["serving_default"]
            return self._predict_with(lambda x: serve(image=x)["logits"], "eval")
        if fmt == "tflite":
            interpreter = tf.lite.Interpreter(model_path=str(directory / "model.tflite"))
            return self._predict_with(lambda x: run_tflite(interpreter, x.numpy()), "eval")
        return None

    def predict_outputs(self, split: str):
        """Batch-major logits (B, T, C), the blank last (as :meth:`output_spec`)."""
        return self._predict_with(self._logits, split, head=lambda logits: np.asarray(logits, np.float32))

    def _predict_with(self, logits_fn, split: str, head=None):
        """``(ids, head(logits))`` per batch; the default head is the best paths (B, T) in the blank-0
        convention."""
        head = head or (lambda logits: from_blank_last(tf.argmax(logits, axis=2).numpy(), self.classes))
        data = tfrecords.batches(self.records[split], self.job.eval["batch_size"],
                                 transform=self._transform())
        with tf.device(self.device):
            for images, _, _, ids in data:
                yield [i.decode("utf-8") for i in ids.numpy()], head(logits_fn(self.to_input(images)))

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, directory: Path, epoch: int) -> list[Path]:
        """tf.train.Checkpoint (model + optimizer) as ``<arch>.ckpt.index`` + ``.data-*``."""
        prefix = Path(self.checkpoint.write(str(directory / f"{self.arch}.ckpt")))
        return sorted(prefix.parent.glob(prefix.name + ".*"))

    def load(self, directory: Path) -> None:
        prefix = directory / f"{self.arch}.ckpt"
        if not Path(str(prefix) + ".index").is_file():
            raise RuntimeError(f"no {prefix.name} checkpoint in {directory}")
        self.checkpoint.read(str(prefix)).assert_existing_objects_matched()

    # --------------------------------------------------------------------------------------- export
    def reference_batch(self, n: int):
        """The first n eval records through the TFRecord pipeline and the logits (B, T, C, blank last)."""
        images, _, _, ids = next(iter(tfrecords.batches(self.records["eval"], n,
                                                        transform=self._transform())))
        with tf.device(self.device):
            inputs = self.to_input(images)
            outputs = self._logits(inputs)
        return [i.decode("utf-8") for i in ids.numpy()], inputs.numpy(), outputs.numpy()

    def export(self, fmt: str, directory: Path, opset: int) -> list[Path]:
        probe = np.random.default_rng(0).uniform(-1, 1, (2, HEIGHT, self.width, input_channels(self.arch)))
        probe = probe.astype(np.float32)
        expected = self._logits(probe).numpy()
        if fmt == "savedmodel":
            return export_savedmodel(self, directory / "saved_model", probe, expected)
        if fmt == "tflite":
            return export_tflite(self, directory / "model.tflite", probe, expected)
        if fmt == "onnx":
            return export_onnx(self, directory / "model.onnx", opset, probe, expected)
        raise ValueError(f"unknown export format {fmt!r}")


def shard_by_data() -> tf.data.Options:
    """Across workers, shard by element (the TFRecords are one file per split, so not by file)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def dense_to_sparse(labels: tf.Tensor, lengths: tf.Tensor) -> tf.SparseTensor:
    """Zero-padded (B, Lmax) labels + lengths -> SparseTensor (tf.nn.ctc_loss's native CTC kernel)."""
    mask = tf.sequence_mask(lengths, tf.shape(labels)[1])
    indices = tf.where(mask)
    return tf.SparseTensor(indices, tf.gather_nd(labels, indices), tf.cast(tf.shape(labels), tf.int64))


def make_optimizer(spec: dict) -> keras.optimizers.Optimizer:
    """The recipe's optimizer (weight decay is applied as L2 in the train step); lr is set every step."""
    lr = spec["lr"]
    if spec["name"] == "sgd":
        return keras.optimizers.SGD(lr, momentum=spec["momentum"])
    if spec["name"] == "adam":
        adam = keras.optimizers.Adam(lr, beta_1=spec["betas"][0], beta_2=spec["betas"][1],
                                     epsilon=spec["eps"])
        # a variable, not the traced constant: set every step to Trainer.adam_epsilon (_set_lr)
        adam.epsilon = keras.Variable(spec["eps"], trainable=False, name="adam_corrected_eps",
                                      dtype="float32")
        return adam
    if spec["name"] == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=spec["momentum"])
    if spec["name"] == "adadelta":
        return keras.optimizers.Adadelta(lr)
    raise ValueError(f"unknown optimizer {spec['name']!r}")


class Serving(tf.Module):
    """The SavedModel: ``serving_default(image)`` -> ``logits`` (B, T, C; blank last) and ``labels``
    (B,) strings, greedy CTC decoded (argmax, merge repeats, drop blanks) inside the graph."""

    def __init__(self, model: keras.Model, charset: str, spec: tf.TensorSpec):
        super().__init__()
        self.model = model
        self.table = tf.constant(list(charset) + [""])  # class k -> charset[k]; the blank -> ""
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, image):
        logits = self.model(image, training=False)
        best = tf.argmax(logits, axis=2, output_type=tf.int32)
        previous = tf.concat([tf.fill([tf.shape(best)[0], 1], -1), best[:, :-1]], axis=1)
        keep = tf.not_equal(best, previous)
        chars = tf.where(keep, tf.gather(self.table, best), "")
        return {"logits": logits, "labels": tf.strings.reduce_join(chars, axis=1)}


def export_savedmodel(trainer: TensorFlowTrainer, path: Path, probe: np.ndarray, expected: np.ndarray):
    module = Serving(trainer.model, trainer.job.charset.chars, trainer._spec())
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    reloaded = tf.saved_model.load(str(path)).signatures["serving_default"]
    compare_logits("SavedModel", expected, reloaded(image=tf.constant(probe))["logits"].numpy())
    return sorted(p for p in path.rglob("*") if p.is_file())


def run_tflite(interpreter, batch: np.ndarray) -> np.ndarray:
    """One batch through a TFLite interpreter, its input resized to the batch's shape."""
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def export_tflite(trainer: TensorFlowTrainer, path: Path, probe: np.ndarray, expected: np.ndarray):
    """Variables are frozen into constants first: converting the Keras 3 function directly keeps them as
    resource variables that the interpreter never initialises (measured: garbage/NaN logits)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(trainer._logits.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    path.write_bytes(converter.convert())
    compare_logits("TFLite", expected, run_tflite(tf.lite.Interpreter(model_path=str(path)), probe))
    return [path]


def export_onnx(trainer: TensorFlowTrainer, path: Path, opset: int, probe: np.ndarray, expected: np.ndarray):
    import onnxruntime
    import tf2onnx

    tf2onnx.convert.from_function(trainer._logits, input_signature=[trainer._spec()], opset=opset,
                                  output_path=str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compare_logits("ONNX (onnxruntime)", expected,
                   session.run(None, {session.get_inputs()[0].name: probe})[0])
    return [path]


def set_threads(threads: int) -> None:
    """TensorFlow's pools, before any op runs: ``threads`` intra-op (inside one kernel) and up to 2 inter-op
    (independent ops side by side: the bidirectional LSTM's two directions, tf.data beside the step). The
    minimal loop (benchmarks/minimal/tensorflow_loop.py) calls this too, so that ``ocrbench bench`` compares
    the steps, not two thread settings."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))


def main(argv: list[str]) -> None:
    serve(TensorFlowTrainer, argv)
