"""The test matrix, as nox sessions: CI's steps after the README's suite (docs/testing.md).

    .venv/bin/python -m nox -l                  # the sessions
    .venv/bin/python -m nox -s lint protobuf beam flink pythons stress   # the matrix (CI: .ci/run)
    .venv/bin/python -m nox -s tests -- -x tests/cli   # the README's suite; arguments after -- go to pytest

nox comes with the ``dev`` extra (``bash scripts/test.sh`` makes ``.venv``, then
``.venv/bin/pip install -e '.[dev]'``). Each session installs the project into
its own virtual environment under ``.nox/`` (kept between runs: pip only adds
what changed). Interpreters are found on PATH and in pyenv
(``$(pyenv root)/versions/3.X.Y/bin``); nox never downloads one. A Python that
is not present is skipped with a message, not failed; so is the flink session
without Java.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
#: setup.cfg's python_requires, up to the newest tested.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
#: The pythons session: every supported Python but the one running nox (the README's suite ran on it).
OTHER_PYTHONS = [v for v in PYTHONS if v != f"{sys.version_info.major}.{sys.version_info.minor}"]
#: The floor of setup.cfg's protobuf range (see the comment there).
PROTOBUF_LOWEST = "4.22.0"
#: The ruff .pre-commit-config.yaml pins: lint and pre-commit agree on every finding and every format.
RUFF = "ruff==0.17.6"
#: Beam's tests (test_beam.py needs Beam; test_beam_extra.py runs everywhere, so pytest never collects nothing).
BEAM_TESTS = ["tests/adapters/test_beam.py", "tests/adapters/test_beam_extra.py"]
#: The codec's tests, run again on the protobuf Beam pins (the middle of the supported range).
CODEC_TESTS = [
    "tests/codec/test_fast_decode.py",
    "tests/codec/test_fast_paths.py",
    "tests/codec/test_convert.py",
    "tests/codec/test_wire.py",
    "tests/codec/test_fuzz.py",
    "tests/codec/test_protobuf_agreement.py",
]
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider"]

nox.options.sessions = ["lint", "protobuf", "beam", "flink", "pythons", "stress"]
nox.options.reuse_venv = "yes"
nox.options.download_python = "never"  # no network here but the package index
nox.options.error_on_missing_interpreters = False  # "whatever is present", in CI too


def _add_pyenv_pythons_to_path() -> None:
    """Put each pyenv version's bin/ on PATH, so nox finds python3.X that no pyenv shim selects."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    if shutil.which("pyenv"):
        try:
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    found: list[str] = []
    for version in PYTHONS:
        # The newest patch release of each minor version; a pyenv shim that selects nothing does not count.
        candidates = sorted(
            glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")),
            key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()],
        )
        if candidates:
            found.append(str(Path(candidates[-1]).parent))
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_add_pyenv_pythons_to_path()


def _install(session: nox.Session, *extra: str) -> None:
    session.install("--disable-pip-version-check", "-e", ".[test]", *extra)


def _protobuf(session: nox.Session) -> str:
    """The protobuf version installed in the session's environment."""
    out = session.run("python", "-c", "import google.protobuf as p; print(p.__version__)", silent=True, log=False)
    return str(out).strip()


@nox.session
def tests(session: nox.Session) -> None:
    """The README's suite (bash scripts/test.sh): this Python, the newest protobuf (upb), in parallel."""
    _install(session, "--upgrade", "protobuf")
    session.run(*PYTEST, "-n", "auto", *session.posargs)


@nox.session
@nox.parametrize("version", [nox.param(PROTOBUF_LOWEST, id="lowest"), nox.param("newest", id="newest")])
def protobuf(session: nox.Session, version: str) -> None:
    """The suite at both ends of the protobuf range: the lowest on both backends, the newest on pure Python.

    The newest on upb is the README's suite, which CI runs first.
    """
    _install(session, "--upgrade", "protobuf" if version == "newest" else f"protobuf=={version}")
    session.log(f"protobuf {_protobuf(session)}")
    for backend in ("upb", "python") if version != "newest" else ("python",):
        session.log(f"== protobuf {version}, {backend} backend")
        session.run(*PYTEST, "-n", "auto", *session.posargs, env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": backend})


@nox.session
def beam(session: nox.Session) -> None:
    """udf.beam on Apache Beam's in-process runner, then the codec's tests on the protobuf Beam pins (both backends)."""
    session.install("--disable-pip-version-check", "-e", ".[beam,test]")
    session.run("python", "-c", "import udf.beam")  # otherwise tests/adapters/test_beam.py would only skip
    session.run(*PYTEST, *BEAM_TESTS, *session.posargs)
    session.log(f"== the codec on Beam's protobuf {_protobuf(session)}, upb and pure-Python backends")
    for backend in ("upb", "python"):
        session.run(
            *PYTEST,
            "-n",
            "auto",
            "-W",
            "ignore::DeprecationWarning",
            *CODEC_TESTS,
            env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": backend},
        )


@nox.session(python=False)
def flink(session: nox.Session) -> None:
    """udf.flink on PyFlink: scripts/test-flink.sh (its own .venv-flink; needs Java 11+, skipped without it)."""
    if shutil.which("java") is None:
        session.skip("no java on PATH: PyFlink needs Java 11 or later (e.g. apt-get install openjdk-17-jre-headless)")
    session.run("bash", str(ROOT / "scripts" / "test-flink.sh"), *session.posargs, external=True)


@nox.session(python=OTHER_PYTHONS)
def pythons(session: nox.Session) -> None:
    """The suite on every other supported Python (3.10-3.13) that is present; a missing one is skipped."""
    _install(session)
    session.run(*PYTEST, "-n", "auto", *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """A smoke of scripts/stress.sh: the concurrency-sensitive tests, one run in each of two parallel loops."""
    _install(session)
    runs = session.posargs[0] if session.posargs else "1"  # nox -s stress -- RUNS PARALLEL
    parallel = session.posargs[1] if len(session.posargs) > 1 else "2"
    python = os.path.join(session.bin, "python")
    session.run("bash", "scripts/stress.sh", runs, parallel, env={"UDF_PYTHON": python}, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format, pyproject.toml) and mypy --strict over udf/ and tests/ (setup.cfg)."""
    _install(session, RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")  # setup.cfg: strict, files = udf, tests
