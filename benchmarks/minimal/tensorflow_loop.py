"""Minimal TensorFlow loop of the shared crnn (benchmarks/minimal/harness.py): the Keras model in NHWC, a
``tf.function`` training step (``mode: xla`` compiles it with ``jit_compile=True``), the backend's thread
pools (``set_threads``: intra-op threads from the config, inter-op up to 2), Adam, ``tf.nn.ctc_loss`` on
sparse labels with the blank last (the native kernel)."""

import os

import harness

harness.repository_on_path(__file__)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from backends.tensorflow.model import crnn  # noqa: E402
from backends.tensorflow.worker import set_threads  # noqa: E402


class TensorFlowLoop(harness.Loop):
    framework = "tensorflow"

    def __init__(self, cfg: harness.Config, batch: harness.Batch):
        set_threads(cfg.threads)
        keras.utils.set_random_seed(cfg.seed)
        self.cfg = cfg
        self.model = crnn(cfg.classes, cfg.input_width, cfg.channels, cfg.hidden)
        self.optimizer = keras.optimizers.Adam(cfg.lr, beta_1=cfg.betas[0], beta_2=cfg.betas[1],
                                               epsilon=cfg.eps)
        self.x = tf.constant(batch.inputs.transpose(0, 2, 3, 1))            # NHWC
        self.eval_x = tf.constant(batch.eval_inputs.transpose(0, 2, 3, 1))
        blank_last = batch.targets - 1                                      # classes 0..C-2, blank C-1
        self.labels = tf.sparse.from_dense(tf.constant(blank_last))
        self.logit_lengths = tf.fill([cfg.batch], cfg.input_width // 4 + 1)
        jit = cfg.mode == "xla"
        self.step = tf.function(self._step, jit_compile=jit)
        self.predict = tf.function(lambda x: tf.argmax(self.model(x, training=False), axis=2),
                                   jit_compile=jit)
        self.last = None
        assert np.all(batch.targets > 0)

    def _step(self):
        with tf.GradientTape() as tape:
            logits = self.model(self.x, training=True)                     # (B, T, C)
            loss = tf.reduce_mean(tf.nn.ctc_loss(self.labels, logits, None, self.logit_lengths,
                                                 logits_time_major=False, blank_index=-1))
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def version(self) -> str:
        return tf.__version__

    def train_step(self) -> None:
        self.last = self.step()

    def infer(self) -> None:
        self.last = self.predict(self.eval_x)

    def sync(self) -> None:
        if self.last is not None:
            self.last.numpy()

    def threads_used(self) -> int:
        return tf.config.threading.get_intra_op_parallelism_threads()

    def describe(self) -> dict:
        return {"mode": self.cfg.mode or "tf.function", "layout": "NHWC"}


if __name__ == "__main__":
    harness.main(TensorFlowLoop)
