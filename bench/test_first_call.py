"""Keeps bench/first_call.py working: one fresh-process measurement of the naive path.

The naive path compiles nothing, so this stays cheap in the CI smoke run; the
real measurement is ``python bench/first_call.py`` (see its docstring).
"""
import first_call


def test_first_call_script_measures_a_fresh_process():
    table = first_call.first_call_table(["naive"], warm_only=True)
    warm = table["naive"]["warm"]
    steps = (first_call.STEPS + ("cpu", "again_cpu", "compile")
             + tuple("again_" + s for s in first_call.STEPS[1:]))
    assert set(warm) == set(steps)
    assert all(warm[s] > 0 for s in steps if not s.endswith("cpu") and s != "compile")
    assert all(warm[s] >= 0 for s in ("cpu", "again_cpu"))
    assert warm["compile"] == 0          # the naive path compiles nothing
    text = first_call.format_table(table)
    assert "naive    warm" in text and "naive    rerun" in text
