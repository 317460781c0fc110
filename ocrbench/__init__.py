"""ocrbench: one YAML recipe in, native CRNN/CTC jobs in five frameworks out, one metrics JSON.

This package is imported both by the core (the CLI, in its own environment) and by backend workers (in each
framework's environment). The modules a worker imports (``ocrbench.worker``, ``ocrbench.job``,
``ocrbench.codec``, ``ocrbench.predictions``, ``ocrbench.schedule``, ``ocrbench.atomic``, ``ocrbench.errors``,
``ocrbench.labels``, ``ocrbench.lmdb_layout``, ``ocrbench.preprocess``, ``ocrbench.captcha_renderer``) use
only the standard library, numpy, pillow and lmdb (and the ``captcha`` package, to render). No module here
imports a deep-learning framework.
"""

__version__ = "0.1.0"
