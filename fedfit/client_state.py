"""What a client keeps across rounds, in one small SQLite file: (partition, key) -> versioned arrays.

Client state is whatever a client must remember and never sends: a local-only client's adapter, the
top-k error-feedback residual, an adapter's personal state (UpperCaSE's linear head, ICIIA's history
features). One row per (partition id, key, version), the array stored as npy bytes; a few KB to a few
MB per client, so 10,000 clients fit in one file on disk, not in memory.

Versions make resume exact without the server reaching into the store: work of round r, phase p
(train 0, evaluate 1) is version ``2 r + p``; it reads the newest version BELOW its own and writes its
own. A round redone after a crash therefore never sees what the interrupted attempt wrote (that
attempt's rows have the same or a later version and are overwritten). The two newest versions per
(partition, key) below the one just written are kept, older ones pruned.

Safe for many processes (Ray actors) on one machine: WAL journal, writes in short transactions.
"""
from __future__ import annotations

import io
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

TRAIN, EVALUATE = 0, 1


def version(server_round: int, phase: int) -> int:
    """The version written by the work of ``server_round`` in ``phase`` (TRAIN or EVALUATE)."""
    return 2 * int(server_round) + int(phase)


def _blob(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


class ClientStateError(RuntimeError):
    """A client state file, or an array in it, that cannot be read: which, and why."""


_UNREADABLE = (ValueError, TypeError, EOFError, OSError)  # what np.load raises on bytes that are not an array


def _array(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


class ClientStateStore:
    """The state file of one run (one per process: ``open_store``). A file that is not one, or an array in
    it that does not decode, raises ClientStateError naming the file (and the array)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=120.0, isolation_level=None, check_same_thread=False)
            self._setup()
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _error(self, e: BaseException, what: str = "") -> ClientStateError:
        where = f"{self.path}{': ' + what if what else ''}"
        return ClientStateError(f"{where}: not a readable client state ({type(e).__name__}: {e}); move the file "
                                f"away to start the clients' kept state afresh")

    def _setup(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA busy_timeout = 120000")
            # several processes may open the file at the same moment: switching it to WAL takes an
            # exclusive lock that the busy timeout does not wait for, so retry that part
            for attempt in range(60):
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("CREATE TABLE IF NOT EXISTS state (partition INTEGER, key TEXT, "
                                     "version INTEGER, data BLOB, PRIMARY KEY (partition, key, version))")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 59:
                        raise
                    time.sleep(0.05 * (1 + attempt % 10))
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _rows(self, sql: str, args: tuple) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _decode(self, partition: int, key, data) -> np.ndarray:
        try:
            return _array(data)
        except _UNREADABLE as e:
            raise self._error(e, f"partition {partition}, {key!r}") from None

    def get(self, partition: int, key: str, below: int) -> np.ndarray | None:
        """The newest array of (partition, key) with a version < ``below``, or None."""
        rows = self._rows("SELECT data FROM state WHERE partition = ? AND key = ? AND version < ? "
                          "ORDER BY version DESC LIMIT 1", (int(partition), key, int(below)))
        return self._decode(partition, key, rows[0][0]) if rows else None

    def get_all(self, partition: int, prefix: str, below: int) -> dict[str, np.ndarray]:
        """{key: newest array below ``below``} of every key of ``partition`` that starts with ``prefix``."""
        rows = self._rows(
            "SELECT key, data FROM state s WHERE partition = ? AND key LIKE ? AND version = (SELECT MAX(version) "
            "FROM state t WHERE t.partition = s.partition AND t.key = s.key AND t.version < ?)",
            (int(partition), prefix.replace("%", r"\%") + "%", int(below)))
        return {str(k): self._decode(partition, k, b) for k, b in rows}

    def put(self, partition: int, key: str, at: int, array: np.ndarray) -> None:
        """Store ``array`` as version ``at`` (replacing one already there); prune older versions."""
        self.put_many(partition, {key: array}, at)

    def put_many(self, partition: int, arrays: dict[str, np.ndarray], at: int) -> None:
        rows = [(int(partition), k, int(at), _blob(np.asarray(a))) for k, a in arrays.items()]
        try:
            self._write(partition, rows)
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _write(self, partition: int, rows: list[tuple]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", rows)
                for _, k, v, _ in rows:
                    self._db.execute(
                        "DELETE FROM state WHERE partition = ? AND key = ? AND version < ? AND version NOT IN "
                        "(SELECT version FROM state WHERE partition = ? AND key = ? AND version < ? "
                        "ORDER BY version DESC LIMIT 2)", (int(partition), k, v, int(partition), k, v))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def partitions(self) -> list[int]:
        return [r[0] for r in self._rows("SELECT DISTINCT partition FROM state ORDER BY partition", ())]

    def close(self) -> None:
        with self._lock:
            self._db.close()


_STORES: dict[tuple[int, str], tuple[int, ClientStateStore]] = {}


def open_store(path: str | Path) -> ClientStateStore:
    """This process's store for ``path``: a new connection after a fork, or when the file was replaced
    (a run started again over the same directory)."""
    key = (os.getpid(), str(Path(path).resolve()))
    cached = _STORES.get(key)
    inode = _inode(path)
    if cached is None or cached[0] != inode or inode is None:
        store = ClientStateStore(path)
        _STORES[key] = (_inode(path), store)
        return store
    return cached[1]


def _inode(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
