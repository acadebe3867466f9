"""The optional dependencies: which extra brings what, and how to install it (one wording for every hint).

The distribution, ``kapacitor-udf``, is not on the package index yet: an extra
is installed from a clone of the repository, ``pip install '.[cli]'``. Pure: no
imports of the optional packages themselves.
"""

from __future__ import annotations

__all__ = ["EXTRAS", "install_hint"]

#: Each extra and what it is for (setup.cfg's ``[options.extras_require]``).
EXTRAS: dict[str, str] = {
    "cli": "the command-line tool: line-protocol-parser, tqdm (progress), tomli before Python 3.11",
    "config": "reading kapacitor.conf (udf.config) before Python 3.11: tomli",
    "beam": "udf.beam on Apache Beam (pins protobuf to 4.25-6.x)",
    "metrics": "udf.metrics, Prometheus metrics: prometheus-client",
    "test": "the test suite's tools",
    "dev": "nox, ruff and pre-commit",
}


def install_hint(extra: str) -> str:
    """How to install ``extra``: ``install the 'cli' extra: pip install '.[cli]' in a clone of the repository``."""
    return f"install the {extra!r} extra: pip install '.[{extra}]' in a clone of the repository"
