"""The core config keys, each with its default and a one-line comment. Each backbone family adds its own node
(``MODEL.<FAMILY>``) with ``add_<family>_config(cfg)`` beside its code; ``get_cfg()`` returns both.

Names follow Detectron2 where Detectron2 has the concept (MODEL.META_ARCHITECTURE, INPUT.*, SOLVER.*,
TEST.EVAL_PERIOD, ...). A YAML file or command-line override that names a key not defined is
an error naming that key.
"""
from .config import CfgNode as CN

_C = CN()
_C.VERSION = 1  # config format version

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "SemanticSegmentor"  # name in META_ARCH_REGISTRY
_C.MODEL.DEVICE = ""  # "cpu", "cuda" or "cuda:N"; empty = cuda when available, else cpu
_C.MODEL.WEIGHTS = ""  # dense checkpoint or released checkpoint of a supported family (converted on load)
_C.MODEL.WEIGHTS_SKIP_MISMATCH = False  # skip (and report) shape-mismatched keys instead of failing, e.g. new class count
_C.MODEL.WEIGHTS_ALLOW_PARTIAL = False  # load MODEL.WEIGHTS even when it leaves the whole backbone (or, with --eval-only, any weight) uninitialised: otherwise that stops with what the file looks like
_C.MODEL.WEIGHTS_TRUSTED = False  # allow checkpoints whose pickle runs code (only for files you trust)
# Per-channel normalisation applied to the image in INPUT.FORMAT order (defaults: ImageNet, RGB, 0-255)
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]  # subtracted from the image
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]  # the image is divided by this

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "ResNet"  # name in BACKBONE_REGISTRY
_C.MODEL.BACKBONE.FREEZE_AT = 0  # freeze the stem (1) and the first N-1 stages (N>1); 0 trains everything
_C.MODEL.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # feature maps the backbone returns

# Each backbone family's node (MODEL.RESNETS, MODEL.DAT, MODEL.DAVIT, MODEL.VIT_ADAPTER, MODEL.DSAN, ...) is added by
# the add_<family>_config function beside its code in dense/modeling/backbone/ (get_cfg() collects them).

# Neck between backbone and head (empty NAME = none); FPN as in mmdet/mmseg (lateral_convs/fpn_convs)
_C.MODEL.NECK = CN()
_C.MODEL.NECK.NAME = "FPN"  # name in NECK_REGISTRY; empty = the head reads backbone features directly
_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone features the FPN consumes
_C.MODEL.FPN.OUT_CHANNELS = 256  # channels of every pyramid level
_C.MODEL.FPN.NORM = ""  # norm in the FPN convs ("" = none, conv has bias)
_C.MODEL.FPN.NUM_OUTS = 4  # number of output levels (extra levels are added above the last input)
_C.MODEL.FPN.ADD_EXTRA_CONVS = ""  # extra levels: "" = max-pool, "on_input" | "on_lateral" | "on_output" = stride-2 conv
_C.MODEL.FPN.START_LEVEL = 0  # first IN_FEATURES entry used (RetinaNet uses 1)

_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "FPNHead"  # name in SEM_SEG_HEAD_REGISTRY
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]  # features the head reads (neck or backbone names)
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 150  # number of semantic classes (no background class)
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label value ignored by the loss and the evaluator
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128  # channels of the head's convs (mmseg `channels`)
_C.MODEL.SEM_SEG_HEAD.NORM = "BN"  # norm of the head's convs: "BN", "SyncBN", "GN" or ""
_C.MODEL.SEM_SEG_HEAD.DROPOUT = 0.1  # dropout before the classifier (mmseg dropout_ratio)
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0  # weight of the cross-entropy loss
_C.MODEL.SEM_SEG_HEAD.NUM_CONVS = 2  # FCNHead: number of convs
_C.MODEL.SEM_SEG_HEAD.CONCAT_INPUT = True  # FCNHead: concatenate the input with the conv output before conv_seg
_C.MODEL.SEM_SEG_HEAD.POOL_SCALES = (1, 2, 3, 6)  # UPerHead: pyramid pooling output sizes
_C.MODEL.SEM_SEG_HEAD.HAM = CN()  # LightHamHead (Hamburger) settings
_C.MODEL.SEM_SEG_HEAD.HAM.CHANNELS = 512  # channels of the squeeze conv and the Hamburger
_C.MODEL.SEM_SEG_HEAD.HAM.RANK = 64  # NMF rank (the papers' ADE20K configs use 16)
_C.MODEL.SEM_SEG_HEAD.HAM.TRAIN_STEPS = 6  # NMF multiplicative-update steps in training
_C.MODEL.SEM_SEG_HEAD.HAM.EVAL_STEPS = 7  # NMF steps at evaluation
_C.MODEL.SEM_SEG_HEAD.HAM.EVAL_SEED = 0  # seed of the random NMF bases at evaluation; < 0: fresh random bases (upstream)
# Mask2Former's pixel decoder (MSDeformAttnPixelDecoder; Detectron2 Mask2Former's key names). CONVS_DIM is its width.
_C.MODEL.SEM_SEG_HEAD.MASK_DIM = 256  # channels of the stride-4 mask features the queries' embeddings are dotted with
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]  # levels of the deformable encoder; the rest of IN_FEATURES join by FPN
_C.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 6  # deformable encoder layers
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8  # heads of the encoder's deformable attention
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4  # sampling points per head and level
_C.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024  # encoder FFN width (Detectron2: 1024; ViT-Adapter-L: 4096)

# Mask2Former (meta-architecture "MaskFormer", head "Mask2FormerHead"); Detectron2 Mask2Former's key names
_C.MODEL.MASK_FORMER = CN()
_C.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100  # queries, i.e. predicted masks per image (200 for the ViT-Adapter 896 ADE20K / COCO-Stuff-164k rows)
_C.MODEL.MASK_FORMER.HIDDEN_DIM = 256  # width of the transformer decoder; a 1x1 projection of the pixel decoder levels when it differs from CONVS_DIM
_C.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False  # project the pixel decoder levels even when the widths agree
_C.MODEL.MASK_FORMER.NHEADS = 8  # attention heads of the transformer decoder
_C.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048  # FFN width of the transformer decoder
_C.MODEL.MASK_FORMER.DEC_LAYERS = 10  # predictions made: the learnable queries' + one per masked-attention layer (DEC_LAYERS - 1 layers)
_C.MODEL.MASK_FORMER.DROPOUT = 0.0  # dropout in the transformer decoder and the pixel decoder's encoder
_C.MODEL.MASK_FORMER.USE_CHECKPOINT = False  # activation checkpointing of the FFNs (saves training memory, same results; ViT-Adapter-L: True)
_C.MODEL.MASK_FORMER.DEEP_SUPERVISION = True  # losses on every prediction, not just the last one
_C.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0  # weight of the classification cross-entropy (loss and matching cost)
_C.MODEL.MASK_FORMER.MASK_WEIGHT = 5.0  # weight of the sigmoid binary cross-entropy on sampled mask points
_C.MODEL.MASK_FORMER.DICE_WEIGHT = 5.0  # weight of the dice loss on sampled mask points
_C.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1  # cross-entropy weight of the "no object" class
_C.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 12544  # points per mask for matching costs (uniform) and mask losses (importance-sampled)
_C.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0  # mask losses: candidates drawn per point before picking the most uncertain
_C.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75  # mask losses: share of points taken from the most uncertain candidates
_C.MODEL.MASK_FORMER.TEST = CN()
_C.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True  # return "sem_seg": softmax(class) x sigmoid(mask) summed over queries
_C.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False  # return "instances": top TEST.DETECTIONS_PER_IMAGE (query, class) pairs
_C.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False  # return "panoptic_seg": (segment-id map, segments_info)
_C.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.8  # panoptic: keep queries whose class score exceeds this
_C.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.8  # panoptic: drop a segment keeping less than this share of its mask
_C.MODEL.MASK_FORMER.TEST.SEMANTIC_UPSAMPLE = "masks"  # "masks": upsample mask logits, then combine (Detectron2); "scores": combine at stride 4, upsample class scores (ViT-Adapter)
_C.MODEL.MASK_FORMER.TEST.MASK_CHUNK = 32  # masks upsampled to the image per step (bounds inference memory; results do not depend on it)
_C.MODEL.MASK_FORMER.TEST.PAD_TO_SIZE = 0  # semantic: pad each view's sides shorter than this with black pixels, cut off after (ViT-Adapter 896 MS: 896); 0 = off

# Image classification (meta-architecture "ImageClassifier"): the backbone's last stage -> its family's ImageNet head
_C.MODEL.CLASSIFIER = CN()
_C.MODEL.CLASSIFIER.NUM_CLASSES = 1000  # classes of the linear classifier
_C.MODEL.CLASSIFIER.DROPOUT = 0.0  # dropout before the classifier (timm drop_rate)
_C.MODEL.CLASSIFIER.LABEL_SMOOTHING = 0.1  # label smoothing of the cross-entropy (inside Mixup's soft targets when on)

# Auxiliary head on one backbone (or neck) level, trained with its own loss, unused at inference
_C.MODEL.AUX_HEAD = CN()
_C.MODEL.AUX_HEAD.NAME = ""  # name in SEM_SEG_HEAD_REGISTRY, e.g. "FCNHead"; empty = no auxiliary head
_C.MODEL.AUX_HEAD.IN_FEATURES = ["res4"]  # the level it reads (mmseg in_index 2)
_C.MODEL.AUX_HEAD.CONVS_DIM = 256  # channels of its convs
_C.MODEL.AUX_HEAD.NUM_CONVS = 1  # FCNHead convs
_C.MODEL.AUX_HEAD.CONCAT_INPUT = False  # FCNHead concat_input
_C.MODEL.AUX_HEAD.NORM = "BN"  # norm of its convs
_C.MODEL.AUX_HEAD.DROPOUT = 0.1  # dropout before its classifier
_C.MODEL.AUX_HEAD.LOSS_WEIGHT = 0.4  # weight of its cross-entropy loss

# Detection (GeneralizedRCNN, RetinaNet): defaults reproduce mmdetection 2.x (configs/_base_/models/
# mask_rcnn_r50_fpn.py, retinanet_r50_fpn.py); each comment names torchvision's value where it differs.
_C.MODEL.MASK_ON = False  # GeneralizedRCNN: the mask branch (Mask R-CNN; the detection mapper then loads masks); False = Faster R-CNN

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]  # sizes (sqrt of area, px) per level of the head's IN_FEATURES; one list = all levels
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]  # height / width per level; one list = all levels (anchors are ratio-major, as mmdet)
_C.MODEL.ANCHOR_GENERATOR.OCTAVE_BASE_SCALE = 0.0  # > 0: mmdet octave anchors stride * this * 2^(k / SCALES_PER_OCTAVE) replace SIZES (RetinaNet: 4)
_C.MODEL.ANCHOR_GENERATOR.SCALES_PER_OCTAVE = 3  # k = 0 .. SCALES_PER_OCTAVE - 1 (torchvision truncates these sizes to integers)
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # anchor centres at (cell + OFFSET) * stride (mmdet center_offset 0)
_C.MODEL.ANCHOR_GENERATOR.ROUND = False  # round cell anchors to whole pixels (torchvision: True)

_C.MODEL.RPN = CN()
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # FPN levels the RPN reads
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # anchors with best IoU below [0] are background, from [1] foreground, else ignored
_C.MODEL.RPN.MIN_POS_IOU = 0.3  # each gt's best anchors become foreground when their IoU >= this (mmdet match_low_quality); < 0: off
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the losses
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # most foreground share of the sampled anchors
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # delta weights (dx, dy, dw, dh) = 1 / mmdet target_stds
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0  # box loss: 0 = L1 (mmdet, Detectron2); torchvision: smooth-L1 with 1/9
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # proposals kept per level before NMS in training (mmdet nms_pre); 0 = all
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000  # ... at inference
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000  # proposals kept per image after NMS in training (mmdet max_per_img; torchvision 2000)
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # ... at inference
_C.MODEL.RPN.NMS_THRESH = 0.7  # NMS IoU, within each level
_C.MODEL.RPN.MIN_SIZE = 0.0  # proposals with a side <= this (px) are dropped (mmdet min_bbox_size)
_C.MODEL.RPN.MIN_SIZE_RULE = "strict"  # "strict": side <= MIN_SIZE dropped, zero-size boxes too at 0 (mmdet >= 2.18); "inclusive": side < MIN_SIZE dropped only when MIN_SIZE > 0 (mmdet < 2.18, DaViT's 2.11)

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # object classes (no background)
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]  # FPN levels RoIs are pooled from
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5, 0.5]  # [background below, foreground from]; one value = both
_C.MODEL.ROI_HEADS.MIN_POS_IOU = 0.5  # low-quality matches as for the RPN (mmdet rcnn assigner); < 0: off
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # RoIs sampled per image
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # most foreground share of the sampled RoIs
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True  # add the ground-truth boxes to the proposals in training
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # detections scoring at most this are dropped
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5  # class-wise NMS IoU at inference

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # shared fully connected layers (Shared2FCBBoxHead)
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # their width
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # RoIAlign output size
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # samples per bin side, 0 = adaptive (mmdet, Detectron2); torchvision: 2
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"  # "ROIAlignV2": aligned (mmdet, Detectron2); "ROIAlign": unaligned (torchvision)
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # = 1 / mmdet target_stds (0.1, 0.1, 0.2, 0.2)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0  # box loss: 0 = L1 (mmdet, Detectron2); torchvision: 1/9

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4  # 3x3 convs before the upsampling (FCNMaskHead)
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256  # their width
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # RoIAlign output size; masks are predicted at twice this
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0  # as ROI_BOX_HEAD.POOLER_SAMPLING_RATIO
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"  # as ROI_BOX_HEAD.POOLER_TYPE
_C.MODEL.ROI_MASK_HEAD.MASK_THRESHOLD = 0.5  # pasted mask probabilities >= this are foreground (mmdet mask_thr_binary)

_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 80  # object classes
_C.MODEL.RETINANET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]  # FPN levels the head reads
_C.MODEL.RETINANET.NUM_CONVS = 4  # 3x3 convs in each of the class and box towers
_C.MODEL.RETINANET.IOU_THRESHOLDS = [0.4, 0.5]  # [background below, foreground from]
_C.MODEL.RETINANET.MIN_POS_IOU = 0.0  # low-quality matches as for the RPN (mmdet RetinaNet: 0); < 0: off
_C.MODEL.RETINANET.PRIOR_PROB = 0.01  # initial foreground probability of every class logit
_C.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25  # focal loss alpha
_C.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0  # focal loss gamma
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # delta weights = 1 / mmdet target_stds
_C.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.0  # box loss: 0 = L1 (mmdet); Detectron2 0.1; torchvision L1 too
_C.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05  # (anchor, class) pairs scoring at most this are dropped
_C.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000  # best pairs kept per level before NMS (mmdet nms_pre)
_C.MODEL.RETINANET.CANDIDATE_RULE = "pairs"  # per level: "pairs" = the TOPK best (anchor, class) pairs (mmdet >= 2.18); "anchors" = every pair above the threshold of the TOPK anchors with the best top-class score (mmdet < 2.18, DaViT's 2.11)
_C.MODEL.RETINANET.NMS_THRESH_TEST = 0.5  # class-wise NMS IoU

# ---------------------------------------------------------------------------------------------
# Input pipeline
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.FORMAT = "RGB"  # channel order of model inputs: "RGB" or "BGR"
_C.INPUT.DATASET_MAPPER_NAME = "semantic"  # name in DATASET_MAPPER_REGISTRY: "semantic", "instance", "detection", "mask_former_semantic", ...
# Training resize. "ratio_range": mmseg Resize(img_scale=(MAX_SIZE, MIN_SIZE), ratio_range); "choice" /
# "range": Detectron2 ResizeShortestEdge over MIN_SIZE_TRAIN with long side capped at MAX_SIZE_TRAIN.
_C.INPUT.MIN_SIZE_TRAIN = (512,)  # short-side target(s) in pixels
_C.INPUT.MAX_SIZE_TRAIN = 2048  # long-side cap in pixels
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "ratio_range"  # "ratio_range", "choice" or "range"
_C.INPUT.RESIZE_RATIO_RANGE = (0.5, 2.0)  # scale factor range for "ratio_range" sampling
_C.INPUT.RESIZE_BACKEND = "torchvision"  # image resizes: "cv2" = mmcv.imresize (cv2 bilinear on uint8, nearest for labels: the mmseg / mmdet papers' pipelines), "pil" = Detectron2's ResizeTransform (PIL on uint8, Detectron2's size rounding: the Mask2Former R50 rows), "torchvision" (fast, +-1 grey level)
_C.INPUT.MIN_SIZE_TEST = 512  # test short side (keep ratio); 0 = no resize
_C.INPUT.MAX_SIZE_TEST = 2048  # test long-side cap
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = True  # random crop after resize
_C.INPUT.CROP.SIZE = (512, 512)  # crop window (height, width); semantic training pads images smaller than it (mmseg Pad)
_C.INPUT.CROP.SIZE_RANGE = ()  # detection: (min, max): a window whose height and width are each uniform in [min, max] instead of SIZE (mmdet absolute_range)
_C.INPUT.CROP.CAT_MAX_RATIO = 0.75  # retry a crop (10 times) when one class covers more than this share
_C.INPUT.CROP.PROB = 1.0  # detection: chance of the crop branch (DETR-style AutoAugment: 0.5, else only the resize); semantic pipelines always crop
_C.INPUT.CROP.RESIZE_BEFORE = ()  # detection: short sides (one drawn, long side <= MAX_SIZE_TRAIN) to resize to before the crop (DETR: 400, 500, 600)
_C.INPUT.FINAL_CROP_SIZE = ()  # detection: a random crop to at most (h, w) after the resize (ViT-Adapter: 1024, 1024); empty = none
_C.INPUT.FLIP_PROB = 0.5  # horizontal flip probability
_C.INPUT.COLOR_AUG = True  # mmseg PhotoMetricDistortion (brightness, contrast, saturation, hue)
_C.INPUT.SIZE_DIVISIBILITY = -1  # pad batched images to a multiple of this; -1 = the backbone's requirement
_C.INPUT.TEST_RESIZE_MULTIPLE = 0  # semantic test: after the test resize, resize (not pad) each side up to a multiple of this (mmseg ResizeToMultiple; DSAN's ADE20K rows: 32); 0 = off
# Large-scale jitter (mappers coco_instance_lsj / coco_panoptic_lsj: Mask2Former's COCO recipe; with FLIP_PROB)
_C.INPUT.IMAGE_SIZE = 1024  # output side: the image is resized to fit IMAGE_SIZE * scale, then cropped / padded to it
_C.INPUT.MIN_SCALE = 0.1  # smallest scale
_C.INPUT.MAX_SCALE = 2.0  # largest scale

# Image classification input (mapper "classification"): timm's ImageNet transforms, with its option names
_C.INPUT.CLS = CN()
_C.INPUT.CLS.SIZE = 224  # training crop and evaluation crop side
_C.INPUT.CLS.CROP_PCT = 0.875  # evaluation: resize to floor(SIZE / CROP_PCT), then centre-crop SIZE (1.0: no crop)
_C.INPUT.CLS.CROP_MODE = "center"  # evaluation resize: "center" = short side (timm, DaViT, DSAN), "squash" = both sides, aspect not kept (DAT)
_C.INPUT.CLS.INTERPOLATION = "bicubic"  # evaluation resize interpolation (PIL): "bicubic", "bilinear", ...
_C.INPUT.CLS.TRAIN_INTERPOLATION = "bicubic"  # random-resized-crop interpolation; "random" = bilinear or bicubic per image
_C.INPUT.CLS.SCALE = (0.08, 1.0)  # random resized crop: area range
_C.INPUT.CLS.RATIO = (0.75, 1.3333333333333333)  # random resized crop: aspect-ratio range
_C.INPUT.CLS.AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"  # timm auto-augment policy; "" = none (then COLOR_JITTER applies)
_C.INPUT.CLS.COLOR_JITTER = 0.4  # colour jitter strength when AUTO_AUGMENT is "" (timm)
_C.INPUT.CLS.RE_PROB = 0.25  # random erasing probability (on the normalised batch, in the model)
_C.INPUT.CLS.RE_MODE = "pixel"  # random erasing fill: "pixel" (per-pixel normal), "rand" (per channel), "const" (0)
_C.INPUT.CLS.RE_COUNT = 1  # most erased boxes per image
_C.INPUT.CLS.MIXUP = 0.8  # Mixup alpha (0 = off)
_C.INPUT.CLS.CUTMIX = 1.0  # CutMix alpha (0 = off)
_C.INPUT.CLS.MIXUP_PROB = 1.0  # chance of Mixup or CutMix per batch
_C.INPUT.CLS.MIXUP_SWITCH_PROB = 0.5  # chance of CutMix instead of Mixup when both are on
_C.INPUT.CLS.MIXUP_MODE = "batch"  # "batch", "pair" or "elem" (timm)

# ---------------------------------------------------------------------------------------------
# Datasets and loading
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # registered dataset names to train on (a tuple/list, not a string)
_C.DATASETS.TEST = ()  # registered dataset names to evaluate on

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2  # data-loading worker processes per training process
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images without instance annotations
_C.DATALOADER.ASPECT_RATIO_GROUPING = False  # batches of one orientation (width > height or not; mmdet GroupSampler), exactly resumable
_C.DATALOADER.ON_BAD_SAMPLE = "error"  # training: "error" stops at a missing label / corrupt image / bad label, "skip" counts and skips it

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "AdamW"  # "AdamW" or "SGD"
_C.SOLVER.BASE_LR = 1e-4  # learning rate after warmup, before decay
_C.SOLVER.WEIGHT_DECAY = 0.01  # weight decay of every parameter not listed below
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of normalisation-layer parameters
_C.SOLVER.NO_WEIGHT_DECAY_KEYS = ["pos_embed", "relative_position_bias_table", "rpe_table"]  # param-name parts with wd 0
_C.SOLVER.WEIGHT_DECAY_BIAS = -1.0  # weight decay of biases; < 0: same as WEIGHT_DECAY
_C.SOLVER.NO_WEIGHT_DECAY_1D = False  # every 1-D parameter (norms, biases, layer scales) without weight decay (timm, Swin)
_C.SOLVER.BACKBONE_MULTIPLIER = 1.0  # lr factor of backbone.* parameters (Mask2Former uses 0.1)
_C.SOLVER.HEAD_LR_MULTIPLIER = 1.0  # lr factor of parameters whose name contains "head" (mmseg custom key)
_C.SOLVER.LAYER_DECAY = CN()
_C.SOLVER.LAYER_DECAY.ENABLED = False  # layer-wise lr decay by the backbone's layer rule (ViT-Adapter's LayerDecayOptimizerConstructor)
_C.SOLVER.LAYER_DECAY.RATE = 0.9  # lr of layer i = rate^(L + 1 - i), L = the backbone's layers (ViT: its blocks); 1-D params and biases get no wd
_C.SOLVER.BETAS = (0.9, 0.999)  # AdamW betas
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # SGD Nesterov momentum
_C.SOLVER.IMS_PER_BATCH = 16  # images per iteration summed over all processes
_C.SOLVER.MAX_ITER = 160000  # training iterations
_C.SOLVER.EPOCHS = 0  # > 0: train this many epochs of DATASETS.TRAIN instead (MAX_ITER = EPOCHS * images // IMS_PER_BATCH)
_C.SOLVER.WARMUP_EPOCHS = 0.0  # with EPOCHS: warmup length in epochs (replaces WARMUP_ITERS)
_C.SOLVER.COOLDOWN_EPOCHS = 0  # with EPOCHS: the last epochs at END_LR (timm cooldown); the decay ends before them
_C.SOLVER.LR_SCHEDULER_NAME = "poly"  # "poly", "cosine" or "multistep"
_C.SOLVER.POLY_POWER = 1.0  # poly: lr = (base - end) * (1 - it/max)^power + end
_C.SOLVER.END_LR = 0.0  # final learning rate of poly and cosine schedules
_C.SOLVER.STEPS = (120000, 150000)  # multistep: iterations at which lr is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1  # multistep decay factor
_C.SOLVER.WARMUP_ITERS = 1500  # linear warmup length in iterations (0 = none)
_C.SOLVER.WARMUP_FACTOR = 1e-6  # lr multiplier at iteration 0 of the warmup
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 16000  # save a checkpoint every N iterations (and at the end)
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients before each optimizer step
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # "full_model" (global norm), "norm" (per param) or "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # max norm / max absolute value
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # mixed precision (autocast + loss scaling)
_C.SOLVER.AMP.DTYPE = "float16"  # "float16" (CUDA, with GradScaler) or "bfloat16" (CPU or CUDA)

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # evaluate every N iterations (0 = only at the end of training)
_C.TEST.IMS_PER_BATCH = 1  # images per inference step and process (the classifier batches them; one size per batch)
_C.TEST.MODE = "whole"  # semantic inference: "whole" image or "slide" (sliding window)
_C.TEST.SLIDE = CN()
_C.TEST.SLIDE.CROP_SIZE = (512, 512)  # sliding-window size (height, width)
_C.TEST.SLIDE.STRIDE = (341, 341)  # sliding-window step (height, width)
_C.TEST.AUG = CN()
_C.TEST.AUG.ENABLED = False  # multi-scale (+ flip) test-time augmentation: average of softmax probabilities
_C.TEST.AUG.RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # image scale factors (mmseg aug-test)
_C.TEST.AUG.FLIP = True  # also evaluate the horizontally flipped image at every ratio
_C.TEST.DETECTIONS_PER_IMAGE = 100  # max detections per image for instance models (mmdet / Detectron2 100; torchvision RetinaNet 300)

# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"  # checkpoints, metrics.json, log.txt, config.yaml
_C.SEED = -1  # global seed; negative = pick one and record it in OUTPUT_DIR/config.yaml
_C.CUDNN_BENCHMARK = False  # cudnn autotuner (faster, not bit-reproducible)
_C.LOG_PERIOD = 20  # print progress and write metrics every N iterations
_C.TENSORBOARD = False  # also write TensorBoard event files to OUTPUT_DIR

# ---------------------------------------------------------------------------------------------
# Keys that were removed or renamed: a config that sets one fails with what to do instead
# ---------------------------------------------------------------------------------------------
_C.register_removed_key("SOLVER.LAYER_DECAY.NUM_LAYERS", "the layers are the backbone's own (ViT-Adapter: "
                                                         "MODEL.VIT_ADAPTER.DEPTH); delete the key")
_C.register_removed_key("INPUT.CROP.TYPE", "a crop is an INPUT.CROP.SIZE (h, w) window, or with INPUT.CROP.SIZE_RANGE "
                                           "(min, max) one whose sides are drawn from the range (was 'absolute_range')")
_C.register_renamed_key("MODEL.MASK_FORMER.WITH_CP", "MODEL.MASK_FORMER.USE_CHECKPOINT",
                        "activation checkpointing has one name everywhere")
