"""One config base for every component (issue #14 item 4): ``data.ComponentConfig``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import Field

import data
from candidate_gen import Stage1Config
from data import ComponentConfig, ConfigError, ConfigSection
from data.cli import main as stickers
from evaluation import ReportConfig
from federated import FederatedConfig, FederatedConfigError
from keyword_index import KeywordIndexConfig
from reranker import RerankerTaskConfig, RowTaskConfig
from serving import ServingConfig

ROOT = Path(__file__).resolve().parents[1]


class _Inner(ConfigSection):
    """A section."""

    size: int = Field(default=3, ge=1)
    """How many."""
    label: str | None = None
    """A name that may look like a number."""
    weights: dict[str, float] = Field(default_factory=lambda: {"a": 1.0})
    """A mapping field."""


class _Toy(ComponentConfig):
    """A component config with one section."""

    config_name = "toy config"
    env_prefix = "TOY_"

    seed: int = 0
    """Seed."""
    limit: float | None = 2.0
    """A bound; None: none."""
    inner: _Inner = Field(default_factory=_Inner)
    """The section."""


def test_precedence_defaults_file_environment_settings_values(tmp_path: Path) -> None:
    path = tmp_path / "toy.toml"
    path.write_text("seed = 1\n[inner]\nsize = 4\nlabel = \"x\"\n")
    env = {"TOY_SEED": "2", "TOY_INNER__LABEL": "007", "OTHER": "1"}
    toy = _Toy.load(path, environ=env, overrides=["inner.size=5"], seed=None)
    assert (toy.seed, toy.inner.size, toy.inner.label, toy.limit) == (2, 5, "007", 2.0)
    toy = _Toy.load(path, environ=env, overrides=["seed=3", "inner.label=12"], seed=4)
    assert (toy.seed, toy.inner.label) == (4, "12")  # a text field keeps "12" as text
    assert _Toy.load(environ={"TOY_CONFIG": str(path)}).seed == 1
    assert _Toy.load(environ=env, env_prefix="NONE_").seed == 0
    # a key inside a mapping field: added to the current mapping
    assert _Toy().with_overrides(["inner.weights.b=2"]).inner.weights == {"a": 1.0, "b": 2.0}


def test_round_trips_through_toml_and_json(tmp_path: Path) -> None:
    toy = _Toy.load(overrides=["inner.label=\"q\"", "inner.weights={x = 0.5}", "limit=3.5"])
    assert _Toy.from_toml(toy.to_toml()) == toy
    assert _Toy.from_json(toy.to_json()) == toy
    assert _Toy.load(toy.save(tmp_path / "t.toml")) == toy
    assert _Toy.load(toy.save(tmp_path / "t.json")) == toy
    none = _Toy.load(limit=None).model_copy(update={"limit": None})
    with pytest.raises(ConfigError, match=r"limit is None \(its default is 2.0\).*JSON"):
        none.to_toml()
    assert _Toy.from_json(none.to_json()).limit is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"overrides": ["inner.size=0"]}, "<config>: invalid toy config: inner.size: Input should "
                                      "be greater than or equal to 1 (got 0)"),
    ({"overrides": ["inner.sise=1"]}, "unknown key 'inner.sise' of the toy config "
                                      "(extra keys are rejected); known keys: "
                                      "seed, limit, inner.size, inner.label, inner.weights"),
    ({"overrides": ["nope.x=1"]}, "unknown config section 'nope'"),
    ({"overrides": ["seed.x=1"]}, "'seed' is not a section of the toy config"),
    ({"overrides": ["seed"]}, "'seed' is not of the form section.key=value"),
    ({"environ": {"TOY_SEEDS": "1"}}, "TOY_SEEDS: unknown key 'seeds'"),
    ({"inner": {"colour": 1}}, "inner.colour: unknown key (extra keys are rejected"),
])
def test_errors_name_the_key_and_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _Toy.load(**kwargs)
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config format '.yaml'"):
        _Toy.load(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"missing.toml: config file not found"):
        _Toy.load(tmp_path / "missing.toml")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"list.json: expected a JSON object, got list"):
        _Toy.load(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON"):
        _Toy.load(tmp_path / "bad.json")


COMPONENTS = [Stage1Config, FederatedConfig, ServingConfig, ReportConfig, KeywordIndexConfig,
              RowTaskConfig, RerankerTaskConfig]


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_every_component_config_inherits_the_base_and_round_trips(cls: type) -> None:
    assert issubclass(cls, ComponentConfig)
    config = cls.load(environ={})
    assert cls.from_toml(config.to_toml()) == config
    assert cls.from_json(config.to_json()) == config


def test_the_world_config_inherits_the_base() -> None:
    from data import WorldConfig

    assert issubclass(WorldConfig, ComponentConfig)
    world = data.world_config("tiny", ["world.favourite_creators=0"], seed=3)
    assert (world.name, world.n_users, world.favourite_creators, world.seed) == (
        "tiny", 600, 0, 3)
    assert WorldConfig.from_toml(world.to_toml()) == world


def test_the_federated_config_keeps_its_own_error_type() -> None:
    with pytest.raises(FederatedConfigError, match=r"rounds\.rounds"):
        FederatedConfig.load(overrides=["rounds.rounds=0"])
    shipped = FederatedConfig.load(ROOT / "reranker" / "federated.toml")
    assert FederatedConfig.from_toml(shipped.to_toml()) == shipped


@pytest.mark.parametrize(("group", "setting", "expected"), [
    ("data", "world.n_users=7", ("n_users", 7)),
    ("candidates", "als.factors=8", ("als.factors", 8)),
    ("keywords", "earlier_tau=4.0", ("earlier_tau", 4.0)),
    ("reranker", "row.cap=40", ("row.cap", 40)),
    ("federated", "privacy.noise_multiplier=0.3", ("privacy.noise_multiplier", 0.3)),
    ("rounds", "reranker_version=2024", ("reranker_version", "2024")),
    ("report", "devices=9", ("devices", 9)),
])
def test_every_cli_group_shows_its_effective_config(tmp_path: Path, group: str, setting: str,
                                                    expected: tuple[str, object]) -> None:
    runner = CliRunner()
    key, value = expected
    for args in (["config", "show"], ["config"]):
        result = runner.invoke(stickers, ["--var", str(tmp_path), group, *args, "--set",
                                          setting, "--format", "json"])
        assert result.exit_code == 0, result.output
        node = json.loads(result.output)
        for part in key.split("."):
            node = node[part]
        assert node == value
    result = runner.invoke(stickers, ["--var", str(tmp_path), group, "config", "show",
                                      "--set", "no_such_key=1"])
    assert result.exit_code == 2 and "unknown key 'no_such_key'" in result.output
