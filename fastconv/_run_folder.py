"""The run folder of ``fastconv train --out DIR``: what it holds, who owns it, what may replace it.

A run folder holds ``model.json`` + ``model.npz``, ``checkpoints/``, ``history.json``
and the plots (``OUTPUTS``). ``claim`` makes it one training's for the whole run:

* an exclusive ``fcntl.flock`` on ``DIR/.fastconv.lock`` (which holds the owner's pid),
  taken without waiting: a second training into the folder fails at once, naming the
  folder and that pid. The operating system releases the lock when the process ends,
  however it ends (a SIGKILL leaves no stale lock behind). Where ``fcntl`` does not
  exist (Windows) there is no lock;
* checks made before any data is loaded: ``DIR`` must be a folder (or creatable) that
  can be written into, and ``DIR/checkpoints`` a folder if it exists;
* a folder that holds a saved model or checkpoints is refused, unless ``resume`` (it
  has checkpoints to continue from) or ``overwrite`` (its previous outputs are removed
  first) is given.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ._files import check_writable
from .checkpoints import checkpoints
from .models import MODEL_JSON, MODEL_NPZ

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # no locks there (lock() checks)

LOCK_NAME = ".fastconv.lock"
CHECKPOINTS = "checkpoints"
PLOTS = ("loss.png", "accuracy.png", "confusion.png", "filters.png", "examples.png", "dataset.png",
         "feature_maps.png", "filters.gif")
OUTPUTS = (MODEL_JSON, MODEL_NPZ, "history.json", *PLOTS)


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.fastconv.lock`` (the folder is
    created if needed); ``close()`` or the end of a ``with`` releases it."""

    def __init__(self, folder):
        self.folder = Path(folder)
        path = self.folder / LOCK_NAME
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        if fcntl is None:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._owner()
            os.close(self.fd)
            raise BlockingIOError(f"{self.folder} is in use by another `fastconv train` "
                                  f"({f'pid {owner}' if owner else 'pid unknown'} holds {path}); "
                                  "wait for it to finish, or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def _owner(self):
        """The pid the lock's holder wrote (it writes just after locking: wait for it briefly)."""
        for _ in range(20):
            text = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return int(text)
            time.sleep(0.05)
        return None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_path(out):
    """--out problems that need no lock: a file where the folder should be, a file named
    checkpoints inside it, a path that cannot be created."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose another --out")
    ckpt = out / CHECKPOINTS
    if ckpt.exists() and not ckpt.is_dir():
        raise NotADirectoryError(f"{ckpt} is not a folder (a run keeps its checkpoints there); "
                                 "move it away or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None


def _check_contents(out, resume, overwrite):
    """Refuse a folder holding another run's results unless told what to do with them."""
    saved = [name for name in (MODEL_JSON, MODEL_NPZ) if (out / name).exists()]
    resumable = bool(checkpoints(out / CHECKPOINTS))
    if overwrite or not (saved or resumable):
        return
    if not resume:
        held = ", ".join(saved + ([f"{CHECKPOINTS}/"] if resumable else []))
        raise FileExistsError(f"{out} already holds a training run ({held}); pass --resume to continue it, "
                              "--overwrite to replace it, or choose another --out")
    if not resumable:
        raise FileExistsError(f"{out} holds a saved model ({', '.join(saved)}) but no checkpoint to resume "
                              f"from; pass --overwrite to train afresh over it, or choose another --out")


def _remove_outputs(out):
    """Remove the files a previous run wrote (and only those) before a run replaces it."""
    for name in OUTPUTS:
        path = out / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    for _, path in checkpoints(out / CHECKPOINTS):
        path.unlink()
        path.with_suffix(".npz").unlink()


def claim(out, resume=False, overwrite=False):
    """Check the run folder ``out`` and lock it for one training (see the module docstring);
    returns the held ``FolderLock``. Errors are OSErrors naming the folder and the way out."""
    out = Path(out)
    _check_path(out)
    try:
        lock = FolderLock(out)
    except PermissionError as exc:
        raise PermissionError(f"cannot write into {out} ({exc.strerror or exc}); choose another --out") from None
    try:
        _check_contents(out, resume, overwrite)
        for folder in (out, out / CHECKPOINTS):
            if folder.is_dir():
                check_writable(folder)
        if overwrite:
            _remove_outputs(out)
    except BaseException:
        lock.close()
        raise
    return lock
