"""``fastconv bench --compare-blas``: the suite under both OpenBLAS kernel choices, side by side.

OpenBLAS picks its kernels once, when it loads, from the CPU or from
``OPENBLAS_CORETYPE``; one process cannot time both. So this runs the same
suite in two child processes of ``fastconv bench``: one with the environment
a user's machine has (the variables below removed: OpenBLAS picks by the CPU,
e.g. SkylakeX on an AVX-512 CPU), one with OpenBLAS forced to its AVX2
("Haswell") kernels, as some machines set. Each child writes its own JSON; this
prints one table with both, and writes a JSON that holds both documents.
Each child's torch peer starts from that child's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from ..io.child import python_module
from . import report, roofline

#: The variables by which OpenBLAS is told which kernels to load.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

#: name -> (what it is, the BLAS_ENV values; None removes a variable).
SETTINGS = {
    "cpu": ("OpenBLAS picks by the CPU, as on a user's machine", {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}),
    "haswell": ("OpenBLAS forced to its AVX2 kernels", {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}),
}


def child_env(setting, base=None):
    """The environment of the child for ``setting`` (a key of SETTINGS)."""
    env = dict(os.environ if base is None else base)
    for name, value in SETTINGS[setting][1].items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def child_argv(sel, args):
    """The ``fastconv bench`` options of this run, for a child (without --compare-blas and --out)."""
    argv = []
    for flag, key in (
        ("--workload", "workloads"),
        ("--dtype", "dtypes"),
        ("--threads", "threads"),
        ("--pass", "passes"),
        ("--contenders", "contenders"),
    ):
        argv += [flag, ",".join(map(str, sel[key]))]
    argv += [
        "--repeats",
        str(sel["repeats"]),
        "--warmup",
        str(sel["warmup"]),
        "--pause",
        str(sel["pause"]),
        "--naive",
        sel["naive"],
        "--algorithm",
        args.algorithm,
        "--naive-images",
        str(args.naive_images),
        "--naive-repeats",
        str(args.naive_repeats),
    ]
    for flag in ("quick", "torch_in_process", "keep_freed_memory", "no_chart"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    return argv


def run_compare(sel, args, json_path, progress):
    """Run both children, print the joint table; the exit status of the first child that failed, else 0."""
    docs = {}
    with tempfile.TemporaryDirectory(prefix="fastconv-compare-") as tmp:
        for name, (what, _) in SETTINGS.items():
            out = os.path.join(tmp, f"{name}.json")
            progress(f"--compare-blas: the suite with {what} ({name})")
            cmd = python_module("fastconv", "bench", *child_argv(sel, args), "--out", out, "--no-chart")
            # The child's table goes to our stderr (file descriptor 2; our stdout gets the joint table).
            proc = subprocess.run(cmd, env=child_env(name), stdout=2)
            if proc.returncode != 0:
                print(f"fastconv bench --compare-blas: the {name} run exited with {proc.returncode}", file=sys.stderr)
                return proc.returncode
            with open(out, encoding="utf-8") as f:  # our own child's file, in our temporary folder
                docs[name] = json.load(f)
    doc = {
        "schema": "fastconv-bench-compare/1",
        "runs": docs,
        "settings": {name: {"what": what, "env": env} for name, (what, env) in SETTINGS.items()},
    }
    report.write_json(json_path, doc)
    print(compare_table(docs))
    print()
    print(COMPARE_LEGEND)
    print(f"\nBoth runs: {json_path}")
    return 0


def _key(r):
    return (r["workload"], r["dtype"], r["threads"], r["pass"])


def compare_table(docs):
    """One row per case; per setting, fast's and torch's median ms, the ratios fast/torch and
    fast/gemm and fast's fraction of the machine's peak (measured by that run)."""
    names = list(docs)
    first = next(iter(docs.values()))
    cpu = first["machine"]["cpu"]
    head = ["workload", "dtype", "threads", "pass"]
    for name in names:
        kernels = docs[name]["threads"]["openblas_kernels"]
        head += [f"fast ms ({kernels})", "torch ms", "fast/torch", "fast/gemm", "fast %peak"]
    family = f"family/model {cpu['family_model']}, " if cpu.get("family_model") else ""
    rows = [
        f"CPU: {cpu['model']} ({family}{' '.join(cpu['flags'])})",
        *(f"{name}: {roofline.describe(docs[name].get('roofline'))}" for name in names),
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * len(head)) + " |",
    ]
    by_setting = {name: {_key(r): r for r in docs[name].get("results", [])} for name in names}
    for key in by_setting[names[0]]:
        cells = [key[0], key[1], str(key[2]), key[3]]
        for name in names:
            r = by_setting[name].get(key, {})
            c = r.get("contenders", {})
            med = {k: c[k]["median_s"] if k in c else None for k in ("fast", "torch", "gemm")}
            cells += [
                report.fmt_ms(med["fast"]),
                report.fmt_ms(med["torch"]),
                report.fmt_ratio(report.ratio(med["fast"], med["torch"])),
                report.fmt_ratio(report.ratio(med["fast"], med["gemm"])),
                roofline.fmt_fraction(r.get("fraction_of_peak", {}).get("fast")),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


COMPARE_LEGEND = (
    "--compare-blas: the same suite run twice, in two processes one after the other, "
    "under the OpenBLAS kernels each column names ("
    + "; ".join(f"{name}: {what}" for name, (what, _) in SETTINGS.items())
    + "). Ratios are within one run (side by side, interleaved); across the two runs compare "
    "ratios, not times, as the machine may have changed its pace in between."
)
