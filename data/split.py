"""The pipeline's time split: its defaults and the pieces :func:`data.time_split` uses.

:func:`data.time_split` gives the one split time of a dataset (and its validation split);
this submodule is for tests and code that splits a log itself: the default quantiles and
validation share, the salted hash that puts a device in the validation split, and the
split computed from raw timestamps.
"""

from data._split import (
    DEFAULT_SALT,
    DEFAULT_TEST_QUANTILE,
    DEFAULT_VALIDATION_QUANTILE,
    DEFAULT_VALIDATION_SHARE,
    is_validation_device,
    split_from_timestamps,
)

__all__ = [
    "DEFAULT_SALT",
    "DEFAULT_TEST_QUANTILE",
    "DEFAULT_VALIDATION_QUANTILE",
    "DEFAULT_VALIDATION_SHARE",
    "is_validation_device",
    "split_from_timestamps",
]
