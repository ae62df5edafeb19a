"""Processes, clients and measurements shared by the figures."""

from __future__ import annotations

import array
import asyncio
import atexit
import fcntl
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- statistics ---------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100). With fewer than 100 samples p99 is the maximum."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


# --- /proc ----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def cpu_clock(pid: int) -> float:
    """The process's CPU time (all its threads, also ended ones) in seconds, read from its POSIX CPU
    clock with nanosecond resolution: ``/proc``'s utime + stime move in 10 ms ticks, too coarse
    for a difference of a few tens of milliseconds (figure 6). Falls back to ``cpu_seconds``."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # Linux: CPUCLOCK_SCHED of the whole process
    except OSError:
        return cpu_seconds(pid)


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (its event loop's, for our servers), in ns from
    ``/proc/PID/task/PID/schedstat``; 0.0 where the kernel keeps no schedstat."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- servers --------------------------------------------------------------------------------------


_scratch: list[Path] = []


def scratch_dir(prefix: str) -> Path:
    """A new, empty folder for one figure's data, removed when the bench process ends, not when
    the figure does. Deleting a figure's thousands of files made the next figure's file creates
    slow: for a few minutes after a file is deleted, ext4 skips its inode, one by one, when it
    allocates a new one (``recently_deleted`` in the kernel's profile: 430 µs of CPU per file
    created instead of ~25 µs: ~13 % of figure 3's server CPU; tenth pass, bench/FINDINGS.md).
    The same held across runs: each run's folder landed in the block group of the one before,
    whose files had just been deleted (17 % of figure 3's server CPU in a run started 100 s after
    the last; eleventh pass), so the runs' folders are made in :func:`_runs_folder`."""
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="run-", dir=_runs_folder())))
        atexit.register(shutil.rmtree, _scratch[0], True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch[0]))


_FS_IOC_GETFLAGS: Final = 0x80086601
_FS_IOC_SETFLAGS: Final = 0x40086602
_FS_TOPDIR_FL: Final = 0x00020000


def _runs_folder() -> Path:
    """``<tmp>/darkroom-bench``, marked as the top of directory hierarchies (``chattr +T``) where
    the file system has that flag: ext4 then puts each new folder in it in a block group of its own
    choosing (the Orlov allocator spreads top-level folders), instead of next to its parent, so a
    run does not allocate its inodes among those the last run just deleted. Best effort: without
    the flag the folders are still made (and the figures pay for the last run's deletions)."""
    folder = Path(tempfile.gettempdir()) / "darkroom-bench"
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & _FS_TOPDIR_FL:
            flags[0] |= _FS_TOPDIR_FL
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
    except OSError:
        pass  # not ext2/3/4 (tmpfs, btrfs, ...): nothing to do
    finally:
        os.close(fd)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process on loopback: ``bench.server`` (the app with the bench provider) or the real
    ``darkroom serve``. Its data directory is a fresh one (:func:`scratch_dir`)."""

    kind: str = "bench"  # "bench" | "darkroom"
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    startup_seconds: float = float("nan")
    profile_to: Path | None = None  # run the server under pyinstrument, write its text report here

    def __post_init__(self) -> None:
        self.data_dir = scratch_dir(f"server-{self.kind}-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKROOM_", "DATABASE_URL", "JWT_"))}
        env.update(
            {
                "DARKROOM_DATA_DIR": str(self.data_dir),
                "JWT_SECRET": "bench-secret-" + "b" * 40,
                "APP_ENV": "test",
                "DARKROOM_LOG_LEVEL": "warning",
                "DARKROOM_SIGNUP_CREDITS": str(10**9),
                "PORT": str(self.port),
                # BENCH_PYTHONPATH (e.g. another revision's src/) goes first: A/B runs of the product
                "PYTHONPATH": os.pathsep.join(
                    p for p in (os.environ.get("BENCH_PYTHONPATH"), str(ROOT)) if p
                ),
            }
        )
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 90) -> Server:
        if self.kind == "bench":
            cmd = [sys.executable, "-m", "bench.server", "--port", str(self.port)]
            if self.profile_to is not None and self.profile_to.suffix == ".prof":
                cmd = [sys.executable, "-m", "cProfile", "-o", str(self.profile_to), *cmd[1:]]
            elif self.profile_to is not None:
                profiler = [
                    "-m",
                    "pyinstrument",
                    "-r",
                    "text",
                    "-p",
                    "flat=true",
                    "-p",
                    "time=percent_of_total",
                    "-o",
                    str(self.profile_to),
                ]
                cmd = [sys.executable, *profiler, *cmd[1:]]
        else:
            cmd = [sys.executable, "-m", "darkroom", "serve"]
        self.log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, env=self.env(), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.startup_seconds = time.perf_counter() - t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise RuntimeError("server did not become ready")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.profile_to else signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def register(url: str, email: str = "bench@example.com") -> str:
    r = httpx.post(f"{url}/api/auth/register", json={"email": email, "password": "bench-password-1"})
    r.raise_for_status()
    return str(r.json()["data"]["accessToken"])


# --- a lean HTTP/1.1 keep-alive client (the load generator for request-rate figures) -------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _keep_alive(
    port: int, request: bytes, connections: int, more: Callable[[], bool], counts: dict[int, int]
) -> int:
    """Send ``request`` (a whole HTTP/1.1 request) over ``connections`` keep-alive connections, each
    sending the next one when the last answer has been read, while ``more()``; count the answers'
    statuses in ``counts``. Returns how many were answered."""

    async def conn() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        try:
            while more():
                writer.write(request)
                status = await _read_response(reader)
                counts[status] = counts.get(status, 0) + 1
                n += 1
        finally:
            writer.close()
        return n

    return sum(await asyncio.gather(*(conn() for _ in range(connections))))


def _request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    length = f"Content-Length: {len(body)}\r\n" if body or method != "GET" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}{length}\r\n".encode() + body


async def get_rate(
    port: int, path: str, headers: dict[str, str], *, connections: int, seconds: float
) -> tuple[float, dict[int, int], float]:
    """Hammer ``GET path`` over ``connections`` keep-alive connections for ``seconds``.

    Returns (requests per second, count by status, this process's CPU seconds spent).
    Raw sockets, not httpx, so that the generator takes as little of the shared CPU as possible.
    """
    request = _request_bytes("GET", path, headers)
    counts: dict[int, int] = {}
    stop_at = 0.0

    def more() -> bool:
        return time.perf_counter() < stop_at

    # warm-up, then the measured run
    stop_at = time.perf_counter() + min(0.5, seconds / 4)
    await _keep_alive(port, request, connections, more, counts)
    counts.clear()
    cpu0 = self_cpu()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    total = await _keep_alive(port, request, connections, more, counts)
    elapsed = time.perf_counter() - t0
    return total / elapsed, counts, self_cpu() - cpu0


async def post_many(
    port: int, path: str, headers: dict[str, str], body: bytes, *, total: int, connections: int
) -> dict[int, int]:
    """``POST path`` with ``body`` exactly ``total`` times over ``connections`` keep-alive
    connections (raw sockets, as :func:`get_rate`); returns the count by status. ``headers`` must
    include the body's ``Content-Type``."""
    request = _request_bytes("POST", path, headers, body)
    counts: dict[int, int] = {}
    left = [total]

    def more() -> bool:
        left[0] -= 1
        return left[0] >= 0

    await _keep_alive(port, request, connections, more, counts)
    return counts


def loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def describe(value: Any) -> str:
    return str(value)
