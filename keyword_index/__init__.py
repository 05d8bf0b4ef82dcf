"""Incremental multilingual matching of typed text to semantic labels.

Every keystroke, the text typed so far is normalised and matched against the keywords
of every label in the person's language (:class:`KeywordIndex`); the match becomes
keyword features of candidate packages for the reranker (:class:`CandidateFeaturizer`).
Nothing here does I/O on the per-keystroke path.
"""

from keyword_index._config import KeywordIndexConfig
from keyword_index._errors import KeywordIndexError, KeywordIndexFormatError
from keyword_index._features import FEATURE_NAMES, CandidateFeaturizer, label_embeddings
from keyword_index._index import KeywordIndex, Match, MatchKind, MultilingualIndex
from keyword_index._normalize import Normalizer, normalize

__all__ = [
    "FEATURE_NAMES",
    "CandidateFeaturizer",
    "KeywordIndex",
    "KeywordIndexConfig",
    "KeywordIndexError",
    "KeywordIndexFormatError",
    "Match",
    "MatchKind",
    "MultilingualIndex",
    "Normalizer",
    "label_embeddings",
    "normalize",
]
