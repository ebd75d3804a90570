"""First-call cost of each path in a fresh process: cold (compiling) and warm (cached).

    python bench/first_call.py                  # every compiled path, cold then warm
    python bench/first_call.py --paths direct   # one path
    python bench/first_call.py --warm-only      # use the existing cache only
    python bench/first_call.py --dtype float64  # another dtype

Each measurement is a new Python process that imports fastconv and calls, on
the first layer of the SimpleConvNet of "Deep Learning from Scratch" (ch. 7)
(float32 unless --dtype says otherwise, batch 8), conv forward, conv backward,
max-pool forward and backward once each, timing every call. "cold"
points ``NUMBA_CACHE_DIR`` at an empty folder, so every kernel is compiled;
"warm" runs again with that folder filled, so every kernel is loaded from
the cache (``cache=True``). A final row times the same four calls again in
the warm process: what is left after compilation is the run time itself.
The "cpu" column is the CPU seconds the process used for the four first
calls: on a shared machine it varies less than wall time (compiling runs on
one thread); "compile" is the part of the first calls spent compiling
fastconv's kernels (``fastconv.kernels._jit.compile_seconds``; zero when
everything came from the cache). Targets: cold first calls <= 4 s and warm
<= 0.3 s per path.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

STEPS = ("import", "conv_forward", "conv_backward", "pool_forward", "pool_backward")


def _cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(path, dtype="float32"):
    """Runs in the fresh process: time import and each first call; print JSON."""
    import warnings

    t0 = time.perf_counter()
    import numpy as np

    import fastconv.functional as F
    times = {"import": time.perf_counter() - t0}
    warnings.simplefilter("ignore")     # the first-use notice is not part of the table
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(dtype)
    w = rng.standard_normal((30, 1, 5, 5)).astype(dtype)
    b = np.zeros(30, dtype)

    def calls():
        out, saved = F.conv_forward(x, w, b, 1, 0, backend=path)
        yield "conv_forward"
        F.conv_backward(np.ones_like(out), saved)
        yield "conv_backward"
        pooled, psaved = F.pool_forward(out, 2, 2, 2, 0, "max", backend=path)
        yield "pool_forward"
        F.pool_backward(np.ones_like(pooled), psaved)
        yield "pool_backward"

    for repeat in ("", "again_"):
        t, cpu = time.perf_counter(), _cpu_seconds()
        for step in calls():
            now = time.perf_counter()
            times[repeat + step] = now - t
            t = now
        times[repeat + "cpu"] = _cpu_seconds() - cpu
    from fastconv.kernels._jit import compile_seconds

    times["compile"] = compile_seconds()
    print(json.dumps(times))


def measure(path, cache_dir, dtype="float32"):
    """Seconds per step of one fresh process running ``path`` (Numba cache: ``cache_dir``)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir) if cache_dir else dict(os.environ)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path,
                           "--dtype", dtype],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"first-call child for {path!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_call_table(paths, warm_only=False, dtype="float32"):
    """{path: {"cold": times or None, "warm": times}} measured in fresh processes."""
    table = {}
    for path in paths:
        if warm_only:
            table[path] = {"cold": None, "warm": measure(path, None, dtype)}
            continue
        with tempfile.TemporaryDirectory(prefix="fastconv-numba-cache-") as cache:
            cold = measure(path, cache, dtype)
            table[path] = {"cold": cold, "warm": measure(path, cache, dtype)}
    return table


def format_table(table):
    head = (f"{'path':<8} {'cache':<6} " + " ".join(f"{s:>13}" for s in STEPS)
            + f" {'first calls':>12} {'cpu':>7} {'compile':>8}")
    lines = [head, "-" * len(head)]
    for path, runs in table.items():
        for label in ("cold", "warm"):
            t = runs[label]
            if t is None:
                continue
            first = sum(t[s] for s in STEPS[1:])
            lines.append(f"{path:<8} {label:<6} " + " ".join(f"{t[s]:>13.3f}" for s in STEPS)
                         + f" {first:>12.3f} {t['cpu']:>7.2f} {t['compile']:>8.2f}")
        again = runs["warm"]
        lines.append(f"{path:<8} {'rerun':<6} {'':>13} "
                     + " ".join(f"{again['again_' + s]:>13.3f}" for s in STEPS[1:])
                     + f" {sum(again['again_' + s] for s in STEPS[1:]):>12.3f}"
                     + f" {again['again_cpu']:>7.2f}")
    lines.append("seconds; 'first calls' = the four first calls together (targets: cold <= 4 s, "
                 "warm <= 0.3 s); 'cpu' = CPU seconds of those calls; 'compile' = wall seconds "
                 "of them spent compiling; 'rerun' = the same calls again in the warm process")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", nargs="+", default=None,
                        help="paths to measure (default: the CPU paths but naive that run this problem)")
    parser.add_argument("--warm-only", action="store_true",
                        help="skip the cold run; use Numba's usual cache location")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.dtype)
        return 0
    if args.paths is None:
        from fastconv import available_backends, backends, conv_spec

        # the paths that run this problem (winograd runs 3x3 filters only)
        spec = conv_spec((8, 1, 28, 28), (30, 1, 5, 5), 1, 0, args.dtype)
        args.paths = [p for p in available_backends()
                      if p not in ("naive", "cuda") and backends.get_path(p).supports(spec)]
    table = first_call_table(args.paths, warm_only=args.warm_only, dtype=args.dtype)
    print(f"{args.dtype}, conv 1->30 5x5 on 8x1x28x28, then 2x2 max pooling")
    print(format_table(table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
