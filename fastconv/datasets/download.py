"""Downloads, each verified against its SHA-256 before it is moved into place."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from ..io.files import MAX_DATA_FILE_BYTES, atomic_write, sha256_of

__all__ = ["download_file", "fetch_files"]

#: The opener used for downloads (``urllib.request.urlopen``); tests replace it.
_urlopen = urllib.request.urlopen


def download_file(url, dest, sha256, opener=None, timeout=30, max_bytes=MAX_DATA_FILE_BYTES):
    """Download ``url`` to ``dest``, moving it into place only if its SHA-256 matches.

    ``opener(url, timeout=...)`` returns a file-like response (default
    ``urllib.request.urlopen``, which also reads ``file://`` URLs). The data
    go to a temporary file next to ``dest`` (``io.files.atomic_write``); a digest
    mismatch, or more than ``max_bytes``, removes it and raises ValueError.
    """
    opener = _urlopen if opener is None else opener
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(out):
        h = hashlib.sha256()
        size = 0
        with opener(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                size += len(block)
                if size > max_bytes:
                    raise ValueError(f"{url}: larger than {max_bytes} bytes")
                h.update(block)
                out.write(block)
        digest = h.hexdigest()
        if digest != sha256:
            raise ValueError(f"{url}: SHA-256 mismatch (expected {sha256}, got {digest})")

    return atomic_write(dest, write)


def fetch_files(files, mirrors, dest_dir, opener=None):
    """Download each of ``files`` ({file name: SHA-256}) into ``dest_dir`` from the first
    of ``mirrors`` (URL prefixes) that serves it with that digest. A file already there
    with the right digest is kept; OSError listing each mirror's failure when none served it."""
    for filename, digest in files.items():
        dest = Path(dest_dir) / filename
        if dest.is_file() and sha256_of(dest) == digest:
            continue
        errors = []
        for mirror in mirrors:
            try:
                download_file(mirror + filename, dest, digest, opener=opener)
                break
            except (OSError, ValueError, urllib.error.URLError) as exc:
                errors.append(f"{mirror + filename}: {getattr(exc, 'reason', exc)}")
        else:
            raise OSError("; ".join(errors))
