"""Typed config values: `${VAR}` paths, a value checked and converted against a type
annotation, and a stage's parameter dataclass or a learner's keyword parameters built from
a YAML mapping with every key checked (`sepsis.config`, which re-exports these)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from sepsis.config_files import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_path(value: str) -> Path:
    """Expand `${VAR}` / `${VAR:-default}` and `~` in a path string."""

    def repl(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        got = os.environ.get(var)
        if got is None:
            if default is None:
                raise KeyError(var)
            return default
        return got

    try:
        return Path(_VAR.sub(repl, value)).expanduser()
    except KeyError as err:
        raise ConfigError(
            f"environment variable {err.args[0]} is not set (used in path '{value}')"
        ) from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the type annotation `tp`; return it converted (lists -> tuples)."""
    origin = tp if tp in (tuple, list) else typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                coerce(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        inner = args[0] if args else Any
        return tuple(coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, where): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return expand_path(str(value))
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Instantiate the parameter dataclass `cls` from a YAML mapping, checking every key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"{where}.{key}: unknown key{_suggest(key, names)}; valid keys: {', '.join(names)}"
            )
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ValueError as err:
            msg = str(err)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    return obj


def build_learner_params(
    cls: type, data: dict[str, Any] | None, where: str, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check a learner section against the estimator's keyword parameters and their defaults;
    `defaults` (a variant's) apply under the section's keys."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    data = {**(defaults or {}), **data}
    sig = inspect.signature(cls.__init__)
    params = {k: p for k, p in sig.parameters.items() if k != "self"}
    out = {}
    for key, value in data.items():
        if key not in params:
            raise ConfigError(
                f"{where}.{key}: unknown key{_suggest(key, list(params))}; valid keys: {', '.join(params)}"
            )
        default = params[key].default
        if value is not None and default is not None and default is not inspect.Parameter.empty:
            # the default's type is the declared type of a learner's keyword parameter
            kind = bool if isinstance(default, bool) else type(default)
            if kind in (bool, int, float, str):
                value = coerce(value, kind, f"{where}.{key}")
            elif isinstance(default, tuple):
                value = coerce(value, tuple, f"{where}.{key}")
        out[key] = value
    try:
        cls(**out).validate_params()
    except (TypeError, ValueError) as err:
        key = getattr(err, "key", None)  # models.base.ParameterError names the parameter
        raise ConfigError(f"{where}.{err}" if key else f"{where}: {err}") from None
    return out


def _suggest(key: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
