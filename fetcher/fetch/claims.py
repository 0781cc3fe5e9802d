"""File names claimed by the archives of one fetch: one archive a name, whoever asks first."""

from __future__ import annotations

import threading


class NameClaims:
    """Which archive (by its key) holds which file name in DIR; safe from several threads."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}  # file name -> archive key
        self._name: dict[str, str] = {}  # archive key -> file name
        self._lock = threading.Lock()

    def claim(self, name: str, key: str) -> str | None:
        """Give `name` to the archive `key`; return the key that holds it already, if another."""
        with self._lock:
            owner = self._owner.setdefault(name, key)
            if owner != key:
                return owner
            held = self._name.get(key)
            if held is not None and held != name:
                del self._owner[held]  # one name an archive: the one it asked for last
            self._name[key] = name
            return None

    def release(self, name: str) -> None:
        """Free a name (an archive that will not be fetched after all)."""
        with self._lock:
            key = self._owner.pop(name, None)
            if key is not None:
                self._name.pop(key, None)

    def holds(self, key: str) -> bool:
        """Whether the archive `key` holds a name."""
        with self._lock:
            return key in self._name
