"""Detection building blocks shared by the RPN, R-CNN and RetinaNet heads."""
from .anchors import AnchorGenerator, build_anchor_generator, cell_anchors, octave_sizes
from .box_regression import BoxCoder, box_regression_loss
from .matcher import MaxIoUMatcher
from .poolers import POOLER_TYPES, ROIPooler

__all__ = ["AnchorGenerator", "build_anchor_generator", "cell_anchors", "octave_sizes", "BoxCoder",
           "box_regression_loss", "MaxIoUMatcher", "POOLER_TYPES", "ROIPooler"]
