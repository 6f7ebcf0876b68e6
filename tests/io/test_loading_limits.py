"""Files fastconv reads from elsewhere: sizes checked before anything is allocated, bounded JSON,
finite model state, inputs read as what they are; and what ``fastconv config`` says of a bad
FASTCONV_KERNELS.

Each hostile file is small; the tests check that it is refused with a ValueError (or one
error line from the command) naming the file and what is wrong, and, where the bug was a
resource bomb, that the refusal costs almost no memory (``tracemalloc`` sees numpy's
allocations and Python's).
"""

import gzip
import json
import os
import re
import struct
import subprocess
import tracemalloc

import numpy as np
import pytest

from fastconv import datasets as D
from fastconv import models as M
from fastconv.__main__ import main
from fastconv.io import files
from fastconv.io.child import python_module
from fastconv.solver import Solver, load_checkpoint_model
from fastconv.training.preprocessing import Preprocessing

from test_datasets import write_idx_set

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _no_malloc_tuning(monkeypatch):
    """The commands tune glibc's malloc for their own process; not for the shared pytest process."""
    monkeypatch.setenv("FASTCONV_MALLOC_TUNING", "0")


def _peak_bytes(fn):
    """(what fn() returned or raised, the peak bytes traced while it ran)."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(fn, match, max_peak=4 * MiB):
    """fn() raises a ValueError matching ``match`` and allocates at most ``max_peak`` bytes meanwhile."""
    result, peak = _peak_bytes(fn)
    if not isinstance(result, ValueError):
        raise AssertionError(f"expected a ValueError matching {match!r}, got {result!r}")
    assert re.search(match, str(result)), str(result)
    assert peak <= max_peak, f"{peak / MiB:.1f} MiB allocated before the refusal: {result}"
    return str(result)


def _rewrite(path, change):
    spec = json.loads(path.read_text())
    change(spec)
    path.write_text(json.dumps(spec))


def _save_arrays_with_digest(json_path, arrays):
    """Replace the .npz beside ``json_path`` by ``arrays`` and record its digest: a consistent file."""
    npz = json_path.parent / json.loads(json_path.read_text())["npz"]
    with open(npz, "wb") as f:
        np.savez(f, **arrays)
    _rewrite(json_path, lambda s: s.update(npz_sha256=files.sha256_of(npz)))


NET = "conv2x3-relu-maxpool2-fc4-relu-fc"


@pytest.fixture
def saved(tmp_path):
    """A small saved model (with preprocessing) and the path of its model.json."""
    model = M.Sequential(NET, input_shape=(1, 28, 28), num_classes=3, seed=0)
    model.preprocess = Preprocessing.fit(np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8))
    model.class_names = ("a", "b", "c")
    model.save(tmp_path / "model")
    return tmp_path / "model" / "model.json"


# ================================================ a model's size is checked before it is allocated
def _layers(i, **change):
    return lambda s: s["config"]["layers"][i].update(change)


@pytest.mark.parametrize(
    "change, match",
    [
        (_layers(3, units=10**7), r"layer 3 \(fc10000000\).*parameters, more than the limit"),
        (_layers(3, units=300000), "array manifest does not match"),  # within the limits: 235M parameters
        (_layers(0, filters=2**31), r"layer 0 \(conv2147483648x3\).*more than the limit"),
        (_layers(0, pad=2**40), r"layer 0 \(conv\) pad must be <= 2\*\*31 - 1"),
        (
            lambda s: s["config"].update(input_shape=[1, 100000, 100000]),
            r"input_shape \(1, 100000, 100000\): takes 40,000,000,000 bytes per image",
        ),
        (lambda s: s["config"].update(input_shape=[1, 1e5, 1e5]), "input_shape must be an int"),
        (lambda s: s["config"].update(layers="conv1000000x3-fc"), r"layer 0 \(conv1000000x3\).*bytes per image"),
        (lambda s: s["config"].update(layers="conv4x3p1073741811-fc"), r"layer 0 \(conv4x3p1073741811\)"),
    ],
    ids=[
        "units-1e7",
        "units-3e5",
        "filters-2**31",
        "pad-2**40",
        "input-1e5",
        "input-float",
        "filters-1e6",
        "int64-wrap",
    ],
)
def test_model_json_sized_before_anything_is_allocated(saved, change, match):
    _rewrite(saved, change)
    message = _refused(lambda: M.load_model(saved), match)
    assert message.startswith(f"{saved}: "), message


@pytest.mark.parametrize(
    "spec, match",
    [
        (
            "conv4x3p1073741811-fc",
            r"layer 0 \(conv4x3p1073741811\) on input \(1, 28, 28\) with output "
            r"\(4, 2147483648, 2147483648\): takes",
        ),
        ("conv4x3p99999999999", r"layer 0 \(conv\) pad must be <= 2\*\*31 - 1, got 99999999999"),
        (
            "fc100000-relu-fc100000-relu",
            r"layer 2 \(fc100000\) on input \(100000,\): brings the model to 10,078,600,000 "
            "parameters",
        ),
        # small outputs, but one image's im2col matrix (512 * 63 * 63, 28 * 28) would take 6 GB
        ("conv512x3-conv1x63p31", r"layer 1 \(conv1x63p31\) on input \(512, 28, 28\) with output \(1, 28, 28\)"),
    ],
    ids=["int64-wrap", "pad", "parameters", "im2col"],
)
def test_layer_string_sized_before_anything_is_allocated(spec, match):
    _refused(lambda: M.build_model(spec, (1, 28, 28), 10), match)
    _refused(lambda: M.build_model(spec, (1, 28, 28), 10, dtype=np.float64), match.split(":")[0])


def test_model_argument_of_the_command_line(tmp_path, monkeypatch, capsys):
    write_idx_set(tmp_path / "data" / "fashion-mnist", np.random.default_rng(0), n_train=20, n_test=5)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(D.registry, "SYSTEM_DIRS", {})
    code = main(
        [
            "train",
            "--no-download",
            "--model",
            "conv4x3p1073741811-fc",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--no-plots",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("fastconv train: error: layer 0 (conv4x3p1073741811) on input (1, 28, 28)"), err
    assert not (tmp_path / "run" / "model.json").exists()


def test_limits_are_inclusive_and_read_at_build_time(monkeypatch):
    model = M.Sequential("fc4-relu", input_shape=(1, 2, 3), num_classes=2, initialize=False)
    assert model.parameter_count == 6 * 4 + 4 + 4 * 2 + 2 == 38
    assert model.activation_bytes == (6 + 4 + 4 + 2) * 4 == 64
    assert model.params == {} and model.buffers == {}
    monkeypatch.setattr(M, "MAX_PARAMETERS", 38)
    monkeypatch.setattr(M, "MAX_ACTIVATION_BYTES", 64)
    M.Sequential("fc4-relu", input_shape=(1, 2, 3), num_classes=2)
    with pytest.raises(ValueError, match=r"layer 2 \(fc\) on input \(4,\): brings the model to 43 parameters"):
        M.Sequential("fc4-relu", input_shape=(1, 2, 3), num_classes=3)
    with pytest.raises(ValueError, match=r"layer 0 \(fc4\) on input \(1, 2, 3\) with output \(4,\): takes 80 bytes"):
        M.Sequential("fc4-relu", input_shape=(1, 2, 3), num_classes=2, dtype=np.float64)


@pytest.mark.parametrize(
    "make",
    [
        lambda: M.ConvNet1(initialize=False),
        lambda: M.FullyConnectedNet(initialize=False),
        lambda: M.build_model(
            "conv32x3-bn-maxpool2-relu-conv64x3-bn-maxpool2-relu-fc256-relu-dropout0.3-fc",
            (1, 28, 28),
            10,
            initialize=False,
        ),
        lambda: M.build_model(
            "conv256x3-bn-relu-conv256x3-bn-relu-maxpool2-fc1024-relu-fc", (3, 32, 32), 10, initialize=False
        ),
        # VGG-16 on ImageNet-sized images: 138M parameters, about 240 MB per image in float32
        lambda: M.build_model(
            "-".join(
                ["conv64x3-relu"] * 2
                + ["maxpool2"]
                + ["conv128x3-relu"] * 2
                + ["maxpool2"]
                + ["conv256x3-relu"] * 3
                + ["maxpool2"]
                + ["conv512x3-relu"] * 3
                + ["maxpool2"]
                + ["conv512x3-relu"] * 3
                + ["maxpool2", "fc4096-relu-fc4096-relu-fc"]
            ),
            (3, 224, 224),
            1000,
            initialize=False,
        ),
    ],
    ids=["convnet1", "fc", "recipe", "cifar-wide", "vgg16"],
)
def test_real_models_fit_the_limits(make):
    model = make()
    assert 0 < model.parameter_count <= M.MAX_PARAMETERS
    assert 0 < model.activation_bytes <= M.MAX_ACTIVATION_BYTES


# ================================================ .npy headers are checked before the data is read
@pytest.fixture
def predict_model(tmp_path):
    """A saved 4x4 model whose class-0 probability follows the image's brightness (0.520 at 128,
    0.540 at 255), with "scale" preprocessing; returns its folder."""
    model = M.Sequential("fc", input_shape=(1, 4, 4), num_classes=2, dtype=np.float64)
    model.params["W1"][:] = 0
    model.params["W1"][:, 0] = 0.01
    model.params["b1"][:] = 0
    model.preprocess = Preprocessing("scale", (1, 4, 4))
    model.class_names = ("bright", "dark")
    return model.save(tmp_path / "predict-model")


def _predict(capsys, model_dir, *paths):
    code = main(["predict", "--model", str(model_dir), *map(str, paths)])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def _npy_header(shape, descr="|u1"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _one_error(result, *expected):
    code, out, err = result
    assert code == 1 and out == [] and len(err) == 1, (code, out, err)
    for text in expected:
        assert text in err[0], (text, err[0])
    return err[0]


def test_npy_header_checked_against_the_file_size(predict_model, tmp_path, capsys):
    huge = tmp_path / "huge.npy"
    huge.write_bytes(_npy_header((100000, 4, 4)) + bytes(48))
    result, peak = _peak_bytes(lambda: _predict(capsys, predict_model, huge))
    _one_error(
        result,
        "huge.npy: its header declares an array uint8 (100000, 4, 4) of 1600000 bytes, but the file holds 48 bytes",
    )
    assert peak < 4 * MiB
    # the file: 129 bytes claiming (100000, 100000, 28), 261 GiB, for a 28x28 model
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(_npy_header((100000, 100000, 28)) + bytes(1))
    from fastconv.io.inputs import read_npy

    _refused(lambda: read_npy(bomb, (1, 100000, 28)), "more than the limit")
    _refused(lambda: read_npy(bomb, (1, 28, 28)), r"array of shape \(100000, 100000, 28\) does not hold images")
    # truncated, or with bytes after the data
    np.save(tmp_path / "ok.npy", np.full((3, 4, 4), 7, np.uint8))
    raw = (tmp_path / "ok.npy").read_bytes()
    for name, data, held in (("cut.npy", raw[:-1], 47), ("long.npy", raw + b"\0", 49)):
        (tmp_path / name).write_bytes(data)
        _one_error(
            _predict(capsys, predict_model, tmp_path / name), f"{name}: its header declares", f"holds {held} bytes"
        )
    # and read_npy reads what np.save wrote: orders, dtypes, the accepted shapes
    images = np.arange(3 * 16, dtype=np.uint8).reshape(3, 1, 4, 4)
    for i, a in enumerate(
        (
            images,
            images[:, 0],
            images[0, 0],
            np.asfortranarray(images[:, 0]),
            images.astype(">u2"),
            images.astype(np.float32),
        )
    ):
        np.save(tmp_path / f"a{i}.npy", a)
        np.testing.assert_array_equal(
            read_npy(tmp_path / f"a{i}.npy", (1, 4, 4)),
            images[: len(a) if a.ndim == 3 else 1] if a.ndim != 4 else images,
        )


def test_npy_without_images_is_refused(predict_model, tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4), np.uint8))
    _one_error(_predict(capsys, predict_model, tmp_path / "empty.npy"), "empty.npy: holds no images (shape (0, 4, 4))")


# =============================================================== JSON is bounded in size and depth
def _deep(n):
    return "[" * n + "]" * n


@pytest.mark.parametrize(
    "text, ok",
    [
        ('{"a": ' + _deep(31) + "}", True),
        ('{"a": ' + _deep(32) + "}", False),
        ('{"s": "[[[[\\"[[[\\\\", "t": ' + _deep(31) + "}", True),  # brackets, quotes, backslashes in strings
        ('{"a": ' + "[" * 100000, False),
        ('{"a": ' + '{"k": ' * 100000, False),
    ],
    ids=["31", "32", "strings", "100000-arrays", "100000-objects"],
)
def test_json_depth_is_bounded(tmp_path, text, ok):
    path = tmp_path / "f.json"
    path.write_text(text)
    if ok:
        assert "a" in files.read_json(path) or "s" in files.read_json(path)
    else:
        message = _refused(lambda: files.read_json(path, "model description"), "nested deeper than 32 levels")
        assert message.startswith(f"{path}: ")


def test_json_size_is_bounded(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(files.MAX_JSON_BYTES + 1)  # sparse: no disk used
    _refused(lambda: files.read_json(path), f"larger than {files.MAX_JSON_BYTES} bytes")
    # within the size, arrays by the million: each an object of about 60 bytes in Python
    path.write_text('{"a": [' + "[]," * files.MAX_JSON_CONTAINERS + "[]]}")
    _refused(
        lambda: files.read_json(path), "more than 1,048,576 JSON arrays and objects", max_peak=path.stat().st_size * 3
    )
    path.write_text('{"a": [' + "[]," * (files.MAX_JSON_CONTAINERS - 3) + "[]]}")
    assert len(files.read_json(path)["a"]) == files.MAX_JSON_CONTAINERS - 2


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1E+400", "1" + "0" * 400 + ".5"])
def test_json_non_finite_numbers_are_refused(tmp_path, value):
    path = tmp_path / "f.json"
    path.write_text('{"lr": 0.1, "history": {"loss": [0.5, ' + value + "]}}")
    with pytest.raises(ValueError, match=re.escape(f"{path}: bad history['loss'][1] (")):
        files.read_json(path)
    path.write_text('{"lr": ' + value + ', "note": "NaN, Infinity, 1e999 in a string", "big": 1e308, "tiny": 1e-999}')
    with pytest.raises(ValueError, match=re.escape(f"{path}: bad lr (")):
        files.read_json(path)
    path.write_text(
        '{"note": "NaN, Infinity, 1e999 in a string", "big": 1e308, "tiny": 1e-999, "n": %s}' % ("1" + "0" * 400)
    )  # an int, however long
    assert files.read_json(path)["big"] == 1e308


def _checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    model = M.Sequential("conv2x3-relu-fc", input_shape=(1, 4, 4), num_classes=2, seed=0)
    model.preprocess = Preprocessing.fit(rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8), mode="mean_image")
    data = {
        "X_train": rng.standard_normal((6, 1, 4, 4)),
        "y_train": rng.integers(0, 2, 6),
        "X_val": rng.standard_normal((2, 1, 4, 4)),
        "y_val": rng.integers(0, 2, 2),
    }
    solver = Solver(model, data, num_epochs=1, batch_size=3, checkpoint_dir=tmp_path / "ckpt", verbose=False, seed=0)
    solver.train()
    return tmp_path / "ckpt" / "checkpoint_epoch0001.json"


def test_fastconvs_own_files_nest_well_within_the_bound(tmp_path):
    path = _checkpoint(tmp_path)  # a model with a mean image inside a checkpoint: the deepest file
    state = json.loads(path.read_text())
    assert not files._nested_deeper_than(state, 6) and files._nested_deeper_than(state, 5)


def test_deep_model_and_checkpoint_json_refused(saved, tmp_path):
    saved.write_text('{"format": ' + "[" * 100000)
    _refused(lambda: M.load_model(saved), f"{saved}: nested deeper")
    path = _checkpoint(tmp_path)
    path.write_text('{"model": ' + '{"a": ' * 100000)
    _refused(lambda: load_checkpoint_model(path), f"{path}: nested deeper")


def test_deep_history_json_gives_one_error_line(saved, capsys):
    (saved.parent / "history.json").write_text("[" * 100000)
    assert main(["evaluate", "--model", str(saved.parent)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastconv evaluate: error: "), err


# ========================================================= 16-bit images are read as what they are
def test_sixteen_bit_images_are_scaled_not_clipped(predict_model, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "grey16.tif")
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(tmp_path / "grey8.png")
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "white.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    code, out, err = _predict(
        capsys, predict_model, *(tmp_path / n for n in ("grey16.png", "grey16.tif", "grey8.png", "white.png"))
    )
    assert code == 0, err
    answers = [line.split(": ", 1)[1] for line in out]
    assert answers[0] == answers[1] == answers[2] == "bright (0.520)", answers
    assert answers[3] == "bright (0.540)"
    from fastconv.io.inputs import read_image

    ramp = np.array([[0, 255, 256, 32767], [32768, 65280, 65535, 1]] * 2, np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    np.testing.assert_array_equal(read_image(tmp_path / "ramp.png", (1, 4, 4))[0][0, 0], ramp >> 8)
    rgb = read_image(tmp_path / "ramp.png", (3, 4, 4))[0]
    assert rgb.shape == (1, 3, 4, 4) and (rgb == (ramp >> 8)).all()


def test_images_without_a_known_range_are_refused(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from fastconv.io.inputs import read_image

    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match="float.tif: not a readable image .*floating-point pixels"):
        read_image(tmp_path / "float.tif", (1, 4, 4))


# ====================================================================== model state must be finite
@pytest.mark.parametrize(
    "key, value", [("params/W1", np.nan), ("params/b2", np.inf), ("buffers/running_var1", -np.inf)]
)
def test_non_finite_arrays_are_refused_naming_them(tmp_path, key, value):
    model = M.Sequential("conv2x3-bn-relu-fc4-fc", input_shape=(1, 4, 4), num_classes=2, seed=0)
    json_path = model.save(tmp_path / "m") / "model.json"
    arrays = {k: v.copy() for k, v in model.state_arrays().items()}
    arrays[key].flat[1 % arrays[key].size] = value
    _save_arrays_with_digest(json_path, arrays)
    with pytest.raises(ValueError, match=f"model.npz: {key} holds non-finite values"):
        M.load_model(json_path)


@pytest.mark.parametrize("std", [1e-320, 0.0, -1.0, float(np.finfo(np.float32).tiny) / 2])
def test_preprocessing_std_must_be_a_normal_positive_number(saved, std):
    _rewrite(saved, lambda s: s["preprocess"].update(std=[std]))
    with pytest.raises(ValueError, match=f"{saved}: invalid preprocessing: preprocessing std must be at least"):
        M.load_model(saved)
    _rewrite(saved, lambda s: s["preprocess"].update(std=[float(np.finfo(np.float32).tiny)], mean=[1e-30]))
    M.load_model(saved)
    _rewrite(saved, lambda s: s["preprocess"].update(std=[float(np.finfo(np.float32).tiny)], mean=[100.0]))
    with pytest.raises(ValueError, match="mean / std must be finite in float32"):
        M.load_model(saved)


def test_checkpoint_model_with_nan_is_refused(tmp_path):
    path = _checkpoint(tmp_path)
    with np.load(path.with_suffix(".npz")) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    arrays["params/W2"][0, 0] = np.nan
    _save_arrays_with_digest(path, arrays)
    with pytest.raises(ValueError, match=f"{path}: params/W2 holds non-finite values"):
        load_checkpoint_model(path)


# ============================================ an IDX file becomes one array, sized from its header
@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_gzip_idx_read_into_one_array(tmp_path, dtype):
    """A gzip IDX file of 24 MiB (declared, and there): read into one array of that size, not
    a list of chunks, their join, then a native-order copy (three times the data)."""
    n = (24 * MiB) // (28 * 28 * np.dtype(dtype).itemsize)
    path = tmp_path / "big-idx.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 0x08 if dtype == np.uint8 else 0x0C, 3]) + struct.pack(">III", n, 28, 28))
        f.write(np.arange(n * 28 * 28, dtype=">i4").astype(np.dtype(dtype).newbyteorder(">")).tobytes())
    a, peak = _peak_bytes(lambda: D.read_idx(path))
    assert a.shape == (n, 28, 28) and a.dtype == dtype and a.dtype.isnative
    assert a.flat[12345] == np.array(12345).astype(dtype) and a.flat[-1] == np.array(a.size - 1).astype(dtype)
    assert peak < a.nbytes + 4 * MiB, f"peak {peak / MiB:.1f} MiB for {a.nbytes / MiB:.1f} MiB of data"


# ==================================================== a bad FASTCONV_KERNELS is named, not a crash
@pytest.mark.parametrize(
    "value, expected",
    [
        ("bogus", "FASTCONV_KERNELS must be one of auto, baseline, avx512, avx2, got 'bogus'"),
        ("baseline", "in use because FASTCONV_KERNELS=baseline"),
    ],
)
def test_config_tells_a_bad_kernel_choice_from_a_missing_extension(value, expected):
    run = subprocess.run(
        python_module("fastconv", "config"),
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, FASTCONV_KERNELS=value),
    )
    assert run.returncode == 0, run.stderr
    assert expected in run.stdout and "MISSING" not in run.stdout, run.stdout
    if value == "bogus":
        assert "extension fastconv.kernels._im2col: built, but not loaded: " in run.stdout, run.stdout


def test_npz_member_header_checked_before_the_member_is_read(tmp_path):
    """A 1 KB .npz whose member claims 2**26 float32 values is refused from the header,
    against the manifest, before anything of that size is allocated."""
    import io
    import tracemalloc
    import zipfile

    from fastconv.io import files

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**26,)})
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("W1.npy", header.getvalue() + bytes(4096))
    assert path.stat().st_size < 2048
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"array 'W1' is float32 \(67108864,\), expected float32 \(3,\)"):
            files.load_arrays(path, {"W1": {"shape": [3], "dtype": "float32"}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
