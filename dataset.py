"""The datasets: each one's classes, palette and file layout, the training augmentation, and the two datasets
that training and evaluation read, `TrainDataset` and `ValDataset`.

DATASET picks the dataset and DATA_ROOT its folder, as `python prepare.py DATASET ...` leaves it (README
"Data"): images where the official download has them, labels as single-channel PNGs of class indices
(IGNORE_LABEL where no class applies), and split lists of ids, one per line. A dataset is an entry of
DATASETS: its class names, its palette, and where an id's image, label and split list are. `check()`
verifies DATA_ROOT before training (and as `python prepare.py check`).
"""
import functools
import math
import multiprocessing
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

import settings

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')

# Cityscapes: the 19 evaluated classes in trainId order and their official colours (cityscapesScripts,
# cityscapesscripts/helpers/labels.py)
CITYSCAPES_CLASSES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign', 'vegetation',
    'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle',
)
# the regular labelId of each of the 19 trainIds, in trainId order (the same labels.py): prepare.py maps them to
# trainIds, every other id to IGNORE_LABEL (the void ones 0-6, those not evaluated: 9 parking, 10 rail track, 14
# guard rail, 15 bridge, 16 tunnel, 18 polegroup, 29 caravan, 30 trailer, and -1 license plate); the test server
# takes predictions back in labelIds
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# ADE20K SceneParsing: class k + 1 of the annotations is class k here; the names are the first synonym of
# objectInfo150.txt (CSAILVision/sceneparsing; 'television receiver' as mmsegmentation's ade.py has it), the
# colours those of the devkit's visualizationCode/color150.mat
ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
    'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path',
    'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase',
    'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm',
    'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus', 'towel', 'light',
    'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver', 'airplane',
    'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet', 'poster',
    'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool', 'stool',
    'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture',
    'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen', 'plate', 'monitor',
    'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag',
)
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

# COCO-Stuff: the 182 ids of nightrome/cocostuff labels.txt (1-91 things, 92-182 stuff) in id order, less the 11
# thing ids no image has (its README lists them); prepare.py maps the ids here
COCOSTUFF_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
    'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed',
    'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven',
    'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush', 'banner', 'blanket', 'branch', 'bridge', 'building-other', 'bush', 'cabinet', 'cage', 'cardboard',
    'carpet', 'ceiling-other', 'ceiling-tile', 'cloth', 'clothes', 'clouds', 'counter', 'cupboard', 'curtain',
    'desk-stuff', 'dirt', 'door-stuff', 'fence', 'floor-marble', 'floor-other', 'floor-stone', 'floor-tile',
    'floor-wood', 'flower', 'fog', 'food-other', 'fruit', 'furniture-other', 'grass', 'gravel', 'ground-other',
    'hill', 'house', 'leaves', 'light', 'mat', 'metal', 'mirror-stuff', 'moss', 'mountain', 'mud', 'napkin', 'net',
    'paper', 'pavement', 'pillow', 'plant-other', 'plastic', 'platform', 'playingfield', 'railing', 'railroad',
    'river', 'road', 'rock', 'roof', 'rug', 'salad', 'sand', 'sea', 'shelf', 'sky-other', 'skyscraper', 'snow',
    'solid-other', 'stairs', 'stone', 'straw', 'structural-other', 'table', 'tent', 'textile-other', 'towel',
    'tree', 'vegetable', 'wall-brick', 'wall-concrete', 'wall-other', 'wall-panel', 'wall-stone', 'wall-tile',
    'wall-wood', 'water-other', 'waterdrops', 'window-blind', 'window-other', 'wood',
)

# PASCAL Context: background and the 59 most frequent classes, in the order of their ids in the release's
# labels.txt (which is alphabetical): the label values of PyTorch-Encoding's and mmsegmentation's converters
CONTEXT_CLASSES = (
    'background', 'aeroplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle', 'bird', 'boat', 'book', 'bottle',
    'building', 'bus', 'cabinet', 'car', 'cat', 'ceiling', 'chair', 'cloth', 'computer', 'cow', 'cup', 'curtain',
    'dog', 'door', 'fence', 'floor', 'flower', 'food', 'grass', 'ground', 'horse', 'keyboard', 'light', 'motorbike',
    'mountain', 'mouse', 'person', 'plate', 'platform', 'pottedplant', 'road', 'rock', 'sheep', 'shelves',
    'sidewalk', 'sign', 'sky', 'snow', 'sofa', 'table', 'track', 'train', 'tree', 'truck', 'tvmonitor', 'wall',
    'water', 'window', 'wood',
)

# COCO panoptic (the EMANet detectron2 port's 'coco_2017_*_panoptic_stuffonly'): 0 every thing, then the 53 stuff
# categories in the order of the panoptic JSON's categories (cocodataset/panopticapi, panoptic_coco_categories.json,
# isthing 0, ids 92..200)
COCO_PANOPTIC_CLASSES = (
    'things', 'banner', 'blanket', 'bridge', 'cardboard', 'counter', 'curtain', 'door-stuff', 'floor-wood', 'flower',
    'fruit', 'gravel', 'house', 'light', 'mirror-stuff', 'net', 'pillow', 'platform', 'playingfield', 'railroad',
    'river', 'road', 'roof', 'sand', 'sea', 'shelf', 'snow', 'stairs', 'tent', 'towel', 'wall-brick', 'wall-stone',
    'wall-tile', 'wall-wood', 'water-other', 'window-blind', 'window-other', 'tree-merged', 'fence-merged',
    'ceiling-merged', 'sky-other-merged', 'cabinet-merged', 'table-merged', 'floor-other-merged', 'pavement-merged',
    'mountain-merged', 'grass-merged', 'dirt-merged', 'paper-merged', 'food-other-merged', 'building-other-merged',
    'rock-merged', 'wall-other-merged', 'rug-merged',
)

# name → classes (names in label order), palette (RGB per class; None: the VOC colour map), the paths, relative
# to DATA_ROOT, of an id's image and label and of a split's list, and background_optional: class 0 is a
# background that N_CLASSES = len(classes) - 1 ignores (labels are read with 0 → IGNORE_LABEL, k → k - 1)
VOC_LAYOUT = dict(classes=VOC_CLASSES, palette=None, image='JPEGImages/{}.jpg', label='SegmentationClassAug/{}.png',
                  list='ImageSets/SegmentationAug/{}.txt')
DATASETS = {
    'voc': VOC_LAYOUT,
    'demo': VOC_LAYOUT,  # `prepare.py demo`'s generated images: VOC's layout and classes, no published recipe
    # ids like train/aachen/aachen_000000_000019; the labelTrainIds name is cityscapesScripts' own
    'cityscapes': dict(classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE,
                       image='leftImg8bit/{}_leftImg8bit.png', label='gtFine/{}_gtFine_labelTrainIds.png',
                       list='lists/{}.txt'),
    # ids like training/ADE_train_00000001; labels/ is written beside the official annotations/
    'ade20k': dict(classes=ADE20K_CLASSES, palette=ADE20K_PALETTE, image='images/{}.jpg', label='labels/{}.png',
                   list='lists/{}.txt'),
    # ids like COCO_train2014_000000000077 (10k release) or train2017/000000000139 (164k release)
    'cocostuff': dict(classes=COCOSTUFF_CLASSES, palette=None, image='images/{}.jpg', label='labels/{}.png',
                      list='lists/{}.txt'),
    # DATA_ROOT is the COCO folder; ids like train2017/000000000139 or images/train2017/000000000139; each COCO
    # dataset has its own labels and lists, so they can share the folder (and the images) with COCO-Stuff 164k
    'coco_voc': dict(classes=VOC_CLASSES, palette=None, image='{}.jpg', label='voc_labels/{}.png',
                     list='voc_lists/{}.txt'),
    'coco_panoptic': dict(classes=COCO_PANOPTIC_CLASSES, palette=None, image='{}.jpg', label='panoptic_labels/{}.png',
                          list='panoptic_lists/{}.txt'),
    # DATA_ROOT is VOC2010; ids like 2008_000002
    'context': dict(classes=CONTEXT_CLASSES, palette=None, image='JPEGImages/{}.jpg',
                    label='SegmentationClassContext/{}.png', list='ImageSets/SegmentationContext/{}.txt',
                    background_optional=True),
    # your own data, as `prepare.py folder` writes DATA_ROOT: the classes, the palette and each id's image file
    # are DATA_ROOT's FOLDER_FILES (folder_data); ids are the images' paths without extension
    'folder': dict(classes=None, palette=None, image=None, label='labels/{}.png', list='lists/{}.txt'),
}
# DATA_ROOT's files of DATASET 'folder': one class name a line; 'r g b' a line, the colour of each class; '<id> TAB
# <image file, relative to DATA_ROOT>' a line, with a third field 'stored' where the image is read without its
# EXIF orientation (its mask has the stored size), else as a viewer shows it (read_photo)
FOLDER_FILES = {'classes': 'classes.txt', 'palette': 'palette.txt', 'images': 'images.txt'}
PREPARE_NEW = '.prepare-new'  # in a 'folder' DATA_ROOT while prepare.py folder replaces its dataset


TEST_SPLIT = 'test'  # the split of images only, as the benchmark servers' test sets are: nothing to score


def has_labels(split):
    """Whether a split has labels to score: every split but TEST_SPLIT."""
    return split != TEST_SPLIT


def drops_background():
    """Whether N_CLASSES leaves out the optional background class 0 of settings.DATASET (Context's 59)."""
    info = DATASETS.get(settings.DATASET, {})
    return info.get('background_optional', False) and settings.N_CLASSES == len(info['classes']) - 1


def entry():
    """The DATASETS entry of settings.DATASET, for 'folder' with the classes and palette of DATA_ROOT's files."""
    if settings.DATASET not in DATASETS:
        raise ValueError(f'DATASET={settings.DATASET!r}: must be one of {", ".join(map(repr, DATASETS))}')
    info = DATASETS[settings.DATASET]
    return dict(info, **folder_data(settings.DATA_ROOT)) if info['classes'] is None else info


def current():
    """The dataset's entry (`entry`), its classes those N_CLASSES trains: all of them, or all but the background
    where that is optional; any other N_CLASSES is an error."""
    info = entry()
    if drops_background():
        return dict(info, classes=info['classes'][1:])
    if settings.N_CLASSES != len(info['classes']):
        optional = f' ({len(info["classes"]) - 1} with the background ignored)' if info.get('background_optional') else ''
        source = f' in {folder_file("classes")}' if DATASETS[settings.DATASET]['classes'] is None else ''
        raise ValueError(f'N_CLASSES={settings.N_CLASSES} but DATASET={settings.DATASET!r} has '
                         f'{len(info["classes"])} classes{optional}{source}')
    return info


def folder_file(kind, data_root=None):
    """The path of one of FOLDER_FILES in DATA_ROOT (or data_root)."""
    return os.path.join(data_root_or_default(data_root), FOLDER_FILES[kind])


def read_lines(path):
    """The stripped non-empty lines of a text file (UTF-8, with or without the byte-order mark an editor may add);
    a missing one says how DATASET 'folder' gets it."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"missing {path}: DATASET 'folder' reads the DATA_ROOT that `python prepare.py "
                                f"folder --images DIR --masks DIR --out DATA_ROOT` writes") from None


def file_version(path):
    """What changes when a file is rewritten: the cache key of the folder files."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def folder_data(data_root):
    """{'classes': names, 'palette': RGB per class} of a 'folder' DATA_ROOT."""
    paths = folder_file('classes', data_root), folder_file('palette', data_root)
    return read_folder_data(*paths, *map(file_version, paths))


@functools.lru_cache(maxsize=8)  # keyed by the files' versions: a rewritten file is read again
def read_folder_data(classes_path, palette_path, *versions):
    classes = tuple(read_lines(classes_path))
    for number, name in enumerate(classes, 1):
        if name in classes[:number - 1]:  # eval's per-class table and JSON are keyed by name: one would hide the other
            raise ValueError(f'{classes_path} names {name!r} twice (lines {classes.index(name) + 1} and {number}): '
                             f'give each class a name of its own')
    palette = []
    for number, line in enumerate(read_lines(palette_path), 1):
        values = line.split()
        if len(values) != 3 or not all(value.isdigit() and int(value) < 256 for value in values):
            raise ValueError(f'{palette_path} line {number} is not "r g b" (0..255): {line!r}')
        palette.append(tuple(map(int, values)))
    if len(palette) != len(classes):
        raise ValueError(f'{palette_path} has {len(palette)} colours but {classes_path} {len(classes)} classes')
    return {'classes': classes, 'palette': tuple(palette)}


def folder_images(data_root):
    """{id: (image file, upright)} of a 'folder' DATA_ROOT: upright means read as a viewer shows it."""
    path = folder_file('images', data_root)
    return read_folder_images(path, file_version(path))


@functools.lru_cache(maxsize=8)
def read_folder_images(path, version):
    images = {}
    for line in read_lines(path):
        image_id, file, *how = line.split('\t')
        images[image_id] = (os.path.join(os.path.dirname(path), file), how != ['stored'])
    return images


# ---------------------------------------------------------------- published recipes

UNKNOWN = 'unknown'  # a recipe's value that its source does not publish
BN_IMAGES = 'images per BatchNorm'  # how many images each BatchNorm normalises over: a run's, from `run_values`
PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # the paper's multi-scale test (with EVAL_FLIP), mmsegmentation's too
# what defines a recipe, in the order its tables list them. PRETRAINED is the backbone's kind ('ImageNet', or None:
# from scratch, or the whole network of INIT_FROM); a recipe's INIT_FROM names the recipe whose final network starts
# it (a run's: the file); EVAL_STRIDE is the output stride at test time; SCALES the training's random rescaling
RECIPE_KEYS = ('N_LAYERS', 'PRETRAINED', 'INIT_FROM', 'STRIDE', 'EVAL_STRIDE', 'CROP_SIZE', 'SCALES', 'BATCH_SIZE',
               BN_IMAGES, 'BN_MOM', 'LR', 'LR_MOM', 'LR_DECAY', 'POLY_POWER', 'WEIGHT_DECAY', 'ITER_MAX', 'LOSS',
               'OHEM_THRESH', 'OHEM_MIN_KEPT', 'STAGE_NUM', 'EM_MOM', 'EM_NORM', 'EM_GRAD', 'EMA_CHANNELS', 'N_BASES',
               'TRAIN_SPLIT', 'EVAL_SCALES', 'EVAL_FLIP', 'EVAL_WINDOW')
PROTOCOL_KEYS = ('EVAL_STRIDE', 'EVAL_SCALES', 'EVAL_FLIP', 'EVAL_WINDOW')  # a result's test-time protocol
OHEM_KEYS = ('OHEM_THRESH', 'OHEM_MIN_KEPT')  # compared where both losses are 'ohem' (None otherwise)
NOT_PUBLISHED = dict.fromkeys(RECIPE_KEYS, UNKNOWN)
# the authors' release (XiaLiPKU/EMANet settings.py, network.py): 4 GPUs × 4 images with BatchNorm synchronised over
# all 16, the ImageNet ResNet its network.py always loads, a 512-channel EM unit of 64 bases, l2-normalised in the EM
# iterations, which no gradient goes through
AUTHORS = dict(N_LAYERS=101, PRETRAINED='ImageNet', INIT_FROM=None, STRIDE=8, EVAL_STRIDE=8, CROP_SIZE=513,
               SCALES=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), BATCH_SIZE=16, **{BN_IMAGES: 16}, BN_MOM=3e-4, LR=9e-3,
               LR_MOM=0.9, LR_DECAY=10, POLY_POWER=0.9, WEIGHT_DECAY=1e-4, ITER_MAX=30000, LOSS='ce',
               OHEM_THRESH=None, OHEM_MIN_KEPT=None, STAGE_NUM=3, EM_MOM=0.9, EM_NORM='l2', EM_GRAD=False,
               EMA_CHANNELS=512, N_BASES=64, TRAIN_SPLIT='trainaug', EVAL_SCALES=(1.0,), EVAL_FLIP=False,
               EVAL_WINDOW=None)
# what mmsegmentation's configs/emanet (_base_/models/emanet_r50-d8.py, schedules/schedule_80k.py, ema_head.py) and
# sssegmentation's ssseg/configs/emanet/base_cfg.py (ema.py) share: the authors' values but for SGD's rate and weight
# decay, on 'train', each image rescaled by a random factor of 0.5 to 2.0 (not one of a list, as SCALES); their bases'
# momentum 0.1 is our EM_MOM 0.9. mmsegmentation's BatchNorm momentum is PyTorch's default and its poly rate changes
# every step; sssegmentation does not say. Each recipe adds its crop, batch (SyncBN across 4 GPUs: every image of the
# batch in each BatchNorm) and schedule
PEERS = dict(AUTHORS, SCALES='random 0.5 to 2.0', LR=1e-2, WEIGHT_DECAY=5e-4, TRAIN_SPLIT='train')
MMSEG_769 = dict(PEERS, CROP_SIZE=769, BATCH_SIZE=8, **{BN_IMAGES: 8}, BN_MOM=0.1, LR_DECAY=1, ITER_MAX=80000,
                 EVAL_WINDOW=769)
MMSEG_512X1024 = dict(MMSEG_769, CROP_SIZE='512×1024', EVAL_WINDOW=None)  # a crop our square CROP_SIZE cannot be
SSSEG = dict(PEERS, BN_MOM=UNKNOWN, LR_DECAY=UNKNOWN)
# a reported result under another protocol than its recipe's own: the protocol's name, the EVAL_* values that differ
MS_FLIP = dict(protocol='MS + flip', EVAL_SCALES=PAPER_SCALES, EVAL_FLIP=True)


def staged(suffix, n_layers, test_miou):
    """The authors' VOC test-server recipe for EMANet-<n_layers>, 'first pretrain on COCO, and then 30k on
    'trainaug', and another 30k on the 'trainval' set' (their README), as three recipes, each stage started from the
    previous one's network; the README gives nothing else of the first two (no schedule for COCO at all)."""
    source = 'XiaLiPKU/EMANet README: "first pretrain on COCO, and then 30k on \'trainaug\', and another 30k on the ' \
             '\'trainval\' set"'
    return {
        f'staged COCO{suffix}': dict(
            dataset='coco_voc', source=source, results=[],
            settings=dict(NOT_PUBLISHED, N_LAYERS=n_layers, PRETRAINED='ImageNet', INIT_FROM=None)),
        f'staged trainaug{suffix}': dict(
            dataset='voc', source=source, results=[],
            settings=dict(NOT_PUBLISHED, N_LAYERS=n_layers, PRETRAINED=None, INIT_FROM=f'staged COCO{suffix}',
                          ITER_MAX=30000, TRAIN_SPLIT='trainaug')),
        f'staged trainval{suffix}': dict(
            dataset='voc', source=source + '; Tab. 2 (OS8, "For test, output stride is set as 8")',
            results=[dict(mIoU=test_miou, split='test')],
            settings=dict(NOT_PUBLISHED, N_LAYERS=n_layers, PRETRAINED=None, INIT_FROM=f'staged trainaug{suffix}',
                          STRIDE=8, EVAL_STRIDE=8, ITER_MAX=30000, TRAIN_SPLIT='trainval')),
    }


# name → dataset (a DATASETS name), settings ({key of RECIPE_KEYS: value or UNKNOWN}), results (the mIoU, in percent,
# it reached on a split, under the recipe's own protocol, or another: its name and the EVAL_* values that differ), and
# the source of all of it. DATASETS.md's recipe tables show them (tests/test_published_recipes.py reads them back).
# Each dataset's are in the order a run is compared with them when it is as close to several: the paper's first
RECIPES = {
    'paper VOC': dict(
        dataset='voc', settings=AUTHORS, source='XiaLiPKU/EMANet settings.py and README Tab. 1',
        results=[dict(mIoU=80.05, split='val'), dict(mIoU=81.32, split='val', **MS_FLIP)]),
    'paper VOC 256': dict(
        dataset='voc', settings=dict(AUTHORS, EMA_CHANNELS=256), source='XiaLiPKU/EMANet README Tab. 1: EMANet (256)',
        results=[dict(mIoU=79.73, split='val'), dict(mIoU=80.94, split='val', **MS_FLIP)]),
    'paper ablation': dict(
        dataset='voc', settings=dict(AUTHORS, N_LAYERS=50, STRIDE=16),
        source='the paper\'s Sec. 6.1 (ResNet-50, trained at output stride 16, evaluated at 8), its Fig. 4 at '
               'T_train = T_eval = 3 as XiaLiPKU/EMANet#37 quotes it',
        results=[dict(mIoU=78.52, split='val')]),
    'released VOC': dict(
        dataset='voc', settings=AUTHORS, source='XiaLiPKU/EMANet#22: the released checkpoint, "80.51 instead of 80.05"',
        results=[dict(mIoU=80.51, split='val')]),
    **staged('', 101, 87.7),
    **staged(' 152', 152, 88.2),
    'authors Cityscapes': dict(
        dataset='cityscapes', source='XiaLiPKU/EMANet README (HEAD f09ffac): "EMANet-101 (OHEM)", single-scale val, '
                                     'multi-scale test server',
        settings=dict(NOT_PUBLISHED, N_LAYERS=101, LOSS='ohem', EVAL_SCALES=(1.0,), EVAL_FLIP=False),
        results=[dict(mIoU=81.14, split='val'),
                 dict(mIoU=81.9, split='test', protocol='multi-scale', EVAL_SCALES=UNKNOWN, EVAL_FLIP=UNKNOWN)]),
    'mmseg R-101 769': dict(
        dataset='cityscapes', settings=MMSEG_769, source='mmsegmentation configs/emanet: 769×769, slide 769/513',
        results=[dict(mIoU=79.62, split='val'), dict(mIoU=81.00, split='val', **MS_FLIP)]),
    'mmseg R-50 769': dict(
        dataset='cityscapes', settings=dict(MMSEG_769, N_LAYERS=50), source='mmsegmentation configs/emanet: 769×769',
        results=[dict(mIoU=79.33, split='val'), dict(mIoU=80.49, split='val', **MS_FLIP)]),
    'mmseg R-101 512x1024': dict(
        dataset='cityscapes', settings=MMSEG_512X1024, source='mmsegmentation configs/emanet: 512×1024, whole image',
        results=[dict(mIoU=79.10, split='val'), dict(mIoU=81.21, split='val', **MS_FLIP)]),
    'mmseg R-50 512x1024': dict(
        dataset='cityscapes', settings=dict(MMSEG_512X1024, N_LAYERS=50),
        source='mmsegmentation configs/emanet: 512×1024, whole image',
        results=[dict(mIoU=77.59, split='val'), dict(mIoU=79.44, split='val', **MS_FLIP)]),
    'sssegmentation R-101': dict(
        dataset='cityscapes', settings=dict(SSSEG, CROP_SIZE='512×1024', BATCH_SIZE=8, **{BN_IMAGES: 8},
                                            ITER_MAX='about 82000'),
        source='sssegmentation model zoo and configs/emanet: 512×1024, batch 8, about 82k iterations (epochs)',
        results=[dict(mIoU=79.54, split='val')]),
    'PaddleSeg R-101': dict(
        dataset='cityscapes', source='PaddleSeg configs/emanet (emanet_resnet101_os8_cityscapes_1024x512_80k.yml, '
                                     '_base_/cityscapes.yml): 1024×512, 80k, 2 images per GPU, whole image',
        settings=dict(NOT_PUBLISHED, N_LAYERS=101, PRETRAINED='ImageNet', INIT_FROM=None, STRIDE=8, EVAL_STRIDE=8,
                      CROP_SIZE='512×1024', SCALES=AUTHORS['SCALES'], LR=1e-2, LR_MOM=0.9, POLY_POWER=0.9,
                      WEIGHT_DECAY=5e-4, ITER_MAX=80000, LOSS='ce', OHEM_THRESH=None, OHEM_MIN_KEPT=None, STAGE_NUM=3,
                      EMA_CHANNELS=512, N_BASES=64, TRAIN_SPLIT='train', EVAL_SCALES=(1.0,), EVAL_FLIP=False,
                      EVAL_WINDOW=None),
        results=[dict(mIoU=80.00, split='val'), dict(mIoU=80.23, split='val', protocol='flip', EVAL_FLIP=True),
                 dict(mIoU=80.53, split='val', protocol='MS + flip', EVAL_SCALES=UNKNOWN, EVAL_FLIP=True)]),
    'sssegmentation R-101 ADE20K': dict(
        dataset='ade20k', source='sssegmentation model zoo and configs/emanet: crop 512, batch 16, 130 epochs',
        settings=dict(SSSEG, CROP_SIZE=512, ITER_MAX='about 164000'),
        results=[dict(mIoU=44.39, split='val')]),
    'sssegmentation R-50 ADE20K': dict(
        dataset='ade20k', source='sssegmentation model zoo and configs/emanet: crop 512, batch 16, 130 epochs',
        settings=dict(SSSEG, N_LAYERS=50, CROP_SIZE=512, ITER_MAX='about 164000'),
        results=[dict(mIoU=41.77, split='val')]),
    'paper COCO-Stuff': dict(
        dataset='cocostuff', source='XiaLiPKU/EMANet#19 ("crop_size 513, max_step 30000, learning rate 9e-3. Almost '
                                    'the same settings with VOC"), #23 (batch 16); 39.9: the paper via aggregators',
        settings=dict(NOT_PUBLISHED, N_LAYERS=101, PRETRAINED='ImageNet', CROP_SIZE=513, BATCH_SIZE=16,
                      **{BN_IMAGES: 16}, LR=9e-3, ITER_MAX=30000),
        results=[dict(mIoU=39.9, split='val')]),
    'paper Context': dict(
        dataset='context', source='the paper via aggregators (59 or 60 classes: unknown)',
        settings=dict(NOT_PUBLISHED, N_LAYERS=101, EVAL_FLIP=True), results=[dict(mIoU=53.1, split='val')]),
    'detectron2 port R-50': dict(
        dataset='coco_panoptic', source='the EMANet detectron2 port (its schedule not restated here)',
        settings=dict(NOT_PUBLISHED, N_LAYERS=50), results=[dict(mIoU=42.71, split='val')]),
}


def fewer(key):
    """Whether a run normalises or batches over fewer images (key) than a recipe that publishes how many."""
    return lambda run, theirs: theirs != UNKNOWN and run[key] < theirs


def from_scratch(run):
    """Whether a run's network (`run_values`) began from random weights: no backbone, and no INIT_FROM or one whose
    network did (a record from before 'from scratch' was kept: no backbone, no INIT_FROM)."""
    return run.get('from scratch', run['PRETRAINED'] is None and not run['INIT_FROM'])


SCRATCH = 'the authors fine-tune an ImageNet backbone (their network.py always loads one); a user who "trained ' \
          'myself from scratch" (not saying from which start) got 40.x mIoU on VOC val where the released ' \
          'weights give 80.x (XiaLiPKU/EMANet#52)'
# what sources measured a deviation to cost: key → (whether the measurement applies: f(the run's values, the
# recipe's value), what it cost, with the source). Training from scratch is named whatever the recipe publishes
COSTS = {
    'PRETRAINED': (lambda run, theirs: from_scratch(run) and theirs is not None, SCRATCH),
    'INIT_FROM': (lambda run, theirs: from_scratch(run) and theirs not in (None, UNKNOWN), SCRATCH),
    'BATCH_SIZE': (fewer('BATCH_SIZE'),
                   'the authors: "Batch size is one of the most factor of segmentation\'s performance. In my '
                   'experiment, the batch size is 16" (XiaLiPKU/EMANet#23)'),
    BN_IMAGES: (fewer(BN_IMAGES),
                'single-GPU runs of the authors\' code, BatchNorm over fewer images: BATCH_SIZE 12 in the ablation '
                'setting reached 76.04 mIoU on VOC val where the paper\'s Fig. 4 has 78.52 (XiaLiPKU/EMANet#37); '
                'batch 3 on COCO-Stuff 34.55 where the paper has 39.9 (XiaLiPKU/EMANet#23)'),
}


def plain_window(window):
    """EVAL_WINDOW as one value means it: a size, (h, w) when they differ, None."""
    if isinstance(window, (tuple, list)):
        return window[0] if window[0] == window[1] else tuple(window)
    return window


def run_values(values, world=1, synced_bn=False, started=None):
    """A run's value of each of RECIPE_KEYS, from its effective settings (values: {name: value}, plain, as
    settings.effective() or a folder's settings.py give them) and its runtime: its processes (world) and whether its
    BatchNorm is synchronised across them (SyncBatchNorm, under torchrun on GPUs). PRETRAINED is 'ImageNet' for a
    file, EVAL_STRIDE the stride at test time; BN_IMAGES is BATCH_SIZE / ACCUM_STEPS with synchronised BatchNorm,
    BATCH_SIZE / world / ACCUM_STEPS without, and 'BatchNorm' says how it arises. started: the record of the run
    whose network INIT_FROM holds (None: none kept, as the authors' files), which 'started from' names
    (`recipe_label`); 'from scratch': whether the network began from random weights, here or in an earlier stage."""
    batch, accum = values['BATCH_SIZE'], values.get('ACCUM_STEPS') or 1
    per_process = world > 1 and not synced_bn
    run = {key: values.get(key) for key in RECIPE_KEYS}
    run.update(PRETRAINED='ImageNet' if values.get('PRETRAINED') else None,
               EVAL_STRIDE=values.get('EVAL_STRIDE') or values.get('STRIDE'),
               SCALES=tuple(float(scale) for scale in values.get('SCALES', ())),
               EVAL_SCALES=tuple(float(scale) for scale in values.get('EVAL_SCALES', ())),
               EVAL_WINDOW=plain_window(values.get('EVAL_WINDOW')))
    run[BN_IMAGES] = batch // (world if per_process else 1) // accum
    run['BatchNorm'] = (f'BATCH_SIZE {batch}' + (f' / {world} processes, BatchNorm per process' if per_process else '')
                        + (f' / ACCUM_STEPS {accum}' if accum > 1 else '')
                        + (f', SyncBatchNorm over {world} processes' if world > 1 and synced_bn else
                           ', one process' if world == 1 else ''))
    if values.get('LOSS') != 'ohem':
        run.update(dict.fromkeys(OHEM_KEYS))
    run['started from'] = recipe_label(started) if run['INIT_FROM'] and started else None
    run['from scratch'] = run['PRETRAINED'] is None and (not run['INIT_FROM'] or bool(started)
                                                         and from_scratch(started['run']))
    return run


def same(ours, theirs):
    """Whether a run's value is a recipe's: a list (JSON's) is the tuple it was, and numbers are equal to float32's
    precision (LR = 0.003 * 3 is 9e-3, and so is a numpy float32 9e-3)."""
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(map(same, ours, theirs))
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (ours, theirs)):
        return math.isclose(ours, theirs, rel_tol=1e-6)
    return ours == theirs


def protocols(name):
    """[(the EVAL_* values of a protocol, the recipe's result under it or None)]: the recipe's own protocol, then each
    result's."""
    recipe = RECIPES[name]
    own = {key: recipe['settings'][key] for key in PROTOCOL_KEYS}
    return [(own, None)] + [(dict(own, **{key: result[key] for key in PROTOCOL_KEYS if key in result}), result)
                            for result in recipe['results']]


def differing(ours, theirs, keys):
    """The keys whose known value in theirs is not ours."""
    return [key for key in keys if theirs[key] != UNKNOWN and not same(ours[key], theirs[key])]


def deviations(run, name):
    """[{'setting', 'run', 'recipe', 'note', 'cost', 'steps'}] of each key where the run (`run_values`) is not the
    recipe: a value the recipe publishes, and one it does not where a source measured what the run's value costs
    (training from scratch, here or in an earlier stage). The test-time keys are compared with the closest of the
    recipe's protocols; INIT_FROM by whether each starts from another network and, where the recipe names the stage it
    starts from, whether the run's started from that stage's recipe in every setting; OHEM_* where both use it.
    note: how the run's value arises; cost: `COSTS`; steps: None, every step (`resumed_record` narrows it)."""
    target = dict(RECIPES[name]['settings'])
    target.update(min((protocol for protocol, _ in protocols(name)),
                      key=lambda protocol: len(differing(run, protocol, PROTOCOL_KEYS))))
    found = []
    for key in (key for key in RECIPE_KEYS if key in run):  # a record from before a key was one says nothing of it
        ours, theirs = run[key], target[key]
        if key in OHEM_KEYS and None in (ours, theirs):
            continue
        applies, cost = COSTS.get(key, (None, None))
        costly = applies is not None and applies(run, theirs)
        note = run['BatchNorm'] if key == BN_IMAGES else None
        if key == 'INIT_FROM':
            started = run.get('started from')
            differs = theirs != UNKNOWN and (bool(ours) != bool(theirs) or theirs is not None and started is not None
                                             and started != theirs)
            note = started and f"a run of '{started}'" + (', itself from random weights' if from_scratch(run) else '')
        else:
            differs = bool(differing(run, target, [key]))
        if differs or costly:
            found.append(dict(setting=key, run=ours, recipe=theirs, note=note, cost=cost if costly else None,
                              steps=None))
    return found


def compare_recipe(values, world=1, synced_bn=False, started=None):
    """The record of a run against its dataset's recipe, {'name': the recipe's or None, 'dataset', 'deviations':
    `deviations`, 'run': `run_values`}: the one RECIPE names, else the closest of DATASET's (fewest deviations, the
    first of equals: the paper's) among the stages of staged recipes for a run with INIT_FROM, among the others for
    any other run; a dataset without any has name None. A RECIPE of no recipe of DATASET is a ValueError naming
    those it has. started: the record of INIT_FROM's run (`run_values`)."""
    run, name = run_values(values, world, synced_bn, started), values.get('RECIPE')
    mine = [recipe for recipe, about in RECIPES.items() if about['dataset'] == values.get('DATASET')]
    if name is not None and name not in mine:
        raise ValueError(f'RECIPE={name!r} is no recipe of DATASET={values.get("DATASET")!r}: '
                         + (f'its recipes are {", ".join(map(repr, mine))}' if mine else 'it has none (RECIPE = None)'))
    # a run that starts from another run's network is a stage of a staged recipe, any other run is none
    alike = [recipe for recipe in mine
             if (RECIPES[recipe]['settings']['INIT_FROM'] not in (None, UNKNOWN)) == bool(run['INIT_FROM'])]
    if name is None and mine:
        name = min(alike or mine, key=lambda recipe: len(deviations(run, recipe)))
    return {'name': name, 'dataset': values.get('DATASET'), 'deviations': deviations(run, name) if name else [],
            'run': run}


def resumed_record(record, earlier, start):
    """The record of a run resumed at step start from a checkpoint whose record is earlier (None: it kept none):
    each deviation of the values it runs with now, its steps [start + 1, None] where the steps before ran with
    another value, then each of earlier's that no step from now on has, its steps ending at start. Every value
    that trained any step stays named, however often the run is resumed with other settings."""
    if earlier is None or record['name'] is None:
        return record
    name = record['name']
    before = earlier['deviations'] if earlier['name'] == name else deviations(earlier['run'], name)
    def match(deviation, others):
        return next((d for d in others if d['setting'] == deviation['setting'] and same(d['run'], deviation['run'])),
                    None)

    kept, ended = [], []
    for deviation in record['deviations']:
        was = match(deviation, before)
        kept.append(dict(deviation, steps=[start + 1, None] if was is None else
                         was.get('steps') and [was['steps'][0], None]))
    for deviation in before:
        if match(deviation, kept) is None:
            first, last = deviation.get('steps') or (1, None)
            ended.append(dict(deviation, steps=[first, start if last is None else last]))
    return dict(record, deviations=kept + ended)


def recipe_label(record):
    """A record's recipe as a results table names it: 'paper VOC', 'paper VOC, 3 differ' (settings), or 'no
    published recipe' (None: the run left no record)."""
    if record is None or record['name'] is None:
        return 'no published recipe' if record else None
    count = len({deviation['setting'] for deviation in record['deviations']})
    return record['name'] + (f', {count} differ' if count > 1 else ', 1 differs' if count else '')


def value_text(value):
    return value if isinstance(value, str) else repr(value)


def result_text(result):
    """'80.05 mIoU val', '81.32 mIoU val, MS + flip'."""
    return f'{result["mIoU"]} mIoU {result["split"]}' + (f', {result["protocol"]}' if 'protocol' in result else '')


def steps_text(steps):
    """A deviation's steps: '' (every step), 'steps 1-2000', 'step 1', 'from step 2001'."""
    if not steps:
        return ''
    first, last = steps
    return f'from step {first}' if last is None else f'step {first}' if first == last else f'steps {first}-{last}'


def deviation_text(deviation):
    """'BATCH_SIZE 12, the recipe's 16: what it cost (its source)'; 'CROP_SIZE 321 (steps 1-2000), the recipe's 513'."""
    about = '; '.join(filter(None, (deviation['note'], steps_text(deviation.get('steps')))))
    return (f'{deviation["setting"]} {value_text(deviation["run"])}' + (f' ({about})' if about else '')
            + f', the recipe\'s {value_text(deviation["recipe"])}'
            + (f': {deviation["cost"]}' if deviation['cost'] else ''))


def recipe_lines(record):
    """What train.py logs before its first step, and settings.txt keeps: one line naming the recipe when the run
    follows it (in every setting it publishes), else that line with the count and one per deviation, then the
    run's values of what the recipe does not publish."""
    name, run = record['name'], record['run']
    if name is None:
        return [f'recipe: DATASET={record["dataset"]!r} has no published recipe to compare with']
    recipe = RECIPES[name]
    about = f'{name!r} ({result_text(recipe["results"][0]) if recipe["results"] else "no number published"}; ' \
            f'{recipe["source"]})'
    shown = {deviation['setting'] for deviation in record['deviations']}
    unpublished = ', '.join(f'{key} {value_text(run[key])}' for key in RECIPE_KEYS if key in run and key not in shown
                            and recipe['settings'][key] == UNKNOWN and not (key in OHEM_KEYS and run[key] is None))
    if not record['deviations']:
        return [f'recipe: follows {about}' + (f' in every setting it publishes; not published: {unpublished}'
                                              if unpublished else '')]
    count = len(shown)
    return ([f'recipe: compared with {about}: {count} setting{"s differ" if count > 1 else " differs"}']
            + [f'recipe:   {deviation_text(deviation)}' for deviation in record['deviations']]
            + ([f'recipe:   not published by its source: {unpublished}'] if unpublished else []))


def recipe_result(name, evaluated, evaluated_on):
    """(whether an evaluation is under one of the recipe's protocols, the recipe's result of that protocol and split
    or None). evaluated: an eval record as evaluation.summary writes it (scales, flip, window, stride, stage_num,
    precision, split), of the DATASET evaluated_on, which must be the recipe's; a value the recipe does not publish
    matches any, the EM iterations must be its STAGE_NUM and the precision float32."""
    if evaluated_on != RECIPES[name]['dataset']:  # a VOC run's checkpoint evaluated on COCO: no VOC number
        return False, None
    measured = {'EVAL_SCALES': tuple(float(scale) for scale in evaluated['scales']), 'EVAL_FLIP': evaluated['flip'],
                'EVAL_WINDOW': plain_window(evaluated['window']), 'EVAL_STRIDE': evaluated['stride']}
    stage_num = RECIPES[name]['settings']['STAGE_NUM']
    if evaluated.get('precision', 'float32') != 'float32' or stage_num not in (UNKNOWN, evaluated.get('stage_num')):
        return False, None
    matching = [result for protocol, result in protocols(name) if not differing(measured, protocol, PROTOCOL_KEYS)]
    return bool(matching), next((r for r in matching if r is not None and r['split'] == evaluated['split']), None)


# ---------------------------------------------------------------- files

@functools.cache  # every label PNG and colour panel uses it; callers copy, never modify it
def voc_palette():
    """The VOC colour map as 768 ints: the bits of a class index spread over R, G, B, high bits first."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        palette += rgb
    return palette


def palette():
    """The current dataset's colours as 768 ints (PIL's palette): its own for its classes, the VOC colour map
    for every other index (IGNORE_LABEL 255 is VOC's cream). Without its background, class k has the colour of
    the stored class k + 1."""
    info = entry() if settings.DATASET in DATASETS else {}
    colours = list(voc_palette())
    if info.get('palette') is not None:
        colours[:3 * len(info['palette'])] = [value for rgb in info['palette'] for value in rgb]
    if drops_background():
        colours[:3 * settings.N_CLASSES] = colours[3:3 * (settings.N_CLASSES + 1)]
    return colours


def class_colours(colours=None):
    """[(r, g, b)] of each of the N_CLASSES classes in colours (768 ints, PIL's palette: the current dataset's,
    `palette`, unless given)."""
    colours = colours or palette()
    return [tuple(colours[3 * k:3 * k + 3]) for k in range(settings.N_CLASSES)]


def colorize(label):
    """H × W class indices -> H × W × 3 uint8 colours of the current dataset."""
    return np.array(palette(), np.uint8).reshape(256, 3)[np.asarray(label, np.uint8)]


def denormalise(img):
    """A 3 × H × W normalised image → H × W × 3 uint8 RGB, for looking at it."""
    mean = torch.tensor(settings.MEAN).view(3, 1, 1)
    std = torch.tensor(settings.STD).view(3, 1, 1)
    return ((img * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)


def save_label_png(label, path, grey=False):
    """Writes H × W class indices as a palette PNG in the current dataset's colours (grey: a plain 8-bit 'L' PNG),
    atomically (write, then rename), making its folder if needed (ids may hold sub-folders)."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    image = Image.fromarray(np.asarray(label, np.uint8))
    if not grey:
        image.putpalette(palette())
    image.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def data_root_or_default(data_root):
    return settings.DATA_ROOT if data_root is None else data_root


def image_path(image_id, data_root=None):
    if current()['image'] is None:  # your own data: where its images are
        return folder_image(image_id, data_root)[0]
    return os.path.join(data_root_or_default(data_root), current()['image'].format(image_id))


def folder_image(image_id, data_root=None):
    """(image file, upright) of an id of a 'folder' DATA_ROOT."""
    images = folder_images(data_root_or_default(data_root))
    if image_id not in images:
        raise FileNotFoundError(f'{folder_file("images", data_root)} has no image for the id {image_id}')
    return images[image_id]


def sample_image(image_id, data_root=None):
    """The RGB PIL image of an id as the dataset reads it: a benchmark's as stored (read_image), your own
    data's as a viewer shows it (read_photo), or as stored where prepare.py found its mask at the stored size."""
    if current()['image'] is None:
        path, upright = folder_image(image_id, data_root)
        return read_photo(path, upright)
    return read_image(image_path(image_id, data_root))


def sample_size(image_id, data_root=None):
    """(W, H) of `sample_image` from the file's header alone."""
    path = image_path(image_id, data_root)
    with open_image(path, 'image', decode=False) as image:
        width, height = image.size
        upright = current()['image'] is None and folder_image(image_id, data_root)[1]
        turned = upright and image.getexif().get(EXIF_ORIENTATION) in TURNING_ORIENTATIONS
    return (height, width) if turned else (width, height)


def label_path(image_id, data_root=None):
    return os.path.join(data_root_or_default(data_root), current()['label'].format(image_id))


def list_path(split, data_root=None):
    return os.path.join(data_root_or_default(data_root), current()['list'].format(split))


def read_list(path):
    """The ids of a list file, one per line (VOC's and SBD's lists, and ours)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_ids(split, data_root=None):
    return read_list(list_path(split, data_root))


def write_lists(lists, data_root):
    """Writes the list of each split -> ids of lists."""
    for split, ids in lists.items():
        os.makedirs(os.path.dirname(list_path(split, data_root)), exist_ok=True)
        with open(list_path(split, data_root), 'w') as f:
            f.write(''.join(image_id + '\n' for image_id in ids))


EXIF_ORIENTATION = 0x0112  # the EXIF tag of the camera's orientation
TURNING_ORIENTATIONS = (5, 6, 7, 8)  # the orientations that turn the image by 90°: shown W × H is stored H × W


def open_image(path, kind, decode=True):
    """The decoded PIL image at path (decode=False: its header only); errors name the file (kind says what it
    should be)."""
    try:
        image = Image.open(path)
        if decode:
            image.load()
    except FileNotFoundError:
        raise FileNotFoundError(f'missing {kind}: {path}') from None
    # PIL reports broken files as OSError, SyntaxError (PNG chunks) or ValueError
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f'unreadable {kind} {path}: {error}') from None
    return image


def read_image(path):
    """The RGB PIL image at path."""
    image = open_image(path, 'image')
    return image if image.mode == 'RGB' else image.convert('RGB')


def read_photo(source, upright=True):
    """The RGB PIL image of a photo as an image viewer shows it, whichever form it comes in: a path (the user's own
    files; the datasets' images are read as stored, by read_image; a file object too), a PIL image (one opened
    from a file shows as that file does) or a numpy array (`array_image`); anything else (a torch tensor) is a
    TypeError saying what is accepted. EXIF orientation applied (unless not upright), so a phone's
    portrait photo is upright at its shown size; transparent pixels (an alpha channel, or the transparent value or
    colour of a grayscale, RGB or palette image, 16-bit ones included) composited on the MEAN colour, what the
    network sees as "no content" (the colour of its padding: 0 after normalising); palette, CMYK and other modes
    converted to RGB. A grayscale mode of more than 8 bits is read by its values (`eight_bit`). Anything else
    (values of no known range, NaN, a mode without an RGB conversion) is an error naming the file: no guess is
    shown as if it were the image."""
    if isinstance(source, Image.Image):
        return shown_rgb(source, upright, 'the PIL image')
    if isinstance(source, np.ndarray):
        return shown_rgb(array_image(source), upright, f'the {source.dtype} array')
    if not isinstance(source, (str, bytes, os.PathLike)) and not hasattr(source, 'read'):  # read: a file object
        named = (f'a torch.Tensor of shape {tuple(source.shape)}' if isinstance(source, torch.Tensor) else
                 'None' if source is None else f'a {type(source).__name__}')
        raise TypeError(f'{named} is no image: give a path, a PIL image or a numpy array (H × W × 3 uint8 RGB, '
                        f'H × W grey); of a C × H × W tensor of floats in 0..1, tensor.permute(1, 2, 0).numpy()')
    with open_image(source, 'image') as stored:
        return shown_rgb(stored, upright, f'image {source}')


def shown_rgb(image, upright, name):
    """read_photo of a PIL image; errors name it as name says."""
    image = ImageOps.exif_transpose(image) if upright else image.copy()
    if image.mode in ('I', 'F') or image.mode.startswith('I;16'):
        values = np.asarray(image, np.float64)  # H × W, the file's own values
        grey = Image.fromarray(eight_bit(values, 'I;16' if image.mode.startswith('I;16') else image.mode, name))
        transparent = image.info.get('transparency')  # a grey level in the file's values (PNG's tRNS)
        image = grey if transparent is None else \
            Image.merge('LA', (grey, Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))))
    try:
        if image.has_transparency_data:
            image = image.convert('RGBA')  # Pillow applies an L, RGB or palette image's 'transparency' here
            background = Image.new('RGB', image.size, tuple(round(255 * m) for m in settings.MEAN))
            background.paste(image, mask=image.getchannel('A'))
            return background
        return image.convert('RGB')
    except ValueError as error:  # a mode Pillow opens but cannot convert
        raise ValueError(f'{name} cannot be shown in RGB ({image.mode}: {error})') from None


def eight_bit(values, mode, name):
    """Uint8 0..255 of an image's own values (an array of any shape) by what their range says they are: 'I;16'
    (16-bit) 0..65535 ÷ 257; 'I' (integers) as 8-bit when all lie in 0..255, as 16-bit when in 0..65535; 'F'
    (floats) × 255 when all lie in [0, 1], as they are in [0, 255]. Any other range (NaN too) is an error naming
    the image as name says."""
    low, high = values.min(), values.max()
    if mode == 'F':
        scale = 255 if low >= 0 and high <= 1 else 1 if low >= 0 and high <= 255 else None
    elif mode == 'I' and low >= 0 and high <= 255:
        scale = 1
    else:
        scale = 1 / 257 if low >= 0 and high <= 65535 else None
    if scale is None:  # NaN too: every comparison with it is false
        raise ValueError(f'{name} has {mode} values {low:g}..{high:g}: neither 0..255 or 0..65535 (integers) nor '
                         f'0..1 or 0..255 (floats), so how it looks is unknown')
    return np.round(values * scale).astype(np.uint8)


ARRAY_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}  # channels of an array → the PIL mode of its 8-bit image


def array_image(array):
    """The PIL image read_photo shows of a numpy array: H × W (grey), H × W × 3 (RGB) or H × W × 4 (RGBA) of uint8,
    bool (0 black, 1 white), uint16 (16-bit, as a 16-bit PNG reads), other integers or floats (by their range, as
    a file of 32-bit integers or floats reads: `eight_bit`); any other shape or type is an error saying what is
    accepted."""
    channels = {2: 1, 3: array.shape[-1]}.get(array.ndim)
    if channels not in ARRAY_MODES or not array.size or array.dtype.kind not in 'buif':
        raise ValueError(f'an array of shape {array.shape} and dtype {array.dtype} is no image: give H × W × 3 '
                         f'(RGB), H × W × 4 (RGBA) or H × W (grey) of uint8, bool, uint16 (÷ 257), other integers '
                         f'(0..255 or 0..65535) or floats (0..1 or 0..255)')
    if array.dtype == np.uint8:
        values = array
    elif array.dtype == bool:
        values = array.astype(np.uint8) * 255
    else:
        mode = 'F' if array.dtype.kind == 'f' else 'I;16' if array.dtype == np.uint16 else 'I'
        values = eight_bit(np.asarray(array, np.float64), mode, f'the {array.dtype} array')
    return Image.fromarray(np.ascontiguousarray(values.reshape(array.shape[:2]) if channels == 1 else values))


def read_label(path):
    """H × W uint8 class indices of a single-channel ('L' or palette 'P') PNG; errors name the file."""
    image = open_image(path, 'label')
    if image.mode not in ('L', 'P'):
        raise ValueError(f'label {path} has mode {image.mode}, not a single-channel L or P image')
    return np.array(image)


def check_label(label, image_size, path):
    """Raises ValueError naming path if the label does not match the image's (W, H) or has a bad value (as
    stored: with an optional background that N_CLASSES leaves out, the file has one class more)."""
    width, height = image_size
    if label.shape != (height, width):
        raise ValueError(f'label {path} is {label.shape[1]}×{label.shape[0]} but its image is {width}×{height}')
    n_classes = settings.N_CLASSES + drops_background()
    bad = label[(label >= n_classes) & (label != settings.IGNORE_LABEL)]
    if bad.size:
        raise ValueError(f'label {path} has values {np.unique(bad).tolist()}, outside [0, {n_classes}) '
                         f'and not IGNORE_LABEL {settings.IGNORE_LABEL}')


def without_background(label):
    """A stored label as N_CLASSES without the background reads it: 0 → IGNORE_LABEL, k → k - 1."""
    lut = np.arange(256) - 1
    lut[[0, settings.IGNORE_LABEL]] = settings.IGNORE_LABEL
    return lut.astype(np.uint8)[label]


def load_sample(image_id, data_root=None):
    """(RGB PIL image, H × W uint8 label) of an id, checked, in the classes N_CLASSES trains."""
    image = sample_image(image_id, data_root)
    path = label_path(image_id, data_root)
    label = read_label(path)
    check_label(label, image.size, path)
    return image, without_background(label) if drops_background() else label


def open_split(data_root, split, setting):
    """(data_root, ids) of a split; None means settings.DATA_ROOT and settings.<setting>; errors name the setting."""
    data_root = data_root_or_default(data_root)
    split = getattr(settings, setting) if split is None else split
    if not os.path.isdir(data_root):
        raise FileNotFoundError(f'DATA_ROOT is not a folder: {data_root}')
    path = list_path(split, data_root)
    if not os.path.isfile(path):
        hint, written = '', 'train' if setting == 'TRAIN_SPLIT' else 'val'  # the splits prepare.py folder writes
        if settings.DATASET == 'folder' and os.path.isdir(os.path.join(data_root, PREPARE_NEW)):  # swap_in's
            hint = f'; a `prepare.py folder` run stopped while it replaced the dataset in {data_root}: run it again'
        elif settings.DATASET == 'folder' and split != written:  # settings.py still says VOC's trainaug
            hint = (f"; DATASET 'folder' has the splits train and val: add the line {setting} = {written!r} to "
                    f"settings.py")
        elif settings.DATASET == 'folder':
            hint = f'; `prepare.py folder ... --out {data_root}` writes it'
        raise FileNotFoundError(f'{setting} = {split!r} has no list file: {path}{hint}')
    ids = read_ids(split, data_root)
    if not ids:
        raise ValueError(f'{setting} = {split!r} lists no ids: {path}')
    return data_root, ids


# ---------------------------------------------------------------- samples

def to_tensors(image, label, height, width):
    """(3 × height × width float32, height × width int64) of an h × w sample (PIL or array): normalised with MEAN
    and STD on [0, 1] RGB, padded bottom/right with 0 (the mean colour) and IGNORE_LABEL."""
    image, label = np.asarray(image), np.asarray(label)  # h × w × 3 uint8, h × w uint8
    h, w = label.shape
    padded_label = torch.full((height, width), settings.IGNORE_LABEL, dtype=torch.int64)
    padded_label.numpy()[:h, :w] = label
    mean = np.array(settings.MEAN, np.float32)[:, None, None]  # 3 × 1 × 1
    std = np.array(settings.STD, np.float32)[:, None, None]
    padded_image = torch.zeros(3, height, width)
    content = padded_image.numpy()[:, :h, :w]  # 3 × h × w view
    # one pass converts, transposes and scales straight into the output, a second subtracts the mean
    np.multiply(image.transpose(2, 0, 1), 1 / (255 * std), out=content)
    content -= mean / std
    return padded_image, padded_label


def image_tensor(image):
    """1 × 3 × H' × W' of a PIL RGB image, normalised and padded as ValDataset pads (H' = stride_size(H))."""
    width, height = image.size
    no_label = np.zeros((height, width), np.uint8)  # to_tensors pads a label as well; there is none
    img, _ = to_tensors(image, no_label, stride_size(height), stride_size(width))
    return img[None]


def linear_taps(start, count, size, scaled):
    """(first, second, weight of second) source rows of output rows start..start+count-1 of a size → scaled
    F.interpolate(mode='bilinear', align_corners=True), in float32 as torch's CPU kernel computes them: source
    coordinate r·(size − 1)/(scaled − 1) (0 when scaled == 1), both rows clamped to the last."""
    step = np.float32(size - 1) / np.float32(scaled - 1) if scaled > 1 else np.float32(0)
    source = np.arange(start, start + count, dtype=np.float32) * step
    first = np.minimum(source.astype(np.int64), size - 1)
    return first, np.minimum(first + 1, size - 1), np.clip(source - first, 0, 1).astype(np.float32)


def nearest_taps(start, count, size, scaled, scale, vectorised):
    """Source rows of output rows start..start+count-1 of a size → scaled F.interpolate(scale_factor=scale,
    mode='nearest') on CPU: floor(r · float32(1/scale)) in float32, clamped to the last row. torch's vectorised
    kernel (which it runs for a 1-channel input only when the output's height + width ≤ 128) differs in two
    cases it treats apart: r itself when scaled == size, r // 2 when scaled == 2·size."""
    rows = np.arange(start, start + count)
    if vectorised and scaled == size:
        return rows
    if vectorised and scaled == 2 * size:
        return rows // 2
    return np.minimum((rows.astype(np.float32) * np.float32(1 / scale)).astype(np.int64), size - 1)


def blend_rows(table, indices, weights, taps):
    """Row b of the result is Σ weights · table[indices] over the next taps[b] entries of indices and weights (all
    three in bag order), 0 where taps[b] is 0: F.embedding_bag, which gathers and blends rows in one pass."""
    offsets = np.cumsum(taps) - taps
    return F.embedding_bag(torch.from_numpy(indices.reshape(-1)), table, torch.from_numpy(offsets), mode='sum',
                           per_sample_weights=torch.from_numpy(weights.reshape(-1)))


def bilinear_window(image, rows, cols, first_col):
    """Gather and blend: the CROP_SIZE² window of the normalised image rescaled with F.interpolate(mode='bilinear',
    align_corners=True), from only the source pixels it reads.

    image: PIL RGB, H × W; rows, cols: linear_taps of the rescaled rows and columns the window shows, in the
    output's order (y0, y1, wy: first and second source row, weight of the second, from the source coordinate
    r·(H − 1)/(H·s − 1) in float32 as torch's CPU kernel computes it; alike for columns)
    → 3 × CROP × CROP float32,
        out[c, i, first_col + j] = Σ a · b · (image[y, x, c] / 255 − MEAN[c]) / STD[c]
    over the taps (y, a) of row i, (y0, 1 − wy) and (y1, wy), and the taps (x, b) of column j; 0 elsewhere (the
    padding: the mean colour). Bilinear is separable: columns first, over whole rows of the transposed image, then
    rows; each pass gathers and blends rows of a table with F.embedding_bag (blend_rows)."""
    crop = settings.CROP_SIZE
    (y0, y1, wy), (x0, x1, wx) = rows, cols
    n_rows, n_cols = len(y0), len(x0)
    content = slice(first_col, first_col + n_cols)  # the output columns that show the image
    # columns: source column x is row x of the transposed image (PIL transposes fast), with the h source rows the
    # window reads
    by_column = np.asarray(image.transpose(Image.Transpose.TRANSPOSE))[:, y0[0]:y1[-1] + 1]  # W × h × 3 uint8
    width, h, _ = by_column.shape
    taps = np.zeros(crop, np.int64)
    taps[content] = 2
    columns = blend_rows(torch.from_numpy(by_column.reshape(width, h * 3).astype(np.float32)),
                         np.stack([x0, x1], 1), np.stack([1 - wx, wx], 1), taps)  # crop × h·3, 0 on padding
    # normalised, as a table whose row 3·y + c is channel c of source row y0[0] + y along the output's columns: the
    # mean subtracted here on the content's columns (padding stays 0), the division by 255·STD in the rows' weights
    table = np.zeros((h, 3, crop), np.float32)
    np.subtract(columns.numpy().T.reshape(h, 3, crop)[:, :, content], 255 * np.float32(settings.MEAN)[:, None],
                out=table[:, :, content])
    # rows: output row c·crop + i blends rows 3·y + c of the table, y its two taps
    indices = 3 * (np.stack([y0, y1], 1) - y0[0]) + np.arange(3)[:, None, None]  # 3 × n_rows × 2
    weights = np.stack([1 - wy, wy], 1) / (255 * np.float32(settings.STD))[:, None, None]  # 3 × n_rows × 2
    taps = np.zeros((3, crop), np.int64)
    taps[:, :n_rows] = 2
    image = blend_rows(torch.from_numpy(table.reshape(h * 3, crop)), indices, weights, taps.reshape(-1))
    return image.view(3, crop, crop)


def augment(image, label, rng):
    """The authors' training augmentation of (PIL RGB image, H × W uint8 label), randomness from rng
    → (3 × CROP × CROP float32 image, CROP × CROP int64 label).

    What it computes, sample for sample (tests check it against benchmark.authors_augment, the op written
    literally: the image to float rounding, the label exactly): the image normalised ((x/255 − MEAN)/STD) and
    rescaled by s from SCALES with F.interpolate(scale_factor=s, mode='bilinear', align_corners=True) to
    floor(H·s) × floor(W·s), the label by mode='nearest'; both padded bottom/right to CROP_SIZE (image 0, label
    IGNORE_LABEL), cropped to CROP_SIZE² at (top, left), mirrored left-right if flip. How: only the window, from
    only the source pixels it reads (bilinear_window; the label takes the rows and columns torch's nearest kernel
    would, nearest_taps).
    """
    crop = settings.CROP_SIZE
    # the draw, in this order (authors_augment draws alike): the scale; the window's top-left corner, uniform over
    # every valid position in the rescaled sample padded to at least crop × crop; the flip
    scale = settings.SCALES[rng.integers(len(settings.SCALES))]
    width, height = image.size
    scaled_h, scaled_w = int(height * scale), int(width * scale)
    top = int(rng.integers(max(scaled_h - crop, 0) + 1))
    left = int(rng.integers(max(scaled_w - crop, 0) + 1))
    flip = rng.random() < 0.5

    # the window's geometry: out_h × out_w rescaled pixels from (top, left); padding fills the rest of crop × crop,
    # the bottom rows and the right columns (the left ones once mirrored)
    out_h, out_w = min(crop, scaled_h), min(crop, scaled_w)
    first_col = crop - out_w if flip else 0  # output column of the content's first column
    order = slice(None, None, -1 if flip else 1)  # the content's columns left to right as the output shows them
    rows = linear_taps(top, out_h, height, scaled_h)  # 3 arrays of out_h: first, second source row, weight
    cols = [taps[order] for taps in linear_taps(left, out_w, width, scaled_w)]  # 3 arrays of out_w
    vectorised = scaled_h + scaled_w <= 128  # torch's choice of nearest kernel for the 1 × 1 × H × W label
    label_rows = nearest_taps(top, out_h, height, scaled_h, scale, vectorised)  # out_h
    label_cols = nearest_taps(left, out_w, width, scaled_w, scale, vectorised)[order]  # out_w

    # the sample: a change to the source's colours goes on the PIL image before this, one to the output after it
    image = bilinear_window(image, rows, cols, first_col)  # 3 × crop × crop, padding 0
    # the label: columns first over the rows it reads, then rows (whole rows: cheap to gather)
    window = np.full((crop, crop), settings.IGNORE_LABEL, np.uint8)
    window[:out_h, first_col:first_col + out_w] = (label[label_rows[0]:label_rows[-1] + 1].take(label_cols, 1)
                                                   .take(label_rows - label_rows[0], 0))
    return image, torch.from_numpy(window).long()


def output_stride():
    """The output stride at test time: EVAL_STRIDE, else STRIDE."""
    return settings.EVAL_STRIDE or settings.STRIDE


def stride_size(size):
    """The smallest k·stride + 1 ≥ size, stride the output stride at test time: the input sizes whose features
    align with the output stride (the authors' pad_inf)."""
    stride = output_stride()
    return -(-(size - 1) // stride) * stride + 1


class TrainDataset(torch.utils.data.Dataset):
    """Augmented training samples of a split: (3 × CROP × CROP float32 image, CROP × CROP int64 label).

    dataset[index] draws fresh randomness; dataset[(index, seed)] takes all augmentation randomness from
    numpy.random.default_rng(seed), so a (index, seed) pair gives the same sample in any process. The training
    loop's sampler hands out such pairs, seeded from SEED, the step and the rank: augmentations differ between
    processes and workers, and a run is reproducible whatever NUM_WORKERS is.
    """

    def __init__(self, data_root=None, split=None):
        self.data_root, self.ids = open_split(data_root, split, 'TRAIN_SPLIT')

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        image, label = load_sample(self.ids[index], self.data_root)
        return augment(image, label, np.random.default_rng(seed))


class ValDataset(torch.utils.data.Dataset):
    """Whole validation samples: (3 × H' × W' float32 image, H' × W' int64 label), padded bottom/right with 0 and
    IGNORE_LABEL to H' = stride_size(H), W' = stride_size(W). The TEST_SPLIT has images only: its labels are
    IGNORE_LABEL everywhere, so evaluation predicts (eval.py --submit) and scores nothing."""

    def __init__(self, data_root=None, split=None):
        self.data_root, self.ids = open_split(data_root, split, 'VAL_SPLIT')
        self.labelled = has_labels(settings.VAL_SPLIT if split is None else split)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        if self.labelled:
            image, label = load_sample(self.ids[index], self.data_root)
        else:
            image = sample_image(self.ids[index], self.data_root)
            label = np.full((image.height, image.width), settings.IGNORE_LABEL, np.uint8)
        height, width = label.shape
        return to_tensors(image, label, stride_size(height), stride_size(width))


# ---------------------------------------------------------------- check

def check_sample(job):
    """(problems, (W, H), pixels) of one id: every problem of its image and, if it is labelled, its label, as
    messages naming the file; the image's size (None if it does not read); its label's pixel count of each class
    N_CLASSES trains (None if unlabelled or bad). job = (image_id, labelled, data_root)."""
    image_id, labelled, data_root = job
    problems, image, label, pixels = [], None, None, None
    path = label_path(image_id, data_root)
    try:
        image = sample_image(image_id, data_root)
    except (FileNotFoundError, ValueError) as error:
        problems.append(str(error))
    try:
        label = read_label(path) if labelled else None
    except (FileNotFoundError, ValueError) as error:
        problems.append(str(error))
    if image is not None and label is not None:
        try:
            check_label(label, image.size, path)
            label = without_background(label) if drops_background() else label
            pixels = np.bincount(label.ravel(), minlength=256)[:settings.N_CLASSES]
        except ValueError as error:
            problems.append(str(error))
    return problems, None if image is None else image.size, pixels


def worker_pool():
    """A multiprocessing.Pool whose workers hold this process's settings, however they start: under forkserver
    (Python 3.14's default on Linux) or spawn (macOS) a worker imports settings.py afresh and would miss what this
    process set since (prepare.py's dataset switch: its labels would be checked against VOC's classes)."""
    return multiprocessing.Pool(initializer=settings.assign, initargs=(settings.effective(),))


CHECK_ROWS = 24  # classes in check's table: all up to this many, else the most and the least frequent halves


def check():
    """Verifies DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT; logs counts, every problem, a table of each split's
    images, sizes and class shares (`split_table`) and a warning for each class that training never sees;
    returns the problems (the warnings are none)."""
    problems, splits, labelled = [], {}, {}  # splits: setting → ids; labelled: id → whether a labelled split lists it
    for setting in ('TRAIN_SPLIT', 'VAL_SPLIT'):
        try:
            _, split_ids = open_split(None, None, setting)
        except (FileNotFoundError, ValueError) as error:
            if str(error) not in problems:  # a missing DATA_ROOT is one problem, not one per split
                problems.append(str(error))
            continue
        settings.logger.info('check: %s = %r: %d ids', setting, getattr(settings, setting), len(split_ids))
        splits[setting] = split_ids
        for image_id in split_ids:
            labelled[image_id] = labelled.get(image_id, False) or has_labels(getattr(settings, setting))
    ids = sorted(labelled)  # in id order
    jobs = [(image_id, labelled[image_id], settings.DATA_ROOT) for image_id in ids]
    tic, samples = time.time(), {}
    with worker_pool() as pool:
        for done, (image_id, (found, size, pixels)) in enumerate(zip(ids, pool.imap(check_sample, jobs, chunksize=16)), 1):
            problems += found
            samples[image_id] = size, pixels
            settings.log_progress('check: images', done, len(jobs), tic)
    for problem in problems:
        settings.logger.error('check: %s', problem)
    settings.logger.info('check: %d images, %d problems in %s', len(jobs), len(problems), settings.DATA_ROOT)
    if splits:
        stats = {setting: split_stats([samples[image_id] for image_id in split_ids])
                 for setting, split_ids in splits.items()}
        settings.logger.info('check: %s\n%s', settings.DATA_ROOT, split_table(stats))
        for warning in class_warnings(stats):
            settings.logger.warning('check: %s', warning)
    return problems


def split_stats(samples):
    """{'images', 'sizes': (W, H) of each image that reads, 'pixels': per class (None for a split without labels),
    'images_with': per class} of a split's samples ((W, H) or None, pixels per class or None)."""
    labels = np.array([pixels for _, pixels in samples if pixels is not None]).reshape(-1, settings.N_CLASSES)
    return {'images': len(samples), 'sizes': [size for size, _ in samples if size is not None],
            'pixels': labels.sum(0) if len(labels) else None, 'images_with': (labels > 0).sum(0),
            'labelled': len(labels)}


def size_range(sizes):
    """'W × H' when every image has it, else 'Wmin..Wmax × Hmin..Hmax'."""
    if not sizes:
        return '-'
    low, high = np.min(sizes, 0), np.max(sizes, 0)
    return ' × '.join(f'{a}' if a == b else f'{a}..{b}' for a, b in zip(low, high))


def split_table(stats):
    """The splits (setting → split_stats) as a table to read and paste: a row per split (images, the range of
    sizes), then a row per class with its share of each split's labelled pixels and of its images; with more
    than CHECK_ROWS classes, the CHECK_ROWS/2 most and least frequent in the first split with labels."""
    names = current()['classes']
    rows = [('split', 'setting', 'images', 'sizes (W × H)')]
    rows += [(getattr(settings, setting), setting, str(s['images']), size_range(s['sizes'])) for setting, s in stats.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    scored = [(setting, s) for setting, s in stats.items() if s['pixels'] is not None]
    if not scored:
        return '\n'.join(lines)
    order = np.argsort(-scored[0][1]['pixels'], kind='stable')  # most frequent first in the first labelled split
    shown = list(order) if len(names) <= CHECK_ROWS else [*order[:CHECK_ROWS // 2], None, *order[-CHECK_ROWS // 2:]]
    name_width = max(len('class'), *(len(name) for name in names)) + 5
    lines.append('')
    lines.append('class'.ljust(name_width) + ''.join(f'{getattr(settings, setting) + " px":>12}{"images":>8}'
                                                     for setting, _ in scored))
    for k in shown:
        if k is None:
            lines.append(f'... {len(names) - CHECK_ROWS} classes between')
            continue
        cells = ''
        for _, s in scored:
            pixels, images = s['pixels'][k] / max(1, s['pixels'].sum()), s['images_with'][k] / max(1, s['labelled'])
            cells += f'{100 * pixels:11.2f}%{100 * images:7.1f}%'
        lines.append(f'{k:>3} {names[k]}'.ljust(name_width) + cells)
    lines.append('(px: share of the split\'s labelled pixels; images: share of its images that hold the class)')
    return '\n'.join(lines)


def class_warnings(stats):
    """Warnings naming the classes that no training label has: those validation scores but training cannot
    teach, then the others."""
    train, val = stats.get('TRAIN_SPLIT'), stats.get('VAL_SPLIT')
    if train is None or train['pixels'] is None:
        return []
    in_val = val['images_with'] > 0 if val is not None and val['pixels'] is not None else np.zeros_like(train['pixels'], bool)
    names = current()['classes']
    absent = train['pixels'] == 0
    warnings = []
    for chosen, what in ((absent & in_val, f'are in VAL_SPLIT = {settings.VAL_SPLIT!r} but in no label of '
                                           f'TRAIN_SPLIT = {settings.TRAIN_SPLIT!r}: scored, never learnt'),
                         (absent & ~in_val, f'are in no label of TRAIN_SPLIT = {settings.TRAIN_SPLIT!r}')):
        if chosen.any():
            listed = ', '.join(f'{k} {names[k]!r}' for k in np.flatnonzero(chosen))
            warnings.append(f'{chosen.sum()} classes {what}: {listed}')
    return warnings
