"""fastconv's cuda path against cuDNN (torch.nn.functional.conv2d on the GPU).

Run on a machine with an NVIDIA GPU, PyTorch (CUDA build), numba and numba-cuda:

    python bench/cuda_vs_cudnn.py                      # every conv layer of bench/layers.json
    python bench/cuda_vs_cudnn.py --backward --pool    # also backward and the pooling layers
    python bench/cuda_vs_cudnn.py --json out/cuda_vs_cudnn.json

For each layer it first checks that both forward kernels ("tiled", "simple")
agree with cuDNN, then times, after warm-up, each on the same device arrays:
- cuDNN: torch.nn.functional.conv2d on CUDA tensors;
- tiled / simple: the fastconv kernel launched into a preallocated output
  (``_launch_conv_forward``: kernel time, comparable with PyTorch's caching
  allocator);
- call: the whole ``fastconv.kernels.cuda.conv_forward`` on device arrays,
  tiled kernel, output allocation included (what a Layer pays).
Times are medians over --rounds rounds of --repeat back-to-back launches, each
round bracketed by CUDA events on the default stream (both libraries launch
there) and a synchronize. Ratios are fastconv / cuDNN: lower is better, 1.0 is
parity. TF32 is off by default so cuDNN computes in true float32 like the
kernels do (PyTorch enables TF32 for cuDNN convolutions by default); --tf32
turns it back on.

The numbers are not produced in CI or on the simulator: the script stops with
a message when no GPU is present.
"""
import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from fastconv.spec import conv_spec, pool_spec

HERE = Path(__file__).resolve().parent
RESNET = ("resnet_64", "resnet_128", "resnet_256", "resnet_512")
TARGET_RATIO = 3.0


def fail(message):
    print(f"cuda_vs_cudnn: {message}", file=sys.stderr)
    sys.exit(2)


def require_gpu():
    """Return (torch, numba cuda) or exit with a clear message: timings need a real GPU."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1":
        fail("NUMBA_ENABLE_CUDASIM=1 is set: the simulator runs kernels in Python threads, "
             "so its timings mean nothing. Unset it and run on a machine with an NVIDIA GPU.")
    try:
        import torch
    except ImportError:
        fail("PyTorch is not installed; this comparison needs a CUDA build of torch.")
    if not torch.cuda.is_available():
        fail("no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False); "
             "run this on a machine with an NVIDIA GPU and a CUDA build of torch.")
    try:
        from fastconv.kernels._cuda_shim import cuda
    except ImportError as exc:
        fail(f"numba's CUDA support could not be imported ({exc}); install numba-cuda.")
    if not cuda.is_available():
        fail("numba.cuda finds no GPU (cuda.is_available() is False) although PyTorch does; "
             "check the driver and numba-cuda installation.")
    return torch, cuda


def event_time_ms(torch, fn, repeat, rounds, warmup):
    """Median over rounds of the mean time of one call, from CUDA events around repeat calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        torch.cuda.synchronize()
        per_call.append(start.elapsed_time(end) / repeat)
    return statistics.median(per_call)


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def conv_row(layer, dtype, args, torch, cuda, kc):
    N, C, H, W, K = (layer[k] for k in ("N", "C", "H", "W", "K"))
    FH, FW, s, p = layer["FH"], layer["FW"], layer["stride"], layer["pad"]
    OH, OW = (H + 2 * p - FH) // s + 1, (W + 2 * p - FW) // s + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wt = (rng.standard_normal((K, C, FH, FW)) / math.sqrt(C * FH * FW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)

    xd, Wd, bd = cuda.to_device(x), cuda.to_device(Wt), cuda.to_device(b)
    out = cuda.device_array((N, K, OH, OW), dtype=dtype)
    # zero-copy torch views of the same device memory: both sides read identical inputs
    xt, Wtt, bt = (torch.as_tensor(a, device="cuda") for a in (xd, Wd, bd))
    F = torch.nn.functional

    ref = F.conv2d(xt, Wtt, bt, stride=s, padding=p)
    torch.cuda.synchronize()
    ref_host = ref.cpu().numpy()
    spec = conv_spec((N, C, H, W), (K, C, FH, FW), s, p, dtype)
    row = {"id": layer["id"], "gflop": 2 * N * K * C * FH * FW * OH * OW / 1e9}
    for kernel in ("tiled", "simple"):
        kc._launch_conv_forward(out, xd, Wd, bd, (s, s), (p, p), kernel)
        row[f"err_{kernel}"] = rel_error(out.copy_to_host(), ref_host)

    t = lambda fn: event_time_ms(torch, fn, args.repeat, args.rounds, args.warmup)  # noqa: E731
    row["cudnn_ms"] = t(lambda: F.conv2d(xt, Wtt, bt, stride=s, padding=p))
    for kernel in ("tiled", "simple"):
        row[f"{kernel}_ms"] = t(lambda: kc._launch_conv_forward(out, xd, Wd, bd, (s, s), (p, p), kernel))
    row["call_ms"] = t(lambda: kc.conv_forward(xd, Wd, bd, spec))

    if args.backward:
        dout = cuda.to_device(rng.standard_normal((N, K, OH, OW)).astype(dtype))
        doutt = torch.as_tensor(dout, device="cuda")
        _, cache = kc.conv_forward(xd, Wd, bd, spec)
        row["bwd_ms"] = t(lambda: kc.conv_backward(dout, cache))
        row["cudnn_bwd_ms"] = t(lambda: torch.ops.aten.convolution_backward(
            doutt, xt, Wtt, [K], [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, True, True]))
    return row


def pool_row(layer, dtype, args, torch, cuda, kc):
    N, C, H, W = (layer[k] for k in ("N", "C", "H", "W"))
    PH, PW, s, p, mode = layer["FH"], layer["FW"], layer["stride"], layer["pad"], layer["mode"]
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(dtype)
    xd = cuda.to_device(x)
    xt = torch.as_tensor(xd, device="cuda")
    F = torch.nn.functional
    if mode == "max":
        torch_pool = lambda: F.max_pool2d(xt, (PH, PW), s, p)  # noqa: E731
    else:
        torch_pool = lambda: F.avg_pool2d(xt, (PH, PW), s, p, count_include_pad=True)  # noqa: E731
    ours = lambda: kc.pool_forward(xd, pool_spec((N, C, H, W), PH, PW, s, p, mode, dtype))  # noqa: E731
    row = {"id": layer["id"], "err": rel_error(ours()[0].copy_to_host(), torch_pool().cpu().numpy())}
    t = lambda fn: event_time_ms(torch, fn, args.repeat, args.rounds, args.warmup)  # noqa: E731
    row["torch_ms"] = t(torch_pool)
    row["call_ms"] = t(ours)
    return row


def print_conv_table(rows, args):
    head = (f"{'layer':<15}{'GFLOP':>7}{'cuDNN ms':>10}{'tiled ms':>10}{'simple ms':>10}"
            f"{'call ms':>9}{'tiled/cuDNN':>13}{'simple/cuDNN':>14}{'tiled TFLOP/s':>15}{'max rel err':>13}")
    if args.backward:
        head += f"{'bwd ms':>9}{'cuDNN bwd':>10}{'bwd ratio':>10}"
    print(head)
    for r in rows:
        line = (f"{r['id']:<15}{r['gflop']:>7.2f}{r['cudnn_ms']:>10.3f}{r['tiled_ms']:>10.3f}"
                f"{r['simple_ms']:>10.3f}{r['call_ms']:>9.3f}{r['tiled_ms'] / r['cudnn_ms']:>13.2f}"
                f"{r['simple_ms'] / r['cudnn_ms']:>14.2f}{r['gflop'] / r['tiled_ms']:>15.2f}"
                f"{max(r['err_tiled'], r['err_simple']):>13.1e}")
        if args.backward:
            line += f"{r['bwd_ms']:>9.3f}{r['cudnn_bwd_ms']:>10.3f}{r['bwd_ms'] / r['cudnn_bwd_ms']:>10.2f}"
        print(line)
    resnet = [r for r in rows if r["id"] in RESNET]
    if resnet:
        ratios = [r["tiled_ms"] / r["cudnn_ms"] for r in resnet]
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        verdict = "met" if max(ratios) <= TARGET_RATIO else "NOT met"
        print(f"\nResNet layers, tiled/cuDNN: geometric mean {geo:.2f}, worst {max(ratios):.2f} "
              f"-> target 'within {TARGET_RATIO:g}x of cuDNN' {verdict}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default=str(HERE / "layers.json"))
    parser.add_argument("--ids", nargs="*", help="only these layer ids")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeat", type=int, default=20, help="launches per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (compiles)")
    parser.add_argument("--backward", action="store_true", help="also time conv backward")
    parser.add_argument("--pool", action="store_true", help="also time the pooling layers")
    parser.add_argument("--tf32", action="store_true", help="let cuDNN use TF32 (PyTorch's default)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)

    torch, cuda = require_gpu()
    from fastconv.kernels import cuda as kc

    torch.backends.cudnn.benchmark = True          # cuDNN picks its fastest algorithm per shape
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    dtype = np.dtype(args.dtype)
    suite = json.loads(Path(args.layers).read_text())
    keep = (lambda layer: layer["id"] in args.ids) if args.ids else (lambda layer: True)

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}, dtype {dtype}, TF32 {'on' if args.tf32 else 'off'}\n")
    conv_rows = [conv_row(layer, dtype, args, torch, cuda, kc)
                 for layer in suite["layers"] if keep(layer)]
    print_conv_table(conv_rows, args)
    pool_rows = []
    if args.pool:
        pool_rows = [pool_row(layer, dtype, args, torch, cuda, kc)
                     for layer in suite["pooling"] if keep(layer)]
        print(f"\n{'pool layer':<15}{'torch ms':>10}{'cuda ms':>10}{'ratio':>8}{'max rel err':>13}")
        for r in pool_rows:
            print(f"{r['id']:<15}{r['torch_ms']:>10.3f}{r['call_ms']:>10.3f}"
                  f"{r['call_ms'] / r['torch_ms']:>8.2f}{r['err']:>13.1e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"device": torch.cuda.get_device_name(), "dtype": str(dtype), "tf32": args.tf32,
             "conv": conv_rows, "pool": pool_rows}, indent=1))


if __name__ == "__main__":
    main()
