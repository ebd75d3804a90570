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


def check_dilation(dilation) -> tuple[int, int]:
    """``dilation`` (an int or an (h, w) pair) as a pair of ints >= 1."""
    pair = as_pair(dilation, "dilation")
    if min(pair) < 1:
        raise ValueError(f"dilation must be >= 1, got {pair}")
    return pair


def check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def span(window: int, dilation: int = 1) -> int:
    """Cells a window of ``window`` taps ``dilation`` apart covers along one axis:
    ``dilation*(window - 1) + 1`` (the window itself without dilation).

    >>> span(3), span(3, dilation=2)
    (3, 5)
    """
    return dilation * (window - 1) + 1


def conv_output_size(input_size, filter_size, stride=1, pad=0, rounding="floor", dilation=1):
    """Output length along one axis: ``(input_size + 2*pad - dilation*(filter_size-1) - 1) / stride + 1``.

    With ``dilation`` d the filter's taps are d apart, so it spans
    ``d*(filter_size-1) + 1`` input cells (d=1: ``filter_size``, the book's
    formula). rounding="floor" (default, what frameworks do) drops the trailing
    rows or columns a window does not fit in; rounding="exact" raises
    ``ValueError`` unless the division is exact, as the reference notes ask. An
    output below 1 is always an error, and so is a length (input, filter,
    stride, padded input) above ``MAX_LENGTH`` = 2**31 - 1.

    >>> conv_output_size(28, 5, stride=3, pad=2)
    10
    >>> conv_output_size(7, 3, dilation=2)
    3
    """
    input_size = _as_int(input_size, "input_size")
    filter_size = _as_int(filter_size, "filter_size")
    stride = _as_int(stride, "stride")
    pad = _as_int(pad, "pad")
    dilation = _as_int(dilation, "dilation")
    check_rounding(rounding)
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if filter_size < 1:
        raise ValueError(f"filter_size must be >= 1, got {filter_size}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    for name, value in (("input_size", input_size), ("filter_size", filter_size),
                        ("stride", stride), ("pad", pad), ("dilation", dilation)):
        if value > MAX_LENGTH:
            raise ValueError(f"{name} must be <= 2**31 - 1 = {MAX_LENGTH}, got {value}")
    if input_size + 2 * pad > MAX_LENGTH:
        raise ValueError(
            f"pad {pad} is too large: the padded input {input_size} + 2*{pad} = "
            f"{input_size + 2 * pad} must be <= 2**31 - 1 = {MAX_LENGTH}")
    extent = span(filter_size, dilation)
    room = input_size + 2 * pad - extent
    if room < 0:
        if dilation == 1:
            raise ValueError(
                f"filter_size {filter_size} is larger than the padded input "
                f"{input_size} + 2*{pad} = {input_size + 2 * pad}")
        raise ValueError(
            f"filter_size {filter_size} with dilation {dilation} spans {dilation}*"
            f"({filter_size}-1)+1 = {extent} cells, more than the padded input "
            f"{input_size} + 2*{pad} = {input_size + 2 * pad}")
    if rounding == "exact" and room % stride:
        size = (f"{filter_size}" if dilation == 1
                else f"{dilation}*({filter_size}-1)-1")
        raise ValueError(
            f"({input_size} + 2*{pad} - {size})/{stride} + 1 = "
            f"{room / stride + 1:.2f} is not an integer; choose another stride or pad, "
            f"or pass rounding='floor' to drop the last {room % stride} row(s)/column(s)")
    return room // stride + 1


def output_hw(hw, filter_hw, stride, pad, rounding, what="filter", dilation=(1, 1)):
    """(OH, OW) for input (H, W); errors name both axes' shapes."""
    out = []
    for axis, size, f, s, p, d in zip(("height", "width"), hw, filter_hw, stride, pad, dilation):
        try:
            out.append(conv_output_size(size, f, s, p, rounding, d))
        except ValueError as err:
            dil = "" if tuple(dilation) == (1, 1) else f", dilation={tuple(dilation)}"
            raise ValueError(
                f"{what} {tuple(filter_hw)} does not fit input (H, W)={tuple(hw)} "
                f"with stride={tuple(stride)}, pad={tuple(pad)}{dil} along the {axis}: {err}") from None
    return tuple(out)


# ------------------------------------------------------------------- padding

PAD_MODES = ("valid", "same")


def _is_pair_of_pairs(pad):
    return (isinstance(pad, (tuple, list)) and len(pad) == 2
            and any(isinstance(p, (tuple, list)) for p in pad))


def check_padding(pad):
    """``pad`` in one of its forms, checked without any shapes -> a hashable normal form.

    Forms: an int, an (h, w) pair (both as ``(ph, pw)``), explicit
    ``((top, bottom), (left, right))`` (as such), or "valid" / "same" (as the
    string). Every count must be an int >= 0. Raises TypeError or ValueError
    naming ``pad``.
    """
    if isinstance(pad, str):
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be an int or an (h, w) pair, or ((top, bottom), (left, right)), "
                             f"'valid' or 'same'; got the string {pad!r}")
        return pad
    if _is_pair_of_pairs(pad):
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pad):
            raise ValueError(f"pad must be ((top, bottom), (left, right)) when it gives each side, "
                             f"got {pad!r}")
        sides = tuple(tuple(_as_int(v, "pad") for v in p) for p in pad)
        if min(sides[0] + sides[1]) < 0:
            raise ValueError(f"pad must be >= 0 on every side, got {sides}")
        return sides
    if isinstance(pad, (tuple, list)) and len(pad) != 2:
        raise ValueError(f"pad must be an int or an (h, w) pair, or ((top, bottom), (left, right)), "
                         f"'valid' or 'same'; got {pad!r}")
    pair = as_pair(pad, "pad")
    if min(pair) < 0:
        raise ValueError(f"pad must be >= 0, got {pair}")
    return pair


def same_padding(size, filter_size, stride=1, dilation=1):
    """(before, after) zeros that make the output ``ceil(size / stride)`` long.

    The total is ``max((ceil(size/stride) - 1)*stride + dilation*(filter_size-1) + 1 - size, 0)``;
    ``before = total // 2`` and the odd one goes after. With stride 1 this is
    PyTorch's ``padding='same'`` (even filters included); with a larger stride
    it is TensorFlow's "SAME" rule (PyTorch refuses 'same' there).

    >>> same_padding(7, 4)
    (1, 2)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + span(filter_size, dilation) - size, 0)
    return total // 2, total - total // 2


def resolve_padding(pad, hw, filter_hw, stride=1, dilation=1):
    """Zeros on each side, ``((top, bottom), (left, right))``, for ``pad`` in any form.

    hw: the input's (H, W); filter_hw: (FH, FW). stride and dilation (ints or
    (h, w) pairs) matter only for "same"; see :func:`same_padding`. "valid"
    is no padding.
    """
    pad = check_padding(pad)
    if pad == "valid":
        return (0, 0), (0, 0)
    if pad == "same":
        stride, dilation = as_pair(stride, "stride"), check_dilation(dilation)
        if min(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        return tuple(same_padding(int(n), int(f), s, d)
                     for n, f, s, d in zip(hw, filter_hw, stride, dilation))
    if isinstance(pad[0], tuple):
        return pad
    return (pad[0], pad[0]), (pad[1], pad[1])


def check_ceil_rounding(ceil_mode, rounding):
    """Refuse rounding="exact" with ceil_mode=True (one refuses a partial last window,
    the other keeps it); returns ceil_mode."""
    if ceil_mode and check_rounding(rounding) == "exact":
        raise ValueError("rounding='exact' refuses a partial last window and ceil_mode=True "
                         "keeps one; pass one or the other")
    return ceil_mode


def pool_output_size(input_size, window, stride=1, pad=0, dilation=1, ceil_mode=False,
                     rounding="floor"):
    """Output length of a pooling along one axis (PyTorch's rule).

    A window of ``window`` taps ``dilation`` apart spans ``dilation*(window - 1) + 1``
    cells. ceil_mode=False is :func:`conv_output_size` for that span. ceil_mode=True
    rounds ``(input_size + 2*pad - span) / stride`` up instead, so a last, partial
    window is kept (and clipped to the input), then drops that last window again
    if it would start at or beyond ``input_size + pad``: every window must start
    inside the input or its left padding. rounding="exact" asks for a division
    without remainder, which leaves ceil_mode nothing to round: the pair is refused.

    >>> pool_output_size(5, 2, stride=2), pool_output_size(5, 2, stride=2, ceil_mode=True)
    (2, 3)
    """
    window = _as_int(window, "window")
    dilation = _as_int(dilation, "dilation")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    cells = span(window, dilation)
    if cells > MAX_LENGTH:
        raise ValueError(f"the window's span dilation*(window - 1) + 1 = {cells} must be "
                         f"<= 2**31 - 1 = {MAX_LENGTH}")
    if not check_ceil_rounding(ceil_mode, rounding):
        return conv_output_size(input_size, cells, stride, pad, rounding)
    # a one-cell window always fits: this checks input_size, stride and pad alone
    conv_output_size(input_size, 1, stride, pad)
    rest = input_size + 2 * pad - cells
    out = -(-rest // stride) + 1                     # ceil(rest / stride) + 1
    if out < 1:
        raise ValueError(
            f"window span {cells} is larger than the padded input {input_size} + 2*{pad} = "
            f"{input_size + 2 * pad} by {-rest} >= stride {stride}: no window starts inside it")
    if (out - 1) * stride >= input_size + pad:       # the last window would start in the right padding
        out -= 1
    return out


def pool_output_hw(hw, window_hw, stride, pad, dilation=(1, 1), ceil_mode=False, rounding="floor"):
    """(OH, OW) of a pooling over input (H, W); errors name both axes' shapes."""
    out = []
    for axis, size, k, s, p, d in zip(("height", "width"), hw, window_hw, stride, pad, dilation):
        try:
            out.append(pool_output_size(size, k, s, p, d, ceil_mode, rounding))
        except ValueError as err:
            dilated = "" if tuple(dilation) == (1, 1) else f" with dilation={tuple(dilation)}"
            ceil = ", ceil_mode=True" if ceil_mode else ""
            raise ValueError(
                f"pool window {tuple(window_hw)}{dilated} does not fit input (H, W)={tuple(hw)} "
                f"with stride={tuple(stride)}, pad={tuple(pad)}{ceil} along the {axis}: "
                f"{err}") from None
    return tuple(out)
