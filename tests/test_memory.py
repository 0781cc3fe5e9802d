"""Cross-cutting: memory stays bounded: a big archive costs `fetcher fetch` no more than a tiny one.

Sizes, not times, so this holds on a slow CI machine as well as on a fast one. A download
engine that queued the body (or read it whole) would grow with the archive; ours streams it
through a fixed ring of buffers.

The peak is the child's own VmHWM, read as it exits. Its ru_maxrss would not do here: Linux
carries the parent's peak over into a child through fork and exec, and this parent (pytest,
holding the archive) is bigger than the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Atlas, fetch_args
from tests.support import make_archive, sha1

MiB = 1024 * 1024
BIG = 96 * MiB
# What a big archive may add over a tiny one: socket buffers, allocator slack, a block or two.
GROWTH_BOUND = 16 * MiB
# The goal for a whole `fetcher fetch` process (measured on 1 GiB by scripts/bench).
PEAK_BOUND = 80 * MiB

# Runs the CLI like the `fetcher` script does, and writes its peak RSS (kB) on the way out.
CHILD = """
import atexit, sys
from pathlib import Path

def record(out=Path(sys.argv[1])):
    status = Path("/proc/self/status").read_text()
    out.write_text(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:")))

atexit.register(record)
sys.argv = ["fetcher", *sys.argv[2:]]
from fetcher.cli import main
main()
"""


def peak_rss_of_fetch(atlas: Atlas, dest: Path, tmp_path: Path) -> int:
    """Run `fetcher fetch` in a process of its own; return its peak resident set in bytes."""
    log, peak = tmp_path / f"{dest.name}.log", tmp_path / f"{dest.name}.peak"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(peak), *fetch_args(atlas, dest)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, log.read_text()
    return int(peak.read_text()) * 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_does_not_grow_with_the_archive(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    # Real restore archives: the archive check inflates and walks them as they stream.
    tiny = make_archive("Cluster0-shard-0", 64 * 1024)
    big = make_archive("Cluster0-shard-1", BIG, level=1)
    atlas.add("Cluster0-shard-0.tar.gz", tiny)
    small_peak = peak_rss_of_fetch(atlas, tmp_path / "tiny", tmp_path)
    atlas.jobs.clear()
    atlas.add("Cluster0-shard-1.tar.gz", big)

    big_peak = peak_rss_of_fetch(atlas, tmp_path / "big", tmp_path)

    manifest = json.loads((tmp_path / "big" / "manifest.json").read_text())
    assert [f["sha1"] for j in manifest["jobs"] for f in j["files"]] == [sha1(big)]
    what = f"peak RSS {big_peak / MiB:.1f} MiB on {BIG // MiB} MiB"
    assert big_peak - small_peak < GROWTH_BOUND, (
        f"{what} against {small_peak / MiB:.1f} MiB on 64 KiB: it grows with the archive"
    )
    assert big_peak < PEAK_BOUND, what
