"""WAL checkpoints off the event loop.

SQLite's automatic checkpoint runs inside the COMMIT that pushes the WAL past 1,000 pages: it
copies the WAL's pages into the database file and fsyncs it. With statements inline on the
event loop (``sqlite_inline``) that would stall every request for the length of the copy, so
our connections set ``wal_autocheckpoint=0`` and this checkpointer does the work from a thread
with a connection of its own: every ``interval`` seconds, a PASSIVE checkpoint if the WAL has
changed since the last look (it copies what it can without waiting for or blocking anyone), and
once writes stop, a TRUNCATE checkpoint that empties the WAL file (tried without waiting: if a
reader or writer is busy it just tries again next time). SQLite releases the GIL while it works.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from darkroom.sqlite_inline import is_busy

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between looks at the WAL file


class WalCheckpointer:
    def __init__(self, path: str, *, interval: float = INTERVAL) -> None:
        self.path = path
        self.wal = path + "-wal"
        self.interval = interval
        self.passive = 0  # checkpoints run, for tests and diagnostics
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
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.passive += 1
        else:  # idle since the last look
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                self.truncated += 1
        try:
            st = os.stat(self.wal)
            self._last = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            self._last = None
