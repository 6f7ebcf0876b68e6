"""The ``fastconv`` command (also ``python -m fastconv``).

Subcommands:
  demo      time fastconv.naive against fastconv.fast on a CIFAR-10-sized batch
  bench     the benchmark suite (fastconv/bench/)
  train     train a network on MNIST / Fashion-MNIST / CIFAR-10
  evaluate  test accuracy of a trained model
  predict   classify image files or a .npy batch with a trained model
  summary   a model's layers, parameters, FLOPs and activation memory (a spec or a trained model)
  serve     try a trained model in the browser: draw or upload, see its answer
  config    print how fastconv was built (extension, OpenMP, BLAS, threads)
"""

import argparse
import importlib
import sys

# name -> (module, help). Each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "demo": ("fastconv.apps.demo", "time naive against fast convolution on a CIFAR-10-sized batch"),
    "bench": ("fastconv.bench.cli", "run the benchmark suite (naive, fast, GEMM limit, PyTorch)"),
    "train": ("fastconv.apps.train_cli", "train a network on a real data set"),
    "evaluate": ("fastconv.apps.train_cli:evaluate", "print the test accuracy of a trained model"),
    "predict": ("fastconv.apps.train_cli:predict", "classify image files or a .npy batch"),
    "summary": ("fastconv.apps.train_cli:summary", "print a model's layers, parameters, FLOPs and activation memory"),
    "serve": ("fastconv.apps.serve", "try a trained model in the browser: draw or upload an image, see its answer"),
    "config": ("fastconv.apps.config", "print how fastconv was built and will run"),
}


def _load(target):
    """'pkg.mod' -> module, 'pkg.mod:name' -> the add_arguments_<name>/run_<name> pair."""
    module_name, _, suffix = target.partition(":")
    module = importlib.import_module(module_name)
    if suffix:
        return getattr(module, f"add_arguments_{suffix}"), getattr(module, f"run_{suffix}")
    return module.add_arguments, module.run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="fastconv: a readable, vectorized im2col CNN engine (numpy + Cython).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported (the others may need extras).
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    if chosen not in (None, "config"):  # config reports a bad kernels setting; the others stop at once
        from .kernels.picker import requested

        try:
            requested()
        except ValueError as exc:
            print(f"fastconv {chosen}: error: {exc}", file=sys.stderr)
            return 1
    runners = {}
    for name, (target, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            try:  # a bad setting read at import (FASTCONV_KERNELS=bogus) is one line, as any other
                add_arguments, run = _load(target)
            except (ValueError, ImportError) as exc:
                if "--debug" in argv[: argv.index(name)]:
                    raise
                print(f"fastconv {name}: error: {exc}", file=sys.stderr)
                return 1
            add_arguments(p)
            runners[name] = run
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(runners[args.command](args) or 0)
    except KeyboardInterrupt:
        print("fastconv: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError) as exc:
        if args.debug:
            raise
        print(f"fastconv {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
