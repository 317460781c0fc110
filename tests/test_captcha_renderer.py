"""The captcha renderer (ocrbench.captcha_renderer) and the core modules the MXNet worker imports run
without the core's own dependencies: a worker env has only numpy, pillow and captcha."""

import subprocess
import sys

from conftest import ROOT

CORE_ONLY = ("pydantic", "rich", "rapidfuzz", "matplotlib", "typer", "yaml", "jsonschema")
WORKER_IMPORTS = ("ocrbench.captcha_renderer", "ocrbench.preprocess", "ocrbench.codec", "ocrbench.labels",
                  "ocrbench.worker")


def test_renderer_and_worker_imports_need_no_core_only_package():
    blocked = "".join(f"sys.modules[{name!r}] = None\n" for name in CORE_ONLY)  # importing one fails
    code = ("import sys\n" + blocked
            + "".join(f"import {module}\n" for module in WORKER_IMPORTS)
            + "from ocrbench.captcha_renderer import render_captcha\n"
            + "config = dict(seed=1, charset='0123456789', min_len=4, max_len=4, width=80, height=32, fonts=[],"
              " font_sizes=[24])\n"
            + "png, text = render_captcha(config, 'online-1', 0)\n"
            + "assert png[:8] == b'\\x89PNG\\r\\n\\x1a\\n' and len(text) == 4\n"
            + f"loaded = [name for name in {CORE_ONLY!r} if sys.modules.get(name) is not None]\n"
            + "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_render_is_a_pure_function_of_its_arguments():
    from ocrbench.captcha_renderer import render_captcha

    config = dict(seed=4, charset="ab", min_len=2, max_len=5, width=80, height=32, fonts=[], font_sizes=[24])
    assert render_captcha(config, "train", 3) == render_captcha(config, "train", 3)
    assert render_captcha(config, "train", 3) != render_captcha(config, "train", 4)
