"""Download and verify MongoDB restore archives."""

from __future__ import annotations

__version__ = "0.1.0"
