"""Command-line arguments shared by the ``fastconv`` commands (train, evaluate, predict, serve):
argparse types with one-line messages, the runtime options, the thread limit. Apart from the
trainer, so that ``fastconv serve`` does not load it."""

import argparse
import contextlib
import math


def argument_type(kind, accept, expected):
    """An argparse type: ``kind(text)`` (int or float), refused unless ``accept(value)``,
    with the message "expected <expected>, got ..." ("expected a number" for a float
    argument given something that is no number at all)."""
    unparsable = expected if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {unparsable}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value if kind is int else text}")
        return value

    return parse


positive_int = argument_type(int, lambda v: v >= 1, "a positive integer")
nonneg_int = argument_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = argument_type(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
nonneg_float = argument_type(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def common_runtime(parser):
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="BLAS and OpenMP threads (default: the libraries' own default)",
    )
    parser.add_argument(
        "--impl",
        choices=("fast", "naive"),
        default="fast",
        help="layer implementation (naive is for checking: thousands of times slower)",
    )


@contextlib.contextmanager
def thread_limit(threads):
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield
