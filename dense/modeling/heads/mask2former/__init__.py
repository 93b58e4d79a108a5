"""Mask2Former (Cheng et al., CVPR 2022): pixel decoder, masked-attention transformer decoder, Hungarian matcher
and set criterion."""
from .criterion import SetCriterion, dice_loss, sigmoid_ce_loss
from .head import Mask2FormerHead
from .matcher import HungarianMatcher, batch_dice, batch_sigmoid_ce
from .pixel_decoder import MSDeformAttnPixelDecoder
from .points import point_sample, uncertain_point_coords
from .transformer_decoder import MaskedTransformerDecoder

__all__ = ["Mask2FormerHead", "MSDeformAttnPixelDecoder", "MaskedTransformerDecoder", "HungarianMatcher",
           "SetCriterion", "batch_dice", "batch_sigmoid_ce", "dice_loss", "sigmoid_ce_loss", "point_sample",
           "uncertain_point_coords"]
