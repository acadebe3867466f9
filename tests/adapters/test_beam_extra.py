"""The optional 'beam' extra seen from the main environment: no Beam unless asked for.

These run everywhere (tests/adapters/test_beam.py needs Beam and runs in .venv-beam).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from ..helpers import ROOT, TIMEOUT


def test_import_udf_does_not_import_beam() -> None:
    code = "import sys, udf, udf.agent, udf.cli; print(sorted(m for m in sys.modules if m.startswith('apache_beam')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("apache_beam") is not None, reason="Apache Beam is installed here")
def test_udf_beam_without_beam_says_which_extra_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import udf.beam"], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert done.returncode == 1
    assert "ImportError: udf.beam needs Apache Beam: pip install 'kapacitor-udf[beam]'" in done.stderr


def test_bundled_hosts_sample_is_what_its_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_sample_hosts", os.path.join(ROOT, "scripts", "gen_sample_hosts.py")
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    with open(generator.PATH, encoding="utf-8") as f:
        bundled = f.read().splitlines()
    assert bundled == generator.lines()
    assert len({line.split(",")[1] for line in bundled}) == generator.HOSTS >= 100
