"""PyTorch's own sample inputs for conv2d, max_pool2d and avg_pool2d (and the Conv2d,
MaxPool2d, AvgPool2d modules), run through fastconv on every CPU path and compared with
PyTorch's results (``bench/torch_samples.py``). Skipped without torch and expecttest.

What fastconv accepts must match PyTorch on every path that runs it; what it
refuses must be refused with a ValueError or TypeError, never another error;
no input is changed in place.
"""
import dataclasses
import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from support import PATHS, TOLERANCES

pytest.importorskip("torch")
pytest.importorskip("expecttest", reason="PyTorch's test helpers (op_db) import expecttest")

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "bench" / "torch_samples.py"


@pytest.fixture(scope="module")
def ts():
    spec = importlib.util.spec_from_file_location("torch_samples", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module         # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def samples(ts):
    return list(ts.torch_samples(("float32", "float64")))


@pytest.fixture(scope="module")
def report(ts, samples):
    return ts.run(samples, PATHS, TOLERANCES)


def test_the_samples_cover_each_operator_and_module(report):
    sources = set(report.by_source)
    for name in ("nn.functional.conv2d", "nn.functional.max_pool2d", "nn.functional.avg_pool2d",
                 "nn.Conv2d", "nn.MaxPool2d", "nn.AvgPool2d"):
        assert name in sources, f"no sample of {name} (PyTorch's sample lists changed?)"
        assert report.expressible_by_source[name] > 0, f"fastconv ran no sample of {name}"


def test_every_expressible_sample_matches_pytorch_on_every_path(report):
    assert report.expressible > 0
    for path in PATHS:
        assert not report.mismatches[path], (
            f"{path}: {len(report.mismatches[path])} mismatches, e.g. {report.mismatches[path][:3]}")
    # the oracle ran every expressible sample; another path ran it or declined it with
    # fastconv's ValueError naming its scope
    if "naive" in PATHS:
        assert report.ran["naive"] == report.expressible
    for path in PATHS:
        assert report.ran[path] + report.skipped[path] == report.expressible, path


def test_refusals_are_clean_value_or_type_errors(report):
    assert not report.unclean, report.unclean[:5]


def test_no_input_is_modified_in_place(report):
    assert not report.modified_input, report.modified_input[:5]


def test_a_wrong_result_is_caught(ts, samples):
    """The comparison can fail: a plain sample's reference, shifted by a tenth of its
    scale, mismatches on every path that runs it."""
    by_kind = {}
    for sample in samples:
        if not ts.features(sample) and not isinstance(sample.args.get("padding"), str):
            by_kind.setdefault(sample.kind, sample)
    wrong = [dataclasses.replace(s, expected=s.expected + s.expected.dtype.type(
             0.1 * max(1.0, float(np.max(np.abs(s.expected)))))) for s in by_kind.values()]
    assert {s.kind for s in wrong} == {"conv", "max", "avg"}
    shifted = ts.run(wrong, PATHS, TOLERANCES)
    for path in PATHS:
        assert len(shifted.mismatches[path]) == shifted.ran[path], path
    for path in PATHS:
        assert shifted.ran[path] + shifted.skipped[path] == len(wrong), path
