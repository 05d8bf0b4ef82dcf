"""The synthetic world: determinism, schemas, and the statistical properties it claims.

Each property of the module docstring is measured on generated data, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import data
from data import generate_world, world_config


def _gini(x: np.ndarray) -> float:
    x = np.sort(x.astype(float))
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _number(value: object) -> float:
    """A polars aggregate (``Series.mean()``, ``.min()``) as a float.

    Polars types these as any Python literal or None; the statistics here must be numbers.
    """
    assert isinstance(value, int | float), f"expected a number, got {value!r}"
    return float(value)


def _rows(column: pl.Series) -> np.ndarray:
    """A column of equal-length vectors as a 2-D array, shape (n_rows, vector length)."""
    return np.stack(list(column.to_numpy()))


def _part_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): data.file_sha256(p)
            for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def medium_world(tmp_path_factory: pytest.TempPathFactory, catalog: data.Catalog) -> data.Dataset:
    """4000 users, 400 packages: big enough to measure distributions, ~1 s to build."""
    cfg = world_config("tiny", name="medium", n_users=4000, n_packages=400, n_creators=40,
                       chunk_users=2000, interactions_per_user=12)
    path = generate_world(cfg, catalog, tmp_path_factory.mktemp("medium"), show_progress=False)
    return data.open_dataset(path)


def test_tiny_world_has_every_table_with_valid_schema(tiny_world: Path) -> None:
    ds = data.open_dataset(tiny_world)
    assert ds.tables == list(data.TABLES)
    for table in data.TABLES:
        assert ds.table(table).height > 0, table
    users = ds.table("users")
    assert users["user_id"].n_unique() == users.height == 600
    assert ds.manifest.metrics["rows"]["interactions"] == ds.table("interactions").height
    stickers = ds.table("stickers")
    assert stickers["label_ids"].list.len().is_between(1, 3).all()
    assert ds.table("packages")["n_stickers"].is_between(8, 40).all()
    # ground truth lives apart from the dataset
    assert not (tiny_world / "truth").exists()
    truth = tiny_world.parent.parent / "truth" / "tiny"
    assert data.read_manifest(truth, kind="truth").files


def test_same_seed_same_files_other_seed_differs(tmp_path: Path, catalog: data.Catalog) -> None:
    a = generate_world(world_config("tiny", seed=7), catalog, tmp_path / "a", show_progress=False)
    b = generate_world(world_config("tiny", seed=7), catalog, tmp_path / "b", show_progress=False)
    c = generate_world(world_config("tiny", seed=8), catalog, tmp_path / "c", show_progress=False)
    assert _part_hashes(a) == _part_hashes(b)
    ha, hc = _part_hashes(a), _part_hashes(c)
    assert ha["interactions/part-00000.parquet"] != hc["interactions/part-00000.parquet"]
    assert ha["device_logs/part-00000.parquet"] != hc["device_logs/part-00000.parquet"]
    assert ha["device_library/part-00000.parquet"] != hc["device_library/part-00000.parquet"]
    # the ground truth (library with mechanisms, sessions' acquisition times) too
    assert _part_hashes(tmp_path / "a" / "truth" / "tiny") == _part_hashes(
        tmp_path / "b" / "truth" / "tiny")


def test_label_popularity_is_heavy_tailed(medium_world: data.Dataset) -> None:
    counts = (medium_world.table("device_logs")
              .join(medium_world.table("stickers").select("sticker_id", "label_ids"),
                    on="sticker_id")
              .explode("label_ids")["label_ids"].value_counts()["count"].to_numpy())
    counts = np.sort(counts)[::-1]
    top = max(1, counts.size // 20)
    assert counts[:top].sum() / counts.sum() >= 0.3  # top 5 % of labels: >= 30 % of uses
    ranks = np.arange(1, counts.size + 1)
    slope = np.polyfit(np.log(ranks[: counts.size // 2]), np.log(counts[: counts.size // 2]), 1)[0]
    assert -2.0 < slope < -0.6  # a power law in rank, not a flat or geometric curve


def test_package_popularity_and_activity_are_heavy_tailed(medium_world: data.Dataset) -> None:
    inter = medium_world.table("interactions")
    per_package = inter["package_id"].value_counts()["count"].to_numpy()
    assert _gini(per_package) >= 0.5
    top = np.sort(per_package)[::-1][: per_package.size // 10].sum() / per_package.sum()
    assert top >= 0.35
    per_user = inter["user_id"].value_counts()["count"].to_numpy()
    assert per_user.max() >= 10 * np.median(per_user)


def test_taste_has_demographic_structure(medium_world: data.Dataset) -> None:
    """Package choices differ more between languages than between halves of one language."""
    inter = medium_world.table("interactions").join(
        medium_world.table("users").select("user_id", "language"), on="user_id")
    n_pkg = medium_world.table("packages").height

    def dist(df: pl.DataFrame) -> np.ndarray:
        v = np.bincount(df["package_id"].to_numpy(), minlength=n_pkg).astype(float) + 0.5
        return v / v.sum()

    def js(p: np.ndarray, q: np.ndarray) -> float:
        m = (p + q) / 2
        return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())

    ja = inter.filter(pl.col("language") == "ja")
    th = inter.filter(pl.col("language") == "th")
    even, odd = pl.col("user_id") % 2 == 0, pl.col("user_id") % 2 == 1
    within = js(dist(ja.filter(even)), dist(ja.filter(odd)))
    between = js(dist(ja.filter(even)), dist(th.filter(even)))
    assert between > 3 * within


def test_private_preference_differs_from_purchases(medium_world: data.Dataset) -> None:
    logs = medium_world.table("device_logs")
    owned = medium_world.table("interactions").select("user_id", "package_id").unique()
    never_acquired = logs.join(owned, on=["user_id", "package_id"], how="anti").height / logs.height
    assert 0.2 <= never_acquired <= 0.7
    # ...and what users send most is not just what they bought most
    sent = logs.group_by("package_id").len().rename({"len": "sent"})
    bought = medium_world.table("interactions").group_by("package_id").len().rename(
        {"len": "bought"})
    both = sent.join(bought, on="package_id", how="full", coalesce=True).fill_null(0)
    rho = np.corrcoef(both["sent"].rank().to_numpy(), both["bought"].rank().to_numpy())[0, 1]
    assert 0.0 < rho < 0.95


def test_device_texts_are_typed_keywords(medium_world: data.Dataset) -> None:
    logs = medium_world.table("device_logs")
    assert _number(logs["text"].str.len_chars().min()) >= 1
    langs = set(logs["language"].unique())
    assert langs <= {"ja", "zh-hant", "th", "en", "ko"} and len(langs) == 5
    ja = logs.filter(pl.col("language") == "ja")["text"]
    # some Japanese keywords are typed in half-width katakana (a variant people produce)
    assert ja.str.contains("[\uff66-\uff9f]").any()


def test_bad_world_configs_are_rejected() -> None:
    with pytest.raises(data.ConfigError, match="unknown world size 'huge'"):
        world_config("huge")
    with pytest.raises(data.ConfigError, match="unknown language"):
        world_config("tiny", languages={"xx": 1.0})
    with pytest.raises(data.ConfigError, match="n_users"):
        world_config("tiny", n_users=0)


# ---------------------------------------------------------------- the clock


def _truth(dataset: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(dataset.parent.parent / "truth" / dataset.name / f"{name}.parquet")


def test_no_send_before_the_sender_holds_the_package(tiny_world: Path) -> None:
    ds = data.open_dataset(tiny_world)
    logs = ds.table("device_logs")
    library = ds.table("device_library")
    assert library.select("user_id", "package_id").is_unique().all()
    held = logs.join(library.rename({"ts": "held_from"}), on=["user_id", "package_id"],
                     how="left")
    assert held["held_from"].null_count() == 0  # every send is of a package in the library
    assert (held["ts"] >= held["held_from"]).all()
    # and from the server's side: no send precedes the logged purchase or download
    first = ds.table("interactions").group_by("user_id", "package_id").agg(
        pl.col("ts").min().alias("acquired"))
    logged = logs.join(first, on=["user_id", "package_id"], how="inner")
    assert logged.height > 0.3 * logs.height
    assert (logged["ts"] >= logged["acquired"]).all()
    # the library's purchases and downloads are exactly the server log
    bought = library.filter(pl.col("source").is_in(data.EVENTS)).rename({"source": "event"})
    server = ds.table("interactions").select("user_id", "package_id", "event", "ts")
    assert bought.sort("user_id", "package_id").equals(
        server.sort("user_id", "package_id").select(bought.columns))
    # ground truth agrees: each session's holding was acquired at or before the send
    truth = _truth(tiny_world, "sessions")
    assert truth["session_id"].to_list() == logs["session_id"].to_list()
    assert (truth["acquired_at"] <= logs["ts"]).all()


def test_acquisitions_continue_after_the_test_start(tiny_world: Path) -> None:
    ds = data.open_dataset(tiny_world)
    split = data.time_split(ds)
    test_start = datetime.fromtimestamp(split.test_start, UTC)
    library = ds.table("device_library")
    after = _number((library["ts"] >= test_start).mean())
    assert 0.1 < after < 0.5
    inter = ds.table("interactions")
    assert 0.1 < _number((inter["ts"] >= test_start).mean()) < 0.5
    for source in data.LIBRARY_SOURCES:  # every way of acquiring goes on after the split
        assert library.filter((pl.col("source") == source) & (pl.col("ts") >= test_start)
                              ).height > 0, source
    # so some held-out sends are of packages acquired only after the split ...
    truth = _truth(tiny_world, "sessions").with_columns(ts=ds.table("device_logs")["ts"])
    held_out = truth.filter(pl.col("ts") >= test_start)
    new = _number((held_out["acquired_at"] >= test_start).mean())
    assert 0.05 < new < 0.5
    assert ds.manifest.metrics["held_out_sends_acquired_after_test_start_share"] == \
        pytest.approx(new)
    # ... and sends spread over the year, not only its end
    days = (ds.table("device_logs")["ts"].dt.ordinal_day()).to_numpy()
    assert np.histogram(days, bins=4, range=(1, 366))[0].min() > 0.03 * days.size


# ---------------------------------------------------------------- knobs

KnobWorld = Callable[..., Path]
"""Builds (once per settings) a world with ``world.KEY=VALUE`` settings; returns its path."""


@pytest.fixture(scope="module")
def knob_world(tmp_path_factory: pytest.TempPathFactory, catalog: data.Catalog) -> KnobWorld:
    """Build (once per settings) a 1500-user world with some knobs set; returns its path."""
    built: dict[tuple[str, ...], Path] = {}
    root = tmp_path_factory.mktemp("knobs")

    def build(*settings: str) -> Path:
        if settings not in built:
            cfg = world_config("tiny", settings, name=f"w{len(built)}", n_users=1500,
                               n_packages=300, n_creators=40, chunk_users=1500)
            built[settings] = generate_world(cfg, catalog, root, show_progress=False)
        return built[settings]

    return build


def _held_at_send(dataset: Path) -> pl.DataFrame:
    """Every (session, package held at its send time) with taste fit and favourite flag."""
    ds = data.open_dataset(dataset)
    logs = ds.table("device_logs").select("session_id", "user_id", "ts",
                                          pl.col("package_id").alias("sent"))
    library = _truth(dataset, "library").select("user_id", "package_id", "favourite",
                                                pl.col("ts").alias("held_from"))
    users = _truth(dataset, "users")
    styles = _truth(dataset, "packages")
    fit = (library.select("user_id", "package_id").unique()
           .join(users.select("user_id", "taste"), on="user_id")
           .join(styles.select("package_id", "style"), on="package_id"))
    dots = (fit["taste"].to_numpy() * fit["style"].to_numpy()).sum(axis=1)
    fit = fit.select("user_id", "package_id").with_columns(fit=pl.Series(dots))
    return (logs.join(library, on="user_id").filter(pl.col("held_from") <= pl.col("ts"))
            .join(fit, on=["user_id", "package_id"])
            .with_columns(is_sent=pl.col("package_id") == pl.col("sent")))


def test_favourite_creators_zero_removes_favourites_and_gifts(knob_world: KnobWorld) -> None:
    on, off = knob_world(), knob_world("world.favourite_creators=0")
    assert _number((_truth(on, "sessions")["mechanism"] == "favourite_gift").mean()) > 0.05
    assert _truth(off, "library")["favourite"].sum() == 0
    assert (data.open_dataset(off).table("device_library")["source"] == "gift").sum() == 0
    sessions = _truth(off, "sessions")
    assert not sessions["favourite"].any()
    assert (sessions["mechanism"] == "favourite_gift").sum() == 0


@pytest.mark.parametrize("boost", ["1.5", "0"])
def test_favourite_boost_zero_sends_favourites_as_taste_says(knob_world: KnobWorld,
                                                             boost: str) -> None:
    """P(favourite sent) against its share of exp(β_dev·fit) over what is held at send time."""
    held = _held_at_send(knob_world(f"world.favourite_boost={boost}"))
    held = held.with_columns(w=(4.0 * pl.col("fit")).exp())
    per = held.group_by("session_id").agg(
        (pl.col("w") * pl.col("favourite")).sum() / pl.col("w").sum(),
        (pl.col("is_sent") & pl.col("favourite")).any().alias("sent_favourite"))
    expected, observed = _number(per["w"].mean()), _number(per["sent_favourite"].mean())
    se = np.sqrt(expected * (1 - expected) / per.height)
    if boost == "0":
        assert abs(observed - expected) < 4 * se
    else:
        assert observed > expected + 10 * se


@pytest.mark.parametrize("beta", ["4.0", "0"])
def test_device_taste_beta_zero_sends_regardless_of_taste(knob_world: KnobWorld, beta: str) -> None:
    """Among non-favourite sends, the sent package's fit against the held ones' mean fit."""
    held = _held_at_send(knob_world(f"world.device_taste_beta={beta}")).filter(
        ~pl.col("favourite"))
    per = held.group_by("session_id").agg(
        pl.col("fit").mean().alias("mean_fit"), pl.col("fit").filter(pl.col("is_sent")).first(),
        pl.len()).drop_nulls()
    gap = (per["fit"] - per["mean_fit"]).to_numpy()
    se = gap.std() / np.sqrt(gap.size)
    if beta == "0":
        assert abs(gap.mean()) < 4 * se
    else:
        assert gap.mean() > 0.05 and gap.mean() > 10 * se


def test_subscription_knobs_zero_remove_the_subscription(knob_world: KnobWorld) -> None:
    on = _truth(knob_world(), "library")
    assert (on["mechanism"] == "subscription_library").sum() > 0
    no_library = _truth(knob_world("world.subscription_library=0"), "library")
    assert (no_library["mechanism"] == "subscription_library").sum() == 0
    assert (no_library["source"] == "subscription").sum() > 0  # subscribers' own picks remain
    off = knob_world("world.subscriber_share=0")
    ds = data.open_dataset(off)
    assert not ds.table("users")["subscriber"].any()
    assert (_truth(off, "library")["source"] == "subscription").sum() == 0
    premium = ds.table("packages").filter("premium")["package_id"]
    inter = ds.table("interactions")
    # every premium acquisition is now a logged purchase
    assert (inter.filter(pl.col("package_id").is_in(premium.implode()))["event"]
            == "purchase").all()


@pytest.mark.parametrize("beta", ["4.0", "0"])
def test_taste_beta_zero_makes_server_choices_ignore_taste(knob_world: KnobWorld,
                                                           beta: str) -> None:
    """Fit of chosen packages with their chooser against with a random other user."""
    path = knob_world(f"world.taste_beta={beta}")
    inter = data.open_dataset(path).table("interactions")
    taste = _rows(_truth(path, "users").sort("user_id")["taste"])
    style = _rows(_truth(path, "packages").sort("package_id")["style"])
    users, pkgs = inter["user_id"].to_numpy(), inter["package_id"].to_numpy()
    own = (taste[users] * style[pkgs]).sum(axis=1)
    other = (taste[np.random.default_rng(0).permutation(users)] * style[pkgs]).sum(axis=1)
    gap = own - other
    se = gap.std() / np.sqrt(gap.size)
    if beta == "0":
        assert abs(gap.mean()) < 4 * se
    else:
        assert gap.mean() > 0.1


def test_demographic_and_individual_taste_knobs(knob_world: KnobWorld) -> None:
    def language_means(path: Path) -> np.ndarray:
        users = data.open_dataset(path).table("users").join(_truth(path, "users"), on="user_id")
        return np.stack([_rows(g["taste"]).mean(axis=0)
                         for _, g in users.group_by("language")])

    # the language part of taste shows as a mean taste per language far from zero
    assert np.linalg.norm(language_means(knob_world()), axis=1).min() > 0.25
    assert np.linalg.norm(language_means(knob_world("world.demographic_prior=0")),
                          axis=1).max() < 0.15
    path = knob_world("world.taste_individual=0")
    users = data.open_dataset(path).table("users").join(_truth(path, "users"), on="user_id")
    spread = [np.ptp(_rows(g["taste"]), axis=0).max()
              for _, g in users.group_by("language", "age_bucket", "gender")]
    assert max(spread) < 1e-6  # one taste per demographic segment


def test_creator_home_bias_zero_gives_characters_no_home_market(knob_world: KnobWorld) -> None:
    def same_minus_other(path: Path) -> float:
        creators = _truth(path, "creators")
        style = _rows(creators["style"])
        origin = creators["origin_language"].to_numpy()
        cos = style @ style.T
        same = origin[:, None] == origin[None, :]
        off_diag = ~np.eye(origin.size, dtype=bool)
        return float(cos[same & off_diag].mean() - cos[~same].mean())

    assert same_minus_other(knob_world()) > 0.15
    assert abs(same_minus_other(knob_world("world.creator_home_bias=0"))) < 0.1


def test_settings_from_the_command_line(runner: CliRunner, tmp_path: Path) -> None:
    from data.cli import main as stickers

    var = tmp_path / "var"
    (var / "catalog").mkdir(parents=True)
    src = data.ensure_catalog(data.var_root())
    (var / "catalog" / src.name).symlink_to(src.resolve())
    result = runner.invoke(stickers, ["--var", str(var), "-q", "data", "generate", "--size",
                                      "tiny", "--set", "world.favourite_creators=0",
                                      "--set", "subscriber_share=0"])
    assert result.exit_code == 0, result.output
    path = var / "data" / "tiny-favourite_creators=0-subscriber_share=0"
    params = data.open_dataset(path).manifest.parameters
    assert (params["favourite_creators"], params["subscriber_share"]) == (0, 0)
    bad = runner.invoke(stickers, ["--var", str(var), "data", "generate", "--size", "tiny",
                                   "--set", "world.favourite=0"])
    assert bad.exit_code == 2 and "unknown key 'favourite' of the world config" in bad.output
