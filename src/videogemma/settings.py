"""Settings dataclasses read from YAML mappings: nested sections, typed values, unknown keys refused.

The training config (`train.train_config`) and a run's model source (`loading`) are read this way, so a
value means the same in a config file, a `--key value` override and a saved run.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from videogemma.errors import VideoGemmaError


class SettingsError(VideoGemmaError):
    """A settings mapping that does not fit its dataclass; the message names the dotted key."""


def from_mapping(cls: type, raw: Any, prefix: str = "", error: type[Exception] = SettingsError) -> Any:
    """An instance of the dataclass `cls` from a (YAML) mapping: nested dataclasses from nested mappings,
    values converted to the field types, unknown keys refused. `error` is raised naming the dotted key."""
    if not isinstance(raw, dict):
        raise error(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise error(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; valid: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = from_mapping(hint, value or {}, f"{prefix}{name}.", error)
        else:
            values[name] = _coerce(value, hint, f"{prefix}{name}", error)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, error: type[Exception]) -> Any:
    """Convert a YAML value to the field's type (`1e-4` → 1e-4), or fail naming the key."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise error(f"{key}: may not be null")
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base) or base
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if origin is float:
            return float(value)
        if origin is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if origin is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return value
        if origin is list:
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    except (TypeError, ValueError):
        raise error(f"{key}: {value!r} is not a valid {getattr(base, '__name__', base)}") from None
    return value


# ---- command-line flags ------------------------------------------------------------------------------------


def add_dataclass_arguments(
    parser: Any, cls: type, *, title: str | None = None, exclude: tuple[str, ...] = ()
) -> None:
    """One `--flag-name` per field of the dataclass `cls` (as `HfArgumentParser` does), so that a default is
    written once, in the dataclass. A field's help is its `metadata["help"]`; the default is shown."""
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        if spec.name in exclude:
            continue
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        hint = hints[spec.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if type(None) in typing.get_args(hint) and len(args) == 1 else hint
        origin = typing.get_origin(base) or base
        flag = "--" + spec.name.replace("_", "-")
        help_text = spec.metadata.get("help", "")
        if origin is bool:
            group.add_argument(flag, action=_bool_action(default), default=default, help=help_text)
        elif origin in (tuple, list):
            item = (typing.get_args(base) or (str,))[0]
            group.add_argument(flag, nargs="*", type=item, default=list(default), help=help_text)
        else:
            suffix = f" (default: {default})" if default is not None else ""
            group.add_argument(flag, type=origin, default=default, help=help_text + suffix)


def _bool_action(default: bool) -> Any:
    import argparse

    return "store_true" if default is False else argparse.BooleanOptionalAction


def dataclass_from_args(cls: type, args: Any, **changes: Any) -> Any:
    """The dataclass `cls` from parsed flags (those `add_dataclass_arguments` added), with `changes` over them."""
    values = {}
    for spec in dataclasses.fields(cls):
        if not hasattr(args, spec.name):
            continue
        value = getattr(args, spec.name)
        default = spec.default if spec.default is not dataclasses.MISSING else None
        # argparse collects nargs flags in lists; a tuple field stays a tuple.
        values[spec.name] = tuple(value) if isinstance(value, list) and isinstance(default, tuple) else value
    return cls(**{**values, **changes})
