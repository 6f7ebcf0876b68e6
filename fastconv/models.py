"""Networks built from the fastconv layers, and their files.

Three models, one engine (``Sequential``):

* ``ConvNet1``: conv - relu - 2x2 max pool - affine - relu - affine - softmax
  (CS231n's three-layer convnet) for any input shape (C, H, W) and class count;
  parameters ``W1, b1`` (conv), ``W2, b2``, ``W3, b3`` (affine).
* ``FullyConnectedNet``: the tutorials' 784-500-50-10 network with sigmoid
  activations (``hidden_dims`` and ``activation`` can change).
* ``Sequential``: any stack of layers given as a list of dicts or as a compact
  string, for example::

      conv32x3-bn-relu-maxpool2-conv64x3-bn-relu-maxpool2-fc256-relu-dropout0.3-fc

Layer syntax: string token, then the equivalent dict.

* ``conv<F>x<k>[s<S>][p<P>]``: F filters of k x k, stride S (1), padding P
  (default "same": (k - 1) // 2); ``{"type": "conv", "filters": F, "kernel": k,
  "stride": S, "pad": P}``.
* ``bn``: batch normalization, spatial (per channel) after a conv or pooling
  layer; ``{"type": "batchnorm", "momentum": 0.9, "eps": 1e-5}``.
* ``relu``, ``sigmoid``: ``{"type": "relu"}``, ``{"type": "sigmoid"}``.
* ``maxpool<k>[s<S>]``, ``avgpool<k>[s<S>]``: k x k pooling, stride S
  (default k); ``{"type": "maxpool", "kernel": k, "stride": S}``.
* ``dropout[<p>]``: inverted dropout with drop probability p (0.5);
  ``{"type": "dropout", "p": p}``.
* ``fc[<M>]``: affine layer with M outputs; a bare ``fc`` is the output
  layer (``num_classes`` outputs); ``{"type": "fc", "units": M or None}``.

Tokens are joined by ``-``. The last layer must be the output ``fc``
(``num_classes`` units); if the stack ends with something else, one is
appended. Parameters are named ``W1, b1, W2, b2, ...`` for conv and fc layers
in order, ``gamma1, beta1, ...`` for batchnorm layers, whose running
statistics ``running_mean1, running_var1, ...`` live in ``model.buffers``.

Tip: ``conv-bn-maxpool2-relu`` computes exactly what ``conv-bn-relu-maxpool2``
does (ReLU and max commute) with the ReLU on a quarter of the values.

Each layer type is one class in ``fastconv.training.model_layers`` (its token, dict,
shapes, parameters, forward and backward); a built model keeps one object per
layer in ``model.layers``, and ``Sequential`` only walks the list.

Every model:

* holds ``params`` (a dict of named float arrays in ``dtype``, float32 by
  default), ``buffers`` (batchnorm running statistics), ``reg`` (L2
  strength: the loss adds ``0.5 * reg * sum(W**2)`` over the weights W, not
  the biases or batchnorm parameters), ``loss_type`` ("softmax" or "svm"),
  ``impl`` ("fast" uses ``fastconv.fast``, "naive" ``fastconv.naive``, as
  ``layer_module``; the layers are never reimplemented here), ``preprocess`` (a
  ``fastconv.datasets.Preprocessing`` or None) and ``class_names``;
* ``loss(X)`` -> scores (N, num_classes) in test mode; ``loss(X, y)`` ->
  (loss, grads) in training mode (batchnorm on batch statistics, dropout on);
* ``prepare(images)`` applies ``preprocess`` (raw images -> float input),
  ``scores``/``predict`` run the network in batches;
* ``save(directory)`` writes ``model.npz`` (arrays, loaded with
  ``allow_pickle=False``) and ``model.json`` (architecture, dtype,
  preprocessing, class names, the SHA-256 of the .npz), each atomically, the
  pair so that a reader always finds one consistent model whenever the writer
  dies (``save_model_files``);
  ``load_model(directory)`` checks all of it (keys, shapes, dtypes, digest,
  finite values) and says what is wrong.

Size limits: a model is sized from its layer shapes (Python ints, exact) before
any array is allocated, and refused, with a ValueError naming the layer, beyond

* ``MAX_PARAMETERS`` = 2**28 (268,435,456) parameters (1 GiB in float32), and
* ``MAX_ACTIVATION_BYTES`` = 2**29 bytes (512 MiB) per image for the input, every
  layer's output and the largest conv im2col matrix (one image's), in the
  model's dtype.

A VGG-16 on 224 x 224 images stays under both; the limits keep a layer string or a
1 KB model.json from asking for gigabytes. ``load_model`` also checks the
file's array manifest against the architecture before it allocates anything.

Initialization is He-normal (std sqrt(2 / fan_in)) for every conv and fc
weight, zeros for biases, ones and zeros for gamma and beta; pass
``weight_scale`` (a float) for CS231n's fixed-std initialization instead.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from .engine.checks import check_int, check_number, shape_size
from .io.files import (  # noqa: F401  (the file helpers stay importable from here)
    array_manifest,
    atomic_link,
    atomic_write,
    load_arrays,
    load_arrays_beside,
    read_json,
    remove_dead_temporaries,
    remove_file,
    save_arrays,
    sha256_of,
    write_json,
)
from .training.model_layers import (
    LAYER_SYNTAX,  # noqa: F401  (public, with parse_layers and format_layers)
    LAYER_TYPES,
    format_layers,
    fuse_conv_relu_pool,
    normalize_layer,
    parse_layers,
)
from .training.model_state import (  # noqa: F401  (the files and loaders stay importable from here)
    FORMAT,
    FORMAT_VERSION,
    MODEL_FILES,
    MODEL_JSON,
    MODEL_NPZ,
    MODEL_NPZ_NEXT,
    ModelState,
    build_model,
    load_model,
    load_saved_model,
    model_from_spec,
    recover_model_files,
    save_model_files,
)

#: Most parameters a model may have (see the module docstring).
MAX_PARAMETERS = 1 << 28
#: Most bytes one image may take through a model: input, layer outputs, one im2col matrix.
MAX_ACTIVATION_BYTES = 1 << 29


def _input_shape(value):
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {value!r}")
    return tuple(check_int(v, "input_shape", 1) for v in value)


def _layer_module(impl):
    if impl not in ("fast", "naive"):
        raise ValueError(f"impl must be 'fast' or 'naive', got {impl!r}")
    return importlib.import_module(f"fastconv.{impl}")


class Sequential(ModelState):
    """A stack of layers (list of dicts or a layer string; see the module docstring)."""

    kind = "sequential"

    #: Label smoothing of the softmax loss in training (``layers.softmax_loss``), set by whoever
    #: trains the model (``fastconv train --label-smoothing``); not part of the saved model.
    label_smoothing = 0.0

    def __init__(
        self,
        layers,
        input_shape=(1, 28, 28),
        num_classes=10,
        reg=0.0,
        loss="softmax",
        dtype=np.float32,
        impl="fast",
        seed=None,
        weight_scale=None,
        *,
        initialize=True,
    ):
        """``initialize=False`` sizes and checks the model but allocates nothing: ``params`` and
        ``buffers`` stay empty until ``set_state_arrays`` fills them (``load_model`` does)."""
        self.input_shape = _input_shape(input_shape)
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.reg = check_number(reg, "reg", lambda r: r >= 0, "a number >= 0")
        if loss not in ("softmax", "svm"):
            raise ValueError(f"loss must be 'softmax' or 'svm', got {loss!r}")
        self.loss_type = loss
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.impl = impl
        self.layer_module = _layer_module(impl)  # fastconv.fast or fastconv.naive: the layer functions
        self.weight_scale = (
            None
            if weight_scale is None
            else check_number(weight_scale, "weight_scale", lambda s: s > 0, "a number > 0 (or None: He-normal)")
        )
        self.layer_specs = self._output_layer_checked(layers)
        self.rng = np.random.default_rng(seed)  # initialization, then dropout masks
        self.params = {}
        self.buffers = {}
        self.preprocess = None
        self.class_names = None
        self.last_scores = None
        self.layers = self._build(self.layer_specs)  # one object per layer (fastconv.training.model_layers)
        self._plan = fuse_conv_relu_pool(self.layers)  # what forward and backward run
        if initialize:
            self._initialize()

    # ------------------------------------------------------------------ building
    def _output_layer_checked(self, layers):
        """The normalized layer dicts, ending with the output fc layer (appended if missing)."""
        if isinstance(layers, str):
            layers = parse_layers(layers)
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError("layers must be a non-empty list of layer dicts or a layer string")
        layers = [normalize_layer(layer, i) for i, layer in enumerate(layers)]
        if layers[-1]["type"] != "fc":
            layers.append({"type": "fc", "units": None})
        if layers[-1]["units"] not in (None, self.num_classes):
            raise ValueError(
                f"the last fc layer is the output and must have num_classes={self.num_classes} "
                f"units, got {layers[-1]['units']}"
            )
        layers[-1]["units"] = None
        return layers

    def _build(self, layer_specs):
        """The layer objects, their arrays named and their shapes checked layer by layer, and the
        model's size against the limits (``parameter_count``, ``activation_bytes``); nothing is
        allocated, so a model too large is refused before it costs memory."""
        shape = self.input_shape
        itemsize = self.dtype.itemsize
        outputs = shape_size(shape)  # items per image: the input, then each layer's output
        self.parameter_count, workspace = 0, 0
        self._check_activations(outputs * itemsize, f"input_shape {shape}")
        layers = []
        counts = {}
        for i, spec in enumerate(layer_specs):
            layer_type = LAYER_TYPES[spec["type"]]
            number = counts[layer_type.numbering] = counts.get(layer_type.numbering, 0) + 1
            where = f"layer {i} ({layer_type.token(spec)}) on input {shape}"
            layer = layer_type(spec, shape, number, self.num_classes, where)
            self.parameter_count += sum(shape_size(s) for s in layer.param_shapes().values())
            if self.parameter_count > MAX_PARAMETERS:
                raise ValueError(
                    f"{where}: brings the model to {self.parameter_count:,} parameters, "
                    f"more than the limit of {MAX_PARAMETERS:,} (fastconv.models.MAX_PARAMETERS)"
                )
            outputs += shape_size(layer.out_shape)
            workspace = max(workspace, layer.workspace_size())
            self._check_activations((outputs + workspace) * itemsize, f"{where} with output {layer.out_shape}")
            layers.append(layer)
            shape = layer.out_shape
        self.activation_bytes = (outputs + workspace) * itemsize
        return layers

    def _check_activations(self, nbytes, where):
        if nbytes > MAX_ACTIVATION_BYTES:
            raise ValueError(
                f"{where}: takes {nbytes:,} bytes per image ({self.dtype.name} input, layer "
                f"outputs and im2col matrix), more than the limit of {MAX_ACTIVATION_BYTES:,} "
                "(fastconv.models.MAX_ACTIVATION_BYTES)"
            )

    def _initialize(self):
        """Allocate and draw the parameters and buffers, layer by layer (the order of the draws)."""
        for layer in self.layers:
            self.params.update(layer.params(self._init, self.dtype))
            self.buffers.update(layer.buffers(self.dtype))

    def _init(self, shape, fan_in):
        std = np.sqrt(2.0 / fan_in) if self.weight_scale is None else self.weight_scale
        return (self.rng.standard_normal(shape) * std).astype(self.dtype)

    # ------------------------------------------------------------------ description
    def config(self):
        """Constructor arguments as JSON-able values (everything but impl and seed)."""
        return {
            "layers": [dict(s) for s in self.layer_specs],
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "reg": self.reg,
            "loss": self.loss_type,
            "dtype": self.dtype.name,
            "weight_scale": self.weight_scale,
        }

    def summary(self):
        """The summary table as text, ``print(model.summary())``: a row per layer with its output
        shape, parameters, FLOPs of forward and of forward+backward and activation memory per
        image, and the totals (``fastconv.training.summary``)."""
        from .training.summary import format_summary

        return format_summary(self)

    def describe(self):
        """A one-line summary: the layer string and the parameter count."""
        return (
            f"{type(self).__name__} {format_layers(self.layer_specs)} on {self.input_shape}: "
            f"{self.parameter_count:,} parameters"
        )

    def first_layer_weights(self):
        """The first weight array (conv filters (F, C, kh, kw), or fc weights (D, M))."""
        return self.params["W1"]

    # ------------------------------------------------------------------ forward / backward
    def _check_X(self, X):
        if not isinstance(X, np.ndarray) or X.dtype.kind != "f":
            raise TypeError("X must be a float array (N, C, H, W); raw images go through model.prepare(images) first")
        if X.shape[1:] != self.input_shape:
            raise ValueError(f"X must have shape (N, {', '.join(map(str, self.input_shape))}), got {X.shape}")
        return X.astype(self.dtype, copy=False)

    def _forward(self, X, train):
        out = X
        caches = []
        for layer in self._plan:
            out, cache = layer.forward(self, out, train)
            caches.append(cache)
        return out, caches

    def _backward(self, dout, caches):
        grads = {}
        for layer, cache in zip(reversed(self._plan), reversed(caches)):
            # The first layer's input is the data: its gradient is never used.
            dout, layer_grads = layer.backward(self, dout, cache, need_dx=layer is not self._plan[0])
            grads.update(layer_grads)
        return grads

    def loss(self, X, y=None):
        """Scores (N, num_classes) when y is None (test mode); else (loss, grads).

        X: float array (N, C, H, W) (cast to the model's dtype); y: int labels (N,).
        In training mode batchnorm uses batch statistics (and updates its
        running statistics) and dropout is on.
        """
        X = self._check_X(X)
        train = y is not None
        scores, caches = self._forward(X, train)
        if not train:
            return scores
        y = np.asarray(y)
        loss_fn = self.layer_module.softmax_loss if self.loss_type == "softmax" else self.layer_module.svm_loss
        if self.label_smoothing and self.loss_type == "softmax":  # a training setting, not saved with the model
            data_loss, dscores = loss_fn(scores, y, label_smoothing=self.label_smoothing)
        else:
            data_loss, dscores = loss_fn(scores, y)
        self.last_scores = scores
        grads = self._backward(dscores, caches)
        reg_loss = 0.0
        for name, g in grads.items():
            p = self.params[name]
            if self.reg and name.startswith("W"):
                reg_loss += 0.5 * self.reg * float(np.vdot(p, p))
                g = g + self.dtype.type(self.reg) * p
            grads[name] = g.astype(self.dtype, copy=False)
        return data_loss + reg_loss, grads

    def prepare(self, images):
        """Raw inputs -> the network's float input: ``preprocess`` when set, else
        a float array cast to the model's dtype (integer images need a preprocess)."""
        if self.preprocess is not None:
            return self.preprocess(images, self.dtype)
        if not isinstance(images, np.ndarray) or images.dtype.kind != "f":
            raise TypeError(
                "this model has no preprocessing: give it a float array, or set "
                "model.preprocess = fastconv.datasets.Preprocessing.fit(train_images)"
            )
        return images.astype(self.dtype, copy=False)

    def scores(self, X, batch_size=500, prepare=False):
        """Test-mode scores of X (N, ...) in batches; ``prepare=True`` applies ``prepare`` first."""
        batch_size = check_int(batch_size, "batch_size", 1)
        out = np.empty((len(X), self.num_classes), dtype=self.dtype)
        for i in range(0, len(X), batch_size):
            xb = X[i : i + batch_size]
            out[i : i + batch_size] = self.loss(self.prepare(xb) if prepare else xb)
        return out

    def predict(self, X, batch_size=500, prepare=False):
        """Predicted labels (int64) of X in batches."""
        return self.scores(X, batch_size, prepare).argmax(axis=1).astype(np.int64)

    def check_accuracy(self, X, y, batch_size=500, prepare=False):
        """Fraction of X classified as y."""
        if len(X) == 0:
            return float("nan")
        return float(np.mean(self.predict(X, batch_size, prepare) == np.asarray(y)))

    # ------------------------------------------------------------------ state and files
    def state_manifest(self):
        """``array_manifest(state_arrays())`` from the layer shapes alone: known before (or
        without) allocating, as ``load_model`` needs it."""
        shapes = {f"params/{k}": s for layer in self.layers for k, s in layer.param_shapes().items()}
        shapes.update({f"buffers/{k}": s for layer in self.layers for k, s in layer.buffer_shapes().items()})
        return {key: {"shape": list(shape), "dtype": self.dtype.name} for key, shape in shapes.items()}

    def spec(self):
        """The JSON description of the model (everything but the arrays)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "class": self.kind,
            "config": self.config(),
            "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    def save(self, directory):
        """Write the model into ``directory`` as ``model.json`` + ``model.npz`` so that a reader
        always finds one complete, consistent model, the old one or the new one (see
        ``save_model_files``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = self.state_arrays()
        spec = self.spec()
        spec.update(arrays=array_manifest(arrays))
        save_model_files(directory, spec, arrays)
        return directory


class ConvNet1(Sequential):
    """conv - relu - 2x2 max pool - affine - relu - affine, with "same" padding.

    Parameters: W1 (num_filters, C, filter_size, filter_size), b1, W2
    (num_filters * H/2 * W/2, hidden_dim), b2, W3 (hidden_dim, num_classes), b3.
    """

    kind = "convnet1"

    def __init__(
        self,
        input_shape=(3, 32, 32),
        num_filters=32,
        filter_size=7,
        hidden_dim=100,
        num_classes=10,
        reg=0.0,
        loss="softmax",
        dtype=np.float32,
        impl="fast",
        seed=None,
        weight_scale=None,
        *,
        initialize=True,
    ):
        self.num_filters = check_int(num_filters, "num_filters", 1)
        self.filter_size = check_int(filter_size, "filter_size", 1)
        self.hidden_dim = check_int(hidden_dim, "hidden_dim", 1)
        layers = [
            {"type": "conv", "filters": self.num_filters, "kernel": self.filter_size},
            {"type": "relu"},
            {"type": "maxpool", "kernel": 2},
            {"type": "fc", "units": self.hidden_dim},
            {"type": "relu"},
            {"type": "fc"},
        ]
        super().__init__(
            layers, input_shape, num_classes, reg, loss, dtype, impl, seed, weight_scale, initialize=initialize
        )

    def config(self):
        c = super().config()
        del c["layers"]
        c.update(num_filters=self.num_filters, filter_size=self.filter_size, hidden_dim=self.hidden_dim)
        return c


class FullyConnectedNet(Sequential):
    """affine - activation - ... - affine: 784-500-50-10 with sigmoids by default."""

    kind = "fc"

    def __init__(
        self,
        input_shape=(1, 28, 28),
        hidden_dims=(500, 50),
        num_classes=10,
        activation="sigmoid",
        reg=0.0,
        loss="softmax",
        dtype=np.float32,
        impl="fast",
        seed=None,
        weight_scale=None,
        *,
        initialize=True,
    ):
        if not isinstance(hidden_dims, (list, tuple)):
            raise ValueError(f"hidden_dims must be a list of ints, got {hidden_dims!r}")
        self.hidden_dims = [check_int(h, "hidden_dims", 1) for h in hidden_dims]
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', got {activation!r}")
        self.activation = activation
        layers = []
        for h in self.hidden_dims:
            layers += [{"type": "fc", "units": h}, {"type": activation}]
        layers.append({"type": "fc"})
        super().__init__(
            layers, input_shape, num_classes, reg, loss, dtype, impl, seed, weight_scale, initialize=initialize
        )

    def config(self):
        c = super().config()
        del c["layers"]
        c.update(hidden_dims=list(self.hidden_dims), activation=self.activation)
        return c


MODEL_CLASSES = {cls.kind: cls for cls in (Sequential, ConvNet1, FullyConnectedNet)}
