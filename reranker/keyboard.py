"""The keyboard app on the device client (``RowTask.device_app``): its store, its
settings, and the tables it builds from a downloaded bundle and the phone's own packages."""

from reranker import _keyboard, _keyboard_tables
from reranker._keyboard import *  # noqa: F403
from reranker._keyboard_tables import *  # noqa: F403

__all__: list[str] = []
__all__ += _keyboard.__all__
__all__ += _keyboard_tables.__all__
