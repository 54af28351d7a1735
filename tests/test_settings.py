"""Settings dataclasses: read from YAML mappings with typed values, and turned into command-line flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from videogemma.settings import SettingsError, add_dataclass_arguments, dataclass_from_args, from_mapping


@dataclass
class Inner:
    rate: float = 0.5


@dataclass
class Outer:
    steps: int = 10
    name: str | None = None
    sample: bool = False
    checkpointing: bool = True
    classes: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_mappings_become_typed_nested_settings():
    settings = from_mapping(Outer, {"steps": "12", "inner": {"rate": "1e-4"}, "tags": "one"})
    assert settings.steps == 12 and settings.inner.rate == 1e-4 and settings.tags == ["one"]
    with pytest.raises(SettingsError, match=r"unknown key\(s\) inner\.rat"):
        from_mapping(Outer, {"inner": {"rat": 1}})
    with pytest.raises(SettingsError, match=r"steps: 1\.5 is not a valid int"):
        from_mapping(Outer, {"steps": 1.5})


def test_flags_carry_the_dataclass_defaults_and_types():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Outer, exclude=("inner", "tags"))
    defaults = dataclass_from_args(Outer, parser.parse_args([]))
    assert defaults == Outer()
    args = parser.parse_args(
        ["--steps", "3", "--name", "x", "--sample", "--no-checkpointing", "--classes", "a", "b"]
    )
    parsed = dataclass_from_args(Outer, args)
    assert (parsed.steps, parsed.name, parsed.sample, parsed.checkpointing) == (3, "x", True, False)
    assert parsed.classes == ("a", "b")
    assert "(default: 10)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "many"])
