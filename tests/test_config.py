import sys

import pytest

from fedfit.config import ConfigError, defaults, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_flower_app_config_mirrors_the_defaults():
    from pathlib import Path

    py = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert py["tool"]["flwr"]["app"]["config"] == defaults()


def test_overrides_and_files(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('rounds = 3\nshots = 10\n[run]\nlr = 0.01\n')
    cfg = load_config(f, ["rounds=4", "delta=true", "lr=1e-3"])
    assert (cfg["rounds"], cfg["shots"], cfg["delta"], cfg["lr"]) == (4, 10, True, 1e-3)


@pytest.mark.parametrize("text, match", [
    ("rounds = [", "not valid TOML"),
    ("roundz = 3", "unknown option 'roundz'"),
    ("rounds = 'ten'", "rounds: expected int"),
    ("clients_per_round = 50", "clients_per_round must be in 1..num_clients"),
    ("method = 'magic'", "method = .magic. is unknown"),
])
def test_malformed_config_files_get_clear_errors(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f)


def test_bad_overrides():
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(overrides=["rounds"])
    with pytest.raises(ConfigError, match="expected true/false"):
        load_config(overrides=["delta=maybe"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/no/such/file.toml")


def test_a_table_other_than_run_is_an_error_not_silently_dropped(tmp_path):
    from fedfit.config import ConfigError, load_config

    f = tmp_path / "c.toml"
    f.write_text("rounds = 2\n[rnu]\nshots = 10\n")
    with pytest.raises(ConfigError, match=r"unknown table\(s\) \[rnu\]"):
        load_config(f)
    f.write_text("rounds = 2\n[run]\nshots = 10\n")
    assert load_config(f)["shots"] == 10


def test_every_adapter_option_it_declares_is_a_run_option():
    """An adapter maps its keywords to run options in its own file (``config_options``), declared in fedfit/options/."""
    from fedfit.adapters import ADAPTERS
    from fedfit.config import defaults
    from fedfit.federated import adapter_options

    known = defaults()
    for name in ADAPTERS.names():
        cls = ADAPTERS.get(name)
        for kw, option in cls.config_options.items():
            assert option in known and kw in ADAPTERS.options(name), (name, kw, option)
    assert adapter_options({**known, "adapter": "iciia", "iciia_partitions": 8}) == {"partitions": 8}
    assert adapter_options({**known, "adapter": "film"}) == {}


def _breaking(rule):
    """A value that breaks ``rule`` (declared in fedfit/options/), of the option's type."""
    if "choices" in rule:
        return "not-a-choice"
    if "lt" in rule:
        return rule["lt"]
    if "le" in rule:
        return rule["le"] + 1
    low = rule.get("gt", rule.get("ge"))
    bad = low - 1 if "ge" in rule else low
    while bad in rule.get("or", []):
        bad -= 1
    return bad


def test_declared_rules_match_the_defaults_and_each_one_refuses_a_value_that_breaks_it():
    from fedfit.config import rules, validate

    known, declared = defaults(), rules()
    assert set(declared) <= set(known)  # no rule for an option that does not exist
    base = load_config()
    validate(base)  # every default keeps its own rule
    for key, rule in declared.items():
        assert set(rule) <= {"ge", "gt", "le", "lt", "or", "hint", "choices", "unit"}, key
        bad = _breaking(rule)
        if isinstance(known[key], int) and not isinstance(known[key], bool):
            bad = int(bad) if float(bad).is_integer() else bad
        with pytest.raises(ConfigError) as e:
            validate({**base, key: bad})
        msg = str(e.value)
        assert msg.startswith(key) and "\n" not in msg and repr(bad) in msg, (key, msg)
        for special in rule.get("or", []):
            validate({**base, key: special})


def test_a_rule_message_names_the_bounds_the_unit_and_the_special_values():
    from fedfit.config import check_rule

    with pytest.raises(ConfigError, match=r"^image_size must be >= 16 and <= 1024 pixels, got 8$"):
        check_rule("image_size", 8, {"ge": 16, "le": 1024, "unit": "pixels"})
    with pytest.raises(ConfigError, match=r"^data_seed must be >= 0 \(or -1 for the same as seed\), got -3$"):
        check_rule("data_seed", -3, {"ge": 0, "or": [-1], "hint": "-1 for the same as seed"})
    check_rule("data_seed", -1, {"ge": 0, "or": [-1]})
    with pytest.raises(ConfigError, match=r"^engine = 'x' is unknown; choose one of: ray, inline$"):
        check_rule("engine", "x", {"choices": ["ray", "inline"]})


def test_the_typed_options_are_the_defaults_keys_with_their_types():
    import typing

    from fedfit.option_types import Options

    hints = typing.get_type_hints(Options)
    assert list(hints) == list(defaults())  # the same options, in the same order
    assert {k: type(v) for k, v in defaults().items()} == hints


def test_a_ray_address_is_checked_before_ray_starts():
    import socket

    from fedfit.preflight import ResourceError
    from strategies.ray_cluster import check_ray_address

    with pytest.raises(ResourceError, match="expected host:port"):
        check_ray_address("headnode")
    with socket.socket() as s:  # bound, not listening: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ResourceError, match=rf"no Ray head answers there .*--port={port}"):
            check_ray_address(f"ray://127.0.0.1:{port}")
    with socket.socket() as s:  # a listening head
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_ray_address(f"127.0.0.1:{s.getsockname()[1]}")
    check_ray_address("auto")
    check_ray_address("")
