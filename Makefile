# dense: `make demo` trains and evaluates a small model on the built-in synthetic data;
# `make test` runs the test suite, `make lint` the linter. All create .venv and install everything on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OPS := $(shell find ops -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)
DEMO_CFG ?= configs/synthetic/semantic_fpn/dat_pp_nano_demo.yaml
DEMO_INPUT ?= datasets/synthetic_v1/images/val/0000[0-5].jpg
PYTEST_ARGS ?=

.PHONY: install demo test test-all lint cuda-build-check gpu-check gpu-wheels clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py pyproject.toml $(OPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-build-isolation -e .
	touch $(STAMP)

DEMO_OUT = $(shell sed -n 's/^OUTPUT_DIR: *"\(.*\)"/\1/p' $(DEMO_CFG))

demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(PY) tools/train_net.py --config-file $(DEMO_CFG)
	$(PY) tools/demo.py --config-file $(DEMO_CFG) --input '$(DEMO_INPUT)' \
		--output $(DEMO_OUT)/vis --opts MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth
	@$(PY) -c "import json; r=[json.loads(l) for l in open('$(DEMO_OUT)/metrics.json')]; \
		names=('panoptic_seg/PQ', 'sem_seg/mIoU', 'bbox/AP', 'segm/AP', 'classification/top1'); m=[x for x in r if any(k in x for k in names)][-1]; \
		shown=', '.join(f'{k} = {m[k]:.2f}' for k in names if k in m); \
		print(f\"demo: {shown} at iteration {m['iteration']}; overlays in $(DEMO_OUT)/vis\")"

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): pycodestyle, pyflakes, bugbear, pyupgrade
lint: $(STAMP)
	$(VENV)/bin/ruff check dense tools tests setup.py

# Compile the CUDA kernels (FORCE_CUDA=1, no GPU needed) into build/cuda-check and check that every op
# registered a CUDA kernel; the in-place CPU extension is left alone. CI runs this after the tests.
cuda-build-check: $(STAMP)
	rm -rf build/cuda-check
	FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py -q \
		build_ext --build-lib build/cuda-check/lib --build-temp build/cuda-check/tmp
	$(PY) tools/check_cuda_build.py build/cuda-check/lib

# On a machine with a GPU: build the CUDA kernels, run every CUDA test, benchmark, train the demo on the GPU; one
# report (output/gpu_check/report.md), under 8 minutes. Uses .venv when there is one, else python3 (a GPU machine's
# own PyTorch). A machine without network installs the packages its Python lacks from .whl/ (made by gpu-wheels).
GPU_PY ?= $(shell test -x $(PY) && echo $(PY) || echo python3)
gpu-check:
	@if [ -d .whl ]; then $(GPU_PY) -m pip install -q --no-index --no-deps --no-compile --target /tmp/dense-site \
		.whl/*.whl; fi
	PYTHONPATH=/tmp/dense-site:$$PYTHONPATH $(GPU_PY) tools/gpu_check.py --output output/gpu_check

# Wheels of what a GPU machine's Python (3.12, PyTorch preinstalled, no network) lacks, into .whl/ (git-ignored).
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir .whl
	$(PY) -m pip wheel -q --no-deps -w .whl fvcore iopath yacs termcolor
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pycocotools

clean:
	rm -rf build dense/_C*.so output
