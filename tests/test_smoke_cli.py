from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Atlas, fetch_args, run_cli


def test_fetch_batch_end_to_end(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    for i in range(3):
        atlas.add(f"Cluster0-shard-{i}.tar.gz")
    atlas.add("Cluster0-config.tar.gz")
    atlas.page_size = 2
    dest = tmp_path / "out"
    result = run_cli(*fetch_args(atlas, dest))
    print(result.stdout, result.stderr)
    assert result.exit_code == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(
        [*atlas.archives, "manifest.json"]
    )
