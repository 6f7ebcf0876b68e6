"""Fuzz fastconv's conv and pooling API for a set time (the long run of tests/engine/test_fuzz.py).

    python tests/fuzz_long.py --seconds 600 [--seed S] [--timeout 10] [--json report.json]
    python tests/fuzz_long.py --case SEED INDEX FAMILY     # replay one case, in this process

Cases come from ``tests/_fuzz_cases.py`` (random shapes, dtypes, layouts and
argument values for every conv and pooling function of fastconv.fast,
fastconv.naive and the compat modules) and run in a worker subprocess, so a
segfault or a hang is recorded against its case and the run goes on. Which
build is fuzzed is whatever ``import fastconv`` finds: set
``PYTHONPATH=/path/to/a/debug/copy`` to fuzz a build with bounds checks on
(the report prints ``debug_build``).

Prints: cases run, outcomes (equal / error / memory / fail / crash / hang), every
failure with the id that replays it, the distinct error messages (values
normalized out) with their counts, and the time. Exit code 1 if anything failed.
Not a test module: pytest does not collect it.
"""

import argparse
import json
import os
import sys
import time

import _fuzz_cases as fz  # run as a script, this folder is first on sys.path


def replay(seed, index, family):
    """Rebuild one case and run it here (no crash isolation: for a debugger or a traceback)."""
    case = fz.make_case(seed, index, None if family == "None" else family)
    print(case.describe())
    for impl in case.impls:
        print(f"  {impl.label}: {getattr(impl.forward, '__qualname__', impl.forward)}")
    res = fz.check_case(case)
    print(json.dumps(res, indent=2, default=str))
    return 1 if res["failures"] else 0


def write_json(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to run (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: random, printed)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take (default 10)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--case", nargs=3, metavar=("SEED", "INDEX", "FAMILY"), help="replay one case")
    args = parser.parse_args(argv)
    if args.case:
        return replay(int(args.case[0]), int(args.case[1]), args.case[2])

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    start = time.monotonic()
    deadline = start + args.seconds
    summary = fz.Summary()
    slowest = (0.0, None)
    with fz.Runner(timeout=args.timeout) as runner:
        index = 0
        while time.monotonic() < deadline:
            res = runner.run_one(["case", seed, index, None])
            summary.add(res)
            if res.get("seconds", 0) > slowest[0]:
                slowest = (res["seconds"], res.get("desc"))
            index += 1
        build, ext = runner.build, getattr(runner, "extension_file", None)
        restarts = runner.restarts
    elapsed = time.monotonic() - start

    print(f"fastconv fuzz: seed {seed}, {elapsed:.0f} s, build {build} ({ext})")
    print(summary.report(max_failures=50))
    crashes = summary.status.get("crash", 0) + summary.status.get("hang", 0)
    print(f"crashes and hangs: {crashes} (worker restarts: {restarts})")
    print(f"slowest case: {slowest[0]:.2f} s ({slowest[1]})")
    print(f"distinct error messages ({len(summary.messages)}):")
    for msg, count in sorted(summary.messages.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count:6d}  {msg}")
    if args.json:
        write_json(
            args.json,
            {
                "seed": seed,
                "seconds": elapsed,
                "build": build,
                "extension": ext,
                "cases": summary.cases,
                "status": summary.status,
                "restarts": restarts,
                "messages": summary.messages,
                "examples": summary.examples,
                "kinds": summary.kinds,
                "families": summary.families,
                "functions": sorted(summary.functions),
                "failures": summary.failures,
            },
        )
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
