"""fastconv.explain: counts from shapes (checked by hand and against the naive im2col), timings."""
import importlib
import math

import numpy as np
import pytest

import fastconv
from fastconv import tuner

at = importlib.import_module("fastconv.tuner")
ex = importlib.import_module("fastconv.explain")

# every test starts from an empty cache with measuring on (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_cache")


def test_output_shape_follows_the_worked_geometry():
    # CS231n's worked geometry: H=28, W=31, P=2, S=3, 5x5 -> 10x11
    e = fastconv.explain((1, 1, 28, 31), (4, 1, 5, 5), stride=3, pad=2)
    assert e.out_shape == (1, 4, 10, 11)
    assert fastconv.explain((1, 3, 7, 7), (2, 3, 3, 3), stride=2).out_shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="not an integer"):
        fastconv.explain((1, 3, 7, 7), (2, 3, 3, 3), stride=3, rounding="exact")


def test_counts_worked_by_hand():
    # x (2, 3, 7, 7), W (4, 3, 3, 3), stride 1, pad 0 -> out (2, 4, 5, 5)
    e = fastconv.explain((2, 3, 7, 7), (4, 3, 3, 3))
    assert e.out_shape == (2, 4, 5, 5)
    assert e.flops_forward == 2 * 2 * 4 * 27 * 25 == 10800
    assert e.flops_backward == 21600
    assert (e.bytes_input, e.bytes_weights, e.bytes_output) == (1176, 448, 800)
    assert e.intensity == pytest.approx(10800 / (1176 + 448 + 800))
    assert e.im2col_shape == (50, 27) and e.im2col_bytes == 50 * 27 * 4
    assert e.im2col_intensity == pytest.approx(10800 / (1176 + 2 * 5400 + 448 + 800))
    e64 = fastconv.explain((2, 3, 7, 7), (4, 3, 3, 3), dtype="float64")
    assert (e64.bytes_input, e64.im2col_bytes, e64.flops_forward) == (2352, 10800, 10800)


@pytest.mark.parametrize("x_shape, w_shape, kwargs, cells, outputs, tiled", [
    # LeNet's second layer: 10 output rows at the 14-cell pitch of the input, 140
    # cells, rounded up to whole strips (16 cells on AVX2, 48 on AVX-512): 144
    ((100, 6, 14, 14), (16, 6, 5, 5), {}, 144, 100, True),
    # a 1x7 on 17x17 maps runs transposed: 11 rows of 17 cells, 187, in strips: 192
    ((8, 128, 17, 17), (128, 128, 1, 7), {}, 192, 187, True),
    # float64 runs passes over whole rows: 9 rows at the padded pitch 11, 99 cells
    ((2, 3, 9, 9), (12, 3, 3, 3), {"pad": 1, "dtype": "float64"}, 99, 81, False),
])
def test_direct_grid_worked_by_hand(x_shape, w_shape, kwargs, cells, outputs, tiled):
    e = fastconv.explain(x_shape, w_shape, **kwargs)
    assert e.direct_grid_cells == cells
    assert e.direct_grid_fill == pytest.approx(outputs / cells)
    assert (e.direct_tile is not None) == tiled
    if tiled:
        direct = importlib.import_module("fastconv.kernels.direct")
        rows, strip = e.direct_tile
        assert rows in (4, 8) and rows * strip * 4 == direct.TILE_BYTES
    assert f"{cells} cells computed per" in str(e)


def test_depthwise_layers_report_no_direct_grid():
    e = fastconv.explain((2, 8, 12, 12), (8, 1, 3, 3), pad=1, groups=8)
    assert e.direct_grid_cells is None and e.direct_grid_fill is None
    assert "direct grid" not in str(e)


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", [
    ((1, 3, 7, 7), (2, 3, 5, 5), 1, 0),         # the book's example: (9, 75)
    ((10, 3, 7, 7), (2, 3, 5, 5), 1, 0),        # batch of 10: (90, 75)
    ((2, 2, 9, 8), (3, 2, 3, 2), (2, 1), (1, 2)),
])
def test_im2col_matrix_matches_the_naive_unroll(x_shape, w_shape, stride, pad):
    x = np.zeros(x_shape, np.float32)
    col = fastconv.im2col(x, w_shape[2], w_shape[3], stride, pad)
    e = fastconv.explain(x_shape, w_shape, stride, pad)
    assert e.im2col_shape == col.shape and e.im2col_bytes == col.nbytes




def test_chunks_follow_the_budget(budget):
    # N=10, C*FH*FW=27 (+1 row of ones for the bias), 5x5 outputs, float32:
    # 28*25*4 = 2800 bytes per image.
    shape = ((10, 3, 7, 7), (4, 3, 3, 3))
    assert fastconv.explain(*shape).im2col_chunks == 1
    budget(6000)                                                  # 2 images per chunk
    e = fastconv.explain(*shape)
    assert (e.im2col_budget, e.images_per_chunk, e.im2col_chunks) == (6000, 2, 5)
    # below one image: bands of output rows, 1000 // (28*5*4) = 1 row each -> 5 per image
    budget(1000)
    e = fastconv.explain(*shape)
    assert (e.images_per_chunk, e.im2col_chunks) == (1, 50)
    assert "output-row bands" in str(e)


def test_chunks_agree_with_the_im2col_path(budget):
    mod = importlib.import_module("fastconv.kernels.im2col")
    budget(6000)
    e = fastconv.explain((10, 3, 7, 7), (4, 3, 3, 3))
    assert e.im2col_budget == 6000
    assert e.im2col_chunks == len(list(mod._chunks(10, 28, 5, 5, 4))) == 5


def test_pointwise_report_matches_what_the_im2col_path_does():
    # 1x1, stride 1, no padding, but 6x6 = 36 output positions per image: too
    # narrow for one product per image, so the path does unroll (side by side)
    e = fastconv.explain((2, 8, 6, 6), (4, 8, 1, 1))
    assert e.im2col_unrolls and e.im2col_chunks == 1
    # 16x16 = 256 positions: a plain product on the NCHW data, nothing unrolled
    e = fastconv.explain((2, 8, 16, 16), (4, 8, 1, 1))
    assert not e.im2col_unrolls and e.im2col_chunks == 0
    assert "builds none" in str(e)
    assert fastconv.explain((2, 8, 16, 16), (4, 8, 1, 1), pad=1).im2col_unrolls


def test_pointwise_report_agrees_with_the_kernel(monkeypatch):
    """The unrolling kernel runs exactly when explain says the path unrolls."""
    mod = importlib.import_module("fastconv.kernels.im2col")
    for x_shape in ((2, 8, 6, 6), (2, 8, 16, 16)):
        calls = []
        unroll = mod._unroll
        monkeypatch.setattr(mod, "_unroll", lambda *a: calls.append(1) or unroll(*a))
        x = np.ones(x_shape, np.float32)
        fastconv.conv2d(x, np.ones((4, 8, 1, 1), np.float32), backend="im2col")
        monkeypatch.undo()
        assert bool(calls) == fastconv.explain(x_shape, (4, 8, 1, 1)).im2col_unrolls


def test_without_measuring_nothing_is_timed_or_stored(fresh_cache, two_candidates):
    e = fastconv.explain((2, 3, 8, 8), (4, 3, 3, 3))
    assert e.timings == []
    assert e.auto.source == "static" and e.auto.path in two_candidates
    assert at.stats["measured"] == 0 and not list(fresh_cache.glob("**/*.json"))
    assert "timings" not in str(e)


def test_measure_times_every_path_and_records_autos_pick(fresh_cache, two_candidates):
    e = fastconv.explain((2, 3, 8, 8), (4, 3, 3, 3), pad=1, measure=True, repeat=2)
    measured = [t.path for t in e.timings]
    assert measured == [p for p in fastconv.available_backends() if p != "cuda"]
    for t in e.timings:
        assert t.first_call_s > 0 and t.forward_ms > 0 and t.backward_ms > 0
        assert t.forward_gflops == pytest.approx(e.flops_forward / (t.forward_ms * 1e6))
        assert t.backward_gflops == pytest.approx(e.flops_backward / (t.backward_ms * 1e6))
        assert math.isfinite(t.forward_gflops)
    assert e.timing("naive").path == "naive"
    with pytest.raises(KeyError):
        e.timing("no-such-path")
    assert e.auto.source == "measured" and e.auto.path in two_candidates
    assert set(e.auto.times_ms) == set(two_candidates)
    # explain's timings became auto's stored choice: auto does not measure again
    d = at.decide("conv", (2, 3, 8, 8), (4, 3, 3, 3), 1, 1, "float32")
    assert (d.source, d.path) == ("cache", e.auto.path) and at.stats["measured"] == 0
    # and a second explain reports the cached pick
    assert fastconv.explain((2, 3, 8, 8), (4, 3, 3, 3), pad=1).auto.source == "cache"


def test_measure_with_a_chosen_list_of_paths():
    e = fastconv.explain((1, 2, 6, 6), (2, 2, 3, 3), measure=True, paths=["naive"], repeat=1)
    assert [t.path for t in e.timings] == ["naive"]
    with pytest.raises(ValueError, match="backend must be one of"):
        fastconv.explain((1, 2, 6, 6), (2, 2, 3, 3), measure=True, paths=["fast-ish"])
    if "cuda" not in fastconv.available_backends():
        with pytest.raises(ValueError, match="not available on this machine"):
            fastconv.explain((1, 2, 6, 6), (2, 2, 3, 3), measure=True, paths=["cuda"])


def test_text_and_html():
    e = fastconv.explain((2, 3, 8, 8), (4, 3, 3, 3), measure=True, paths=["naive"], repeat=1)
    text = str(e)
    for needle in ("x=(2, 3, 8, 8)", "out (2, 4, 6, 6)", "FLOPs", "im2col matrix", "intensity",
                   "first call s", "naive", "auto picks"):
        assert needle in text
    page = e._repr_html_()
    assert page.startswith("<div>") and page.count("<table>") == 2
    assert "-&gt; out (2, 4, 6, 6)" in page and "auto picks <b>" in page
    assert repr(e).startswith("<Explanation conv x=(2, 3, 8, 8)")


@pytest.mark.parametrize("args, kwargs, error, match", [
    (((2, 3, 8), (4, 3, 3, 3)), {}, ValueError, "x_shape must be a 4-tuple"),
    (((2, 3, 8, 8), (4, 2, 3, 3)), {}, ValueError, "C=3 channels"),
    (((2, 3, 8, 8), (4, 3, 9, 3)), {}, ValueError, "does not fit"),
    (((2, 0, 8, 8), (4, 0, 3, 3)), {}, ValueError, ">= 1"),
    (((2, 3, 8, 8), (4, 3, 3, 3)), {"dtype": "int32"}, TypeError, "float32 or float64"),
    (((2, 3, 8, 8), (4, 3, 3, 3)), {"stride": 0}, ValueError, "stride must be >= 1"),
    (((2, 3, 8, 8.0), (4, 3, 3, 3)), {}, TypeError, "must be an int"),
    ((np.zeros((2, 3, 8, 8)), (4, 3, 3, 3)), {}, ValueError,
     r"x_shape must be a 4-tuple \(N, C, H, W\), got an array of shape \(2, 3, 8, 8\); pass its .shape$"),
    (((2, 3, 8, 8), np.ones((4, 3, 3, 3))), {}, ValueError, r"w_shape .* array of shape \(4, 3, 3, 3\)"),
])
def test_bad_arguments_are_named(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastconv.explain(*args, **kwargs)


def test_command_line(capsys):
    from fastconv.cli import main

    assert main(["explain", "--batch", "2", "--size", "8", "--kernel", "3", "--filters", "4",
                 "--measure", "--paths", "naive", "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    assert "x=(2, 1, 8, 8) W=(4, 1, 3, 3)" in text and "out (2, 4, 6, 6)" in text
    assert "naive" in text and "auto picks" in text


def test_explain_says_where_a_forward_only_call_runs_when_it_differs(monkeypatch):
    times = {"im2col": {"forward": 30.0, "backward": 10.0},
             "direct": {"forward": 10.0, "backward": 90.0}}
    for forward_direct, says in ((10.0, True), (29.0, False)):
        times["direct"]["forward"] = forward_direct
        monkeypatch.setattr(tuner, "decide_spec", lambda spec, measure=True, **kw: tuner.Decision(
            "im2col", "chosen by this test", "cache", tuner.spec_key(spec), times_ms=times))
        result = fastconv.explain((2, 3, 8, 8), (4, 3, 3, 3), stride=1, pad=1)
        note = "a forward-only call (conv2d, no_grad) runs direct"
        assert (note in str(result)) == says
        assert (note in result._repr_html_()) == says
