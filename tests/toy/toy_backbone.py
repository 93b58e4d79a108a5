"""A toy backbone family, written as a user adds one to dense: this file (the model, its config node and the rules
of its "released" checkpoints) plus its YAML (tests/toy/toy.yaml). Nothing else in dense changes.

Toy: a stem of two 3x3 stride-2 convs, then three 3x3 stride-2 convs, each + ReLU; res2..res5 at strides 4..32.
Its pretend upstream names the stem ``patch_embed.proj{1,2}`` and the stages ``layers.i``, and its ImageNet files
end in ``norm`` + ``head``.
"""
import torch
from torch import nn

from dense.checkpoint import ReleasedCheckpoint
from dense.config import CfgNode as CN
from dense.modeling import BACKBONE_REGISTRY, ArgumentError, Backbone, build_from_node

NAMES = ["res2", "res3", "res4", "res5"]


def add_toy_config(cfg: CN) -> None:
    """MODEL.TOY: the keyword arguments of :class:`Toy`."""
    cfg.MODEL.TOY = t = CN()
    t.WIDTHS = [8, 16, 24, 32]  # channels of res2..res5
    t.STEM_WIDTH = 4  # channels after the first stem conv


def _from_upstream(state_dict: dict, backbone: nn.Module) -> tuple[dict, dict]:
    """The pretend upstream's names -> Toy's."""
    renames = {"patch_embed.proj1.": "stem.0.", "patch_embed.proj2.": "stem.2."}
    out = {}
    for key, value in state_dict.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key.replace("layers.", "stages.")] = value
    return out, {}


@BACKBONE_REGISTRY.register()
class Toy(Backbone):
    """forward(images [N, 3, H, W]) -> res2..res5 [N, widths[i], ceil(H / s), ceil(W / s)], s = 4, 8, 16, 32."""

    add_config = staticmethod(add_toy_config)
    released = ReleasedCheckpoint(signature=("patch_embed.proj1.weight",), classifier=r"^(norm|head)\.",
                                  convert=_from_upstream)

    def __init__(self, widths=(8, 16, 24, 32), stem_width: int = 4, out_features=tuple(NAMES)):
        super().__init__()
        if len(widths) != 4:
            raise ArgumentError("widths", "needs one width per level (4)")
        self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(stem_width, widths[0], 3, 2, 1), nn.ReLU())
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1), nn.ReLU())
                                    for i in range(3))
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(NAMES, widths))
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(NAMES)}

    @classmethod
    def from_config(cls, cfg, input_shape) -> "Toy":
        return build_from_node(cls, cfg, "MODEL.TOY", out_features="MODEL.BACKBONE.OUT_FEATURES")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        maps = [x] + [x := stage(x) for stage in self.stages]
        return {name: m for name, m in zip(NAMES, maps) if name in self._out_features}
