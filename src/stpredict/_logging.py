"""The package logger (scanpy/squidpy style: library code logs, never prints)."""

from __future__ import annotations

import logging

logger = logging.getLogger("stpredict")
logger.addHandler(logging.NullHandler())
