"""The synthetic sticker world: a generative model of users, packages and their logs.

No real sticker logs can be had, so the world is generated, deterministically from a
seed, while its vocabulary is real (labels and keywords from Unicode CLDR, see
:mod:`data._catalog`). The generative model, top to bottom:

1. **Labels.** Every catalog label gets a popularity ``π_l ∝ rank^-α`` (Zipf,
   ``label_zipf``); ranks favour faces and gestures (the concepts people send stickers
   for) through a group weight plus Gumbel noise. Only labels with keywords in every
   language of the world are used on stickers, so every sticker can be typed for.
2. **Users.** Language from a market mix (``languages``: ja, zh-hant, th, en, ko …),
   region from language, age bucket and gender (estimated demographics) from
   per-market distributions, ``subscriber`` with probability ``subscriber_share``.
   A latent taste ``t_u = E_lang + E_age + E_gender + s·z_u`` in ``R^dim``: a
   demographic prior plus an individual deviation ``z_u ~ N(0, I)``.
   Activity (number of server interactions) is log-normal with shape
   ``activity_sigma``: a heavy tail of very active users.
3. **Creators and packages.** A creator (character) has a latent style
   ``c_k = 0.8·E_lang(origin) + N(0, I)``, so characters appeal most to their home
   market, and a log-normal popularity. Packages are spread over creators ∝
   popularity^0.5; a package's style is its creator's plus ``N(0, 0.5² I)``, with a
   log-normal quality. Each package holds 8–40 stickers, each with 1–3 labels drawn
   from ``π``; a premium flag; a release date; ~3 % are withdrawn (``available=false``).
4. **Server log.** For each interaction a user picks a creator with probability
   ``∝ pop_k · exp(β · cos(t_u, c_k))`` and then, among three packages of that creator
   drawn by quality, the one maximising ``cos(t_u, v_p) + Gumbel`` (taste × style +
   popularity). Free packages are *downloads*, premium ones *purchases*.
   Subscribers use premium packages through the subscription, which the consented
   server log does not record: those go to their private library instead.
5. **Device log (private).** A device user's collection is what they acquired, plus
   their subscription library, plus the packages of ``favourite_creators`` favourite
   characters chosen independently of taste (gifts, a character they love but never
   bought). Each session picks a package of the collection with weight
   ``exp(β_dev · cos(t_u, v_p) + favourite_boost · [favourite])``, a sticker of it by
   label popularity, an intended label among the sticker's labels, and a keyword of
   that label in the user's language, typed with realistic variants (katakana ↔
   hiragana, half-width kana, capitalisation, repeated characters, trailing
   punctuation) after an optional neutral opening ("今日は", "hey ", "วันนี้"). So the
   device holds a preference the server log never reveals: on-device learning has a
   signal stage 1 cannot see.
6. **Ground truth** (tastes, styles, favourites, each session's intended label and
   whether its package was server-visible) goes to ``var/truth/<name>/``, separate
   from the dataset: it is for oracle metrics only and no model code reads it.

Everything is generated in chunks of users with per-chunk random generators spawned
from one :class:`numpy.random.SeedSequence`, so peak memory is bounded by the chunk
size and the output does not depend on how chunks are scheduled.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jaconv
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from data._artifact import fingerprint, publish_artifact
from data._catalog import Catalog
from data._console import progress
from data._errors import ConfigError
from data._schemas import SCHEMAS, validate_frame
from data._split import DEFAULT_SALT, TimeSplit

__all__ = ["SIZES", "WorldConfig", "generate_world", "world_config"]

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


class WorldConfig(BaseModel):
    """Parameters of the synthetic world (see the module docstring for the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    subscriber_share: float = Field(0.12, ge=0, le=1, description="Share of subscribers.")
    favourite_creators: int = Field(
        2, ge=0, description="Favourite characters per device user, independent of taste."
    )
    favourite_boost: float = Field(
        1.5, ge=0, description="Log-weight bonus of favourite characters' packages on device."
    )
    taste_beta: float = Field(4.0, ge=0, description="Weight of taste x style in choices.")
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


def world_config(size: str, **overrides: Any) -> WorldConfig:
    """The config of a named size (``tiny``, ``small``, ``large``) with overrides."""
    if size not in SIZES:
        raise ConfigError(f"unknown world size {size!r}; expected one of {', '.join(SIZES)}")
    params: dict[str, Any] = {"name": size, **SIZES[size]}
    params.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return WorldConfig(**params)
    except ValueError as exc:
        raise ConfigError(f"invalid world config: {exc}") from exc


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
    creator_style = 0.8 * np.stack([lang_emb[lang_names[o]] for o in origin])
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
    taste = _unit(taste + 0.9 * rng.normal(0, 1, (n, dim)))
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

    rows = np.repeat(np.arange(n), n_int)
    pkgs = choose_packages(rows)
    key = np.unique(rows.astype(np.int64) * st.pkg_creator.size + pkgs)
    rows, pkgs = key // st.pkg_creator.size, key % st.pkg_creator.size
    premium = st.pkg_premium[pkgs]
    via_subscription = premium & subscriber[rows]
    start_day = rng.uniform(0, cfg.days * 0.5, n)
    day = start_day[rows] + rng.random(rows.size) * (cfg.days - start_day[rows])
    day = np.maximum(day, st.pkg_released_day[pkgs] + rng.random(rows.size) * 3)
    day = np.minimum(day, cfg.days - 1e-3)
    logged = ~via_subscription
    ts_ms = (_EPOCH.timestamp() * 1000 + day * 86_400_000).astype(np.int64)
    interactions = (
        pl.DataFrame(
            {
                "user_id": user_ids[rows[logged]],
                "package_id": pkgs[logged].astype(np.int32),
                "event": np.where(premium[logged], "purchase", "download"),
                "weight": np.ones(int(logged.sum()), dtype=np.float32),
                "ts": ts_ms[logged],
            }
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        .sort(["user_id", "ts"])
    )

    # ---- device side: collection = acquired + subscription library + favourites
    device = rng.random(n) < cfg.device_user_share
    coll_rows = [
        rows,
    ]
    coll_pkgs = [
        pkgs,
    ]
    coll_fav = [np.zeros(rows.size, dtype=bool)]
    coll_server = [logged]
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
                has = (hi - lo) > k
                r = np.nonzero(has)[0]
                coll_rows.append(r)
                coll_pkgs.append(lo[r] + k)
                coll_fav.append(np.ones(r.size, dtype=bool))
                coll_server.append(np.zeros(r.size, dtype=bool))
    sub_rows = np.repeat(np.nonzero(subscriber)[0], 6)
    if sub_rows.size:
        coll_rows.append(sub_rows)
        coll_pkgs.append(choose_packages(sub_rows))
        coll_fav.append(np.zeros(sub_rows.size, dtype=bool))
        coll_server.append(np.zeros(sub_rows.size, dtype=bool))
    c_rows = np.concatenate(coll_rows)
    c_pkgs = np.concatenate(coll_pkgs).astype(np.int64)
    c_fav = np.concatenate(coll_fav)
    c_server = np.concatenate(coll_server)
    order = np.lexsort((c_pkgs, c_rows))
    c_rows, c_pkgs, c_fav, c_server = c_rows[order], c_pkgs[order], c_fav[order], c_server[order]
    keep = np.ones(c_rows.size, dtype=bool)
    keep[1:] = (c_rows[1:] != c_rows[:-1]) | (c_pkgs[1:] != c_pkgs[:-1])
    c_rows, c_pkgs, c_fav, c_server = c_rows[keep], c_pkgs[keep], c_fav[keep], c_server[keep]
    c_fav |= np.isin(
        st.pkg_creator[c_pkgs] + c_rows * st.creator_pop.size,
        (fav_creators + np.arange(n)[:, None] * st.creator_pop.size).ravel(),
    )
    # mark server visibility for packages also acquired (first copy wins after sort)
    c_weight = np.exp(
        cfg.taste_beta * np.einsum("nd,nd->n", taste[c_rows], st.pkg_style[c_pkgs])
        + cfg.favourite_boost * c_fav
    )
    offsets = np.searchsorted(c_rows, np.arange(n + 1))

    activity = n_int / cfg.interactions_per_user
    n_sess = rng.poisson(cfg.sessions_per_user * np.sqrt(activity)) + 1
    n_sess[~device] = 0
    s_rows = np.repeat(np.arange(n), n_sess)
    ci = _sample_in_groups(offsets, _group_cdf(offsets, c_weight), s_rows,
                           rng.random(s_rows.size))
    s_pkgs = c_pkgs[ci]
    s_private = ~c_server[ci]
    sticker = _sample_in_groups(
        st.sticker_offsets, st.sticker_cdf, s_pkgs, rng.random(s_rows.size)
    )
    s_day = rng.uniform(cfg.days * 0.3, cfg.days, s_rows.size)
    s_day = np.maximum(s_day, st.pkg_released_day[s_pkgs] + 1)
    s_day = np.minimum(s_day, cfg.days - 1e-3)
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
    s_ts = (_EPOCH.timestamp() * 1000 + s_day * 86_400_000).astype(np.int64)
    sessions = (
        pl.DataFrame(
            {
                "user_id": user_ids[s_rows],
                "ts": s_ts,
                "language": langs[s_rows].astype(str),
                "text": texts,
                "sticker_id": sticker.astype(np.int32),
                "package_id": s_pkgs.astype(np.int32),
                "intended_label_id": intended,
                "private_source": s_private,
            }
        )
        .with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
        .sort(["user_id", "ts"])
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
        "truth_sessions": sessions.select("session_id", "intended_label_id", "private_source"),
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
    truth_frames: dict[str, list[pl.DataFrame]] = {"sessions": [], "users": []}
    stats = {"private_sessions": 0, "sessions": 0}
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
                truth_frames["sessions"].append(out["truth_sessions"])
                truth_frames["users"].append(out["truth_users"])
                stats["private_sessions"] += int(out["truth_sessions"]["private_source"].sum())
                stats["sessions"] += out["device_logs"].height
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
