"""The image reader of `fastconv predict` and `fastconv serve` (``fastconv.io.inputs.read_image``) on
hostile files: a size checked from the header before decoding, one limit for both commands, a bounded
read from a pipe, every decoder failure one line naming the file (with a seeded fuzz of PNG and JPEG
files), and file names that cannot forge a line of predict's output.

The command-line cases run the real command in a subprocess (what a user sees: the exit status and
the bytes on stderr), on the tiny model of tests/apps/test_cli_errors.py.
"""

import io
import re
import struct
import subprocess
import threading
import zlib

import numpy as np
import pytest

from fastconv.__main__ import main
from fastconv.apps import serve_model
from fastconv.io.child import python_code, python_module
from fastconv.io.inputs import MAX_IMAGE_BYTES, display_name, image_pixel_limit, read_image

from test_cli_errors import _run, env  # noqa: F401  (env is a fixture)

Image = pytest.importorskip("PIL.Image", reason="the image reader needs Pillow")

SHAPE = (1, 28, 28)


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of(rows, width, height, colour_type=0, depth=8, idat_chunks=1, between=b""):
    """A PNG of ``height`` rows (each the bytes of one row, filter byte included) whose compressed data
    is cut into ``idat_chunks`` IDAT chunks, with the bytes ``between`` after the first one."""
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for row in rows) + packer.flush()
    step = -(-len(data) // idat_chunks)
    parts = [_chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step)]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
        + parts[0]
        + between
        + b"".join(parts[1:])
        + _chunk(b"IEND", b"")
    )


def grey_png(seed=0, idat_chunks=4, between=b""):
    a = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    return png_of([b"\0" + row.tobytes() for row in a], 28, 28, idat_chunks=idat_chunks, between=between)


class Named(io.BytesIO):
    """Bytes as a file, named as a file on disk would be."""

    def __init__(self, data, name):
        super().__init__(data)
        self.name_ = name

    def __str__(self):
        return self.name_


# ============================================================================ the size, from the header
def test_the_pixel_limit():
    assert image_pixel_limit((1, 28, 28)) == image_pixel_limit((3, 32, 32)) == 2048 * 2048
    assert image_pixel_limit((3, 50, 50)) == 4096 * 50 * 50
    assert image_pixel_limit((3, 224, 224)) == 4096 * 4096


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    """A 164 KB PNG of 13000x13000 zeros (169 M pixels, once decoded at hundreds of MB): refused
    naming the file and its size, and the process reading it stays small (its peak resident size
    is measured in a child process: < 100 MB above the interpreter with numpy and Pillow loaded)."""
    row = b"\0" * 13001
    path = tmp_path / "huge.png"
    path.write_bytes(png_of((row for _ in range(13000)), 13000, 13000))
    assert path.stat().st_size < 200_000
    code = (
        "import resource, sys\nfrom fastconv.io.inputs import read_image\nimport PIL.Image\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_image(sys.argv[1], (1, 28, 28))\nexcept ValueError as exc:\n    print(exc)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    proc = subprocess.run(python_code(code, path), capture_output=True, text=True, timeout=120)
    message, grown_mib = proc.stdout.strip().splitlines()
    assert message == (
        f"{path}: the image is 13000x13000 pixels, more than the 4194304 pixels an image may "
        "have for this model's 28x28 input; scale it down first"
    ), proc.stderr
    assert int(grown_mib) < 100


def test_one_limit_for_predict_and_serve(tmp_path, env):  # noqa: F811
    """The same 2100x2100 PNG (just over the limit of a 28x28 model) is refused by both, for the same
    reason; a 2048x2048 one is resized by predict (and refused by serve for its size only)."""
    service = serve_model.ModelService(env["model"])
    for side, refused in ((2100, True), (2048, False)):
        path = tmp_path / f"side{side}.png"
        path.write_bytes(png_of((b"\0" * (side + 1) for _ in range(side)), side, side))
        reason = f"the image is {side}x{side} pixels, more than the 4194304 pixels"
        with pytest.raises(serve_model.BadImage) as served:
            service.predict(path.read_bytes())
        assert (reason in str(served.value)) == refused, served.value
        if refused:
            with pytest.raises(ValueError, match=re.escape(f"{path}: {reason}")):
                read_image(str(path), SHAPE)
        else:
            assert read_image(str(path), SHAPE)[0].shape == (1, *SHAPE)


# ============================================================================ a bounded read
def test_a_pipe_is_read_up_to_the_bound_then_refused(env):  # noqa: F811
    """`fastconv predict --model M /dev/stdin` with an endless stream of zeros on stdin: one error line,
    after reading at most the bound (MAX_IMAGE_BYTES) and a pipe's buffer; the test's writer stops
    at 4 times the bound (which it reaches only if the whole stream is read)."""
    cmd = python_module("fastconv", "predict", "--model", env["model"], "/dev/stdin")
    proc = subprocess.Popen(cmd, env=env["env"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    written, chunk, cap = [0], b"\0" * (1 << 20), 4 * MAX_IMAGE_BYTES

    def feed():
        try:
            while written[0] < cap:
                proc.stdin.write(chunk)
                written[0] += len(chunk)
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        err = proc.stderr.read()  # until the child exits (the writer stops at its cap, then closes stdin)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()  # our own child, by its handle
    writer.join(10)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, err
    assert lines[0] == (
        f"fastconv predict: error: /dev/stdin: more than the limit of {MAX_IMAGE_BYTES} bytes for "
        "an image (a pipe or a device that does not end?)"
    )
    assert written[0] < MAX_IMAGE_BYTES + (8 << 20)


def test_a_file_over_the_bound_is_refused_unread(tmp_path):
    path = tmp_path / "big.png"
    with open(path, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ValueError, match=f"big.png: {MAX_IMAGE_BYTES + 1} bytes, more than the limit"):
        read_image(str(path), SHAPE)


# ============================================================================ decoder failures
def test_a_junk_chunk_between_idat_chunks(tmp_path, env):  # noqa: F811
    """Pillow raises SyntaxError for it while decoding: predict says so in one line naming the file and
    classifies the other files; serve answers 400."""
    bad = grey_png(between=_chunk(b"\x00\x01\x02\x03", b"junk"))
    with pytest.raises(ValueError, match=r"^bad\.png: not a readable image \(SyntaxError: broken PNG file"):
        read_image(Named(bad, "bad.png"), SHAPE)
    with pytest.raises(serve_model.BadImage, match="the uploaded image: not a readable image"):
        serve_model.ModelService(env["model"]).predict(bad)
    good = tmp_path / "good.png"
    good.write_bytes(grey_png())
    (tmp_path / "bad.png").write_bytes(bad)
    proc = _run(env, "predict", "--model", str(env["model"]), str(good), str(tmp_path / "bad.png"), str(good))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        f"fastconv predict: error: {tmp_path / 'bad.png'}: not a readable image (SyntaxError: broken PNG file "
        "(chunk b'\\x00\\x01\\x02\\x03'))",
        "fastconv predict: 1 of 3 inputs failed",
    ]
    assert [line.split(": ")[0] for line in proc.stdout.splitlines()] == [str(good), str(good)]


def _mutants(data, rng, count):
    """``count`` seeded variants of ``data``: 1 to 4 bytes set at random, or cut at a random point."""
    for _ in range(count):
        raw = bytearray(data)
        if rng.random() < 0.1:
            yield bytes(raw[: rng.integers(1, len(raw))])
            continue
        for at in rng.integers(0, len(raw), rng.integers(1, 5)):
            raw[at] = rng.integers(0, 256)
        yield bytes(raw)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_fuzzed_images_give_an_image_or_one_line(fmt):
    """1,500 seeded mutants of a 28x28 PNG (its data in 4 IDAT chunks) or JPEG: each gives a batch of the
    model's shape or one ValueError line naming the file, from predict's reader and from serve's decoder
    (a BadImage, so a 400); never another exception."""
    rng = np.random.default_rng(25)
    if fmt == "png":
        data = grey_png(seed=1)
    else:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(
            buf, format="JPEG", quality=90
        )
        data = buf.getvalue()
    refused = 0
    for i, body in enumerate(_mutants(data, rng, 1500)):
        name = f"mutant{i}.{fmt}"
        try:
            batch, _ = read_image(Named(body, name), (3, 28, 28))
        except ValueError as exc:
            message = str(exc)
            assert message.startswith(f"{name}: ") and "\n" not in message, message
            refused += 1
        else:
            assert batch.shape == (1, 3, 28, 28) and batch.dtype == np.uint8
        try:
            serve_model.decode(body, (3, 28, 28))
        except serve_model.BadImage as exc:
            assert "\n" not in str(exc)
    assert 50 < refused < 1500  # the mutants are neither all readable nor all broken


# ============================================================================ names
FORGED = "x.png: Trouser (1.000)\nforged.png"


def test_file_names_are_escaped_in_predicts_output(tmp_path, env, capsys):  # noqa: F811
    """A name holding a newline is printed quoted, with escapes: it cannot forge a result line, on
    stdout or in an error line on stderr."""
    good, bad = tmp_path / FORGED, tmp_path / (FORGED + ".broken")
    good.write_bytes(grey_png())
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["predict", "--model", str(env["model"]), str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith(repr(str(good)) + ": "), out
    assert err.count("\n") == 2 and err.startswith(f"fastconv predict: error: {repr(str(bad))}: "), err


@pytest.mark.parametrize(
    "name, shown",
    [
        ("plain name.png", "plain name.png"),
        ("a\nb.png", "'a\\nb.png'"),
        ("tab\there.png", "'tab\\there.png'"),
        ("back\\slash.png", "'back\\\\slash.png'"),
        ("'quoted'.png", "\"'quoted'.png\""),
        (b"\xff.png", "'\\udcff.png'"),
    ],
)
def test_display_name(name, shown):
    assert display_name(name) == shown
