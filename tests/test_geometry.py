"""conv_output_size: the worked cases of the reference notes (the book and CS231n), both rounding rules."""
import pytest

from fastconv import conv_output_size


@pytest.mark.parametrize("size, f, stride, pad, expected", [
    (4, 3, 1, 1, 4),      # 4x4 input, P=1, S=1, 3x3 -> 4x4
    (7, 3, 2, 0, 3),      # 7x7, P=0, S=2, 3x3 -> 3x3
    (28, 5, 3, 2, 10),    # H=28 -> OH=10
    (31, 5, 3, 2, 11),    # W=31 -> OW=11
    (7, 3, 1, 1, 7),      # "same" size
    (7, 5, 1, 2, 7),
    (7, 7, 1, 3, 7),
    (5, 5, 1, 0, 1),      # filter exactly covers the input
])
def test_worked_sizes_both_roundings(size, f, stride, pad, expected):
    assert conv_output_size(size, f, stride, pad) == expected
    assert conv_output_size(size, f, stride, pad, rounding="exact") == expected


def test_inexact_division_floors_by_default():
    # (7 - 3)/3 + 1 = 2.33: floor drops the last column that does not fit
    assert conv_output_size(7, 3, stride=3) == 2


def test_inexact_division_is_an_error_when_exact_is_asked():
    with pytest.raises(ValueError, match=r"\(7 \+ 2\*0 - 3\)/3 \+ 1 = 2\.33 is not an integer"):
        conv_output_size(7, 3, stride=3, rounding="exact")


@pytest.mark.parametrize("args, kwargs, match", [
    ((3, 5), {}, "larger than the padded input"),
    ((3, 8), {"pad": 2}, r"3 \+ 2\*2 = 7"),
    ((7, 3), {"stride": 0}, "stride must be >= 1"),
    ((7, 3), {"pad": -1}, "pad must be >= 0"),
    ((7, 3), {"rounding": "ceil"}, "rounding must be one of"),
    ((0, 3), {}, "input_size must be >= 1"),
    ((7, 0), {}, "filter_size must be >= 1"),
])
def test_bad_arguments_raise_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_output_size(*args, **kwargs)


@pytest.mark.parametrize("bad", [2.0, "3", None, True])
def test_non_integer_arguments_raise_type_error(bad):
    with pytest.raises(TypeError, match="stride must be an int"):
        conv_output_size(7, 3, stride=bad)
