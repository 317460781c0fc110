"""ocrbench's bundled backends, one package per framework.

Each ``backends/<name>/`` holds ``spec.py`` (loaded by the core through the ``ocrbench.backends`` entry
point; never imports the framework), ``requirements.txt`` (the pinned environment) and ``worker.py`` (run
inside that environment). See docs/backends.md.
"""
