"""`MPTConfig` on the command line: one flag per field, `KEY=VALUE` overrides and YAML/JSON config files.

The flags are built from the dataclass fields with plain argparse (names `--prompt-length` and
`--prompt_length`, help from each field's metadata, the default read from `MPTConfig()`; a boolean field also
has `--no-FIELD`); every value is parsed by `parse_value`, from the field's type annotation, so
`--num-layers none`, `--target-languages de,fr` and `--label-words '{"en": [...]}'` work as in files, and
`--set key=value` (the study CLI) parses exactly as the flag does. No torch or transformers here: the study's
command line loads in a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

from mpt.config import ConfigError, MPTConfig

_HINTS = typing.get_type_hints(MPTConfig)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parts(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) of an annotation such as `int | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def parse_value(name: str, text: str) -> Any:
    """Parse a command-line string into the type of config field `name` (ConfigError naming the fix)."""
    if name not in _HINTS:
        raise ConfigError(f"unknown config field '{name}': allowed fields are {sorted(_HINTS)}")
    kind, optional = _parts(_HINTS[name])
    origin = typing.get_origin(kind) or kind
    if optional and text.lower() in ("none", "null"):
        return None
    if origin is dict:
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f'{name} must be JSON such as \'{{"en": ["yes", "maybe", "no"]}}\': {err}') from None
    if origin is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"config field '{name}' = {text!r} is invalid: allowed true or false")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"config field '{name}' = {text!r} is invalid: expected {kind.__name__}") from None


class _FieldValue:
    """argparse `type` for one field: `parse_value`, with argparse's own error on bad input."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__name__ = name  # argparse names the type in its errors

    def __call__(self, text: str) -> Any:
        try:
            return parse_value(self.name, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


class ConfigArgumentParser(argparse.ArgumentParser):
    """An argument parser with one flag per `MPTConfig` field, each defaulting to 'not given' (None), so that a
    config file and the study's defaults can fill in what the command line leaves out; extra flags are added as
    usual."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        group = self.add_argument_group("run configuration (MPTConfig fields)")
        defaults = MPTConfig()
        for f in dataclasses.fields(MPTConfig):
            flag = f"--{f.name.replace('_', '-')}"
            names = dict.fromkeys([flag, f"--{f.name}"])  # a one-word field has one name
            group.add_argument(
                *names,
                dest=f.name,
                type=_FieldValue(f.name),
                default=None,
                metavar=_metavar(f.name),
                help=f"{f.metadata.get('help', '')} (default: {_shown(getattr(defaults, f.name))})",
            )
            if _parts(_HINTS[f.name])[0] is bool:
                group.add_argument(
                    *dict.fromkeys([f"--no-{f.name.replace('_', '-')}", f"--no_{f.name}"]),
                    dest=f.name,
                    action="store_false",
                    default=None,
                    help=f"the same as {flag} false",
                )


def _shown(default: Any) -> str:
    if isinstance(default, list):
        return ",".join(default)
    return json.dumps(default) if isinstance(default, dict) else str(default)


def _metavar(name: str) -> str:
    kind, _ = _parts(_HINTS[name])
    origin = typing.get_origin(kind) or kind
    return {dict: "JSON", list: "LIST"}.get(origin, getattr(kind, "__name__", "VALUE").upper())


def config_from_args(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> MPTConfig:
    """The config: `base` (defaults, a file) with the fields given on the command line on top."""
    values = dict(base or {})
    for f in dataclasses.fields(MPTConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return MPTConfig.from_dict(values)


def parse_assignments(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` strings as config values, each parsed as its flag would be."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE: write e.g. {flag} num_layers=4")
        values[key.strip()] = parse_value(key.strip(), text.strip())
    return values


def read_config_file(path: str) -> dict:
    """Config overrides from a YAML or JSON file (a mapping of MPTConfig fields)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path} does not exist: check the path")
    text = file.read_text(encoding="utf-8")
    values = _load_yaml(path, text) if file.suffix in (".yaml", ".yml") else _load_json(path, text)
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of config fields, not {type(values).__name__}")
    return values


def _load_json(path: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON ({err}); use .yaml for YAML") from None


def _load_yaml(path: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config file {path} is not valid YAML{line} ({problem}): fix the file, e.g. "
            f"'learning_rate: 0.01' with one field per line"
        ) from None
