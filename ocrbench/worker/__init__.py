"""The worker side of the backend protocol: one driver loop shared by every backend.

A backend's worker module (run inside the backend's own environment) subclasses :class:`Trainer` — the
framework-specific parts — and calls :func:`serve` with that class. The driver owns everything else,
identically for all backends: reading the job spec (``ocrbench.job``), seeding, the epoch loop,
evaluation cadence, CTC decoding (one decoder, in ``ocrbench.codec``), prediction files
(``ocrbench.predictions``), resume bookkeeping, exports bookkeeping, timing and the JSON-lines event
stream. Metrics are *not* computed here: the core scores the prediction files.

Data-parallel runs: every rank runs this driver with the same job spec; the launcher (torchrun, paddle's
launch, msrun, ...) tells each its rank. Only **rank 0 writes**: events, evaluations, predictions,
checkpoints and exports. Other ranks train, print their final weights' digest to their log and exit.

Standard library and numpy only.
"""

from ocrbench.job import JOB_SCHEMA, Dataset, Distributed, Job, JobSpecError
from ocrbench.worker.driver import (
                                     REFERENCE_BATCH,
                                     peak_rss_mb,
                                     report_weights,
                                     run_job,
                                     serve,
                                     weights_digest,
)
from ocrbench.worker.events import EpochContext, Events, PartialEpoch, check_parent
from ocrbench.worker.trainer import (
                                     DEFAULT_OUTPUT_SPEC,
                                     EpochOrder,
                                     LOSS_REDUCTIONS,
                                     LOSS_UNITS,
                                     SHUFFLE_SEED_STRIDE,
                                     LossSpec,
                                     Trainer,
                                     compare_logits,
)

__all__ = ["DEFAULT_OUTPUT_SPEC", "JOB_SCHEMA", "LOSS_REDUCTIONS", "LOSS_UNITS", "REFERENCE_BATCH",
           "SHUFFLE_SEED_STRIDE", "Dataset", "Distributed", "EpochContext", "EpochOrder", "Events", "Job",
           "JobSpecError", "LossSpec", "PartialEpoch", "Trainer", "check_parent", "compare_logits",
           "peak_rss_mb", "report_weights", "run_job", "serve", "weights_digest"]
