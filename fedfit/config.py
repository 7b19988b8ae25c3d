"""Run configuration: one flat dict of named options with defaults in ``defaults.toml``.

``load_config(path, overrides)`` = defaults <- TOML file <- ``key=value`` strings. Every key must be
known and every value must have its default's type (ints are accepted for floats); anything else is
a ``ConfigError`` naming the key. Flower's run config is a flat dict of the same keys.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")


class ConfigError(ValueError):
    """A malformed config file, an unknown key or a value of the wrong type."""


def defaults() -> dict[str, Any]:
    with DEFAULTS_PATH.open("rb") as f:
        return tomllib.load(f)


def _parse_value(key: str, text: str, like: Any) -> Any:
    if isinstance(like, bool):
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if isinstance(like, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    return text


def _coerce(key: str, value: Any, like: Any) -> Any:
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if isinstance(like, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(like, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(like, str) and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {type(like).__name__}, got {type(value).__name__} {value!r}")


def merge(base: dict[str, Any], updates: dict[str, Any], source: str) -> dict[str, Any]:
    out = dict(base)
    for k, v in updates.items():
        if k not in base:
            close = [n for n in base if n.split("_")[0] == k.split("_")[0]][:5]
            raise ConfigError(f"{source}: unknown option {k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        out[k] = _coerce(k, v, base[k])
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the TOML file at ``path`` (flat keys; a [run] table is also accepted), then overrides."""
    cfg = defaults()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        data = {**{k: v for k, v in data.items() if not isinstance(v, dict)}, **data.get("run", {})}
        cfg = merge(cfg, data, str(p))
    if isinstance(overrides, dict):
        cfg = merge(cfg, overrides, "overrides")
    elif overrides:
        cfg = merge(cfg, parse_overrides(overrides, cfg), "overrides")
    validate(cfg)
    return cfg


def parse_overrides(items: list[str], like: dict[str, Any]) -> dict[str, Any]:
    """``["rounds=3", "delta=true"]`` -> typed values, each of its key's type in ``like``."""
    parsed = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in like:
            merge(like, {k: v}, "overrides")  # raises the unknown-key error
        parsed[k] = _parse_value(k, v.strip(), like[k])
    return parsed


def validate(cfg: dict[str, Any]) -> None:
    """Cross-field checks that a type check cannot make."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg["rounds"] >= 0, "rounds must be >= 0")
    need(cfg["num_clients"] >= 1, "num_clients must be >= 1")
    need(1 <= cfg["clients_per_round"] <= cfg["num_clients"],
         f"clients_per_round must be in 1..num_clients ({cfg['num_clients']}), got {cfg['clients_per_round']}")
    need(cfg["classes_per_client"] >= 2, "classes_per_client must be >= 2")
    need(cfg["shots"] >= 1 and cfg["queries"] >= 1, "shots and queries must be >= 1")
    need(16 <= cfg["image_size"] <= 1024, "image_size must be in 16..1024 pixels")
    need(cfg["method"] in ("fit", "head-only", "local-only", "full"),
         f"method must be fit | head-only | local-only | full, got {cfg['method']!r}")
    need(cfg["num_cpus"] > 0 and cfg["num_gpus"] >= 0, "num_cpus must be > 0 and num_gpus >= 0")
    need(cfg["local_steps"] >= 0 and cfg["lr"] > 0, "local_steps must be >= 0 and lr > 0")
    for side in ("codec_up", "codec_down"):
        from fedfit.codec import create_codec

        try:
            create_codec(cfg[side])
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{side}: {e}") from None
    need(not (cfg["codec_up"].startswith("topk") and not cfg["delta"]),
         "codec_up = top-k sparsifies updates: set delta = true (a sparse copy of the whole state is useless)")
    need(not cfg["codec_down"].startswith("topk"), "codec_down cannot be top-k: clients need the whole state")
    need(cfg["protonets_temperature"] in ("1", "dim") or _is_number(cfg["protonets_temperature"]),
         "protonets_temperature must be a number or 'dim'")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def run_name(cfg: dict[str, Any]) -> str:
    return cfg["name"] or f"{cfg['method']}-{cfg['dataset']}-{cfg['shots']}shot-s{cfg['seed']}"
