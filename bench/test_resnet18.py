"""ResNet-18's convolutions as one network: forward, and one training step, on every
fastconv path that runs all of its layers, against the same network in PyTorch (CPU).

The network is ResNet-18 (He et al., 2015) without batch normalisation and without
its classifier head: the stem (7x7 conv, stride 2, pad 3, then 3x3 max pooling,
stride 2, pad 1), then four stages of two basic blocks each (3x3 convs, pad 1;
the first block of stages 2-4 halves the size with stride 2 and carries its
shortcut through a 1x1 conv, stride 2), ReLU after every conv and after every
residual sum. That is ResNet-18's 20 conv layers with their channels, strides and
pads. Batch normalisation is left out: it is not a convolution, fastconv has no
such layer, and at inference it folds into the conv's weights and bias anyway;
every conv carries a bias instead.

- **forward**: the network's forward pass on a batch (fastconv: its ``Convolution``,
  ``Pooling`` and ``Relu`` layers, residual sums in NumPy; both under ``no_grad``);
- **train_step**: forward, backward through every layer (``dout`` fixed, the
  gradient of ``mean(out * G)`` for a random G) and a plain SGD update of every
  weight and bias.

Full size: batch 8, 3x224x224 images, widths 64-128-256-512 (``--bench-quick``: a
quarter of the batch); smoke mode (``--bench-small``): batch 2, 3x32x32 images,
widths 4-8-16-32, all 20 layers.

Paths: every fastconv path whose scope covers all the layers (winograd runs only
the 3x3 stride-1 ones, cuda is left to ``bench/cuda_vs_cudnn.py``), and "auto",
which lets the tuner pick each layer's path (``extra_info["layer_paths"]`` says
which it picked). naive runs in smoke mode only (a Python loop per output position).

Both libraries start from the same weights. Before timing, each path's first call
is checked (untimed) against PyTorch's forward output, and a training step's
gradients against PyTorch's, so that no benchmark times different work; in smoke
mode, also against the naive path run in float64. Without torch, its benchmarks
skip and the check against it is left out.

GFLOP/s count the convolutions only: forward ``sum 2*N*K*C*FH*FW*OH*OW`` over the
20 layers, a training step three times that (forward, dx, dW); pooling, ReLU, the
residual sums and the update are not counted.
"""
from collections import Counter
from dataclasses import dataclass

import numpy as np
from harness import QUICK_BATCH_DIVISOR, numba_threads, quick_mode, small_mode, torch_or_skip

import fastconv
from fastconv.backends import get_path

LAYER = "resnet18"
DIRECTIONS = ("forward", "train_step")
FULL = dict(N=8, H=224, width=64)
SMALL = dict(N=2, H=32, width=4)
# SGD's learning rate. The loss of _data is linear in the output, so large steps would
# grow the weights and activations round after round until they overflow; with this
# rate, thousands of timed rounds of the smoke-size network (the largest gradients) move
# its output by a few percent, so every round computes on the same kind of numbers.
LR = 1e-6
DTYPE = np.dtype(np.float32)
# The forward output after 20 float32 layers agrees elementwise (measured: 2e-6 of the
# largest magnitude, on every path and in torch against float64).
RTOL, ATOL_SCALE = 1e-3, 1e-4
# Gradients are compared as whole arrays, by relative L2 error: a ReLU whose input lies
# within rounding error of zero passes its gradient in one library and not in the other,
# and one such position moves a whole filter's row of a deep layer's dW (392 terms per
# weight in stage 4 at batch 8) by a few percent: measured up to 2.5% (elementwise, of the
# largest) and 0.5% (L2) between torch float32 and float64, 1% (L2) for fastconv. A
# network wired differently (a wrong stride, pad or shortcut) is off by tens of percent.
GRAD_L2 = 5e-2


@dataclass(frozen=True)
class Conv:
    """One conv layer of the network: its name, channels in and out, square kernel, stride, pad."""

    name: str
    C: int
    K: int
    kernel: int
    stride: int
    pad: int


@dataclass(frozen=True)
class Block:
    """A basic block: relu(conv2(relu(conv1(x))) + shortcut(x)); shortcut a 1x1 conv or identity."""

    conv1: Conv
    conv2: Conv
    downsample: Conv | None


def architecture(width):
    """(stem conv, blocks) of ResNet-18 with stage widths width * (1, 2, 4, 8)."""
    stem = Conv("conv1", 3, width, 7, 2, 3)
    blocks, C = [], width
    for stage, mult in enumerate((1, 2, 4, 8), start=1):
        K = width * mult
        for index in range(2):
            stride = 2 if stage > 1 and index == 0 else 1
            name = f"layer{stage}.{index}"
            down = Conv(f"{name}.downsample", C, K, 1, stride, 0) if stride != 1 or C != K else None
            blocks.append(Block(Conv(f"{name}.conv1", C, K, 3, stride, 1),
                                Conv(f"{name}.conv2", K, K, 3, 1, 1), down))
            C = K
    return stem, blocks


def conv_layers(width):
    """The 20 conv layers in the order they run."""
    stem, blocks = architecture(width)
    return [stem] + [c for b in blocks for c in (b.conv1, b.conv2, b.downsample) if c is not None]


def layer_specs(size):
    """The ConvSpecs of the 20 conv layers (in ``conv_layers`` order) at this size, and the
    stem's max pooling's PoolSpec."""
    N, width = size["N"], size["width"]
    stem, blocks = architecture(width)

    def spec(conv, hw):
        return fastconv.conv_spec((N, conv.C, *hw), (conv.K, conv.C, conv.kernel, conv.kernel),
                                  conv.stride, conv.pad, DTYPE)

    specs = [spec(stem, (size["H"], size["H"]))]
    pool = fastconv.pool_spec((N, width, *specs[0].out_hw), 3, 3, 2, 1, "max", DTYPE)
    hw = pool.out_hw
    for b in blocks:
        first = spec(b.conv1, hw)
        specs += [first, spec(b.conv2, first.out_hw)]
        if b.downsample:
            specs.append(spec(b.downsample, hw))
        hw = first.out_hw
    return specs, pool


def init_params(width, seed=0):
    """name.W (K, C, k, k) and name.b (K,), float32: He-normal weights, small random biases."""
    rng = np.random.default_rng(seed)
    params = {}
    for conv in conv_layers(width):
        fan_in = conv.C * conv.kernel ** 2
        params[f"{conv.name}.W"] = (np.sqrt(2.0 / fan_in) * rng.standard_normal(
            (conv.K, conv.C, conv.kernel, conv.kernel))).astype(DTYPE)
        params[f"{conv.name}.b"] = (0.1 * rng.standard_normal(conv.K)).astype(DTYPE)
    return params


class FastconvResNet18:
    """The network on fastconv's layers, all on one ``backend`` ("auto": the tuner's pick
    per layer). ``params`` are shared with the layers (SGD updates them in place)."""

    def __init__(self, params, width, backend):
        self.params = params
        stem, blocks = architecture(width)
        self.convs = {}
        for conv in conv_layers(width):
            self.convs[conv.name] = fastconv.Convolution(
                params[f"{conv.name}.W"], params[f"{conv.name}.b"], stride=conv.stride,
                pad=conv.pad, backend=backend)
        self.stem = stem
        self.blocks = blocks
        self.pool = fastconv.Pooling(3, 3, stride=2, pad=1, mode="max", backend=backend)
        # one Relu per place it is applied: each keeps its own mask for backward
        names = ["stem"] + [b.conv1.name for b in blocks] + [f"{b.conv2.name}:sum" for b in blocks]
        self.relus = {name: fastconv.Relu() for name in names}

    def forward(self, x):
        """x: (N, 3, H, W) -> (N, 8*width, H/32, W/32)."""
        h = self.pool.forward(self.relus["stem"].forward(self.convs["conv1"].forward(x)))
        for b in self.blocks:
            a = self.relus[b.conv1.name].forward(self.convs[b.conv1.name].forward(h))
            y = self.convs[b.conv2.name].forward(a)
            shortcut = self.convs[b.downsample.name].forward(h) if b.downsample else h
            h = self.relus[f"{b.conv2.name}:sum"].forward(y + shortcut)
        return h

    def backward(self, dout):
        """Gradients into every layer's dW/db; returns dx (N, 3, H, W)."""
        d = dout
        for b in reversed(self.blocks):
            d = self.relus[f"{b.conv2.name}:sum"].backward(d)
            da = self.convs[b.conv2.name].backward(d)
            dh = self.convs[b.conv1.name].backward(self.relus[b.conv1.name].backward(da))
            dh += self.convs[b.downsample.name].backward(d) if b.downsample else d
            d = dh
        d = self.relus["stem"].backward(self.pool.backward(d))
        return self.convs["conv1"].backward(d)

    def grads(self):
        return {key: getattr(self.convs[key.rsplit(".", 1)[0]], "d" + key.rsplit(".", 1)[1])
                for key in self.params}

    def layer_paths(self):
        """{path: number of conv layers whose last forward ran on it}."""
        return dict(Counter(layer.path for layer in self.convs.values()))


def torch_forward(torch, x, params, blocks):
    """The same network in torch.nn.functional."""
    F = torch.nn.functional

    def conv(h, c):
        return F.conv2d(h, params[f"{c.name}.W"], params[f"{c.name}.b"], stride=c.stride,
                        padding=c.pad)

    h = F.max_pool2d(F.relu(F.conv2d(x, params["conv1.W"], params["conv1.b"], stride=2,
                                     padding=3)), 3, 2, 1)
    for b in blocks:
        y = conv(F.relu(conv(h, b.conv1)), b.conv2)
        h = F.relu(y + (conv(h, b.downsample) if b.downsample else h))
    return h


def _size(config):
    if small_mode(config.getoption("--bench-small")):
        return dict(SMALL, ref_N=SMALL["N"], small=True)
    # quick mode redefines the batch (as it does each layer's), so ref_N follows it
    N = max(1, FULL["N"] // QUICK_BATCH_DIVISOR) if quick_mode(config) else FULL["N"]
    return dict(FULL, N=N, ref_N=N, small=False)


def _paths(size):
    """fastconv paths that run every layer of the network (cuda aside), "auto", and torch."""
    specs, pool = layer_specs(size)
    paths = [p for p in fastconv.available_backends() if p != "cuda"
             and all(get_path(p).supports(s) for s in [*specs, pool])]
    if not size["small"]:
        paths.remove("naive")    # a Python loop per output position: minutes per call
    return paths + ["auto", "torch"]


def pytest_generate_tests(metafunc):
    if "resnet_id" in metafunc.fixturenames:
        size = _size(metafunc.config)
        ids = [f"{path}-{LAYER}-{d}" for d in DIRECTIONS for path in _paths(size)]
        metafunc.parametrize("resnet_id", ids, ids=ids)


def _data(size):
    """x (N, 3, H, H) and dout, the gradient of the loss mean(out * G) for a fixed random G:
    small enough that LR * gradient barely moves a weight, so the weights (and the
    activations) stay where they started however many rounds are timed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((size["N"], 3, size["H"], size["H"])).astype(DTYPE)
    specs, _ = layer_specs(size)
    out_shape = specs[-1].out_shape
    dout = (rng.standard_normal(out_shape) / np.prod(out_shape)).astype(DTYPE)
    return x, dout


# (N, H, width) -> {"torch": (out, grads) or None, "naive64": (out, grads) or None}
_REFERENCES = {}


def _torch_reference(size, x, dout):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    _, blocks = architecture(size["width"])
    params = {k: torch.from_numpy(v.copy()).requires_grad_(True)
              for k, v in init_params(size["width"]).items()}
    out = torch_forward(torch, torch.from_numpy(x), params, blocks)
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), {k: p.grad.numpy() for k, p in params.items()}


def _naive64_reference(size, x, dout):
    params = {k: v.astype(np.float64) for k, v in init_params(size["width"]).items()}
    net = FastconvResNet18(params, size["width"], "naive")
    out = net.forward(x.astype(np.float64))
    net.backward(dout.astype(np.float64))
    return out.astype(DTYPE), {k: g.astype(DTYPE) for k, g in net.grads().items()}


def references(size, x, dout):
    """What every path's first call is checked against: torch (when installed), and in
    smoke mode the naive path in float64; computed once per size."""
    key = (size["N"], size["H"], size["width"])
    if key not in _REFERENCES:
        found = {"torch": _torch_reference(size, x, dout)}
        if size["small"]:
            found["naive float64"] = _naive64_reference(size, x, dout)
        _REFERENCES[key] = {name: ref for name, ref in found.items() if ref is not None}
    return _REFERENCES[key]


def _same_kind(got, want, what):
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"


def check_against(refs, out, grads, label):
    """The first call's output (and, for a training step, its gradients) agree with each
    reference to float32 tolerance."""
    for name, (ref_out, ref_grads) in refs.items():
        what = f"{label}: forward output vs {name}"
        _same_kind(out, ref_out, what)
        np.testing.assert_allclose(out, ref_out, rtol=RTOL, err_msg=what,
                                   atol=ATOL_SCALE * max(1.0, float(np.abs(ref_out).max())))
        for key, g in (grads or {}).items():
            want = ref_grads[key]
            _same_kind(g, want, f"{label}: d{key} vs {name}")
            error = np.linalg.norm((g - want).ravel()) / max(np.linalg.norm(want.ravel()), 1e-30)
            assert error <= GRAD_L2, \
                f"{label}: d{key} vs {name}: relative L2 error {error:.2e} > {GRAD_L2:g}"


def _fastconv_runner(path, size, x, dout):
    params = init_params(size["width"])
    net = FastconvResNet18(params, size["width"], path)
    opt = fastconv.SGD(lr=LR)

    def forward():
        with fastconv.no_grad():        # as torch's: nothing kept for a backward
            return net.forward(x), None

    def train_step():
        out = net.forward(x)
        net.backward(dout)
        grads = net.grads()
        checked = {k: g.copy() for k, g in grads.items()}
        opt.update(params, grads)
        return out, checked

    return net, forward, train_step, numba_threads()


def _torch_runner(size, x, dout):
    torch = torch_or_skip()
    _, blocks = architecture(size["width"])
    params = {k: torch.from_numpy(v).requires_grad_(True) for k, v in init_params(size["width"]).items()}
    opt = torch.optim.SGD(list(params.values()), lr=LR)
    tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)

    def forward():
        with torch.no_grad():
            return torch_forward(torch, tx, params, blocks).numpy(), None

    def train_step():
        opt.zero_grad()
        out = torch_forward(torch, tx, params, blocks)
        out.backward(tdout)
        checked = {k: p.grad.numpy().copy() for k, p in params.items()}
        opt.step()
        return out.detach().numpy(), checked

    return None, forward, train_step, torch.get_num_threads()


def test_resnet18(benchmark, resnet_id, request, tmp_path, monkeypatch):
    path, _, direction = resnet_id.split("-")
    size = _size(request.config)
    if path == "auto" and size["small"]:
        # the tuner's choices for the tiny smoke-run layers stay out of the user's cache
        monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    x, dout = _data(size)
    if path == "torch":
        net, forward, train_step, threads = _torch_runner(size, x, dout)
    else:
        net, forward, train_step, threads = _fastconv_runner(path, size, x, dout)
    fn = forward if direction == "forward" else train_step

    # untimed first call: compilation, cache loading, the tuner's choices, first touch;
    # its result must match the references, so that every path times the same work
    out, grads = fn()
    if path != "torch":
        check_against(references(size, x, dout), out, grads, resnet_id)

    specs, _ = layer_specs(size)
    forward_flops = sum(s.flops for s in specs)
    benchmark.group = f"{LAYER} {direction}"
    benchmark.extra_info.update(
        kind="network", layer=LAYER, path=path, direction=direction,
        library="baseline" if path == "torch" else "fastconv", dtype=DTYPE.name,
        threads=threads, N=size["N"], ref_N=size["ref_N"], C=3, H=size["H"], W=size["H"],
        width=size["width"], conv_layers=len(specs),
        flops=forward_flops * (1 if direction == "forward" else 3), small=size["small"])
    if net is not None:
        benchmark.extra_info["layer_paths"] = net.layer_paths()
    out, _ = benchmark(fn)
    # the last timed round still computed finite numbers (the updates did not diverge)
    assert np.isfinite(out).all(), f"{resnet_id}: non-finite output after the timed rounds"
