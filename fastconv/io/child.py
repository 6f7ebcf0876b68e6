"""Command lines for Python child processes that import the installed fastconv, from any folder.

``python -c CODE`` and ``python -m MODULE`` put the current directory first on the
child's ``sys.path``: started from a checkout's root, such a child imports the source
folder ``fastconv/`` instead of the installed package (no compiled kernels there, or
other code). ``-P``, which leaves that entry out, exists from Python 3.11 on, and
fastconv supports 3.10; so every child starts with a short ``-c`` prelude that drops
the entry before anything is imported, and appends the folder that holds this
process's fastconv when it is not on the path already (a source tree run without an
install): the child imports the parent's fastconv. It keeps the parent's current
directory, environment and arguments, relative paths included.

fastconv's own children (the benchmark's torch peer and memory child) start through
these, and so do the tests' (fuzz workers, command-line runs). A script run by its
absolute path (``python /abs/folder/script.py``) needs neither: its own folder goes
first on its sys.path, not the current directory.
"""

import os
import sys

#: The folder that holds this fastconv package (site-packages, or a source tree): two levels
#: above this file's folder, fastconv/io/.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# -c puts "" (the current directory) at sys.path[0], unless -P / PYTHONSAFEPATH (3.11+) left it out;
# _ROOT goes last, so that it adds this fastconv where nothing else provides one and shadows nothing.
_PRELUDE = (
    "import sys\nif not getattr(sys.flags, 'safe_path', False):\n    del sys.path[0]\n"
    f"if {_ROOT!r} not in sys.path:\n    sys.path.append({_ROOT!r})\n"
)


def python_code(code, *args, python=None):
    """The argv of ``python -c code args...`` without the current directory on sys.path.

    ``args`` become ``sys.argv[1:]``; ``python`` defaults to this interpreter.
    """
    return [python or sys.executable, "-c", _PRELUDE + code, *map(str, args)]


def python_module(module, *args, python=None):
    """The argv of ``python -m module args...`` without the current directory on sys.path."""
    code = f"import runpy\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    return python_code(code, *args, python=python)
