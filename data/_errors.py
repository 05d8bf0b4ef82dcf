"""Exception classes shared by every sticker-suggest package."""

from __future__ import annotations


class StickerSuggestError(Exception):
    """Base class of every error this project raises on purpose."""


class SchemaError(StickerSuggestError, ValueError):
    """A table does not have the columns or types its schema requires.

    The message names the file, the column and the problem.
    """


class DataFileError(StickerSuggestError, ValueError):
    """A data file is missing, empty, unreadable or in the wrong format."""


class ArtifactError(StickerSuggestError):
    """An artifact directory is missing, partial, or fails its checksums."""


class InputError(StickerSuggestError, ValueError):
    """A request's input (language, cluster, embedding, limit …) is invalid.

    Raised by the component that validates it (the reranker's ``RerankerInputError`` and
    its subclasses); the HTTP layer only translates it: a problem whose type is
    :attr:`reason`, status 422 (404 for an unknown cluster). The message names the input,
    never typed text.
    """

    reason: str = "invalid_request"
    """A stable slug of what is wrong (``unknown_language``, ``unknown_cluster`` …)."""


class ConfigError(StickerSuggestError, ValueError):
    """A configuration value or file is invalid."""


class CatalogError(StickerSuggestError):
    """The label/keyword catalog cannot be fetched, verified or parsed."""
