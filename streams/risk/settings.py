"""The engine's settings file: TOML in, `EngineConfig` out, and the hash every command carries.

The file mirrors `EngineConfig` (streams.risk.engine): top-level keys are its fields,
``[margin]``, ``[grid]`` and ``[policy]`` are its nested dataclasses, and each
``[margin_by_asset.<ASSET>]`` table gives one asset's `MarginParams`. A key left out takes
the dataclass default (an asset's table starts from the `MarginParams` defaults, not from
``[margin]``). An unknown key, at any level, or a value of the wrong type is refused with a
`ConfigError` naming the key and the file: a typo must not silently run the default.
infra/engine.example.toml lists every setting with its default.

`engine_config_hash` is the digest of every setting; the engine puts it in the provenance
of every command (docs/risk.md, "Engine settings").
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from streams.config import Settings, load_settings
from streams.errors import ConfigError
from streams.risk.canonical import settings_hash
from streams.risk.engine import EngineConfig


def load_engine_config(path: Path) -> EngineConfig:
    """The engine settings of the TOML file at `path` (missing keys take the defaults).

    Raises ConfigError for an unreadable file, invalid TOML, an unknown key, a value of the
    wrong type or one a settings class refuses.
    """
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"engine settings {path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"engine settings {path}: invalid TOML: {exc}") from None
    config = _build(EngineConfig, table, "", str(path))
    assert isinstance(config, EngineConfig)
    return config


def engine_config_hash(config: EngineConfig) -> str:
    """Stable hex digest (32 digits, like `rules_hash`) of every setting of `config`."""
    return settings_hash(config)


def engine_config_from_env(environ: Mapping[str, str] = os.environ) -> EngineConfig:
    """The engine settings of the file APS_ENGINE_CONFIG names; the defaults when it is
    unset or empty. The variable is read through `streams.config.load_settings`, so the
    other APS_* variables of `environ` are checked as they are everywhere else."""
    return engine_config_for(load_settings(environ))


def engine_config_for(settings: Settings) -> EngineConfig:
    """The engine settings of `settings.engine_config` (the defaults without a file): what
    the worker, the offline run of `aps run` and `aps simulate` all build their engines
    with."""
    path = settings.engine_config
    return EngineConfig() if path is None else load_engine_config(path)


def _build(cls: type, table: Mapping[str, Any], where: str, source: str) -> object:
    """An instance of dataclass `cls` from a TOML table found at key path `where`."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(key for key in table if key not in names)
    if unknown:
        raise ConfigError(f"engine settings {source}: unknown key '{where}{unknown[0]}'"
                          f"; known here: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    values = {key: _value(hints[key], raw, f"{where}{key}", source)
              for key, raw in table.items()}
    try:
        return cls(**values)
    except ValueError as exc:
        at = f"[{where.rstrip('.')}]" if where else "top level"
        raise ConfigError(f"engine settings {source}: {at}: {exc}") from None


def _value(hint: Any, raw: Any, key: str, source: str) -> Any:
    """`raw` checked (and converted) against the field's type `hint`."""
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        return _wrong(key, "a number", raw, source)
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        return _wrong(key, "an integer", raw, source)
    if hint is str:
        return raw if isinstance(raw, str) else _wrong(key, "a string", raw, source)
    if isinstance(hint, type) and is_dataclass(hint):
        if not isinstance(raw, dict):
            return _wrong(key, f"a table [{key}]", raw, source)
        return _build(hint, raw, f"{key}.", source)
    pair = _keyed_pairs(hint)
    if pair is not None:
        if not isinstance(raw, dict):
            return _wrong(key, f"tables [{key}.<name>]", raw, source)
        return tuple((name, _value(pair, raw[name], f"{key}.{name}", source))
                     for name in sorted(raw))
    raise TypeError(f"engine settings: no TOML mapping for {key} ({hint!r})")


def _keyed_pairs(hint: Any) -> Any:
    """`T` when `hint` is ``tuple[tuple[str, T], ...]`` (a table of named tables)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = typing.get_args(args[0])
        if typing.get_origin(args[0]) is tuple and len(inner) == 2 and inner[0] is str:
            return inner[1]
    return None


def _wrong(key: str, wanted: str, raw: Any, source: str) -> typing.NoReturn:
    raise ConfigError(f"engine settings {source}: {key} must be {wanted},"
                      f" got {type(raw).__name__} {raw!r}")
