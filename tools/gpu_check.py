#!/usr/bin/env python
"""The prepared GPU check (``make gpu-check``): everything dense can only check on a GPU, in one command, with one
report file, in under 8 minutes on one H100 / H200.

    python tools/gpu_check.py [--output output/gpu_check] [--budget 470]

Steps (each with its own time limit; a failed step does not stop the next; the report says what each printed):
  1. build the CUDA kernels in place for this GPU's architecture, and check every op registered a CUDA kernel;
  2. the CUDA tests: tests/test_ops.py (every op on its CUDA kernel against the reference and the golden data, fp32 /
     fp16 / bf16, gradients) and tests/test_gpu.py (golden parity of every backbone family through the CUDA kernels,
     fp16 and bf16 training steps and inference, DDP over NCCL);
  3. tools/benchmark.py ops and backbones on the GPU (compiled kernels vs the reference ops), and compile (eager vs
     torch.compile);
  4. the demo config trained 200 iterations on the GPU and evaluated.
Writes OUTPUT/report.md (the summary first, then each step's command, exit code, seconds and output). Exits 0 when
every step passed, 1 otherwise, 2 without a GPU.

The GPU machine has no network: packages it lacks (fvcore, iopath, yacs, termcolor, pycocotools) travel as wheels
made here by ``make gpu-wheels`` (.whl/), installed there first (see the Makefile's gpu-check target).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = "configs/synthetic/semantic_fpn/dat_pp_nano_demo.yaml"
BENCH_VARIANTS = ["dat_pp_tiny", "dat_tiny", "davit_tiny", "vit_adapter_tiny_deit", "vit_adapter_base_beit_512",
                  "dsan_t", "resnet50"]


def steps(py: str, out: str, arch: str, jobs: int) -> list[tuple[str, list[str], dict, int]]:
    """(name, command, extra environment, time limit in seconds) of each step."""
    demo_out = os.path.join(out, "demo")
    return [
        ("build CUDA kernels", [py, "setup.py", "-q", "build_ext", "--inplace"],
         {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs)}, 240),
        ("check the CUDA build", [py, "tools/check_cuda_build.py", REPO], {}, 60),
        ("CUDA tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_ops.py",
                        "tests/test_gpu.py", f"--junitxml={os.path.join(out, 'junit.xml')}"], {}, 200),
        ("benchmark ops", [py, "tools/benchmark.py", "ops", "--device", "cuda"], {}, 60),
        ("benchmark backbones", [py, "tools/benchmark.py", "backbones", "--device", "cuda", "--size", "512",
                                 "--variants", *BENCH_VARIANTS], {}, 90),
        ("train the demo 200 iterations", [py, "tools/train_net.py", "--config-file", DEMO, "MODEL.DEVICE", "cuda",
                                           "SOLVER.MAX_ITER", "200", "SOLVER.CHECKPOINT_PERIOD", "200",
                                           "TEST.EVAL_PERIOD", "200", "OUTPUT_DIR", demo_out], {}, 120),
        ("benchmark compile", [py, "tools/benchmark.py", "compile", "--device", "cuda", "--size", "224",
                               "--variants", "dat_pp_tiny", "dsan_t", "resnet50"], {}, 150),
    ]


def run_step(command: list[str], env: dict, limit: int) -> tuple[int | str, float, str]:
    start = time.perf_counter()
    try:
        path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH", "")]))  # dense need not be installed
        proc = subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path, **env),
                              capture_output=True, text=True, timeout=limit)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = f"timed out after {limit} s"
        output = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
    return code, time.perf_counter() - start, output


def summary_of(name: str, output: str, out: str) -> str:
    """One line of what a step found (test counts, the demo's metrics), or ""."""
    lines = [x for x in output.splitlines() if x.strip()]
    if name == "CUDA tests":
        return next((x for x in reversed(lines) if " passed" in x or " failed" in x or " error" in x), "")
    if name.startswith("train the demo"):
        path = os.path.join(out, "demo", "metrics.json")
        if os.path.isfile(path):
            records = [json.loads(x) for x in open(path)]
            evals = [r for r in records if "sem_seg/mIoU" in r]
            if evals:
                return f"mIoU {evals[-1]['sem_seg/mIoU']:.2f} at iteration {evals[-1]['iteration']}"
    return ""


def environment() -> str:
    import platform

    import torch

    line = (f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
            f"{torch.cuda.device_count()} GPUs")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        line += f": {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}"
    return line


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/gpu_check", help="folder of report.md (and the demo's run)")
    p.add_argument("--budget", type=float, default=470.0, help="seconds; steps that would start later are skipped")
    p.add_argument("--dry-run", action="store_true", help="write the report with the commands, run nothing")
    args = p.parse_args()
    import torch

    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    report = os.path.join(out, "report.md")
    py = sys.executable
    if not torch.cuda.is_available() and not args.dry_run:
        with open(report, "w") as f:
            f.write("# dense GPU check\n\nNo GPU visible (torch.cuda.is_available() is False): nothing was run.\n")
        print(f"No GPU visible: nothing to check (report: {report})")
        return 2
    arch = "{}.{}".format(*torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else "9.0"
    start = time.perf_counter()
    results = []
    for name, command, env, limit in steps(py, out, arch, os.cpu_count() or 4):
        elapsed = time.perf_counter() - start
        if args.dry_run or elapsed + min(limit, 30) > args.budget:
            results.append((name, command, "not run" if args.dry_run else "skipped (time budget)", 0.0, "", ""))
            continue
        print(f"[gpu-check {elapsed:5.0f} s] {name}: {' '.join(command)}", flush=True)
        code, seconds, output = run_step(command, env, int(min(limit, args.budget - elapsed)))
        results.append((name, command, code, seconds, output, summary_of(name, output, out)))
        print(f"[gpu-check] {name}: exit {code} in {seconds:.0f} s", flush=True)
    total = time.perf_counter() - start
    ok = all(code == 0 for _, _, code, *_ in results)
    verdict = "dry run (nothing run)" if args.dry_run else "all steps passed" if ok else "FAILED"
    with open(report, "w") as f:
        f.write(f"# dense GPU check: {verdict} in {total:.0f} s\n\n")
        f.write(f"{environment()}\n\n| step | exit | seconds | found |\n| --- | --- | --- | --- |\n")
        for name, _, code, seconds, _, found in results:
            f.write(f"| {name} | {code} | {seconds:.0f} | {found} |\n")
        for name, command, code, seconds, output, _ in results:
            f.write(f"\n## {name}\n\n`{' '.join(command)}` (exit {code}, {seconds:.0f} s)\n\n```\n")
            f.write("\n".join(output.splitlines()[-80:]) + "\n```\n")
    print(f"[gpu-check] {verdict} in {total:.0f} s; report: {report}")
    return 0 if ok or args.dry_run else 1


if __name__ == "__main__":
    sys.exit(main())
