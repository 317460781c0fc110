"""The worker side uses only the standard library, numpy, pillow and lmdb (and ``captcha`` to render).

Every ``ocrbench`` module that a backend's worker-side files import (everything in ``backends/<name>/``
except ``spec.py`` and ``launch.py``, which the core loads), plus ``ocrbench.worker``, is imported in a
fresh interpreter in which the deep-learning frameworks and the core-only packages cannot be imported;
none of them may end up in ``sys.modules``. A sixth backend's files are covered without a change here.
"""

import ast
import subprocess
import sys

from conftest import ROOT

FRAMEWORKS = ("torch", "mxnet", "tensorflow", "keras", "mindspore", "paddle", "paddleocr", "onnxruntime",
              "onnx")
CORE_ONLY = ("pydantic", "rich", "rapidfuzz", "matplotlib", "typer", "yaml", "jsonschema", "psutil", "mlflow",
             "cv2")   # cv2: only some backend envs have OpenCV; worker-side modules import it lazily
CORE_SIDE = {"spec.py", "launch.py"}   # loaded by the core through the backend entry point


def worker_side_ocrbench_modules() -> set[str]:
    """``ocrbench.*`` modules imported anywhere in the backends' worker-side files."""
    found = {"ocrbench.worker"}
    for path in sorted((ROOT / "backends").glob("*/*.py")):
        if path.name in CORE_SIDE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ocrbench":
                if node.module == "ocrbench":
                    found |= {f"ocrbench.{alias.name}" for alias in node.names}
                else:
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names
                          if a.name.split(".")[0] == "ocrbench" and a.name != "ocrbench"}
    return found


def test_the_scan_finds_what_workers_import():
    modules = worker_side_ocrbench_modules()
    assert {"ocrbench.worker", "ocrbench.codec", "ocrbench.preprocess", "ocrbench.labels",
            "ocrbench.lmdb_layout", "ocrbench.captcha_renderer", "ocrbench.protocol"} <= modules
    assert "ocrbench.recipe" not in modules and "ocrbench.metrics" not in modules


def test_worker_side_modules_load_no_framework_and_no_core_only_package():
    modules = sorted(worker_side_ocrbench_modules())
    banned = FRAMEWORKS + CORE_ONLY
    code = ("import sys\n"
            + "".join(f"sys.modules[{name!r}] = None\n" for name in banned)   # importing one raises
            + "".join(f"import {module}\n" for module in modules)
            + f"loaded = [n for n in sys.modules if n.split('.')[0] in {banned!r} "
              "and sys.modules[n] is not None]\n"
            + "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, f"worker-side modules {modules}:\n{result.stderr[-3000:]}"
