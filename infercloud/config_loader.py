"""The config loader: YAML mappings into frozen spec dataclasses, each value converted by its field's type.

What a field means comes from its type alone (`typing.get_type_hints`), never from its name or where it
sits, so `regions` can be a list of RegionSpec in one spec, replicas per region in another and region
names in a third. Rules narrower than a type are the spec's own: its `__post_init__` (or, for a spec
that is not checked on construction, its `check()`) raises SpecFieldError naming the field, and the
loader reports that with the YAML path, as ConfigError.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections import Counter
from typing import Any, Literal

_SCALARS = (int, float, str, bool)


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


class SpecFieldError(ValueError):
    """A spec's value out of its field's range: `field` names the field, `rule` says what it must be."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def short_repr(value: object) -> str:
    """A value for an error message, cut short: a message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def build(cls: type, data: Any, where: str) -> Any:
    """Dataclass `cls` from the mapping `data` found at YAML path `where`.

    A spec may offer `from_config(**fields)` to build itself from what a config gives (defaults that
    depend on which fields were given), `check()` for rules it does not run on construction, and
    `REMOVED_FIELDS` (name -> why) for fields it no longer has.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    _reject_unknown(cls, data, where)
    hints = typing.get_type_hints(cls)
    fields = {name: convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        spec = getattr(cls, "from_config", cls)(**fields)
        getattr(spec, "check", lambda: None)()
    except SpecFieldError as exc:
        raise ConfigError(f"{where}.{exc.field}: {exc.rule}") from exc
    except (TypeError, ValueError) as exc:   # a missing field, or a spec's rule that names no field
        raise ConfigError(f"{where}: {exc}") from exc
    return spec


def _reject_unknown(cls: type, data: dict, where: str) -> None:
    removed = getattr(cls, "REMOVED_FIELDS", {})
    for name in data:
        if name in removed:
            raise ConfigError(f"{where}.{name}: {removed[name]}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(name) for name in data if name not in known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(known)})")


def convert(tp: Any, value: Any, where: str) -> Any:
    """`value` as a field of type `tp`; None in an optional section is the section with its defaults
    (`cluster:` with nothing after it turns cloud mode on)."""
    inner = _optional_of(tp)
    if inner is None:
        return _convert_as(tp, value, where, tp)
    if value is None:
        return build(inner, {}, where) if dataclasses.is_dataclass(inner) else None
    return _convert_as(inner, value, where, tp)


def _optional_of(tp: Any) -> Any:
    """X for `X | None`, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return inner
    return None


def _convert_as(tp: Any, value: Any, where: str, declared: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is Literal:
        return _one_of(args, value, where)
    if origin is tuple and dataclasses.is_dataclass(args[0]):
        return _sections(args[0], value, where)
    if origin is tuple:
        return _items(args[0], value, where)
    if origin is dict and args[1] is Any:
        return _json_map(value, where)
    if origin is dict:
        return _number_map(args[1], value, where)
    if tp in _SCALARS:
        return _scalar(tp, value, where, declared)
    raise TypeError(f"{where}: the config loader has no conversion for {tp}")


def _one_of(values: tuple, value: Any, where: str) -> Any:
    if value not in values:
        choices = ", ".join(map(repr, values[:-1])) + f" or {values[-1]!r}"
        raise ConfigError(f"{where}: must be {choices}, got {short_repr(value)}")
    return value


def _sections(cls: type, value: Any, where: str) -> tuple:
    """A list of sections; where they have names, each name once."""
    what = cls.__name__.removesuffix("Spec").lower()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {what}s, got {short_repr(value)}")
    sections = tuple(build(cls, item, f"{where}[{i}]") for i, item in enumerate(value))
    if "name" in {f.name for f in dataclasses.fields(cls)}:
        repeated = [name for name, count in Counter(s.name for s in sections).items() if count > 1]
        if repeated:
            raise ConfigError(f"{where}: {what} names must be unique ({short_repr(repeated[0])} is given "
                              "more than once)")
    return sections


def _items(tp: Any, value: Any, where: str) -> tuple:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {_type_name(tp)}, got {short_repr(value)}")
    return tuple(convert(tp, item, f"{where}[{i}]") for i, item in enumerate(value))


def _number_map(kind: type, value: Any, where: str) -> dict:
    """Names to non-negative numbers: the config's maps are all per region (replicas, latencies)."""
    def fits(number: Any) -> bool:
        return _is_number(number) and number >= 0 and (kind is float or isinstance(number, int))

    if not isinstance(value, dict) or not all(isinstance(k, str) and fits(v) for k, v in value.items()):
        raise ConfigError(f"{where}: expected a mapping of region names to non-negative "
                          f"{'integers' if kind is int else 'numbers'}, got {short_repr(value)}")
    return {k: kind(v) for k, v in value.items()}


def _json_map(value: Any, where: str) -> dict:
    """A mapping taken as it is (a JSON schema, a metadata filter): keys must be strings."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: expected a mapping with string keys, got {short_repr(value)}")
    return value


def _scalar(tp: type, value: Any, where: str, declared: Any) -> Any:
    """An int, float, str or bool as given: an int is a float, a bool is neither; floats are never negative."""
    if tp is float and _is_number(value) and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {short_repr(value)}")
    fits = _is_number(value) if tp is float else isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
    if not fits:
        raise ConfigError(f"{where}: expected {_type_name(declared)}, got {short_repr(value)}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))
