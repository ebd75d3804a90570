"""Importing fastconv never makes a valid program abort.

fastconv arranges Numba's threads when it is imported (see
``fastconv.kernels._jit``). Whatever it arranges must leave a program free
to run its own parallel Numba code from several Python threads, and must
keep a threading layer the program chose itself. Each case runs in a child
process, so that an abort fails the test instead of ending the test run.
"""
import importlib.metadata
import os
import shutil
import subprocess
import textwrap

import pytest

from support import PYTHON


def _run(code, env=None, timeout=600, unset=()):
    import os
    full_env = dict(os.environ)
    for name in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", *unset):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run([*PYTHON, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


USER_PROGRAM = """
    import threading
    import numpy as np
    import numba
    import fastconv

    @numba.njit(parallel=True)
    def total(a):
        s = 0.0
        for i in numba.prange(a.size):
            s += a[i]
        return s

    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    W = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    expected = fastconv.conv2d(x, W, pad=1, backend="naive")
    data = np.ones(200_000)
    errors = []

    def user_work():
        try:
            for _ in range(300):
                assert total(data) == data.size
        except Exception as err:
            errors.append(repr(err))

    def fastconv_work():
        try:
            for path in ["im2col", "direct"] * 10:
                out = fastconv.conv2d(x, W, pad=1, backend=path)
                assert np.allclose(out, expected, rtol=1e-10, atol=1e-10)
        except Exception as err:
            errors.append(repr(err))

    fastconv.conv2d(x, W, pad=1, backend="direct")      # fastconv's threads run first
    threads = [threading.Thread(target=user_work) for _ in range(2)]
    threads.append(threading.Thread(target=fastconv_work))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    print("ok", numba.threading_layer())
"""


def test_a_programs_own_parallel_code_runs_from_two_threads_after_import():
    # With the workqueue layer this aborts: "Concurrent access has been detected"
    done = _run(USER_PROGRAM)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert done.stdout.split()[0] == "ok"


@pytest.mark.parametrize("layer", ["workqueue", "omp"])
def test_a_layer_the_program_chose_is_kept(layer):
    done = _run("""
        import os
        import numpy as np
        import numba
        import fastconv
        fastconv.conv2d(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), backend="direct")
        print(numba.threading_layer(), os.environ["OMP_WAIT_POLICY"])
    """, env={"NUMBA_THREADING_LAYER": layer, "OMP_WAIT_POLICY": "ACTIVE"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [layer, "ACTIVE"]


def _tbb_installed():
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_a_forked_child_may_run_fastconv_after_its_parent_did():
    # GNU OpenMP terminates a forked child that launches parallel code after
    # its parent did; fastconv's kernels run serially there instead. With the
    # tbb layer the child may run in parallel.
    done = _run("""
        import multiprocessing as mp
        import numpy as np
        import numba
        import fastconv

        x, W = np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))

        def child(queue):
            queue.put(float(fastconv.conv2d(x, W, backend="direct").sum()))

        parent = float(fastconv.conv2d(x, W, backend="direct").sum())
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        p = ctx.Process(target=child, args=(queue,))
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
        assert queue.get() == parent
        print("ok", numba.threading_layer())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "tbb" if _tbb_installed() else "omp"]


_BLAS_TIMEOUT = """
    import ctypes
    import fastconv
    import numpy as np
    from threadpoolctl import threadpool_info
    blas = [lib for lib in threadpool_info() if lib["internal_api"] == "openblas"]
    lib = ctypes.CDLL(blas[0]["filepath"]) if blas else None
    if lib is None or not hasattr(lib, "openblas_thread_timeout"):
        print("no-openblas")
    else:
        print(lib.openblas_thread_timeout(), fastconv.__name__)
"""


@pytest.mark.parametrize("program_value", [None, "7"])
def test_openblas_threads_sleep_soon_after_a_product(program_value):
    # OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when numpy loads it; fastconv sets it
    # (when the program has not) before it imports numpy, so its threads stop
    # spinning against the Numba kernels that follow a product
    pytest.importorskip("threadpoolctl")
    env = {} if program_value is None else {"OPENBLAS_THREAD_TIMEOUT": program_value}
    done = _run(_BLAS_TIMEOUT, env=env, unset=("OPENBLAS_THREAD_TIMEOUT",))
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.split() == ["no-openblas"]:
        pytest.skip("numpy's BLAS is not OpenBLAS")
    assert done.stdout.split() == [program_value or "18", "fastconv"]


def _numbas_openmp_runtime():
    """The file of the GNU OpenMP runtime that Numba's OpenMP layer loads, or None."""
    done = _run("""
        from numba.np.ufunc import omppool
        print(*{line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line})
    """)
    files = done.stdout.split() if done.returncode == 0 else []
    return files[0] if len(files) == 1 else None


@pytest.mark.skipif(not hasattr(os, "RTLD_DEEPBIND") or not os.path.exists("/proc/self/maps"),
                    reason="the loader's symbol scopes, as on Linux")
def test_numbas_openmp_calls_its_own_runtime_after_another_library_loaded_one(tmp_path):
    # torch, for one, loads a copy of GNU OpenMP into the global symbol scope at
    # import, which has read OMP_WAIT_POLICY before fastconv set it. Numba's OpenMP
    # calls must go to the runtime its layer links against, not to that copy, whose
    # threads spin (im2col forward 2.8x the time; see fastconv.kernels._jit).
    runtime = _numbas_openmp_runtime()
    if runtime is None:
        pytest.skip("Numba's OpenMP layer does not load GNU OpenMP here")
    foreign = tmp_path / "libgomp-of-another-library.so.1"
    shutil.copy(runtime, foreign)
    log = tmp_path / "bindings"
    done = _run(f"""
        import ctypes
        import os
        ctypes.CDLL({str(foreign)!r}, mode=os.RTLD_GLOBAL | os.RTLD_NOW)   # the other library
        import numpy as np
        import numba
        import fastconv
        fastconv.conv2d(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), backend="direct")
        print(numba.threading_layer())
    """, env={"LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(log)})
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.split() != ["omp"]:
        pytest.skip(f"Numba runs the {done.stdout.strip()} layer here, not OpenMP")
    # "binding file <from> [0] to <to> [0]: normal symbol `GOMP_parallel' [GOMP_4.0]"
    targets = {}
    for path in tmp_path.glob("bindings.*"):
        for line in path.read_text(errors="replace").splitlines():
            if "binding file" not in line or "omppool" not in line.split(" to ")[0]:
                continue
            symbol = line.split("`")[1].split("'")[0] if "`" in line else ""
            if symbol.startswith(("GOMP_", "omp_")):
                targets[symbol] = line.split(" to ")[1].split(" [")[0]
    assert targets, "the loader reported no OpenMP binding of Numba's layer"
    assert all(os.path.realpath(t) == os.path.realpath(runtime) for t in targets.values()), targets


@pytest.mark.skipif(not hasattr(os, "RTLD_DEEPBIND"), reason="the loader's symbol scopes, as on Linux")
@pytest.mark.parametrize("program_value", [None, "ACTIVE"])
def test_numbas_openmp_reads_the_wait_policy_and_the_environment_stays_the_programs(program_value):
    # Numba's own runtime sleeps between loops (PASSIVE) unless the program said
    # otherwise; the environment other libraries' runtimes read later is the program's
    if _numbas_openmp_runtime() is None:
        pytest.skip("Numba's OpenMP layer does not load GNU OpenMP here")
    done = _run("""
        import os
        import numpy as np
        import numba
        import fastconv
        print(os.environ.get("OMP_WAIT_POLICY"), flush=True)
        fastconv.conv2d(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), backend="direct")
        print(numba.threading_layer(), flush=True)
    """, env={"OMP_DISPLAY_ENV": "TRUE", **({"OMP_WAIT_POLICY": program_value} if program_value else {})})
    assert done.returncode == 0, done.stderr[-3000:]
    env_value, layer = done.stdout.split()
    if layer != "omp":
        pytest.skip(f"Numba runs the {layer} layer here, not OpenMP")
    assert env_value == str(program_value)
    # GNU OpenMP prints its settings as it loads (OMP_DISPLAY_ENV): once, Numba's runtime
    policies = [line.split("=")[1].strip() for line in done.stderr.splitlines()
                if line.strip().startswith("OMP_WAIT_POLICY")]
    assert policies == [f"'{program_value or 'PASSIVE'}'"], done.stderr[-3000:]
