"""The fastconv command line: one clear line and exit status 2 for bad arguments,
--version and help, the packaged autotune suite, and fastconv train's checks,
resume rules and Ctrl-C messages.

Training runs use a tiny made-up dataset (8x8 images written as IDX files) on
the naive path, so they need neither MNIST nor compilation.
"""
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import signal
import struct
import subprocess

import numpy as np
import pytest

import fastconv
from fastconv.cli import build_parser, main
from fastconv.cli.tools import check_spec, default_suite
from fastconv.trainer import Trainer
from support import PYTHON

REPO = pathlib.Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, BATCH = 40, 20, 10      # 4 steps per epoch


def usage_error(capsys, args):
    """Run main(args), expect exit status 2 and one line on stderr; return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------- version, help

def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastconv {importlib.metadata.version('fastconv')}"
    assert importlib.metadata.version("fastconv") == fastconv.__version__


def test_entry_point_and_python_m():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="fastconv")
    assert script.value == "fastconv.cli:main" and script.load() is main
    done = subprocess.run([*PYTHON, "-m", "fastconv", "--version"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"fastconv {fastconv.__version__}"
    done = subprocess.run([*PYTHON, "-m", "fastconv", "compare", "--kernel", "40"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "fastconv compare: error: --kernel 40 does not fit --size 28 with --pad 0: the filter "
        "can be at most size + 2*pad = 28"]


def _subparsers(parser):
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


def test_every_option_has_help_and_no_rst_markup():
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == {"compare", "explain", "autotune", "train", "warmup"}
    for p in [parser, *commands.values()]:
        for action in p._actions:
            if action.__class__.__name__ != "_SubParsersAction":
                assert action.help, (p.prog, action.dest)
        text = p.format_help()
        assert "``" not in text, p.prog
        assert "the seeds'" not in text and "the issue" not in text, p.prog


def test_core_modules_hold_no_command_line():
    """argparse and the subcommands live in fastconv.cli only; bench post-processing
    is not installed at all."""
    package = pathlib.Path(fastconv.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        for word in ("argparse", "_cmd_", "add_cli", "def add_parser"):
            assert word not in text, f"{source.name} contains {word}"
    assert importlib.util.find_spec("fastconv.benchplot") is None
    assert importlib.util.find_spec("fastconv.train_cli") is None


# ------------------------------------------------------- bad arguments, exit 2

@pytest.mark.parametrize("args, words", [
    (["compare", "--stride", "0"], ["argument --stride", ">= 1", "got 0"]),
    (["compare", "--kernel", "40"], ["--kernel 40 does not fit --size 28"]),
    (["compare", "--kernel", "9", "--size", "4", "--pad", "2"], ["size + 2*pad = 8"]),
    (["compare", "--paths", "gpu"], ["argument --paths", "unknown path 'gpu'", "naive"]),
    (["compare", "--batch", "-1"], ["argument --batch", "must be >= 1"]),
    (["compare", "--pad", "-1"], ["argument --pad", "must be >= 0"]),
    (["compare", "--size", "2.5"], ["argument --size", "whole number"]),
    (["compare", "--repeat", "0"], ["argument --repeat"]),
    (["compare", "--dtype", "int8"], ["argument --dtype", "invalid choice"]),
    (["explain", "--stride", "0"], ["argument --stride"]),
    (["explain", "--kernel", "40"], ["--kernel 40 does not fit"]),
    (["explain", "--measure", "--paths", "gpu"], ["unknown path 'gpu'"]),
    (["explain", "--paths", "naive"], ["--paths", "needs --measure"]),
    (["explain", "--filters", "0"], ["argument --filters"]),
    (["autotune", "--dtype", "float16"], ["argument --dtype"]),
    (["autotune", "--clear", "suite.json"], ["--clear", "takes no SUITE.json"]),
    (["autotune", "no/such/suite.json"], ["no/such/suite.json does not exist"]),
    (["train", "--lr", "nan"], ["argument --lr", "finite number > 0", "'nan'"]),
    (["train", "--lr", "inf"], ["argument --lr", "'inf'"]),
    (["train", "--lr", "-1"], ["argument --lr", "'-1'"]),
    (["train", "--lr", "0"], ["argument --lr", "'0'"]),
    (["train", "--weight-init", "inf"], ["argument --weight-init", "'inf'"]),
    (["train", "--weight-init", "nan"], ["argument --weight-init", "'nan'"]),
    (["train", "--weight-init", "glorot"], ["argument --weight-init", "he", "xavier"]),
    (["train", "--epochs", "0"], ["argument --epochs", "must be >= 1"]),
    (["train", "--batch-size", "0"], ["argument --batch-size", "must be >= 1"]),
    (["train", "--train-size", "0"], ["argument --train-size"]),
    (["train", "--test-size", "-3"], ["argument --test-size"]),
    (["train", "--eval-samples", "0"], ["argument --eval-samples"]),
    (["train", "--backend", "fortran"], ["backend 'fortran' is not available", "auto"]),
    (["train", "--optimizer", "RMSprop"], ["argument --optimizer"]),
    ([], ["required", "COMMAND"]),
    (["convolve"], ["invalid choice: 'convolve'"]),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, args, words):
    line = usage_error(capsys, args)
    command = f"fastconv {args[0]}" if args and args[0] != "convolve" else "fastconv"
    assert line.startswith(f"{command}: error: "), line
    for word in words:
        assert word in line, line


def test_library_errors_become_usage_errors(capsys, monkeypatch):
    """What the library refuses (ValueError/TypeError) ends as one line, exit 2."""
    import fastconv.compare

    def refuse(**kwargs):
        raise ValueError("x has shape (1, 2)\nbut W expects 3 channels")

    monkeypatch.setattr(fastconv.compare, "compare", refuse)
    line = usage_error(capsys, ["compare", "--repeat", "1"])
    assert line == "fastconv compare: error: x has shape (1, 2) but W expects 3 channels"


def test_compare_prints_its_title_before_timing(capsys, monkeypatch):
    """The first calls compile (seconds on a new machine): the title is out before they start."""
    import fastconv.compare

    seen = []

    def fake(**kwargs):
        seen.append(capsys.readouterr().out)
        return [dict(path="direct", first_s=1.0, forward_ms=2.0, backward_ms=3.0,
                     max_abs_diff=0.0, max_rel_diff=0.0)]

    monkeypatch.setattr(fastconv.compare, "compare", fake)
    capsys.readouterr()
    assert main(["compare", "--repeat", "2"]) == 0
    assert seen[0].startswith("conv x=(100, 1, 28, 28)") and "best of 2" in seen[0]
    rest = capsys.readouterr().out
    assert rest.splitlines()[0].split() == ["path", "first", "call", "s", "forward", "ms",
                                            "backward", "ms", "max", "|diff|", "vs", "naive",
                                            "relative"]
    assert rest.splitlines()[1].split()[0] == "direct"


# ------------------------------------------------------------------ autotune

def _layer_fields(spec):
    return {k: v for k, v in spec.items() if k not in ("why", "about")}


def test_autotune_default_suite_is_installed(capsys, monkeypatch, tmp_path):
    """Without SUITE.json it measures the suite shipped inside fastconv, wherever it runs."""
    seen = []
    monkeypatch.setattr(fastconv, "autotune",
                        lambda specs, dtype, force: seen.append((specs, dtype, force)) or [])
    monkeypatch.chdir(tmp_path)          # no bench/ folder here
    assert main(["autotune", "--dtype", "float64"]) == 0
    (specs, dtype, force), = seen
    with open(REPO / "bench" / "layers.json") as f:
        bench = json.load(f)
    assert [_layer_fields(s) for s in specs] == \
        [_layer_fields(s) for s in bench["layers"] + bench["pooling"]]
    assert (dtype, force) == ("float64", False)
    assert specs == default_suite()
    assert "stored in" in capsys.readouterr().out


@pytest.mark.parametrize("suite, words", [
    ("not json", ["is not valid JSON"]),
    ({"layers": []}, ["holds no layers"]),
    ({"layer": []}, ["'layers' and/or 'pooling' list"]),
    ({"layers": [{"id": "c", "N": 1, "C": 1, "H": 8, "W": 8, "FH": 3, "FW": 3, "K": 2,
                  "stride": 1, "pad": 0}, {"id": "odd", "N": 1, "C": 1, "H": 8, "W": 8}]},
     ["spec 1 (odd)", "lacks FH, FW"]),
    ({"layers": [{"N": 1, "C": 1, "H": 8, "W": 8, "K": 2, "FH": 40, "FW": 40}]},
     ["spec 0", "does not fit input (H, W)=(8, 8)"]),
    ({"layers": [{"N": 1, "C": 1, "H": 8, "W": 8, "K": 2, "FH": 3, "FW": 3, "stride": 0}]},
     ["spec 0", "stride must be >= 1"]),
    ({"pooling": [{"N": 1, "C": 1, "H": 8, "W": 8, "FH": 2, "FW": 2, "mode": "sum"}]},
     ["spec 0", "mode must be one of ('max', 'avg')", "'sum'"]),
    ({"layers": [{"x_shape": [1, 3, 8, 8], "w_shape": [2, 4, 3, 3]}]}, ["C=3 channels"]),
    ({"layers": [{"N": 1, "C": 6, "H": 8, "W": 8, "K": 4, "FH": 3, "FW": 3, "groups": 4}]},
     ["spec 0", "groups=4", "C=6"]),
    ({"layers": [{"N": 1, "C": 1, "H": 8, "W": 8, "K": 2, "FH": 3, "FW": 3, "dilation": 4}]},
     ["spec 0", "dilation"]),
    ([[[1, 1, 8, 8], [2, 1, 3]]], ["spec 0", "W must be a 4-tuple", "(2, 1, 3)"]),
])
def test_autotune_refuses_a_bad_suite_before_measuring(capsys, monkeypatch, tmp_path, suite,
                                                       words):
    monkeypatch.setattr(fastconv, "autotune", lambda *a, **k: pytest.fail("measured"))
    path = tmp_path / "suite.json"
    path.write_text(suite if isinstance(suite, str) else json.dumps(suite))
    line = usage_error(capsys, ["autotune", str(path)])
    assert line.startswith("fastconv autotune: error: ")
    for word in words:
        assert word in line, line


def test_packaged_suite_specs_are_valid():
    for spec in default_suite():
        check_spec(spec)


# --------------------------------------------------------------------- train

def _write_idx(path, array):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Four IDX files: 40 training and 20 test images of 8x8 pixels, labels 0-9."""
    where = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for stem, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        _write_idx(where / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8)))
        _write_idx(where / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return where


def train_args(data_dir, out, *extra):
    return ["train", "--data-dir", str(data_dir), "--backend", "naive", "--quiet",
            "--out", str(out), *extra]


def _snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A completed one-epoch run: SimpleConvNet, batch 10, Adam lr 0.002, float32."""
    out = tmp_path_factory.mktemp("run") / "done"
    assert main(train_args(data_dir, out, "--epochs", "1", "--batch-size", str(BATCH),
                           "--lr", "0.002")) == 0
    return out


def test_train_without_the_train_extra(capsys, monkeypatch, tmp_path):
    """matplotlib (and tqdm for the bar) missing: one line naming the extra, before any data."""
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    args = ["train", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]
    line = usage_error(capsys, args + ["--quiet"])
    assert line == ('fastconv train: error: training needs matplotlib, which the plain fastconv '
                    'install lacks: pip install "fastconv[train]"')
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
    line = usage_error(capsys, args)
    assert "matplotlib and tqdm" in line and 'pip install "fastconv[train]"' in line
    assert not (tmp_path / "o").exists()


def test_train_without_the_extra_in_a_fresh_process(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['tqdm'] = None; "
            "from fastconv.cli import main; "
            f"sys.exit(main(['train', '--out', {str(tmp_path / 'o')!r}]))")
    done = subprocess.run([*PYTHON, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and 'pip install "fastconv[train]"' in done.stderr


def test_bad_out_is_refused_before_the_data(capsys, tmp_path):
    """An existing file, or a path through one: refused before the (missing) data is read."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    absent = tmp_path / "no-data"
    line = usage_error(capsys, ["train", "--data-dir", str(absent), "--out", str(a_file)])
    assert line == f"fastconv train: error: --out {a_file} exists and is not a directory"
    line = usage_error(capsys, ["train", "--data-dir", str(absent), "--out",
                                str(a_file / "run")])
    assert f"cannot be created: {a_file} is a file" in line
    assert a_file.read_text() == "keep me"
    # a good --out passes, then the missing data is reported (and no empty folder is left)
    line = usage_error(capsys, ["train", "--data-dir", str(absent), "--out",
                                str(tmp_path / "fresh")])
    assert "does not exist" in line and str(absent) in line
    assert not (tmp_path / "fresh").exists()


def test_unwritable_out_is_refused(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / "run"
    if os.access(locked, os.W_OK):          # root writes anywhere ...
        if not os.path.isdir("/sys"):
            pytest.skip("no directory here that this user cannot write to")
        target = pathlib.Path("/sys/fastconv-run")   # ... but not into sysfs
    try:
        line = usage_error(capsys, ["train", "--data-dir", str(tmp_path / "absent"),
                                    "--out", str(target)])
    finally:
        locked.chmod(0o700)
    assert line.startswith(f"fastconv train: error: --out {target}: cannot write in "), line
    assert not target.exists()


@pytest.mark.parametrize("extra, words", [
    (["--batch-size", "20"], ["--batch-size 20 differs from the saved run's 10"]),
    (["--dtype", "float64"], ["--dtype float64 differs from the saved run's float32"]),
    (["--net", "lenet"], ["--net lenet differs from the saved run's simple"]),
    (["--optimizer", "SGD"], ["--optimizer SGD differs from the saved run's Adam"]),
    (["--lr", "0.01"], ["--lr 0.01 differs from the saved run's 0.002"]),
    (["--train-size", "30"], ["cannot resume", "40 training images", "this trainer has 30"]),
])
def test_resume_with_other_options_is_refused(capsys, data_dir, finished_run, extra, words):
    before = _snapshot(finished_run)
    line = usage_error(capsys, train_args(data_dir, finished_run, "--resume", "--epochs", "2",
                                          *extra))
    assert line.startswith("fastconv train: error: ")
    for word in words:
        assert word in line, line
    assert _snapshot(finished_run) == before


def test_resume_without_a_checkpoint(capsys, data_dir, tmp_path):
    line = usage_error(capsys, train_args(data_dir, tmp_path / "new", "--resume"))
    assert "--resume given but" in line and "does not exist" in line


def test_resume_of_a_finished_run_changes_nothing(capsys, data_dir, finished_run):
    before = _snapshot(finished_run)
    for extra in ([], ["--epochs", "1"]):
        capsys.readouterr()
        assert main(train_args(data_dir, finished_run, "--resume", *extra)) == 0
        text = capsys.readouterr().out
        assert "already complete: 1 epoch(s) trained, --epochs 1" in text
        assert "Nothing was changed" in text
    assert _snapshot(finished_run) == before


def test_resume_takes_the_saved_options(capsys, data_dir, finished_run, tmp_path):
    """Options left out on --resume come from the checkpoint; the run then goes on."""
    out = tmp_path / "copy"
    out.mkdir()
    for name in os.listdir(finished_run):
        (out / name).write_bytes((finished_run / name).read_bytes())
    capsys.readouterr()
    assert main(train_args(data_dir, out, "--resume", "--epochs", "2")) == 0
    text = capsys.readouterr().out
    # the first line comes before the data is read (which takes seconds for all of MNIST)
    assert text.startswith("fastconv train: reading mnist ...\n")
    assert "resumed at epoch 1, step 0" in text
    assert "2 epochs, batch 10, Adam lr 0.002" in text
    report = json.loads((out / "history.json").read_text())
    assert report["batch_size"] == BATCH and len(report["history"]["test_acc"]) == 2
    # the time spent compiling and choosing paths, and its share of the training
    assert 0 <= report["setup_seconds"] <= report["wall_seconds"]
    assert report["setup_share"] == pytest.approx(report["setup_seconds"] / report["wall_seconds"],
                                                  abs=0.05)
    assert "compiling kernels and choosing paths took" in text


def _ctrl_c(monkeypatch, at_call, times):
    """Make the at_call-th training step deliver `times` Ctrl-C (SIGINT) to this process."""
    original = Trainer.train_step
    calls = []

    def step(self, x, t):
        calls.append(1)
        if len(calls) == at_call:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)   # the handler runs before this returns
        return original(self, x, t)

    monkeypatch.setattr(Trainer, "train_step", step)


def test_double_ctrl_c_in_the_first_epoch_claims_no_checkpoint(capsys, monkeypatch, data_dir,
                                                               tmp_path):
    out = tmp_path / "run"
    _ctrl_c(monkeypatch, at_call=2, times=2)
    assert main(train_args(data_dir, out, "--batch-size", str(BATCH))) == 130
    text = capsys.readouterr().out
    assert not (out / "checkpoint.npz").exists()
    assert "checkpoint saved" not in text
    assert "interrupted after 1 steps, before this run saved a checkpoint: nothing to resume" in text


def test_one_ctrl_c_saves_and_says_so(capsys, monkeypatch, data_dir, tmp_path):
    out = tmp_path / "run"
    _ctrl_c(monkeypatch, at_call=2, times=1)
    assert main(train_args(data_dir, out, "--batch-size", str(BATCH))) == 130
    text = capsys.readouterr().out
    assert (f"interrupted after 2 steps; checkpoint saved at epoch 1, step 2 in "
            f"{out / 'checkpoint.npz'}: rerun with --resume to continue") in text
    monkeypatch.undo()
    assert main(train_args(data_dir, out, "--resume")) == 0
    assert "resumed at epoch 0, step 2" in capsys.readouterr().out


def test_double_ctrl_c_after_an_epoch_points_at_the_epoch_checkpoint(capsys, monkeypatch,
                                                                    data_dir, tmp_path):
    out = tmp_path / "run"
    _ctrl_c(monkeypatch, at_call=6, times=2)        # second step of epoch 2
    assert main(train_args(data_dir, out, "--batch-size", str(BATCH))) == 130
    text = capsys.readouterr().out
    assert ("interrupted at once after 5 steps; the last checkpoint, "
            f"{out / 'checkpoint.npz'}, is from the end of epoch 1 (4 steps)") in text


def test_double_ctrl_c_next_to_an_older_run_says_so(capsys, monkeypatch, data_dir, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(data_dir, out, "--epochs", "1", "--batch-size", str(BATCH))) == 0
    before = _snapshot(out)["checkpoint.npz"]
    _ctrl_c(monkeypatch, at_call=1, times=2)
    assert main(train_args(data_dir, out, "--batch-size", str(BATCH))) == 130
    text = capsys.readouterr().out
    assert "before this run saved a checkpoint" in text and "is from an earlier run" in text
    assert _snapshot(out)["checkpoint.npz"] == before


def test_ctrl_c_in_a_tool_ends_with_one_line(capsys, monkeypatch):
    import fastconv.compare

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastconv.compare, "compare", interrupted)
    assert main(["compare", "--repeat", "1"]) == 130
    assert capsys.readouterr().err.strip() == "fastconv compare: interrupted"


def test_warmup_compiles_a_suite_and_refuses_bad_arguments(capsys, tmp_path):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"layers": [{"id": "a", "N": 1, "C": 1, "H": 6, "W": 6, "K": 2,
                                             "FH": 3, "FW": 3, "stride": 1, "pad": 0}]}))
    assert main(["warmup", "--layers", str(suite), "--paths", "naive"]) == 0
    assert "float32" in capsys.readouterr().out
    line = usage_error(capsys, ["warmup", "--layers", str(tmp_path / "missing.json")])
    assert "does not exist" in line
    line = usage_error(capsys, ["warmup", "--batch-size", "0"])
    assert "--batch-size" in line
