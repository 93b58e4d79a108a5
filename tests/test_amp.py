"""Mixed precision for every backbone family x head family (issue 17): one training step of the real Trainer under
CPU bfloat16 autocast (float32 weights; the compiled ops take the autocast activations and run in float32) gives
finite losses and finite updated weights, and an inference under autocast gives finite outputs. fp16 and the CUDA
variants run in ``make gpu-check``."""
import itertools

import pytest

from small_models import SMALL_BACKBONES, SMALL_HEADS, amp_train_step_and_inference, small_model_cfg

# ViT-Adapter has no classification form (its papers fine-tune the plain ViT's dense-prediction features only)
UNSUPPORTED = {("classification", "vit_adapter_deit"), ("classification", "vit_adapter_beit")}


@pytest.mark.parametrize("head,family", [p for p in itertools.product(SMALL_HEADS, SMALL_BACKBONES)
                                         if p not in UNSUPPORTED])
def test_amp_bf16_train_step_and_inference(head, family, synthetic_root, tmp_path):
    amp_train_step_and_inference(head, family, tmp_path)


@pytest.mark.parametrize("head,family", sorted(UNSUPPORTED))
def test_unsupported_pairs_say_so(head, family):
    from dense.config.config import ConfigValueError
    from dense.modeling import build_model

    with pytest.raises(ConfigValueError, match="declares no ImageNet classification head"):
        build_model(small_model_cfg(head, family))
