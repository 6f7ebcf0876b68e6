"""Files: atomic writes, JSON, SHA-256, and .npz arrays checked against a manifest.

Every file fastconv writes (models, checkpoints, history, plots, benchmark results)
goes through ``atomic_write``; every .npz it reads goes through ``load_arrays``
(``allow_pickle=False``, names, shapes, dtypes and digest checked).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np

#: Largest JSON file read (model descriptions, checkpoints, histories). A checkpoint's JSON grows
#: by a few numbers per epoch, not per iteration (its loss history is an array of its .npz);
#: history.json holds the loss of every iteration (about 25 bytes each), read back only for
#: its data set name.
MAX_JSON_BYTES = 64 << 20

#: Deepest nesting of JSON arrays and objects read: fastconv's own files nest at most 6 levels
#: (a checkpoint's model, its preprocessing, a mean image's (C, H, W) lists).
MAX_JSON_DEPTH = 32

#: Most JSON arrays and objects in one file: fastconv's own hold a few per layer, array and image
#: row; each costs Python about 60 bytes, so 64 MiB of "[]," would take 1.4 GB. Any '[' or '{'
#: counts, also one inside a string.
MAX_JSON_CONTAINERS = 1 << 20

#: Largest data file (IDX file, CIFAR-10 batch or archive, download) read or fetched:
#: no file of the supported data sets comes close, and a bad header cannot make us allocate more.
MAX_DATA_FILE_BYTES = 1 << 30


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_TEMPORARY_RE = re.compile(r"\.(?P<target>.+)\.tmp(?P<pid>\d+)(?:\.[0-9a-f]{8})?")
# O_EXCL refuses any existing name, a symlink included: nothing planted at the name is followed
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _temporary_name(path):
    """A fresh candidate name for a temporary file of ``path``: ``.NAME.tmp<pid>.<8 hex digits>``
    beside it (the pid lets a cleaner tell a dead writer's leftovers, see ``temporary_of``)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}.{os.urandom(4).hex()}")


def temporary_of(name):
    """(target file name, writer pid) when ``name`` is one of ``atomic_write``'s temporary
    file names, else None."""
    m = _TEMPORARY_RE.fullmatch(name)
    return (m["target"], int(m["pid"])) if m else None


def _create_temporary(path):
    """(name, open binary file) of a new, empty temporary file beside ``path``, created
    exclusively under a name nobody else holds. Like ``tempfile.mkstemp`` (O_EXCL, a random
    name, no link followed), but with the mode ``open`` gives a new file (0o666 less the
    umask) instead of mkstemp's 0o600, so a saved model stays as readable as before."""
    for _ in range(100):
        tmp = _temporary_name(path)
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:  # pragma: no cover - already gone, or the folder went read-only
        pass


# Folders this process holds (a run folder under its lock): {token: (folder, check)}. Every write
# into one, or below it, first calls its check, which raises if the path no longer leads there.
_GUARDS: dict = {}


def guard_folder(folder, check):
    """Register ``check()`` (raises OSError when the absolute, resolved path ``folder`` no longer
    leads to the folder this process holds) to run before every ``atomic_write``, ``atomic_link``
    and ``remove_file`` into ``folder`` or below it; returns a token for ``unguard_folder``."""
    token = object()
    _GUARDS[token] = (Path(folder), check)
    return token


def unguard_folder(token):
    _GUARDS.pop(token, None)


def check_guards(directory):
    """Run the check of every held folder that is ``directory`` or holds it (see ``guard_folder``)."""
    directory = Path(os.path.abspath(directory))
    for folder, check in list(_GUARDS.values()):
        if directory == folder or folder in directory.parents:
            check()


def remove_file(path):
    """Remove the file ``path`` (gone already is fine), after the held folders' checks."""
    path = Path(path)
    check_guards(path.parent)
    try:
        os.unlink(path)
    except FileNotFoundError:  # concurrent cleanup
        pass


def atomic_write(path, write):
    """Write a file atomically: ``write(f)`` fills a new temporary file in the same
    folder (created exclusively, see ``_create_temporary``), which is flushed,
    fsynced and renamed over ``path``; then the folder is fsynced. A crash leaves
    either the old file or the new one, never a torn one; a symlink at ``path`` is
    replaced, not followed. Into a held folder (``guard_folder``), nothing is created
    or renamed unless its check passes, just before each."""
    path = Path(path)
    check_guards(path.parent)
    tmp, f = _create_temporary(path)
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove_quietly(tmp)
        raise
    return _rename_into(tmp, path)


def _rename_into(tmp, path):
    """Rename the complete temporary file ``tmp`` over ``path`` once the held folders' checks
    pass (``tmp`` is removed if anything fails), then fsync the folder: how every file of
    ``atomic_write`` and ``atomic_link`` lands."""
    try:
        check_guards(path.parent)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_link(source, path):
    """Atomically make ``path`` (in ``source``'s folder) another name of the complete file
    ``source``: a hard link under a fresh temporary name, renamed over ``path`` (a copy through
    ``atomic_write`` where the file system has no hard links). Cheap for large files, and the
    file's bytes are never rewritten."""
    source, path = Path(source), Path(path)
    check_guards(path.parent)
    if path.exists() and not path.is_symlink() and os.path.samefile(source, path):
        return path  # linked already (a rename between two names of one file would do nothing)
    for _ in range(100):
        tmp = _temporary_name(path)
        try:
            os.link(source, tmp, follow_symlinks=False)
            break
        except FileExistsError:
            continue
        except OSError:  # no hard links here (EPERM, ENOTSUP, EMLINK...): copy
            with open(source, "rb") as src:
                return atomic_write(path, lambda f: _copy(src, f))
    else:
        raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}")
    return _rename_into(tmp, path)


def _copy(src, dst):
    for block in iter(lambda: src.read(1 << 20), b""):
        dst.write(block)


def writer_is_dead(pid):
    """True when no process ``pid`` runs (POSIX only: elsewhere nothing is known dead)."""
    if os.name != "posix" or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it runs under another user
        return False
    return False


def remove_dead_temporaries(directory, targets):
    """Remove the temporary files of ``atomic_write`` in ``directory`` whose target file name
    fully matches the regular expression ``targets`` and whose writer no longer runs (a crash
    left them; POSIX only). Returns the names removed."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        temporary = temporary_of(p.name)
        if (
            temporary
            and re.fullmatch(targets, temporary[0])
            and (p.is_symlink() or p.is_file())
            and writer_is_dead(temporary[1])
        ):
            remove_file(p)
            removed.append(p.name)
    return removed


def check_writable(directory):
    """OSError naming ``directory`` unless a file can be created in it (tried, not
    guessed from its mode bits: root writes into a 0o555 folder, a read-only mount
    refuses everyone)."""
    directory = Path(directory)
    try:
        tmp, f = _create_temporary(directory / ".write-check")
    except OSError as exc:
        raise type(exc)(f"cannot write into {directory} ({exc.strerror or exc})") from None
    f.close()
    _remove_quietly(tmp)


def write_json(path, obj):
    """Atomically write ``obj`` as JSON (no NaN: it is not JSON)."""
    text = json.dumps(obj, indent=1, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text.encode("utf-8") + b"\n"))


def read_json(path, what="file"):
    """Read a JSON object, with errors that name the file.

    Bounded: at most ``MAX_JSON_BYTES`` bytes and ``MAX_JSON_CONTAINERS`` '[' and '{' (checked
    before parsing), and ``MAX_JSON_DEPTH`` levels of nested arrays and objects (the parser's
    recursion guard stops a deeper file early, a check of the parsed value does the rest), so
    a hostile file can exhaust neither the stack nor memory beyond ten times its size.
    Numbers are finite: a NaN or Infinity (which Python's json reads, though JSON has neither)
    or a number too large for a float is refused, naming where it is (``bad history['loss'][3]``)."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        # + 1: a file that grew past the limit since the fstat shows it
        data = f.read(size + 1) if size <= MAX_JSON_BYTES else None
    if data is None or len(data) > MAX_JSON_BYTES:
        raise ValueError(f"{path}: larger than {MAX_JSON_BYTES} bytes, too large for a fastconv {what}")
    containers = data.count(b"[") + data.count(b"{")  # at most: some may sit in strings
    if containers > MAX_JSON_CONTAINERS:
        raise ValueError(f"{path}: more than {MAX_JSON_CONTAINERS:,} JSON arrays and objects, not a fastconv {what}")
    deep = f"{path}: nested deeper than {MAX_JSON_DEPTH} levels, not a fastconv {what}"
    try:
        obj = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(deep) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid JSON {what} ({exc})") from None
    if containers > MAX_JSON_DEPTH and _nested_deeper_than(obj, MAX_JSON_DEPTH):
        raise ValueError(deep)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a fastconv {what} must hold a JSON object")
    found = _first_non_finite(obj) if _may_hold_non_finite(data) else None
    if found:
        where, value = found
        raise ValueError(f"{path}: bad {where} ({value}: a fastconv {what} holds finite numbers only)")
    return obj


def _nested_deeper_than(value, limit):
    """True if the parsed JSON ``value`` nests arrays and objects more than ``limit`` levels deep
    (level by level, without recursion: one list of the containers of a level at a time)."""
    level, depth = [value] if isinstance(value, (dict, list)) else [], 1
    while level:
        if depth > limit:
            return True
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list))]
        depth += 1
    return False


def _first_non_finite(value, where=""):
    """(where, number) of the first NaN or infinite float in the parsed JSON ``value`` (a dict or
    a list, nested at most MAX_JSON_DEPTH deep), ``where`` like ``history['loss'][3]``; or None."""
    for key, v in value.items() if isinstance(value, dict) else enumerate(value):
        if isinstance(v, float):
            if not math.isfinite(v):
                return (f"{where}[{key!r}]" if where else str(key)), v
        elif isinstance(v, (dict, list)):
            found = _first_non_finite(v, f"{where}[{key!r}]" if where else str(key))
            if found:
                return found
    return None


# JSON text -> its number skeleton: digits '0', e and E 'e', '+' itself, everything else ' '.
_NUMBER_SKELETON = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x65 if b in b"eE" else 0x2B if b == 0x2B else 0x20 for b in range(256)
)


def _may_hold_non_finite(data):
    """False if the JSON text ``data`` cannot hold a non-finite number: no NaN or Infinity, and no
    float literal that could overflow to inf (one with an exponent of 3 digits or more, or 210
    digits before its point; 200 digits in a row are enough here). Only a file that may is
    searched number by number."""
    if b"NaN" in data or b"Infinity" in data:
        return True
    skeleton = data.translate(_NUMBER_SKELETON)
    return b"e000" in skeleton or b"e+000" in skeleton or b"0" * 200 in skeleton


def save_arrays(path, arrays):
    """Atomically write ``arrays`` (name -> ndarray) as an uncompressed .npz;
    returns the SHA-256 of the written file."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return sha256_of(path)


def sha256_of(path):
    with open(path, "rb") as f:
        return _sha256_of_file(f)


def _sha256_of_file(f):
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def sha256_of_arrays(arrays):
    """The SHA-256 of a sequence of arrays (None entries allowed): each one's dtype,
    shape and bytes in C order, so equal digests mean equal arrays."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"None;")
            continue
        a = np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        a = a.reshape(1, -1) if a.ndim < 2 else a
        rows = max(1, (16 << 20) // max(1, a.itemsize * int(np.prod(a.shape[1:]))))
        for i in range(0, len(a), rows):  # a non-contiguous array is copied a chunk at a time, not whole
            h.update(np.ascontiguousarray(a[i : i + rows]))
    return h.hexdigest()


def array_manifest(arrays):
    """{name: {"shape": [...], "dtype": "float32"}}, stored in the JSON beside an .npz."""
    return {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in arrays.items()}


def load_arrays_beside(json_path, record, manifest):
    """The arrays of the .npz that the JSON file ``json_path`` describes.

    ``record`` (the JSON's object) names the .npz in ``record["npz"]``, a plain file
    name looked up beside ``json_path``, and holds its hex SHA-256 in
    ``record["npz_sha256"]``; the arrays are then checked against ``manifest`` by
    ``load_arrays``. Bad fields are ValueErrors naming ``json_path``; a missing .npz
    is a FileNotFoundError naming both files.
    """
    json_path = Path(json_path)
    name = record.get("npz")
    if not isinstance(name, str) or name in ("", "..") or Path(name).name != name:
        raise ValueError(f"{json_path}: 'npz' must name the .npz file beside it (a plain file name), got {name!r}")
    digest = record.get("npz_sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{json_path}: 'npz_sha256' must be the hex SHA-256 of {name}")
    npz_path = json_path.parent / name
    if not npz_path.exists():
        raise FileNotFoundError(f"{npz_path}: missing (it holds the arrays described by {json_path})")
    return load_arrays(npz_path, manifest, digest)


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def npy_header(f, what):
    """(shape, fortran_order, dtype) from the .npy header at the start of the file ``f``,
    read without loading the array; ValueErrors name ``what``."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as exc:
        raise ValueError(f"{what}: not a readable .npy array ({exc})") from None
    if version not in _NPY_HEADER_READERS:
        raise ValueError(
            f"{what}: .npy format version {version[0]}.{version[1]} is not read here "
            "(1.0 and 2.0 are; numpy writes 3.0 only for structured dtypes)"
        )
    try:
        shape, fortran_order, dtype = _NPY_HEADER_READERS[version](f)
    except ValueError as exc:
        raise ValueError(f"{what}: not a readable .npy array ({exc})") from None
    return tuple(shape), fortran_order, dtype


#: Bytes a member of an .npz may hold beyond its array's data: the .npy header (numpy pads it
#: to a multiple of 64 bytes, about 128 for fastconv's arrays) and the zip records around it.
MAX_NPZ_MEMBER_OVERHEAD = 1 << 16

#: Largest ratio of inflated to stored bytes of an .npz's members, all together (beyond
#: ``_NPZ_INFLATION_SLACK``): fastconv writes its arrays uncompressed (a ratio of 1);
#: ``np.savez_compressed`` of trained float parameters gives about 1.1. Deflate reaches 1032
#: on zeros: a 1 MB file would inflate to 1 GB.
MAX_NPZ_INFLATION = 8
_NPZ_INFLATION_SLACK = 1 << 20  # a small file's zero biases may compress as they like

_MANIFEST_DTYPES = {
    np.dtype(t).name: np.dtype(t)
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
}


def _manifest_dtype(name, dtype, text):
    """The numpy dtype of a manifest's dtype name, or None when it is not accepted for ``name``."""
    if not isinstance(dtype, str):
        return None
    if name in text:
        # a unicode dtype's name is "str<bits>", 32 bits a character, which np.dtype does not parse
        chars = re.fullmatch(r"str([1-9][0-9]{0,5})", dtype)
        if chars and int(chars[1]) % 32 == 0:
            return np.dtype(f"U{int(chars[1]) // 32}")
    return _MANIFEST_DTYPES.get(dtype)


def _manifest_sizes(path, manifest, text=()):
    """{name: bytes of its array} from ``manifest`` (each entry's shape and dtype checked)."""
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: the array manifest must be a JSON object")
    sizes = {}
    for name, spec in manifest.items():
        if not isinstance(spec, dict) or "shape" not in spec or "dtype" not in spec:
            raise ValueError(f"{path}: manifest entry for {name!r} needs 'shape' and 'dtype'")
        shape, dtype = spec["shape"], _manifest_dtype(name, spec["dtype"], text)
        if (
            dtype is None
            or not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise ValueError(
                f"{path}: manifest entry for {name!r} must give a shape (a list of sizes) and a "
                f"bool, integer or float dtype, got {spec['shape']!r} and {spec['dtype']!r}"
            )
        sizes[name] = math.prod(shape) * dtype.itemsize
    return sizes


def _open_regular(path, what, limit):
    """``path`` opened for reading in binary once it is known to be a regular file of at most
    ``limit`` bytes: a FIFO, a device or a folder is refused before any byte is read (opening a
    FIFO does not wait for a writer)."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        )
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise ValueError(f"{path}: not a regular file (a folder, device, FIFO or socket), not a fastconv {what}")
    if st.st_size > limit:
        f.close()
        raise ValueError(f"{path}: {st.st_size:,} bytes, more than the {limit:,} its array manifest allows")
    return f


def load_arrays(path, manifest, sha256=None, text=()):
    """Load an .npz with ``allow_pickle=False`` and check it against ``manifest``.

    The file must be a regular file no larger than the manifest's arrays allow (checked
    before it is hashed or read), hash to ``sha256`` when given, and hold exactly the
    manifest's names, each with its shape and dtype (only bool, integer and float dtypes
    are accepted, and unicode strings for the names in ``text``). Before any member is
    inflated, each member's size in the zip directory must fit its manifest entry and all of
    them together may inflate at most ``MAX_NPZ_INFLATION`` times their stored size; each
    member's header is checked before the member is read, so a header claiming a huge array
    costs nothing. Errors are ValueErrors naming the file.
    """
    path = Path(path)
    sizes = _manifest_sizes(path, manifest, text)
    limit = sum(sizes.values()) + (len(sizes) + 1) * MAX_NPZ_MEMBER_OVERHEAD + 2 * sum(map(len, sizes))
    with _open_regular(path, ".npz", limit) as f:
        if sha256 is not None:
            digest = _sha256_of_file(f)
            if digest != sha256:
                raise ValueError(
                    f"{path}: SHA-256 {digest} does not match the {sha256} recorded beside it "
                    "(the file is corrupt or belongs to another save)"
                )
            f.seek(0)
        return _load_npz(path, f, manifest, sizes, text)


def _load_npz(path, f, manifest, sizes, text):
    """The arrays of the open .npz ``f`` (see ``load_arrays``)."""
    try:
        with np.load(f, allow_pickle=False) as npz:
            names = set(npz.files)
            expected = set(manifest)
            if names != expected:
                missing, extra = sorted(expected - names), sorted(names - expected)
                raise ValueError(
                    f"{path}: arrays do not match the manifest"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; unexpected {extra}" if extra else "")
                )
            infos = {name: npz.zip.getinfo(f"{name}.npy") for name in names}
            for name, info in infos.items():
                if info.file_size > sizes[name] + MAX_NPZ_MEMBER_OVERHEAD:
                    raise ValueError(
                        f"{path}: array {name!r} inflates to {info.file_size:,} bytes, more than "
                        f"its manifest entry allows ({sizes[name]:,} bytes and a header)"
                    )
            inflated, stored = (sum(i.file_size for i in infos.values()), sum(i.compress_size for i in infos.values()))
            if inflated > MAX_NPZ_INFLATION * stored + _NPZ_INFLATION_SLACK:
                raise ValueError(
                    f"{path}: its arrays inflate from {stored:,} to {inflated:,} bytes, more than "
                    f"{MAX_NPZ_INFLATION} times (fastconv writes them uncompressed)"
                )
            out = {}
            for name in sorted(names):
                spec = manifest[name]
                with npz.zip.open(f"{name}.npy") as member:
                    shape, _, dtype = npy_header(member, f"{path}: array {name!r}")
                    header_bytes = member.tell()
                if list(shape) != list(spec["shape"]) or dtype.name != spec["dtype"]:
                    raise ValueError(
                        f"{path}: array {name!r} is {dtype.name} {shape}, "
                        f"expected {spec['dtype']} {tuple(spec['shape'])}"
                    )
                if infos[name].file_size != header_bytes + sizes[name]:
                    raise ValueError(
                        f"{path}: array {name!r} holds {infos[name].file_size - header_bytes:,} "
                        f"bytes of data, its shape and dtype say {sizes[name]:,}"
                    )
                a = npz[name]
                if a.dtype.kind not in ("biufU" if name in text else "biuf"):
                    raise ValueError(f"{path}: array {name!r} has unsupported dtype {a.dtype}")
                if list(a.shape) != list(spec["shape"]) or a.dtype.name != spec["dtype"]:
                    raise ValueError(
                        f"{path}: array {name!r} is {a.dtype.name} {tuple(a.shape)}, "
                        f"expected {spec['dtype']} {tuple(spec['shape'])}"
                    )
                out[name] = a
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(str(path)) else f"{path}: not a valid .npz file ({msg})") from None
    except Exception as exc:  # noqa: BLE001  (zipfile.BadZipFile and friends)
        raise ValueError(f"{path}: not a valid .npz file ({type(exc).__name__}: {exc})") from None
    return out
