"""Dataclass configs from plain dicts, with every field name, type and numeric range checked when the config is read.

Checkpoints store configs as plain dicts (so they load with weights_only=True); users override fields
with `--set section.field=value`. Both paths go through here, so a typo, a wrong type or a value out of range
is caught early with the field's dotted name. Ranges are tables of interval strings such as "(0, 1]", one entry
per numeric field (`check_ranges`); a test holds every numeric field to having one.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from ks_runtime.core.errors import ConfigError


def to_dict(obj: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass `cls` from `data`; unknown names and wrong types raise ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.field=value` strings (value parsed as JSON, else taken as a string) to a dict."""
    data = json.loads(json.dumps(data))
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected section.field=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {override!r}: no config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {override!r}: unknown field {key!r}")
        node[parts[-1]] = value
    return data


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval in the usual notation, "[1, inf)" or "(0, 1]", and what a special value in it means."""

    interval: str
    note: str = ""

    @property
    def bounds(self) -> tuple[float, float, bool, bool]:
        """(low, high, low included, high included)."""
        text = self.interval.strip()
        low, high = (float(part) for part in text[1:-1].split(","))
        return low, high, text[0] == "[", text[-1] == "]"

    def __contains__(self, value: float) -> bool:
        low, high, low_in, high_in = self.bounds
        # NaN fails every comparison, so it is refused along with values past either end; inf needs a closed end.
        return (low < value or (low_in and low == value)) and (value < high or (high_in and value == high))

    def __str__(self) -> str:
        return f"{self.interval} ({self.note})" if self.note else self.interval


def numeric_fields(cls: type, prefix: str = "") -> list[str]:
    """The dotted names of every int and float field (tuples of them too) of dataclass `cls`, nested ones included."""
    names = []
    for name, hint in typing.get_type_hints(cls).items():
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            names += numeric_fields(hint, f"{dotted}.")
        elif hint in (int, float) or (typing.get_origin(hint) is tuple and typing.get_args(hint)[0] in (int, float)):
            names.append(dotted)
    return names


def check_ranges(obj: Any, ranges: dict[str, Range | str], prefix: str = "") -> None:
    """Refuse the first field of `obj` (dotted names, as in `ranges`) whose value, or any item of a tuple, lies
    outside its range; the ConfigError names the field, the value and the range."""
    for name, allowed in ranges.items():
        allowed = allowed if isinstance(allowed, Range) else Range(allowed)
        value = obj
        for part in name.split("."):
            value = getattr(value, part)
        items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            if not isinstance(item, (int, float)) or isinstance(item, bool) or item not in allowed:
                where = f"{prefix}{name}" + ("" if i is None else f"[{i}]")
                raise ConfigError(f"{where}={item!r} is out of range; allowed: {allowed}")
