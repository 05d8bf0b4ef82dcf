"""The HTTP layer's building blocks: request parsing, response encoding, documents.

:func:`serving.create_app` assembles the app; this submodule is for tests and tools that
check the HTTP layer's pieces on their own: request bodies and their parsing, the
suggestion encoder, the OpenAPI and privacy documents (and :func:`documents`, with which
a blueprint's module declares its routes' OpenAPI fragment), the metrics, the per-process
state, and gunicorn run as a child process (tests and the serving benchmark).
"""

from serving._encode import NonFiniteScoreError, SuggestEncoder
from serving._gunicorn import GunicornServer, PortInUseError, enable_multiprocess_metrics
from serving._metrics import ServingMetrics
from serving._openapi import DocumentContext, Fragment, documents, openapi_document
from serving._privacy import privacy_statement
from serving._requests import SuggestFields, SuggestRequest, parse_body, parse_suggest
from serving._state import ServingState, freeze_heap

__all__ = [
    "DocumentContext",
    "Fragment",
    "GunicornServer",
    "NonFiniteScoreError",
    "PortInUseError",
    "ServingMetrics",
    "ServingState",
    "SuggestEncoder",
    "SuggestFields",
    "SuggestRequest",
    "documents",
    "enable_multiprocess_metrics",
    "freeze_heap",
    "openapi_document",
    "parse_body",
    "parse_suggest",
    "privacy_statement",
]
