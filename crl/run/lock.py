"""One process per run folder: an OS-level lock on ``<run folder>/.lock``.

``crl train`` (:func:`crl.run.train`) holds the lock of its run folder from before it reads
the folder until the run has ended; ``crl sweep`` checks it before it starts a run. A second
process on the same folder gets a :class:`RunFolderBusy` error (one line naming the holder's
pid) and touches nothing.

The lock is a POSIX record lock (``fcntl.lockf``): the kernel releases it when the holding
process exits, however it exits (``kill -9`` included), and the env worker processes a run
forks do not inherit it, so a killed run's folder can be resumed at once. The holder's pid is
written into the file for the message of the others; the file itself stays (deleting it
while another process waits on it would let two processes hold two different files).

A POSIX lock belongs to the process and is released when the process closes *any*
descriptor of the file, so within one process the held paths are also kept in a set: a
second lock of the same folder in the same process is refused without opening the file.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d):
    ...     holder(d) == os.getpid()
    True
    >>> holder(d) is None
    True
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

from crl.errors import ConfigError

__all__ = ["LOCK_FILE", "RunFolderBusy", "RunLock", "holder"]

#: The lock file of a run folder.
LOCK_FILE = ".lock"

_HELD: set[str] = set()  # lock files held by this process
_HELD_GUARD = threading.Lock()


class RunFolderBusy(ConfigError):
    """Another process (or another run of this process) holds the run folder's lock."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder = folder
        self.pid = pid
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{folder} is in use by {who} (a crl train or sweep on the same run); wait for it to end or stop it"
        )


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(errors="replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def holder(folder: str | Path) -> int | None:
    """The pid of the process holding ``folder``'s lock (0 if it has not written it yet), None
    if the lock is free or there is no lock file.

    Never creates anything. Probing takes the lock for an instant; :meth:`RunLock.acquire`
    waits a little for such a probe to end.
    """
    path = Path(folder) / LOCK_FILE
    with _HELD_GUARD:
        if str(path.resolve()) in _HELD:
            return os.getpid()
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _read_pid(path)
        os.close(fd)
        return pid if pid is not None else 0
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


class RunLock:
    """The lock of one run folder, held between :meth:`acquire` and :meth:`release`.

    Args:
        folder: the run folder. :meth:`acquire` creates it (and its parents) if needed;
            :attr:`created` is the topmost folder it created (None if it existed), so that a
            run refused before it wrote anything can remove it again.
        wait_s: how long :meth:`acquire` retries while the lock is taken (a sweep's probe
            holds it for an instant).
    """

    def __init__(self, folder: str | Path, wait_s: float = 0.5) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.wait_s = wait_s
        self.created: Path | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunFolderBusy` (having created nothing)."""
        import time

        if self.held:
            return
        key = str(self.path.resolve())
        with _HELD_GUARD:
            if key in _HELD:
                raise RunFolderBusy(self.folder, os.getpid())
        deadline = time.monotonic() + self.wait_s
        while True:
            busy = holder(self.folder)
            if busy is None and self._try_lock():
                break
            if time.monotonic() >= deadline:  # the winner has had the time to write its pid
                pid = _read_pid(self.path)
                raise RunFolderBusy(self.folder, pid if pid != os.getpid() else None)
            time.sleep(0.05)
        with _HELD_GUARD:
            _HELD.add(key)
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _try_lock(self) -> bool:
        try:
            self._create_folder()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file in the way, a read-only folder
            raise ConfigError(f"cannot write the run folder {self.folder}: {e.strerror or e}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _create_folder(self) -> None:
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        if missing and self.created is None:
            self.created = missing[-1]

    def release(self) -> None:
        """Let the lock go (the file stays; a later holder writes its own pid into it)."""
        if self._fd is None:
            return
        with _HELD_GUARD:
            _HELD.discard(str(self.path.resolve()))
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def remove_created(self) -> None:
        """Delete the folders :meth:`acquire` created (a run refused before it wrote anything).

        The run folder goes with everything in it; its parents only while they are empty.
        """
        import shutil

        if self.created is None:
            return
        self.release()
        shutil.rmtree(self.folder, ignore_errors=True)
        p = self.folder.parent
        while p != self.created.parent and p.exists():
            try:
                p.rmdir()
            except OSError:
                break
            p = p.parent
        self.created = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
