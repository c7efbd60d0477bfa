"""Where XRayVOS writes: every output file and result folder goes through here (standard library only).

- `check_file_target(path, what)`: before any work, refuse a file target that is a folder, lies below a
  regular file, or whose folder cannot be written. Writability is probed by creating a file, because
  permission bits say nothing for root or on a read-only mount.
- `atomic_open(path)` / `atomic_path(path)`: write a temporary file in the same folder (created with O_EXCL
  and O_NOFOLLOW, so a symlink planted at the temporary name is never followed), then `os.replace` it onto
  the target (which replaces a symlink at the target rather than writing through it). A failed write (full
  disk, file-size limit) removes the temporary file: the target is either the old file or the new one,
  never a 0-byte or half-written file.
- `OutputFolder`: a result folder one command owns (`propagate --out`, `evaluate --out`). It refuses a
  folder that is neither empty nor an earlier result of the same command, locks it against a concurrent
  run, and replaces an earlier result completely.

Why a staging folder and a swap (and not deleting the old files first): the run writes into a new hidden
folder beside OUT (`.OUT.xrayvos-new-*`); only when it has finished are OUT and the staging folder swapped
(two renames) and the old result deleted. So a failed, cancelled or crashed run never touches the earlier
result, and OUT never holds a mix of two runs. A crash in the moment between the two renames leaves the
earlier result as `.OUT.xrayvos-old-*`, which the next run into OUT puts back (`_recover`).

Every problem is an `OutputError` (an XRayVOSError: exit status 2, one line naming the path and the reason).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from XRayVOSLib.errors import XRayVOSError

TEMP_PREFIX = ".xrayvos-tmp-"  # a leading dot: the readers of mask and frame folders skip these files
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


class OutputError(XRayVOSError):
    """An output location that cannot be used or written (named, with the reason)."""


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in words, with a hint where the words alone mislead."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    short_write = exc.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(exc))  # numpy's words
    if exc.errno == errno.EFBIG or short_write:
        reason += ": the disk is full or a file-size limit is reached"
    return reason


def describe_os_error(exc: OSError) -> str:
    """'PATH: reason' (the one-line form of an unexpected OSError)."""
    return f"{exc.filename}: {os_reason(exc)}" if exc.filename else os_reason(exc)


def _write_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write ({os_reason(exc)})")  # the target, not the temporary name


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _probe_writable(folder: Path, what: str, target: Path) -> None:
    probe = folder / f"{TEMP_PREFIX}{secrets.token_hex(4)}.probe"
    try:
        os.close(os.open(probe, _OPEN_NEW, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {target}: cannot write in {folder} ({os_reason(exc)})") from None


def _check_folder_above(path: Path, what: str) -> Path:
    """The nearest existing folder above `path` (which may not exist yet), checked to be a writable folder."""
    above = _nearest_existing(path.parent)
    if not above.is_dir():
        raise OutputError(f"{what} {path}: {above} is a file, not a folder")
    _probe_writable(above, what, path)
    return above


def check_file_target(path: str | Path, what: str) -> Path:
    """Refuse, before any work, a file target that cannot be written; returns it as a Path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    if os.path.lexists(path) and not (path.is_file() or path.is_symlink()):
        raise OutputError(f"{what} {path}: exists and is not a regular file")
    _check_folder_above(path, what)
    return path


def _open_temp(path: Path) -> tuple[int, Path]:
    while True:
        tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{path.name}")  # suffix kept for writers
        try:
            return os.open(tmp, _OPEN_NEW, 0o666), tmp
        except FileExistsError:  # a leftover or planted file of that name: never reuse it, draw another
            continue


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_open(path: str | Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` (whole) when the block ends without an error, else not at all.
    durable: fsync before the rename (for the record file that says a result is complete)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temp(path)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        _unlink_quietly(tmp)  # gone already after a successful replace


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file name beside `path` for writers that take a name (SimpleITK); renamed onto
    `path` when the block ends without an error. Prefer atomic_open, which never reopens by name."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temp(path)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        yield tmp
        if os.path.islink(tmp) or not os.path.isfile(tmp):
            raise OutputError(f"{path}: the temporary file {tmp.name} was replaced while writing")
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        _unlink_quietly(tmp)


def write_text_atomic(path: str | Path, text: str, *, durable: bool = True) -> Path:
    with atomic_open(path, durable=durable) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def write_json_atomic(path: str | Path, data: object) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


@dataclass(frozen=True)
class ResultKind:
    """What an earlier result of one command looks like, so only such a folder is ever replaced."""

    record: str  # the file written last, which marks a finished result (run.json)
    record_keys: tuple[str, ...]  # keys it always has, so someone else's run.json is not taken for ours
    files: tuple[str, ...]  # regular expressions of every other path in such a result (relative, "/")

    def is_record(self, path: Path) -> bool:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and all(key in data for key in self.record_keys)

    def strangers(self, folder: Path) -> list[str]:
        """Paths in `folder` that such a result does not hold (a user's own files), sorted."""
        found = []
        for root, dirs, names in os.walk(folder):
            rel = Path(root).relative_to(folder)
            for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                entry = (rel / name).as_posix()
                if entry != self.record and not any(re.fullmatch(p, entry) for p in self.files):
                    found.append(entry)
        return sorted(found)


class _Lock:
    """An exclusive, non-blocking lock on a file beside the output folder (fcntl.flock; msvcrt on Windows).
    The kernel drops it when the process dies, so a killed run never leaves the folder locked."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, -1

    def acquire(self) -> str | None:
        """Take the lock; return None, or the holder's description when another run holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            if not _try_lock(fd):
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
                os.close(fd)
                return f"pid {holder}" if holder.isdigit() else "a process"
            # The previous holder unlinks the file as it releases: make sure we locked the file that is there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd < 0:
            return
        _unlink_quietly(self.path)  # while still holding it (see acquire); fails harmlessly on Windows
        _unlock(self.fd)
        os.close(self.fd)
        self.fd = -1


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _WIN_LOCK_AT = 1 << 20  # lock a byte past the pid, which stays readable for the refusal message

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WIN_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WIN_LOCK_AT, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class OutputFolder:
    """A result folder owned by one run. Use as a context manager:

        with OutputFolder(out, PROPAGATE_RESULT, "--out", protect=[inputs]) as out:   # checks + lock
            ...validate the inputs...
            staging = out.stage()      # write everything here
            out.commit()               # swap it in; without commit nothing in OUT changes

    `protect`: paths the run reads (inputs, painted masks); one inside OUT is refused, since OUT is replaced.
    """

    def __init__(self, path: str | Path, kind: ResultKind, option: str = "--out", protect: Sequence[Path] = ()):
        self.path = Path(os.path.abspath(Path(path).expanduser()))  # absolute, the last part not resolved
        self.kind, self.option, self.protect = kind, option, [Path(p) for p in protect]
        name = self.path.name
        if not name:  # the staging folder and the lock live beside OUT, which "/" has no room for
            raise OutputError(f"{option} {self.path}: a file system's root cannot be a result folder")
        self._lock = _Lock(self.path.with_name(f".{name}.xrayvos-lock"))
        self._sibling = re.compile(rf"\.{re.escape(name)}\.xrayvos-(new|old)-[0-9a-f]+")
        self._staging: Path | None = None
        self._created: list[Path] = []
        self.committed = False

    def __enter__(self) -> OutputFolder:
        try:
            self.claim()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        staging = self._staging
        self.close()
        if isinstance(exc, OutputError) and staging is not None and str(staging) in str(exc):
            # A write into the staging folder failed: name the file as the user knows it.
            message = str(exc).replace(str(staging), str(self.path))
            raise OutputError(f"{message}; {self.path} is unchanged") from None

    def _fail(self, problem: str) -> OutputError:
        return OutputError(f"{self.option} {self.path}: {problem}")

    def claim(self) -> None:
        """Every check that can be made before the run, then the lock (refused when another run holds it)."""
        if self.path.is_symlink():
            raise self._fail("is a symbolic link; give the folder itself")
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise self._fail("exists and is not a folder")
        real = self.path.resolve()
        for p in self.protect:
            if Path(p).expanduser().resolve().is_relative_to(real):
                raise self._fail(f"holds {p}, which this run reads; the folder is replaced by the result, "
                                 "so choose another folder")
        above = _check_folder_above(self.path, self.option)
        try:
            self._created = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()][::-1]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            holder = self._lock.acquire()
        except OSError as exc:
            raise self._fail(f"cannot write in {above} ({os_reason(exc)})") from None
        if holder is not None:
            raise self._fail(f"another xrayvos run ({holder}) is writing this folder; wait for it to finish "
                             "or choose another folder")
        try:
            self._recover()
        except OSError as exc:
            raise self._fail(f"cannot tidy what an earlier, killed run left ({describe_os_error(exc)})") from None
        self._check_owned()

    def _siblings(self, which: str) -> list[Path]:
        return sorted(p for p in self.path.parent.iterdir()
                      if (m := self._sibling.fullmatch(p.name)) and m.group(1) == which)

    def _recover(self) -> None:
        """Tidy what a killed run left beside OUT (we hold the lock, so no live run owns these)."""
        for partial in self._siblings("new"):
            shutil.rmtree(partial, ignore_errors=True)
        for old in self._siblings("old"):
            if not os.path.lexists(self.path):
                os.rename(old, self.path)  # killed between the two renames of a commit: put the result back
            else:
                shutil.rmtree(old, ignore_errors=True)

    def _check_owned(self) -> None:
        if not self.path.is_dir() or not any(self.path.iterdir()):
            return  # absent or empty: ours to fill
        if not self.kind.is_record(self.path / self.kind.record):
            raise self._fail(f"is not empty and is not an earlier XRayVOS result (no {self.kind.record} of "
                             "ours); choose an empty or new folder")
        strangers = self.kind.strangers(self.path)
        if strangers:
            more = f" and {len(strangers) - 1} more" if len(strangers) > 1 else ""
            raise self._fail(f"holds an earlier result and also {strangers[0]}{more}, which replacing the result "
                             "would delete; move it out or choose another folder")

    def stage(self) -> Path:
        """The (new, empty) folder the run writes into."""
        if self._staging is None:
            staging = self.path.with_name(f".{self.path.name}.xrayvos-new-{secrets.token_hex(4)}")
            try:
                staging.mkdir()
            except OSError as exc:
                raise self._fail(f"cannot create {staging.name} beside it ({os_reason(exc)})") from None
            self._staging = staging
        return self._staging

    def commit(self) -> None:
        """Put the staged result in place of OUT (an earlier result is deleted only now)."""
        staged = self.stage()
        self._check_owned()  # the folder may have changed while the run wrote
        old = self.path.with_name(f".{self.path.name}.xrayvos-old-{secrets.token_hex(4)}")
        try:
            moved = os.path.lexists(self.path)
            if moved:
                os.rename(self.path, old)
            try:
                os.rename(staged, self.path)
            except OSError:
                if moved:
                    os.rename(old, self.path)
                raise
        except OSError as exc:
            raise self._fail(f"cannot put the result in place ({describe_os_error(exc)})") from None
        self._staging, self.committed = None, True
        shutil.rmtree(old, ignore_errors=True)  # what cannot be deleted now, the next run's _recover deletes

    def close(self) -> None:
        """Without a commit: delete the staged files and the folders claim created; release the lock."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self._lock.release()
        if not self.committed:
            for folder in reversed(self._created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only where still empty
            self._created = []


__all__ = ["OutputError", "OutputFolder", "ResultKind", "atomic_open", "atomic_path", "check_file_target",
           "describe_os_error", "os_reason", "write_json_atomic", "write_text_atomic"]
