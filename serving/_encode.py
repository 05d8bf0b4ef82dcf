"""The JSON of ``POST /v1/suggest`` responses, from pieces encoded once per model set.

A suggestion row repeats the same few hundred stickers with their labels, emoji and
character: :class:`SuggestEncoder` encodes each (sticker, package) the first time it is
ranked and the version/arm tail once, so a keystroke only formats its scores and joins
strings. The pieces are keyed by artifact content (sticker and package ids, versions,
arm), never by anything from the request's text, and live as long as the served
:class:`~serving.ModelSet` (a new version gets a new encoder).

The text is byte for byte what ``flask.jsonify`` writes for the same document when it is
compact (Flask's default outside debug mode): ``,``/``:`` separators, ASCII-only escapes,
keys in insertion order and a final newline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reranker import Suggester

__all__ = ["NonFiniteScoreError", "SuggestEncoder"]


class NonFiniteScoreError(ValueError):
    """A score is NaN or infinite: JSON cannot carry it."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


class SuggestEncoder:
    """Encodes suggest responses of one suggester, caching the per-sticker pieces.

    Parameters
    ----------
    suggester : reranker.Suggester or a test double
        Provides ``describe(sticker_id, package_id)`` with ``labels``, ``emojis`` and
        ``character`` (called once per sticker).
    versions : mapping
        ``{"stage1": …, "reranker": …}``: the versions the suggester serves, reported in
        every response.
    """

    def __init__(self, suggester: Suggester, versions: Mapping[str, str]) -> None:
        self._suggester = suggester
        self._versions = _dumps(dict(versions))
        self._stickers: dict[tuple[int, int], str] = {}
        self._tails: dict[tuple[str, str], str] = {}

    def _sticker(self, sticker_id: int, package_id: int) -> str:
        """``{"sticker_id":…,"character":…,"score":`` of one ranked sticker."""
        key = (sticker_id, package_id)
        piece = self._stickers.get(key)
        if piece is None:
            s = self._suggester.describe(sticker_id, package_id)
            piece = _dumps({"sticker_id": int(sticker_id), "package_id": int(package_id),
                            "labels": list(s.labels), "emojis": list(s.emojis),
                            "character": s.character})[:-1] + ',"score":'
            self._stickers[key] = piece
        return piece

    def _tail(self, arm: str, experiment: str) -> str:
        key = (arm, experiment)
        tail = self._tails.get(key)
        if tail is None:
            tail = (f',"versions":{self._versions},"arm":{_dumps(arm)},'
                    f'"experiment":{_dumps(experiment)}}}\n')
            self._tails[key] = tail
        return tail

    def encode(self, sticker_ids: Sequence[int], package_ids: Sequence[int],
               scores: Sequence[float], *, cluster_id: int, arm: str,
               experiment: str) -> str:
        """The response document (with its final newline).

        ``{"stickers": [{"sticker_id", "package_id", "labels", "emojis", "character",
        "score"}, ...], "cluster_id", "versions", "arm", "experiment"}``.

        Parameters
        ----------
        sticker_ids, package_ids, scores : sequences of equal length
            The ranked row, best first (a ``reranker.Ranking``).
        cluster_id : int
            The cluster that was ranked.
        arm, experiment : str
            The A/B arm and experiment names.
        """
        pieces = self._stickers
        rows = []
        for s, p, x in zip(sticker_ids, package_ids, scores, strict=True):
            score = float(x)
            # json writes a finite float as its repr (score - score is 0.0 only when
            # finite); NaN and the infinities are not JSON
            if score - score != 0.0:
                raise NonFiniteScoreError(f"score {score} of sticker {s} is not finite")
            number = repr(score)
            rows.append(f"{pieces.get((s, p)) or self._sticker(s, p)}{number}}}")
        return (f'{{"stickers":[{",".join(rows)}],"cluster_id":{int(cluster_id)}'
                f"{self._tail(arm, experiment)}")
