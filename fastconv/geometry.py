"""Output sizes and (h, w) pairs: the one place that does this arithmetic."""
import numbers

ROUNDINGS = ("floor", "exact")

# The largest length along one axis, padded input included, and the largest
# stride. The compiled kernels index in 64-bit integers and multiply two
# lengths (a plane's rows by its columns); lengths below 2**31 keep every such
# product and sum far from overflow. No array that fits in memory comes near.
MAX_LENGTH = 2**31 - 1


def _as_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def as_pair(value, name):
    """``3`` -> ``(3, 3)``; ``(2, 1)`` -> ``(2, 1)``. ``name`` is used in errors."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
        return _as_int(value[0], name), _as_int(value[1], name)
    v = _as_int(value, name)
    return v, v


def check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def conv_output_size(input_size, filter_size, stride=1, pad=0, rounding="floor"):
    """Output length along one axis: ``(input_size + 2*pad - filter_size) / stride + 1``.

    rounding="floor" (default, what frameworks do) drops the trailing rows or
    columns a window does not fit in; rounding="exact" raises ``ValueError``
    unless the division is exact, as the reference notes ask. An output below 1
    is always an error, and so is a length (input, filter, stride, padded
    input) above ``MAX_LENGTH`` = 2**31 - 1.

    >>> conv_output_size(28, 5, stride=3, pad=2)
    10
    """
    input_size = _as_int(input_size, "input_size")
    filter_size = _as_int(filter_size, "filter_size")
    stride = _as_int(stride, "stride")
    pad = _as_int(pad, "pad")
    check_rounding(rounding)
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if filter_size < 1:
        raise ValueError(f"filter_size must be >= 1, got {filter_size}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    for name, value in (("input_size", input_size), ("filter_size", filter_size),
                        ("stride", stride), ("pad", pad)):
        if value > MAX_LENGTH:
            raise ValueError(f"{name} must be <= 2**31 - 1 = {MAX_LENGTH}, got {value}")
    if input_size + 2 * pad > MAX_LENGTH:
        raise ValueError(
            f"pad {pad} is too large: the padded input {input_size} + 2*{pad} = "
            f"{input_size + 2 * pad} must be <= 2**31 - 1 = {MAX_LENGTH}")
    span = input_size + 2 * pad - filter_size
    if span < 0:
        raise ValueError(
            f"filter_size {filter_size} is larger than the padded input "
            f"{input_size} + 2*{pad} = {input_size + 2 * pad}")
    if rounding == "exact" and span % stride:
        raise ValueError(
            f"({input_size} + 2*{pad} - {filter_size})/{stride} + 1 = "
            f"{span / stride + 1:.2f} is not an integer; choose another stride or pad, "
            f"or pass rounding='floor' to drop the last {span % stride} row(s)/column(s)")
    return span // stride + 1


def output_hw(hw, filter_hw, stride, pad, rounding, what="filter"):
    """(OH, OW) for input (H, W); errors name both axes' shapes."""
    out = []
    for axis, size, f, s, p in zip(("height", "width"), hw, filter_hw, stride, pad):
        try:
            out.append(conv_output_size(size, f, s, p, rounding))
        except ValueError as err:
            raise ValueError(
                f"{what} {tuple(filter_hw)} does not fit input (H, W)={tuple(hw)} "
                f"with stride={tuple(stride)}, pad={tuple(pad)} along the {axis}: {err}") from None
    return tuple(out)
