"""bench/plot.py: numbers from pytest-benchmark JSON, targets, charts, and its command line.

bench/plot.py lives in the source tree, not in the installed package; it is
loaded here by its path. Expected numbers are worked out by hand from the
times and FLOPs put into a constructed JSON (same schema as the bench suite
writes); one test also runs a slice of the real bench suite in smoke mode and
checks the JSON it writes.
"""
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

from support import PYTHON

REPO = pathlib.Path(__file__).resolve().parents[1]
PLOT = REPO / "bench" / "plot.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_plot():
    spec = importlib.util.spec_from_file_location("fastconv_bench_plot", PLOT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


benchplot = _load_plot()
main = benchplot.main


def _bench(kind, layer, path, direction, seconds, flops, N=8, ref_N=8, median=None,
           library=None):
    """One benchmark entry as pytest-benchmark writes it (only the fields the suite uses)."""
    if library is None:
        library = "baseline" if path in ("book_numpy", "torch", "gemm") else "fastconv"
    return {
        "group": f"{layer} {direction}", "name": f"test_{kind}[{path}-{layer}-{direction}]",
        "extra_info": dict(kind=kind, layer=layer, path=path, direction=direction,
                           library=library, dtype="float32", threads=2, N=N, ref_N=ref_N,
                           flops=flops, small=False),
        "stats": {"min": seconds, "median": median if median is not None else 2 * seconds,
                  "mean": 3 * seconds, "rounds": 5},
    }


# Times in ms per (layer, direction, path); FLOPs below. Chosen so every ratio is a round number.
RES_F = 2_000_000_000       # resnet_64-like forward FLOPs; backward is twice that
DL_F = 100_000_000          # dlfs_conv1-like forward FLOPs
POOL_F = 10_000_000


def _constructed():
    b = []
    ms = 1e-3
    for direction, mult in (("forward", 1), ("backward", 2)):
        fl = RES_F * mult
        b += [_bench("conv", "resnet_64", "im2col", direction, 20 * ms * mult, fl),
              _bench("conv", "resnet_64", "direct", direction, 40 * ms * mult, fl),
              _bench("conv", "resnet_64", "book_numpy", direction, 80 * ms * mult, fl),
              _bench("conv", "resnet_64", "torch", direction, 25 * ms * mult, fl),
              _bench("conv", "resnet_64", "gemm", direction, 16 * ms * mult, fl),
              # naive at batch 1 of 8: an eighth of the work in 500 ms
              _bench("conv", "resnet_64", "naive", direction, 500 * ms * mult, fl // 8, N=1)]
        fl = DL_F * mult
        big = dict(N=100, ref_N=100)
        b += [_bench("conv", "dlfs_conv1", "im2col", direction, 4 * ms * mult, fl, **big),
              _bench("conv", "dlfs_conv1", "direct", direction, 2 * ms * mult, fl, **big),
              _bench("conv", "dlfs_conv1", "book_numpy", direction, 8 * ms * mult, fl, **big),
              _bench("conv", "dlfs_conv1", "torch", direction, 4 * ms * mult, fl, **big),
              _bench("conv", "dlfs_conv1", "gemm", direction, 1 * ms * mult, fl, **big)]
        b += [_bench("pool", "dlfs_pool", "direct", direction, 1 * ms, POOL_F, **big),
              _bench("pool", "dlfs_pool", "book_numpy", direction, 5 * ms, POOL_F, **big),
              _bench("pool", "dlfs_pool", "torch", direction, 2 * ms, POOL_F, **big)]
    peak = _bench("gemm_peak", "sgemm 2048^3", "gemm", "forward", 0.1, 20_000_000_000, N=2048,
                  ref_N=2048)
    b.append(peak)
    # Entries the loader must skip: not from the suite, and a --benchmark-disable leftover.
    b.append({"group": None, "name": "test_other", "extra_info": {}, "stats": {"min": 1.0}})
    b.append({**_bench("conv", "resnet_64", "im2col", "forward", 1.0, RES_F), "stats": None})
    return {"machine_info": {}, "commit_info": {}, "benchmarks": b, "version": "5.3.1"}


@pytest.fixture
def results_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_constructed()))
    return path


def _row(summary, layer, direction):
    (row,) = [r for r in summary["rows"] if r["layer"] == layer and r["direction"] == direction]
    return row


def test_load_results_reads_suite_entries_only(results_json):
    results = benchplot.load_results(results_json)
    assert len(results) == 2 * (6 + 5 + 3) + 1
    im2col = [r for r in results if r.path == "im2col" and r.layer == "resnet_64"
              and r.direction == "forward"]
    assert len(im2col) == 1
    assert im2col[0].seconds == pytest.approx(0.020)
    assert im2col[0].gflops == pytest.approx(100.0)        # 2e9 FLOP in 20 ms
    peak = [r for r in results if r.kind == "gemm_peak"]
    assert peak[0].gflops == pytest.approx(200.0)          # 2e10 FLOP in 100 ms


def test_load_results_stat_choice_and_errors(results_json, tmp_path):
    by_median = benchplot.load_results(results_json, stat="median")
    first = [r for r in by_median if r.path == "im2col" and r.layer == "resnet_64"][0]
    assert first.seconds == pytest.approx(0.040)
    assert first.gflops == pytest.approx(50.0)
    with pytest.raises(ValueError, match="stat must be one of"):
        benchplot.load_results(results_json, stat="max")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"not": "a benchmark file"}))
    with pytest.raises(ValueError, match="pytest-benchmark"):
        benchplot.load_results(other)


def test_load_results_later_file_replaces_same_benchmark(results_json, tmp_path):
    rerun = tmp_path / "rerun.json"
    rerun.write_text(json.dumps({"benchmarks": [
        _bench("conv", "resnet_64", "torch", "forward", 0.010, RES_F)]}))
    results = benchplot.load_results([results_json, rerun])
    assert len(results) == len(benchplot.load_results(results_json))
    torch = [r for r in results if r.path == "torch" and r.layer == "resnet_64"
             and r.direction == "forward"]
    assert [r.seconds for r in torch] == [pytest.approx(0.010)]
    # the layer keeps its place in the suite's order
    assert [r["layer"] for r in benchplot.summarize(results)["rows"]][:2] == ["resnet_64"] * 2


def test_load_results_merge_min_keeps_the_fastest_run(results_json, tmp_path):
    rerun = tmp_path / "rerun.json"
    rerun.write_text(json.dumps({"benchmarks": [
        _bench("conv", "resnet_64", "torch", "forward", 0.010, RES_F),     # faster than 25 ms
        _bench("conv", "resnet_64", "im2col", "forward", 0.030, RES_F)]}))  # slower than 20 ms
    results = benchplot.load_results([results_json, rerun], merge="min")
    fwd = {r.path: r.seconds for r in results if r.layer == "resnet_64" and r.direction == "forward"}
    assert fwd["torch"] == pytest.approx(0.010) and fwd["im2col"] == pytest.approx(0.020)
    with pytest.raises(ValueError, match="merge must be one of"):
        benchplot.load_results(results_json, merge="max")


def test_geomean():
    assert benchplot.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert benchplot.geomean([0.5, None, 2.0]) == pytest.approx(1.0)
    assert benchplot.geomean([]) is None


def test_summary_ratios(results_json):
    s = benchplot.summarize(benchplot.load_results(results_json))
    row = _row(s, "resnet_64", "forward")
    assert row["best_path"] == "im2col"
    assert row["best_s"] == pytest.approx(0.020)
    assert row["best_vs_torch"] == pytest.approx(20 / 25)
    assert row["book_vs_best"] == pytest.approx(80 / 20)
    assert row["gemm_gflops"] == pytest.approx(125.0)       # 2e9 FLOP in 16 ms
    assert row["im2col_vs_gemm"] == pytest.approx(16 / 20)
    # naive ran an eighth of the batch: compared by throughput, never chosen as best
    assert row["gflops"]["naive"] == pytest.approx(0.25e9 / 0.5 / 1e9)
    assert list(row["gflops"]) == ["naive", "im2col", "direct", "book_numpy", "torch", "gemm"]
    back = _row(s, "resnet_64", "backward")
    assert back["gflops"]["im2col"] == pytest.approx(100.0)  # 4e9 FLOP in 40 ms
    assert back["best_vs_torch"] == pytest.approx(0.8)
    dl = _row(s, "dlfs_conv1", "forward")
    assert dl["best_path"] == "direct"
    assert dl["best_vs_torch"] == pytest.approx(0.5)
    assert dl["im2col_vs_gemm"] == pytest.approx(0.25)
    pool = _row(s, "dlfs_pool", "backward")
    assert pool["best_path"] == "direct" and pool["best_vs_torch"] == pytest.approx(0.5)
    assert pool["gemm_gflops"] is None and pool["im2col_vs_gemm"] is None


ALL_TARGETS = {"forward": 1.0, "backward": 0.8, "worst": 1.6, "gemm": 0.65, "numpy": 2.0}


def test_summary_geomeans_and_targets(results_json):
    results = benchplot.load_results(results_json)
    s = benchplot.summarize(results)
    g = s["geomeans"]
    assert g["conv forward best/torch"] == pytest.approx(math.sqrt(0.8 * 0.5))
    assert g["conv backward best/torch"] == pytest.approx(math.sqrt(0.8 * 0.5))
    assert g["conv book/best"] == pytest.approx((4 * 4 * 4 * 4) ** 0.25)
    assert g["pool forward book/best"] == pytest.approx(5.0)
    # im2col's share of sgemm: 16/20 on resnet_64, 1/4 on dlfs_conv1; best's: 16/20, 1/2
    assert g["conv forward im2col/gemm"] == pytest.approx(math.sqrt(0.8 * 0.25))
    assert g["conv forward best/gemm"] == pytest.approx(math.sqrt(0.8 * 0.5))
    assert "pool forward im2col/gemm" not in g          # no sgemm ceiling for a pooling
    assert s["peak_gflops"] == pytest.approx(200.0)
    assert not s["small"]
    # nothing is graded unless asked: no target, no verdict
    assert "targets" not in s
    assert benchplot.check_targets(s, {}) == []
    # dlfs_conv1's best is direct both ways
    assert [_row(s, "dlfs_conv1", d)["best_path"] for d in ("forward", "backward")] == \
        ["direct", "direct"]

    verdicts = {what: met for what, _, met in benchplot.check_targets(s, ALL_TARGETS)}
    assert verdicts["best/torch geomean forward <= 1"] is True
    assert verdicts["best/torch geomean backward <= 0.8"] is True
    assert verdicts["no layer worse than 1.6x torch"] is True
    assert verdicts["best >= 2x book_numpy, geomean"] is True
    # every layer counts: dlfs_conv1's im2col reaches only a quarter of its sgemm rate
    graded = {what: (text, met) for what, text, met in benchplot.check_targets(s, ALL_TARGETS)}
    text, met = graded["im2col >= 65% of sgemm, forward"]
    assert met is False and text == "min 25.0% (dlfs_conv1)"
    # ... unless the user grades the ResNet layer alone
    resnet = benchplot.summarize(benchplot.select_layers(results, ["resnet_64"]))
    assert resnet["geomeans"]["conv forward im2col/gemm"] == pytest.approx(0.8)
    assert resnet["peak_gflops"] == pytest.approx(200.0)
    (gemm,) = benchplot.check_targets(resnet, {"gemm": 0.65})
    assert gemm[1:] == ("min 80.0% (resnet_64)", True)


def test_targets_without_the_numbers_are_not_measured(results_json):
    data = json.loads(results_json.read_text())
    data["benchmarks"] = [b for b in data["benchmarks"]
                          if (b["extra_info"] or {}).get("path") not in ("torch", "gemm")]
    s = benchplot.summarize(benchplot.load_results(data))
    graded = benchplot.check_targets(s, ALL_TARGETS)
    assert [met for _, _, met in graded] == [None, None, None, None, True]
    assert "not measured" in benchplot.format_summary(s, graded)


def test_parse_target():
    assert benchplot.parse_target("forward=0.75") == ("forward", 0.75)
    for bad, match in (("speed=2", "NAME one of"), ("forward", "NAME=VALUE"),
                       ("forward=nan", "finite number > 0"), ("gemm=-1", "finite number > 0"),
                       ("worst=x", "finite number > 0")):
        with pytest.raises(ValueError, match=match):
            benchplot.parse_target(bad)


def test_select_layers_names_unknown_layers(results_json):
    results = benchplot.load_results(results_json)
    with pytest.raises(ValueError, match="resnet_999"):
        benchplot.select_layers(results, ["resnet_999"])


def test_summary_flags_a_missed_target(results_json):
    data = json.loads(results_json.read_text())
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if info.get("path") == "torch" and info.get("layer") == "resnet_64" and b["stats"]:
            b["stats"]["min"] /= 4            # torch now 3.2x faster than im2col
    s = benchplot.summarize(benchplot.load_results(data))
    assert _row(s, "resnet_64", "forward")["best_vs_torch"] == pytest.approx(20 / 6.25)
    graded = benchplot.check_targets(s, {"worst": 1.6})
    verdicts = {what: (text, met) for what, text, met in graded}
    text, met = verdicts["no layer worse than 1.6x torch"]
    assert met is False and "3.20" in text and "resnet_64" in text
    assert "MISSED" in benchplot.format_summary(s, graded)


def test_format_summary_lists_every_row(results_json):
    s = benchplot.summarize(benchplot.load_results(results_json))
    text = benchplot.format_summary(s)
    assert "resnet_64       forward  im2col       20.00     25.00       0.80" in text
    assert "4.00x" in text and "80%" in text and "125.0" in text
    assert "MISSED" not in text and "smoke-mode" not in text
    assert "targets" not in text                    # none passed: no grading section
    graded = benchplot.check_targets(s, {"forward": 1.0})
    assert "best/torch geomean forward <= 1" in benchplot.format_summary(s, graded)


def test_plot_results_writes_pngs(results_json, tmp_path):
    pytest.importorskip("matplotlib")
    results = benchplot.load_results(results_json)
    written = benchplot.plot_results(results, tmp_path / "charts")
    names = sorted(p.name for p in written)
    assert names == ["conv_gflops.png", "conv_time.png", "pool_time.png",
                     "speedup_vs_naive.png", "speedup_vs_torch.png"]
    for p in written:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, p


def test_network_rows_ratio_to_torch(results_json, tmp_path):
    """Whole-network benchmarks get their own table (each path's time over torch's), leave
    the per-layer rows alone, and the charts still draw."""
    data = _constructed()
    net_f = 30_000_000_000
    for path, ms in (("im2col", 600), ("auto", 450), ("torch", 300)):
        data["benchmarks"].append(_bench("network", "resnet18", path, "forward", ms * 1e-3, net_f))
    data["benchmarks"] += [
        _bench("network", "resnet18", "direct", "train_step", 2.0, 3 * net_f),
        _bench("network", "resnet18", "torch", "train_step", 0.8, 3 * net_f),
        # a quarter batch next to the full one: not comparable, left out of the row
        _bench("network", "resnet18", "naive", "train_step", 9.0, net_f, N=2)]
    results = benchplot.load_results(data)
    summary = benchplot.summarize(results)
    forward, train = summary["networks"]
    assert (forward["layer"], forward["direction"], forward["N"]) == ("resnet18", "forward", 8)
    assert forward["torch_s"] == pytest.approx(0.3)
    assert forward["paths"]["im2col"] == (pytest.approx(0.6), pytest.approx(2.0))
    assert forward["paths"]["auto"] == (pytest.approx(0.45), pytest.approx(1.5))
    assert forward["paths"]["torch"][1] == pytest.approx(1.0)
    assert train["direction"] == "train_step" and set(train["paths"]) == {"direct", "torch"}
    assert train["paths"]["direct"][1] == pytest.approx(2.5)
    # the per-layer rows are those of the suite without networks
    assert len(summary["rows"]) == len(benchplot.summarize(
        benchplot.load_results(_constructed()))["rows"])
    text = benchplot.format_summary(summary)
    assert "resnet18 forward (batch 8)" in text
    assert any(line.split() == ["auto", "450.00", "ms", "1.50"] for line in text.splitlines())
    pytest.importorskip("matplotlib")
    names = {p.name for p in benchplot.plot_results(results, tmp_path / "charts")}
    assert "speedup_vs_torch.png" in names


def test_plot_results_without_baselines(tmp_path):
    pytest.importorskip("matplotlib")
    data = {"benchmarks": [_bench("pool", "avg_2x2", "direct", d, 0.001, POOL_F)
                           for d in ("forward", "backward")]}
    written = benchplot.plot_results(benchplot.load_results(data), tmp_path)
    assert [p.name for p in written] == ["pool_time.png"]


def test_cli_plot_bench(results_json, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "cli-charts"
    assert main([str(results_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best/torch" in printed and "best/gemm" in printed and "targets" not in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "conv_gflops.png", "conv_time.png", "pool_time.png", "speedup_vs_naive.png",
        "speedup_vs_torch.png"]
    assert main([str(results_json), str(results_json), "--out",
                 str(tmp_path / "none"), "--no-charts"]) == 0
    assert not (tmp_path / "none").exists()


def test_cli_grades_only_the_targets_passed(results_json, capsys):
    assert main([str(results_json), "--no-charts", "--target", "forward=1.0",
                 "--target", "worst=1.6"]) == 0
    printed = capsys.readouterr().out
    assert "targets passed with --target" in printed and "MISSED" not in printed
    assert printed.count(" met\n") == 2
    # a missed target: exit status 1
    assert main([str(results_json), "--no-charts", "--target", "gemm=0.65"]) == 1
    assert "MISSED" in capsys.readouterr().out
    assert main([str(results_json), "--no-charts", "--layers", "resnet_64",
                 "--target", "gemm=0.65"]) == 0
    printed = capsys.readouterr().out
    assert "dlfs_conv1" not in printed and "min 80.0% (resnet_64)" in printed


@pytest.mark.parametrize("args, message", [
    (["--target", "speed=2"], "NAME one of"),
    (["--target", "forward=inf"], "finite number > 0"),
    (["--layers", "nope"], "nope"),
])
def test_cli_bad_arguments_exit_2(results_json, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        main([str(results_json), "--no-charts", *args])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_plot_bench_rejects_untimed_json(tmp_path, capsys):
    empty = tmp_path / "disabled.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    assert main([str(empty), "--no-charts"]) == 1
    assert "no timed benchmarks" in capsys.readouterr().out


def test_script_runs_from_the_source_tree(results_json, tmp_path):
    done = subprocess.run([*PYTHON, str(PLOT), str(results_json), "--no-charts"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resnet_64       forward  im2col" in done.stdout


def test_import_fastconv_does_not_import_matplotlib():
    code = ("import sys, runpy, fastconv, fastconv.cli; fastconv.cli.build_parser(); "
            f"runpy.run_path({str(PLOT)!r}, run_name='bench_plot'); "
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([*PYTHON, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_real_smoke_run_json(tmp_path):
    """A slice of the bench suite (pure-NumPy paths, no compilation) writes JSON benchplot reads."""
    out = tmp_path / "smoke.json"
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "--bench-small", "-q",
           "-p", "no:cacheprovider", "-k", "dlfs_conv1 and (book_numpy or gemm)",
           "--benchmark-min-rounds=1", "--benchmark-max-time=0.001",
           f"--benchmark-json={out}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    raw = json.loads(out.read_text())["benchmarks"]
    assert {b["extra_info"]["path"] for b in raw} == {"book_numpy", "gemm"}
    results = benchplot.load_results(out)
    assert len(results) == len(raw) == 4
    for b, r in zip(raw, results):
        e = b["extra_info"]
        assert b["group"] == f"dlfs_conv1 {e['direction']}"
        assert (e["dtype"], e["small"], e["N"]) == ("float32", True, 2)
        # FLOPs recomputed from the recorded shape: 2*N*K*C*FH*FW*OH*OW, x2 backward
        fwd = 2 * e["N"] * e["K"] * e["C"] * e["FH"] * e["FW"] * e["OH"] * e["OW"]
        assert e["flops"] == fwd * (1 if e["direction"] == "forward" else 2)
        assert r.gflops == pytest.approx(e["flops"] / b["stats"]["min"] / 1e9)
    s = benchplot.summarize(results)
    assert s["small"] and "smoke-mode" in benchplot.format_summary(s)
    row = _row(s, "dlfs_conv1", "forward")
    assert row["book_s"] > 0 and row["gemm_gflops"] > 0
