"""fastconv: a readable, vectorized im2col CNN engine.

* ``fastconv.naive``: reference layers written as explicit loops.
* ``fastconv.fast``: the same functions on Cython im2col/col2im + BLAS GEMM.
* ``fastconv.compat.cs231n`` / ``fastconv.compat.sichkar``: tutorial names, fast path.

``import fastconv`` never needs the compiled extension; ``import fastconv.fast``
does, and says how to build it when it is missing.

Behind the public faces, the package is grouped by concern: ``fastconv.engine`` (policy),
``fastconv.kernels`` (the compiled loops), ``fastconv.training``, ``fastconv.io`` and
``fastconv.apps`` (docs/architecture.md). The modules that moved there keep the import
paths they had: ``MOVED_MODULES`` below is the one table of them, and importing an old path
gives the module at its new home, the same object (``import fastconv.checkpoints``,
``from fastconv.checkpoints import resume``).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# First of all, before numpy or the kernels load: the OpenMP and OpenBLAS settings that
# fastconv's speed depends on (fastconv/engine/runtimes.py says what and why).
from .engine.runtimes import RUNTIMES as _RUNTIMES

# isort: split
from .apps.config import show_config
from .apps.malloc import keep_freed_memory
from .engine.geometry import conv_output_size

#: OMP_WAIT_POLICY as the kernels' OpenMP runtime runs it ("PASSIVE" unless the user chose
#: another, or a libgomp was loaded before fastconv: see show_config()).
OPENMP_WAIT_POLICY = _RUNTIMES.openmp_wait_policy

#: Old import path -> the module's home: ``import fastconv.<old>`` is that module itself.
MOVED_MODULES = {
    "fastconv.model_state": "fastconv.training.model_state",
    "fastconv.checkpoints": "fastconv.training.checkpoints",
    "fastconv.distributed": "fastconv.training.distributed",
    "fastconv.preprocessing": "fastconv.training.preprocessing",
    "fastconv.schedules": "fastconv.training.schedules",
    "fastconv.augment": "fastconv.training.augment",
    "fastconv.summary": "fastconv.training.summary",
    "fastconv.train_cli": "fastconv.apps.train_cli",
    "fastconv.serve": "fastconv.apps.serve",
    "fastconv.plots": "fastconv.apps.plots",
    "fastconv.animation": "fastconv.apps.animation",
    "fastconv.demo": "fastconv.apps.demo",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The import system's finder and loader for the old paths of ``MOVED_MODULES``: the
    module imported is the one at its home (imported there first), not a second copy."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED_MODULES[spec.name])
        spec.loader_state = module.__spec__  # the import system overwrites __spec__: exec_module restores it
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state

    def get_code(self, fullname):
        """``python -m fastconv.<old>``: run the module at its home as ``__main__``."""
        home = MOVED_MODULES[fullname]
        run = f"import runpy\nrunpy.run_module({home!r}, run_name='__main__', alter_sys=True)\n"
        return compile(run, f"<{fullname}, moved to {home}>", "exec")


# First on sys.meta_path, so that a stale file at an old path (a leftover of an older
# install) can never be imported beside the module at its home.
if not any(type(finder).__name__ == "_MovedModules" for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())

__all__ = ["conv_output_size", "show_config", "keep_freed_memory", "__version__", "OPENMP_WAIT_POLICY", "MOVED_MODULES"]
