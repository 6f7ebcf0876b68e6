"""Models: gradients against numerical ones, naive against fast, layer specs, files."""

import json
import zipfile

import numpy as np
import pytest

from fastconv import models as M
from fastconv.datasets import Preprocessing
from fastconv.testing import GRAD_TOL, numerical_gradient, rel_error


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
    model = M.ConvNet1(
        input_shape=(2, 6, 6),
        num_filters=3,
        filter_size=3,
        hidden_dim=7,
        num_classes=4,
        dtype=np.float64,
        reg=0.1,
        seed=1,
    )
    X, y = _data(rng, (2, 6, 6))
    loss = _grad_check(model, X, y)
    assert np.isfinite(loss)
    assert sorted(model.params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert model.params["W1"].shape == (3, 2, 3, 3)
    assert model.params["W2"].shape == (3 * 3 * 3, 7)
    assert model.params["W3"].shape == (7, 4)


def test_convnet1_odd_input_and_even_filter(rng):
    # 7x5 input, 4x4 filters: "same" padding is (4-1)//2 = 1, conv gives 6x4, pooling 3x2
    model = M.ConvNet1(
        input_shape=(1, 7, 5), num_filters=2, filter_size=4, hidden_dim=5, num_classes=3, dtype=np.float64, seed=2
    )
    assert model.params["W2"].shape == (2 * 3 * 2, 5)
    X, y = _data(rng, (1, 7, 5), classes=3)
    _grad_check(model, X, y)


def test_sequential_gradients_bn_pool_dropout_svm(rng):
    spec = "conv3x3-bn-relu-avgpool2-conv4x3s1p0-sigmoid-maxpool2s1-fc6-bn-relu-dropout0.3-fc"
    model = M.Sequential(spec, input_shape=(2, 8, 8), num_classes=4, dtype=np.float64, reg=0.05, loss="svm", seed=3)
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
    assert naive.layer_module.__name__ == "fastconv.naive" and fast.layer_module.__name__ == "fastconv.fast"
    lf, gf = fast.loss(X, y)
    ln, gn = naive.loss(X, y)
    assert abs(lf - ln) < 1e-12
    for name in gf:
        assert _grad_error(gf[name], gn[name]) < 1e-9, name
    assert rel_error(fast.loss(X), naive.loss(X)) < 1e-9


@pytest.mark.parametrize("impl", ["fast", "naive"])
def test_conv_relu_maxpool_runs_fused_with_the_same_results(rng, impl):
    """conv -> relu -> maxpool and conv -> maxpool -> relu become one fused step (also in a
    model's middle), with the loss and gradients of the separate naive layers (the reference for
    both impls: for "fast" it is another implementation, for "naive" it checks the fused step's
    wiring; test_fused_naive_model_against_numerical_gradients checks naive's fused values);
    other runs stay apart."""
    spec = "conv3x3-relu-maxpool2-conv4x3-relu-maxpool2s1-conv2x3-maxpool2-relu-conv3x3-relu-avgpool2-fc5-relu-fc"
    X, y = _data(rng, (2, 18, 17), n=3)
    model = M.Sequential(spec, input_shape=(2, 18, 17), num_classes=4, dtype=np.float64, seed=6, impl=impl)
    assert [layer.type for layer in model._plan] == [
        "conv_relu_pool",
        "conv_relu_pool",
        "conv_relu_pool",
        "conv",
        "relu",
        "avgpool",
        "fc",
        "relu",
        "fc",
    ]
    loss, grads = model.loss(X, y)
    scores = model.loss(X)
    reference = M.Sequential(spec, input_shape=(2, 18, 17), num_classes=4, dtype=np.float64, impl="naive")
    reference._plan = reference.layers  # the same network, layer by layer: naive conv, relu, max pool...
    assert "conv_relu_pool" not in [layer.type for layer in reference._plan]
    reference.params.update({k: v.copy() for k, v in model.params.items()})
    loss_sep, grads_sep = reference.loss(X, y)
    tol = 1e-12 if impl == "naive" else 1e-9
    assert abs(loss - loss_sep) < tol
    assert rel_error(scores, reference.loss(X)) < tol
    assert set(grads) == set(grads_sep)
    for name in grads:
        assert _grad_error(grads[name], grads_sep[name]) < tol, name


def test_fused_naive_model_against_numerical_gradients(rng):
    """The naive fused step (naive.conv_relu_pool_forward, itself the naive conv, relu and max pool
    one after the other) checked against an independent reference: centred differences."""
    model = M.Sequential(
        "conv2x3-relu-maxpool2-conv3x3s1p1-maxpool2-relu-fc",
        input_shape=(1, 6, 6),
        num_classes=3,
        dtype=np.float64,
        seed=10,
        impl="naive",
    )
    assert [layer.type for layer in model._plan] == ["conv_relu_pool", "conv_relu_pool", "fc"]
    X, y = _data(rng, (1, 6, 6), n=2, classes=3)
    _grad_check(model, X, y)


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
    reg = M.FullyConnectedNet(input_shape=(1, 4, 4), hidden_dims=(5,), num_classes=3, dtype=np.float64, seed=8, reg=0.3)
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


@pytest.mark.parametrize(
    "token",
    [
        "conv8x3",
        "conv8x5s2",
        "conv8x3p0",
        "conv4x2s3p1",
        "bn",
        "relu",
        "sigmoid",
        "maxpool2",
        "maxpool3s1",
        "avgpool2",
        "avgpool3s2",
        "dropout0.5",
        "dropout0.25",
        "fc",
        "fc7",
    ],
)
def test_format_inverts_parse_for_every_layer_type(token):
    assert M.format_layers(M.parse_layers(token)) == token
    assert M.format_layers([M.normalize_layer(layer, 0) for layer in M.parse_layers(token)]) == token


def test_layer_table_covers_every_type():
    # what the models module documents and what a saved model.json may contain
    assert list(M.LAYER_TYPES) == ["conv", "batchnorm", "relu", "sigmoid", "maxpool", "avgpool", "dropout", "fc"]
    assert M.LAYER_SYNTAX == (
        "conv<F>x<k>[s<stride>][p<pad>] | bn | relu | sigmoid | maxpool<k>[s<stride>] | "
        "avgpool<k>[s<stride>] | dropout[<p>] | fc[<units>], joined by '-'"
    )
    # other spellings parse to the same dicts as the canonical tokens
    for other, canonical in [
        ("batchnorm", "bn"),
        ("dropout", "dropout0.5"),
        ("dropout.5", "dropout0.5"),
        ("conv8x3s1", "conv8x3"),
        ("CONV8X3", "conv8x3"),
    ]:
        assert M.format_layers(M.parse_layers(other)) == canonical


def test_layer_objects_know_their_shapes_and_arrays():
    model = M.Sequential("conv4x3s2-bn-maxpool2-fc6-dropout-fc", input_shape=(2, 9, 7), num_classes=3)
    conv, bn, pool, fc, dropout, out = model.layers
    assert (conv.in_shape, conv.out_shape, conv.pad, conv.stride) == ((2, 9, 7), (4, 5, 4), 1, 2)
    assert (conv.weight_name, conv.bias_name, bn.gamma_name, bn.mean_name) == ("W1", "b1", "gamma1", "running_mean1")
    assert bn.spatial and (pool.kernel, pool.stride, pool.out_shape) == (2, 2, (4, 2, 2))
    assert (fc.units, fc.weight_name, dropout.p, out.units, out.weight_name) == (6, "W2", 0.5, 3, "W3")
    assert model.params["W2"].shape == (4 * 2 * 2, 6)


def test_layer_dict_values_are_checked():
    with pytest.raises(ValueError, match=r"layer 0 \(conv\) needs a 'kernel'"):
        M.Sequential([{"type": "conv", "filters": 2}], input_shape=(1, 6, 6))
    with pytest.raises(TypeError, match=r"layer 0 \(conv\) filters must be an int, got 2.0"):
        M.Sequential([{"type": "conv", "filters": 2.0, "kernel": 3}], input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match=r"layer 1 \(maxpool\) stride must be >= 1"):
        M.Sequential([{"type": "relu"}, {"type": "maxpool", "kernel": 2, "stride": 0}], input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match=r"layer 0 \(batchnorm\) momentum must be a number in \[0, 1\]"):
        M.Sequential([{"type": "batchnorm", "momentum": 1.5}], input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match=r"layer 0 \(batchnorm\) eps must be a number > 0"):
        M.Sequential([{"type": "batchnorm", "eps": True}], input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match=r"layer 0 must be a dict with 'type' one of conv, batchnorm"):
        M.Sequential([{"type": "lstm"}], input_shape=(1, 6, 6))
    with pytest.raises(TypeError, match="num_classes must be an int"):
        M.Sequential("fc", input_shape=(1, 6, 6), num_classes=3.0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        M.Sequential("fc", input_shape=(1, 6, 6), num_classes=3).scores(np.zeros((2, 1, 6, 6)), batch_size="10")


def test_output_layer_appended_or_checked():
    model = M.Sequential("conv2x3-relu", input_shape=(1, 6, 6), num_classes=4)
    assert M.format_layers(model.layer_specs) == "conv2x3-relu-fc"
    assert model.params["W2"].shape == (2 * 6 * 6, 4)
    assert M.format_layers(M.Sequential("fc4", input_shape=(1, 6, 6), num_classes=4).layer_specs) == "fc"
    with pytest.raises(ValueError, match="num_classes=4"):
        M.Sequential("fc7", input_shape=(1, 6, 6), num_classes=4)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("conv32x3-bogus-fc", "unknown layer 'bogus'"),
        ("fc10-conv3x3", "needs an image input"),
        ("fc10-maxpool2", "needs an image input"),
        ("conv2x3-maxpool9", "does not fit"),
        ("conv2x9p0", "does not fit"),
        ("dropout1.5", "dropout"),
        ("conv0x3", "filters"),
        ("", "non-empty"),
    ],
)
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


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (M.ConvNet1, {"input_shape": (3, 8, 8), "num_filters": 2, "filter_size": 3, "hidden_dim": 4, "num_classes": 5}),
        (
            M.FullyConnectedNet,
            {"input_shape": (1, 4, 4), "hidden_dims": [3], "activation": "relu", "dtype": np.float64},
        ),
    ],
)
def test_save_load_other_models(tmp_path, cls, kwargs):
    model = cls(**kwargs, seed=1)
    model.save(tmp_path)
    loaded = M.load_model(tmp_path)
    assert type(loaded) is cls and loaded.config() == model.config()
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], loaded.params[k])


_FORMAT_SPEC = "conv2x3-bn-relu-maxpool2s1-conv3x3s2p0-sigmoid-avgpool2-fc5-bn-dropout0.25-fc"


def _conv(filters, kernel, stride, pad):
    return {"type": "conv", "filters": filters, "kernel": kernel, "stride": stride, "pad": pad}


def _array(*shape):
    return {"shape": list(shape), "dtype": "float32"}


def test_file_format_is_unchanged(tmp_path):
    """model.json exactly as every earlier version wrote it (keys, order, layer dicts, array names and
    shapes), the .npz members in that order: files saved before still load, and load the same."""
    bn = {"type": "batchnorm", "momentum": 0.9, "eps": 1e-05}
    expected = {
        "format": "fastconv-model",
        "version": 1,
        "class": "sequential",
        "config": {
            "layers": [
                _conv(2, 3, 1, "same"),
                bn,
                {"type": "relu"},
                {"type": "maxpool", "kernel": 2, "stride": 1},
                _conv(3, 3, 2, 0),
                {"type": "sigmoid"},
                {"type": "avgpool", "kernel": 2, "stride": None},
                {"type": "fc", "units": 5},
                bn,
                {"type": "dropout", "p": 0.25},
                {"type": "fc", "units": None},
            ],
            "input_shape": [1, 9, 9],
            "num_classes": 3,
            "reg": 0.0,
            "loss": "softmax",
            "dtype": "float32",
            "weight_scale": None,
        },
        "preprocess": None,
        "class_names": None,
        "arrays": {
            "params/W1": _array(2, 1, 3, 3),
            "params/b1": _array(2),
            "params/gamma1": _array(2),
            "params/beta1": _array(2),
            "params/W2": _array(3, 2, 3, 3),
            "params/b2": _array(3),
            "params/W3": _array(3, 5),
            "params/b3": _array(5),
            "params/gamma2": _array(5),
            "params/beta2": _array(5),
            "params/W4": _array(5, 3),
            "params/b4": _array(3),
            "buffers/running_mean1": _array(2),
            "buffers/running_var1": _array(2),
            "buffers/running_mean2": _array(5),
            "buffers/running_var2": _array(5),
        },
        "npz": "model.npz",
    }
    model = M.Sequential(_FORMAT_SPEC, input_shape=(1, 9, 9), num_classes=3, seed=0)
    model.save(tmp_path)
    saved = json.loads((tmp_path / "model.json").read_text())
    assert len(saved.pop("npz_sha256")) == 64
    assert json.dumps(saved) == json.dumps(expected)  # the order of the keys too
    with np.load(tmp_path / "model.npz", allow_pickle=False) as npz:
        assert npz.files == list(expected["arrays"])
    loaded = M.load_model(tmp_path)
    assert loaded.layer_specs == model.layer_specs
    for key, array in model.state_arrays().items():
        assert np.array_equal(loaded.state_arrays()[key], array)


def test_parameters_are_drawn_in_layer_order():
    """A seed gives the same parameters as before: He-normal weights drawn from default_rng(seed) in
    layer order (the conv's W1, then the fc layers' W2, W3), biases and batchnorm without draws."""
    model = M.Sequential("conv2x3-bn-fc4-fc", input_shape=(1, 5, 5), num_classes=3, dtype=np.float64, seed=7)
    rng = np.random.default_rng(7)
    for name, shape, fan_in in [("W1", (2, 1, 3, 3), 9), ("W2", (50, 4), 50), ("W3", (4, 3), 4)]:
        np.testing.assert_array_equal(model.params[name], rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))
    assert list(model.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "W3", "b3"]
    assert model.rng.bit_generator.state == rng.bit_generator.state


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
        (lambda s: s["config"]["layers"][0].update({"filters": 2.5}), r"model.json: .*layer 0 \(conv\) filters"),
        (lambda s: s["config"].update({"input_shape": [1, 6, "6"]}), r"model.json: .*input_shape"),
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
    arrays = dict(model.state_arrays())
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


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: M.Sequential(_FORMAT_SPEC, input_shape=(1, 9, 9), num_classes=3, **kw),
        lambda **kw: M.ConvNet1(input_shape=(3, 8, 8), num_filters=2, filter_size=3, hidden_dim=4, **kw),
        lambda **kw: M.FullyConnectedNet(input_shape=(1, 4, 4), hidden_dims=[3, 2], dtype=np.float64, **kw),
    ],
    ids=["sequential", "convnet1", "fc"],
)
def test_state_manifest_is_known_before_allocating(tmp_path, make):
    """The manifest from the layer shapes alone is the one of the arrays (keys in order too), and a
    model made with initialize=False allocates nothing until set_state_arrays fills it in that order."""
    model = make(seed=0)
    assert list(model.state_manifest().items()) == list(M.array_manifest(model.state_arrays()).items())
    assert model.parameter_count == sum(p.size for p in model.params.values())
    empty = make(initialize=False)
    assert empty.params == {} and empty.buffers == {} and empty.state_manifest() == model.state_manifest()
    empty.set_state_arrays(model.state_arrays())
    assert list(empty.params) == list(model.params) and list(empty.buffers) == list(model.buffers)
    model.save(tmp_path)
    assert list(M.load_model(tmp_path).state_arrays()) == list(model.state_arrays())
