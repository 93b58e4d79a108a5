#!/usr/bin/env python
"""Build and install dense, with its C++/CUDA extension ``dense._C`` built from ``ops/``.

CPU kernels are always built. CUDA kernels are built when a GPU is visible or ``FORCE_CUDA=1``;
``TORCH_CUDA_ARCH_LIST`` selects the architectures (default without a visible GPU: 8.0;9.0).
torch must be installed first: ``pip install -r requirements.txt`` then
``pip install --no-build-isolation -e .``.
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and (shutil.which("nvcc") is not None or "CUDA_HOME" in os.environ)


def _configure_cuda_toolkit() -> None:
    """Point the build at a complete CUDA toolkit before torch.utils.cpp_extension reads CUDA_HOME.

    An ``nvcc`` on PATH may be a wrapper script outside the toolkit (then torch would guess its parent
    folder); prefer a folder that has the CUDA headers. Headers some toolkits lack but torch's own CUDA
    wheels ship (``nvidia/cu*/include``, e.g. cusparse.h) are appended to CPATH, after the toolkit's.
    """
    if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
        nvcc = shutil.which("nvcc")
        candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else "", "/usr/local/cuda"]
        for folder in candidates:
            if folder and os.path.isfile(os.path.join(folder, "include", "cuda_runtime.h")):
                os.environ["CUDA_HOME"] = folder
                break
    site = os.path.dirname(os.path.dirname(torch.__file__))
    wheel_headers = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    if wheel_headers:
        os.environ["CPATH"] = os.pathsep.join(filter(None, [os.environ.get("CPATH", "")] + wheel_headers))


if _want_cuda():
    _configure_cuda_toolkit()
from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME at import)


def get_extensions():
    sources = sorted(glob.glob(os.path.join("ops", "*.cpp")) + glob.glob(os.path.join("ops", "cpu", "*.cpp")))
    define_macros = []
    extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}  # the C++ standard comes from torch
    extension = cpp_extension.CppExtension
    if _want_cuda():
        if cpp_extension.CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found: "
                               "set CUDA_HOME to the folder holding bin/nvcc")
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        extension = cpp_extension.CUDAExtension
        sources += sorted(glob.glob(os.path.join("ops", "cuda", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
    return [
        extension(
            "dense._C",
            sources,
            include_dirs=[os.path.join(ROOT, "ops")],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ]


setup(
    name="dense",
    version="0.1.0",
    description="Unified dense prediction: DAT++, DaViT, ViT-Adapter, DSAN under Semantic FPN, UperNet, "
    "Mask2Former, Mask R-CNN and RetinaNet",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tools", "configs")),
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",
        "timm>=1.0",
        "einops>=0.6",
        "pycocotools>=2.0.6",
        "opencv-python-headless>=4.8",
        "scipy>=1.10",
        "tqdm>=4.60",
        "tabulate>=0.9",
    ],
    extras_require={"tensorboard": ["tensorboard>=2.12"], "test": ["pytest>=7"]},
    ext_modules=get_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
