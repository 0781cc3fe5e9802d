"""fetcher.engine.part: the state kept beside a .part file, read back or refused."""

from __future__ import annotations

from typing import Any

import pytest

from fetcher.engine.part import STATE_VERSION, PartState

STATE: dict[str, Any] = {
    "version": STATE_VERSION,
    "jobId": "5c1b2c3d4e5f60718293a4b5",
    "source": "https://pull.example/backup/restore/v2/pull/x/a.tar.gz",
    "etag": '"e1"',
    "lastModified": None,
    "size": 10,
    "sha1": None,
    "requests": 2,
}


def test_a_state_round_trips() -> None:
    state = PartState.from_json(STATE)
    assert state is not None and state.to_json() == STATE and state.prefix is None


def test_a_several_connection_state_continues_from_its_whole_start() -> None:
    several = {**STATE, "version": 2, "done": [[0, 6], [8, 10]]}
    state = PartState.from_json(several)
    assert state is not None and state.prefix == 6
    gap_first = PartState.from_json({**several, "done": [[2, 6]]})
    assert gap_first is not None and gap_first.prefix == 0


@pytest.mark.parametrize(
    "change",
    [
        {"version": 9},
        {"jobId": 5},
        {"source": None},
        {"size": -1},
        {"requests": True},
        {"version": 2, "done": [["0", 6]]},
    ],
)
def test_a_state_fetcher_did_not_write_is_not_believed(change: dict[str, Any]) -> None:
    assert PartState.from_json({**STATE, **change}) is None
