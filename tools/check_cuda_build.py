#!/usr/bin/env python
"""Check a CUDA build of dense._C: it imports (no GPU needed), says it was built with CUDA, and every op
has a CUDA kernel registered. Usage: python tools/check_cuda_build.py BUILD_LIB_DIR"""
import glob
import importlib.util
import os
import sys

import torch

OPS = ["ms_deform_attn_forward", "ms_deform_attn_backward", "dcnv3_forward", "dcnv3_backward", "dscn_forward",
       "dscn_backward", "na2d_qk_forward", "na2d_qk_backward", "na2d_av_forward", "na2d_av_backward"]


def main(lib_dir: str) -> int:
    found = glob.glob(os.path.join(lib_dir, "dense", "_C*.so"))
    if len(found) != 1:
        print(f"expected one dense/_C*.so under {lib_dir}, found {found}")
        return 1
    spec = importlib.util.spec_from_file_location("dense._C", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not module.built_with_cuda():
        print(f"{found[0]} was built without CUDA kernels")
        return 1
    missing = [op for op in OPS if not torch._C._dispatch_has_kernel_for_dispatch_key(f"dense::{op}", "CUDA")]
    if missing:
        print(f"no CUDA kernel registered for: {missing}")
        return 1
    print(f"CUDA build OK: {found[0]} ({len(OPS)} ops with CUDA and CPU kernels)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
