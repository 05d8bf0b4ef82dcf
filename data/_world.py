"""The synthetic sticker world: a generative model of users, packages and their logs.

No real sticker logs can be had, so the world is generated, deterministically from a
seed, while its vocabulary is real (labels and keywords from Unicode CLDR, see
:mod:`data._catalog`). The world has a clock: everything a device holds arrives at a
time, and a device sends only from what it holds at that moment. The generative model,
top to bottom:

1. **Labels.** Every catalog label gets a popularity ``π_l ∝ rank^-α`` (Zipf,
   ``label_zipf``); ranks favour faces and gestures (the concepts people send stickers
   for) through a group weight plus Gumbel noise. Only labels with keywords in every
   language of the world are used on stickers, so every sticker can be typed for.
2. **Users.** Language from a market mix (``languages``: ja, zh-hant, th, en, ko …),
   region from language, age bucket and gender (estimated demographics) from
   per-market distributions, ``subscriber`` with probability ``subscriber_share``.
   A latent unit taste ``t_u ∝ a·(E_lang + E_age + E_gender) + s·z_u`` in ``R^dim``: a
   demographic prior (``a = demographic_prior``) plus an individual deviation
   (``s = taste_individual``, ``z_u ~ N(0, I)``). Activity (number of server choices)
   is log-normal with shape ``activity_sigma``: a heavy tail of very active users.
   Each user becomes active on a day ``s_u ~ U(0, days/2)``.
3. **Creators and packages.** A creator (character) has a latent style
   ``c_k = h·E_lang(origin) + N(0, I)`` (``h = creator_home_bias``), so characters
   appeal most to their home market, and a log-normal popularity. Packages are spread
   over creators ∝ popularity^0.5; a package's style is its creator's plus
   ``N(0, 0.5² I)``, with a log-normal quality. Each package holds 8–40 stickers, each
   with 1–3 labels drawn from ``π``; a premium flag; a release date; ~3 % are withdrawn
   (``available=false``).
4. **Acquisitions (the device library).** Three mechanisms put packages on a device:

   - *choice*: for each of its interactions a user picks a creator with probability
     ``∝ pop_k · exp(β · cos(t_u, c_k))`` (``β = taste_beta``) and then, among three
     packages of that creator drawn by quality, the one maximising
     ``β · cos(t_u, v_p) + Gumbel``. Free packages are *downloads*, premium ones
     *purchases* — except that subscribers take premium packages through the
     subscription (source ``subscription``), which the server log never records;
   - *subscription library*: each subscriber adds about ``subscription_library`` more
     premium packages, chosen the same way (source ``subscription``);
   - *favourite gifts*: ``favourite_creators`` favourite characters per user, drawn
     ∝ popularity^0.5 independently of taste; the first three packages of each arrive
     as gifts (source ``gift``).

   Every acquisition gets a time uniform in the user's active period
   ``[s_u, days)``, not before the package's release (plus 0–3 days); a package is
   held once, from its earliest acquisition (nobody buys what they were given). So
   acquisitions go on all year, after the validation and test starts too. The
   **server log** (``interactions``) is the purchases and downloads, at their times;
   the device's own view of all of it is ``device_library`` (private, like the device
   log).
5. **Device log (private).** A device user sends ``~Poisson(sessions_per_user ·
   sqrt(activity)) + 1`` stickers at times uniform between their first acquisition and
   the end of the period. At send time ``t`` the device picks a package *it holds at
   t* with weight ``exp(β_dev · cos(t_u, v_p) + favourite_boost · [favourite
   character])`` (``β_dev = device_taste_beta``), a sticker of it by label
   popularity, an intended label among the sticker's labels, and a keyword of that
   label in the user's language, typed with realistic variants (katakana ↔ hiragana,
   half-width kana, capitalisation, repeated characters, trailing punctuation) after
   an optional neutral opening ("今日は", "hey ", "วันนี้"). No send precedes the
   sender's acquisition of the package, by construction. Sends are independent given
   what is held: the world has no habit or repeat mechanism beyond the taste and
   favourite weights.
6. **The split** (:mod:`data._split`): the manifest records ``parameters["split"]``
   with ``validation_start`` and ``test_start`` at ``validation_start_at`` and
   ``test_start_at`` of the period and a ``validation_share`` of devices.
7. **Ground truth** (tastes, styles, favourites, device users' libraries with each holding's
   mechanism, each session's intended label, source and acquisition time) goes to
   ``var/truth/<name>/``, separate from the dataset: it is for oracle metrics and
   tests only and no model code reads it.

Knobs of the hidden preferences, each of which can be set to 0 (``stickers data
generate --set world.KEY=0``): ``favourite_creators``, ``favourite_boost``,
``subscriber_share``, ``subscription_library``, ``taste_beta``, ``device_taste_beta``,
``demographic_prior``, ``taste_individual``, ``creator_home_bias`` (see
:class:`WorldConfig` and the README's table).

Everything is generated in chunks of users with per-chunk random generators spawned
from one :class:`numpy.random.SeedSequence`, so peak memory is bounded by the chunk
size and the output does not depend on how chunks are scheduled.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import jaconv
import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from data._artifact import fingerprint, publish_artifact
from data._catalog import Catalog
from data._config import ComponentConfig
from data._console import progress
from data._errors import ConfigError
from data._schemas import LIBRARY_SOURCES, SCHEMAS, validate_frame
from data._split import DEFAULT_SALT, TimeSplit

__all__ = [
    "SIZES", "WorldConfig", "generate_world", "parse_settings", "settings_name", "world_config",
]

_MARKETS: dict[str, tuple[list[str], list[float]]] = {
    "ja": (["JP"], [1.0]),
    "zh-hant": (["TW", "HK"], [0.85, 0.15]),
    "th": (["TH"], [1.0]),
    "en": (["US", "ID", "PH", "GB", "SG"], [0.3, 0.3, 0.15, 0.15, 0.1]),
    "ko": (["KR"], [1.0]),
    "zh": (["CN", "SG"], [0.9, 0.1]),
    "es": (["ES", "MX"], [0.4, 0.6]),
}
_AGES = ["13-19", "20-29", "30-39", "40-49", "50+"]
_AGE_MIX = {"ja": [0.10, 0.24, 0.24, 0.22, 0.20], "th": [0.18, 0.34, 0.26, 0.14, 0.08]}
_DEFAULT_AGE_MIX = [0.14, 0.30, 0.26, 0.17, 0.13]
_GENDERS = ["f", "m", "x"]
_GROUP_WEIGHT = {
    "smileys-emotion": 8.0,
    "people-body": 3.0,
    "animals-nature": 1.5,
    "food-drink": 1.2,
    "activities": 1.0,
    "symbols": 1.0,
    "objects": 0.6,
    "travel-places": 0.5,
}
# Concepts people send stickers for most (thanks, laughing, love, ok, sleepy ...): ranked first.
_CORE_LABELS = [
    "folded_hands", "face_with_tears_of_joy", "red_heart", "thumbs_up", "sleeping_face",
    "smiling_face_with_heart_eyes", "loudly_crying_face", "ok_hand", "waving_hand",
    "party_popper", "rolling_on_the_floor_laughing", "face_blowing_a_kiss", "pleading_face",
    "clapping_hands", "grinning_squinting_face", "sparkles", "people_hugging", "thinking_face",
    "enraged_face", "person_bowing", "birthday_cake", "fire", "hundred_points", "sweat_droplets",
    "crying_face", "smiling_face_with_halo", "face_with_rolling_eyes", "sun", "cat_face",
]
_OPENINGS: dict[str, list[str]] = {
    "en": ["hey ", "well ", "so ", "omg ", "ok ", "today was long. ", "see you, "],
    "ja": ["今日は", "あのね、", "そうそう", "さっきの", "本当に", "まじで"],
    "zh-hant": ["今天", "剛剛", "那個", "真的", "好吧，"],
    "th": ["วันนี้", "เมื่อกี้", "นี่", "จริงๆ "],
    "ko": ["오늘 ", "아까 ", "그냥 ", "진짜 "],
    "zh": ["今天", "刚才", "真的", "那个"],
    "es": ["hola ", "bueno, ", "hoy ", "oye "],
}
_SYLLABLES = [
    "mo",
    "ko",
    "pi",
    "ra",
    "bu",
    "ni",
    "ta",
    "su",
    "ke",
    "po",
    "ru",
    "mi",
    "na",
    "to",
    "chi",
    "pu",
    "yo",
    "ri",
    "ma",
    "nu",
]
_ANIMALS = [
    "Bear",
    "Bunny",
    "Cat",
    "Dog",
    "Panda",
    "Duck",
    "Frog",
    "Penguin",
    "Hamster",
    "Otter",
    "Fox",
    "Chick",
    "Seal",
    "Koala",
    "Sloth",
    "Tiger",
]
_SERIES = ["", " 2", " 3", " Daily", " Big", " Winter", " Love", " Work", " Party", " Pop-up"]
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
# How a device came to hold a package (codes index _SOURCES; the first two are logged).
_SOURCES = LIBRARY_SOURCES
_PURCHASE, _DOWNLOAD, _SUBSCRIPTION, _GIFT = range(4)
# Which mechanism of the world put it there (ground truth only).
_MECHANISMS = ("choice", "subscription_library", "favourite_gift")
_BY_CHOICE, _BY_SUBSCRIPTION_LIBRARY, _BY_FAVOURITE_GIFT = range(3)


class WorldConfig(ComponentConfig):
    """Parameters of the synthetic world (see the module docstring for the model).

    A flat config: ``--set`` keys may carry a ``world.`` prefix (``world.n_users=10``).
    """

    config_name: ClassVar[str] = "world config"
    settings_prefix: ClassVar[str | None] = "world"

    name: str = Field(description="Dataset name: the output goes to var/data/<name>/.")
    seed: int = Field(0, description="Seed of every random draw; same seed, same files.")
    n_users: int = Field(gt=0, description="Number of users.")
    n_packages: int = Field(gt=0, description="Number of sticker packages.")
    n_creators: int = Field(gt=0, description="Number of creators (characters).")
    interactions_per_user: float = Field(
        gt=0, description="Mean server interactions per user before de-duplication."
    )
    activity_sigma: float = Field(
        1.0, ge=0, description="Log-normal shape of user activity (heavier tail when larger)."
    )
    device_user_share: float = Field(
        1.0, gt=0, le=1, description="Share of users whose device log is simulated."
    )
    sessions_per_user: float = Field(
        gt=0, description="Mean typing sessions (stickers sent) per device user."
    )
    dim: int = Field(16, gt=1, description="Dimension of latent tastes and styles.")
    languages: dict[str, float] = Field(
        default_factory=lambda: {"ja": 0.42, "zh-hant": 0.2, "th": 0.2, "en": 0.1, "ko": 0.08},
        description="Market mix: language -> share of users (normalised).",
    )
    subscriber_share: float = Field(
        0.12, ge=0, le=1,
        description="Share of subscribers (they use premium packages through a subscription "
        "the server log never records); 0: nobody subscribes.")
    subscription_library: int = Field(
        6, ge=0,
        description="Premium packages a subscriber adds to the library besides their own "
        "picks (about this many); 0: the library holds only the picks.")
    favourite_creators: int = Field(
        2, ge=0,
        description="Favourite characters per user, independent of taste; up to three "
        "packages of each arrive as gifts; 0: no favourites, no gifts.")
    favourite_boost: float = Field(
        1.5, ge=0,
        description="Log-weight bonus of favourite characters' packages on device; 0: a "
        "favourite is sent as often as its taste fit says.")
    taste_beta: float = Field(
        4.0, ge=0,
        description="Weight of taste x style in server-side choices (creators, packages); "
        "0: choices follow popularity and quality only.")
    device_taste_beta: float = Field(
        4.0, ge=0,
        description="β_dev: weight of taste x style when a device picks a held package to "
        "send from (taste concentration); 0: uniform over held packages.")
    demographic_prior: float = Field(
        1.0, ge=0,
        description="Scale of the demographic part of taste (language, age, gender "
        "embeddings); 0: taste carries no demographic signal.")
    taste_individual: float = Field(
        0.9, ge=0,
        description="Scale of the individual deviation of taste; 0: users of one "
        "demographic segment share one taste.")
    creator_home_bias: float = Field(
        0.8, ge=0,
        description="Weight of a character's home market in its style; 0: characters "
        "appeal to no market in particular.")
    label_zipf: float = Field(1.05, gt=0, description="Zipf exponent of label popularity.")
    quality_sigma: float = Field(1.2, ge=0, description="Log-normal shape of package quality.")
    days: int = Field(365, gt=1, description="Length of the logged period in days.")
    validation_start_at: float = Field(
        0.65, gt=0, lt=1,
        description="Start of the validation period, as a share of the logged period.")
    test_start_at: float = Field(
        0.8, gt=0, lt=1,
        description="Start of the test (held-out) period, as a share of the logged period.")
    validation_share: float = Field(
        0.1, ge=0, lt=1, description="Share of devices reserved for tuning (validation).")
    chunk_users: int = Field(10_000, gt=0, description="Users generated per chunk.")
    interactions_part_rows: int = Field(
        2_000_000, gt=0, description="Rows per Parquet part of the interactions table."
    )

    @model_validator(mode="after")
    def _split_in_order(self) -> WorldConfig:
        if not self.validation_start_at < self.test_start_at:
            raise ValueError(f"validation_start_at={self.validation_start_at} should be < "
                             f"test_start_at={self.test_start_at}")
        return self

    def time_split(self) -> TimeSplit:
        """The split this world records in its manifest (``parameters["split"]``)."""
        start = _EPOCH.timestamp()
        return TimeSplit(start + self.validation_start_at * self.days * 86_400.0,
                         start + self.test_start_at * self.days * 86_400.0,
                         self.validation_share, DEFAULT_SALT)

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(_MARKETS))
        if unknown:
            raise ValueError(f"unknown language(s) {unknown}; expected some of {sorted(_MARKETS)}")
        if not value or any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("language shares must be non-negative with a positive sum")
        return value


SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        n_users=600,
        n_packages=120,
        n_creators=12,
        interactions_per_user=10,
        sessions_per_user=12,
        chunk_users=600,
    ),
    "small": dict(
        n_users=100_000,
        n_packages=5_000,
        n_creators=300,
        interactions_per_user=20,
        sessions_per_user=12,
    ),
    "large": dict(
        n_users=1_000_000,
        n_packages=100_000,
        n_creators=2_500,
        interactions_per_user=34,
        device_user_share=0.1,
        sessions_per_user=12,
        chunk_users=20_000,
    ),
}


def world_config(size: str, settings: Iterable[str] = (), path: str | Path | None = None,
                 **overrides: Any) -> WorldConfig:
    """The config of a named size (``tiny``, ``small``, ``large``) with overrides.

    Parameters
    ----------
    size : str
        A key of :data:`SIZES`.
    settings : iterable of str
        ``key=value`` overrides as typed on the command line (``--set``); the key may
        carry a ``world.`` prefix and values are parsed as TOML (``0``, ``0.5``,
        ``{ja = 1.0}``), else kept as text. Applied before ``overrides``.
    path : str or Path, optional
        A ``.toml``/``.json`` world config whose fields replace the preset's (before
        ``settings``).
    **overrides
        Keyword overrides; ``None`` values are ignored.

    Raises
    ------
    ConfigError
        For an unknown size or key, or a value the config rejects.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown world size {size!r}; expected one of {', '.join(SIZES)}")
    params: dict[str, Any] = {"name": size, **SIZES[size]}
    if path is not None:
        params.update(WorldConfig.read_file(path))
    WorldConfig.apply_settings(params, settings)
    params.update({k: v for k, v in overrides.items() if v is not None})
    return WorldConfig.load(**params)


def parse_settings(settings: Iterable[str]) -> dict[str, Any]:
    """``["world.favourite_creators=0", ...]`` as ``{"favourite_creators": 0, ...}``.

    Raises
    ------
    ConfigError
        If an item is not ``key=value`` or names no field of :class:`WorldConfig`.
    """
    return WorldConfig.apply_settings({}, settings)


def settings_name(size: str, settings: Iterable[str]) -> str:
    """A dataset name that encodes the settings: ``small-favourite_creators=0-…``.

    Keys lose their ``world.`` prefix and are sorted, values keep their spelling, so the
    same knobs give the same name.
    """
    parsed = parse_settings(settings)
    raw = {item.partition("=")[0].strip().removeprefix("world."): item.partition("=")[2].strip()
           for item in settings}
    parts = [f"{k}={raw[k]}" for k in sorted(parsed) if k != "name"]
    name = "-".join([size, *parts])
    if not all(c.isalnum() or c in "-_.=" for c in name):
        raise ConfigError(f"settings {list(settings)} do not make a plain dataset name; "
                          "give one with --name")
    return name


# ---------------------------------------------------------------------------- sampling


def _sample_in_rows(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column drawn per query from row-wise cumulative distributions.

    ``cum`` (R, K) float64 rows are cumulative probabilities ending at 1; ``rows`` (N,)
    pick a row per query and ``u`` (N,) are uniforms in [0, 1). Returns (N,) columns.
    """
    n_rows, k = cum.shape
    flat = (cum + np.arange(n_rows, dtype=np.float64)[:, None]).ravel()
    idx = np.searchsorted(flat, rows + u, side="right")
    return np.minimum(idx - rows * k, k - 1)


def _group_cdf(offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-group cumulative distributions shifted by the group index, (M,) float64.

    ``offsets`` (G+1,) delimit non-empty groups of positive ``weights`` (M,); element
    ``j`` of group ``g`` becomes ``g + cdf_g(j)``, so one sorted array serves every group.
    """
    sizes = np.diff(offsets)
    group_of = np.repeat(np.arange(len(sizes)), sizes)
    csum = np.cumsum(weights, dtype=np.float64)
    start = np.concatenate([[0.0], csum])[offsets[:-1]]
    total = csum[np.maximum(offsets[1:] - 1, 0)] - start
    return (csum - start[group_of]) / total[group_of] + group_of


def _sample_in_groups(offsets: np.ndarray, cdf: np.ndarray, groups: np.ndarray,
                      u: np.ndarray) -> np.ndarray:
    """Index drawn per query within variable-size groups (CSR layout).

    ``cdf`` comes from :func:`_group_cdf`; ``groups`` (N,) choose a group per query and
    ``u`` (N,) are uniforms. Returns (N,) indices into the grouped weights.
    """
    idx = np.searchsorted(cdf, groups + u, side="right")
    return np.clip(idx, offsets[groups], offsets[groups + 1] - 1)


def _sample_creators(beta: float, taste: np.ndarray, creator_style: np.ndarray,
                     creator_pop: np.ndarray, rows: np.ndarray, rng: np.random.Generator,
                     block: int = 1000) -> np.ndarray:
    """Creator per query, ``P(k | user) ∝ pop_k · exp(β · cos(t_user, c_k))``.

    ``taste`` (n, dim) and ``creator_style`` (K, dim) are unit rows; ``rows`` (N,) are
    sorted user rows. Users are processed in blocks so the (block, K) softmax stays in
    cache: this is the hot loop of world generation.
    """
    k = creator_style.shape[0]
    style = creator_style.astype(np.float32).T
    log_pop = np.log(creator_pop).astype(np.float32)
    users, rows = np.unique(rows, return_inverse=True)  # only users that choose something
    n = users.size
    out = np.empty(rows.size, dtype=np.int64)
    bounds = np.searchsorted(rows, np.arange(0, n + block, block))
    for b, lo in enumerate(range(0, n, block)):
        q_lo, q_hi = bounds[b], bounds[b + 1]
        hi = min(lo + block, n)
        logits = beta * (taste[users[lo:hi]].astype(np.float32) @ style) + log_pop
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        cum = np.cumsum(logits, axis=1, dtype=np.float64)
        cum /= cum[:, -1:]
        cum += np.arange(hi - lo, dtype=np.float64)[:, None]
        r = rows[q_lo:q_hi] - lo
        idx = np.searchsorted(cum.ravel(), r + rng.random(r.size), side="right")
        out[q_lo:q_hi] = np.minimum(idx - r * k, k - 1)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


# ---------------------------------------------------------------------------- typing


def _kana_variant(word: str, code: int) -> str:
    if code == 1:
        return jaconv.hira2kata(word)
    if code == 2:
        return jaconv.kata2hira(word)
    if code == 3:
        return jaconv.z2h(jaconv.hira2kata(word), kana=True, ascii=False, digit=False)
    return word


def _typed(keyword: str, language: str, variant: int, tail: int) -> str:
    """The keyword as a person types it: variant 0 verbatim, 1-3 script/case/repeat."""
    word = keyword
    if language == "ja":
        word = _kana_variant(word, variant)
    elif language in ("en", "es"):
        if variant == 1:
            word = word.capitalize()
        elif variant == 2:
            word = word.upper()
        elif variant == 3 and len(word) >= 3 and word[-1].isalpha():
            word = word + word[-1] * 2
    elif language in ("th", "ko") and variant == 3 and word:
        word = word + word[-1] * 2
    elif language in ("zh-hant", "zh") and variant == 3:
        word = unicodedata.normalize("NFKC", word)
    tails = {
        "ja": ["", "！", "〜", "w"],
        "en": ["", "!!", " :)", "~"],
        "zh-hant": ["", "！", "～", "啦"],
        "th": ["", "!", "ๆ", " 555"],
        "ko": ["", "~", "ㅋㅋ", "!"],
        "zh": ["", "！", "～", "啊"],
        "es": ["", "!", "!!", " :)"],
    }
    return word + tails.get(language, [""])[tail]


# ---------------------------------------------------------------------------- world


@dataclass
class _Static:
    """Parts of the world shared by every chunk of users."""

    label_ids: np.ndarray  # (L,) labels usable on stickers
    label_pop: np.ndarray  # (L,) probabilities
    lang_emb: dict[str, np.ndarray]
    age_emb: np.ndarray  # (5, dim)
    gender_emb: np.ndarray  # (3, dim)
    creator_style: np.ndarray  # (K, dim) unit
    creator_pop: np.ndarray  # (K,)
    pkg_creator: np.ndarray  # (P,) sorted by creator
    pkg_style: np.ndarray  # (P, dim) unit
    pkg_quality: np.ndarray  # (P,)
    pkg_premium: np.ndarray  # (P,) bool
    pkg_released_day: np.ndarray  # (P,) day offset from epoch (may be negative)
    creator_offsets: np.ndarray  # (K+1,) packages of creator k: [off[k], off[k+1])
    sticker_offsets: np.ndarray  # (P+1,)
    creator_cdf: np.ndarray  # (P,) package choice within a creator, by quality
    sticker_cdf: np.ndarray  # (S,) sticker choice within a package, by label popularity
    sticker_labels: np.ndarray   # (S, 3) label ids, -1 = none
    keywords: dict[str, tuple[dict[int, list[str]], np.ndarray]]


def _build_static(
    cfg: WorldConfig, catalog: Catalog, rng: np.random.Generator, languages: list[str]
) -> tuple[_Static, dict[str, pl.DataFrame]]:
    dim = cfg.dim
    kw = catalog.keywords.filter(pl.col("language").is_in(languages))
    per_label = kw.group_by("label_id").agg(pl.col("language").n_unique().alias("n_lang"))
    typable = set(per_label.filter(pl.col("n_lang") == len(languages))["label_id"].to_list())
    labels = catalog.labels.filter(pl.col("label_id").is_in(sorted(typable)))
    if labels.height < 10:
        raise ConfigError(
            f"only {labels.height} labels have keywords in every language {languages}; "
            "need at least 10"
        )
    group_w = np.array([_GROUP_WEIGHT.get(g, 1.0) for g in labels["group"].to_list()])
    core = {name: i for i, name in enumerate(_CORE_LABELS)}
    core_bonus = np.array([20.0 - 0.1 * core[x] if x in core else 0.0
                           for x in labels["label"].to_list()])
    order = np.argsort(-(np.log(group_w) + core_bonus + rng.gumbel(size=labels.height)))
    ranks = np.empty(labels.height)
    ranks[order] = np.arange(1, labels.height + 1)
    label_pop = ranks**-cfg.label_zipf
    label_pop /= label_pop.sum()
    label_ids = labels["label_id"].to_numpy().astype(np.int32)

    lang_emb = {lang: rng.normal(0, 0.9, dim) for lang in sorted(_MARKETS)}
    age_emb = rng.normal(0, 0.6, (len(_AGES), dim))
    gender_emb = rng.normal(0, 0.4, (len(_GENDERS), dim))

    n_creators, n_packages = cfg.n_creators, cfg.n_packages
    if n_packages < n_creators:
        raise ConfigError(f"n_packages={n_packages} should be >= n_creators={n_creators}")
    lang_names = list(cfg.languages)
    shares = np.array([cfg.languages[x] for x in lang_names], dtype=float)
    origin = rng.choice(len(lang_names), size=n_creators, p=shares / shares.sum())
    creator_style = cfg.creator_home_bias * np.stack([lang_emb[lang_names[o]] for o in origin])
    creator_style += rng.normal(0, 1, (n_creators, dim))
    creator_pop = rng.lognormal(0, 1.0, n_creators)
    creator_pop /= creator_pop.sum()
    # every creator has at least one package; the rest follow popularity^0.5
    extra = rng.choice(
        n_creators,
        size=n_packages - n_creators,
        p=np.sqrt(creator_pop) / np.sqrt(creator_pop).sum(),
    )
    pkg_creator = np.sort(np.concatenate([np.arange(n_creators), extra])).astype(np.int32)
    creator_offsets = np.searchsorted(pkg_creator, np.arange(n_creators + 1)).astype(np.int64)
    pkg_style = _unit(creator_style[pkg_creator] + rng.normal(0, 0.5, (n_packages, dim)))
    pkg_quality = rng.lognormal(0, cfg.quality_sigma, n_packages)
    # within a creator, package ids run from the best-selling to the least (a catalogue order)
    pkg_quality = pkg_quality[np.lexsort((-pkg_quality, pkg_creator))]
    pkg_premium = rng.random(n_packages) < 0.35
    pkg_released_day = rng.integers(-730, cfg.days - 30, n_packages)
    available = rng.random(n_packages) >= 0.03
    n_stickers = rng.integers(8, 41, n_packages)

    # stickers: 1-3 distinct labels each, drawn from label popularity
    n_total = int(n_stickers.sum())
    n_lab = rng.choice([1, 2, 3], size=n_total, p=[0.5, 0.35, 0.15])
    draws = rng.choice(len(label_ids), size=(n_total, 3), p=label_pop)
    valid = np.arange(3)[None, :] < n_lab[:, None]
    valid[:, 1] &= draws[:, 1] != draws[:, 0]
    valid[:, 2] &= (draws[:, 2] != draws[:, 0]) & (draws[:, 2] != draws[:, 1])
    sticker_label_mat = np.where(valid, label_ids[draws], -1).astype(np.int32)  # (S, 3)
    weight = (label_pop[draws] * valid).sum(axis=1)
    sticker_offsets = np.concatenate([[0], np.cumsum(n_stickers)]).astype(np.int64)

    creator_names = []
    for _ in range(n_creators):
        syl = rng.choice(len(_SYLLABLES), size=2)
        creator_names.append(
            (_SYLLABLES[syl[0]] + _SYLLABLES[syl[1]]).capitalize()
            + " "
            + _ANIMALS[int(rng.integers(len(_ANIMALS)))]
        )
    series = rng.integers(len(_SERIES), size=n_packages)
    packages = pl.DataFrame(
        {
            "package_id": np.arange(n_packages, dtype=np.int32),
            "creator_id": pkg_creator,
            "character": [
                creator_names[c] + _SERIES[s] for c, s in zip(pkg_creator, series, strict=True)
            ],
            "n_stickers": n_stickers.astype(np.int16),
            "premium": pkg_premium,
            "released_at": [_EPOCH + timedelta(days=int(d)) for d in pkg_released_day],
            "available": available,
        },
        schema=SCHEMAS["packages"],
    )
    # list column built from the flat (sticker, label) pairs: fast at millions of rows
    rows, cols = np.nonzero(valid)
    sticker_ids = np.arange(n_total, dtype=np.int32)
    label_lists = (
        pl.DataFrame({"sticker_id": sticker_ids[rows], "label": sticker_label_mat[rows, cols]})
        .group_by("sticker_id", maintain_order=True).agg(pl.col("label").alias("label_ids"))
    )
    stickers = pl.DataFrame(
        {
            "sticker_id": sticker_ids,
            "package_id": np.repeat(np.arange(n_packages, dtype=np.int32), n_stickers),
            "position": (np.arange(n_total) - np.repeat(np.cumsum(n_stickers) - n_stickers,
                                                        n_stickers)).astype(np.int16),
        }
    ).join(label_lists, on="sticker_id", how="left", maintain_order="left")
    stickers = validate_frame(stickers.cast(SCHEMAS["stickers"]), "stickers", "generator")
    keywords: dict[str, tuple[dict[int, list[str]], np.ndarray]] = {}
    for lang in languages:
        table: dict[int, list[str]] = {}
        for label_id, words in (
            kw.filter(pl.col("language") == lang)
            .group_by("label_id")
            .agg(pl.col("keyword"))
            .iter_rows()
        ):
            table[int(label_id)] = words
        keywords[lang] = (table, np.array([], dtype=np.int32))
    static = _Static(
        label_ids=label_ids,
        label_pop=label_pop,
        lang_emb=lang_emb,
        age_emb=age_emb,
        gender_emb=gender_emb,
        creator_style=_unit(creator_style),
        creator_pop=creator_pop,
        pkg_creator=pkg_creator,
        pkg_style=pkg_style.astype(np.float32),
        pkg_quality=pkg_quality,
        pkg_premium=pkg_premium,
        pkg_released_day=pkg_released_day,
        creator_offsets=creator_offsets,
        sticker_offsets=sticker_offsets,
        creator_cdf=_group_cdf(creator_offsets, pkg_quality),
        sticker_cdf=_group_cdf(sticker_offsets, weight),
        sticker_labels=sticker_label_mat,
        keywords=keywords,
    )
    truth = {
        "creators": pl.DataFrame(
            {
                "creator_id": np.arange(n_creators, dtype=np.int32),
                "origin_language": [lang_names[o] for o in origin],
                "popularity": creator_pop,
                "style": static.creator_style.astype(np.float32),
            }
        ),
        "packages": pl.DataFrame(
            {
                "package_id": np.arange(n_packages, dtype=np.int32),
                "quality": pkg_quality,
                "style": pkg_style.astype(np.float32),
            }
        ),
        "labels": pl.DataFrame({"label_id": label_ids, "popularity": label_pop}),
    }
    return static, {
        "packages": packages,
        "stickers": stickers,
        **{f"truth_{k}": v for k, v in truth.items()},
    }


def _chunk(
    cfg: WorldConfig,
    st: _Static,
    first_user: int,
    n: int,
    rng: np.random.Generator,
    session_offset: int,
) -> dict[str, pl.DataFrame]:
    """Generate users [first_user, first_user + n) with their server and device logs."""
    dim = cfg.dim
    lang_names = list(cfg.languages)
    shares = np.array([cfg.languages[x] for x in lang_names], dtype=float)
    lang_idx = rng.choice(len(lang_names), size=n, p=shares / shares.sum())
    langs = np.array(lang_names, dtype=object)[lang_idx]
    region = np.empty(n, dtype=object)
    age = np.empty(n, dtype=np.int64)
    for i, lang in enumerate(lang_names):
        mask = lang_idx == i
        regions, p = _MARKETS[lang]
        region[mask] = np.array(regions, dtype=object)[rng.choice(len(regions), mask.sum(), p=p)]
        age[mask] = rng.choice(len(_AGES), mask.sum(), p=_AGE_MIX.get(lang, _DEFAULT_AGE_MIX))
    gender = rng.choice(3, size=n, p=[0.5, 0.48, 0.02])
    subscriber = rng.random(n) < cfg.subscriber_share
    lang_mat = np.stack([st.lang_emb[x] for x in lang_names])
    taste = lang_mat[lang_idx] + st.age_emb[age] + st.gender_emb[gender]
    taste = _unit(cfg.demographic_prior * taste
                  + cfg.taste_individual * rng.normal(0, 1, (n, dim)))
    user_ids = np.arange(first_user, first_user + n, dtype=np.int32)

    # activity: log-normal with the configured mean
    mu = np.log(cfg.interactions_per_user) - cfg.activity_sigma**2 / 2
    cap = max(1, min(st.pkg_creator.size // 3, 3000))
    n_int = np.clip(np.rint(rng.lognormal(mu, cfg.activity_sigma, n)), 1, cap).astype(np.int64)

    taste32 = taste.astype(np.float32)

    def choose_packages(rows: np.ndarray) -> np.ndarray:
        """One package per entry of ``rows`` (sorted user rows of this chunk)."""
        creators = _sample_creators(cfg.taste_beta, taste, st.creator_style, st.creator_pop,
                                    rows, rng)
        proposals = np.stack(
            [_sample_in_groups(st.creator_offsets, st.creator_cdf, creators,
                               rng.random(rows.size)) for _ in range(3)], axis=1)
        fit = np.einsum("nd,nkd->nk", taste32[rows], st.pkg_style[proposals])
        best = np.argmax(cfg.taste_beta * fit + rng.gumbel(size=fit.shape), axis=1)
        return proposals[np.arange(rows.size), best]

    n_pkg = st.pkg_creator.size
    rows = np.repeat(np.arange(n), n_int)
    pkgs = choose_packages(rows)
    key = np.unique(rows.astype(np.int64) * n_pkg + pkgs)
    rows, pkgs = key // n_pkg, key % n_pkg
    # subscribers take premium packages through the subscription, which the log never records
    source = np.where(st.pkg_premium[pkgs],
                      np.where(subscriber[rows], _SUBSCRIPTION, _PURCHASE), _DOWNLOAD)
    acq_rows, acq_pkgs = [rows], [pkgs]
    acq_source, acq_mech = [source], [np.full(rows.size, _BY_CHOICE)]

    # ---- subscription library: premium packages a subscriber adds beyond their own picks
    sub_rows = np.repeat(np.nonzero(subscriber)[0], 3 * cfg.subscription_library)
    if sub_rows.size:
        picks = choose_packages(sub_rows)
        premium = st.pkg_premium[picks]  # about a third of choices: ~subscription_library kept
        acq_rows.append(sub_rows[premium])
        acq_pkgs.append(picks[premium])
        acq_source.append(np.full(int(premium.sum()), _SUBSCRIPTION))
        acq_mech.append(np.full(int(premium.sum()), _BY_SUBSCRIPTION_LIBRARY))

    # ---- favourite characters, chosen independently of taste: their packages are gifted
    n_fav = cfg.favourite_creators
    fav_creators = np.full((n, max(n_fav, 1)), -1, dtype=np.int64)
    if n_fav:
        w = np.sqrt(st.creator_pop)
        fav_creators = rng.choice(st.creator_pop.size, size=(n, n_fav), p=w / w.sum())
        for j in range(n_fav):
            lo, hi = (
                st.creator_offsets[fav_creators[:, j]],
                st.creator_offsets[fav_creators[:, j] + 1],
            )
            for k in range(3):  # up to three packages of each favourite character
                r = np.nonzero((hi - lo) > k)[0]
                acq_rows.append(r)
                acq_pkgs.append(lo[r] + k)
                acq_source.append(np.full(r.size, _GIFT))
                acq_mech.append(np.full(r.size, _BY_FAVOURITE_GIFT))

    # ---- the clock: every holding arrives at a time within the user's active period
    l_rows = np.concatenate(acq_rows)
    l_pkgs = np.concatenate(acq_pkgs).astype(np.int64)
    l_source = np.concatenate(acq_source).astype(np.int8)
    l_mech = np.concatenate(acq_mech).astype(np.int8)
    start_day = rng.uniform(0, cfg.days * 0.5, n)
    day = start_day[l_rows] + rng.random(l_rows.size) * (cfg.days - start_day[l_rows])
    day = np.maximum(day, st.pkg_released_day[l_pkgs] + rng.random(l_rows.size) * 3)
    day = np.minimum(day, cfg.days - 1e-3)
    epoch_ms = int(_EPOCH.timestamp() * 1000)
    l_ms = (day * 86_400_000).astype(np.int64)  # ms since the epoch of the world
    # a package is held once: the earliest acquisition counts (nobody buys what they were given)
    order = np.lexsort((l_ms, l_pkgs, l_rows))
    l_rows, l_pkgs, l_ms = l_rows[order], l_pkgs[order], l_ms[order]
    l_source, l_mech = l_source[order], l_mech[order]
    first = np.ones(l_rows.size, dtype=bool)
    first[1:] = (l_rows[1:] != l_rows[:-1]) | (l_pkgs[1:] != l_pkgs[:-1])
    # then by user and time: what a device holds at time t is a prefix of its rows
    order = np.flatnonzero(first)[np.lexsort((l_ms[first], l_rows[first]))]
    l_rows, l_pkgs, l_ms = l_rows[order], l_pkgs[order], l_ms[order]
    l_source, l_mech = l_source[order], l_mech[order]
    # any package of a favourite character counts, bought or gifted (-1: no favourite)
    fav_keys = fav_creators + np.arange(n)[:, None] * st.creator_pop.size
    l_fav = np.isin(st.pkg_creator[l_pkgs] + l_rows * st.creator_pop.size,
                    fav_keys[fav_creators >= 0])
    logged = l_source <= _DOWNLOAD
    interactions = (
        pl.DataFrame(
            {
                "user_id": user_ids[l_rows[logged]],
                "package_id": l_pkgs[logged].astype(np.int32),
                "event": np.array(_SOURCES)[l_source[logged]],
                "weight": np.ones(int(logged.sum()), dtype=np.float32),
                "ts": l_ms[logged] + epoch_ms,
            }
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        .sort(["user_id", "ts"], maintain_order=True)
    )

    # ---- device side: each session sends from what the device holds at its send time
    device = rng.random(n) < cfg.device_user_share
    l_weight = np.exp(
        cfg.device_taste_beta * np.einsum("nd,nd->n", taste32[l_rows], st.pkg_style[l_pkgs])
        + cfg.favourite_boost * l_fav
    )
    offsets = np.searchsorted(l_rows, np.arange(n + 1))
    first_ms = l_ms[offsets[:-1]]  # every user acquires at least one package
    activity = n_int / cfg.interactions_per_user
    n_sess = rng.poisson(cfg.sessions_per_user * np.sqrt(activity)) + 1
    n_sess[~device] = 0
    s_rows = np.repeat(np.arange(n), n_sess)
    end_ms = int(cfg.days * 86_400_000) - 1
    s_ms = first_ms[s_rows] + (rng.random(s_rows.size)
                               * (end_ms - first_ms[s_rows])).astype(np.int64)
    span = end_ms + 1
    held_end = np.searchsorted(l_rows * span + l_ms, s_rows * span + s_ms, side="right")
    held_start = offsets[s_rows]
    csum = np.cumsum(l_weight)
    base = np.where(held_start > 0, csum[np.maximum(held_start - 1, 0)], 0.0)
    target = base + rng.random(s_rows.size) * (csum[held_end - 1] - base)
    ci = np.clip(np.searchsorted(csum, target, side="right"), held_start, held_end - 1)
    s_pkgs = l_pkgs[ci]
    s_private = l_source[ci] > _DOWNLOAD
    sticker = _sample_in_groups(
        st.sticker_offsets, st.sticker_cdf, s_pkgs, rng.random(s_rows.size)
    )
    u_label, u_kw = rng.random(s_rows.size), rng.random(s_rows.size)
    variant = rng.choice(4, size=s_rows.size, p=[0.55, 0.2, 0.15, 0.1])
    tail = rng.choice(4, size=s_rows.size, p=[0.6, 0.2, 0.1, 0.1])
    opening = rng.random(s_rows.size)
    u_open = rng.random(s_rows.size)
    # intended label: one of the sent sticker's labels, by label popularity
    pop_by_id = np.zeros(int(st.label_ids.max()) + 2)
    pop_by_id[st.label_ids] = st.label_pop
    lab_mat = st.sticker_labels[sticker]  # (N, 3), -1 = none (maps to weight 0)
    lab_cum = np.cumsum(pop_by_id[lab_mat], axis=1)
    lab_pick = np.minimum((lab_cum < u_label[:, None] * lab_cum[:, -1:]).sum(axis=1), 2)
    intended = lab_mat[np.arange(lab_mat.shape[0]), lab_pick].astype(np.int32)
    texts: list[str] = []
    for i in range(s_rows.size):
        lang = langs[s_rows[i]]
        lab = int(intended[i])
        words = st.keywords[lang][0][lab]
        text = _typed(words[int(u_kw[i] * len(words))], lang, int(variant[i]), int(tail[i]))
        if opening[i] < 0.4:
            opens = _OPENINGS[lang]
            text = opens[int(u_open[i] * len(opens))] + text
        texts.append(text)
    sessions = (
        pl.DataFrame(
            {
                "user_id": user_ids[s_rows],
                "ts": s_ms + epoch_ms,
                "language": langs[s_rows].astype(str),
                "text": texts,
                "sticker_id": sticker.astype(np.int32),
                "package_id": s_pkgs.astype(np.int32),
                "intended_label_id": intended,
                "private_source": s_private,
                "source": np.array(_SOURCES)[l_source[ci]],
                "mechanism": np.array(_MECHANISMS)[l_mech[ci]],
                "favourite": l_fav[ci],
                "acquired_at": l_ms[ci] + epoch_ms,
            }
        )
        .with_columns(pl.col("ts", "acquired_at").cast(pl.Datetime("ms", "UTC")))
        .sort(["user_id", "ts"], maintain_order=True)
    )
    sessions = sessions.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + session_offset).alias("session_id")
    )
    users = pl.DataFrame(
        {
            "user_id": user_ids,
            "language": langs.astype(str),
            "region": region.astype(str),
            "age_bucket": np.array(_AGES)[age],
            "gender": np.array(_GENDERS)[gender],
            "subscriber": subscriber,
        },
        schema=SCHEMAS["users"],
    )
    library = (
        pl.DataFrame(
            {
                "user_id": user_ids[l_rows],
                "package_id": l_pkgs.astype(np.int32),
                "source": np.array(_SOURCES)[l_source],
                "ts": l_ms + epoch_ms,
                "mechanism": np.array(_MECHANISMS)[l_mech],
                "favourite": l_fav,
                "device": device[l_rows],
            }
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    )
    truth_users = pl.DataFrame(
        {
            "user_id": user_ids,
            "taste": taste.astype(np.float32),
            "favourite_creators": fav_creators.astype(np.int32),
            "device": device,
        }
    )
    return {
        "users": users,
        "interactions": validate_frame(interactions, "interactions", "generator"),
        "device_logs": validate_frame(sessions, "device_logs", "generator"),
        "device_library": validate_frame(library.filter(pl.col("device")), "device_library",
                                         "generator"),
        "truth_sessions": sessions.select("session_id", "intended_label_id", "private_source",
                                          "source", "mechanism", "favourite", "acquired_at"),
        "truth_library": library.filter(pl.col("device")).drop("device"),
        "truth_users": truth_users,
    }


class _PartWriter:
    """Appends frames to ``<root>/<table>/part-NNNNN.parquet``, batching small chunks."""

    def __init__(self, root: Path, table: str, rows_per_part: int) -> None:
        self.dir = root / table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows_per_part = rows_per_part
        self.buffer: list[pl.DataFrame] = []
        self.buffered = 0
        self.n_parts = 0
        self.n_rows = 0

    def add(self, df: pl.DataFrame) -> None:
        self.buffer.append(df)
        self.buffered += df.height
        if self.buffered >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        if not self.buffer and self.n_parts:
            return
        df = pl.concat(self.buffer) if self.buffer else None
        if df is None:
            return
        df.write_parquet(
            self.dir / f"part-{self.n_parts:05d}.parquet", compression="zstd", statistics=True
        )
        self.n_parts += 1
        self.n_rows += df.height
        self.buffer, self.buffered = [], 0


def generate_world(
    config: WorldConfig,
    catalog: Catalog,
    var: str | Path,
    *,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Generate the world described by ``config`` and publish it under ``var``.

    Parameters
    ----------
    config : WorldConfig
        Sizes and generative parameters.
    catalog : Catalog
        Labels and keywords (from :func:`data.ensure_catalog` / :func:`data.load_catalog`).
    var : str or Path
        Artifact root: the dataset goes to ``var/data/<name>/`` and the ground truth to
        ``var/truth/<name>/``, each published atomically with a manifest.
    show_progress : bool
        Show a progress bar over user chunks.

    Returns
    -------
    Path
        The dataset directory.
    """
    t0 = time.perf_counter()
    var = Path(var)
    languages = [x for x in config.languages if config.languages[x] > 0]
    missing = sorted(set(languages) - set(catalog.languages))
    if missing:
        raise ConfigError(
            f"the catalog has no keywords for language(s) {missing}; it has {catalog.languages}"
        )
    seq = np.random.SeedSequence(config.seed)
    static_seq, *chunk_seqs = seq.spawn(1 + -(-config.n_users // config.chunk_users))
    static, tables = _build_static(config, catalog, np.random.default_rng(static_seq), languages)
    timings: dict[str, float] = {"static_s": time.perf_counter() - t0}
    params = config.model_dump()
    fp = fingerprint(params, catalog.source.get("sha256", ""))
    params["split"] = config.time_split().to_parameters()
    counts: dict[str, int] = {}
    truth_frames: dict[str, list[pl.DataFrame]] = {"sessions": [], "users": [], "library": []}
    stats = dict.fromkeys(("private_sessions", "sessions", "holdings", "holdings_after_test",
                           "held_out_sends", "held_out_sends_acquired_after_test"), 0)
    test_start = pl.lit(int(config.time_split().test_start * 1000)).cast(pl.Datetime("ms", "UTC"))
    with publish_artifact(
        var / "data" / config.name,
        kind="dataset",
        parameters=params,
        input_fingerprint=fp,
        replace=True,
        update_latest=False,
    ) as writer:
        root = writer.path
        for table in ("labels", "keywords"):
            df = catalog.labels if table == "labels" else catalog.keywords
            if table == "keywords":
                df = df.filter(pl.col("language").is_in(languages))
            (root / table).mkdir()
            df.write_parquet(root / table / "part-00000.parquet")
        for table in ("packages", "stickers"):
            (root / table).mkdir()
            tables[table].write_parquet(root / table / "part-00000.parquet", compression="zstd")
        writers = {
            "users": _PartWriter(root, "users", 2_000_000),
            "interactions": _PartWriter(root, "interactions", config.interactions_part_rows),
            "device_logs": _PartWriter(root, "device_logs", 2_000_000),
            "device_library": _PartWriter(root, "device_library", 4_000_000),
        }
        session_offset = 0
        with progress(
            f"generating world {config.name!r}", total=config.n_users, show=show_progress
        ) as bar:
            for c, chunk_seq in enumerate(chunk_seqs):
                first = c * config.chunk_users
                n = min(config.chunk_users, config.n_users - first)
                out = _chunk(
                    config, static, first, n, np.random.default_rng(chunk_seq), session_offset
                )
                session_offset += out["device_logs"].height
                for table, w in writers.items():
                    w.add(out[table])
                for name, frames in truth_frames.items():
                    frames.append(out[f"truth_{name}"])
                stats["private_sessions"] += int(out["truth_sessions"]["private_source"].sum())
                stats["sessions"] += out["device_logs"].height
                held = out["truth_library"].select(
                    pl.len(), (pl.col("ts") >= test_start).sum().alias("after")).row(0)
                sends = pl.DataFrame({"ts": out["device_logs"]["ts"],
                                      "acq": out["truth_sessions"]["acquired_at"]}).select(
                    (pl.col("ts") >= test_start).sum().alias("held_out"),
                    ((pl.col("ts") >= test_start) & (pl.col("acq") >= test_start)).sum()
                    .alias("acquired_after"),
                ).row(0)
                for k, v in zip(("holdings", "holdings_after_test", "held_out_sends",
                                 "held_out_sends_acquired_after_test"), (*held, *sends),
                                strict=True):
                    stats[k] += int(v)
                bar.advance(n)
        for table, w in writers.items():
            w.flush()
            counts[table] = w.n_rows
        counts.update(
            labels=catalog.labels.height,
            keywords=int(catalog.keywords.filter(pl.col("language").is_in(languages)).height),
            packages=tables["packages"].height,
            stickers=tables["stickers"].height,
        )
        timings["total_s"] = time.perf_counter() - t0
        writer.metrics = {
            "rows": counts,
            "private_session_share": stats["private_sessions"] / max(stats["sessions"], 1),
            # the clock: holdings acquired from test_start on, and held-out sends of them
            "holdings_after_test_start_share":
                stats["holdings_after_test"] / max(stats["holdings"], 1),
            "held_out_sends_acquired_after_test_start_share":
                stats["held_out_sends_acquired_after_test"] / max(stats["held_out_sends"], 1),
            "timings": timings,
        }
        writer.extra["catalog"] = catalog.source
    with publish_artifact(
        var / "truth" / config.name,
        kind="truth",
        parameters=params,
        input_fingerprint=fp,
        replace=True,
        update_latest=False,
    ) as writer:
        for name in ("creators", "packages", "labels"):
            tables[f"truth_{name}"].write_parquet(writer.path / f"{name}.parquet")
        for name, frames in truth_frames.items():
            pl.concat(frames).write_parquet(writer.path / f"{name}.parquet")
    if log is not None:
        log(f"world {config.name!r} generated in {time.perf_counter() - t0:.1f} s")
    return var / "data" / config.name
