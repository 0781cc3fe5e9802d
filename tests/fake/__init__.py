"""The one fake MongoDB backup service: what every fake in this repository serves.

Standard library only, so that scripts/fake_atlas.py (the demo's and the benchmark's server, run
from a fresh clone without the test tools) and the pytest fixtures share it:

- archive: restore archives (a real tar.gz, one top-level directory, restoreInfo.txt with
  MongoDB's documented keys) and restoreInfo.txt itself;
- jobs: a legacy restore job and an Atlas v2 restore job at each moment of its life, in the
  shapes of MongoDB's OpenAPI definition (checked by tests/fake/test_shapes.py);
- pull: serving an archive: Range, If-Range, 206 and 416, pre-signed links, and PullServer, the
  tests' threaded pull host that misbehaves on purpose;
- auth: HTTP Digest as the API speaks it;
- schema: the small OpenAPI checker the shape tests use;
- service: the standalone server (API, OAuth token endpoint, pull host and download host).

Clocks are parameters (`now`, `clock`), never patched: a test moves a fake's time by giving it
another clock.
"""
