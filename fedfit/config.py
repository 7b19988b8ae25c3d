"""Run configuration: one flat dict of named options, declared once in ``fedfit.options`` (their defaults,
types and rules; ``fedfit/defaults.toml`` is generated from them, to read).

``load_config(path, overrides)`` = defaults <- TOML file <- ``key=value`` strings. Every key must be
known and every value must have its default's type (ints are accepted for floats); anything else is
a ``ConfigError`` naming the key. Flower's run config is a flat dict of the same keys.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fedfit import options as declared
from fedfit.option_types import Options  # the typed view of the options (generated from fedfit.options)
from fedfit.registry import METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")  # generated from fedfit.options, to read


class ConfigError(ValueError):
    """A malformed config file, an unknown key or a value of the wrong type."""


def defaults() -> dict[str, Any]:
    """Every option's default (``fedfit.options``), a fresh dict."""
    return declared.defaults()


def rules() -> dict[str, dict[str, Any]]:
    """Option -> its declared rule (bounds ``ge`` / ``gt`` / ``le`` / ``lt``, extra values ``or`` with their
    ``hint``, ``choices``, ``unit``; ``fedfit.options``)."""
    return declared.rules()


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def check_rule(key: str, value: Any, rule: dict[str, Any]) -> None:
    """Raise ConfigError, in one line naming ``key``, the rule and ``value``, when ``value`` breaks ``rule``."""
    if "choices" in rule:
        if value not in rule["choices"]:
            raise ConfigError(f"{key} = {value!r} is unknown; choose one of: {', '.join(rule['choices'])}")
        return
    if value in rule.get("or", []):
        return
    bounds = [(op, b) for op, b in rule.items() if op in _BOUNDS]
    if all(_BOUNDS[op][1](value, b) for op, b in bounds):
        return
    want = " and ".join(f"{_BOUNDS[op][0]} {b:g}" for op, b in bounds)
    unit = f" {rule['unit']}" if "unit" in rule else ""
    extra = f" (or {rule['hint']})" if "hint" in rule else ""
    raise ConfigError(f"{key} must be {want}{unit}{extra}, got {value!r}")


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


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Options:
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
        tables = sorted(k for k, v in data.items() if isinstance(v, dict) and k != "run")
        if tables:
            raise ConfigError(f"{p}: unknown table(s) {', '.join(f'[{t}]' for t in tables)}: options are flat "
                              f"keys at the top or under [run] (an experiment's [base] / [grid] belong to "
                              f"'fedfit sweep')")
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


RULES = rules()
QUERY_SPLITS = tuple(RULES["query_split"]["choices"])
DP_MODES = tuple(RULES["dp"]["choices"])


def validate(cfg: Options) -> None:
    """Every option's declared rule (``fedfit.options``), the rules between options and every name against
    its registry (strategy names are checked by ``strategies``, which owns that registry); raises
    ConfigError naming the option and the fix."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    def choose(key: str, names) -> None:
        need(cfg[key] in names, f"{key} = {cfg[key]!r} is unknown; choose one of: {', '.join(names)}")

    for key, rule in RULES.items():  # every single option's range and choices (fedfit.options)
        check_rule(key, cfg[key], rule)
    need(1 <= cfg["clients_per_round"] <= cfg["num_clients"],
         f"clients_per_round must be in 1..num_clients ({cfg['num_clients']}), got {cfg['clients_per_round']}")
    need(cfg["clients_per_round"] + cfg["over_select"] <= cfg["num_clients"],
         f"over_select = {cfg['over_select']} samples clients_per_round + over_select = "
         f"{cfg['clients_per_round'] + cfg['over_select']} clients of num_clients = {cfg['num_clients']}: lower it")
    need(cfg["devices"] in ("mobile", "uniform") or cfg["devices"].endswith(".csv"),
         f"devices = {cfg['devices']!r} is unknown; choose mobile, uniform or a trace file PATH.csv")
    need(-1 <= cfg["eval_clients"] <= cfg["num_clients"],
         f"eval_clients must be in 0..num_clients ({cfg['num_clients']}; 0 = all, -1 = up to 50), "
         f"got {cfg['eval_clients']}")

    from fedfit.data import SOURCES
    from fedfit.heads import HEADS

    choose("dataset", SOURCES.names())
    from fedfit.data import has_test_split

    test_split = cfg["query_split"] != "train" and has_test_split(cfg["dataset"])
    need(cfg["query_split"] != "test" or test_split,
         f"query_split = test: {cfg['dataset']} has no test split; use auto (held-out training images)")
    need(cfg["queries"] != -1 or test_split or cfg["partition"] == "kshot",
         f"queries = -1 without a test split (every image of a class that no client holds) needs partition = "
         f"kshot; {cfg['dataset']} with query_split = {cfg['query_split']} has none: give a number of queries per "
         f"class")
    from fedfit.adapters import ADAPTERS

    choose("adapter", [a for a in ADAPTERS.names() if a not in ("none", "full")])
    choose("method", METHODS.names())
    problem = METHODS.get(cfg["method"]).problem(cfg)  # the method's own rules (fedfit.methods)
    need(problem is None, str(problem))
    need(cfg["case_training"] == "fit" or cfg["adapter"] == "case",
         f"case_training = {cfg['case_training']} is CaSE's own training: it needs adapter = case")
    need(not (cfg["adapter"] == "iciia" and cfg["history"] == 0),
         "adapter = iciia attends over each client's unlabelled history: set history >= 1 (or -1)")
    choose("head", HEADS.names() + ["auto"])
    need(cfg["device"] in ("auto", "cpu", "cuda") or (cfg["device"].startswith("cuda:") and cfg["device"][5:].isdigit()),
         f"device = {cfg['device']!r} is unknown; choose auto, cpu, cuda or cuda:N")
    t = cfg["protonets_temperature"]
    need(t in ("task", "dim") or (_is_number(t) and float(t) > 0),
         f"protonets_temperature must be 'task', 'dim' or a number > 0, got {t!r}")
    for side in ("codec_up", "codec_down"):
        from fedfit.codecs import create_codec

        try:
            create_codec(cfg[side])
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{side}: {e}") from None
    need(not (cfg["codec_up"].startswith("topk") and not cfg["delta"]),
         "codec_up = top-k sparsifies updates: set delta = true (a sparse copy of the whole state is useless)")
    need(not cfg["codec_down"].startswith("topk"), "codec_down cannot be top-k: clients need the whole state")
    if cfg["dp"] != "none":
        need(cfg["dp_noise"] > 0 and cfg["dp_clip"] > 0, "dp_noise and dp_clip must be > 0")
        need(0 <= cfg["dp_delta"] < 1, "dp_delta must be in [0, 1) (0 = 1 / num_clients)")
        need(cfg["over_select"] == 0, "dp adds noise for exactly clients_per_round clients and Flower's accountant "
                                      "needs that many sampled: set over_select = 0")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


AUTO_EVAL_CLIENTS = 50  # eval_clients = -1: every client up to this many, else a seeded sample of this many


def eval_clients(cfg: Options) -> int:
    """Training clients evaluated per evaluation round (0 = all)."""
    if cfg["eval_clients"] >= 0:
        return cfg["eval_clients"]
    return 0 if cfg["num_clients"] <= AUTO_EVAL_CLIENTS else AUTO_EVAL_CLIENTS


FIT_LOCAL_STEPS = 400  # FiT's fine-tuning budget: its lower bound's steps per client (run_fed_avg.py)
ROUND_STEPS = 10       # episodic steps per client per round (FiT's federated code: num_local_epochs)


FEDAVG_SPLIT = 2.0  # FedAvg's default step: the clients train at lr / 2, the server moves 2 x clients_per_round
FEDAVG_STEP_MAX = 20.0  # ... times their mean update, at most this many times


def fedavg_split(cfg: Options) -> bool:
    """FedAvg takes its default step (``server_lr = -1``, no DP) in a method that aggregates client updates:
    the clients then train at ``lr / FEDAVG_SPLIT`` and the server moves ``FEDAVG_SPLIT x clients_per_round``
    (at most ``FEDAVG_STEP_MAX``) times their mean update - the pace of ``lr`` with the updates added up
    (each client's steps counted as a central run takes them, one after another), split so that each client
    drifts half as far from the global state (docs/results/step_rule.md)."""
    return (cfg["strategy"] == "fedavg" and cfg["server_lr"] < 0 and cfg["dp"] == "none"
            and METHODS.get(cfg["method"]).aggregates)


def local_steps(cfg: Options) -> int:
    """Episodic steps per client per round (``local_steps``; -1: the method's, ``Method.local_steps``: 10, or
    FiT's 400 for its lower bound)."""
    if cfg["local_steps"] >= 0:
        return cfg["local_steps"]
    return METHODS.get(cfg["method"]).local_steps


def training_rounds(cfg: Options) -> int:
    """Rounds after round 0: ``rounds``, or fewer for a method that trains once (``Method.training_rounds``)."""
    return METHODS.get(cfg["method"])(cfg).training_rounds()


def data_seed(cfg: Options) -> int:
    """The seed of the partition: ``data_seed``, or ``seed`` when it is -1."""
    return cfg["data_seed"] if cfg["data_seed"] >= 0 else cfg["seed"]


def run_name(cfg: Options) -> str:
    return cfg["name"] or f"{cfg['method']}-{cfg['dataset']}-{cfg['shots']}shot-s{cfg['seed']}"
