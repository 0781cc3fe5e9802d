"""fetcher.service.dialects: the API root chooses the dialect, once, and nothing else does."""

from __future__ import annotations

import pytest

from fetcher.service import atlas_v2, legacy
from fetcher.service.dialects import dialect_for


@pytest.mark.parametrize(
    ("root", "v2"),
    [
        ("https://cloud.mongodb.com/api/atlas/v2", True),
        ("https://cloud.mongodb.com/api/atlas/v2/", True),
        ("https://cloud.mongodb.com/api/atlas/v1.0", False),
        ("https://cloud.mongodb.com/api/public/v1.0", False),
        ("https://opsmanager.example:8443/api/public/v1.0", False),
        ("https://proxy.example/api/atlas/v2/x", False),  # only the root's own path counts
    ],
)
def test_the_root_speaks_one_dialect(root: str, v2: bool) -> None:
    dialect = dialect_for(root)
    assert dialect is (atlas_v2.ATLAS_V2 if v2 else legacy.LEGACY)


def test_what_each_dialect_says_of_itself() -> None:
    old, new = legacy.LEGACY, atlas_v2.ATLAS_V2
    assert (old.jobs_path, old.accept, old.no_batches, old.job_is_restore) == (
        "restoreJobs",
        "application/json",
        None,
        False,
    )
    assert (new.jobs_path, new.accept) == ("backup/restoreJobs", atlas_v2.ACCEPT)
    assert new.no_batches is not None and "--job" in new.no_batches and new.job_is_restore
