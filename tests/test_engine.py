import json
import os
import signal
import subprocess
import time

import pytest
import torch
from torch import nn

from dense.engine import NonFiniteLossError, Trainer
from dense.modeling import META_ARCH_REGISTRY

from conftest import PY, REPO, TINY_CFG, run_tool


class _NaNAfterTwoSteps(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def forward(self, batched_inputs):
        self.calls += 1
        return {"loss_sem_seg": self.w.sum() * (float("nan") if self.calls > 2 else 1.0)}


@pytest.fixture
def nan_model():
    """_NaNAfterTwoSteps in META_ARCH_REGISTRY for one test."""
    META_ARCH_REGISTRY.register(_NaNAfterTwoSteps)
    yield "_NaNAfterTwoSteps"
    META_ARCH_REGISTRY._obj_map.pop("_NaNAfterTwoSteps")


def test_nan_loss_stops_with_clear_error(tiny_cfg, nan_model):
    tiny_cfg.MODEL.META_ARCHITECTURE = nan_model
    tiny_cfg.DATASETS.TEST = ()
    trainer = Trainer(tiny_cfg)
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train()
    msg = str(e.value)
    assert "iteration 2" in msg and "loss_sem_seg" in msg and "SOLVER.BASE_LR" in msg


def _train_cmd(out, *extra, flags=()):
    return [PY, "tools/train_net.py", "--config-file", TINY_CFG, *flags, "OUTPUT_DIR", str(out), *extra]


def _final_weights(out):
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]


def test_resume_after_kill_gives_identical_weights(synthetic_root, tmp_path):
    """Kill -9 a run after its first checkpoint, --resume it, and compare with an uninterrupted run."""
    common = ["SOLVER.MAX_ITER", "40", "SOLVER.CHECKPOINT_PERIOD", "10", "DATASETS.TEST", "()",
              "DATALOADER.NUM_WORKERS", "1", "SEED", "7"]
    ref = tmp_path / "ref"
    run_tool(_train_cmd(ref, *common))

    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(out, *common), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    deadline = time.time() + 300
    while not (out / "last_checkpoint").exists():
        assert proc.poll() is None, "training exited before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = (out / "last_checkpoint").read_text()
    assert last != "model_final.pth", "the run finished before it could be killed"
    run_tool(_train_cmd(out, *common, flags=["--resume"]))
    a, b = _final_weights(ref), _final_weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume (killed at {last})"


def _metrics(out):
    lines = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    return {k: v for k, v in [rec for rec in lines if "sem_seg/mIoU" in rec][-1].items() if k.startswith("sem_seg/")}


def _eval_only(out, weights, *extra):
    run_tool([PY, "tools/train_net.py", "--config-file", TINY_CFG, "--eval-only", *extra,
              "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out)])
    return json.load(open(os.path.join(out, "eval_results.json")))


def test_two_process_training_and_evaluation_match_one_process(synthetic_root, tmp_path):
    """torchrun with 2 CPU processes (gloo) trains and evaluates; evaluating its final checkpoint in one
    process (and with --num-gpus 2 spawning) gives exactly the same metrics."""
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(PY), "torchrun")
    run_tool([torchrun, "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
              "tools/train_net.py", "--config-file", TINY_CFG, "OUTPUT_DIR", str(out), "SOLVER.IMS_PER_BATCH", "4"])
    ddp = _metrics(out)
    assert len([k for k in ddp if k.startswith("sem_seg/IoU-")]) == 6 and 0 < ddp["sem_seg/pACC"] <= 100
    single = _eval_only(tmp_path / "single", out / "model_final.pth")
    spawned = _eval_only(tmp_path / "spawned", out / "model_final.pth", "--num-gpus", "2")
    for k, v in ddp.items():
        assert single[k] == v and spawned[k] == v, k


def test_amp_bfloat16_and_gradient_clipping(tiny_cfg):
    """Mixed precision (bfloat16 autocast on CPU) trains, and the last step's gradients were clipped."""
    tiny_cfg.SOLVER.AMP.ENABLED, tiny_cfg.SOLVER.AMP.DTYPE = True, "bfloat16"
    tiny_cfg.SOLVER.CLIP_GRADIENTS.ENABLED, tiny_cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = True, 0.05
    tiny_cfg.SOLVER.MAX_ITER, tiny_cfg.DATASETS.TEST = 3, ()
    trainer = Trainer(tiny_cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) <= 0.05 + 1e-6
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_tensorboard_and_metrics_writers(tiny_cfg):
    tiny_cfg.TENSORBOARD, tiny_cfg.SOLVER.MAX_ITER, tiny_cfg.DATASETS.TEST, tiny_cfg.LOG_PERIOD = True, 2, (), 1
    Trainer(tiny_cfg).train()
    files = os.listdir(tiny_cfg.OUTPUT_DIR)
    assert any(f.startswith("events.out.tfevents") for f in files)
    lines = [json.loads(line) for line in open(os.path.join(tiny_cfg.OUTPUT_DIR, "metrics.json"))]
    assert [rec["iteration"] for rec in lines] == [0, 1] and all("total_loss" in rec and "lr" in rec for rec in lines)


def test_trainer_initialisation_follows_seed_not_ambient_rng(tiny_cfg):
    """A Trainer built in-process (a notebook, a test) initialises its model from SEED, whatever the global RNG
    did before, as tools/train_net.py does: two Trainers with one SEED start from identical weights."""
    first = Trainer(tiny_cfg).model.state_dict()
    torch.rand(1000)  # move the ambient RNG on
    second = Trainer(tiny_cfg).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    tiny_cfg.defrost()
    tiny_cfg.SEED = tiny_cfg.SEED + 1
    other = Trainer(tiny_cfg).model.state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_failed_checkpoint_write_keeps_the_last_one(tiny_cfg, monkeypatch):
    """A checkpoint write that fails (here: torch's 'PytorchStreamWriter failed writing' of a full disk, after part of
    the file went out) stops with a sentence naming the file, OUTPUT_DIR and the intact previous checkpoint; no
    partial file is left, last_checkpoint still names the complete one, and --resume continues from it."""
    import dense.checkpoint.checkpointer as ckpt_module

    tiny_cfg.DATASETS.TEST = ()
    real_save, calls = torch.save, []

    def save_that_fills_the_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the iteration-6 checkpoint (the first, at iteration 3, is written)
            f.write(b"PK\x03\x04 partial")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 1024\n(more)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", save_that_fills_the_disk)
    with pytest.raises(OSError, match=r"Could not write checkpoint '.*model_0000005\.pth' \(RuntimeError: "
                                      r"\[enforce fail.*unexpected pos 4096 vs 1024\)\. Nothing of it was kept; the "
                                      r"previous checkpoint 'model_0000002\.pth' and last_checkpoint are intact"):
        Trainer(tiny_cfg).train()
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    out = tiny_cfg.OUTPUT_DIR
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000002.pth"
    assert not [f for f in os.listdir(out) if ".tmp" in f or f == "model_0000005.pth"]
    resumed = Trainer(tiny_cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    resumed.train()
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
