"""How stpredict talks to its users: warnings for data problems, logging for progress.

Like scanpy, what a user must see is shown without configuring anything:

- **data problems** (non-integer counts, shared patients, background patches, ...) are Python warnings of
  category :class:`StPredictWarning` (a :class:`UserWarning`), attributed to the user's line of code, so
  notebooks and scripts show them and ``pytest.warns``/``warnings.filterwarnings`` handle them;
- **progress and information** go to the ``"stpredict"`` logger, printed to stderr from
  ``st.settings.verbosity = 2`` on (quiet by default).

``st.settings.verbosity = 0`` silences both. If the application configures logging itself (handlers on the
root logger, e.g. ``logging.basicConfig``), the package's records go there instead of being printed twice.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

logger = logging.getLogger("stpredict")

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


class StPredictWarning(UserWarning):
    """A problem with the data or the call that the user should know about (the result is still computed).

    Silence them with ``warnings.filterwarnings("ignore", category=st.StPredictWarning)`` or
    ``st.settings.verbosity = 0``.
    """


class _UnlessApplicationLogs(logging.Filter):
    """Print only when the application has not configured logging (no root handler): never twice."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API name
        return not logging.getLogger().handlers


def _console_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.addFilter(_UnlessApplicationLogs())
    return handler


logger.addHandler(_console_handler())


class Settings:
    """Package-wide settings, as ``st.settings`` (scanpy's ``sc.settings`` style).

    Attributes
    ----------
    verbosity
        0 — errors only (warnings silenced), 1 — warnings (default), 2 — also progress information,
        3 — also debugging detail.
    feature_cache_dir
        A folder for the on-disk image-feature cache used by ``st.pp.image_features``, ``fit``, ``predict``
        and ``cross_validate`` whenever they compute features (``None``, the default: no cache). Features are
        kept per slide and recipe and never served for another recipe or another slide.

    Examples
    --------
    >>> import stpredict as st
    >>> st.settings.verbosity
    1
    >>> st.settings.verbosity = 2  # show progress messages
    >>> st.settings.verbosity = 1
    """

    def __init__(self) -> None:
        self._verbosity = 1
        logger.setLevel(_LEVELS[1])
        self.feature_cache_dir: str | None = None

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value not in _LEVELS:
            msg = f"st.settings.verbosity must be one of {sorted(_LEVELS)} (0 errors … 3 debug), got {value!r}."
            raise ValueError(msg)
        self._verbosity = value
        logger.setLevel(_LEVELS[value])

    def __repr__(self) -> str:
        return f"stpredict settings: verbosity={self._verbosity}, feature_cache_dir={self.feature_cache_dir!r}"


settings = Settings()


def _user_stacklevel() -> int:
    """Stack level of the first frame outside the package, so a warning points at the user's code."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning] = StPredictWarning) -> None:
    """Warn the user about a data problem (shown unless ``st.settings.verbosity == 0``)."""
    if settings.verbosity < 1:
        return
    warnings.warn(message, category, stacklevel=_user_stacklevel())
