"""Custom ops: every backend against the papers' golden outputs, against the pure-PyTorch reference,
and gradcheck of the compiled CPU kernels in float64."""
import pytest
import torch
from torch.autograd import gradcheck

import dense.ops as ops
from dense.ops import reference as R

from shared_data import golden_tools, shared_file

CUDA = torch.cuda.is_available() and ops.cuda_kernels_available()
BACKENDS = ["reference", "cpu"] + (["cuda"] if CUDA else [])
KERNELS = ["ms_deform_attn", "dcnv3", "dscn", "na2d_qk", "na2d_av"]


def _device(backend):
    return "cuda" if backend == "cuda" else "cpu"


def _run_with_grads(fn, inputs: dict, diff: list, grad_output: torch.Tensor):
    leaves = {k: (v.clone().requires_grad_(True) if k in diff else v) for k, v in inputs.items()}
    out = fn(**leaves)
    out.backward(grad_output.to(out.device, out.dtype))
    return out, {k: leaves[k].grad for k in diff}


def test_extension_registers_every_cpu_kernel():
    assert ops.extension_available(), "dense._C did not import: run `pip install --no-build-isolation -e .`"
    for name in KERNELS:
        assert "cpu" in ops.available_backends("cpu", name), name


# ----------------------------------------------------------------------------------------- golden
def _golden(name):
    return torch.load(shared_file(f"{name}.pt"), weights_only=False)


def compare(*args):
    return golden_tools().compare(*args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ms_deform_attn_golden(backend):
    g = _golden("ms_deform_attn")
    i = {k: v.to(_device(backend)) for k, v in g["inputs"].items()}
    fn = lambda value, sampling_locations, attention_weights: ops.ms_deform_attn(  # noqa: E731
        value, i["spatial_shapes"], i["level_start_index"], sampling_locations, attention_weights, backend=backend)
    out, gr = _run_with_grads(fn, {k: i[k] for k in ("value", "sampling_locations", "attention_weights")},
                              ["value", "sampling_locations", "attention_weights"], i["grad_output"])
    got = {"output": out, "grad_value": gr["value"], "grad_sampling_locations": gr["sampling_locations"],
           "grad_attention_weights": gr["attention_weights"]}
    assert compare(got, g["outputs"], g["atol"], g["rtol"]) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_dcnv3_golden(backend):
    g = _golden("dcnv3")
    c = g["ctor"]
    i = {k: v.to(_device(backend)) for k, v in g["inputs"].items()}
    args = [c[k] for k in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w",
                           "group", "group_channels", "offset_scale", "im2col_step", "remove_center")]
    fn = lambda input, offset, mask: ops.dcnv3(input, offset, mask, *args, backend=backend)  # noqa: E731
    out, gr = _run_with_grads(fn, {k: i[k] for k in ("input", "offset", "mask")}, ["input", "offset", "mask"],
                              i["grad_output"])
    got = {"output": out, "grad_input": gr["input"], "grad_offset": gr["offset"], "grad_mask": gr["mask"]}
    assert compare(got, g["outputs"], g["atol"], g["rtol"]) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_dscn_golden(backend):
    g = _golden("dscn")
    c = g["ctor"]
    i = {k: v.to(_device(backend)) for k, v in g["inputs"].items()}
    got = {}
    for axis in ("x", "y"):
        cc = c["call_" + axis]
        args = [cc[k] for k in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
                                "dilation_w")] + [c["group"], c["group_channels"], c["offset_scale"], c["im2col_step"],
                                                  c["remove_center"], cc["on_x"]]
        fn = lambda input, offset, args=args: ops.dscn(input, offset, *args, backend=backend)  # noqa: E731
        out, gr = _run_with_grads(fn, {"input": i["input"], "offset": i["offset_" + axis]}, ["input", "offset"],
                                  i["grad_output"])
        got.update({f"output_{axis}": out, f"grad_input_{axis}": gr["input"], f"grad_offset_{axis}": gr["offset"]})
    assert compare(got, g["outputs"], g["atol"], g["rtol"]) == []


# ------------------------------------------------------------------------- random cases, float64
def _msda_case(seed, device="cpu", dtype=torch.float64, n=1, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[5, 6], [3, 3], [2, 1]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    m, d, lq, p = 2, 3, 4, 2
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    if not contiguous:
        value = torch.randn(n, m, s, d, generator=g, dtype=dtype).transpose(1, 2)
    loc = torch.rand(n, lq, m, 3, p, 2, generator=g, dtype=dtype) * 1.4 - 0.2  # some points outside
    attn = torch.rand(n, lq, m, 3, p, generator=g, dtype=dtype)
    start = torch.cat([torch.zeros(1, dtype=torch.long), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    to = lambda t: t.to(device)  # noqa: E731
    return to(value), to(shapes), to(start), to(loc), to(attn)


def _dcn_case(seed, device="cpu", dtype=torch.float64, n=2, c=8, group=2, h=6, w=7, k=(3, 3), stride=(1, 2), pad=(1, 1),
              dil=(1, 2), scale=0.7, remove_center=0, contiguous=True, deform=2):
    g = torch.Generator().manual_seed(seed)
    ho = R.dcn_output_size(h, k[0], stride[0], pad[0], dil[0])
    wo = R.dcn_output_size(w, k[1], stride[1], pad[1], dil[1])
    p = k[0] * k[1] - remove_center
    x = torch.randn(n, h, w, c, generator=g, dtype=dtype)
    if not contiguous:
        x = torch.randn(n, c, h, w, generator=g, dtype=dtype).permute(0, 2, 3, 1)
    offset = torch.randn(n, ho, wo, group * p * deform, generator=g, dtype=dtype) * 1.5
    mask = torch.rand(n, ho, wo, group * p, generator=g, dtype=dtype)
    geometry = (k[0], k[1], stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], group, c // group, scale, 64,
                remove_center)
    return x.to(device), offset.to(device), mask.to(device), geometry


DCN_VARIANTS = [dict(), dict(remove_center=1, scale=1.0), dict(stride=(2, 1), pad=(0, 2), dil=(2, 1)),
                dict(n=1, contiguous=False), dict(k=(1, 5), pad=(0, 2))]


@pytest.mark.parametrize("variant", range(len(DCN_VARIANTS)))
def test_dcnv3_cpu_gradcheck(variant):
    x, offset, mask, geometry = _dcn_case(variant, **DCN_VARIANTS[variant])
    fn = lambda x, o, m: ops.dcnv3(x, o, m, *geometry, backend="cpu")  # noqa: E731
    assert gradcheck(fn, (x.requires_grad_(), offset.requires_grad_(), mask.requires_grad_()), eps=1e-6, atol=1e-6)


DSCN_VARIANTS = [dict(on_x=True, k=(1, 5), pad=(0, 2), stride=(1, 1), dil=(1, 1)),
                 dict(on_x=False, k=(5, 1), pad=(2, 0), stride=(1, 1), dil=(1, 1)),
                 dict(on_x=True, k=(1, 3), pad=(0, 2), stride=(2, 2), dil=(1, 2), scale=0.5, remove_center=1),
                 dict(on_x=False, k=(3, 1), pad=(1, 1), stride=(1, 2), dil=(2, 1), n=1, contiguous=False),
                 dict(on_x=True, k=(1, 7), pad=(0, 3), stride=(1, 1), dil=(1, 1), c=20, group=1),  # group width 20
                 dict(on_x=False, k=(7, 1), pad=(3, 0), stride=(1, 1), dil=(1, 1), c=20, group=2)]  # group width 10


@pytest.mark.parametrize("variant", range(len(DSCN_VARIANTS)))
def test_dscn_cpu_gradcheck(variant):
    """Includes group widths 10 and 20, where upstream's CUDA backward drops channel 0 of grad_offset."""
    kw = dict(DSCN_VARIANTS[variant])
    on_x = kw.pop("on_x")
    kw.setdefault("scale", 1.0)
    x, offset, _, geometry = _dcn_case(variant, deform=1, **kw)
    fn = lambda x, o: ops.dscn(x, o, *geometry, on_x, backend="cpu")  # noqa: E731
    assert gradcheck(fn, (x.requires_grad_(), offset.requires_grad_()), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", [0, 1])
def test_ms_deform_attn_cpu_gradcheck(variant):
    value, shapes, start, loc, attn = _msda_case(variant, contiguous=bool(variant))
    fn = lambda v, loc, a: ops.ms_deform_attn(v, shapes, start, loc, a, backend="cpu")  # noqa: E731
    assert gradcheck(fn, (value.requires_grad_(), loc.requires_grad_(), attn.requires_grad_()), eps=1e-6, atol=1e-6)


def _na_case(seed, b=1, heads=2, h=9, w=11, d=4, dtype=torch.float64, contiguous=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.randn(b, heads, h, w, d, generator=g, dtype=dtype)  # noqa: E731
    q, k, v = mk(), mk(), mk()
    if not contiguous:
        q = torch.randn(b, h, heads, w, d, generator=g, dtype=dtype).transpose(1, 2)
    rpb = torch.randn(heads, 5, 5, generator=g, dtype=dtype)
    return q.to(device), k.to(device), v.to(device), rpb.to(device)


@pytest.mark.parametrize("dilation,contiguous", [(1, True), (2, False)])
def test_na2d_cpu_gradcheck(dilation, contiguous):
    q, k, v, rpb = _na_case(dilation, contiguous=contiguous)
    qk = lambda q, k, r: ops.na2d_qk(q, k, r, 3, dilation, backend="cpu")  # noqa: E731
    assert gradcheck(qk, (q.requires_grad_(), k.requires_grad_(), rpb.requires_grad_()), eps=1e-6, atol=1e-6)
    attn = torch.rand(*q.shape[:4], 9, dtype=torch.float64)
    av = lambda a, v: ops.na2d_av(a, v, 3, dilation, backend="cpu")  # noqa: E731
    assert gradcheck(av, (attn.requires_grad_(), v.requires_grad_()), eps=1e-6, atol=1e-6)
    nork = lambda q, k: ops.na2d_qk(q, k, None, 3, dilation, backend="cpu")  # noqa: E731
    assert gradcheck(nork, (q, k), eps=1e-6, atol=1e-6)


def _assert_backends_agree(fn, inputs, backend, atol, rtol=0.0):
    """fn(backend, **inputs) forward and gradients equal the reference's."""
    diff = [k for k, v in inputs.items() if v.is_floating_point()]
    ref_inputs = {k: v.detach().cpu() for k, v in inputs.items()}
    g = torch.Generator().manual_seed(0)
    out_ref = fn("reference", **ref_inputs)
    grad_out = torch.randn(out_ref.shape, generator=g, dtype=out_ref.dtype)
    out_ref, grads_ref = _run_with_grads(lambda **kw: fn("reference", **kw), ref_inputs, diff, grad_out)
    out, grads = _run_with_grads(lambda **kw: fn(backend, **kw), inputs, diff, grad_out)
    torch.testing.assert_close(out.cpu().to(out_ref.dtype), out_ref, atol=atol, rtol=rtol)
    for k in diff:
        torch.testing.assert_close(grads[k].cpu().to(out_ref.dtype), grads_ref[k], atol=atol, rtol=rtol, msg=k)


NON_REF = [b for b in BACKENDS if b != "reference"]


@pytest.mark.parametrize("backend", NON_REF)
@pytest.mark.parametrize("variant", range(len(DCN_VARIANTS)))
def test_dcnv3_equals_reference(backend, variant):
    x, offset, mask, geometry = _dcn_case(10 + variant, device=_device(backend), **DCN_VARIANTS[variant])
    fn = lambda b, x, o, m: ops.dcnv3(x, o, m, *geometry, backend=b)  # noqa: E731
    _assert_backends_agree(fn, {"x": x, "o": offset, "m": mask}, backend, atol=1e-10)


@pytest.mark.parametrize("backend", NON_REF)
@pytest.mark.parametrize("variant", range(len(DSCN_VARIANTS)))
def test_dscn_equals_reference(backend, variant):
    kw = dict(DSCN_VARIANTS[variant])
    on_x = kw.pop("on_x")
    kw.setdefault("scale", 1.0)
    x, offset, _, geometry = _dcn_case(20 + variant, deform=1, device=_device(backend), **kw)
    fn = lambda b, x, o: ops.dscn(x, o, *geometry, on_x, backend=b)  # noqa: E731
    _assert_backends_agree(fn, {"x": x, "o": offset}, backend, atol=1e-10)


@pytest.mark.parametrize("backend", NON_REF)
@pytest.mark.parametrize("n", [1, 3])
def test_ms_deform_attn_equals_reference(backend, n):
    value, shapes, start, loc, attn = _msda_case(30 + n, device=_device(backend), n=n)
    fn = lambda b, v, loc, a: ops.ms_deform_attn(v, shapes, start, loc, a, backend=b)  # noqa: E731
    _assert_backends_agree(fn, {"v": value, "loc": loc, "a": attn}, backend, atol=1e-10)


@pytest.mark.parametrize("backend", NON_REF)
@pytest.mark.parametrize("kernel,dilation,size", [(3, 1, (9, 11)), (7, 1, (7, 12)), (5, 2, (13, 10)), (3, 3, (9, 14))])
def test_na2d_equals_reference(backend, kernel, dilation, size):
    g = torch.Generator().manual_seed(kernel * 10 + dilation)
    dev = _device(backend)
    q, k, v = (torch.randn(2, 2, *size, 4, generator=g, dtype=torch.float64).to(dev) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel - 1, 2 * kernel - 1, generator=g, dtype=torch.float64).to(dev)
    fn = lambda b, q, k, v, r: ops.neighborhood_attention_2d(q, k, v, r, kernel, dilation, backend=b)  # noqa: E731
    _assert_backends_agree(fn, {"q": q, "k": k, "v": v, "r": rpb}, backend, atol=1e-10)


@pytest.mark.parametrize("backend", NON_REF)
@pytest.mark.parametrize("size", [(3, 5), (7, 7), (10, 4), (12, 13)])
def test_neighborhood_attention_module_any_map_size(backend, size):
    """Maps smaller than the window go through the module's zero-padding path."""
    torch.manual_seed(0)
    m = ops.NeighborhoodAttention2D(12, 7, 3).double().to(_device(backend))
    x = torch.randn(2, *size, 12, dtype=torch.float64, device=_device(backend))
    with ops.use_backend("reference"):
        ref = m(x)
    with ops.use_backend(backend):
        out = m(x)
    assert out.shape == (2, *size, 12)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


def test_na_reference_matches_brute_force():
    """The reference NA equals a literal per-query loop over NATTEN's clamped window and bias index."""
    g = torch.Generator().manual_seed(0)
    for kernel, dilation, (h, w) in [(3, 1, (5, 6)), (5, 2, (11, 12)), (3, 3, (10, 9))]:
        q, k = (torch.randn(1, 1, h, w, 2, generator=g, dtype=torch.float64) for _ in range(2))
        rpb = torch.randn(1, 2 * kernel - 1, 2 * kernel - 1, generator=g, dtype=torch.float64)
        attn = R.na2d_qk(q, k, rpb, kernel, dilation)
        rows = R.natten_window_start(h, kernel, dilation)
        cols = R.natten_window_start(w, kernel, dilation)
        for y in range(h):
            for x in range(w):
                for a in range(kernel):
                    for b in range(kernel):
                        r, c = int(rows[y]) + a * dilation, int(cols[x]) + b * dilation
                        assert 0 <= r < h and 0 <= c < w
                        assert abs(r - y) <= (kernel // 2) * dilation * 2 and (r - y) % dilation == 0
                        expect = (q[0, 0, y, x] * k[0, 0, r, c]).sum() + rpb[0, (r - y) // dilation + kernel - 1,
                                                                               (c - x) // dilation + kernel - 1]
                        assert torch.isclose(attn[0, 0, y, x, a * kernel + b], expect)
        # dilation 1: interior windows are centred, border windows are clamped inside the map
        if dilation == 1:
            assert rows.tolist()[0] == 0 and int(rows[h - 1]) == h - kernel


# ------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not CUDA, reason="needs a GPU and dense._C built with CUDA kernels (FORCE_CUDA=1)")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_cuda_kernels_low_precision(dtype, tol):
    """fp32/fp16/bf16 CUDA kernels (fp32 accumulation) stay close to the float64 reference."""
    value, shapes, start, loc, attn = _msda_case(40, n=2, dtype=torch.float64)
    ref = R.ms_deform_attn(value, shapes, start, loc, attn)
    out = ops.ms_deform_attn(value.cuda().to(dtype), shapes.cuda(), start.cuda(), loc.cuda().to(dtype),
                             attn.cuda().to(dtype), backend="cuda")
    torch.testing.assert_close(out.double().cpu(), ref, atol=tol, rtol=tol)
    x, offset, mask, geometry = _dcn_case(41, dtype=torch.float64)
    ref = R.dcnv3(x, offset, mask, *geometry)
    out = ops.dcnv3(x.cuda().to(dtype), offset.cuda().to(dtype), mask.cuda().to(dtype), *geometry, backend="cuda")
    torch.testing.assert_close(out.double().cpu(), ref, atol=tol * 4, rtol=tol)
    q, k, v, rpb = _na_case(42, dtype=torch.float64)
    ref = R.neighborhood_attention_2d(q, k, v, rpb, 3)
    out = ops.neighborhood_attention_2d(q.cuda().to(dtype), k.cuda().to(dtype), v.cuda().to(dtype),
                                        rpb.cuda().to(dtype), 3, backend="cuda")
    torch.testing.assert_close(out.double().cpu(), ref, atol=tol * 4, rtol=tol)


# ----------------------------------------------------------------------------------------- modules
def test_modules_train_step_on_every_backend():
    for name, (module, run) in _module_cases().items():
        for backend in ("reference", "cpu"):
            torch.manual_seed(1)
            with ops.use_backend(backend):
                out = run(module)
            out.square().mean().backward()
            assert all(p.grad is not None for p in module.parameters() if p.requires_grad), name
            module.zero_grad()


def _module_cases():
    """name -> (module, run(module) -> output): one small module per op, NA with its relative-position bias."""
    torch.manual_seed(0)
    return {
        "msda": (ops.MSDeformAttn(16, 2, 2, 2), lambda m: m(torch.randn(2, 5, 16), torch.rand(2, 5, 2, 2),
                                                             torch.randn(2, 12 + 4, 16), torch.tensor([[3, 4], [2, 2]]),
                                                             torch.tensor([0, 12]), level_shapes=[(3, 4), (2, 2)])),
        "dcnv3": (ops.DCNv3(16, group=2), lambda m: m(torch.randn(2, 6, 7, 16))),
        "dscn": (torch.nn.ModuleList([ops.DSCNX(16, 5, 5, 1, 2, 1, 2), ops.DSCNY(16, 5, 5, 1, 2, 1, 2)]),
                 lambda m: m[1](m[0](torch.randn(1, 6, 7, 16), torch.randn(1, 16, 6, 7)), torch.randn(1, 16, 6, 7))),
        "na": (ops.NeighborhoodAttention2D(16, 3, 2), lambda m: m(torch.randn(2, 6, 7, 16))),
    }


@pytest.mark.parametrize("name", ["msda", "dcnv3", "dscn", "na"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_modules_under_bf16_autocast(name, backend):
    """torch.autocast (CPU bfloat16): every op takes the autocast activations with its float32 parameters (NA's rpb:
    the reported 'rpb has dtype Float but query has Half' crash) and trains: finite output and gradients, close to
    the float32 run."""
    module, run = _module_cases()[name]
    torch.manual_seed(1)
    with ops.use_backend(backend):
        expected = run(module)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(module)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)
    out.float().square().mean().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["msda", "dcnv3", "dscn", "na"])
def test_compiled_op_gradients_equal_eager(name):
    """torch.compile (AOTAutograd over the ops' fake kernels and registered backward; backend aot_eager, so no C++
    code generation in the test) gives eager's output and parameter gradients, in one graph (fullgraph)."""
    module, run = _module_cases()[name]
    results = []
    for fn in (run, torch.compile(run, backend="aot_eager", fullgraph=True)):
        module.zero_grad()
        torch.manual_seed(1)
        fn(module).square().mean().backward()
        results.append([p.grad.clone() for p in module.parameters() if p.requires_grad])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_forcing_an_unavailable_backend_is_a_clear_error():
    x, offset, mask, geometry = _dcn_case(0)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ops.dcnv3(x, offset, mask, *geometry, backend="cuda")
    with pytest.raises(ValueError, match="offset must be"):
        ops.dcnv3(x, offset[:, :-1], mask, *geometry)
