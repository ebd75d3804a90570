"""From the bench suite's pytest-benchmark JSON to a ratio table and PNG charts.

Run from the source tree (it is not part of the installed package)::

    pytest bench --benchmark-json=results.json
    python bench/plot.py results.json --out bench-plots
    python bench/plot.py results.json --no-charts --target forward=1.0 --target gemm=0.65

The bench suite labels every benchmark with ``extra_info``: ``kind`` ("conv",
"pool", "gemm_peak", or "network": a whole network, ``bench/test_resnet18.py``),
``layer``, ``path``, ``direction``, ``library`` ("fastconv" or "baseline"),
batch ``N`` and the layer's own batch ``ref_N``, ``flops``, ``threads``, and
``small`` (smoke mode). This module reads those,
never the test names, and knows no layer by name.

Rules behind the numbers:

- one time per benchmark: its ``min`` over rounds by default (the least
  disturbed run on a shared machine), or ``median`` / ``mean``;
- GFLOP/s = ``flops / time / 1e9`` with ``flops`` from the suite: forward
  conv ``2*N*K*C*FH*FW*OH*OW``, backward twice that (dx and dW), pooling a
  nominal window-read count;
- ratios between paths are ratios of throughput (GFLOP/s), which equal time
  ratios when both ran the same batch, and stay fair for the naive path that
  the full suite runs at batch 1;
- "best" is the fastest fastconv path that ran the layer's own batch;
- the GEMM ceiling of a layer is numpy's sgemm on that layer's im2col product,
  measured in the same run; the peak is numpy sgemm on square matrices;
- ``book_numpy`` is the suite's NumPy reference code (the im2col + np.dot
  layers of Deep Learning from Scratch, ch. 7), a baseline, not a path.

Nothing is graded unless targets are passed (``--target NAME=VALUE``, see
``TARGETS``); the exit status is then 1 when one is missed or cannot be
measured from the results given.

matplotlib is imported only inside the plotting functions.
"""
import argparse
import json
import math
import pathlib
import sys
from dataclasses import dataclass

STATS = ("min", "median", "mean")
MERGES = ("last", "min")
# Display order and colours of the paths in every chart.
PATH_ORDER = ("naive", "im2col", "direct", "cuda", "book_numpy", "torch", "gemm")
PATH_COLORS = {"naive": "#9e9e9e", "im2col": "#1f77b4", "direct": "#2ca02c", "cuda": "#76b900",
               "book_numpy": "#ff7f0e", "torch": "#d62728", "gemm": "#333333"}
DIRECTIONS = ("forward", "backward")
# --target NAME=VALUE: what each name grades, over the conv layers of the results.
TARGETS = {
    "forward": "geometric mean of best/torch, forward, at most VALUE",
    "backward": "geometric mean of best/torch, backward, at most VALUE",
    "worst": "best/torch of every layer and direction at most VALUE",
    "gemm": "im2col at least VALUE (a fraction) of its layer's sgemm rate, every layer, forward",
    "numpy": "geometric mean speed-up of best over book_numpy at least VALUE",
}


@dataclass(frozen=True)
class Result:
    """One benchmark of the suite: what ran, on how much work, and how long it took."""

    kind: str
    layer: str
    path: str
    direction: str
    library: str
    N: int
    ref_N: int
    flops: int
    seconds: float
    threads: object = None
    small: bool = False

    @property
    def gflops(self):
        return self.flops / self.seconds / 1e9

    @property
    def full_batch(self):
        """True when it ran the layer's own batch (time comparable with the others)."""
        return self.N == self.ref_N


def load_results(source, stat="min", merge="last"):
    """Results of a pytest-benchmark JSON (a path, or the already parsed dict).

    ``source`` may also be a list of those, merged per benchmark (same kind,
    layer, path, direction and N): ``merge="last"`` lets a later file replace
    an earlier one (a rerun of some layers, ``pytest bench -k resnet_64 ...``,
    stands in for a disturbed part of a full run); ``merge="min"`` keeps the
    fastest of all runs, the best estimate of the undisturbed time when other
    processes load the machine. Benchmarks without the suite's ``extra_info``
    (or without stats, e.g. from a --benchmark-disable run) are left out.
    """
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    sources = source if isinstance(source, (list, tuple)) else [source]
    merged = {}
    for src in sources:
        for r in _read_one(src, stat):
            key = (r.kind, r.layer, r.path, r.direction, r.N)
            if merge == "last" or key not in merged or r.seconds < merged[key].seconds:
                merged[key] = r
    return list(merged.values())


def _read_one(source, stat):
    if isinstance(source, dict):
        data = source
    else:
        with open(source) as f:
            data = json.load(f)
    if "benchmarks" not in data:
        raise ValueError(f"{source!r} is not a pytest-benchmark JSON (no 'benchmarks' key)")
    results = []
    for bench in data["benchmarks"]:
        info, stats = bench.get("extra_info") or {}, bench.get("stats")
        if "kind" not in info or "flops" not in info or not stats:
            continue
        results.append(Result(
            kind=info["kind"], layer=info["layer"], path=info["path"],
            direction=info["direction"], library=info.get("library", "fastconv"),
            N=int(info["N"]), ref_N=int(info.get("ref_N", info["N"])), flops=int(info["flops"]),
            seconds=float(stats[stat]), threads=info.get("threads"),
            small=bool(info.get("small", False))))
    return results


def geomean(values):
    """Geometric mean of positive numbers; None for an empty list."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _ordered(items, order):
    known = [p for p in order if p in items]
    return known + sorted(p for p in items if p not in order)


def _layers(results, kind):
    """Layer ids of one kind, in the order the suite ran them."""
    seen = {}
    for r in results:
        if r.kind == kind:
            seen.setdefault(r.layer, None)
    return list(seen)


def _by_path(results, kind, layer, direction):
    return {r.path: r for r in results
            if r.kind == kind and r.layer == layer and r.direction == direction}


def _speedup(base, other):
    """GFLOP/s of ``other`` / GFLOP/s of ``base`` (above 1: other is faster); None if missing."""
    if base is None or other is None:
        return None
    return other.gflops / base.gflops


def summarize(results):
    """Per layer and direction: the best fastconv path against the baselines.

    Returns ``{"rows": [...], "geomeans": {...}, "peak_gflops": float|None,
    "small": bool}``. Each row holds ``kind, layer, direction, best_path, best_s,
    torch_s, best_vs_torch`` (best time / torch time: below 1 is faster than
    torch), ``book_s, book_vs_best`` (speed-up of best over book_numpy),
    ``gflops`` (path -> GFLOP/s, every path), ``gemm_gflops`` (the layer's
    sgemm ceiling), ``im2col_vs_gemm`` and ``best_vs_gemm`` (im2col's and the
    best path's share of that ceiling).
    """
    rows = []
    for kind in ("conv", "pool"):
        for layer in _layers(results, kind):
            for direction in DIRECTIONS:
                paths = _by_path(results, kind, layer, direction)
                if not paths:
                    continue
                own = [r for r in paths.values() if r.library == "fastconv" and r.full_batch]
                best = min(own, key=lambda r: r.seconds) if own else None
                torch, book = paths.get("torch"), paths.get("book_numpy")
                gemm, im2col = paths.get("gemm"), paths.get("im2col")
                rows.append(dict(
                    kind=kind, layer=layer, direction=direction,
                    N=best.N if best else max(r.N for r in paths.values()),
                    best_path=best.path if best else None,
                    best_s=best.seconds if best else None,
                    torch_s=torch.seconds if torch else None,
                    # torch's speed-up over best = best time / torch time (same batch)
                    best_vs_torch=_speedup(best, torch),
                    book_s=book.seconds if book else None,
                    book_vs_best=_speedup(book, best),
                    gflops={p: paths[p].gflops for p in _ordered(paths, PATH_ORDER)},
                    gemm_gflops=gemm.gflops if gemm else None,
                    im2col_vs_gemm=_speedup(gemm, im2col),
                    best_vs_gemm=_speedup(gemm, best),
                ))
    peaks = [r.gflops for r in results if r.kind == "gemm_peak"]
    geomeans = {}
    for kind in ("conv", "pool"):
        for direction in DIRECTIONS:
            sel = [r for r in rows if r["kind"] == kind and r["direction"] == direction]
            geomeans[f"{kind} {direction} best/torch"] = geomean([r["best_vs_torch"] for r in sel])
            geomeans[f"{kind} {direction} book/best"] = geomean([r["book_vs_best"] for r in sel])
        geomeans[f"{kind} book/best"] = geomean(
            [r["book_vs_best"] for r in rows if r["kind"] == kind])
        for direction in DIRECTIONS:
            sel = [r for r in rows if r["kind"] == kind and r["direction"] == direction]
            for share in ("im2col", "best"):
                values = [r[f"{share}_vs_gemm"] for r in sel]
                if any(v is not None for v in values):
                    geomeans[f"{kind} {direction} {share}/gemm"] = geomean(values)
    return dict(rows=rows, geomeans=geomeans, peak_gflops=max(peaks) if peaks else None,
                small=any(r.small for r in results), networks=summarize_networks(results))


def summarize_networks(results):
    """Whole-network benchmarks (kind "network"), one row per network and direction:
    ``layer, direction, N, torch_s`` and ``paths``: {path: (seconds, time / torch's time
    or None)}, every path that ran the network's own batch."""
    rows = []
    for layer in _layers(results, "network"):
        directions = dict.fromkeys(r.direction for r in results
                                   if r.kind == "network" and r.layer == layer)
        for direction in directions:
            runs = {p: r for p, r in _by_path(results, "network", layer, direction).items()
                    if r.full_batch}
            if not runs:
                continue
            torch = runs.get("torch")
            rows.append(dict(
                layer=layer, direction=direction, N=max(r.N for r in runs.values()),
                torch_s=torch.seconds if torch else None,
                paths={p: (runs[p].seconds, _speedup(runs[p], torch))
                       for p in _ordered(runs, PATH_ORDER)}))
    return rows


def parse_target(text: str) -> tuple[str, float]:
    """'forward=0.75' -> ("forward", 0.75); names in TARGETS, values finite and > 0."""
    name, sep, value = text.partition("=")
    if not sep or name not in TARGETS:
        raise ValueError(f"a target is NAME=VALUE with NAME one of {', '.join(TARGETS)}; "
                         f"got {text!r}")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"target {name}: the value must be a finite number > 0, got {value!r}")
    return name, number


def check_targets(summary: dict, targets: dict) -> list:
    """Grade the summary's conv layers against targets ({name: value}, names in TARGETS).

    Returns [(description, measured text, met: True/False/None)], None when the
    results hold nothing to measure the target with (no torch runs, say).
    """
    rows, g = summary["rows"], summary["geomeans"]
    conv = [r for r in rows if r["kind"] == "conv"]
    out = []
    for name, limit in targets.items():
        if name in ("forward", "backward"):
            v = g.get(f"conv {name} best/torch")
            out.append((f"best/torch geomean {name} <= {limit:g}", _fmt(v, "{:.2f}"),
                        None if v is None else v <= limit))
        elif name == "worst":
            known = [r for r in conv if r["best_vs_torch"] is not None]
            w = max(known, key=lambda r: r["best_vs_torch"]) if known else None
            out.append((f"no layer worse than {limit:g}x torch",
                        f"worst {w['best_vs_torch']:.2f} ({w['layer']} {w['direction']})" if w
                        else "-", None if w is None else w["best_vs_torch"] <= limit))
        elif name == "gemm":
            known = [r for r in conv if r["direction"] == "forward"
                     and r["im2col_vs_gemm"] is not None]
            low = min(known, key=lambda r: r["im2col_vs_gemm"]) if known else None
            out.append((f"im2col >= {limit:.0%} of sgemm, forward",
                        f"min {low['im2col_vs_gemm']:.1%} ({low['layer']})" if low else "-",
                        None if low is None else low["im2col_vs_gemm"] >= limit))
        else:
            v = g.get("conv book/best")
            out.append((f"best >= {limit:g}x book_numpy, geomean", _fmt(v, "{:.2f}x"),
                        None if v is None else v >= limit))
    return out


def select_layers(results: list, layers: list) -> list:
    """The results of the named layers only (the sgemm peak is kept); unknown names raise."""
    known = {r.layer for r in results if r.kind != "gemm_peak"}
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"layers {unknown} are not in the results; they hold {sorted(known)}")
    return [r for r in results if r.kind == "gemm_peak" or r.layer in layers]


def _fmt(value, spec):
    return "-" if value is None else spec.format(value)


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def format_summary(summary: dict, graded: list | None = None) -> str:
    """The ratio table as text (fixed-width columns, one row per layer and direction).

    graded: check_targets' list, printed as a last section when given.
    """
    head = (f"{'layer':<15} {'dir':<8} {'best':<8} {'best ms':>9} {'torch ms':>9} "
            f"{'best/torch':>10} {'book ms':>9} {'book/best':>10} {'im2col GF/s':>11} "
            f"{'gemm GF/s':>9} {'im2col/gemm':>11} {'best/gemm':>9}")
    lines = []
    if summary["small"]:
        lines.append("NOTE: smoke-mode (shrunk) layers: the ratios say nothing about speed.")
    lines += [head, "-" * len(head)]
    for r in summary["rows"]:
        lines.append(
            f"{r['layer']:<15} {r['direction']:<8} {r['best_path'] or '-':<8} "
            f"{_ms(r['best_s']):>9} {_ms(r['torch_s']):>9} "
            f"{_fmt(r['best_vs_torch'], '{:.2f}'):>10} "
            f"{_ms(r['book_s']):>9} "
            f"{_fmt(r['book_vs_best'], '{:.2f}x'):>10} "
            f"{_fmt(r['gflops'].get('im2col'), '{:.1f}'):>11} "
            f"{_fmt(r['gemm_gflops'], '{:.1f}'):>9} "
            f"{_fmt(r['im2col_vs_gemm'], '{:.0%}'):>11} "
            f"{_fmt(r['best_vs_gemm'], '{:.0%}'):>9}")
    lines += ["", "GFLOP/s per path (naive at its own batch; pooling: nominal window reads)"]
    paths = _ordered({p for r in summary["rows"] for p in r["gflops"]}, PATH_ORDER)
    lines.append(f"{'layer':<15} {'dir':<8} " + " ".join(f"{p:>11}" for p in paths))
    for r in summary["rows"]:
        lines.append(f"{r['layer']:<15} {r['direction']:<8} "
                     + " ".join(f"{_fmt(r['gflops'].get(p), '{:.3g}'):>11}" for p in paths))
    lines.append("")
    lines.append("geometric means (best/torch < 1: fastconv faster; book/best: speed-up "
                 "over book_numpy; x/gemm: share of the layer's sgemm ceiling)")
    for name, value in summary["geomeans"].items():
        lines.append(f"  {name:<32} {_fmt(value, '{:.2f}')}")
    lines.append(f"  {'sgemm peak GFLOP/s':<32} {_fmt(summary['peak_gflops'], '{:.1f}')}")
    if summary.get("networks"):
        lines += ["", "whole networks: ms per call, and time / torch's time (< 1: faster than torch)"]
        for r in summary["networks"]:
            lines.append(f"  {r['layer']} {r['direction']} (batch {r['N']})")
            for path, (seconds, vs_torch) in r["paths"].items():
                lines.append(f"    {path:<12} {_ms(seconds):>10} ms   "
                             f"{_fmt(vs_torch, '{:.2f}'):>6}")
    if graded:
        lines.append("")
        lines.append("targets passed with --target (float32, the results given)")
        for what, measured, met in graded:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[met]
            lines.append(f"  {what:<40} {measured:<40} {verdict}")
    return "\n".join(lines)


# ------------------------------------------------------------------- charts

def _bar_chart(ax, layers, series, ylabel, labels=None, log=True):
    """Grouped bars: one group per layer, one bar per path (None: no bar)."""
    paths = [p for p in series if any(v is not None for v in series[p])]
    labels = labels or {}
    width = 0.8 / max(len(paths), 1)
    for i, path in enumerate(paths):
        xs = [j + (i - (len(paths) - 1) / 2) * width for j in range(len(layers))]
        pairs = [(x, v) for x, v in zip(xs, series[path]) if v is not None]
        ax.bar([x for x, _ in pairs], [v for _, v in pairs], width,
               label=labels.get(path, path), color=PATH_COLORS.get(path))
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3, which="both")


def _legend(ax):
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _batch_labels(cells):
    """Legend labels that say when a path ran a smaller batch than the layer's (naive)."""
    labels = {}
    for r in cells.values():
        if not r.full_batch:
            labels[r.path] = f"{r.path} (batch {r.N})"
    return labels


def _figure(n_rows, title):
    try:
        from matplotlib.figure import Figure     # no pyplot: no GUI backend, no global state
    except ImportError:
        raise ImportError("charts need matplotlib: pip install matplotlib "
                          "(the table alone: python bench/plot.py --no-charts)") from None

    fig = Figure(figsize=(11, 3.6 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
    fig.suptitle(title)
    return fig, axes


def _context(results):
    threads = sorted({str(r.threads) for r in results if r.threads is not None})
    note = "smoke-mode shapes, " if any(r.small for r in results) else ""
    return f"float32, {note}threads {'/'.join(threads) or '?'}"


def plot_time(results, kind):
    """Figure: time (ms, log) per layer and path, forward and backward; layer's own batch only."""
    layers = _layers(results, kind)
    fig, axes = _figure(2, f"{kind} time per layer ({_context(results)}; lower is better)")
    for ax, direction in zip(axes, DIRECTIONS):
        cells = {(r.layer, r.path): r for r in results
                 if r.kind == kind and r.direction == direction and r.full_batch}
        paths = _ordered({p for _, p in cells}, PATH_ORDER)
        series = {p: [cells[(lay, p)].seconds * 1e3 if (lay, p) in cells else None for lay in layers]
                  for p in paths}
        _bar_chart(ax, layers, series, f"{direction} ms")
        _legend(ax)
    return fig


def plot_gflops(results):
    """Figure: conv GFLOP/s per layer and path with the sgemm ceilings (a simple roofline).

    A black tick over each layer marks numpy sgemm on that layer's im2col
    product; the dashed line is sgemm's peak on square matrices, same run.
    """
    layers = _layers(results, "conv")
    peak = [r.gflops for r in results if r.kind == "gemm_peak"]
    fig, axes = _figure(2, f"conv GFLOP/s per layer ({_context(results)}; higher is better)")
    for ax, direction in zip(axes, DIRECTIONS):
        cells = {(r.layer, r.path): r for r in results
                 if r.kind == "conv" and r.direction == direction}
        paths = _ordered({p for _, p in cells if p != "gemm"}, PATH_ORDER)
        series = {p: [cells[(lay, p)].gflops if (lay, p) in cells else None for lay in layers]
                  for p in paths}
        _bar_chart(ax, layers, series, f"{direction} GFLOP/s", _batch_labels(cells))
        for j, layer in enumerate(layers):
            if (layer, "gemm") in cells:
                ax.hlines(cells[(layer, "gemm")].gflops, j - 0.45, j + 0.45, colors="black",
                          linewidth=2, label="sgemm, this layer's shape" if j == 0 else None)
        if peak:
            ax.axhline(max(peak), color="black", linestyle="--", linewidth=1,
                       label=f"sgemm peak {max(peak):.0f} GFLOP/s")
        _legend(ax)
    return fig


def plot_speedup(results, baseline):
    """Figure: throughput of each path / throughput of ``baseline`` ("naive" or "torch")."""
    layers = [(k, lay) for k in ("conv", "pool") for lay in _layers(results, k)]
    labels = [lay if k == "conv" else f"{lay} (pool)" for k, lay in layers]
    batches = sorted({r.N for r in results if r.path == baseline and not r.full_batch})
    note = f"; {baseline} timed at batch {'/'.join(map(str, batches))}" if batches else ""
    fig, axes = _figure(2, f"speed-up over {baseline}: ratio of GFLOP/s ({_context(results)}"
                           f"{note}; above 1: faster)")
    for ax, direction in zip(axes, DIRECTIONS):
        cells = {(r.kind, r.layer, r.path): r for r in results
                 if r.direction == direction and r.kind in ("conv", "pool")}
        paths = _ordered({p for _, _, p in cells if p not in (baseline, "gemm")}, PATH_ORDER)
        series = {p: [_speedup(cells.get((k, lay, baseline)), cells.get((k, lay, p)))
                      for k, lay in layers] for p in paths}
        _bar_chart(ax, labels, series, f"{direction} speed-up", _batch_labels(cells))
        ax.axhline(1.0, color="black", linewidth=1)
        _legend(ax)
    return fig


def plot_results(results, out_dir):
    """Write every chart the results allow as PNG into ``out_dir``; returns their paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = {r.kind for r in results}
    paths = {r.path for r in results}
    figures = {}
    if "conv" in kinds:
        figures["conv_time.png"] = plot_time(results, "conv")
        figures["conv_gflops.png"] = plot_gflops(results)
    if "pool" in kinds:
        figures["pool_time.png"] = plot_time(results, "pool")
    for baseline in ("naive", "torch"):
        if baseline in paths:
            figures[f"speedup_vs_{baseline}.png"] = plot_speedup(results, baseline)
    written = []
    for name, fig in figures.items():
        target = out_dir / name
        fig.savefig(target, dpi=110)
        written.append(target)
    return written


# ---------------------------------------------------------------------- CLI

def _target_arg(text):
    try:
        return parse_target(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    names = "; ".join(f"{name}: {what}" for name, what in TARGETS.items())
    p = argparse.ArgumentParser(
        prog="python bench/plot.py",
        description="Reads the bench suite's pytest-benchmark JSON (pytest bench "
                    "--benchmark-json=RESULTS.json), prints the per-layer ratio table (best "
                    "fastconv path vs torch and book_numpy, im2col and best vs the sgemm "
                    "ceiling) and writes PNG charts into --out.")
    p.add_argument("results", nargs="+",
                   help="pytest-benchmark JSON written by the bench suite (several: merged "
                        "per benchmark, see --merge)")
    p.add_argument("--out", default="bench-plots",
                   help="folder for the PNG charts (default: %(default)s)")
    p.add_argument("--stat", choices=STATS, default="min",
                   help="which per-benchmark time to use (default: min over rounds)")
    p.add_argument("--merge", choices=MERGES, default="last",
                   help="several files: 'last' (a later file replaces the same benchmark) or "
                        "'min' (the fastest run of each benchmark) (default: %(default)s)")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="report and grade only these layers (default: every layer in the results)")
    p.add_argument("--target", type=_target_arg, action="append", default=[],
                   metavar="NAME=VALUE",
                   help=f"grade the results against a target (repeatable); names: {names}. "
                        "Exit status 1 when a target is missed or cannot be measured")
    p.add_argument("--no-charts", action="store_true", help="print the table only")
    return p


def main(argv: list | None = None) -> int:
    """Run the command line -> exit status (0, or 1: no timed benchmarks or a missed target)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results, stat=args.stat, merge=args.merge)
        if args.layers:
            results = select_layers(results, args.layers)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    if not results:
        print(f"{' '.join(args.results)}: no timed benchmarks of the fastconv suite in it "
              f"(was it written with --benchmark-disable?)")
        return 1
    summary = summarize(results)
    graded = check_targets(summary, dict(args.target))
    print(format_summary(summary, graded))
    if not args.no_charts:
        print("")
        for path in plot_results(results, args.out):
            print(f"wrote {path}")
    return 0 if all(met for _, _, met in graded) else 1


if __name__ == "__main__":
    sys.exit(main())
