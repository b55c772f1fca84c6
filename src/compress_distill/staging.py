"""The one atomic-write helper of the project: a stage's outputs are staged, then committed together.

A stage computes everything -- every output file and folder, then its metrics -- into a staging area, and
only then renames them into place, metrics last.  So:

- a failure (an exception, a SIGKILL) before the commit leaves the previous outputs *and* metrics untouched;
- new metrics on disk always describe the outputs beside them (they are renamed in after the outputs);
- staging files never live inside a DVC-tracked folder.  The staging area is ``<repo>/.cache/staging/``
  (``.cache/`` is in ``.dvcignore`` and ``.gitignore``) when the destination lies in a DVC repository on the
  same filesystem; otherwise a ``.staging/`` folder beside the destination's parent folder is used (same
  filesystem, so every commit is a rename; a folder the stage writes into never holds a staging file).  A killed run therefore leaves ``dvc status`` unchanged;
  its leftovers are deleted by the next ``Staging`` that starts under the same root on the same host
  (their owning process is gone).

A folder is swapped in with Linux ``renameat2(RENAME_EXCHANGE)``, which exchanges the two names in one
step: there is never a moment with no folder at the destination.  Where the kernel or filesystem lacks it
(``ENOSYS``/``EINVAL``; e.g. non-Linux, some network filesystems), the fallback renames the old folder
aside and the new one in -- two renames, a window of microseconds with no folder -- and says so in the log.

Concurrent runs: each destination is locked (``flock`` on ``<staging root>-locks/<name>.<hash>.lock``, e.g.
``.cache/staging-locks/``) from the moment it is staged until the transaction commits or is discarded, so a
second process that stages the same output -- the same stage started twice by hand, or beside a ``dvc repro``
(two ``dvc repro`` in one workspace are already kept apart by DVC's repository lock) -- is refused at once
with a one-line ``OutputBusy`` naming the holder (pid, host, start time) and the lock file, before it loads a
model or writes anything; the first run finishes undisturbed.  Stages with different outputs never share a
lock.  The kernel drops a lock when its process dies, so a killed run never leaves a stale one.  Within one
process a destination may be staged again (the lock is counted): a failed run whose traceback is still alive
does not lock its own process out.

Commit is a sequence of renames, each atomic; a crash in the middle of it (a few syscalls) can leave some
outputs new and the metrics old, never the reverse.  Usage::

    with Staging() as st:
        pq.write_table(table, st.file("data/x.parquet"))
        build_into(st.folder("data/hub/T"))
        st.metrics("metrics/x.json", {...})      # committed last
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from compress_distill.errors import StageError

log = logging.getLogger(__name__)

STAGING_DIR = Path(".cache") / "staging"
# renameat2 flag (linux/fs.h); AT_FDCWD makes both paths relative to the working directory
RENAME_EXCHANGE = 2
AT_FDCWD = -100


# --------------------------------------------------------------------------------------------- renames
def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 / not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange the names ``a`` and ``b`` (both must exist); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(err)}", str(a), str(b))


def swap_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` at ``dest``; the old folder (if any) is deleted after the swap.

    With ``renameat2(RENAME_EXCHANGE)`` a reader always finds a complete folder at ``dest``, old or new.
    """
    if not dest.exists():
        os.replace(new, dest)
        return
    if exchange(new, dest):
        shutil.rmtree(new)  # ``new`` now names the old folder
        return
    log.warning("renameat2(RENAME_EXCHANGE) unavailable: %s is replaced with two renames", dest)
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------- staging root
def _repo_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a ``.dvc`` folder (a DVC repository)."""
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _device(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return path.stat().st_dev


def staging_root(dest: Path) -> Path:
    """Where outputs bound for ``dest`` are staged: outside every DVC-tracked path, same filesystem."""
    dest = dest.absolute()
    repo = _repo_root(dest.parent)
    if repo is not None and _device(repo) == _device(dest.parent):
        return repo / STAGING_DIR
    # no DVC repository (tests, ad-hoc runs): beside the destination's parent, so a folder the stage
    # writes into (e.g. data/traces/T) never holds a stray staging file
    anchor = dest.parent.parent if dest.parent.parent != dest.parent else dest.parent
    return anchor / ".staging"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def area_name() -> str:
    """``<pid>-<random>-<host>``: the owner of a staging folder, so a later run can tell a dead one."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}-{socket.gethostname()}"


def clean_leftovers(root: Path) -> list[Path]:
    """Delete staging folders under ``root`` whose owning process is gone (a killed run); returns them.

    Only folders of this host are judged (a repository on a shared filesystem may have live runs elsewhere).
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    host = socket.gethostname()
    for entry in root.iterdir():
        pid, _, rest = entry.name.partition("-")
        if pid.isdigit() and rest.partition("-")[2] == host and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------------------------- output locks
class OutputBusy(StageError):
    """Another live process is writing the same output."""


_HELD: dict[Path, tuple[int, int]] = {}  # lock file -> (open descriptor, holds by this process)


def lock_path(dest: Path) -> Path:
    """The lock file of output ``dest``: named after it, keyed by its real absolute path."""
    real = os.path.realpath(dest)
    key = hashlib.sha256(os.fsencode(real)).hexdigest()[:16]
    root = staging_root(dest)  # beside it, not in it: the staging root holds only transactions' folders
    return root.with_name(f"{root.name}-locks") / f"{dest.name}.{key}.lock"


def _holder(fd: int) -> str:
    text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    return text or "a process that has not written its name yet"


def lock_output(dest: Path) -> Path:
    """Lock output ``dest`` for this process (counted: a second hold by the same process is allowed);
    raises ``OutputBusy`` when another process holds it."""
    path = lock_path(dest)
    if path in _HELD:
        fd, holds = _HELD[path]
        _HELD[path] = (fd, holds + 1)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # 0666 less the umask, like any output
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise OutputBusy(
            f"{dest} is being written by another run ({holder}); wait for it to finish or stop it, "
            f"then run again (lock file {path})"
        ) from None
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {since}".encode(), 0)
    _HELD[path] = (fd, 1)
    return path


def unlock_output(path: Path) -> None:
    fd, holds = _HELD.pop(path)
    if holds > 1:
        _HELD[path] = (fd, holds - 1)
    else:
        os.close(fd)  # releases the flock


# --------------------------------------------------------------------------------------------- metrics JSON
def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (DVC and json.loads choke on them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metrics_json(metrics: Mapping[str, Any]) -> str:
    return json.dumps(json_safe(dict(metrics)), indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------------------------- transaction
def _release(areas: dict[Path, Path], locks: list[Path]) -> None:
    """Delete the transaction's staging folders, then release its output locks."""
    for area in areas.values():
        shutil.rmtree(area, ignore_errors=True)
    areas.clear()
    while locks:
        unlock_output(locks.pop())


class Staging:
    """All outputs of one stage, staged outside DVC-tracked paths and renamed into place together.

    ``file(dest)`` / ``folder(dest)`` return the staged path to write instead of ``dest``; ``metrics``
    stages a metrics file, always committed after every other output; ``commit()`` renames them all in.
    Used as a context manager, the block's success commits and any exception discards everything staged.
    A transaction that is dropped without a commit (an exception in the stage) deletes its staging folder
    when it is garbage-collected or the interpreter exits; one killed outright is deleted by the next.
    """

    def __init__(self, *, lock: bool = True) -> None:
        """``lock=False``: stage without locking the outputs (a non-main rank of a distributed job, which
        stages the same outputs as its main process and never commits them)."""
        self._outputs: list[tuple[Path, Path, bool]] = []  # (staged, dest, is folder)
        self._metrics: list[tuple[Path, Path]] = []
        self._areas: dict[Path, Path] = {}  # staging root -> this transaction's folder in it
        self._lock = lock
        self._locks: list[Path] = []  # lock files held until commit or discard
        self._cleanup = weakref.finalize(self, _release, self._areas, self._locks)
        self.committed = False

    def _area(self, dest: Path) -> Path:
        root = staging_root(dest)
        if root not in self._areas:
            root.mkdir(parents=True, exist_ok=True)
            clean_leftovers(root)
            area = root / area_name()
            area.mkdir()
            self._areas[root] = area
        return self._areas[root]

    def _stage(self, dest: str | Path) -> tuple[Path, Path]:
        dest = Path(dest)
        if any(d == dest for _, d, _ in self._outputs) or any(d == dest for _, d in self._metrics):
            raise ValueError(f"{dest} is staged twice in one transaction")
        if self._lock:
            self._locks.append(lock_output(dest))  # before anything is written for it
        area = self._area(dest)
        staged = area / f"{len(self._outputs) + len(self._metrics)}-{dest.name}"
        return staged, dest

    def file(self, dest: str | Path) -> Path:
        """The path to write in place of file ``dest``."""
        staged, d = self._stage(dest)
        self._outputs.append((staged, d, False))
        return staged

    def folder(self, dest: str | Path) -> Path:
        """An empty folder to fill in place of folder ``dest`` (swapped in whole on commit)."""
        staged, d = self._stage(dest)
        staged.mkdir()
        self._outputs.append((staged, d, True))
        return staged

    def metrics(self, dest: str | Path, metrics: Mapping[str, Any]) -> Path:
        """Stage ``metrics`` as sorted, indented JSON (checked row accounting) for ``dest``."""
        from compress_distill.metrics import check_metrics

        check_metrics(metrics)
        staged, d = self._stage(dest)
        staged.write_text(metrics_json(metrics), encoding="utf-8")
        self._metrics.append((staged, d))
        return staged

    def commit(self) -> None:
        """Rename every staged output into place, metrics last; then drop the staging folders."""
        if self.committed:
            raise RuntimeError("this staging transaction is already committed")
        for staged, dest, is_folder in self._outputs:
            if not staged.exists():
                raise FileNotFoundError(f"staged output for {dest} was never written ({staged})")
        for staged, dest, is_folder in [*self._outputs, *((s, d, False) for s, d in self._metrics)]:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if is_folder:
                swap_dir(staged, dest)
            else:
                _fsync(staged)
                os.replace(staged, dest)
        self.committed = True
        self.discard()

    def discard(self) -> None:
        """Delete everything staged and not committed (the destinations are untouched)."""
        self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A one-file transaction: yield a staged path; it replaces ``path`` only if the block succeeds."""
    with Staging() as st:
        yield st.file(path)
