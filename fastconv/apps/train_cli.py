"""``fastconv train``, ``fastconv evaluate`` and ``fastconv predict``.

``fastconv train --dataset fashion-mnist`` loads the data (see
``fastconv.datasets`` for where it is looked for), holds out a validation
set, fits the preprocessing on the training split, trains with the Solver
(a checkpoint per epoch) and writes into ``--out``:

* ``model.json`` + ``model.npz``: the trained model (best validation
  accuracy) with its preprocessing and class names;
* ``checkpoints/``: the last checkpoints (``--resume`` continues from them);
* ``.fastconv.lock``: held by the training that owns the folder (``apps.run_folder``);
* ``history.json``: loss per iteration, accuracies per epoch from epoch 0
  (before training: ``epochs + 1`` of them, as CS231n's Solver), epoch times,
  test accuracy, the settings;
* ``loss.png``, ``accuracy.png``, ``confusion.png``, ``filters.png``,
  ``examples.png``, ``dataset.png`` (10 training images per class),
  ``feature_maps.png`` (each layer's maps of the first test image) and
  ``filters.gif`` (the first layer's filters over training) when matplotlib
  (and so Pillow) is installed.

``fastconv evaluate --model DIR`` prints the test accuracy of a saved model,
``fastconv predict --model DIR IMAGE...`` classifies PNG/JPEG files (with
Pillow) or ``.npy`` batches of raw pixel values (0-255).

These commands own their process, so on Linux with glibc they ask malloc to
keep freed memory for reuse (``_keep_freed_memory``): every training step
allocates its activations afresh, and memory handed back to the system costs
a page fault per 4 KiB when touched again (see ``fastconv/apps/malloc.py``).
``FASTCONV_MALLOC_TUNING=0`` turns this off.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..callbacks import EarlyStopping
from ..datasets import SPLITS, TITLES, load_dataset, train_val_split
from ..datasets.folder import load_folder
from ..io.files import read_json, write_json
from ..io.inputs import display_name, quiet_pillow_size_warning, read_image, read_npy
from ..models import MAX_ACTIVATION_BYTES, MAX_PARAMETERS, build_model, load_model
from ..solver import Solver
from ..training.augment import parse_augment
from ..training.model_state import load_prediction_model
from ..training.preprocessing import Preprocessing
from ..training.schedules import parse_schedule
from . import animation, distributed_cli, plots, run_folder
from .cli_args import common_runtime as _common_runtime
from .cli_args import nonneg_float as _nonneg_float
from .cli_args import nonneg_int as _nonneg_int
from .cli_args import positive_float as _positive_float
from .cli_args import positive_int as _positive_int
from .cli_args import thread_limit as _thread_limit
from .malloc import keep_freed_memory
from .predict import class_probabilities

DATASETS = ("fashion-mnist", "mnist", "cifar10")
MAX_GIF_FRAMES = 100
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")

_EPILOG = """\
models (--model):
  convnet1   conv(32 7x7) - relu - maxpool 2x2 - fc(100) - relu - fc  (CS231n's ConvNet1;
             --num-filters, --filter-size, --hidden-dim change it)
  fc         fc(500) - sigmoid - fc(50) - sigmoid - fc  (the tutorials' 784-500-50-10 net)
  <spec>     layers joined by '-':
               conv<F>x<k>[s<stride>][p<pad>]  F filters k x k (pad defaults to "same")
               bn                              batch normalization
               relu | sigmoid                  activations
               maxpool<k>[s<stride>]           max pooling (stride defaults to k)
               avgpool<k>[s<stride>]           average pooling
               dropout[<p>]                    dropout with drop probability p (0.5)
               fc[<units>]                     affine; a bare 'fc' is the output layer,
                                               appended when the spec ends otherwise
             e.g. conv32x3-bn-relu-maxpool2-conv64x3-bn-relu-maxpool2-fc256-relu-dropout0.3-fc
             (conv-bn-maxpool2-relu is the same function as conv-bn-relu-maxpool2, and cheaper)
  size limits: at most {max_parameters:,} parameters and {max_activation_mib} MiB per image (input,
             layer outputs and one im2col matrix), checked before anything is allocated

a Fashion-MNIST recipe (its measured test accuracy and time: README.md, "Training"):
  fastconv train --model conv32x3-bn-maxpool2-relu-conv64x3-bn-maxpool2-relu-fc256-bn-relu-dropout0.3-fc \\
      --epochs 12 --batch-size 128 --val-size 0 --threads 2 --optimizer adamw --weight-decay 0.05 \\
      --lr 3e-3 --lr-schedule onecycle --augment flip --label-smoothing 0.1

learning-rate schedules (--lr-schedule SPEC, the rate of each update from --lr; instead of --lr-decay):
  constant         --lr throughout
  exp:G            times G after each epoch (--lr-decay G)
  step:E:G         times G after every E epochs
  cosine[:FLOOR]   per update, half a cosine from --lr down to FLOOR * --lr at the end (FLOOR in [0, 1), 0)
  onecycle[:DIV]   per update, up from --lr / DIV to --lr over the first 30 %, then down to --lr / (DIV * 1e4)
                   (DIV > 1, default 25)
  --warmup EPOCHS  any of them (or --lr-decay) ramped up linearly over the first EPOCHS epochs
  e.g. --lr-schedule cosine --warmup 1; loss.png shows the rate of each iteration

augmentation (--augment SPEC, on each training batch, drawn from the run's seed; augmented.png shows it):
  crop<P>          pad with P black pixels and take a random window of the image's size (a shift by up
                   to P pixels; 1 <= P <= 64)
  flip             mirror left-right, half of the images
  joined by ',', e.g. --augment crop4,flip (flip suits objects and clothes, not digits)

early stopping (--early-stop PATIENCE): the run ends after PATIENCE epochs without a better validation
accuracy (--early-stop-on val_loss: a lower validation loss); the model saved is the best epoch's, and
history.json's early_stopped says after which epoch it stopped.

your own images (--data DIR or --data FILE.npz): DIR holds a folder per class of PNG/JPEG files (the class
names are the folder names), or train/ and test/ folders that each hold them (otherwise a fifth of each
class is the test set, drawn with --seed); every class needs 2 images or more. The images take the first
one's size and channels; others are refused unless --resize. At most 200,000 images of 32 MiB and
512x512 pixels each. An .npz holds x_train, y_train, x_test, y_test (images (N, C, H, W) or (N, H, W),
pixel values 0-255, integer labels 0..K-1) and optionally class_names, a 1-D unicode array of K unique
names of 1 to 64 printable characters (otherwise the classes are "0".."K-1"; np.savez(..., class_names=
np.array(["cat", "dog"]))). predict and serve take the model and show the class names.

several processes, on one machine or more: mpiexec -n K fastconv train <the same options> (pip install
"fastconv[mpi]"; --batch-size stays the global batch; README.md, "More than one machine").

data: $FASTCONV_DATA/<dataset>/, ~/.cache/fastconv/<dataset>/, /usr/share/datasets/fashion-mnist/
(Debian package dataset-fashion-mnist); otherwise the official files are downloaded (SHA-256 checked).

outputs in --out: model.json + model.npz, checkpoints/, history.json, loss.png, accuracy.png,
confusion.png, filters.png, examples.png, dataset.png (10 training images per class), feature_maps.png
(each layer's maps of the first test image), filters.gif (the first layer's filters over training, at
most {max_frames} frames; with --resume it starts where the run resumed); the pictures need matplotlib.
One training owns the folder while it runs (a lock: a second one into it fails at once). A folder
that holds a saved model or checkpoints is never replaced silently: --resume continues its run,
--overwrite replaces it.

--resume refuses, naming it, a setting that shapes the result other than the run's own:
{result_settings}
and the training data itself (--data's images too, wherever they are). --epochs may differ (to train
for longer; not with --lr-schedule cosine or onecycle, whose rates follow the run's length), and so may --limit-test,
--threads, --impl and the output options (bitwise equality with an uninterrupted run holds for the
same --impl and --threads). history.json records the settings actually used.
"""

#: The options that shape a run's result: a checkpoint records them, --resume refuses other values.
RESULT_SETTINGS = (
    "dataset",
    "model",
    "num_filters",
    "filter_size",
    "hidden_dim",
    "reg",
    "loss",
    "dtype",
    "preprocess",
    "seed",
    "batch_size",
    "optimizer",
    "lr",
    "lr_decay",
    "val_size",
    "val_split",
    "limit_train",
)
#: Newer options that shape the result: recorded (and compared by --resume) when given, so that runs
#: begun before they existed still resume.
NEWER_RESULT_SETTINGS = (
    "lr_schedule",
    "warmup",
    "early_stop",
    "early_stop_on",
    "augment",
    "weight_decay",
    "label_smoothing",
)


def _option(dest):
    return "--" + dest.replace("_", "-")


def _data_arguments(parser, required=False):
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None if not required else "fashion-mnist",
        help="data set (default: fashion-mnist" + ("" if required else ", or the one the model was trained on") + ")",
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="look for the data set in DIR/<dataset>/ and DIR (instead of the default places)",
    )
    if required:  # train: your own images
        parser.add_argument(
            "--data",
            metavar="DIR|FILE.npz",
            default=None,
            help="train on your own images instead of --dataset: a folder of class folders of "
            "PNG/JPEG files (with train/ and test/ folders, or a test split drawn with "
            "--seed), or an .npz with x_train, y_train, x_test, y_test (see below)",
        )
        parser.add_argument(
            "--resize",
            action="store_true",
            help="--data: resize images to the first image's size (default: refuse other sizes)",
        )
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the files are not found")


# ============================================================================ train
def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Train a network on MNIST, Fashion-MNIST or CIFAR-10; write the model,\n"
        "checkpoints, history.json and PNG plots."
    )
    parser.epilog = _EPILOG.format(
        max_parameters=MAX_PARAMETERS,
        max_activation_mib=MAX_ACTIVATION_BYTES >> 20,
        max_frames=MAX_GIF_FRAMES,
        result_settings=textwrap.fill(
            ", ".join(map(_option, RESULT_SETTINGS + NEWER_RESULT_SETTINGS)) + ",",
            width=98,
            initial_indent="  ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        ),
    )
    _data_arguments(parser, required=True)
    parser.add_argument(
        "--model", default="convnet1", metavar="convnet1|fc|SPEC", help="architecture (default convnet1; see below)"
    )
    parser.add_argument("--epochs", type=_positive_int, default=5, help="epochs (default 5)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="minibatch size (default 64)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="update rule (default adam)")
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: 1e-3 for adam and rmsprop, 1e-2 for sgd and momentum)",
    )
    parser.add_argument(
        "--lr-decay",
        type=_positive_float,
        default=None,
        help="learning rate factor after each epoch (default 0.95; the same as --lr-schedule exp:G)",
    )
    parser.add_argument(
        "--lr-schedule",
        default=None,
        metavar="SPEC",
        help="learning rate per update (instead of --lr-decay): constant | exp:G | step:E:G | "
        "cosine[:FLOOR] | onecycle[:DIV] (see below)",
    )
    parser.add_argument(
        "--warmup",
        type=_nonneg_float,
        default=0.0,
        metavar="EPOCHS",
        help="linear learning-rate warmup over the first EPOCHS epochs (may be fractional)",
    )
    parser.add_argument(
        "--early-stop",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better validation accuracy (or loss, with "
        "--early-stop-on val_loss); the saved model is the best epoch's",
    )
    parser.add_argument(
        "--early-stop-on",
        choices=("val_acc", "val_loss"),
        default="val_acc",
        help="what --early-stop watches and the best model is chosen by (default val_acc)",
    )
    parser.add_argument(
        "--augment",
        default=None,
        metavar="SPEC",
        help="augment each training batch: crop<P> (shift by up to P pixels, zero-padded), "
        "flip (mirror left-right), joined by ',' (e.g. crop4,flip)",
    )
    parser.add_argument(
        "--weight-decay",
        type=_nonneg_float,
        default=None,
        help="--optimizer adamw: decoupled weight decay of every parameter (default 0.01)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=_nonneg_float,
        default=0.0,
        metavar="E",
        help="softmax loss with targets (1 - E) on the label + E / classes on each class (0 <= E < 1; default 0)",
    )
    parser.add_argument(
        "--reg",
        type=_nonneg_float,
        default=0.0,
        help="L2 regularization strength of the weights, in the loss (default 0)",
    )
    parser.add_argument("--loss", choices=("softmax", "svm"), default="softmax", help="loss (default softmax)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--preprocess",
        choices=Preprocessing.MODES,
        default="channel",
        help="input normalization, statistics from the training split (default channel: "
        "per-channel mean and std; pixel: the mean image and per-pixel std, as the "
        "numpy tutorials; mean_image: CS231n's mean image; scale: x / 255)",
    )
    parser.add_argument("--num-filters", type=_positive_int, default=None, help="convnet1: conv filters (32)")
    parser.add_argument("--filter-size", type=_positive_int, default=None, help="convnet1: filter size (7)")
    parser.add_argument("--hidden-dim", type=_positive_int, default=None, help="convnet1: hidden units (100)")
    parser.add_argument(
        "--val-size",
        type=_nonneg_int,
        default=None,
        help="validation images held out of the training split (default: 5000, or a tenth "
        "of the training images when fewer than 50000; 0 trains on all of them)",
    )
    parser.add_argument(
        "--val-split",
        choices=SPLITS,
        default="random",
        help="which training images validate: a random subset (default), or the last ones "
        "(the tutorials' fixed split: --val-size 1000 --val-split last)",
    )
    parser.add_argument(
        "--limit-train",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use only N training images (a random subset), for quick runs",
    )
    parser.add_argument(
        "--limit-test", type=_positive_int, default=None, metavar="N", help="evaluate on only the first N test images"
    )
    parser.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of initialization, shuffling and split (default 0)"
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/<dataset>-<model>)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with the same settings (see below)",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="train afresh in an --out that holds a run: its model, checkpoints, history and plots are deleted first",
    )
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots and the GIF")
    parser.add_argument(
        "--gif-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="a frame of filters.gif every N iterations (default: as often as keeps the run "
        f"within {MAX_GIF_FRAMES} frames; a smaller N is doubled as often as needed)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (a line per 100 iterations)")
    parser.add_argument("--quiet", action="store_true", help="print only the final result")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print the model's summary (a row per layer: output shape, parameters, FLOPs, "
        "activation memory) before training",
    )
    _common_runtime(parser)


def _keep_freed_memory():
    """Ask glibc to keep freed memory for reuse (see fastconv/apps/malloc.py and the module docstring)."""
    return keep_freed_memory()


def _model_slug(name):
    slug = "".join(c if c.isalnum() or c in "._" else "-" for c in name)
    return slug[:60]


def _default_lr(optimizer):
    return 1e-3 if optimizer in ("adam", "rmsprop") else 1e-2


def _load_data(args, name):
    return load_dataset(name, root=args.data_root, download=not args.no_download)


class _Split(NamedTuple):
    """The images a run trains on, validates on and tests on (uint8, as loaded)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def run(args):
    """``fastconv train``: prepare the run folder, load the data, build the model, train, report.
    Started by ``mpiexec -n K``, every rank runs this (``fastconv.apps.distributed_cli``)."""
    if distributed_cli.launched():
        return distributed_cli.run(args, _run)
    return _run(args)


def _run(args, ranks=None):
    _keep_freed_memory()
    ranks = ranks or distributed_cli.ONE_PROCESS
    log = (lambda *a, **k: None) if args.quiet or not ranks.root else print
    _check_options(args)  # before the folder is touched: a bad option or bad --data writes nothing
    out, model_kwargs, lock = _prepare_run(args, ranks)
    with lock, _thread_limit(args.threads or ranks.threads):
        data, split = _load_split(args, log)
        model = _build(args, data, split, model_kwargs, log)
        if args.summary:
            log(model.summary())
        w_before = model.first_layer_weights().copy()
        frames = _filter_frames(args, model, split) if ranks.root else None
        solver, train_seconds = _train(args, model, split, out, log, frames, ranks.comm)
        if ranks.root:
            model.save(out)
        t_eval = time.perf_counter()
        y_pred = ranks.predict(model, split.X_test)
        seconds = {"train_seconds_this_run": train_seconds, "test_seconds": time.perf_counter() - t_eval}
        if ranks.root:
            _report(args, out, data, split, model, solver, w_before, y_pred, seconds, log)
    return 0


def _check_options(args):
    """The training options' specs parsed and checked (ValueError naming the option); the
    parsed ones stored as ``args.schedule`` and ``args.augmentation``."""
    if args.lr_schedule is not None and args.lr_decay is not None:
        raise ValueError("--lr-decay G is --lr-schedule exp:G: give one of them")
    try:
        args.schedule = None if args.lr_schedule is None else parse_schedule(args.lr_schedule, args.warmup)
    except ValueError as exc:
        raise ValueError(f"--lr-schedule: {exc}") from None
    try:
        args.augmentation = parse_augment(args.augment)
    except ValueError as exc:
        raise ValueError(f"--augment: {exc}") from None
    if args.early_stop is not None and args.early_stop <= 0:
        raise ValueError(f"--early-stop: the patience must be a positive number of epochs, got {args.early_stop}")
    if args.early_stop is not None and args.val_size == 0:
        raise ValueError("--early-stop needs validation images: --val-size 0 leaves none")
    if args.weight_decay is not None and args.optimizer != "adamw":
        raise ValueError("--weight-decay applies to --optimizer adamw (for L2 in the loss, use --reg)")
    if not args.label_smoothing < 1:
        raise ValueError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.label_smoothing and args.loss != "softmax":
        raise ValueError("--label-smoothing applies to --loss softmax")
    args.own_data = None
    if args.data is not None:
        args.dataset = None  # the images are the user's
        try:
            args.own_data = load_folder(args.data, resize=args.resize, seed=args.seed)
        except ImportError as exc:
            raise ImportError(f"--data: {exc}") from None


def _prepare_run(args, ranks):
    """The run folder, checked and locked for this run before anything is loaded (see
    ``run_folder.claim``; by rank 0 under MPI), and the convnet1 size options; returns
    (folder, options, lock)."""
    name = args.dataset if args.data is None else _model_slug(Path(args.data).stem)
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{_model_slug(args.model)}"
    model_kwargs = {
        k: getattr(args, k) for k in ("num_filters", "filter_size", "hidden_dim") if getattr(args, k) is not None
    }
    if model_kwargs and args.model != "convnet1":
        raise ValueError("--num-filters, --filter-size and --hidden-dim apply to --model convnet1 only")
    lock = ranks.on_root(lambda: run_folder.claim(out, resume=args.resume, overwrite=args.overwrite))
    # the folder resolved and locked once: the run writes there, wherever --out leads later
    return getattr(lock, "folder", out), model_kwargs, lock


def _load_split(args, log):
    """The data set, and its training images split into training and validation
    (after --limit-train), with the test images (after --limit-test)."""
    t_load = time.perf_counter()
    data = args.own_data if args.own_data is not None else _load_data(args, args.dataset)
    log(
        f"{args.dataset or data.name}: {len(data.X_train)} training and {len(data.X_test)} test images "
        f"{data.input_shape} from {data.source} ({time.perf_counter() - t_load:.1f} s)"
    )
    X_train, y_train = data.X_train, data.y_train
    if args.limit_train is not None and args.limit_train < len(X_train):
        idx = np.sort(np.random.default_rng(args.seed).permutation(len(X_train))[: args.limit_train])
        X_train, y_train = X_train[idx], y_train[idx]
    val_size = args.val_size
    if val_size is None:
        val_size = 5000 if len(X_train) >= 50000 else len(X_train) // 10
    if val_size >= len(X_train):
        raise ValueError(f"--val-size {val_size} leaves no training images (of {len(X_train)})")
    X_tr, y_tr, X_val, y_val = train_val_split(X_train, y_train, val_size, seed=args.seed, method=args.val_split)
    X_test, y_test = data.X_test, data.y_test
    if args.limit_test is not None:
        X_test, y_test = X_test[: args.limit_test], y_test[: args.limit_test]
    return data, _Split(X_tr, y_tr, X_val, y_val, X_test, y_test)


def _build(args, data, split, model_kwargs, log):
    """The model, with its preprocessing fitted on the training split and the class names."""
    prep = Preprocessing.fit(split.X_train, mode=args.preprocess)
    model = build_model(
        args.model,
        data.input_shape,
        data.num_classes,
        reg=args.reg,
        loss=args.loss,
        dtype=args.dtype,
        impl=args.impl,
        seed=args.seed,
        **model_kwargs,
    )
    model.preprocess = prep
    model.class_names = data.class_names
    log(model.describe())
    return model


def _settings(args, split):
    """The run's settings as used: the options, with --lr and --val-size resolved."""
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "schedule", "augmentation", "own_data")}
    settings.update(
        lr=args.lr if args.lr is not None else _default_lr(args.optimizer),
        val_size=len(split.X_val),
        lr_decay=_lr_decay(args),
    )
    if args.optimizer == "adamw":
        settings["weight_decay"] = 0.01 if args.weight_decay is None else args.weight_decay
    return settings


def _lr_decay(args):
    """--lr-decay as used: 0.95 when neither it nor --lr-schedule is given, 1 with a schedule."""
    if args.lr_decay is not None:
        return args.lr_decay
    return 0.95 if args.lr_schedule is None else 1.0


def _run_settings(settings):
    """What a checkpoint records of the options (RESULT_SETTINGS, and the newer ones when used)."""
    recorded = {_option(k): settings[k] for k in RESULT_SETTINGS}
    defaults = {"warmup": 0.0, "early_stop_on": "val_acc", "label_smoothing": 0.0}
    recorded.update(
        {
            _option(k): settings.get(k)
            for k in NEWER_RESULT_SETTINGS
            if settings.get(k) is not None and settings.get(k) != defaults.get(k)
        }
    )
    if settings.get("early_stop") is not None:
        recorded["--early-stop-on"] = settings["early_stop_on"]
    return recorded


def _filter_frames(args, model, split):
    """The recorder of filters.gif's frames (None with --no-plots or without matplotlib)."""
    if args.no_plots or not plots.have_matplotlib():
        return None
    per_epoch = -(-len(split.X_train) // args.batch_size)
    total = args.epochs * per_epoch
    every = args.gif_every or animation.frame_interval(total, MAX_GIF_FRAMES - 1)  # - 1: the last frame
    return animation.FilterFrames(every, MAX_GIF_FRAMES, model.input_shape, per_epoch, last=total)


def _train(args, model, split, out, log, frames=None, comm=None):
    """Train (from the last checkpoint with --resume, which must have been written with the
    same RESULT_SETTINGS), recording ``frames`` of the filters; returns the Solver and the
    seconds it took."""
    ckpt_dir = out / run_folder.CHECKPOINTS
    settings = _settings(args, split)
    lr = settings["lr"]
    optim_config = {"learning_rate": lr}
    if args.optimizer == "adamw":
        optim_config["weight_decay"] = settings["weight_decay"]
    model.label_smoothing = args.label_smoothing
    early_stop = None if args.early_stop is None else EarlyStopping(args.early_stop, args.early_stop_on)
    solver = Solver(
        model,
        {"X_train": split.X_train, "y_train": split.y_train, "X_val": split.X_val, "y_val": split.y_val},
        update_rule=args.optimizer,
        optim_config=optim_config,
        lr_decay=settings["lr_decay"],
        lr_schedule=args.schedule,
        warmup=0.0 if args.schedule is not None else args.warmup,
        early_stop=early_stop,
        augment=args.augmentation,
        batch_size=args.batch_size,
        num_epochs=args.epochs,
        checkpoint_dir=ckpt_dir,
        seed=args.seed,
        verbose=not args.quiet,
        progress=not args.no_progress,
        run_settings=_run_settings(settings),
        comm=comm,
        callbacks=[frames] if frames is not None else None,
        nonfinite_loss="raise",
    )  # a diverging run stops with its clear message
    if args.resume:
        epoch = solver.resume()
        if epoch > args.epochs:
            raise ValueError(
                f"{out}: the run has done {epoch} epochs, more than --epochs {args.epochs}; "
                f"give --epochs {epoch} or more"
            )
        log(f"resuming {out} after epoch {epoch}" if epoch else f"no checkpoint in {ckpt_dir}: starting afresh")
    schedule = (
        f"schedule {solver.lr_schedule.describe()}"
        if solver.lr_schedule is not None
        else f"decay {settings['lr_decay']:g}/epoch"
    )
    log(
        f"training on {len(split.X_train)} images, validating on {len(split.X_val)}: {args.optimizer}, "
        f"lr {lr:g}, {schedule}, batch {args.batch_size}, {args.epochs} epochs, {args.dtype}, "
        f"impl={args.impl}"
        + (f", {args.threads} threads" if args.threads else "")
        + (f", augment {solver.augment.spec()}" if solver.augment is not None else "")
        + (f", early stop {args.early_stop} on {args.early_stop_on}" if args.early_stop else "")
    )
    if frames is not None:  # the filters before this run's first update, then every frames.every
        frames.record(len(solver.loss_history), model.first_layer_weights())
    t_train = time.perf_counter()
    try:
        solver.train()
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: `fastconv train ... --out {out} --resume` continues from the last complete epoch",
            file=sys.stderr,
        )
        raise
    return solver, time.perf_counter() - t_train


def _report(args, out, data, split, model, solver, w_before, y_pred, seconds, log):
    """Write history.json and the plots; print the test accuracy (None in history.json
    when the test split holds no images)."""
    y_test = split.y_test
    test_acc = float(np.mean(y_pred == y_test)) if len(y_test) else None
    history = solver.history()
    history.update(
        dataset=args.dataset if args.data is None else None,
        data=args.data,
        model=args.model,
        architecture=model.describe(),
        settings=_settings(args, split),
        num_train=len(split.X_train),
        num_val=len(split.X_val),
        num_test=len(split.X_test),
        best_epoch=solver.best_epoch,
        best_val_acc=solver.best_val_acc if len(split.X_val) else None,
        early_stopped=solver.early_stopped,
        learning_rate=solver.learning_rates()[: len(solver.loss_history)],
        test_accuracy=test_acc,
        confusion_matrix=plots.confusion_matrix(y_test, y_pred, data.num_classes).tolist(),
        class_names=list(data.class_names),
        **seconds,
        machine={
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    )
    write_json(out / "history.json", history)
    written = []
    if not args.no_plots:
        frames = next((cb for cb in solver.callbacks if isinstance(cb, animation.FilterFrames)), None)
        written = _write_plots(
            out, history, model, w_before, split, y_pred, data, log, frames, solver.augment, args.seed
        )
    epochs = len(solver.epoch_times)
    per_epoch = float(np.mean(solver.epoch_times)) if epochs else float("nan")
    result = (
        f"test accuracy: {test_acc:.4f} ({int(np.sum(y_pred == y_test))}/{len(y_test)})"
        if len(y_test)
        else "no test images: test accuracy not measured"
    )
    print(
        f"{result} after {epochs} epoch{'s' if epochs != 1 else ''} ({per_epoch:.1f} s/epoch, "
        f"{sum(solver.epoch_times):.0f} s of training); model in {out}"
    )
    if written:
        log("plots: " + ", ".join(str(p) for p in written))


def _write_plots(out, history, model, w_before, split, y_pred, data, log, frames=None, augment=None, seed=0):
    if not plots.have_matplotlib():
        log(
            "matplotlib is not installed: skipping the plots (pip install matplotlib, or pip install 'fastconv[train]')"
        )
        return []
    title = f"{TITLES.get(data.name, data.name)}: the first training images of each class"
    written = [
        plots.plot_loss(
            history["loss"],
            out / "loss.png",
            history["iterations_per_epoch"],
            learning_rates=history.get("learning_rate"),
        ),
        plots.plot_accuracy(history["train_acc"], history["val_acc"], out / "accuracy.png"),
        plots.plot_filters(w_before, model.first_layer_weights(), out / "filters.png", model.input_shape),
        plots.plot_class_grid(split.X_train, split.y_train, data.class_names, out / "dataset.png", title=title),
        frames.write_gif(out / "filters.gif") if frames is not None else None,
        plots.plot_augmented(split.X_train, augment, out / "augmented.png", seed=seed) if augment is not None else None,
    ]
    X_test, y_test = split.X_test, split.y_test
    if len(y_test):  # the test-set pictures need test images
        names = data.class_names
        written += [
            plots.plot_confusion(np.asarray(history["confusion_matrix"]), names, out / "confusion.png"),
            plots.plot_examples(X_test, y_test, y_pred, names, out / "examples.png"),
            plots.plot_feature_maps(
                X_test[0],
                plots.feature_maps(model, model.prepare(X_test[:1])[0]),
                out / "feature_maps.png",
                title=f"Feature maps of test image 0 (true: {names[y_test[0]]}, predicted: {names[y_pred[0]]})",
            ),
        ]
    return [p for p in written if p is not None]


# ============================================================================ evaluate
def add_arguments_evaluate(parser):
    parser.add_argument("--model", required=True, metavar="DIR", help="a folder written by `fastconv train`")
    _data_arguments(parser)
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="only the first N test images")
    parser.add_argument("--batch-size", type=_positive_int, default=500)
    _common_runtime(parser)


def _dataset_of(model_dir, given):
    if given:
        return given
    hist = Path(model_dir) / "history.json"
    if hist.is_file():
        try:
            name = read_json(hist, "training history").get("dataset")
        except (ValueError, OSError):
            name = None
        if name in DATASETS:
            return name
    raise ValueError(f"say which data set to evaluate on with --dataset ({'|'.join(DATASETS)})")


def run_evaluate(args):
    _keep_freed_memory()
    with _thread_limit(args.threads):
        model = load_model(args.model, impl=args.impl)
        name = _dataset_of(args.model, args.dataset)
        data = _load_data(args, name)
        X, y = data.X_test, data.y_test
        if args.limit is not None:
            X, y = X[: args.limit], y[: args.limit]
        if data.input_shape != model.input_shape or data.num_classes != model.num_classes:
            raise ValueError(
                f"the model takes {model.input_shape} images in {model.num_classes} classes; "
                f"{name} has {data.input_shape} in {data.num_classes}"
            )
        if len(y) == 0:
            raise ValueError(f"the {name} test set in {data.source} holds no images: nothing to evaluate")
        t0 = time.perf_counter()
        y_pred = model.predict(X, batch_size=args.batch_size, prepare=True)
        seconds = time.perf_counter() - t0
    correct = int(np.sum(y_pred == y))
    print(f"test accuracy: {correct / len(y):.4f} ({correct}/{len(y)}) on {name} ({len(y) / seconds:.0f} images/s)")
    return 0


# ============================================================================ summary
#: The images of the built-in data sets: (input shape, classes).
DATASET_SHAPES = {"fashion-mnist": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}


def add_arguments_summary(parser):
    parser.add_argument(
        "--model",
        required=True,
        metavar="SPEC|RUN",
        help="a layer spec (as fastconv train --model takes) or a folder written by fastconv train",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="fashion-mnist",
        help="a spec's input: the images of this data set (default fashion-mnist)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")


def run_summary(args):
    """``fastconv summary``: the table of ``Sequential.summary()`` for a spec or a trained model."""
    if (Path(args.model) / "model.json").is_file():
        model = load_model(args.model)
    else:
        shape, classes = DATASET_SHAPES[args.dataset]
        model = build_model(args.model, shape, classes, dtype=args.dtype, seed=0)
    print(model.summary())
    return 0


# ============================================================================ predict
def add_arguments_predict(parser):
    parser.add_argument("--model", required=True, metavar="DIR", help="a folder written by `fastconv train`")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="PNG/JPEG files (needs Pillow) or .npy arrays of raw pixel values 0-255: "
        "(N, C, H, W), (N, H, W) for one channel, or one image",
    )
    parser.add_argument("--top", type=_positive_int, default=1, help="show the TOP most likely classes (default 1)")
    parser.add_argument(
        "--invert",
        action="store_true",
        help="invert the pixels (255 - value) before classifying: for dark drawings on a light "
        "background, when the model learned light on dark (MNIST, Fashion-MNIST)",
    )
    _common_runtime(parser)


def _read_input(path, shape, invert):
    """(raw pixel batch (N, C, H, W), note) of one input of `fastconv predict`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{display_name(path)}: no such file")
    if path.lower().endswith(".npy"):
        batch, note = read_npy(path, shape), ""
    else:
        batch, note = read_image(path, shape)
    if invert:
        batch, note = 255 - batch.astype(np.float64 if batch.dtype.kind == "f" else np.int16), note + " (inverted)"
    return batch, note


def _guesses(model, batch, top, names):
    """One "class (probability)" string per image (softmax), or "class (score ...)" (an SVM's
    raw scores, which are no probabilities)."""
    form = "{:.3f}" if model.loss_type == "softmax" else "score {:.3f}"
    return [
        ", ".join(f"{names[k]} ({form.format(p[k])})" for k in np.argsort(-p, kind="stable")[:top])
        for p in class_probabilities(model, batch)
    ]


def run_predict(args):
    """Classify each input; an input that cannot be read is reported (one line on stderr) and the
    others are still classified; the exit code is 1 if any failed, with a count when there were several."""
    _keep_freed_memory()
    quiet_pillow_size_warning()
    failed = 0
    with _thread_limit(args.threads):
        model, names = load_prediction_model(args.model, impl=args.impl)
        top = min(args.top, model.num_classes)
        for path in args.images:
            try:
                batch, note = _read_input(path, model.input_shape, args.invert)
            except (ValueError, OSError) as exc:
                if getattr(args, "debug", False):  # fastconv --debug: the traceback
                    raise
                print(f"fastconv predict: error: {exc}", file=sys.stderr)
                failed += 1
                continue
            for i, guesses in enumerate(_guesses(model, batch, top, names)):
                label = display_name(path) if len(batch) == 1 else f"{display_name(path)}[{i}]"
                print(f"{label}: {guesses}{note}", flush=True)
    if failed and len(args.images) > 1:
        print(f"fastconv predict: {failed} of {len(args.images)} inputs failed", file=sys.stderr)
    return 1 if failed else 0
