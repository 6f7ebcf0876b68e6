"""Each concept in one place, reached through public names, and the old import paths still work.

* every documented name imports from the path it always had (the same object as its home's);
  a module that moved into a package by concern (``fastconv.MOVED_MODULES``) is, at its old
  path, the module at its home itself;
* no module of fastconv uses another module's underscore names (an AST scan, with an
  allow-list of the crossings that remain and why);
* one real-number check (``engine.checks.check_number``): a non-number is a TypeError, a bad
  value (out of range, NaN, infinite, beyond float) a ValueError, bool and np.bool_ refused;
* batchnorm's ``bn_param`` rules in one home (``engine.batchnorm``): the same bad bn_param
  gets the same error through every batchnorm fastconv has;
* ``fastconv.training.distributed`` reaches a network's layers through ``layer_module`` only;
* the model protocol is a ``typing.Protocol`` (``training.model_state.SolverModel``).
"""

import ast
import importlib
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

from fastconv import MOVED_MODULES
from fastconv.engine.checks import check_number
from fastconv.io.child import python_code, python_module

from _helpers import ROOT

PACKAGE = ROOT / "fastconv"

# ------------------------------------------------------------------ old import paths
#: Model files and loaders, documented at fastconv.models and at fastconv.model_state.
MODEL_FILE_NAMES = [
    "load_model",
    "load_saved_model",
    "model_from_spec",
    "build_model",
    "save_model_files",
    "recover_model_files",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_JSON",
    "MODEL_NPZ",
    "MODEL_NPZ_NEXT",
    "MODEL_FILES",
]

#: (old path, name, home): the name must import from the old path, and be its home's object.
MOVED = [("fastconv.models", name, "fastconv.training.model_state") for name in MODEL_FILE_NAMES] + [
    ("fastconv.checkpoints", "load_checkpoint_model", "fastconv.training.model_state"),
    ("fastconv.solver", "load_checkpoint_model", "fastconv.training.model_state"),
    ("fastconv.train_cli", "load_prediction_model", "fastconv.training.model_state"),
]

#: Names documented (README, docs/, docstrings) at a module path that moved into a package by
#: concern (fastconv.MOVED_MODULES): old path -> names. Each must import from the old path and
#: be the same object as at the module's home.
MOVED_MODULE_NAMES = {
    "fastconv.model_state": ["ModelState", "SolverModel", "load_checkpoint_model", "load_prediction_model"]
    + MODEL_FILE_NAMES,
    "fastconv.checkpoints": [
        "save_checkpoint",
        "resume",
        "checkpoints",
        "prune",
        "read_checkpoint",
        "CHECKPOINT_FORMAT",
        "CHECKPOINT_VERSION",
        "load_checkpoint_model",
    ],
    "fastconv.distributed": ["DataParallel", "SyncedLayers", "split", "predict", "world", "launched"],
    "fastconv.preprocessing": ["Preprocessing", "to_nchw", "LAYOUTS"],
    "fastconv.schedules": ["parse_schedule", "Schedule", "Constant", "Exponential", "Step", "Cosine", "OneCycle"],
    "fastconv.augment": ["parse_augment", "Augment", "MAX_CROP"],
    "fastconv.summary": ["format_summary", "layer_rows"],
    "fastconv.train_cli": ["class_probabilities", "load_prediction_model", "add_arguments", "run"],
    "fastconv.serve": ["add_arguments", "run", "make_server", "Server", "PAGE_FILES"],
    "fastconv.plots": [
        "confusion_matrix",
        "plot_loss",
        "plot_accuracy",
        "plot_confusion",
        "plot_filters",
        "plot_class_grid",
        "feature_maps",
        "plot_feature_maps",
        "plot_examples",
    ],
    "fastconv.animation": ["FilterFrames", "frame_interval"],
    "fastconv.demo": ["add_arguments", "run"],
}
MOVED += [(old, name, MOVED_MODULES[old]) for old, names in MOVED_MODULE_NAMES.items() for name in names]

#: Names documented (README, docstrings) at a path that did not move (for the modules that
#: moved into a package by concern: MOVED_MODULE_NAMES above).
STAYED = {
    "fastconv": ["conv_output_size", "show_config", "keep_freed_memory", "__version__"],
    "fastconv.models": [
        "Sequential",
        "ConvNet1",
        "FullyConnectedNet",
        "MODEL_CLASSES",
        "MAX_PARAMETERS",
        "MAX_ACTIVATION_BYTES",
        "LAYER_SYNTAX",
        "parse_layers",
        "format_layers",
        "write_json",
        "array_manifest",
        "sha256_of",
        "save_arrays",
        "load_arrays",
    ],
    "fastconv.solver": ["Solver", "checkpoints", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"],
    "fastconv.optim": ["sgd", "sgd_momentum", "rmsprop", "adam", "get_update_rule"],
    "fastconv.engine.checks": ["check_int", "check_number", "check_float_array", "check_dout"],
    "fastconv.engine.batchnorm": [
        "spatial_batchnorm_forward",
        "spatial_batchnorm_backward",
        "channel_stats",
        "normalize",
        "backward_sums",
        "backward_dx",
    ],
}

#: Modules whose whole ``__all__`` is public API.
WITH_ALL = ["fastconv.layers", "fastconv.fast", "fastconv.compat.cs231n", "fastconv.compat.sichkar", "fastconv.testing"]


@pytest.mark.parametrize("old, name, home", MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_a_moved_name_imports_from_its_old_path(old, name, home):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(home), name)


def test_every_moved_module_has_its_documented_names_listed():
    assert sorted(MOVED_MODULE_NAMES) == sorted(MOVED_MODULES)


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_is_the_module_at_its_home(old):
    """``import fastconv.<old>`` gives the module itself, not a copy: one set of globals (a
    monkeypatch or a setting made through either path is seen through the other), and its own
    name and spec."""
    home = importlib.import_module(MOVED_MODULES[old])
    assert importlib.import_module(old) is home
    assert home.__name__ == MOVED_MODULES[old] and home.__spec__.name == MOVED_MODULES[old]
    assert getattr(importlib.import_module("fastconv"), old.rpartition(".")[2]) is home


def test_old_paths_import_first_in_a_fresh_process():
    """``from fastconv.<old> import name`` in a process that has not imported the old path yet
    (through the finder, not from sys.modules; the first module's home is not loaded either):
    every documented name is its home's object, and no module is loaded twice."""
    code = (
        "import importlib, sys\n"
        f"names = {MOVED_MODULE_NAMES!r}\n"
        f"homes = {MOVED_MODULES!r}\n"
        "import fastconv\n"
        "for old, listed in names.items():\n"
        "    assert old not in sys.modules, old\n"
        "    got = {}\n"
        "    exec(f'from {old} import ' + ', '.join(listed), got)\n"
        "    home = sys.modules[homes[old]]\n"
        "    assert sys.modules[old] is home, old\n"
        "    bad = [n for n in listed if got[n] is not getattr(home, n)]\n"
        "    assert not bad, (old, bad)\n"
        "ours = {id(m): m for m in list(sys.modules.values()) if getattr(m, '__name__', '').startswith('fastconv')}\n"
        "files = [m.__file__ for m in ours.values() if getattr(m, '__file__', None)]\n"
        "assert len(files) == len(set(files)), 'a module loaded twice'\n"
        "print('ok')"
    )
    out = subprocess.run(python_code(code), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_python_m_runs_an_old_path_as_its_home():
    """``python -m fastconv.<old>`` runs the module at its home as __main__ (here one that does
    nothing as __main__, as before the move), not a traceback from the finder."""
    for old in ("fastconv.serve", "fastconv.plots"):
        out = subprocess.run(python_module(old), capture_output=True, text=True, timeout=120)
        assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), (old, out.stderr)


def test_a_path_that_never_existed_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("fastconv.no_such_module")


@pytest.mark.parametrize("module", sorted(STAYED))
def test_documented_names_import_from_their_path(module):
    mod = importlib.import_module(module)
    missing = [name for name in STAYED[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"


@pytest.mark.parametrize("module", WITH_ALL)
def test_every_name_in_all_imports(module):
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names {missing}, which it does not have"


def test_naive_has_the_layers_of_fast():
    """One import swaps the two paths (conv_algorithm, which names fast's choice, is fast's alone)."""
    fast, naive = importlib.import_module("fastconv.fast"), importlib.import_module("fastconv.naive")
    assert [name for name in fast.__all__ if not hasattr(naive, name)] == ["conv_algorithm"]


# ------------------------------------------------------------------ the tests mirror the package
TESTS = Path(__file__).resolve().parent


def test_test_folders_mirror_the_package_and_are_on_the_tests_pythonpath():
    """A folder of tests/ is named after the package of fastconv whose code its files test;
    every folder that holds test modules is on pytest's ``pythonpath`` (pyproject.toml), since
    the test modules import each other and tests/_helpers.py by module name; and no two test
    modules share a basename (under pytest's prepend import mode the second would be refused
    as the first)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    pythonpath = {(TESTS.parent / entry).resolve() for entry in config["tool"]["pytest"]["ini_options"]["pythonpath"]}
    modules = [path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts]
    folders = {path.parent for path in modules}
    assert TESTS in folders and folders <= pythonpath, sorted(map(str, folders - pythonpath))
    assert [folder.name for folder in folders - {TESTS} if not (PACKAGE / folder.name).is_dir()] == []
    names = [path.name for path in modules]
    assert sorted({name for name in names if names.count(name) > 1}) == []


# ------------------------------------------------------------------ underscore names across modules
#: Crossings that remain, each with its reason ("module: imported name").
ALLOWED: set = set()


def _module_names():
    """{dotted module name: (path, is a package __init__)} of every .py file in fastconv/."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def crossings(module, source, is_package, modules):
    """The underscore names ``module`` (its ``source``) takes from other fastconv modules:
    ``from .x import _name`` and ``x._name`` for an imported fastconv module x. A private
    *module* (``from . import _files``) is a module, not a name, and is not counted; neither is
    a compiled one (``kernels._im2col``)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    tree = ast.parse(source)
    aliases, found = {}, []

    def is_module(dotted):
        return (
            dotted in modules or dotted == "fastconv.kernels._im2col" or dotted.startswith("fastconv.kernels._im2col_")
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("fastconv"):
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                if is_module(full):
                    aliases[a.asname or a.name] = full
                elif _is_private(a.name) and base != module:
                    found.append(full)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fastconv"):
                    aliases[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if _is_private(node.attr) and target != module and not is_module(f"{target}.{node.attr}"):
                found.append(f"{target}.{node.attr}")
    return found


def test_the_scan_finds_a_crossing():
    modules = {"fastconv.a": None, "fastconv.b": None, "fastconv._files": None}
    assert crossings("fastconv.a", "from .b import _helper, public\n", False, modules) == ["fastconv.b._helper"]
    assert crossings("fastconv.a", "from . import b\nb._helper()\n", False, modules) == ["fastconv.b._helper"]
    assert crossings("fastconv.a", "from . import b as B\nB._x\n", False, modules) == ["fastconv.b._x"]
    assert crossings("fastconv.a", "from . import _files\n_files.atomic_write\n", False, modules) == []
    assert crossings("fastconv.a", "def _own(): pass\n_own()\n", False, modules) == []


def test_no_module_uses_another_modules_underscore_names():
    modules = _module_names()
    seen = set()
    for module, (path, package) in sorted(modules.items()):
        for name in crossings(module, path.read_text(), package, modules):
            seen.add(f"{module}: {name}")
    # (an entry of ALLOWED that no longer occurs is harmless: the serve work may remove them first)
    assert seen - ALLOWED == set(), "underscore names used across modules (make them public, or move them)"


# ------------------------------------------------------------------ one real-number check
NOT_NUMBERS = {"str": "0.5", "none": None, "bool": True, "np-bool": np.True_, "list": [0.5], "complex": 1j}
BAD_VALUES = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": -float("inf"),
    "beyond-float": 10**400,
    "out-of-range": 2.0,
    "np-float32-out-of-range": np.float32(-1),
}


@pytest.mark.parametrize("value", NOT_NUMBERS.values(), ids=NOT_NUMBERS.keys())
def test_check_number_refuses_a_non_number_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^p must be a number in \[0, 1\], got"):
        check_number(value, "p", lambda v: 0 <= v <= 1, "a number in [0, 1]")


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_check_number_refuses_a_bad_value_with_a_value_error(value):
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got"):
        check_number(value, "p", lambda v: 0 <= v <= 1, "a number in [0, 1]")


def test_check_number_gives_a_python_float():
    for value in (1, np.float32(0.25), np.int64(0), 0.5):
        got = check_number(value, "p", lambda v: 0 <= v <= 1, "a number in [0, 1]")
        assert type(got) is float and got == float(value)


def _tiny_solver_data():
    from fastconv.models import Sequential

    model = Sequential("fc", input_shape=(1, 2, 2), num_classes=2, seed=0)
    return model, {"X_train": np.zeros((4, 1, 2, 2), np.float32), "y_train": np.array([0, 1, 0, 1])}


def test_every_caller_uses_the_one_check():
    """The callers that wrote the check inline before: a non-number is a TypeError, an infinite
    value a ValueError (the models' and layer dicts' checks took inf before)."""
    from fastconv import fast, optim
    from fastconv.compat import cs231n, sichkar
    from fastconv.models import Sequential
    from fastconv.solver import Solver

    w = np.zeros(3)
    with pytest.raises(TypeError, match=r"config\['learning_rate'\]"):
        optim.sgd(w, w, {"learning_rate": np.True_})
    with pytest.raises(TypeError, match="lr_decay"):
        Solver(*_tiny_solver_data(), lr_decay="0.9")
    x = np.zeros((2, 3, 2, 2))
    with pytest.raises(TypeError, match=r"bn_param\['momentum'\]"):
        fast.spatial_batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train", "momentum": np.False_})
    with pytest.raises(TypeError, match=r"dropout_param\['p'\]"):
        cs231n.dropout_forward(x, {"mode": "train", "p": np.True_})
    with pytest.raises(TypeError, match="^regularization must be a number"):
        sichkar.ConvNet1(regularization=np.True_)
    with pytest.raises(ValueError, match="^reg must be a number >= 0"):
        Sequential("fc", input_shape=(1, 2, 2), num_classes=2, reg=float("inf"))
    with pytest.raises(ValueError, match=r"eps must be a number > 0"):
        Sequential([{"type": "batchnorm", "eps": float("inf")}], input_shape=(1, 2, 2), num_classes=2)
    # kept where tests pin a ValueError for a non-number (tests/engine/test_api_errors.py, test_models.py)
    with pytest.raises(ValueError, match=r"^p \(the drop probability\)"):
        fast.dropout_forward(x, np.True_)


# ------------------------------------------------------------------ batchnorm's rules in one home
BAD_BN_PARAMS = {
    "momentum": ({"mode": "train", "momentum": 1.5}, ValueError),
    "eps-string": ({"mode": "train", "eps": "1e-5"}, TypeError),
    "eps-inf": ({"mode": "train", "eps": float("inf")}, ValueError),
    "running-mean-shape": ({"mode": "train", "running_mean": np.zeros(2)}, ValueError),
    "running-var-int": ({"mode": "test", "running_var": np.ones(3, dtype=np.int64)}, TypeError),
}


def _synced(layers):
    from fastconv.training.distributed import SyncedLayers

    return SyncedLayers(layers, _OneRank(), 0, 2, 2)


@pytest.mark.parametrize("bn_param, exc", BAD_BN_PARAMS.values(), ids=BAD_BN_PARAMS.keys())
def test_every_batchnorm_gives_the_same_error_for_a_bad_bn_param(bn_param, exc):
    from fastconv import fast, naive
    from fastconv.compat import cs231n

    x, gamma, beta = np.zeros((2, 3, 2, 2)), np.ones(3), np.zeros(3)
    messages = set()
    for forward in (
        naive.spatial_batchnorm_forward,
        fast.spatial_batchnorm_forward,
        cs231n.spatial_batchnorm_forward,
        _synced(fast).spatial_batchnorm_forward,
    ):
        with pytest.raises(exc) as info:
            forward(x, gamma, beta, dict(bn_param))
        messages.add(str(info.value))
    assert len(messages) == 1, messages


# ------------------------------------------------------------------ distributed through layer_module
class _OneRank:
    """A DataParallel of one rank, without MPI: the collectives of one process."""

    class comm:
        @staticmethod
        def Get_size():
            return 1

        @staticmethod
        def Allgather(send, receive):
            receive[0] = send

        @staticmethod
        def Allreduce(flag, buffer):
            pass

    MPI = types.SimpleNamespace(IN_PLACE=object())

    def __init__(self):
        self.seconds = {"batchnorm_sync": 0.0}


@pytest.mark.parametrize("layers", ["conv4x3-bn-relu-dropout0.3-fc", "fc6-bn-relu-dropout0.5-fc"])
def test_synced_layers_handed_in_as_layer_module_train_as_one_process(layers):
    """One rank's SyncedLayers, handed to the network as its layer_module, gives the loss and
    gradients of the network's own layers (the same dropout draws, the same batch statistics)."""
    from fastconv.models import Sequential
    from fastconv.training.distributed import SyncedLayers

    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((5, 2, 6, 6)), rng.integers(0, 3, 5)
    own, synced = (Sequential(layers, input_shape=(2, 6, 6), num_classes=3, seed=1, dtype=np.float64) for _ in range(2))
    synced.layer_module = SyncedLayers(synced.layer_module, _OneRank(), 0, 5, 5)
    (loss_a, grads_a), (loss_b, grads_b) = own.loss(X, y), synced.loss(X, y)
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    for name in grads_a:
        np.testing.assert_allclose(grads_b[name], grads_a[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for name in own.buffers:
        np.testing.assert_allclose(synced.buffers[name], own.buffers[name], rtol=1e-12, err_msg=name)


def test_layer_types_read_no_distributed_attribute():
    """The seam is layer_module: nothing plants or reads ``model.distributed``."""
    for path in (PACKAGE / "training" / "model_layers.py", PACKAGE / "training" / "distributed.py"):
        source = path.read_text()
        assert (
            '"distributed"' not in source and "net.distributed" not in source and "model.distributed" not in source
        ), path.name


# ------------------------------------------------------------------ the model protocol
def test_the_model_protocol_is_a_typing_protocol():
    from fastconv.models import Sequential
    from fastconv.training.model_adapter import TutorialModel, solver_model
    from fastconv.training.model_state import SolverModel

    model = Sequential("fc", input_shape=(1, 2, 2), num_classes=2, seed=0)
    assert isinstance(model, SolverModel) and solver_model(model) is model

    class Tutorial:
        def __init__(self):
            self.params = {"W": np.zeros((4, 2))}

        def loss(self, X, y=None):
            scores = X.reshape(len(X), -1) @ self.params["W"]
            return scores if y is None else (0.0, {"W": np.zeros((4, 2))})

    tutorial = Tutorial()
    assert not isinstance(tutorial, SolverModel)
    wrapped = solver_model(tutorial)
    assert isinstance(wrapped, TutorialModel) and isinstance(wrapped, SolverModel)
    assert wrapped.state_manifest() == {"params/W": {"shape": [4, 2], "dtype": "float64"}}


def test_serve_does_not_load_the_trainer():
    """fastconv serve imports neither the trainer (argparse options come from apps/cli_args.py)
    nor the Solver; the check fails if apps/serve.py imports apps/train_cli.py again."""
    code = (
        "import sys, fastconv.apps.serve\n"
        "trainer = ('fastconv.apps.train_cli', 'fastconv.solver', 'fastconv.apps.plots')\n"
        "loaded = [m for m in trainer if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run(python_code(code), capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", out.stdout
