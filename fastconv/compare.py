"""``fastconv compare``: one conv layer, forward and backward, on every available path."""
import numpy as np

from . import functional as F
from .backends import available_backends, get_path
from .spec import conv_spec
from .timing import measure


# it times backward too: a caller's no_grad() must not stop its forwards keeping caches
@F.enable_grad()
def compare(N=100, C=1, H=28, W=28, K=30, FH=5, FW=5, stride=1, pad=0, dtype="float32",
            repeat=3, paths=None, seed=0):
    """Time one convolution on each path; returns a list of row dicts.

    Each row: path, first-call seconds (forward + backward; includes JIT
    compilation or loading the cache), best forward and backward ms over
    ``repeat`` interleaved rounds (the shared protocol of ``fastconv.timing``),
    and the largest absolute difference to the naive path over out, dx, dW and
    db, also relative to that array's largest naive value (dW sums N*OH*OW
    products, so its float32 rounding grows with the batch).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (0.1 * rng.standard_normal((K, C, FH, FW))).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    out_ref, saved_ref = F.conv_forward(x, w, b, stride, pad, backend="naive")
    dout = rng.standard_normal(out_ref.shape).astype(dtype)
    grads_ref = F.conv_backward(dout, saved_ref)
    # by default every path that runs this layer (winograd runs 3x3 stride-1 only)
    spec = conv_spec(x.shape, w.shape, stride, pad, dtype)
    paths = list(paths or [p for p in available_backends() if get_path(p).supports(spec)])
    results, calls = {}, {}
    for path in paths:
        def forward(path=path):
            results[path] = F.conv_forward(x, w, b, stride, pad, backend=path)

        calls[path, "forward"] = forward
        calls[path, "backward"] = lambda path=path: F.conv_backward(dout, results[path][1])
    timings = measure(calls, rounds=repeat, budget_s=float("inf"))
    rows = []
    for path in paths:
        out, saved = results[path]
        grads = F.conv_backward(dout, saved)
        diffs = [(float(np.max(np.abs(np.asarray(a) - r))), float(np.max(np.abs(r))))
                 for a, r in zip((out, *grads), (out_ref, *grads_ref))]
        fwd, bwd = timings[path, "forward"], timings[path, "backward"]
        rows.append(dict(path=path, first_s=fwd.first_s + bwd.first_s,
                         forward_ms=fwd.best_s * 1e3, backward_ms=bwd.best_s * 1e3,
                         max_abs_diff=max(d for d, _ in diffs),
                         max_rel_diff=max(d / max(m, np.finfo(dtype).tiny) for d, m in diffs)))
    return rows


def format_table(rows, title):
    lines = [title,
             f"{'path':<8} {'first call s':>12} {'forward ms':>11} {'backward ms':>12} "
             f"{'max |diff| vs naive':>20} {'relative':>9}"]
    for r in rows:
        lines.append(f"{r['path']:<8} {r['first_s']:>12.3f} {r['forward_ms']:>11.2f} "
                     f"{r['backward_ms']:>12.2f} {r['max_abs_diff']:>20.2e} "
                     f"{r['max_rel_diff']:>9.1e}")
    return "\n".join(lines)
