#!/usr/bin/env python3
"""Benchmark `fetcher` on loopback, HTTP and HTTPS, against curl, openssl sha1, tar and aria2c.

Issues 5, 9, 11 and 12. Run it through scripts/bench, which installs the tools and reuses .venv.
Everything it makes lives under .bench/: payloads (restore-style tar.gz archives made by
scripts/fake_atlas.py) are made once and kept, and made again when fake_atlas writes another
layout; work files are removed at the end. Servers: nginx on five loopback ports (one plain,
three with `limit_rate` per connection, one HTTPS with a self-signed certificate made once under
.bench/run/tls/) serving the payloads, and scripts/fake_atlas.py instances whose delivery URLs
point at nginx (their API itself stays plain HTTP).

Each timed pair runs fetcher and its reference one after the other, alternating which goes
first, from a fresh directory and with nothing dirty left over (`os.sync()` before each run).
A pair-wise figure is the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import fake_atlas  # scripts/ is on sys.path: this file runs as a script from there

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
PAYLOAD = BENCH / "payload"
RUN = BENCH / "run"
WORK = BENCH / "work"
MIB = 1024 * 1024
GIB = 1024 * MIB
FETCHER = Path(sys.executable).parent / "fetcher"
STEPS = (
    "fetch", "rate100", "tls", "unpack", "verify", "deep", "resume", "batch", "multi", "scale"
)  # fmt: skip
SCALE_JOBS = (200, 1000)  # the two batch sizes of the per-job cost comparison
SCALE_ARCHIVE = 16 * 1024
FAST_RATE_MIB = 100  # the rate100 step: one archive from a link limited to this per connection
MULTI_RATE_MIB = 16  # the multi step (issue 11): one archive over several capped connections
MULTI_CONNECTIONS = 8  # fetcher --connections and aria2c -x/-s in the multi step
TLS_CONNECTIONS = 4  # the tls step's several-connection row: fetcher's default for far links
RSS_GOAL = 64 * MIB
TLS = RUN / "tls"  # the HTTPS server's self-signed certificate (its own CA) and key
NGINX_CONF = """daemon off;
worker_processes 1;
pid {run}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    default_type application/gzip;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {run}/nginx-temp;
    log_format bench '$request_uri $status $body_bytes_sent';
    log_format bench_tls '$request_uri $status $body_bytes_sent $ssl_protocol $ssl_cipher';
    server {{
        listen 127.0.0.1:{port};
        root {root};
        access_log {run}/access.log bench;
    }}
    server {{
        listen 127.0.0.1:{limited_port};
        root {root};
        limit_rate {rate}m;
        access_log {run}/access-limited.log bench;
    }}
    server {{
        listen 127.0.0.1:{fast_port};
        root {root};
        limit_rate {fast_rate}m;
        access_log {run}/access-fast.log bench;
    }}
    server {{
        listen 127.0.0.1:{multi_port};
        root {root};
        limit_rate {multi_rate}m;
        access_log {run}/access-multi.log bench;
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        root {root};
        ssl_certificate {tls}/cert.pem;
        ssl_certificate_key {tls}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;  # nginx's default from 1.23.4 on; 1.22 stops at 1.2
        access_log {run}/access-tls.log bench_tls;
    }}
}}
"""


class BenchError(Exception):
    """The benchmark itself could not run."""


# -- running things ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished child: wall seconds, exit code, peak resident set (bytes), CPU seconds."""

    wall: float
    code: int
    maxrss: int
    cpu: float = 0.0  # user + system, its own and its waited-for children's


def spawn(
    argv: list[str], *, log: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child with its output appended to .bench/run/LOG.out."""
    with (RUN / f"{log}.out").open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def reap(proc: subprocess.Popen[bytes], started: float) -> Run:
    """Wait with wait4, which brings back the child's own peak RSS."""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, proc.returncode, usage.ru_maxrss * 1024, cpu)  # Linux counts KiB


def timed(argv: list[str], *, log: str, env: dict[str, str] | None = None) -> Run:
    """Run a child to completion, timed from before its start to after its exit."""
    started = time.perf_counter()
    return reap(spawn(argv, log=log, env=env), started)


def checked(run: Run, what: str) -> Run:
    """A failed run means a meaningless figure: stop there."""
    if run.code != 0:
        raise BenchError(f"{what} exited {run.code}; see {RUN}/*.out")
    return run


def nginx_cpu() -> float:
    """CPU seconds nginx's processes (the master and its workers) have used so far."""
    master = int((RUN / "nginx.pid").read_text())
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    ticks = 0
    for pid in (master, *map(int, children)):
        # The fields after the command's closing parenthesis; utime and stime are 14 and 15.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll until `ready()`; fail as soon as the process it waits on has died."""
    deadline = time.monotonic() + 600
    while not ready():
        if proc.poll() is not None:
            raise BenchError(f"{what} exited early; see {RUN}/*.out")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready after 600 s")
        time.sleep(0.05)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """True once something accepts connections on the loopback port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def fetcher_env() -> dict[str, str]:
    """The environment to run fetcher in: an installed fetcher has its bytecode cached."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # set in some sandboxes; it costs every start
    return env


def fresh(path: Path) -> Path:
    """An empty work directory (only ever under .bench/work), with nothing left to flush."""
    assert WORK in path.parents
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.sync()
    return path


# -- payloads and servers ------------------------------------------------------------------


@dataclass
class Archive:
    """One payload as a fake Atlas instance lists it."""

    job_id: str
    name: str
    sha1: str
    size: int
    url: str


@dataclass
class Atlas:
    """A running fake_atlas.py whose delivery URLs point at nginx."""

    api: str
    group: str
    cluster: str
    batch: str
    env: dict[str, str]
    archives: list[Archive] = field(default_factory=list)
    ca_cert: Path | None = None  # for pull links on the HTTPS port
    connections: int | None = None  # fetcher --connections; None: fetcher's default

    def fetch(
        self, dest: Path, *, one: bool = True, parallel: int = 4, connections: int | None = None
    ) -> list[str]:
        """`fetcher fetch` argv for the first archive's job, or for the whole batch."""
        target = ["--job", self.archives[0].job_id] if one else ["--batch", self.batch]
        connections = connections or self.connections
        return [
            *(str(FETCHER), "fetch", "--base-url", self.api, "--group", self.group),
            *("--cluster", self.cluster, *target, "--dest", str(dest), "--quiet"),
            *("--parallel", str(parallel)),
            *(("--connections", str(connections)) if connections else ()),
            *(("--ca-cert", str(self.ca_cert)) if self.ca_cert else ()),
        ]


def make_payload(directory: Path, cluster: str, size: int) -> None:
    """Generate (once) the archive that fake_atlas serves as shard 0 of `cluster`.

    fake_atlas then reuses it whatever --size it is given; it makes an archive again only when
    the one on disk is not of the layout (or restoreInfo.txt) it writes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fake_atlas.member_archive(
        directory,
        group=fake_atlas.DEFAULT_GROUP,  # as start_atlas runs fake_atlas: its Cluster Id matches
        cluster=cluster,
        member="shard-0",
        epoch=fake_atlas.SNAPSHOT_EPOCH,
        size=size,
    )


def make_certificate() -> None:
    """Make (once) the HTTPS server's self-signed certificate for 127.0.0.1, its own CA.

    Both `fetcher --ca-cert` and `curl --cacert` take it as the trust anchor.
    """
    cert, key = TLS / "cert.pem", TLS / "key.pem"
    if cert.exists() and key.exists():
        return
    TLS.mkdir(parents=True, exist_ok=True)
    argv = [
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"),
        *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        *("-keyout", str(key.with_suffix(".tmp")), "-out", str(cert.with_suffix(".tmp"))),
    ]
    checked(timed(argv, log="openssl-req"), "openssl req")
    key.with_suffix(".tmp").replace(key)
    cert.with_suffix(".tmp").replace(cert)


class Servers:
    """nginx and the fake Atlas instances; close() stops everything started here."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.port, self.limited_port, self.fast_port = free_port(), free_port(), free_port()
        self.multi_port, self.tls_port = free_port(), free_port()
        self.connections: int | None = None  # given to every Atlas started here

    def close(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after 10 s."""
        for _, proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for name, proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"bench: {name} ignored SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        self._procs.clear()

    def start_nginx(self, rate_mib: int, fast_rate_mib: int, multi_rate_mib: int) -> None:
        """Serve PAYLOAD plainly on one port, at `rate_mib`, `fast_rate_mib` and
        `multi_rate_mib` MiB/s per connection on three others, and over HTTPS (unlimited) on
        a fifth."""
        make_certificate()
        conf = RUN / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                run=RUN,
                root=PAYLOAD,
                port=self.port,
                limited_port=self.limited_port,
                rate=rate_mib,
                fast_port=self.fast_port,
                fast_rate=fast_rate_mib,
                multi_port=self.multi_port,
                multi_rate=multi_rate_mib,
                tls_port=self.tls_port,
                tls=TLS,
            )
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = spawn([nginx, "-e", str(RUN / "nginx-error.log"), "-c", str(conf)], log="nginx")
        self._procs.append(("nginx", proc))
        ports = (self.port, self.limited_port, self.fast_port, self.multi_port, self.tls_port)
        wait_for(lambda: all(listening(p) for p in ports), proc, "nginx")

    def start_atlas(
        self,
        archives: Path,
        *,
        cluster: str,
        shards: int,
        size: int,
        port: int,
        label: str | None = None,
        tls: bool = False,
    ) -> Atlas:
        """Start fake_atlas.py over `archives`, its delivery URLs on nginx at `port`.

        `label` (default: the directory's name) names its state directory and log, so that
        two instances can serve one directory through two ports. With `tls`, delivery URLs are
        https:// (the API stays plain HTTP) and fetcher is given the certificate as --ca-cert.
        """
        label = label or archives.name
        state = RUN / f"atlas-{label}"
        info_path = state / "server.json"
        info_path.unlink(missing_ok=True)
        pull_base = f"{'https' if tls else 'http'}://127.0.0.1:{port}/{archives.name}"
        argv = [
            *(sys.executable, str(ROOT / "scripts" / "fake_atlas.py"), "--state-dir", str(state)),
            *("--archives", str(archives), "--pull-base", pull_base, "--cluster", cluster),
            *("--shards", str(shards), "--size", str(size), "--page-size", "100"),
            "--no-expired-job",
        ]
        proc = spawn(argv, log=f"atlas-{label}")
        self._procs.append((f"fake_atlas {label}", proc))
        wait_for(info_path.exists, proc, f"fake_atlas {label}")
        info = json.loads(info_path.read_text())
        env = {k: v for k, v in fetcher_env().items() if not k.startswith(("MONGODB_", "MCLI_"))}
        env.pop("FETCHER_BASE_URL", None)
        env["MONGODB_ATLAS_PUBLIC_API_KEY"] = info["publicKey"]
        env["MONGODB_ATLAS_PRIVATE_API_KEY"] = info["privateKey"]
        env["NETRC"] = str(RUN / "no-netrc")
        jobs = sorted(info["jobs"], key=lambda j: "-shard-0-" not in j["fileName"])
        return Atlas(
            api=info["apiBase"],
            group=info["group"],
            cluster=info["cluster"],
            batch=info["batch"],
            env=env,
            archives=[
                Archive(
                    j["id"], j["fileName"], j["sha1"], j["size"], f"{pull_base}/{j['fileName']}"
                )
                for j in jobs
            ],
            ca_cert=TLS / "cert.pem" if tls else None,
            connections=self.connections,
        )


# -- measurements --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the result table."""

    name: str
    fetcher: str
    reference: str
    ratio: float | None
    goal: str
    ok: bool
    note: str = ""


def seconds(values: list[float]) -> str:
    """The median, in seconds."""
    return f"{statistics.median(values):.2f} s"


def size(n: int) -> str:
    """1 GiB, 160 MiB."""
    return f"{n / GIB:.0f} GiB" if n >= GIB and n % GIB < MIB else f"{n / MIB:.0f} MiB"


class Bench:
    """The measurements; each adds its rows to the table and its raw figures to the record."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}
        self.peaks: list[int] = []  # of fetcher on the single archive
        # CPU seconds of each run, by its log name: (the client's, nginx's meanwhile).
        self.cpu: dict[str, list[tuple[float, float]]] = {}

    def timed_cpu(self, argv: list[str], *, log: str, env: dict[str, str] | None = None) -> Run:
        """timed(), keeping the child's CPU time and nginx's over the same run."""
        before = nginx_cpu()
        run = timed(argv, log=log, env=env)
        self.cpu.setdefault(log, []).append((run.cpu, nginx_cpu() - before))
        return run

    def cpu_note(self, log: str) -> str:
        """'A + B s': the median CPU seconds of the client's runs under `log`, and nginx's."""
        runs = self.cpu.get(log, [])
        if not runs:
            return "-"
        mine, server = (statistics.median(r[i] for r in runs) for i in (0, 1))
        return f"{mine:.2f} + {server:.2f} s"

    def pairs(
        self, first: Callable[[], float], second: Callable[[], float], *, warmup: bool
    ) -> list[tuple[float, float]]:
        """Run the timed pairs, alternating which side goes first; a warm-up pair is dropped."""
        out = []
        for i in range(-1 if warmup else 0, self.runs):
            if i % 2 == 0:
                a, b = first(), second()
            else:
                b, a = second(), first()
            if i >= 0:
                out.append((a, b))
                print(f"bench:   {i + 1}/{self.runs}: {a:.2f} s vs {b:.2f} s ({a / b:.3f})")
        return out

    def compare(
        self, name: str, result: list[tuple[float, float]], goal: float, *, strict: bool = False
    ) -> None:
        """Add a row for fetcher against a reference, judged on the median per-pair ratio."""
        ratio = statistics.median(a / b for a, b in result)
        ok = ratio < goal if strict else ratio <= goal
        fetcher, reference = seconds([a for a, _ in result]), seconds([b for _, b in result])
        self.rows.append(
            Row(name, fetcher, reference, ratio, f"{'<' if strict else '<='} {goal:.2f}", ok)
        )

    def fetch_one(
        self, atlas: Atlas, log: str, connections: int | None = None
    ) -> Callable[[], float]:
        """A timed `fetcher fetch` of the first archive into a fresh directory; its peak RSS
        is kept for the RSS row, its CPU time (and nginx's) under `log`."""
        archive = atlas.archives[0]

        def fetch() -> float:
            dest = fresh(WORK / log)
            argv = atlas.fetch(dest, connections=connections)
            run = self.fetched(self.timed_cpu(argv, log=log, env=atlas.env), dest, [archive])
            self.peaks.append(run.maxrss)
            return run.wall

        return fetch

    def curl(
        self, archive: Archive, ca_cert: Path | None = None, *, sync: bool = True
    ) -> Callable[[], float]:
        """A timed `curl [--cacert CA] -o FILE URL && sync FILE` of the archive into a fresh
        directory (curl's CPU time kept under "curl" or "curl-tls"); without `sync`, the
        bare `curl -o FILE URL`, whose file may still be in the page cache only."""
        trust = ["--cacert", str(ca_cert)] if ca_cert else []
        log = ("curl-tls" if ca_cert else "curl") + ("" if sync else "-bare")

        def curl() -> float:
            out = fresh(WORK / "curl") / archive.name
            argv = ["curl", "-sSf", *trust, "-o", str(out), archive.url]
            got = checked(self.timed_cpu(argv, log=log), "curl")
            if not sync:
                return got.wall
            return got.wall + checked(timed(["sync", str(out)], log=log), "sync").wall

        return curl

    def fetch_vs_curl(self, atlas: Atlas) -> None:
        """Whole-process `fetcher fetch` vs `curl -o FILE URL && sync FILE`."""
        archive = atlas.archives[0]
        print(f"bench: fetch {size(archive.size)} vs curl + sync, {self.runs} pairs", flush=True)
        result = self.pairs(self.fetch_one(atlas, "fetcher"), self.curl(archive), warmup=True)
        self.raw["fetch_vs_curl"] = result
        self.compare(f"fetch {size(archive.size)} vs curl -o && sync", result, 0.85)  # issue 12
        print(f"bench: fetch {size(archive.size)} vs bare curl -o, {self.runs} pairs", flush=True)
        result = self.pairs(
            self.fetch_one(atlas, "fetcher"), self.curl(archive, sync=False), warmup=False
        )
        self.raw["fetch_vs_bare_curl"] = result
        self.compare(f"fetch {size(archive.size)} vs bare curl -o (no sync)", result, 0.95)
        self.rows[-1].note = "fetcher fsyncs the archive before it names it; bare curl does not"

    def fetch_at_rate(self, atlas: Atlas, rate_mib: int) -> None:
        """One archive from a link limited to `rate_mib` MiB/s, archive check included, against
        the ideal (size / rate); curl + sync from the same link runs in alternation."""
        archive = atlas.archives[0]
        ideal = archive.size / (rate_mib * MIB)
        what = f"fetch {size(archive.size)} @ {rate_mib} MiB/s per connection"
        print(f"bench: {what} (ideal {ideal:.2f} s) vs curl + sync, {self.runs} pairs", flush=True)
        result = self.pairs(self.fetch_one(atlas, "fetcher-rate"), self.curl(archive), warmup=False)
        self.raw["fetch_at_rate"] = {"pairs": result, "ideal": ideal, "rateMiB": rate_mib}
        fetched, curled = [a for a, _ in result], [b for _, b in result]
        curl_ratio = statistics.median(b / ideal for b in curled)
        self.against_ideal(
            f"{what}, archive check included,",
            fetched,
            ideal,
            1.15,
            f"ideal = size / rate; curl -o && sync from the same link, alternated:"
            f" {seconds(curled)} ({curl_ratio:.3f} x ideal)",
        )

    def against_ideal(
        self, what: str, fetched: list[float], ideal: float, goal: float, note: str
    ) -> None:
        """Add the row of fetcher's times against the ideal (size over the capped rate)."""
        ratio = statistics.median(a / ideal for a in fetched)
        self.rows.append(
            Row(
                f"{what} vs ideal",
                seconds(fetched),
                f"{ideal:.2f} s",
                ratio,
                f"<= {goal:.2f}",
                ratio <= goal,
                note,
            )
        )

    def tls(self, secure: Atlas, plain: Atlas) -> None:
        """The same archive over HTTPS: against fetcher itself over plain HTTP, against
        `curl --cacert CA -o FILE URL && sync FILE` over HTTPS, and over TLS_CONNECTIONS
        connections against one. Each row notes the CPU time of both sides."""
        archive = secure.archives[0]
        what = f"fetch {size(archive.size)} over HTTPS"
        print(f"bench: {what} vs over HTTP, {self.runs} pairs", flush=True)
        https = self.fetch_one(secure, "fetcher-tls")
        result = self.pairs(https, self.fetch_one(plain, "fetcher"), warmup=True)
        self.raw["tls_vs_http"] = result
        self.compare(f"{what} vs fetcher over HTTP", result, 1.10)
        first = len(self.rows) - 1
        print(f"bench: {what} vs curl --cacert + sync, {self.runs} pairs", flush=True)
        result = self.pairs(https, self.curl(archive, secure.ca_cert), warmup=True)
        self.raw["tls_vs_curl"] = result
        self.compare(f"{what} vs curl --cacert -o && sync", result, 1.00)
        n = TLS_CONNECTIONS
        print(f"bench: {what}, {n} connections vs one, {self.runs} pairs", flush=True)
        several = self.fetch_one(secure, "fetcher-tls-several", connections=n)
        result = self.pairs(several, https, warmup=True)
        self.raw["tls_several"] = {"connections": n, "pairs": result}
        self.compare(f"{what}, --connections {n}, vs one connection", result, 1.25)
        self.raw["cpu"] = self.cpu
        # CPU time, the medians of every run above: two cores run nginx's encryption too.
        cpu = self.cpu_note
        self.rows[first].note = (
            f"same file, same nginx; {negotiated()}; CPU a run, fetcher + nginx:"
            f" HTTPS {cpu('fetcher-tls')}, HTTP {cpu('fetcher')}"
        )
        self.rows[first + 1].note = (
            f"CPU a run, client + nginx: curl {cpu('curl-tls')}"
            " (curl neither hashes nor checks the archive)"
        )
        self.rows[first + 2].note = (
            "loopback, where one connection fills the link: the cost of the pieces;"
            f" CPU a run, fetcher + nginx: {cpu('fetcher-tls-several')}"
        )

    def rss(self, name: str, peaks: list[int] | None = None, *, key: str = "peak_rss") -> None:
        """The peak RSS row: the highest of every single-archive fetch measured so far (or
        of `peaks`)."""
        peaks = self.peaks if peaks is None else peaks
        self.raw[key] = peaks
        peak = max(peaks)
        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        note = f"max over {len(peaks)} runs, from wait4"
        if peak <= mine:  # Linux carries a parent's peak over into its children
            note += f"; no more than this script's own {mine / MIB:.0f} MiB, so an upper bound"
        self.rows.append(
            Row(
                f"peak RSS, {name}",
                f"{peak / MIB:.1f} MiB",
                "-",
                None,
                f"< {RSS_GOAL // MIB} MiB",
                peak < RSS_GOAL,
                note,
            )
        )

    def rss_flat(self, small: Atlas, big: Atlas) -> None:
        """Peak RSS of fetching the 4 GiB archive against the 1 GiB one."""
        print(f"bench: peak RSS on {size(big.archives[0].size)}", flush=True)
        peaks = {}
        for atlas in (small, big):
            runs = []
            for _ in range(2):
                dest = fresh(WORK / "rss")
                run = timed(atlas.fetch(dest), log="fetcher", env=atlas.env)
                runs.append(self.fetched(run, dest, atlas.archives[:1]).maxrss)
            peaks[atlas.archives[0].size] = max(runs)
        shutil.rmtree(WORK / "rss", ignore_errors=True)
        (one, p1), (four, p4) = sorted(peaks.items())
        self.raw["rss_flat"] = peaks
        self.rows.append(
            Row(
                f"peak RSS, fetch {size(four)} vs {size(one)}",
                f"{p4 / MIB:.1f} MiB",
                f"{p1 / MIB:.1f} MiB",
                p4 / p1,
                "<= 1.10",
                p4 / p1 <= 1.10,
            )
        )

    def fetch_unpack(
        self, atlas: Atlas, log: str, peaks: list[int], connections: int | None = None
    ) -> Callable[[], float]:
        """A timed `fetcher fetch --unpack-to ROOT` of the first archive (its peak RSS kept)."""
        archive = atlas.archives[0]

        def fetch() -> float:
            work = fresh(WORK / log)
            dest, root = work / "dl", work / "root"
            argv = [*atlas.fetch(dest, connections=connections), "--unpack-to", str(root)]
            run = self.fetched(self.timed_cpu(argv, log=log, env=atlas.env), dest, [archive])
            if not any(p.is_dir() for p in root.iterdir()):
                raise BenchError(f"fetch --unpack-to left no tree in {root}")
            peaks.append(run.maxrss)
            return run.wall

        return fetch

    def unpack(self, atlas: Atlas, fast: Atlas, rate_mib: int) -> None:
        """`fetch --unpack-to` (download, SHA1, check, unpack, fsync, in one pass) against
        `curl -s URL | tar -xzf - -C X && sync`, which verifies nothing, and against the
        careful way by hand, `curl -o F && sha1sum F && tar -xzf F -C X && sync`; then from
        a link of `rate_mib` MiB/s (one connection) against the ideal; and its peak RSS."""
        archive = atlas.archives[0]
        what = f"fetch --unpack-to {size(archive.size)}"
        peaks: list[int] = []

        def shell(script: str, log: str, *args: str) -> float:
            run = self.timed_cpu(["sh", "-ec", script, "sh", *args], log=log)
            return checked(run, log).wall

        def piped() -> float:
            out = fresh(WORK / "tar-pipe")
            script = 'curl -sSf "$1" | tar -xzf - -C "$2"; sync'
            return shell(script, "curl-tar", archive.url, str(out))

        def careful() -> float:
            work = fresh(WORK / "tar-careful")
            (work / "x").mkdir()
            script = 'curl -sSf -o "$1" "$2"; sha1sum "$1" >/dev/null; tar -xzf "$1" -C "$3"; sync'
            file, into = str(work / archive.name), str(work / "x")
            return shell(script, "curl-sha1-tar", file, archive.url, into)

        print(f"bench: {what} vs curl | tar -xzf && sync, {self.runs} pairs", flush=True)
        unpacking = self.fetch_unpack(atlas, "fetcher-unpack", peaks)
        result = self.pairs(unpacking, piped, warmup=True)
        self.raw["unpack_vs_curl_tar"] = result
        self.compare(f"{what} vs curl -s piped into tar -xzf && sync", result, 0.60)
        self.rows[-1].note = f"CPU {self.cpu_note('fetcher-unpack')} vs {self.cpu_note('curl-tar')}"
        print(f"bench: {what} vs curl -o && sha1sum && tar -xzf && sync", flush=True)
        result = self.pairs(unpacking, careful, warmup=False)
        self.raw["unpack_vs_careful"] = result
        self.compare(f"{what} vs curl -o && sha1sum && tar -xzf && sync", result, 0.40)
        ideal = archive.size / (rate_mib * MIB)
        print(f"bench: {what} @ {rate_mib} MiB/s (ideal {ideal:.2f} s), {self.runs} runs")
        timed_runs = self.fetch_unpack(fast, "fetcher-unpack-rate", peaks, connections=1)
        fetched = [timed_runs() for _ in range(self.runs)]
        self.raw["unpack_at_rate"] = {"runs": fetched, "ideal": ideal, "rateMiB": rate_mib}
        self.against_ideal(
            f"{what} @ {rate_mib} MiB/s, one connection,", fetched, ideal, 1.15,
            "ideal = size / rate: the unpack costs no wall time if it keeps up with the link",
        )  # fmt: skip
        self.rss(what, peaks, key="unpack_peak_rss")

    def fetched_dir(self, atlas: Atlas) -> Path:
        """A directory holding the first archive and its manifest, fetched once."""
        archive = atlas.archives[0]
        dest = WORK / "verify"
        if not (dest / archive.name).exists():
            self.fetched(
                timed(atlas.fetch(fresh(dest)), log="fetcher", env=atlas.env), dest, [archive]
            )
        return dest

    def verify_vs_openssl(self, atlas: Atlas) -> None:
        """`fetcher verify DIR` vs `openssl sha1 FILE`, on a fetched archive."""
        archive = atlas.archives[0]
        dest = self.fetched_dir(atlas)
        print(f"bench: verify {size(archive.size)} vs openssl sha1, {self.runs} pairs", flush=True)

        def verify() -> float:
            return checked(
                timed(
                    [str(FETCHER), "verify", str(dest), "--quiet"], log="verify", env=fetcher_env()
                ),
                "fetcher verify",
            ).wall

        def openssl() -> float:
            return checked(
                timed(["openssl", "sha1", str(dest / archive.name)], log="openssl"), "openssl"
            ).wall

        result = self.pairs(verify, openssl, warmup=True)
        self.raw["verify_vs_openssl"] = result
        self.compare(f"verify {size(archive.size)} vs openssl sha1", result, 1.00)

    def deep_vs_tar(self, atlas: Atlas) -> None:
        """`fetcher verify --deep DIR` (SHA1 and archive check) vs `tar -tzf FILE`."""
        archive = atlas.archives[0]
        dest = self.fetched_dir(atlas)
        print(
            f"bench: verify --deep {size(archive.size)} vs tar -tzf, {self.runs} pairs", flush=True
        )

        def deep() -> float:
            argv = [str(FETCHER), "verify", "--deep", str(dest), "--quiet"]
            run = timed(argv, log="verify-deep", env=fetcher_env())
            return checked(run, "fetcher verify --deep").wall

        def tar() -> float:
            return checked(timed(["tar", "-tzf", str(dest / archive.name)], log="tar"), "tar").wall

        result = self.pairs(deep, tar, warmup=True)
        self.raw["deep_vs_tar"] = result
        self.compare(f"verify --deep {size(archive.size)} vs tar -tzf", result, 1.10)
        self.rows[-1].note = "SHA1 and the archive check (inflate, tar headers) in one read"

    def resume(self, atlas: Atlas) -> None:
        """SIGKILL at ~50%, run again, and count the body bytes nginx sent for the archive."""
        archive = atlas.archives[0]
        print(f"bench: resume after SIGKILL at 50% of {size(archive.size)}", flush=True)
        log = RUN / "access.log"
        start = log.stat().st_size
        dest = fresh(WORK / "resume")
        part = dest / f".{archive.name}.part"
        started = time.perf_counter()
        proc = spawn(atlas.fetch(dest), log="fetcher-resume", env=atlas.env)
        kept = 0
        while proc.poll() is None:
            with contextlib.suppress(FileNotFoundError):
                kept = part.stat().st_size
                if kept >= archive.size // 2:
                    proc.kill()
                    break
            time.sleep(0.002)
        if (code := reap(proc, started).code) != -signal.SIGKILL:
            raise BenchError(f"fetcher was not killed mid-transfer (exit {code})")
        self.fetched(timed(atlas.fetch(dest), log="fetcher-resume", env=atlas.env), dest, [archive])
        time.sleep(0.2)  # nginx logs a request once it is over
        with log.open("rb") as fh:
            fh.seek(start)
            lines = [line.split() for line in fh.read().decode().splitlines()]
        sent = [int(f[2]) for f in lines if f[0].endswith(f"/{archive.name}")]
        ratio = sum(sent) / archive.size
        self.raw["resume"] = {"kept": kept, "sent": sent, "size": archive.size}
        note = f"killed with {kept / MIB:.0f} MiB on disk; {len(sent)} requests"
        self.rows.append(
            Row(
                "resume after SIGKILL at 50%: bytes served / size",
                f"{sum(sent) / MIB:.1f} MiB",
                f"{archive.size / MIB:.1f} MiB",
                ratio,
                "<= 1.05",
                ratio <= 1.05,
                note,
            )
        )

    def batch(self, atlas: Atlas, rate_mib: int) -> None:
        """4 archives from the rate-limited server: against the ideal, and against aria2c -j4."""
        n, biggest = len(atlas.archives), max(a.size for a in atlas.archives)
        ideal = biggest / (rate_mib * MIB)
        what = f"batch {n} x {size(biggest)} @ {rate_mib} MiB/s per connection"
        print(f"bench: {what} (ideal {ideal:.2f} s) vs aria2c -j{n}, {self.runs} pairs", flush=True)
        listing = RUN / "aria2-input.txt"
        listing.write_text(
            "".join(f"{a.url}\n  out={a.name}\n  checksum=sha-1={a.sha1}\n" for a in atlas.archives)
        )

        def fetch() -> float:
            dest = fresh(WORK / "batch-fetch")
            run = timed(
                atlas.fetch(dest, one=False, parallel=n), log="fetcher-batch", env=atlas.env
            )
            return self.fetched(run, dest, atlas.archives).wall

        def aria2() -> float:
            argv = [
                *("aria2c", f"-j{n}", "-x1", "-s1", "-i", str(listing)),
                *("-d", str(fresh(WORK / "batch-aria2")), "--quiet=true"),
                *("--allow-overwrite=true", "--auto-file-renaming=false"),
            ]
            return checked(timed(argv, log="aria2c"), "aria2c").wall

        result = self.pairs(fetch, aria2, warmup=False)
        self.raw["batch"] = {"pairs": result, "ideal": ideal}
        fetched = [a for a, _ in result]
        self.against_ideal(what, fetched, ideal, 1.15, "--parallel 4; ideal = one archive / rate")
        self.compare(f"batch {n} x {size(biggest)} vs aria2c -j{n} (same SHA1s)", result, 0.80)
        self.rows[-1].note = "aria2c checks each SHA1 after its download, one file at a time"

    def multi(self, atlas: Atlas, rate_mib: int, connections: int = MULTI_CONNECTIONS) -> None:
        """One archive over `connections` connections, each capped at `rate_mib` MiB/s (issue
        11): `fetcher fetch --connections N` against `aria2c -xN -sN -k1M --checksum=sha-1=…`
        and `sync FILE`, and against the ideal, size / (N x rate); one single-connection fetch
        afterwards shows what the connections bring."""
        archive = atlas.archives[0]
        ideal = archive.size / (connections * rate_mib * MIB)
        what = f"fetch {size(archive.size)} @ {rate_mib} MiB/s per connection, {connections} conn."
        print(
            f"bench: {what} (ideal {ideal:.2f} s) vs aria2c -x{connections} + sync,"
            f" {self.runs} pairs",
            flush=True,
        )

        def fetch(n: int) -> Callable[[], float]:
            def run() -> float:
                dest = fresh(WORK / "multi-fetch")
                argv = atlas.fetch(dest, connections=n)
                return self.fetched(
                    timed(argv, log="fetcher-multi", env=atlas.env), dest, [archive]
                ).wall

            return run

        synced: list[float] = []  # the sync part of each aria2c run

        def aria2() -> float:
            out = fresh(WORK / "multi-aria2")
            argv = [
                *("aria2c", f"-x{connections}", f"-s{connections}", "-k1M"),
                *(f"--checksum=sha-1={archive.sha1}", "-d", str(out), "-o", archive.name),
                *("--quiet=true", "--allow-overwrite=true", "--auto-file-renaming=false"),
                archive.url,
            ]
            got = checked(timed(argv, log="aria2c-multi"), "aria2c")
            if (have := (out / archive.name).stat().st_size) != archive.size:
                raise BenchError(f"aria2c: {have} bytes, expected {archive.size}")
            sync = checked(timed(["sync", str(out / archive.name)], log="aria2c-multi"), "sync")
            synced.append(sync.wall)
            return got.wall + sync.wall

        result = self.pairs(fetch(connections), aria2, warmup=True)
        print(f"bench: the same archive with --connections 1 (ideal {ideal * connections:.2f} s)")
        single = fetch(1)()
        print(f"bench:   {single:.2f} s")
        self.raw["multi"] = {
            "pairs": result,
            "ideal": ideal,
            "rateMiB": rate_mib,
            "connections": connections,
            "aria2Sync": synced[-len(result) :],
            "oneConnection": single,
        }
        fetched, aria = [a for a, _ in result], [b for _, b in result]
        self.compare(
            f"{what} vs aria2c -x{connections} -s{connections} -k1M --checksum + sync",
            result,
            0.90,
        )
        self.rows[-1].note = (
            f"aria2c's figure includes sync FILE (median {seconds(synced[-len(result) :])});"
            " aria2c checks the SHA1 after the download"
        )
        self.against_ideal(
            what,
            fetched,
            ideal,
            1.30,
            f"ideal = size / ({connections} x rate); aria2c + sync:"
            f" {statistics.median(b / ideal for b in aria):.3f} x ideal;"
            f" --connections 1: {single:.2f} s ({single / ideal:.2f} x ideal,"
            f" {single / statistics.median(fetched):.1f}x the {connections} connections)",
        )

    def scale(self, small: Atlas, large: Atlas) -> None:
        """Many small archives: the per-job cost must not grow with the size of the batch."""
        n, m = len(small.archives), len(large.archives)
        print(f"bench: batch of {m} vs {n} jobs of 16 KiB, --parallel 16", flush=True)

        def run(atlas: Atlas) -> Callable[[], float]:
            def fetch() -> float:
                dest = fresh(WORK / f"scale-{len(atlas.archives)}")
                argv = atlas.fetch(dest, one=False, parallel=16)
                return self.fetched(
                    timed(argv, log="fetcher-scale", env=atlas.env), dest, atlas.archives
                ).wall

            return fetch

        result = self.pairs(run(large), run(small), warmup=True)
        self.raw["scale"] = result
        self.compare(f"batch of {m} vs {n} jobs of 16 KiB, --parallel 16", result, m / n * 1.2)
        self.rows[-1].note = f"linear would be {m / n:.0f}x; every archive fsynced and recorded"

    @staticmethod
    def fetched(run: Run, dest: Path, archives: list[Archive]) -> Run:
        """Check that a fetch ended well and left every archive whole."""
        checked(run, "fetcher fetch")
        for archive in archives:
            got = (dest / archive.name).stat().st_size
            if got != archive.size:
                raise BenchError(f"{archive.name}: {got} bytes, expected {archive.size}")
        return run


# -- report --------------------------------------------------------------------------------


def negotiated() -> str:
    """The protocol and cipher of the last request nginx served over HTTPS (from its log)."""
    with contextlib.suppress(OSError, IndexError):
        fields = (RUN / "access-tls.log").read_text().splitlines()[-1].split()
        return f"{fields[3]} {fields[4]}"
    return "cipher unknown"


def machine() -> str:
    """One line on the machine the figures come from."""

    def first_line(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    cpu, mem, fs = "unknown CPU", 0, "?"
    with contextlib.suppress(OSError, StopIteration):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line for line in cpuinfo if line.startswith("model name")).split(":")[1].strip()
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):  # the mount that holds .bench/
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        mount = max((m for m in mounts if BENCH.is_relative_to(m[1])), key=lambda m: len(m[1]))
        fs = mount[2]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tools = [first_line([nginx, "-v"]), first_line(["curl", "--version"]).split(" (")[0]]
    tools += [
        first_line(["aria2c", "--version"]),
        " ".join(first_line(["openssl", "version"]).split()[:2]),
    ]
    return (
        f"{os.cpu_count()} x {cpu}, {mem / GIB:.0f} GiB RAM, Linux {platform.release()},"
        f" {fs} on the .bench disk, Python {platform.python_version()}; {'; '.join(tools)}"
    )


def table(rows: list[Row]) -> str:
    """The result table in Markdown, which reads well in a terminal too."""
    head = ("measurement", "fetcher", "reference", "ratio", "goal", "result")
    body = [
        (
            r.name,
            r.fetcher,
            r.reference,
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.goal,
            "PASS" if r.ok else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(cells[i]) for cells in [head, *body]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join([line(head), rule, *map(line, body), "", *notes])


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5, help="timed pairs per comparison (default 5)")
    p.add_argument("--full", action="store_true", help="also compare peak RSS on 4 GiB and 1 GiB")
    p.add_argument("--only", default=",".join(STEPS), help=f"a subset of {','.join(STEPS)}")
    p.add_argument("--size-mib", type=int, default=1024, help="the single archive (default 1024)")
    p.add_argument("--batch-mib", type=int, default=160, help="each batch archive (default 160)")
    p.add_argument("--rate-mib", type=int, default=16, help="limit_rate per connection (16)")
    p.add_argument(
        "--fast-rate-mib",
        type=int,
        default=FAST_RATE_MIB,
        help=f"limit_rate per connection of the rate100 step ({FAST_RATE_MIB})",
    )
    p.add_argument(
        "--multi-mib", type=int, default=256, help="the multi step's archive (default 256)"
    )
    p.add_argument(
        "--multi-rate-mib",
        type=int,
        default=MULTI_RATE_MIB,
        help=f"limit_rate per connection of the multi step ({MULTI_RATE_MIB})",
    )
    p.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help="fetcher --connections N in every step but multi [default: fetcher's own]",
    )
    p.add_argument("--keep", action="store_true", help="keep .bench/work afterwards")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if set(args.only) - set(STEPS) or args.runs < 1 or (args.connections or 1) < 1:
        p.error(
            f"--only takes some of {','.join(STEPS)}; --runs and --connections must be at least 1"
        )
    return args


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that every `finally` runs and the servers stop


@contextlib.contextmanager
def serving(rate_mib: int, fast_rate_mib: int, multi_rate_mib: int) -> Iterator[Servers]:
    """nginx for the whole run; everything started stopped however the run ends."""
    servers = Servers()
    try:
        servers.start_nginx(rate_mib, fast_rate_mib, multi_rate_mib)
        yield servers
    finally:
        servers.close()


def measure(args: argparse.Namespace, bench: Bench) -> None:
    """Start the fake Atlas instances and run the chosen measurements."""
    small = 64 * 1024  # the config server's archive, which the single-archive tests skip
    single = PAYLOAD / f"single-{args.size_mib}M"
    make_payload(single, "Bench1", args.size_mib * MIB)
    batch = PAYLOAD / f"batch-{args.batch_mib}M"
    own: range = range(0)  # the rows of the multi step, which sets --connections itself
    with serving(args.rate_mib, args.fast_rate_mib, args.multi_rate_mib) as servers:
        servers.connections = args.connections

        def single_archive(port: int, suffix: str = "", *, tls: bool = False) -> Atlas:
            """The single archive, its links on nginx at `port` (one instance per port)."""
            label = f"{single.name}{suffix}" if suffix else None
            return servers.start_atlas(
                single, cluster="Bench1", shards=1, size=small, port=port, label=label, tls=tls
            )

        one = single_archive(servers.port)
        if "fetch" in args.only:
            bench.fetch_vs_curl(one)
        if "rate100" in args.only:
            bench.fetch_at_rate(single_archive(servers.fast_port, "-fast"), args.fast_rate_mib)
        if "tls" in args.only:
            bench.tls(single_archive(servers.tls_port, "-tls", tls=True), one)
        if bench.peaks:
            bench.rss(f"fetch {size(args.size_mib * MIB)}")
        if "unpack" in args.only:
            fast = single_archive(servers.fast_port, "-fast")
            bench.unpack(one, fast, args.fast_rate_mib)
        if args.full:
            huge = PAYLOAD / "single-4096M"
            make_payload(huge, "Bench4", 4 * GIB)
            four = servers.start_atlas(
                huge, cluster="Bench4", shards=1, size=small, port=servers.port
            )
            bench.rss_flat(one, four)
        if "verify" in args.only:
            bench.verify_vs_openssl(one)
        if "deep" in args.only:
            bench.deep_vs_tar(one)
        if "resume" in args.only:
            bench.resume(one)
        if "batch" in args.only:
            many = servers.start_atlas(
                batch,
                cluster="Bench4x",
                shards=3,
                size=args.batch_mib * MIB,
                port=servers.limited_port,
            )
            bench.batch(many, args.rate_mib)
        if "multi" in args.only:
            multi = PAYLOAD / f"multi-{args.multi_mib}M"
            make_payload(multi, "BenchM", args.multi_mib * MIB)
            servers.connections = None  # the step sets its own
            big = servers.start_atlas(
                multi, cluster="BenchM", shards=1, size=small, port=servers.multi_port
            )
            mark = len(bench.rows)
            bench.multi(big, args.multi_rate_mib)
            own = range(mark, len(bench.rows))
            servers.connections = args.connections
        if "scale" in args.only:
            fewer, more = [
                servers.start_atlas(
                    PAYLOAD / f"scale-{jobs}",
                    cluster=f"Scale{jobs}",
                    shards=jobs - 1,  # and the config server
                    size=SCALE_ARCHIVE,
                    port=servers.port,
                )
                for jobs in SCALE_JOBS
            ]
            bench.scale(fewer, more)
    if args.connections:  # say so on every row it applies to
        for i, row in enumerate(bench.rows):
            if i not in own:
                row.note = "; ".join(filter(None, [f"--connections {args.connections}", row.note]))


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, keep a JSON record; exit 0 unless the bench could not run."""
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    if not FETCHER.exists():
        raise SystemExit(f"bench: no {FETCHER}; run scripts/bench, which installs it")
    RUN.mkdir(parents=True, exist_ok=True)
    for old in RUN.glob("*.out"):
        old.unlink()
    about = machine()
    print(f"bench: {about}", flush=True)
    bench = Bench(args.runs)
    try:
        measure(args, bench)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    record = {
        "machine": about,
        "connections": args.connections,
        "rows": [asdict(r) for r in bench.rows],
        "raw": bench.raw,
    }
    (BENCH / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(record, indent=1)
    )
    print(f"\nMachine: {about}\n\n{table(bench.rows)}")
    failed = [r.name for r in bench.rows if not r.ok]
    if failed:
        print(f"bench: {len(failed)} of {len(bench.rows)} goals FAILED: {'; '.join(failed)}")
    else:
        print(f"bench: all {len(bench.rows)} goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
