#!/usr/bin/env python
"""Speed and peak memory of dense's ops and backbones, as ratios to a baseline measured in the same run.

    python tools/benchmark.py ops [--device cpu|cuda] [--repeat 3]
    python tools/benchmark.py backbones [--device cpu|cuda] [--size 512] [--variants dat_pp_tiny davit_tiny ...]
    python tools/benchmark.py compile [--device cpu|cuda] [--size 224] [--variants ...] [--compile-backend inductor]
    python tools/benchmark.py model --config-file CFG [--device cpu|cuda] [--size H W] [--opts KEY VALUE ...]
    python tools/benchmark.py resize [--size 512] [--repeat 3]

ops: each custom op at a realistic size (MSDeformAttn as in a Mask2Former pixel decoder on a 512x512
image; DCNv3 as in InternImage-T stage 1; DSCN as in DSAN-T stage 1; NA as in DAT++-T stage 1), forward
and forward+backward per backend, speed-up over the pure-PyTorch reference.
backbones: images/s and peak memory of every variant in configs/backbones at SIZE x SIZE, with the
compiled kernels and (baseline) with the reference ops.
compile: eager vs torch.compile(fullgraph=True) inference of the tiny variant of each backbone family (or
--variants), ms per batch and the speed-up, measured in the same process, with the one-off compile time.
model: one inference of the whole model of a config (random weights; the config's test mode: whole / slide /
multi-scale, semantic / panoptic / instance) on an H x W image: seconds, weights and peak memory above them.
resize: the test-time image resize of each INPUT.RESIZE_BACKEND (cv2 = the mmcv pipelines' pixels) on a
photograph scaled to 2.5x, down to a SIZE short side and up to 2x that: milliseconds per image and the ratio to
torchvision's.

Times are the best of --repeat runs after one warm-up. Peak memory: the allocator's peak above what was
allocated before the call (CUDA allocator statistics on GPU, the profiler's CPU memory events on CPU).
"""
import argparse
import glob
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # silence the profiler's start/stop lines

import torch

import dense.ops as ops
from dense.config import get_cfg
from dense.modeling import build_backbone, build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------- cases
def msda_case(device):
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[64, 64], [32, 32], [16, 16]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    n, m, d, levels, p = 2, 8, 32, 3, 4
    value = torch.randn(n, s, m, d, generator=g)
    loc = torch.rand(n, s, m, levels, p, 2, generator=g)
    attn = torch.rand(n, s, m, levels * p, generator=g).softmax(-1).view(n, s, m, levels, p)
    start = torch.cat([torch.zeros(1, dtype=torch.long), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    tensors = [t.to(device) for t in (value, shapes, start, loc, attn)]
    return ((lambda backend, v, sh, st, loc, a: ops.ms_deform_attn(v, sh, st, loc, a, backend=backend)),
            tensors, [0, 3, 4])


def dcnv3_case(device):
    g = torch.Generator().manual_seed(0)
    n, h, w, c, group, k = 2, 128, 128, 64, 4, 3
    x = torch.randn(n, h, w, c, generator=g)
    offset = torch.randn(n, h, w, group * k * k * 2, generator=g) * 2
    mask = torch.randn(n, h, w, group, k * k, generator=g).softmax(-1).view(n, h, w, -1)
    geo = (k, k, 1, 1, 1, 1, 1, 1, group, c // group, 1.0, 256, 0)
    return ((lambda backend, x, o, m: ops.dcnv3(x, o, m, *geo, backend=backend)),
            [t.to(device) for t in (x, offset, mask)], [0, 1, 2])


def dscn_case(on_x):
    def case(device):
        g = torch.Generator().manual_seed(0)
        n, h, w, c, k = 2, 128, 128, 32, 11
        x = torch.randn(n, h, w, c, generator=g)
        offset = torch.randn(n, h, w, k, generator=g) * 3
        geo = (1, k, 1, 1, 0, 5, 1, 1) if on_x else (k, 1, 1, 1, 5, 0, 1, 1)
        fn = lambda backend, x, o: ops.dscn(x, o, *geo, 1, c, 1.0, 256, 0, on_x, backend=backend)  # noqa: E731
        return fn, [t.to(device) for t in (x, offset)], [0, 1]
    return case


def na_case(device):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 128, 128, 32, generator=g) for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=g)
    fn = lambda backend, q, k, v, r: ops.neighborhood_attention_2d(q, k, v, r, 7, backend=backend)  # noqa: E731
    return fn, [t.to(device) for t in (q, k, v, rpb)], [0, 1, 2, 3]


OP_CASES = {
    "ms_deform_attn (M2F pixel decoder, 512^2)": ("ms_deform_attn", msda_case),
    "dcnv3 (InternImage-T stage 1, 512^2)": ("dcnv3", dcnv3_case),
    "dscn x (DSAN-T stage 1, 512^2)": ("dscn", dscn_case(True)),
    "dscn y (DSAN-T stage 1, 512^2)": ("dscn", dscn_case(False)),
    "neighborhood attn (DAT++-T stage 1, 512^2)": ("na2d_qk", na_case),
}


# ----------------------------------------------------------------------------------------- timing
def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, repeat):
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _run_op(case, backend, device, backward):
    fn, tensors, diff = case(device)
    inputs = [t.clone().requires_grad_(i in diff and backward) for i, t in enumerate(tensors)]

    def step():
        out = fn(backend, *inputs)
        if backward:
            out.sum().backward()
        return out
    return step


def peak_memory(make_step, device):
    """Peak memory (MiB) allocated while one call of the step ``make_step()`` builds runs, above what was
    allocated before it: the CUDA allocator's peak on GPU, the CPU allocator's (from the profiler's memory
    events) on CPU."""
    step = make_step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(os.path.join(tmp, "trace.json"))
        events = json.load(open(os.path.join(tmp, "trace.json")))["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max([0] + totals) / 2**20  # totals count from the profiler's start


def bench_ops(args):
    device = args.device
    rows = []
    for label, (kernel, case) in OP_CASES.items():
        backends = [b for b in ops.available_backends(device, kernel)]
        results = {}
        for backend in backends:
            fwd = best_time(_run_op(case, backend, device, False), device, args.repeat)
            fwdbwd = best_time(_run_op(case, backend, device, True), device, args.repeat)
            mem = peak_memory(lambda case=case, backend=backend: _run_op(case, backend, device, True), device)
            results[backend] = (fwd, fwdbwd, mem)
        ref = results["reference"]
        for backend, (fwd, fwdbwd, mem) in results.items():
            rows.append([label, backend, f"{fwd * 1e3:.1f}", f"{ref[0] / fwd:.2f}x", f"{fwdbwd * 1e3:.1f}",
                         f"{ref[1] / fwdbwd:.2f}x", f"{mem:.0f}"])
        label = ""
    _print_table(["op", "backend", "fwd ms", "vs ref", "fwd+bwd ms", "vs ref", "peak MiB (fwd+bwd)"], rows)


def bench_backbones(args):
    device = args.device
    configs = sorted(glob.glob(os.path.join(REPO, "configs", "backbones", "*.yaml")))
    if args.variants:
        configs = [c for c in configs if os.path.splitext(os.path.basename(c))[0] in args.variants]
    rows = []
    for path in configs:
        cfg = get_cfg()
        cfg.merge_from_file(path)
        name = os.path.splitext(os.path.basename(path))[0]

        def make_step(backend, cfg=cfg):
            model = build_backbone(cfg).to(device).eval()
            images = torch.randn(args.batch, 3, args.size, args.size, device=device)

            def step():
                with torch.no_grad(), ops.use_backend(backend):
                    return model(images)
            return step

        results = {}
        for backend in ("fastest", "reference"):
            b = None if backend == "fastest" else "reference"
            t = best_time(make_step(b), device, args.repeat)
            results[backend] = (args.batch / t, peak_memory(lambda b=b: make_step(b), device))
        (ips, mem), (ref_ips, ref_mem) = results["fastest"], results["reference"]
        rows.append([name, f"{ips:.2f}", f"{mem:.0f}", f"{ref_ips:.2f}", f"{ref_mem:.0f}", f"{ips / ref_ips:.2f}x"])
    print(f"device {device}, {args.size}x{args.size}, batch {args.batch}, threads {torch.get_num_threads()}")
    _print_table(["backbone", "img/s", "peak MiB", "img/s (ref ops)", "peak MiB (ref ops)", "speed-up"], rows)


def bench_compile(args):
    """Eager vs torch.compile(fullgraph=True) inference of each backbone (the dense ops stay opaque operators in the
    graph), time per image and the ratio in the same process; the one-off compile time beside it."""
    device = args.device
    configs = sorted(glob.glob(os.path.join(REPO, "configs", "backbones", "*.yaml")))
    configs = [c for c in configs if os.path.splitext(os.path.basename(c))[0] in (args.variants or DEFAULT_COMPILE)]
    rows = []
    for path in configs:
        cfg = get_cfg()
        cfg.merge_from_file(path)
        model = build_backbone(cfg).to(device).eval()
        images = torch.randn(args.batch, 3, args.size, args.size, device=device)
        compiled = torch.compile(model, fullgraph=True, backend=args.compile_backend)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(images)
        compile_s = time.perf_counter() - start
        times = {}
        for name, fn in (("eager", model), ("compiled", compiled)):
            def step(fn=fn, images=images):
                with torch.no_grad():
                    return fn(images)
            times[name] = best_time(step, device, args.repeat)
        eager, fast = times["eager"], times["compiled"]
        rows.append([os.path.splitext(os.path.basename(path))[0], f"{eager * 1e3:.1f}", f"{fast * 1e3:.1f}",
                     f"{eager / fast:.2f}x", f"{compile_s:.0f}"])
    print(f"device {device}, {args.size}x{args.size}, batch {args.batch}, threads {torch.get_num_threads()}, "
          f"torch.compile backend {args.compile_backend}")
    _print_table(["backbone", "eager ms", "compiled ms", "speed-up", "compile s"], rows)


DEFAULT_COMPILE = ("dat_pp_tiny", "dat_tiny", "davit_tiny", "vit_adapter_tiny_deit", "dsan_t", "resnet50")


def bench_model(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", args.device, *args.opts])
    model = build_model(cfg).eval()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    h, w = args.size if len(args.size) == 2 else args.size * 2
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)

    def make_step():
        def step():
            with torch.no_grad():
                return model([{"image": image}])
        return step

    start = time.perf_counter()
    mem = peak_memory(make_step, args.device)
    seconds = time.perf_counter() - start
    print(f"{os.path.relpath(args.config_file, REPO)} on {args.device} ({torch.get_num_threads()} threads), {h}x{w}, "
          f"test mode {cfg.TEST.MODE}{' + TTA' if cfg.TEST.AUG.ENABLED else ''}")
    row = [f"{sum(p.numel() for p in model.parameters()):,}", f"{weights:.0f}", f"{seconds:.1f}", f"{mem:.0f}",
           f"{(mem + weights) / 1024:.2f}"]
    headers = ["parameters", "weights MiB", "inference s", "peak MiB above weights", "peak GiB incl. weights"]
    if args.device == "cpu":  # the whole process (interpreter, libraries, weights, inference) at its largest
        import resource

        headers.append("process peak RSS GiB")
        row.append(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}")
    _print_table(headers, [row])


def bench_resize(args):
    import cv2
    import matplotlib
    from torchvision import tv_tensors

    from dense.data.transforms import RESIZE_BACKENDS, rescale_size, resize_sample

    photo = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    bgr = cv2.imread(photo, cv2.IMREAD_COLOR)
    bgr = cv2.resize(bgr, (bgr.shape[1] * 5 // 2, bgr.shape[0] * 5 // 2))
    sample = {"image": tv_tensors.Image(torch.from_numpy(bgr).permute(2, 0, 1).contiguous())}
    h, w = bgr.shape[:2]
    rows = []
    for name, short in (("down", args.size), ("up", 2 * h)):
        size = rescale_size(h, w, float("inf"), short)
        ms = {b: best_time(lambda b=b, size=size: resize_sample(sample, *size, b), "cpu", args.repeat) * 1e3
              for b in RESIZE_BACKENDS}
        rows += [[f"{name} {h}x{w} -> {size[0]}x{size[1]}", b, f"{t:.2f}", f"{t / ms['torchvision']:.2f}"]
                 for b, t in ms.items()]
    _print_table(["resize", "backend", "ms / image", "x torchvision"], rows)


def _print_table(headers, rows):
    from tabulate import tabulate

    print(tabulate(rows, headers=headers, tablefmt="pipe"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ops", "backbones", "compile", "model", "resize"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, nargs="+", default=[512], help="image side, or height and width (model)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--variants", nargs="*", help="backbone config names (default: all in configs/backbones)")
    p.add_argument("--compile-backend", default="inductor", help="compile: torch.compile's backend")
    p.add_argument("--config-file", help="model: the config whose model is measured")
    p.add_argument("--opts", nargs="*", default=[], help="model: KEY VALUE config overrides")
    args = p.parse_args()
    if args.what == "model" and not args.config_file:
        p.error("model needs --config-file")
    if args.what != "model":
        args.size = args.size[0]
    {"ops": bench_ops, "backbones": bench_backbones, "compile": bench_compile, "model": bench_model,
     "resize": bench_resize}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
