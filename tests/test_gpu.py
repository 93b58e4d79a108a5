"""What only a GPU can check (``make gpu-check`` runs it with the CUDA kernels built): the golden parity of every
backbone family through the CUDA kernels, mixed-precision training steps and inference on CUDA (fp16 with loss
scaling, bf16), and DDP over NCCL on the GPUs present. The ops' own CUDA tests (golden, gradients, fp16 / bf16) are
in test_ops.py, parametrised over the backends present. Skipped without a GPU."""
import json
import os
import textwrap

import pytest
import torch

from dense import ops

from conftest import PY, REPO, run_tool
from golden_utils import assert_matches, load_golden, load_released, model_from_config, released_checkpoint
from small_models import amp_train_step_and_inference

CUDA = torch.cuda.is_available() and ops.cuda_kernels_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a GPU and dense._C built with CUDA kernels (FORCE_CUDA=1)")

# golden file -> (backbone config, the released file name its stand-in weights are written as)
GOLDEN = {"dat_pp_tiny": ("dat_pp_tiny.yaml", "dat_pp_tiny_seg.pth"),
          "davit_tiny": ("davit_tiny.yaml", "davit_tiny_det.pth"),
          "vit_adapter_tiny": ("vit_adapter_tiny_deit.yaml", "upernet_deit_adapter_tiny.pth"),
          "dsan_t": ("dsan_t.yaml", "dsan_t_ade20k.pth")}
# every backbone family and every head family once, each in fp16 and bf16
AMP_PAIRS = [("semantic_fpn", "dat_pp"), ("upernet", "davit"), ("light_ham", "dsan"),
             ("mask2former", "vit_adapter_deit"), ("mask_rcnn", "vit_adapter_beit"), ("retinanet", "dat_v1"),
             ("classification", "resnet"), ("mask2former", "dat_pp"), ("mask_rcnn", "dsan")]


@pytest.fixture
def exact_float32():
    """Golden tolerances are float32's: no TF32 in cuDNN convolutions or matrix products for the block."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_backbone_golden_through_cuda_kernels(name, tmp_path, exact_float32):
    """The authors' outputs (tests/data/parity/golden) from dense's model on the GPU, every op on its CUDA kernel."""
    g = load_golden(name)
    config, released = GOLDEN[name]
    keys = released_checkpoint(g, str(tmp_path / released))
    model = model_from_config("configs/Base-SemanticFPN.yaml", f"configs/backbones/{config}")
    load_released(model, str(tmp_path / released), keys)
    model = model.cuda()
    aux = {}
    for sub in g.get("aux_outputs", {}):
        model.backbone.get_submodule(sub).register_forward_hook(
            lambda m, i, o, sub=sub: aux.__setitem__(sub, o.float().cpu()))
    with torch.no_grad(), ops.use_backend("cuda"):
        out = model.backbone(g["input"].cuda())
    assert_matches({k: v.cpu() for k, v in out.items()}, g)
    if aux:
        assert_matches(aux, g, "aux_atol", "aux_rtol", "aux_outputs")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("head,family", AMP_PAIRS)
def test_amp_train_step_and_inference_on_cuda(head, family, dtype, synthetic_root, tmp_path):
    amp_train_step_and_inference(head, family, tmp_path, device="cuda", dtype=dtype)


DDP_STEP = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, os.path.join({repo!r}, "tests"))
    from torch.nn.parallel import DistributedDataParallel
    from small_models import small_model_cfg
    from dense.data import DatasetCatalog, build_mapper
    from dense.modeling import build_model
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    cfg = small_model_cfg("upernet", "dat_pp", "MODEL.DEVICE", "cuda")
    model = DistributedDataParallel(build_model(cfg), device_ids=[0])
    mapper = build_mapper(cfg, True)
    batch = [mapper(r) for r in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:2]]
    loss = sum(model(batch).values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    print("DDP", dist.get_backend(), float(loss), len(grads), all(bool(torch.isfinite(g).all()) for g in grads))
    dist.destroy_process_group()
""")


def test_ddp_over_nccl(synthetic_root, tmp_path):
    """Two or more GPUs: tools/train_net.py --num-gpus N (one process per GPU, NCCL) trains and checkpoints. One GPU:
    a DDP training step over an NCCL group of one (NCCL cannot put two ranks on one GPU)."""
    n = torch.cuda.device_count()
    if n >= 2:
        run_tool([PY, "tools/train_net.py", "--num-gpus", str(n), "--config-file", "tests/configs/tiny_semseg.yaml",
                  "MODEL.DEVICE", "cuda", "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path)])
        lines = [json.loads(line) for line in open(tmp_path / "metrics.json")]
        assert lines and os.path.isfile(tmp_path / "model_final.pth")
        return
    proc = run_tool([PY, "-c", DDP_STEP.format(repo=REPO)], env={"PYTHONPATH": REPO})
    line = next(x for x in proc.stdout.splitlines() if x.startswith("DDP "))
    _, backend, loss, count, finite = line.split()
    assert backend == "nccl" and float(loss) == float(loss) and int(count) > 0 and finite == "True", line
