"""Command lines for Python child processes that import the installed fastconv, from any folder.

``python -c CODE`` and ``python -m MODULE`` put the current directory first on the
child's ``sys.path``: started from a checkout's root, such a child imports the source
folder ``fastconv/`` instead of the installed package (no compiled kernels there, or
other code). ``-P``, which leaves that entry out, exists from Python 3.11 on, and
fastconv supports 3.10; so every child starts with a short ``-c`` prelude that drops
the entry before anything is imported. The child keeps the parent's current
directory, environment and arguments, relative paths included.

Every Python child of fastconv and of its tests is started through these functions.
"""
import sys

# -c puts "" (the current directory) at sys.path[0], unless -P / PYTHONSAFEPATH (3.11+) left it out.
_PRELUDE = "import sys\nif not getattr(sys.flags, 'safe_path', False):\n    del sys.path[0]\n"


def python_code(code, *args, python=None):
    """The argv of ``python -c code args...`` without the current directory on sys.path.

    ``args`` become ``sys.argv[1:]``; ``python`` defaults to this interpreter.
    """
    return [python or sys.executable, "-c", _PRELUDE + code, *map(str, args)]


def python_module(module, *args, python=None):
    """The argv of ``python -m module args...`` without the current directory on sys.path."""
    code = f"import runpy\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    return python_code(code, *args, python=python)
