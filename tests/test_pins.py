"""tests/pins.py reads the version a backend's requirements.txt pins (the e2e tests compare against it)."""

import pytest

from conftest import write
from ocrbench.backend import load_backends
from pins import pinned_version


def test_every_backend_pins_its_framework():
    for spec in load_backends().values():
        version = pinned_version(spec.name, spec.distribution)
        assert version and version[0].isdigit() and "==" not in version, (spec.name, version)


def test_reads_the_pin_and_ignores_comments_and_name_spelling(tmp_path):
    write(tmp_path / "backends" / "demo" / "requirements.txt",
          "# torch==0.1 is only a comment\nnumpy>=1.0\nOpenCV_Python.Headless==4.10.0.84  # cv2\n"
          "torch==2.13.0\n")
    assert pinned_version("demo", "torch", tmp_path) == "2.13.0"
    assert pinned_version("demo", "opencv-python-headless", tmp_path) == "4.10.0.84"
    with pytest.raises(LookupError, match="numpy==VERSION"):
        pinned_version("demo", "numpy", tmp_path)   # not pinned with ==
