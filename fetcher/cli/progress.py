"""The terminal reporter: progress bars (tqdm), per-job lines and remarks, the --verbose log.

The only module that knows tqdm. tqdm is imported where a bar or a line is first drawn:
`fetcher verify` draws none, and start-up time counts in every run.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from fetcher.cli.render import job_line, shown, unpack_line
from fetcher.manifest import JobRecord

if TYPE_CHECKING:
    from tqdm import tqdm

    from fetcher.engine.transfer import Progress
    from fetcher.fetch import WaitStatus


def log_line(line: str) -> None:
    """One line of the --verbose log: every secret masked, above any progress bars."""
    from tqdm import tqdm

    with contextlib.suppress(OSError, ValueError):  # a closed stderr must not end the fetch
        tqdm.write(f"fetcher: {shown(line)}", file=sys.stderr)


class TerminalReporter:
    """Progress bars (tqdm) on stderr when it is a terminal, and one line per finished job."""

    def __init__(self, *, bars: bool, lines: TextIO | None, wait: bool = False) -> None:
        self._bars_on, self._lines = bars, lines
        self._lock = threading.Lock()
        self._bars: dict[str, tqdm[Any]] = {}
        self._done: dict[str, tuple[int, int | None]] = {}
        self._total: tqdm[Any] | None = None
        self._closed: set[TextIO] = set()
        # Under --wait the top line is the wait status; the bars go below it.
        self._first_bar = 1 if wait else 0
        self._status: tqdm[Any] | None = None
        self._last_wait = ""

    def progress(self, name: str) -> Progress:
        """Return a callback that moves the archive's bar and the total bar."""
        if not self._bars_on:
            return _ignore_progress

        def update(done: int, total: int | None) -> None:
            with self._lock:
                bar = self._bars.get(name)
                if bar is None:
                    if self._total is None:
                        self._total = _bar("total", None, self._first_bar)
                    position = self._first_bar + len(self._bars) + 1
                    bar = self._bars[name] = _bar(name, total, position)
                self._done[name] = (done, total)
                _move(bar, done, total)
                known = [t for _, t in self._done.values()]
                grand = sum(t for t in known if t) if all(known) else None
                _move(self._total, sum(d for d, _ in self._done.values()), grand)

        return update

    def finished(self, record: JobRecord) -> None:
        """Print the job's outcome above the bars."""
        with self._lock:
            name = record.files[0].name if record.files else None
            bar = self._bars.pop(name, None) if name else None
            if bar is not None:
                bar.close()
            # --quiet drops the per-job lines, but never the reason a job failed.
            out = (
                self._lines if self._lines is not None or record.outcome != "failed" else sys.stderr
            )
            if out is not None:
                self._write(shown(job_line(record)), out)
            unpacked = unpack_line(record)
            if unpacked is not None:
                failed = unpacked.startswith("not unpacked")
                out = self._lines if self._lines is not None or not failed else sys.stderr
                if out is not None:
                    self._write(shown(unpacked), out)

    def note(self, text: str) -> None:
        """Show a remark on stderr."""
        with self._lock:
            self._write(f"fetcher: {shown(text)}", sys.stderr)

    def remark(self, text: str) -> None:
        """Show a remark on stderr, unless --quiet."""
        if self._lines is not None:
            self.note(text)

    def waiting(self, status: WaitStatus | None) -> None:
        """Show what --wait waits for: a status line on a terminal, else a line per change."""
        with self._lock:
            if status is None:
                if self._status is not None:
                    self._status.close()
                    self._status = None
                return
            text = shown(str(status))
            if self._bars_on:
                if self._status is None:
                    self._status = _status_line()
                self._status.set_description_str(text)
            elif self._lines is not None and status.what != self._last_wait:
                self._write(f"fetcher: {text}", sys.stderr)
            self._last_wait = status.what

    def _write(self, text: str, out: TextIO) -> None:
        """Print above the bars; a closed pipe (`| head`) silences us but never stops the fetch."""
        from tqdm import tqdm

        if out in self._closed:
            return
        try:
            tqdm.write(text, file=out)
            out.flush()
        except (OSError, ValueError):
            self._closed.add(out)

    def close(self) -> None:
        """Remove every bar."""
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            for line in (self._total, self._status):
                if line is not None:
                    line.close()


def _ignore_progress(done: int, total: int | None) -> None:
    return None


def _bar(name: str, total: int | None, position: int) -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=name,
        position=position,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.2,
    )


def _status_line() -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(bar_format="{desc}", position=0, leave=False, file=sys.stderr, dynamic_ncols=True)


def _move(bar: tqdm[Any] | None, done: int, total: int | None) -> None:
    if bar is None:
        return
    if total is not None and bar.total != total:
        bar.total = total
    bar.update(done - bar.n)
