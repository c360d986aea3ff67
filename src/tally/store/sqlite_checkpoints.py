"""WAL checkpoints in a thread of their own, so that no COMMIT carries one (ADR 0046).

By default SQLite checkpoints inside the COMMIT that takes the write-ahead log past 1,000 pages:
that COMMIT copies the log's pages into the database file and syncs it. Measured on this
machine with single transfers at 1,000/s, every 18 to 21 group commits one took 5 to 9 ms instead
of about 1.2 ms, and the groups queued behind it made the open loop's tail.

``Checkpointer`` turns that off on the adapter's connections (``wal_autocheckpoint=0``) and runs
``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds on a connection of its own, in a
thread. A PASSIVE checkpoint takes no lock a writer or reader waits for: it copies what no open
read still needs and leaves the rest for the next round. It changes nothing about durability:
a COMMIT still syncs the log (``synchronous=FULL``), and a crash leaves a log that the next
opening replays. Several processes on one file each run one; a round that finds another
process's checkpoint under way is skipped (``busy_timeout=0``).
"""

from __future__ import annotations

import sqlite3
import threading

import structlog

_log = structlog.get_logger(__name__)

CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"


class Checkpointer:
    """A daemon thread checkpointing the WAL of the SQLite file at ``path`` every ``interval`` s."""

    def __init__(self, path: str, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"a checkpoint interval is positive, not {interval}")
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tally-sqlite-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the round under way, if any; blocks until the thread has ended."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        # The thread never ends on an error: with ``wal_autocheckpoint=0`` nothing else would
        # checkpoint, and the log would grow until every connection to the file is closed.
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.wait(self._interval):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
                        conn.execute("PRAGMA busy_timeout=0")
                    conn.execute(CHECKPOINT).fetchone()
                except sqlite3.Error as error:  # busy with another checkpoint, or the disk: next round
                    _log.debug("wal checkpoint skipped", error=str(error))
        finally:
            if conn is not None:
                conn.close()
