"""PyTorch in a child process of its own, driven case by case from the benchmark.

Why not in the benchmark's process: ``import fastconv`` tunes the OpenMP and
OpenBLAS runtimes for fastconv (it sets OMP_WAIT_POLICY and
OPENBLAS_THREAD_TIMEOUT unless the user did), and a process has one OpenMP
runtime, configured once when it loads. PyTorch, which runs on the same
OpenMP runtime, would be measured under fastconv's settings instead of its
own (its spinning OpenMP workers are part of its speed). So the peer starts
from the environment the benchmark process was started with
(/proc/self/environ), imports torch and numpy before anything of fastconv,
and times its own runs; the benchmark still interleaves them with the other
contenders (A B C A B C ...) and checks the peer's results against
fastconv's before timing.

The peer is started through ``fastconv.io.child``: whatever the current
directory, it imports the same fastconv as the benchmark (its hello says
which, ``fastconv_path``).

Protocol: one JSON object per line, requests on the child's stdin, replies
on a private copy of its stdout (the child's own prints go to stderr).
Results are passed back as an .npz file (allow_pickle=False).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from ..io.child import python_code
from .common import spec_to_dict

_BOOTSTRAP = """\
import os
start_env = dict(os.environ)
try:
    import torch
except Exception as exc:
    torch, error = None, f"{type(exc).__name__}: {exc}"
else:
    error = None
import numpy
from PEER_MODULE import serve
raise SystemExit(serve(torch, error, start_env))
""".replace("PEER_MODULE", __name__)  # not str.format: the child's code holds an f-string's braces


def original_environment():
    """The environment this process was started with, before ``import fastconv`` changed it.

    Falls back to the current environment where /proc/self/environ is unreadable.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environ), False
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env, True


def _scratch_dir():
    """/dev/shm (memory) when it has room for the largest results (a few hundred MiB), else the temp dir.

    Containers often mount a 64 MiB /dev/shm.
    """
    try:
        if shutil.disk_usage("/dev/shm").free > 1 << 30:
            return "/dev/shm"
    except OSError:
        pass
    return None


class TorchPeer:
    """The parent's handle on the child process."""

    def __init__(self, extra_env=None):
        env, self.clean_env = original_environment()
        env.update(extra_env or {})
        self.tmp = tempfile.mkdtemp(prefix="fastconv-bench-", dir=_scratch_dir())
        self.proc = subprocess.Popen(
            python_code(_BOOTSTRAP), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        hello = self._read()
        if "error" in hello:
            self.close()
            raise ImportError(hello["error"])
        self.info = hello

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the torch peer process ended unexpectedly (exit status {code})")
        return json.loads(line)

    def request(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"torch peer: {reply['error']}")
        return reply

    def prepare(self, spec, dtype, pass_, threads):
        """Set the case up in the child, run it once; returns its results (numpy arrays) and its thread settings."""
        path = os.path.join(self.tmp, "result.npz")
        reply = self.request(
            cmd="case", spec=spec_to_dict(spec), dtype=np.dtype(dtype).name, pass_=pass_, threads=threads, out=path
        )
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(z[f"a{i}"] for i in range(len(z.files)))
        os.unlink(path)
        return arrays, reply["settings"]

    def run(self):
        """One timed run in the child; returns its duration in seconds (measured there)."""
        return self.request(cmd="run")["seconds"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def serve(torch, error, start_env):
    """The child's loop (started by _BOOTSTRAP, after torch and numpy are loaded).

    ``start_env``: the environment torch and numpy were loaded with (importing this
    module imports fastconv, which changes os.environ too late to matter here).
    """
    import gc
    import time

    from threadpoolctl import threadpool_info, threadpool_limits

    from .common import DATA, spec_from_dict
    from .machine import THREAD_ENV, fastconv_path
    from .torch_ops import BUILDERS, as_numpy

    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the protocol
    sys.stdout = sys.stderr

    def reply(**msg):
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    if torch is None:
        reply(error=f"PyTorch is not importable ({error})")
        return 0
    reply(
        ok=True,
        torch=torch.__version__,
        fastconv_path=fastconv_path(),
        parallel_info=torch.__config__.parallel_info(),
        threadpools=threadpool_info(),
        env={k: start_env.get(k) for k in THREAD_ENV},
        malloc_env={k: v for k, v in start_env.items() if k.startswith("MALLOC_")},
    )
    fn = None
    limits = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                return 0
            if msg["cmd"] == "case":
                fn = None
                if limits is not None:
                    limits.restore_original_limits()
                limits = threadpool_limits(limits=msg["threads"])
                torch.set_num_threads(msg["threads"])
                spec = spec_from_dict(msg["spec"])
                data = DATA[msg["spec"]["kind"]](spec, np.dtype(msg["dtype"]))
                fn = BUILDERS[msg["spec"]["kind"]](torch, spec, data, msg["pass_"])
                arrays = as_numpy(fn())
                np.savez(msg["out"], **{f"a{i}": a for i, a in enumerate(arrays)})
                settings = {
                    "requested": msg["threads"],
                    "torch": torch.get_num_threads(),
                    "threadpools": [
                        {k: p.get(k) for k in ("user_api", "internal_api", "prefix", "num_threads")}
                        for p in threadpool_info()
                    ],
                }
                reply(ok=True, settings=settings)
            elif msg["cmd"] == "run":
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    kept = [fn()]
                    seconds = time.perf_counter() - t0
                    kept.clear()  # the result is freed after the clock stopped, as in the parent's runs
                finally:
                    gc.enable()
                reply(seconds=seconds)
            else:
                reply(error=f"unknown command {msg['cmd']!r}")
        except Exception as exc:  # noqa: BLE001  (reported to the parent, which raises it)
            reply(error=f"{type(exc).__name__}: {exc}")
    return 0
