"""Loading a config: YAML, dotted-key overrides, type checks and nearest-key hints."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from transferlab.config.schema import Config, ConfigError, did_you_mean

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def load_config(path: str | Path | None = None, overrides: Any = None, **kwargs: Any) -> Config:
    """Load a YAML config, apply overrides, validate, and return a ``Config``.

    ``overrides`` may be a dict of dotted keys, a list of ``key=value`` strings, or one
    space-separated string (the form make's ``SET=`` passes). Keyword arguments use
    ``__`` for dots (``phase1__epochs=3``) and win over everything else.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    cfg = build_config(raw, source=str(path) if path else "defaults")
    merged = parse_overrides(overrides)
    merged.update({k.replace("__", "."): v for k, v in kwargs.items()})
    for key, value in merged.items():
        set_key(cfg, key, value)
    cfg.check()
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from its saved JSON form (a run's config.json)."""
    cfg = build_config(data, source="config.json")
    cfg.check()
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        available = sorted(p.name for p in Path("configs").glob("*.yaml"))
        hint = f"; configs here: {', '.join(available)}" if available else ""
        raise ConfigError(f"config file {path} does not exist{hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(raw).__name__}"
        )
    return raw


def build_config(raw: dict[str, Any], source: str) -> Config:
    cfg = Config()
    for key, value in flatten(raw).items():
        set_key(cfg, key, value, source=source)
    return cfg


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def parse_overrides(overrides: Any) -> dict[str, Any]:
    """Turn ``"a.b=1 c=[1, 2]"``, ``["a.b=1"]`` or ``{"a.b": 1}`` into a dict of values."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = split_assignments(overrides)
    parsed = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. phase1.epochs=3)"
            )
        try:
            parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def split_assignments(text: str) -> list[str]:
    """Split ``a=1 b=[1, 2]`` on spaces outside brackets and quotes."""
    items, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char.isspace() and depth == 0:
            if current:
                items.append(current)
            current = ""
            continue
        current += char
    if current:
        items.append(current)
    return items


def set_key(cfg: Config, dotted: str, value: Any, source: str = "overrides") -> None:
    """Set one dotted key on ``cfg``, checking that the key exists and the type fits."""
    target: Any = cfg
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(target)]
        prefix = ".".join(parts[:depth])
        if part not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise ConfigError(
                f"unknown config key {dotted!r} (in {source})"
                f"{did_you_mean(dotted, all_keys(), valid)}"
            )
        hint = typing.get_type_hints(type(target))[part]
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(hint):
                raise ConfigError(
                    f"config key {dotted!r} is a section; set one of its keys instead"
                )
            value = switch_word(field_of(target, part), value)
            setattr(target, part, coerce(dotted, value, hint))
        else:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"config key {dotted!r}: {prefix or part!r} is not a section")


def field_of(section: Any, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(section) if f.name == name)


def switch_word(field: dataclasses.Field, value: Any) -> Any:
    """A boolean given to a text key declared a switch (schema.switch), as its word.

    YAML reads ``on``, ``off``, ``yes`` and ``true`` as booleans, so ``SET='key=off'``
    arrives as False; such keys take it as the word their schema names for it.
    """
    words = field.metadata.get("switch")
    if words and isinstance(value, bool):
        return words[value]
    return value


def all_keys() -> list[str]:
    return sorted(flatten(Config().to_dict()))


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint; convert only where lossless."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "none", "~") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        # float | Literal["auto"]: the first type that takes the value wins.
        for hint_option in inner[:-1]:
            try:
                return coerce(key, value, hint_option)
            except ConfigError:
                pass
        try:
            return coerce(key, value, inner[-1])
        except ConfigError as err:
            if len(inner) == 1:
                raise
            allowed = " or ".join(describe(a) for a in inner)
            raise ConfigError(f"{key}={value!r} must be {allowed}") from err
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key}={value!r} is not allowed{did_you_mean(str(value), [str(a) for a in args])}"
                f"; choose one of: {', '.join(map(str, args))}"
            )
        return value
    if origin is list:
        (item_type,) = args
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list, e.g. {key}=[...]")
        return [coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r} must be a whole number")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads 1e-4 (no dot) as text; it is a number all the same.
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(f"{key}={value!r} must be a number")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r} must be text")
    raise ConfigError(f"{key}: unsupported type {hint}")


def describe(hint: Any) -> str:
    """``a number``, ``one of: auto``: what a type hint accepts, for error messages."""
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    return {float: "a number", int: "a whole number", str: "text", bool: "true or false"}.get(
        hint, str(hint)
    )
