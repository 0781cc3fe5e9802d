"""Fetch a batch: decide per archive, download what is ready, verify, and record the outcome.

run.py orchestrates (list, dispatch, download, record); target.py says what is fetched and
who hears of it; outcome.py is the pure per-archive decision; ondisk.py re-checks what an
earlier run left; claims.py gives each archive its file name; poll.py is --wait's loop.
"""

from fetcher.fetch.poll import WaitPolicy, WaitStatus
from fetcher.fetch.run import Fetcher
from fetcher.fetch.target import Item, Reporter, Target

__all__ = ["Fetcher", "Item", "Reporter", "Target", "WaitPolicy", "WaitStatus"]
