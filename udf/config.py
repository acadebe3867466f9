"""Kapacitor's UDF configuration: the ``[udf.functions.NAME]`` sections of kapacitor.conf.

Mirrors Kapacitor's ``services/udf`` config and service: each function is a
:class:`FunctionConfig` with ``prog``/``args``/``env`` (a process UDF) or
``socket`` (a socket UDF), and a keepalive ``timeout``; :meth:`Config.validate`
applies Kapacitor's rules with its messages, and :meth:`Config.create` builds the
:class:`udf.Process` or :class:`udf.Socket` Kapacitor would run::

    conf = udf.config.load("/etc/kapacitor/kapacitor.conf")
    with conf.create("movingAverage") as agent:
        print(agent.info())

Durations follow Kapacitor's ``toml.Duration``: a Go duration string such as
``"10s"``, ``"500ms"`` or ``"1m30s"``. As in Kapacitor, a TOML number is read as
its text, so ``timeout = 10`` is an error (missing unit) and ``timeout = 0`` is zero.
Parsing TOML needs :mod:`tomllib` (Python 3.11+) or the ``tomli`` package.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UDFError
from .extras import install_hint
from .interface import Interface
from .models import INT64_MIN

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - Python 3.10: the tomli package (extra "config")
    try:
        import tomli as _toml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        _toml = None  # type: ignore[assignment,unused-ignore]

__all__ = [
    "ConfigError",
    "FunctionConfig",
    "Config",
    "load",
    "loads",
    "from_mapping",
    "parse_duration",
    "format_duration",
    "MIN_TIMEOUT_NS",
]

_log = logging.getLogger("udf.config")

#: Kapacitor rejects a function timeout at or below one millisecond.
MIN_TIMEOUT_NS = 1_000_000

_NS = 1
_US = 1_000
_MS = 1_000_000
_S = 1_000_000_000
_M = 60 * _S
_H = 60 * _M
_UNITS: dict[str, int] = {
    "ns": _NS,
    "us": _US,
    "\u00b5s": _US,  # micro sign
    "\u03bcs": _US,  # Greek small letter mu
    "ms": _MS,
    "s": _S,
    "m": _M,
    "h": _H,
}
_INT64_LIMIT = -INT64_MIN  # the magnitude of a negative int64 bound
_KNOWN_KEYS = ("prog", "args", "env", "timeout", "socket")


class ConfigError(UDFError):
    """A kapacitor.conf UDF section is invalid, or names an unknown function."""


# --- durations (Go's time.ParseDuration and Duration.String) -------------------


def parse_duration(text: str, extra_units: Mapping[str, int] | None = None) -> int:
    """Parse a Go duration string (``"1h2m3.5s"``, ``"500ms"``, ``"-2us"``) into nanoseconds.

    Same grammar, units and errors as Go's ``time.ParseDuration``: a sequence of
    decimal numbers, each with an optional fraction and a unit (``ns``, ``us``,
    ``µs``, ``ms``, ``s``, ``m``, ``h``); ``"0"`` needs no unit. ``extra_units``
    adds units (name -> ns), e.g. TICKscript's ``d`` and ``w``. Raises ``ValueError``.
    """
    units = _UNITS if not extra_units else {**_UNITS, **extra_units}
    if not isinstance(text, str):
        raise TypeError(f"duration must be a str, got {type(text).__name__}")
    orig = text
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"time: invalid duration {_quote(orig)}")
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        # The integer part.
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        whole = int(s[:i]) if pre else 0
        if whole > _INT64_LIMIT:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        s = s[i:]
        # The fraction, accumulated as Go does: digits past int64 range are ignored.
        frac, scale, post = 0, 1.0, False
        if s.startswith("."):
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    nxt = frac * 10 + (ord(s[i]) - 48)
                    if frac > (_INT64_LIMIT - 1) // 10 or nxt > _INT64_LIMIT:
                        overflow = True
                    else:
                        frac = nxt
                        scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        # The unit.
        i = 0
        while i < len(s) and s[i] != "." and not ("0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        unit_name = s[:i]
        s = s[i:]
        unit = units.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_quote(unit_name)} in duration {_quote(orig)}")
        if whole > _INT64_LIMIT // unit:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        value = whole * unit
        if frac:
            # Go computes the fraction in float64 and truncates: so do we.
            value += int(float(frac) * (float(unit) / scale))
            if value > _INT64_LIMIT:
                raise ValueError(f"time: invalid duration {_quote(orig)}")
        total += value
        if total > _INT64_LIMIT:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
    if neg:
        return -total
    if total > _INT64_LIMIT - 1:
        raise ValueError(f"time: invalid duration {_quote(orig)}")
    return total


def _quote(s: str) -> str:
    """Go's ``strconv.Quote`` for the plain strings durations are made of."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _frac(value: int, digits: int) -> tuple[int, str]:
    """Split ``value`` at ``digits`` decimal places; the fraction without trailing zeros."""
    whole, rest = divmod(value, 10**digits)
    text = f"{rest:0{digits}d}".rstrip("0") if rest else ""
    return whole, ("." + text) if text else ""


def format_duration(ns: int) -> str:
    """Format nanoseconds as Go's ``time.Duration.String`` does (``"1m30s"``, ``"1.5ms"``, ``"0s"``)."""
    sign = "-" if ns < 0 else ""
    u = -ns if ns < 0 else ns
    if u == 0:
        return "0s"
    if u < _S:
        if u < _US:
            return f"{sign}{u}ns"
        if u < _MS:
            whole, frac = _frac(u, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        whole, frac = _frac(u, 6)
        return f"{sign}{whole}{frac}ms"
    seconds, frac = _frac(u, 9)
    out = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        out = f"{minutes % 60}m{out}"
        hours = minutes // 60
        if hours:
            out = f"{hours}h{out}"
    return sign + out


def _duration_from_toml(value: Any) -> int:
    """Kapacitor's ``toml.Duration`` decoding: the TOML value's text, then ParseDuration.

    As BurntSushi/toml hands a TextUnmarshaler the text of any primitive, ``10``
    becomes ``"10"`` (missing unit), ``0`` is zero and ``""`` means unset (zero).
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:f}"
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f'timeout must be a duration string like "10s", got {type(value).__name__}')
    if text == "":
        return 0
    return parse_duration(text)


# --- the configuration ---------------------------------------------------------


@dataclass(frozen=True)
class FunctionConfig:
    """One ``[udf.functions.NAME]`` section (Go: ``udf.FunctionConfig``).

    ``timeout`` is the keepalive timeout in nanoseconds, as Go's ``toml.Duration``.
    """

    name: str
    prog: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int = 0
    socket: str = ""

    @property
    def timeout_seconds(self) -> float:
        """The keepalive timeout in seconds, as :class:`udf.Process`/:class:`udf.Socket` take it."""
        return self.timeout / 1e9

    @property
    def is_socket(self) -> bool:
        """True for a socket UDF, False for a process UDF."""
        return self.socket != ""

    def validate(self) -> None:
        """Apply Kapacitor's rules (Go: ``FunctionConfig.Validate``); raise :class:`ConfigError`.

        The message is Kapacitor's, without the ``"UDF NAME: "`` prefix that
        :meth:`Config.validate` adds.
        """
        if self.timeout <= MIN_TIMEOUT_NS:
            raise ConfigError(f"timeout is too small: {format_duration(self.timeout)}")
        if self.socket != "":
            if self.prog != "" or self.args or self.env:
                raise ConfigError("both socket and process config provided")
        elif self.prog == "":
            raise ConfigError("must set either prog or socket")

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process environment Kapacitor gives the UDF: ``base`` (default ``os.environ``) plus ``env``.

        A configured variable overrides an inherited one of the same name.
        """
        merged = dict(os.environ if base is None else base)
        merged.update(self.env)
        return merged

    def create(
        self,
        logger: logging.Logger | None = None,
        abort_callback: Callable[[], Any] | None = None,
        connect_timeout: float | None = None,
    ) -> Interface:
        """A new, unopened :class:`udf.Socket` or :class:`udf.Process` for this function.

        Go: ``Service.Create``. A process UDF gets the parent's environment plus
        ``env``; ``connect_timeout`` (seconds) overrides :class:`udf.Socket`'s default.
        """
        if self.is_socket:
            from .socket import Socket

            if connect_timeout is None:
                return Socket(self.socket, logger=logger, timeout=self.timeout_seconds, abort_callback=abort_callback)
            return Socket(
                self.socket,
                logger=logger,
                timeout=self.timeout_seconds,
                abort_callback=abort_callback,
                connect_timeout=connect_timeout,
            )
        from .process import Process

        env = self.environment() if self.env else None
        return Process(
            self.prog,
            self.args,
            env=env,
            logger=logger,
            timeout=self.timeout_seconds,
            abort_callback=abort_callback,
        )


@dataclass(frozen=True)
class Config:
    """The ``[udf]`` section: functions by name, in file order (Go: ``udf.Config``)."""

    functions: Mapping[str, FunctionConfig] = field(default_factory=dict)

    def __iter__(self) -> Iterator[str]:
        return iter(self.functions)

    def __len__(self) -> int:
        return len(self.functions)

    def __contains__(self, name: object) -> bool:
        return name in self.functions

    def names(self) -> list[str]:
        """The configured function names, in file order."""
        return list(self.functions)

    def validate(self) -> None:
        """Validate every function; the first error reads ``"UDF NAME: <Kapacitor's message>"``."""
        for name, function in self.functions.items():
            try:
                function.validate()
            except ConfigError as exc:
                raise ConfigError(f"UDF {name}: {exc}") from None

    def function(self, name: str) -> FunctionConfig:
        """The configuration of ``name``; :class:`ConfigError` naming the known ones if absent."""
        try:
            return self.functions[name]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise ConfigError(f"no such UDF {name} (configured UDFs: {known})") from None

    def create(
        self,
        name: str,
        logger: logging.Logger | None = None,
        abort_callback: Callable[[], Any] | None = None,
        connect_timeout: float | None = None,
    ) -> Interface:
        """A new, unopened :class:`udf.Process` or :class:`udf.Socket` for ``name`` (Go: ``Service.Create``)."""
        return self.function(name).create(logger=logger, abort_callback=abort_callback, connect_timeout=connect_timeout)


# --- loading ---------------------------------------------------------------------


def _toml_loads(text: str) -> dict[str, Any]:
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError(f"reading kapacitor.conf on Python 3.10 needs the tomli package: {install_hint('config')}")
    try:
        return dict(_toml.loads(text))
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from None


def _string(name: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"UDF {name}: {key} must be a string, got {_toml_type(value)}")
    return value


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _function_from_table(name: str, table: Any) -> FunctionConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"UDF {name}: [udf.functions.{name}] must be a table, got {_toml_type(table)}")
    unknown = [key for key in table if key not in _KNOWN_KEYS]
    if unknown:
        # Kapacitor ignores unknown keys; a typo deserves a word, not a failure.
        _log.warning("UDF %s: ignoring unknown keys %s", name, ", ".join(sorted(unknown)))
    prog = _string(name, "prog", table.get("prog", ""))
    socket = _string(name, "socket", table.get("socket", ""))
    raw_args = table.get("args", [])
    if not isinstance(raw_args, list) or not all(isinstance(a, str) for a in raw_args):
        raise ConfigError(f"UDF {name}: args must be an array of strings")
    raw_env = table.get("env", {})
    if not isinstance(raw_env, dict) or not all(isinstance(v, str) for v in raw_env.values()):
        raise ConfigError(f"UDF {name}: env must be a table of strings")
    try:
        timeout = _duration_from_toml(table.get("timeout", ""))
    except ValueError as exc:
        raise ConfigError(f"UDF {name}: timeout: {exc}") from None
    return FunctionConfig(
        name=name,
        prog=prog,
        args=tuple(raw_args),
        env=dict(raw_env),
        timeout=timeout,
        socket=socket,
    )


def from_mapping(data: Mapping[str, Any], validate: bool = True) -> Config:
    """Build a :class:`Config` from a parsed kapacitor.conf (the whole document).

    Only ``[udf.functions.*]`` is read; everything else is ignored. With
    ``validate`` (the default) Kapacitor's rules are applied.
    """
    udf_section = data.get("udf", {})
    if not isinstance(udf_section, dict):
        raise ConfigError(f"[udf] must be a table, got {_toml_type(udf_section)}")
    functions = udf_section.get("functions", {})
    if not isinstance(functions, dict):
        raise ConfigError(f"[udf.functions] must be a table, got {_toml_type(functions)}")
    config = Config({name: _function_from_table(name, table) for name, table in functions.items()})
    if validate:
        config.validate()
    return config


def loads(text: str, validate: bool = True) -> Config:
    """Parse kapacitor.conf text; see :func:`from_mapping`."""
    return from_mapping(_toml_loads(text), validate=validate)


def load(path: str | os.PathLike[str], validate: bool = True) -> Config:
    """Read and parse a kapacitor.conf file; see :func:`from_mapping`.

    An unreadable file or invalid TOML raises :class:`ConfigError` naming the file.
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {os.fspath(path)}: {exc}") from None
    try:
        return loads(text, validate=validate)
    except ConfigError as exc:
        raise ConfigError(f"{os.fspath(path)}: {exc}") from None
