"""Checks and locks a verb runs before its work, so that what would fail at save time fails at once,
in one line, with nothing written: an --out that cannot be written (a file in the way, a read-only
or full disk, the current directory), and a second run writing the same folder.

    check_writable_folder(out, "--out")          # before loading, encoding or training
    with output_lock(out, "train-heads"):        # one writer per checkpoint or report folder
        ...
    with scratch_folder(out, "pair-features"):   # large temporary files beside the output, never in an input
        ...
"""

import fcntl
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from data.errors import UserError

SCRATCH_SUFFIX = ".tmp"  # what data.files.is_leftover counts as ours: a folder holding one is not refused


def _first_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            return folder
    return Path("/")


def check_writable_folder(path: str | Path, flag: str = "--out", inputs: Sequence[str | Path] = (), needed_bytes: int = 0, replaced: bool = True) -> None:
    """Refuse, before any work, a folder this run could not create or write: a file at `path` or at
    one of its parents, a folder it may not write (checked by creating a file there, which also
    catches a read-only mount and root's way past the mode bits), fewer than `needed_bytes` free,
    and, when the run `replaced` the folder whole (atomic_dir), the current directory or a folder
    holding it or one of `inputs`. Nothing is left behind."""
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    if replaced:
        here = Path(os.path.abspath(os.getcwd()))
        if absolute == here or absolute in here.parents:
            raise UserError(
                f"{flag} {path} is the current directory{' or holds it' if absolute != here else ''}: a run replaces its {flag} folder whole, "
                f"which it cannot do to the folder it runs in. Give a new folder, e.g. {flag} {path / 'out'}"
            )
        for given in inputs:
            if given is None:
                continue
            source = Path(os.path.abspath(given))
            if absolute == source or absolute in source.parents:
                raise UserError(f"{flag} {path} holds the input {given}, which replacing it would remove. Give a folder of its own, e.g. {flag} {path / 'out'}")
    existing = _first_existing(absolute)
    if existing == absolute and not absolute.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder: remove it, or choose another {flag}")
    if not existing.is_dir():
        raise UserError(f"{flag} {path} cannot be created: {existing} is a file, not a folder. Remove it, or choose another {flag}")
    # the parent is where atomic writes put their temporary folder; an existing folder's files are replaced too
    where = [existing] if existing != absolute else [absolute, absolute.parent]
    for folder in where:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {path}: no permission to write in {folder}. Make it writable, or choose another {flag}")
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
        except OSError as e:
            raise UserError(f"{flag} {path}: cannot write in {folder} ({e.strerror}). Make it writable, or choose another {flag}") from None
        os.close(fd)
        os.unlink(probe)
    check_free_space(path, needed_bytes, flag)


def check_free_space(path: str | Path, needed_bytes: int, flag: str = "--out") -> None:
    """Refuse, before the work, a run whose output (of a size known beforehand) would not fit."""
    if needed_bytes <= 0:
        return
    existing = _first_existing(Path(os.path.abspath(path)))
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise UserError(
            f"{flag} {path}: about {needed_bytes / 1e6:.1f} MB are needed and {existing} has {free / 1e6:.1f} MB free; nothing was written. "
            f"Free some space, or choose another {flag}"
        )


def lock_path(folder: str | Path) -> Path:
    """The lock of an output folder: beside it, since an atomic write replaces the folder itself."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def output_lock(folder: str | Path, verb: str, flag: str = "--out", required: bool = True) -> Iterator[None]:
    """Hold the one-writer lock of `folder` (an flock, released by the OS if the process dies) for
    the whole run; a second run refuses at once, naming the folder and the run that holds it. The
    lock file names its holder and is removed on release (a lock file that was replaced while we
    waited is retried, so two runs never hold two different files). Not `required`: where no lock
    file can be made (a read-only folder), the run goes on unlocked."""
    path = lock_path(folder)
    created = [parent for parent in reversed(path.parents) if not parent.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if required:
                raise
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"{flag} {folder} is being written by another run ({holder or 'pid unknown'}; lock {path}): wait for it to finish, or choose another {flag}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # released and removed by its holder while we waited: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"`pipeline {verb}` pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    except BaseException:
        _release(path, fd)
        for parent in reversed(created):  # a run that failed leaves no empty folders it made
            try:
                parent.rmdir()
            except OSError:
                break
        raise
    _release(path, fd)


def _release(path: Path, fd: int) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
    os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM (`kill`, `timeout`, a scheduler ending a job) raises
    SystemExit(143) in the main thread, as Ctrl-C raises KeyboardInterrupt, so the block's own
    clean-up (a scratch folder, a lock) runs before the process ends. Nothing changes in another
    thread or when the process already handles SIGTERM itself."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def scratch_folder(beside: str | Path, kind: str) -> Iterator[Path]:
    """A temporary folder beside `beside` (an output: on the disk the user chose for it, and never
    inside an input such as a cache that may be read-only or shared), named with host and pid and
    removed when the block ends, on success or error. What a killed run left there (its pid is
    dead) is removed first."""
    beside = Path(os.path.abspath(beside))
    beside.parent.mkdir(parents=True, exist_ok=True)
    sweep_scratch(beside.parent, kind)
    folder = Path(tempfile.mkdtemp(dir=beside.parent, prefix=f".{beside.name}.{kind}-{_host()}-{os.getpid()}-", suffix=SCRATCH_SUFFIX))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_scratch(folder: str | Path, kind: str) -> list[Path]:
    """Remove the scratch folders of `kind` in `folder` that runs on this host, now dead, left."""
    pattern = re.compile(rf"^\..*\.{re.escape(kind)}-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[^/]*{re.escape(SCRATCH_SUFFIX)}$")
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = pattern.match(entry.name)
        if found and found["host"] == _host() and not _alive(int(found["pid"])) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed

