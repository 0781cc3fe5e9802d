"""fetcher.fetch.target: which archives --only gives this host."""

from __future__ import annotations

import pytest

from fetcher.fetch import Target


@pytest.mark.parametrize(
    ("only", "name", "replica_set", "selected"),
    [
        ((), None, None, True),  # no --only: everything, even before a name is known
        (("*-shard-0-*",), "Cluster0-shard-0-2023.tar.gz", None, True),
        (("*-shard-0-*",), "Cluster0-shard-1-2023.tar.gz", None, False),
        (("*-shard-0-*",), None, None, None),  # no name yet: it may still be this host's
        (("Cluster1-shard-1",), "x.tar.gz", "Cluster1-shard-1", True),  # by the API's set
        (("Cluster1-shard-1",), None, "Cluster1-shard-2", None),
        (("*-shard-0-*", "*-config-*"), "Cluster0-config-2023.tar.gz", None, True),
        (("*-SHARD-0-*",), "Cluster0-shard-0-2023.tar.gz", None, False),  # case counts
    ],
)
def test_selects(
    only: tuple[str, ...], name: str | None, replica_set: str | None, selected: bool | None
) -> None:
    target = Target(group="g", cluster="c", batch_id="b", only=only)
    assert target.selects(name, replica_set) is selected
