"""WAL checkpoints off the event loop.

SQLite's automatic checkpoint runs inside the COMMIT that pushes the WAL past 1,000 pages: it
copies the WAL's pages into the database file and fsyncs it. With statements inline on the
event loop (``sqlite_inline``) that would stall every request for the length of the copy, so
our connections set ``wal_autocheckpoint=0`` and this checkpointer does the work from a thread
with a connection of its own: every ``interval`` seconds, a PASSIVE checkpoint if the WAL has
changed since the last look (it copies what it can without waiting for or blocking anyone), and
once writes stop, a TRUNCATE checkpoint that empties the WAL file (tried without waiting: if a
reader or writer is busy it just tries again next time). SQLite releases the GIL while it works.

A PASSIVE checkpoint never lets the WAL start over while writes go on: the writers add frames
while it copies, so it never finds every frame copied, and SQLite only writes from the WAL's start
again after a checkpoint that did. Under a steady write load the WAL grew by ~200 KB per task
without end (311 MB in the 7 s of bench figure 3; 25 MB at most with this), and every page a
statement reads is looked up in a WAL index that grows with it. So once the WAL holds
:data:`RESTART_BYTES`, a RESTART checkpoint follows the PASSIVE one: it waits (at most
:data:`RESTART_WAIT_MS`) for the writer of the moment and for readers of older snapshots, copies
the few frames added since, and makes the next writer start the WAL over. New writers wait
meanwhile; readers do not. This process's writers wait before they begin (``restart_pending``,
:meth:`WalCheckpointer.yield_to_restart`): queued back to back on the write connection they would
otherwise leave SQLite's lock free only for microseconds, and the checkpoint, polling for it,
would rarely get it. Another process's writers get SQLITE_BUSY, which ``sqlite_inline`` retries
after short async sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time

from darkroom.sqlite_inline import is_busy

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between looks at the WAL file
RESTART_BYTES = 16 << 20
"""A WAL holding this much (~4,000 pages: one segment of SQLite's WAL index) is started over."""
RESTART_WAIT_MS = 50
"""How long a RESTART checkpoint waits for the writer and readers of the moment (and new writers
wait for it) before it gives up until the next look."""


class WalCheckpointer:
    def __init__(self, path: str, *, interval: float = INTERVAL) -> None:
        self.path = path
        self.wal = path + "-wal"
        self.interval = interval
        self.restart_bytes = RESTART_BYTES
        self.restart_pending = False  # this process's writers wait before they begin
        self.passive = 0  # checkpoints run, for tests and diagnostics
        self.restarted = 0
        self.truncated = 0
        self._stop = threading.Event()
        self._last: tuple[int, int] | None = None  # the WAL's (size, mtime_ns) at the last look
        self._lock = threading.Lock()
        self._started = False
        self._thread = threading.Thread(target=self._loop, name="sqlite-wal-checkpoint", daemon=True)

    def start(self) -> None:
        """Idempotent."""
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                    self.step(conn)
                except sqlite3.Error as exc:  # never kill the thread
                    if not is_busy(exc):  # busy: someone holds the lock; next time, then
                        log.warning("WAL checkpoint failed: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    def step(self, conn: sqlite3.Connection) -> None:
        """One look at the WAL: PASSIVE if it changed, TRUNCATE if writes have stopped."""
        try:
            st = os.stat(self.wal)
        except FileNotFoundError:
            self._last = None
            return
        now = (st.st_size, st.st_mtime_ns)
        if st.st_size == 0:
            self._last = now
            return
        if now != self._last:
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.passive += 1
            if frames * _page_size(conn) >= self.restart_bytes:
                self._restart(conn)
        else:  # idle since the last look
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                self.truncated += 1
        try:
            st = os.stat(self.wal)
            self._last = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            self._last = None

    def _restart(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        self.restart_pending = True
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            self.restart_pending = False
            conn.execute("PRAGMA busy_timeout=0")
        if not busy:
            self.restarted += 1

    async def yield_to_restart(self) -> None:
        """Called by this process's writers before they begin: while a RESTART checkpoint is
        pending, wait for it (1 ms sleeps, at most :data:`RESTART_WAIT_MS`)."""
        deadline = time.monotonic() + RESTART_WAIT_MS / 1000
        while self.restart_pending and time.monotonic() < deadline:  # noqa: ASYNC110 - set by a thread
            await asyncio.sleep(0.001)


def _page_size(conn: sqlite3.Connection) -> int:
    size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return size
