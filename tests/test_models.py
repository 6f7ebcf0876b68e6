"""Models: gradients against numerical ones, naive against fast, layer specs, files."""
import json
import zipfile

import numpy as np
import pytest

from conftest import numerical_gradient, rel_error
from fastconv import models as M
from fastconv.datasets import Preprocessing

GRAD_TOL = 1e-6


def _grad_error(actual, reference):
    """Relative error, with the scale floored at 1e-3: a bias before batchnorm has a
    gradient of exactly zero, which centred differences see as ~1e-11 of noise."""
    return float(np.max(np.abs(actual - reference)) / max(np.max(np.abs(reference)), 1e-3))


def _grad_check(model, X, y, seed=0):
    """Compare every analytic gradient with centred differences (float64).

    The model's random generator (dropout masks) is reset before each loss
    evaluation so that every evaluation sees the same masks."""
    state = model.rng.bit_generator.state

    def loss_at():
        model.rng.bit_generator.state = state
        return model.loss(X, y)

    loss, grads = loss_at()
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        num = numerical_gradient(lambda _: loss_at()[0], p)
        err = _grad_error(grads[name], num)
        assert err < GRAD_TOL, f"{name}: relative error {err:.2e}"
    return loss


def _data(rng, shape, n=4, classes=4):
    X = rng.standard_normal((n, *shape))
    y = rng.integers(0, classes, n)
    return X, y


def test_convnet1_gradients(rng):
    model = M.ConvNet1(input_shape=(2, 6, 6), num_filters=3, filter_size=3, hidden_dim=7, num_classes=4,
                       dtype=np.float64, reg=0.1, seed=1)
    X, y = _data(rng, (2, 6, 6))
    loss = _grad_check(model, X, y)
    assert np.isfinite(loss)
    assert sorted(model.params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert model.params["W1"].shape == (3, 2, 3, 3)
    assert model.params["W2"].shape == (3 * 3 * 3, 7)
    assert model.params["W3"].shape == (7, 4)


def test_convnet1_odd_input_and_even_filter(rng):
    # 7x5 input, 4x4 filters: "same" padding is (4-1)//2 = 1, conv gives 6x4, pooling 3x2
    model = M.ConvNet1(input_shape=(1, 7, 5), num_filters=2, filter_size=4, hidden_dim=5, num_classes=3,
                       dtype=np.float64, seed=2)
    assert model.params["W2"].shape == (2 * 3 * 2, 5)
    X, y = _data(rng, (1, 7, 5), classes=3)
    _grad_check(model, X, y)


def test_sequential_gradients_bn_pool_dropout_svm(rng):
    spec = "conv3x3-bn-relu-avgpool2-conv4x3s1p0-sigmoid-maxpool2s1-fc6-bn-relu-dropout0.3-fc"
    model = M.Sequential(spec, input_shape=(2, 8, 8), num_classes=4, dtype=np.float64, reg=0.05,
                         loss="svm", seed=3)
    assert sorted(model.buffers) == ["running_mean1", "running_mean2", "running_var1", "running_var2"]
    X, y = _data(rng, (2, 8, 8), n=5)
    _grad_check(model, X, y)


def test_fully_connected_net(rng):
    model = M.FullyConnectedNet(input_shape=(1, 4, 4), hidden_dims=(6, 5), num_classes=3, dtype=np.float64, seed=4)
    X, y = _data(rng, (1, 4, 4), classes=3)
    _grad_check(model, X, y)
    default = M.FullyConnectedNet()
    shapes = [default.params[f"W{i}"].shape for i in (1, 2, 3)]
    assert shapes == [(784, 500), (500, 50), (50, 10)]
    assert M.format_layers(default.layer_specs) == "fc500-sigmoid-fc50-sigmoid-fc"


def test_naive_and_fast_agree(rng):
    spec = "conv3x3-bn-relu-maxpool2-fc5-relu-fc"
    X, y = _data(rng, (2, 6, 6), n=3)
    fast = M.Sequential(spec, input_shape=(2, 6, 6), num_classes=4, dtype=np.float64, seed=5)
    naive = M.Sequential(spec, input_shape=(2, 6, 6), num_classes=4, dtype=np.float64, seed=5, impl="naive")
    assert naive.L.__name__ == "fastconv.naive" and fast.L.__name__ == "fastconv.fast"
    lf, gf = fast.loss(X, y)
    ln, gn = naive.loss(X, y)
    assert abs(lf - ln) < 1e-12
    for name in gf:
        assert _grad_error(gf[name], gn[name]) < 1e-9, name
    assert rel_error(fast.loss(X), naive.loss(X)) < 1e-9


@pytest.mark.parametrize("impl", ["fast", "naive"])
def test_conv_relu_maxpool_runs_fused_with_the_same_results(rng, impl):
    """conv -> relu -> maxpool and conv -> maxpool -> relu become one fused step (also in a
    model's middle), with the loss and gradients of the separate layers; other runs stay apart."""
    spec = "conv3x3-relu-maxpool2-conv4x3-relu-maxpool2s1-conv2x3-maxpool2-relu-conv3x3-relu-avgpool2-fc5-relu-fc"
    X, y = _data(rng, (2, 18, 17), n=3)
    model = M.Sequential(spec, input_shape=(2, 18, 17), num_classes=4, dtype=np.float64, seed=6, impl=impl)
    assert [s["type"] for s in model._plan] == [
        "conv_relu_pool", "conv_relu_pool", "conv_relu_pool", "conv", "relu", "avgpool", "fc", "relu", "fc"]
    loss, grads = model.loss(X, y)
    scores = model.loss(X)
    params = {k: v.copy() for k, v in model.params.items()}
    model._plan = model._build(model.layer_specs)  # the same model, layer by layer
    model.params.update(params)  # (_build initializes the parameters anew)
    loss_sep, grads_sep = model.loss(X, y)
    assert abs(loss - loss_sep) < 1e-12
    assert rel_error(scores, model.loss(X)) < 1e-12
    for name in grads:
        assert _grad_error(grads[name], grads_sep[name]) < 1e-12, name


def test_float32_end_to_end(rng):
    model = M.Sequential("conv4x3-bn-relu-maxpool2-fc8-relu-dropout-fc", input_shape=(3, 8, 8), num_classes=5, seed=6)
    X = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    loss, grads = model.loss(X, y)
    assert isinstance(loss, float)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(b.dtype == np.float32 for b in model.buffers.values())
    scores = model.loss(X)
    assert scores.dtype == np.float32 and scores.shape == (6, 5)
    # test mode is deterministic: dropout off, batchnorm on running statistics
    np.testing.assert_array_equal(scores, model.loss(X))
    # float64 inputs are cast to the model's dtype
    assert model.loss(X.astype(np.float64)).dtype == np.float32


def test_batchnorm_running_statistics_update(rng):
    model = M.Sequential("conv2x3-bn-relu-fc", input_shape=(1, 5, 5), num_classes=3, seed=7)
    X = rng.standard_normal((8, 1, 5, 5)).astype(np.float32) * 3 + 2
    before = model.buffers["running_mean1"].copy()
    model.loss(X, rng.integers(0, 3, 8))
    assert not np.array_equal(before, model.buffers["running_mean1"])
    kept = {k: v.copy() for k, v in model.buffers.items()}
    model.loss(X)  # test mode must not touch them
    for k in kept:
        np.testing.assert_array_equal(kept[k], model.buffers[k])


def test_he_initialization():
    model = M.ConvNet1(input_shape=(3, 32, 32), seed=0)
    w1 = model.params["W1"]
    assert abs(w1.std() / np.sqrt(2 / (3 * 7 * 7)) - 1) < 0.05
    w2 = model.params["W2"]
    assert abs(w2.std() / np.sqrt(2 / w2.shape[0]) - 1) < 0.02
    assert not model.params["b1"].any()
    fixed = M.ConvNet1(input_shape=(3, 32, 32), seed=0, weight_scale=1e-3)
    assert abs(fixed.params["W2"].std() / 1e-3 - 1) < 0.02
    assert np.array_equal(M.ConvNet1(seed=3).params["W1"], M.ConvNet1(seed=3).params["W1"])


def test_reg_adds_l2_of_weights_only(rng):
    X, y = _data(rng, (1, 4, 4), classes=3)
    plain = M.FullyConnectedNet(input_shape=(1, 4, 4), hidden_dims=(5,), num_classes=3, dtype=np.float64, seed=8)
    reg = M.FullyConnectedNet(input_shape=(1, 4, 4), hidden_dims=(5,), num_classes=3, dtype=np.float64, seed=8,
                              reg=0.3)
    l0, g0 = plain.loss(X, y)
    l1, g1 = reg.loss(X, y)
    w2 = sum(np.sum(reg.params[k] ** 2) for k in ("W1", "W2"))
    assert l1 == pytest.approx(l0 + 0.5 * 0.3 * w2, rel=1e-12)
    np.testing.assert_allclose(g1["W1"], g0["W1"] + 0.3 * reg.params["W1"], rtol=1e-12)
    np.testing.assert_array_equal(g1["b1"], g0["b1"])


# ---------------------------------------------------------------------------- layer specs
def test_parse_and_format_layers():
    spec = "conv32x3-bn-relu-maxpool2-conv64x5s2p1-bn-relu-avgpool3s2-fc256-relu-dropout0.3-sigmoid-dropout0.5-fc"
    layers = M.parse_layers(spec)
    assert layers[0] == {"type": "conv", "filters": 32, "kernel": 3, "stride": 1, "pad": "same"}
    assert layers[4] == {"type": "conv", "filters": 64, "kernel": 5, "stride": 2, "pad": 1}
    assert layers[7] == {"type": "avgpool", "kernel": 3, "stride": 2}
    assert layers[10] == {"type": "dropout", "p": 0.3}
    assert layers[12] == {"type": "dropout", "p": 0.5}
    assert layers[-1] == {"type": "fc", "units": None}
    assert M.parse_layers("dropout") == [{"type": "dropout", "p": 0.5}]
    assert M.parse_layers("BN-ReLU") == [{"type": "batchnorm"}, {"type": "relu"}]
    model = M.Sequential(spec, input_shape=(1, 28, 28))
    assert M.format_layers(model.layer_specs) == spec
    # the dict form gives the same model
    same = M.Sequential(layers, input_shape=(1, 28, 28))
    assert same.config() == model.config()


def test_output_layer_appended_or_checked():
    model = M.Sequential("conv2x3-relu", input_shape=(1, 6, 6), num_classes=4)
    assert M.format_layers(model.layer_specs) == "conv2x3-relu-fc"
    assert model.params["W2"].shape == (2 * 6 * 6, 4)
    assert M.format_layers(M.Sequential("fc4", input_shape=(1, 6, 6), num_classes=4).layer_specs) == "fc"
    with pytest.raises(ValueError, match="num_classes=4"):
        M.Sequential("fc7", input_shape=(1, 6, 6), num_classes=4)


@pytest.mark.parametrize("spec, match", [
    ("conv32x3-bogus-fc", "unknown layer 'bogus'"),
    ("fc10-conv3x3", "needs an image input"),
    ("fc10-maxpool2", "needs an image input"),
    ("conv2x3-maxpool9", "does not fit"),
    ("conv2x9p0", "does not fit"),
    ("dropout1.5", "dropout"),
    ("conv0x3", "filters"),
    ("", "non-empty"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        M.Sequential(spec, input_shape=(1, 6, 6))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="impl"):
        M.ConvNet1(impl="cuda")
    with pytest.raises(TypeError, match="dtype"):
        M.ConvNet1(dtype=np.int32)
    with pytest.raises(ValueError, match="loss"):
        M.ConvNet1(loss="hinge")
    with pytest.raises(ValueError, match="input_shape"):
        M.ConvNet1(input_shape=(28, 28))
    with pytest.raises(ValueError, match="unknown keys"):
        M.Sequential([{"type": "conv", "filters": 2, "kernel": 3, "dilation": 2}])
    model = M.ConvNet1(input_shape=(1, 8, 8), num_filters=2, hidden_dim=3)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 1, 8, 8\)"):
        model.loss(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="prepare"):
        model.loss(np.zeros((2, 1, 8, 8), np.uint8))
    with pytest.raises(TypeError, match="preprocessing"):
        model.prepare(np.zeros((2, 1, 8, 8), np.uint8))


# ---------------------------------------------------------------------------- files
def _trained_model(rng):
    model = M.Sequential("conv3x3-bn-relu-maxpool2-fc6-relu-fc", input_shape=(1, 6, 6), num_classes=3, seed=9)
    images = rng.integers(0, 256, (20, 1, 6, 6), dtype=np.uint8)
    model.preprocess = Preprocessing.fit(images)
    model.class_names = ("a", "b", "c")
    model.loss(model.prepare(images), rng.integers(0, 3, 20))  # moves the running statistics
    return model, images


def test_save_load_round_trip(tmp_path, rng):
    model, images = _trained_model(rng)
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.npz"]
    with np.load(tmp_path / "model.npz", allow_pickle=False) as npz:
        assert "buffers/running_mean1" in npz.files
    loaded = M.load_model(tmp_path)
    assert type(loaded) is M.Sequential and loaded.class_names == ("a", "b", "c")
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], loaded.params[k])
    for k in model.buffers:
        np.testing.assert_array_equal(model.buffers[k], loaded.buffers[k])
    np.testing.assert_array_equal(model.predict(images, prepare=True), loaded.predict(images, prepare=True))
    np.testing.assert_array_equal(model.scores(images, prepare=True), loaded.scores(images, prepare=True))
    # naive layers on the same file
    naive = M.load_model(tmp_path / "model.json", impl="naive")
    np.testing.assert_allclose(naive.scores(images, prepare=True), model.scores(images, prepare=True), rtol=1e-4)


@pytest.mark.parametrize("cls, kwargs", [
    (M.ConvNet1, {"input_shape": (3, 8, 8), "num_filters": 2, "filter_size": 3, "hidden_dim": 4, "num_classes": 5}),
    (M.FullyConnectedNet, {"input_shape": (1, 4, 4), "hidden_dims": [3], "activation": "relu", "dtype": np.float64}),
])
def test_save_load_other_models(tmp_path, cls, kwargs):
    model = cls(**kwargs, seed=1)
    model.save(tmp_path)
    loaded = M.load_model(tmp_path)
    assert type(loaded) is cls and loaded.config() == model.config()
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], loaded.params[k])


def _tamper(tmp_path, fn):
    spec = json.loads((tmp_path / "model.json").read_text())
    fn(spec)
    (tmp_path / "model.json").write_text(json.dumps(spec))


def _rewrite_npz(tmp_path, arrays, update_manifest=True):
    """Write arrays as model.npz and (optionally) make the JSON agree with it except where tested."""
    np.savez(tmp_path / "model.npz", **arrays)
    spec = json.loads((tmp_path / "model.json").read_text())
    spec["npz_sha256"] = M.sha256_of(tmp_path / "model.npz")
    if update_manifest:
        spec["arrays"] = M.array_manifest(arrays)
    (tmp_path / "model.json").write_text(json.dumps(spec))


def test_load_rejects_corrupt_files(tmp_path, rng):
    model, _ = _trained_model(rng)
    model.save(tmp_path)
    good_json = (tmp_path / "model.json").read_bytes()
    good_npz = (tmp_path / "model.npz").read_bytes()

    def restore():
        (tmp_path / "model.json").write_bytes(good_json)
        (tmp_path / "model.npz").write_bytes(good_npz)

    # a flipped byte in the .npz
    data = bytearray(good_npz)
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        M.load_model(tmp_path)
    restore()
    # not JSON
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="model.json: not a valid JSON"):
        M.load_model(tmp_path)
    restore()
    # unknown class, wrong format, bad config, path tricks
    for change, match in [
        (lambda s: s.update({"class": "resnet"}), "unknown model class"),
        (lambda s: s.update({"format": "something"}), "not a fastconv-model"),
        (lambda s: s["config"].update({"num_classes": "ten"}), "num_classes"),
        (lambda s: s["config"].update({"extra": 1}), "invalid sequential config"),
        (lambda s: s.update({"npz": "../model.npz"}), "'npz' must name"),
        (lambda s: s["arrays"].pop("params/W1"), "manifest does not match"),
        (lambda s: s.update({"npz_sha256": None}), "npz_sha256"),
        (lambda s: s["preprocess"].update({"std": [-1.0]}), "preprocessing"),
        (lambda s: s.update({"class_names": ["a"]}), "class_names"),
    ]:
        _tamper(tmp_path, change)
        with pytest.raises(ValueError, match=match):
            M.load_model(tmp_path)
        restore()
    # arrays that do not match the architecture, even with a consistent digest
    arrays = {k: v for k, v in model.state_arrays().items()}
    wrong_dtype = dict(arrays, **{"params/W1": arrays["params/W1"].astype(np.float64)})
    _rewrite_npz(tmp_path, wrong_dtype, update_manifest=False)
    with pytest.raises(ValueError, match="params/W1.*float64"):
        M.load_model(tmp_path)
    restore()
    wrong_shape = dict(arrays, **{"params/b1": np.zeros(7, np.float32)})
    _rewrite_npz(tmp_path, wrong_shape, update_manifest=False)
    with pytest.raises(ValueError, match="params/b1"):
        M.load_model(tmp_path)
    restore()
    missing = {k: v for k, v in arrays.items() if k != "params/W2"}
    _rewrite_npz(tmp_path, missing, update_manifest=False)
    with pytest.raises(ValueError, match="missing.*params/W2"):
        M.load_model(tmp_path)
    restore()
    # an object array (a pickle inside the .npz) is refused by allow_pickle=False
    with_object = dict(arrays, **{"params/W1": np.array([{"x": 1}], dtype=object)})
    _rewrite_npz(tmp_path, with_object, update_manifest=False)
    with pytest.raises(ValueError, match="model.npz"):
        M.load_model(tmp_path)
    restore()
    # not a zip at all
    (tmp_path / "model.npz").write_bytes(b"garbage")
    _rewrite_npz_digest = M.sha256_of(tmp_path / "model.npz")
    _tamper(tmp_path, lambda s: s.update({"npz_sha256": _rewrite_npz_digest}))
    with pytest.raises(ValueError, match="model.npz"):
        M.load_model(tmp_path)
    restore()
    (tmp_path / "model.npz").unlink()
    with pytest.raises(FileNotFoundError, match="model.npz"):
        M.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model"):
        M.load_model(tmp_path / "elsewhere")
    assert zipfile.is_zipfile(__import__("io").BytesIO(good_npz))


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.json"
    M.write_json(target, {"a": 1})

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        M.atomic_write(target, boom)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left
    with pytest.raises(ValueError):
        M.write_json(target, {"nan": float("nan")})
