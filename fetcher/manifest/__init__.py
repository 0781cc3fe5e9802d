"""The per-batch manifest.json: each job, each of its archives, and what they came to.

records.py holds a job and its archives; document.py the manifest, its restore set and how
two manifests merge; codec.py reads documents (version 1 brought up to 2); store.py writes
and loads them, with the journal that keeps a killed run's archives.
"""

from fetcher.manifest.codec import parse
from fetcher.manifest.document import MANIFEST_VERSION, Manifest, combine, merge
from fetcher.manifest.records import (
    OUTCOMES,
    Failure,
    FileRecord,
    JobRecord,
    Outcome,
    Unpack,
    exit_code,
)
from fetcher.manifest.store import JOURNAL_NAME, JOURNAL_VERSION, Journal, load, recover, write

__all__ = [
    "JOURNAL_NAME",
    "JOURNAL_VERSION",
    "MANIFEST_VERSION",
    "OUTCOMES",
    "Failure",
    "FileRecord",
    "JobRecord",
    "Journal",
    "Manifest",
    "Outcome",
    "Unpack",
    "combine",
    "exit_code",
    "load",
    "merge",
    "parse",
    "recover",
    "write",
]
