"""The run folder of ``fastconv train --out DIR``: what it holds, who owns it, what may replace it.

A run folder holds ``model.json`` + ``model.npz``, ``checkpoints/``, ``history.json``
and the plots (``OUTPUTS``). ``claim`` makes it one training's for the whole run:

* ``DIR`` is resolved once (symlinks followed) and the run writes only into that
  folder: re-pointing a ``runs/latest`` link mid-run changes nothing for it. Before every
  write into it (``files.guard_folder``), the resolved path is checked to still lead to
  the locked folder (its lock file is the one this run holds open), so a folder moved
  away or replaced mid-run makes the run stop with an error instead of writing elsewhere;
* an exclusive ``fcntl.flock`` on ``DIR/.fastconv.lock`` (which holds the owner's pid),
  taken without waiting: a second training into the folder fails at once, naming the
  folder and the process that holds the lock (from ``/proc/locks`` when it is not the
  recorded pid). The lock file is created 0600, so another user cannot open it to hold
  the lock. The operating system releases the lock when the process ends,
  however it ends (a SIGKILL leaves no stale lock behind). Where ``fcntl`` does not
  exist (Windows) there is no lock;
* checks made before any data is loaded: ``DIR`` must be a folder (or creatable) that
  can be written into, ``DIR/checkpoints`` a folder if it exists, and no output name
  (``OUTPUTS``) a folder;
* a save of the model that a crash interrupted is finished or undone
  (``models.recover_model_files``), and the temporary files of writers that died are removed;
* a folder that holds a saved model or checkpoints is refused, unless ``resume`` (it
  has checkpoints to continue from) or ``overwrite`` (its previous outputs are removed
  first) is given.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

from ..io import files
from ..io.files import check_writable, remove_dead_temporaries, remove_file
from ..models import MODEL_FILES, recover_model_files
from ..training.checkpoints import checkpoints

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # no locks there (lock() checks)

LOCK_NAME = ".fastconv.lock"
CHECKPOINTS = "checkpoints"
PLOTS = (
    "loss.png",
    "accuracy.png",
    "confusion.png",
    "filters.png",
    "examples.png",
    "dataset.png",
    "feature_maps.png",
    "filters.gif",
)
OUTPUTS = (*MODEL_FILES, "history.json", *PLOTS)


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.fastconv.lock`` (created 0600);
    ``close()`` or the end of a ``with`` releases it. While held, every write into the folder
    first checks that ``folder`` still leads to it (``files.guard_folder``)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        path = self.folder / LOCK_NAME
        self.fd = os.open(
            path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600
        )
        self._guard = None
        if fcntl is None:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self.fd)
            raise BlockingIOError(
                f"{self.folder} is in use by another `fastconv train` ({holder} holds {path}); "
                "wait for it to finish, or choose another --out"
            ) from None
        st = os.fstat(self.fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(self.fd, 0o600)  # a lock file of an older fastconv: nobody else may open it now
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        self._identity = (st.st_dev, st.st_ino)
        self._guard = files.guard_folder(self.folder, self.check)

    def check(self):
        """OSError unless ``folder`` still leads to the folder whose lock this object holds."""
        try:
            st = os.stat(self.folder / LOCK_NAME)
            same = (st.st_dev, st.st_ino) == self._identity
        except OSError:
            same = False
        if not same:
            raise OSError(
                f"{self.folder} is no longer the folder this run locked (it was moved, removed or "
                "replaced): not writing there; the run's files are where the folder went"
            )

    def _holder(self):
        """Who holds the lock, in words: the pid its holder wrote (it writes just after locking:
        wait for it briefly), or, when the kernel names another holder (``/proc/locks``), that one
        with its user."""
        recorded = None
        for _ in range(20):
            text = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                recorded = int(text)
                break
            time.sleep(0.05)
        holders = _lock_holders(os.fstat(self.fd))
        if holders and recorded not in holders:
            return " and ".join(f"pid {pid}{_user_of(pid)}" for pid in sorted(holders)) + (
                f", not the pid {recorded} recorded in the lock file," if recorded else ""
            )
        return f"pid {recorded}" if recorded else "pid unknown"

    def close(self):
        if self._guard is not None:
            files.unguard_folder(self._guard)
            self._guard = None
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _lock_holders(st):
    """The pids that hold a lock on the file of stat result ``st``, from ``/proc/locks`` (Linux;
    an empty set elsewhere or when it cannot be read)."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return set()
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in lines:
        m = re.match(r"\d+:\s+(?:->\s+)?\S+\s+\S+\s+\S+\s+(\d+)\s+(\S+)\s", line)
        if m and m[2] == wanted:
            holders.add(int(m[1]))
    return holders


def _user_of(pid):
    """ " (user NAME)" of the process ``pid``, or "" when it cannot be told."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return ""
    try:
        import pwd

        return f" (user {pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f" (uid {uid})"


def _check_path(out):
    """--out problems that need no lock: a file where the folder should be, a file named
    checkpoints inside it, a path that cannot be created."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose another --out")
    ckpt = out / CHECKPOINTS
    if ckpt.exists() and not ckpt.is_dir():
        raise NotADirectoryError(
            f"{ckpt} is not a folder (a run keeps its checkpoints there); move it away or choose another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    for name in OUTPUTS:
        path = out / name
        if path.exists() and not path.is_file():
            raise IsADirectoryError(
                f"{path} is {'a folder' if path.is_dir() else 'not a regular file'}, where the "
                f"run writes its {name}; move it away or choose another --out"
            )


def _check_contents(out, resume, overwrite, folder):
    """Refuse a folder holding another run's results unless told what to do with them
    (``folder`` is ``out`` resolved)."""
    saved = [name for name in MODEL_FILES if (folder / name).exists()]
    resumable = bool(checkpoints(folder / CHECKPOINTS))
    if overwrite or not (saved or resumable):
        return
    if not resume:
        held = ", ".join(saved + ([f"{CHECKPOINTS}/"] if resumable else []))
        raise FileExistsError(
            f"{out} already holds a training run ({held}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    if not resumable:
        raise FileExistsError(
            f"{out} holds a saved model ({', '.join(saved)}) but no checkpoint to resume "
            f"from; pass --overwrite to train afresh over it, or choose another --out"
        )


def _remove_outputs(out):
    """Remove the files a previous run wrote (and only those) before a run replaces it."""
    for name in OUTPUTS:
        path = out / name
        if path.is_file() or path.is_symlink():
            remove_file(path)
    for _, path in checkpoints(out / CHECKPOINTS):
        remove_file(path)
        remove_file(path.with_suffix(".npz"))


def claim(out, resume=False, overwrite=False):
    """Check the run folder ``out`` and lock it for one training (see the module docstring);
    returns the held ``FolderLock``, whose ``folder`` is ``out`` resolved: the run writes there
    only. Errors are OSErrors naming the folder and the way out."""
    out = Path(out)
    _check_path(out)
    resolved = Path(os.path.realpath(out))
    try:
        lock = FolderLock(resolved)
    except PermissionError as exc:
        raise PermissionError(f"cannot write into {out} ({exc.strerror or exc}); choose another --out") from None
    try:
        recover_model_files(resolved)
        remove_dead_temporaries(resolved, "|".join(map(re.escape, OUTPUTS)))
        _check_contents(out, resume, overwrite, resolved)
        for folder in (resolved, resolved / CHECKPOINTS):
            if folder.is_dir():
                check_writable(folder)
        if overwrite:
            _remove_outputs(resolved)
    except BaseException:
        lock.close()
        raise
    return lock
