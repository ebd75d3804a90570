"""``fastconv compare``: one row per path, timings, and agreement with naive."""
import numpy as np
import pytest

import fastconv
from fastconv.cli import main
from fastconv.compare import compare
from support import TOLERANCES

CPU_PATHS = [p for p in fastconv.available_backends() if p != "cuda"]


def runs(path, *spec_args):
    """True when ``path`` runs this convolution (winograd: 3x3 stride 1 only)."""
    return fastconv.backends.get_path(path).supports(fastconv.conv_spec(*spec_args))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_path_agrees_with_naive(dtype):
    paths = [p for p in CPU_PATHS if runs(p, (3, 2, 9, 8), (4, 2, 3, 3), 2, 1)]
    rows = compare(N=3, C=2, H=9, W=8, K=4, FH=3, FW=3, stride=2, pad=1, dtype=dtype,
                   repeat=1, paths=paths)
    assert [r["path"] for r in rows] == paths
    for r in rows:
        assert r["forward_ms"] > 0 and r["backward_ms"] > 0 and r["first_s"] > 0
        assert r["max_rel_diff"] <= 10 * TOLERANCES[np.dtype(dtype)]["rtol"], r
    assert rows[0]["max_abs_diff"] == 0.0           # naive against itself


def test_cli_prints_a_table(capsys):
    assert main(["compare", "--batch", "2", "--size", "10", "--filters", "3", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("conv x=(2, 1, 10, 10) W=(3, 1, 5, 5)")
    assert "max |diff| vs naive" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == [
        p for p in fastconv.available_backends() if runs(p, (2, 1, 10, 10), (3, 1, 5, 5))]
