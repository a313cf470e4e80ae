"""The datasets beyond VOC: prepare.py on miniatures of each official download (its real folders, file names and
formats, made-up content), the written labels value by value against mappings written out here by hand, the lists,
the errors; then Cityscapes and PASCAL Context (59 classes) trained and evaluated through the scripts."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import dataset
import prepare
import settings
from harness import ROOT, make_experiment, run_script

HEIGHT, WIDTH = 40, 60

# Cityscapes: every label of cityscapesScripts' table (mcordts/cityscapesScripts, cityscapesscripts/helpers/labels.py),
# (name, id, trainId, colour); trainId 255 is not evaluated, license plate's id -1 is in no labelIds image
CITYSCAPES_LABELS = (
    ('unlabeled', 0, 255, (0, 0, 0)), ('ego vehicle', 1, 255, (0, 0, 0)), ('rectification border', 2, 255, (0, 0, 0)),
    ('out of roi', 3, 255, (0, 0, 0)), ('static', 4, 255, (0, 0, 0)), ('dynamic', 5, 255, (111, 74, 0)),
    ('ground', 6, 255, (81, 0, 81)), ('road', 7, 0, (128, 64, 128)), ('sidewalk', 8, 1, (244, 35, 232)),
    ('parking', 9, 255, (250, 170, 160)), ('rail track', 10, 255, (230, 150, 140)), ('building', 11, 2, (70, 70, 70)),
    ('wall', 12, 3, (102, 102, 156)), ('fence', 13, 4, (190, 153, 153)), ('guard rail', 14, 255, (180, 165, 180)),
    ('bridge', 15, 255, (150, 100, 100)), ('tunnel', 16, 255, (150, 120, 90)), ('pole', 17, 5, (153, 153, 153)),
    ('polegroup', 18, 255, (153, 153, 153)), ('traffic light', 19, 6, (250, 170, 30)),
    ('traffic sign', 20, 7, (220, 220, 0)), ('vegetation', 21, 8, (107, 142, 35)), ('terrain', 22, 9, (152, 251, 152)),
    ('sky', 23, 10, (70, 130, 180)), ('person', 24, 11, (220, 20, 60)), ('rider', 25, 12, (255, 0, 0)),
    ('car', 26, 13, (0, 0, 142)), ('truck', 27, 14, (0, 0, 70)), ('bus', 28, 15, (0, 60, 100)),
    ('caravan', 29, 255, (0, 0, 90)), ('trailer', 30, 255, (0, 0, 110)), ('train', 31, 16, (0, 80, 100)),
    ('motorcycle', 32, 17, (0, 0, 230)), ('bicycle', 33, 18, (119, 11, 32)), ('license plate', -1, -1, (0, 0, 142)),
)
# labelId → trainId of every id a labelIds PNG holds: the table's 34, and 34 (no label) and 255 ignored too
CITYSCAPES_TRAIN_IDS = {**{i: (255 if t < 0 else t) for _, i, t, _ in CITYSCAPES_LABELS if i >= 0}, 34: 255, 255: 255}
CITYSCAPES_NAMES = [name for name, _, train_id, _ in CITYSCAPES_LABELS if 0 <= train_id < 255]

# ADE20K: the 150 classes' names, the first synonym of each line of objectInfo150.txt (CSAILVision/sceneparsing),
# line k the annotation value k, and their colours, visualizationCode/color150.mat there (RRGGBB)
ADE20K_NAMES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
    'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path',
    'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase',
    'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm',
    'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus', 'towel', 'light',
    'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television', 'airplane', 'dirt track',
    'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van',
    'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool', 'stool', 'barrel',
    'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture',
    'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen', 'plate', 'monitor',
    'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag'
)
ADE20K_COLOURS = '''
787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846
08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc
ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14
ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff
ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00
008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014
ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900
00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070
5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff
ff007a fff500 0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff
4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
'''.split()
# COCO-Stuff: nightrome/cocostuff labels.txt, the name of each id 0..182 (0 unlabeled)
COCOSTUFF_LABELS = (
    'unlabeled', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'street sign', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'hat', 'backpack', 'umbrella', 'shoe',
    'eye glasses', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle', 'plate', 'wine glass',
    'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed', 'mirror', 'dining table',
    'window', 'desk', 'toilet', 'door', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave',
    'oven', 'toaster', 'sink', 'refrigerator', 'blender', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush', 'hair brush', 'banner', 'blanket', 'branch', 'bridge', 'building-other', 'bush',
    'cabinet', 'cage', 'cardboard', 'carpet', 'ceiling-other', 'ceiling-tile', 'cloth', 'clothes', 'clouds',
    'counter', 'cupboard', 'curtain', 'desk-stuff', 'dirt', 'door-stuff', 'fence', 'floor-marble', 'floor-other',
    'floor-stone', 'floor-tile', 'floor-wood', 'flower', 'fog', 'food-other', 'fruit', 'furniture-other', 'grass',
    'gravel', 'ground-other', 'hill', 'house', 'leaves', 'light', 'mat', 'metal', 'mirror-stuff', 'moss',
    'mountain', 'mud', 'napkin', 'net', 'paper', 'pavement', 'pillow', 'plant-other', 'plastic', 'platform',
    'playingfield', 'railing', 'railroad', 'river', 'road', 'rock', 'roof', 'rug', 'salad', 'sand', 'sea', 'shelf',
    'sky-other', 'skyscraper', 'snow', 'solid-other', 'stairs', 'stone', 'straw', 'structural-other', 'table',
    'tent', 'textile-other', 'towel', 'tree', 'vegetable', 'wall-brick', 'wall-concrete', 'wall-other',
    'wall-panel', 'wall-stone', 'wall-tile', 'wall-wood', 'water-other', 'waterdrops', 'window-blind',
    'window-other', 'wood'
)
# COCO 2017: the ids of the 80 thing categories and the 53 stuff categories of the panoptic JSON, in its order
# (cocodataset/panopticapi, panoptic_coco_categories.json: isthing 1, then isthing 0)
COCO_THING_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90
)
PANOPTIC_STUFF = {
    92: 'banner', 93: 'blanket', 95: 'bridge', 100: 'cardboard', 107: 'counter', 109: 'curtain', 112: 'door-stuff',
    118: 'floor-wood', 119: 'flower', 122: 'fruit', 125: 'gravel', 128: 'house', 130: 'light', 133: 'mirror-stuff',
    138: 'net', 141: 'pillow', 144: 'platform', 145: 'playingfield', 147: 'railroad', 148: 'river', 149: 'road',
    151: 'roof', 154: 'sand', 155: 'sea', 156: 'shelf', 159: 'snow', 161: 'stairs', 166: 'tent', 168: 'towel',
    171: 'wall-brick', 175: 'wall-stone', 176: 'wall-tile', 177: 'wall-wood', 178: 'water-other',
    180: 'window-blind', 181: 'window-other', 184: 'tree-merged', 185: 'fence-merged', 186: 'ceiling-merged',
    187: 'sky-other-merged', 188: 'cabinet-merged', 189: 'table-merged', 190: 'floor-other-merged',
    191: 'pavement-merged', 192: 'mountain-merged', 193: 'grass-merged', 194: 'dirt-merged', 195: 'paper-merged',
    196: 'food-other-merged', 197: 'building-other-merged', 198: 'rock-merged', 199: 'wall-other-merged',
    200: 'rug-merged'
}

# ADE20K annotation value → class: 0 'other' ignored, k → k - 1 (the 150 of objectInfo150.txt, in its order)
ADE20K_CLASSES = {0: 255, **{k: k - 1 for k in range(1, len(ADE20K_NAMES) + 1)}}

# COCO-Stuff id (as the 10k .mat holds it) → class: the 11 thing ids its README lists as never annotated (removed
# from COCO: street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door, blender, hair brush) are
# ignored, the other 171 numbered in id order; 0 is unlabeled
COCOSTUFF_UNUSED = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCOSTUFF_USED = [i for i in range(1, len(COCOSTUFF_LABELS)) if i not in COCOSTUFF_UNUSED]
COCOSTUFF_CLASSES = {0: 255, **{i: 255 for i in COCOSTUFF_UNUSED}, **{i: k for k, i in enumerate(COCOSTUFF_USED)}}

# PASCAL Context: the 59 classes' ids in labels.txt (the release's 459 classes, alphabetical), as the converters of
# PyTorch-Encoding and mmsegmentation list them (their _mapping, through the Detail API) ...
CONTEXT_IDS = {2: 'aeroplane', 9: 'bag', 18: 'bed', 19: 'bedclothes', 22: 'bench', 23: 'bicycle', 25: 'bird',
               31: 'boat', 33: 'book', 34: 'bottle', 44: 'building', 45: 'bus', 46: 'cabinet', 59: 'car', 65: 'cat',
               68: 'ceiling', 72: 'chair', 80: 'cloth', 85: 'computer', 98: 'cow', 104: 'cup', 105: 'curtain',
               113: 'dog', 115: 'door', 144: 'fence', 158: 'floor', 159: 'flower', 162: 'food', 187: 'grass',
               189: 'ground', 207: 'horse', 220: 'keyboard', 232: 'light', 258: 'motorbike', 259: 'mountain',
               260: 'mouse', 284: 'person', 295: 'plate', 296: 'platform', 308: 'pottedplant', 324: 'road',
               326: 'rock', 347: 'sheep', 349: 'shelves', 354: 'sidewalk', 355: 'sign', 360: 'sky', 366: 'snow',
               368: 'sofa', 397: 'table', 415: 'track', 416: 'train', 420: 'tree', 424: 'truck', 427: 'tvmonitor',
               440: 'wall', 445: 'water', 454: 'window', 458: 'wood'}
# ... 59_labels.txt's order and names (the 59_context_labels PNGs' values 1-59) ...
CONTEXT_59_LINES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
                    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
                    'tvmonitor', 'bag', 'bed', 'bench', 'book', 'building', 'cabinet', 'ceiling', 'clothes',
                    'computer', 'cup', 'door', 'fence', 'floor', 'flower', 'food', 'grass', 'ground', 'keyboard',
                    'light', 'mountain', 'mouse', 'curtain', 'platform', 'sign', 'plate', 'road', 'rock', 'shelves',
                    'sidewalk', 'sky', 'snow', 'bedcloth', 'track', 'tree', 'truck', 'wall', 'water', 'window',
                    'wood')
# ... and labels.txt id → written class (0 background, 1-59 in labels.txt's order), every id of the 459 and 0
CONTEXT_CLASSES = {i: 0 for i in range(460)}
CONTEXT_CLASSES.update({i: k for k, i in enumerate(sorted(CONTEXT_IDS), 1)})
# the same classes as 59_context_labels values (line k of 59_labels.txt), renamed as in labels.txt
CONTEXT_RENAMED = {'diningtable': 'table', 'bedcloth': 'bedclothes', 'clothes': 'cloth'}
CONTEXT_59_CLASSES = {0: 0, **{k: CONTEXT_CLASSES[{n: i for i, n in CONTEXT_IDS.items()}[CONTEXT_RENAMED.get(name, name)]]
                               for k, name in enumerate(CONTEXT_59_LINES, 1)}}


# ---------------------------------------------------------------- the tables, entry by entry

# the VOC devkit's colour map (VOCdevkit labelcolormap / VOCcode): the first 21 classes and 255, read off its table
VOC_COLOURS = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
               (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
               (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128))


def devkit_colour(index):
    """The devkit's rule: bit 3j + c of the index (j = 0 first) is bit 7 - j of channel c."""
    return tuple(sum(((index >> (3 * j + c)) & 1) << (7 - j) for j in range(8)) for c in range(3))


def test_voc_palette_is_the_devkits():
    palette = np.array(dataset.voc_palette()).reshape(256, 3)
    assert [tuple(rgb) for rgb in palette[:21]] == list(VOC_COLOURS)
    assert tuple(palette[255]) == (224, 224, 192)  # the devkit's cream of the void borders
    assert [tuple(rgb) for rgb in palette] == [devkit_colour(index) for index in range(256)]


def test_cityscapes_classes_label_ids_and_colours_are_labels_py(monkeypatch):
    evaluated = sorted((train_id, label_id, colour) for _, label_id, train_id, colour in CITYSCAPES_LABELS
                       if 0 <= train_id < 255)
    assert list(dataset.CITYSCAPES_CLASSES) == CITYSCAPES_NAMES
    assert list(dataset.CITYSCAPES_LABEL_IDS) == [label_id for _, label_id, _ in evaluated]
    assert list(dataset.CITYSCAPES_PALETTE) == [colour for _, _, colour in evaluated]
    monkeypatch.setattr(settings, 'DATASET', 'cityscapes')
    monkeypatch.setattr(settings, 'N_CLASSES', 19)
    assert dataset.palette()[:19 * 3] == [value for _, _, colour in evaluated for value in colour]


def test_ade20k_names_and_colours_are_the_devkits(monkeypatch):
    names = list(ADE20K_NAMES)
    names[89] = 'television receiver'  # line 90's second synonym, as mmsegmentation names it ('television' alone)
    assert list(dataset.ADE20K_CLASSES) == names
    colours = [tuple(bytes.fromhex(colour)) for colour in ADE20K_COLOURS]
    assert list(dataset.ADE20K_PALETTE) == colours
    monkeypatch.setattr(settings, 'DATASET', 'ade20k')
    monkeypatch.setattr(settings, 'N_CLASSES', 150)
    assert dataset.palette()[:150 * 3] == [value for colour in colours for value in colour]


def test_cocostuff_classes_and_ids_are_labels_txts():
    assert list(dataset.COCOSTUFF_CLASSES) == [COCOSTUFF_LABELS[i] for i in COCOSTUFF_USED]
    assert len(dataset.COCOSTUFF_CLASSES) == 171
    for offset, unlabeled in ((0, 0), (1, 255)):  # the 10k .mat files hold the ids, the 164k PNGs id - 1
        lut = prepare.cocostuff_lut(offset, unlabeled)
        stored = {(i - offset if i else unlabeled): cls for i, cls in COCOSTUFF_CLASSES.items()}
        assert {value: int(lut[value]) for value in range(256)} == \
            {value: stored.get(value, prepare.UNKNOWN) for value in range(256)}


def test_context_classes_and_ids_are_the_releases():
    assert dataset.CONTEXT_CLASSES == ('background', *(CONTEXT_IDS[i] for i in sorted(CONTEXT_IDS)))
    names = {i: CONTEXT_IDS.get(i, f'thing{i}') for i in range(1, 460)}  # labels.txt
    lut = prepare.context_lut(names, 'labels.txt')
    assert {i: int(lut[i]) for i in range(len(lut))} == CONTEXT_CLASSES
    names = {k: CONTEXT_RENAMED.get(name, name) for k, name in enumerate(CONTEXT_59_LINES, 1)}  # 59_labels.txt
    lut = prepare.context_lut(names, '59_labels.txt')
    assert {i: int(lut[i]) for i in range(len(lut))} == CONTEXT_59_CLASSES
    assert prepare.CONTEXT_59_RENAMED == CONTEXT_RENAMED


# ---------------------------------------------------------------- miniatures

def write_image(path, seed):
    """A random HEIGHT × WIDTH RGB image, JPEG or PNG as the name says."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
    Image.fromarray(pixels).save(path)


def write_png(values, path):
    """A single-channel 8-bit PNG of values, as the official annotations are."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint8), mode='L').save(path)


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join(f'{line}\n' for line in lines))


def tiled(values, shift, height=HEIGHT, width=WIDTH):
    """height × width of values repeated in order, starting at the shift-th: every value in every image."""
    values = list(values)
    return np.resize(np.roll(values, -shift), (height, width))


def expected(source, mapping):
    return np.vectorize(mapping.__getitem__)(source)


def assert_label(path, source, mapping):
    np.testing.assert_array_equal(dataset.read_label(str(path)), expected(source, mapping))


def cityscapes_miniature(root):
    """leftImg8bit/ and gtFine/ with two train cities and two val cities (with the _color, _instanceIds and
    _polygons siblings the download has). Returns {id: labelIds array}."""
    sources = {}
    names = {'train': ('aachen_000000_000019', 'aachen_000001_000019', 'bochum_000000_000313'),
             'val': ('frankfurt_000000_000294', 'lindau_000000_000019')}
    for split, stems in names.items():
        for stem in stems:
            image_id = f'{split}/{stem.split("_")[0]}/{stem}'
            write_image(os.path.join(root, 'leftImg8bit', f'{image_id}_leftImg8bit.png'), len(sources))
            sources[image_id] = tiled(CITYSCAPES_TRAIN_IDS, len(sources))
            write_png(sources[image_id], os.path.join(root, 'gtFine', f'{image_id}_gtFine_labelIds.png'))
            write_png(sources[image_id] * 2, os.path.join(root, 'gtFine', f'{image_id}_gtFine_instanceIds.png'))
            Image.new('RGB', (WIDTH, HEIGHT)).save(os.path.join(root, 'gtFine', f'{image_id}_gtFine_color.png'))
            write_lines(os.path.join(root, 'gtFine', f'{image_id}_gtFine_polygons.json'), ['{}'])
    return sources


def ade20k_miniature(root):
    """ADEChallengeData2016 with 3 training and 2 validation images. Returns {id: annotation array}."""
    sources = {}
    for split, prefix, count in (('training', 'train', 3), ('validation', 'val', 2)):
        for index in range(1, count + 1):
            image_id = f'{split}/ADE_{prefix}_{index:08d}'
            write_image(os.path.join(root, 'images', image_id + '.jpg'), len(sources))
            sources[image_id] = tiled(ADE20K_CLASSES, len(sources))
            write_png(sources[image_id], os.path.join(root, 'annotations', image_id + '.png'))
    write_lines(os.path.join(root, 'sceneCategories.txt'), [f'{image_id.split("/")[1]} kitchen' for image_id in sources])
    return sources


def cocostuff10k_miniature(root):
    """cocostuff-10k-v1.1: images/, annotations/*.mat (S, names, ...), imageLists/. Returns {id: S array}."""
    train = ['COCO_train2014_000000000077', 'COCO_train2014_000000000113', 'COCO_train2014_000000000009']
    test = ['COCO_train2014_000000000825', 'COCO_train2014_000000000632']
    sources = {}
    for image_id in train + test:
        write_image(os.path.join(root, 'images', image_id + '.jpg'), len(sources))
        sources[image_id] = tiled(COCOSTUFF_CLASSES, len(sources)).astype(np.uint16)
        os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
        scipy.io.savemat(os.path.join(root, 'annotations', image_id + '.mat'),
                         {'S': sources[image_id], 'names': np.array(['unlabeled', 'person'], dtype=object),
                          'captions': np.array(['a made-up caption'], dtype=object)})
    write_lines(os.path.join(root, 'imageLists', 'train.txt'), train)
    write_lines(os.path.join(root, 'imageLists', 'test.txt'), test)
    write_lines(os.path.join(root, 'imageLists', 'all.txt'), sorted(train + test))
    return sources


def cocostuff164k_miniature(root, labels_folder):
    """images/{train,val}2017/ and the stuffthingmaps PNGs (id - 1, 255 unlabeled) in labels_folder/. Returns
    {id: PNG array}."""
    stored = {(i - 1 if i else 255): cls for i, cls in COCOSTUFF_CLASSES.items()}
    sources = {}
    for split, numbers in (('train2017', (9, 25, 30)), ('val2017', (139, 285))):
        for number in numbers:
            image_id = f'{split}/{number:012d}'
            write_image(os.path.join(root, 'images', image_id + '.jpg'), len(sources))
            sources[image_id] = tiled(stored, len(sources))
            write_png(sources[image_id], os.path.join(root, labels_folder, image_id + '.png'))
    return sources, stored


def context_miniature(voc, context):
    """VOC2010 (JPEGImages/, ImageSets/Main/{train,val}.txt) and both PASCAL Context releases of the same
    annotations: trainval/<id>.mat with LabelMap and labels.txt, 59_context_labels/<id>.png and 59_labels.txt.
    Returns {id: LabelMap array}."""
    lists = {'train': ['2008_000002', '2008_000003', '2008_000007'], 'val': ['2008_000009', '2010_000001']}
    write_lines(os.path.join(voc, 'ImageSets', 'Main', 'train.txt'), lists['train'])
    write_lines(os.path.join(voc, 'ImageSets', 'Main', 'val.txt'), lists['val'])
    names = {i: CONTEXT_IDS.get(i, f'thing{i}') for i in range(1, 460)}
    write_lines(os.path.join(context, 'labels.txt'), [f'{i}: {name}' for i, name in names.items()])
    write_lines(os.path.join(context, '59_labels.txt'), [f'{k}: {name}' for k, name in enumerate(CONTEXT_59_LINES, 1)])
    line = {CONTEXT_RENAMED.get(name, name): k for k, name in enumerate(CONTEXT_59_LINES, 1)}
    to_59 = {i: line[name] for i, name in CONTEXT_IDS.items()}  # labels.txt id → 59_context_labels value
    sources = {}
    for image_id in lists['train'] + lists['val']:
        write_image(os.path.join(voc, 'JPEGImages', image_id + '.jpg'), len(sources))
        label_map = tiled(CONTEXT_CLASSES, len(sources)).astype(np.uint16)
        sources[image_id] = label_map
        os.makedirs(os.path.join(context, 'trainval'), exist_ok=True)
        scipy.io.savemat(os.path.join(context, 'trainval', image_id + '.mat'), {'LabelMap': label_map})
        write_png(np.vectorize(lambda i: to_59.get(i, 0))(label_map),
                  os.path.join(context, '59_context_labels', image_id + '.png'))
    return sources


# ---------------------------------------------------------------- prepare, label by label

def test_cityscapes_command_writes_train_ids_and_lists(tmp_path):
    root = tmp_path / 'cityscapes'
    sources = cityscapes_miniature(root)
    done = run_script(ROOT, 'prepare.py', 'cityscapes', '--root', str(root))
    assert done.returncode == 0, done.stderr
    assert (root / 'lists' / 'train.txt').read_text().split() == [
        'train/aachen/aachen_000000_000019', 'train/aachen/aachen_000001_000019', 'train/bochum/bochum_000000_000313']
    assert (root / 'lists' / 'val.txt').read_text().split() == [
        'val/frankfurt/frankfurt_000000_000294', 'val/lindau/lindau_000000_000019']
    for image_id, source in sources.items():
        path = root / 'gtFine' / f'{image_id}_gtFine_labelTrainIds.png'
        assert_label(path, source, CITYSCAPES_TRAIN_IDS)
        assert Image.open(path).getpalette()[:6] == [128, 64, 128, 244, 35, 232]  # road, sidewalk
    written = {path: path.stat().st_mtime_ns for path in root.rglob('*_labelTrainIds.png')}
    prepare.prepare_cityscapes(str(root))  # again: every label is already right
    assert {path: path.stat().st_mtime_ns for path in root.rglob('*_labelTrainIds.png')} == written


def assert_loaders_read(monkeypatch, root, name, n_classes):
    """What train.py and eval.py read of a prepared dataset: check() finds no problem, the first validation
    sample's label is the written one, and a training sample comes out at the crop with valid classes."""
    for setting, value in dict(DATASET=name, N_CLASSES=n_classes, DATA_ROOT=str(root), TRAIN_SPLIT='train',
                               VAL_SPLIT='val', CROP_SIZE=33).items():
        monkeypatch.setattr(settings, setting, value)
    assert dataset.check() == []
    val = dataset.ValDataset()
    _, label = val[0]
    written = dataset.read_label(dataset.label_path(val.ids[0]))
    assert torch.equal(label[:written.shape[0], :written.shape[1]], torch.from_numpy(written).long())
    image, label = dataset.TrainDataset()[(0, 0)]
    assert image.shape == (3, 33, 33) and set(label.unique().tolist()) <= set(range(n_classes)) | {255}


def test_ade20k_shifts_classes_and_ignores_other(tmp_path, monkeypatch):
    root = tmp_path / 'ADEChallengeData2016'
    sources = ade20k_miniature(root)
    prepare.prepare_ade20k(str(root))
    assert (root / 'lists' / 'train.txt').read_text().split() == [
        'training/ADE_train_00000001', 'training/ADE_train_00000002', 'training/ADE_train_00000003']
    assert (root / 'lists' / 'val.txt').read_text().split() == [
        'validation/ADE_val_00000001', 'validation/ADE_val_00000002']
    for image_id, source in sources.items():
        assert_label(root / 'labels' / f'{image_id}.png', source, ADE20K_CLASSES)
        assert np.array_equal(dataset.read_label(str(root / 'annotations' / f'{image_id}.png')), source)  # untouched
    assert Image.open(root / 'labels' / 'training' / 'ADE_train_00000001.png').getpalette()[:6] == [
        120, 120, 120, 180, 120, 120]  # wall, building
    assert_loaders_read(monkeypatch, root, 'ade20k', 150)


def test_cocostuff_10k_keeps_171_classes_and_names_test_val(tmp_path, monkeypatch):
    root = tmp_path / 'cocostuff-10k-v1.1'
    sources = cocostuff10k_miniature(root)
    prepare.prepare_cocostuff(str(root))
    assert (root / 'lists' / 'train.txt').read_text().split() == [
        'COCO_train2014_000000000009', 'COCO_train2014_000000000077', 'COCO_train2014_000000000113']
    assert (root / 'lists' / 'val.txt').read_text().split() == [
        'COCO_train2014_000000000632', 'COCO_train2014_000000000825']
    for image_id, source in sources.items():
        assert_label(root / 'labels' / f'{image_id}.png', source, COCOSTUFF_CLASSES)
    assert_loaders_read(monkeypatch, root, 'cocostuff', 171)


@pytest.mark.parametrize('labels_folder', ['annotations', 'stuffthingmaps_trainval2017'])
def test_cocostuff_164k_gives_the_same_classes(tmp_path, monkeypatch, labels_folder):
    root = tmp_path / 'cocostuff'
    sources, stored = cocostuff164k_miniature(root, labels_folder)
    assert stored[11] == stored[25] == stored[90] == stored[255] == 255 and stored[181] == 170  # ids 12, 26, 91
    prepare.prepare_cocostuff(str(root))
    assert (root / 'lists' / 'train.txt').read_text().split() == [
        'train2017/000000000009', 'train2017/000000000025', 'train2017/000000000030']
    assert (root / 'lists' / 'val.txt').read_text().split() == ['val2017/000000000139', 'val2017/000000000285']
    for image_id, source in sources.items():
        assert_label(root / 'labels' / f'{image_id}.png', source, stored)
    assert_loaders_read(monkeypatch, root, 'cocostuff', 171)


def test_context_from_either_release_gives_the_same_labels(tmp_path):
    voc, context = tmp_path / 'VOC2010', tmp_path / 'pascal-context'
    sources = context_miniature(voc, context)
    prepare.prepare_context(str(voc), str(context))
    lists = voc / 'ImageSets' / 'SegmentationContext'
    assert (lists / 'train.txt').read_text().split() == ['2008_000002', '2008_000003', '2008_000007']
    assert (lists / 'val.txt').read_text().split() == ['2008_000009', '2010_000001']
    labels = {}
    for image_id, source in sources.items():
        labels[image_id] = dataset.read_label(str(voc / 'SegmentationClassContext' / f'{image_id}.png'))
        assert_label(voc / 'SegmentationClassContext' / f'{image_id}.png', source, CONTEXT_CLASSES)
    shutil.rmtree(voc / 'SegmentationClassContext')
    shutil.rmtree(context / 'trainval')  # the 59-class release alone
    prepare.prepare_context(str(voc), str(context))
    for image_id, label in labels.items():
        source = dataset.read_label(str(context / '59_context_labels' / f'{image_id}.png'))
        assert_label(voc / 'SegmentationClassContext' / f'{image_id}.png', source, CONTEXT_59_CLASSES)
        np.testing.assert_array_equal(
            dataset.read_label(str(voc / 'SegmentationClassContext' / f'{image_id}.png')), label)


def test_context_reads_60_or_59_classes(tmp_path, monkeypatch):
    voc, context = tmp_path / 'VOC2010', tmp_path / 'pascal-context'
    sources = context_miniature(voc, context)
    prepare.prepare_context(str(voc), str(context))
    monkeypatch.setattr(settings, 'DATASET', 'context')
    monkeypatch.setattr(settings, 'N_CLASSES', 60)
    assert dataset.current()['classes'][:2] == ('background', 'aeroplane')
    _, label = dataset.load_sample('2008_000003', str(voc))
    stored = expected(sources['2008_000003'], CONTEXT_CLASSES)
    np.testing.assert_array_equal(label, stored)
    monkeypatch.setattr(settings, 'N_CLASSES', 59)  # background ignored, every class one down
    classes = dataset.current()['classes']
    assert len(classes) == 59 and classes[0] == 'aeroplane' and classes[-1] == 'wood'
    _, label = dataset.load_sample('2008_000003', str(voc))
    np.testing.assert_array_equal(label, np.where(stored == 0, 255, stored - 1))
    assert dataset.palette()[:3] == dataset.voc_palette()[3:6]  # aeroplane keeps its colour
    monkeypatch.setattr(settings, 'N_CLASSES', 58)
    with pytest.raises(ValueError, match=r"N_CLASSES=58 but DATASET='context' has 60 classes \(59 with"):
        dataset.current()


# ---------------------------------------------------------------- bad input, named before any training

def ade20k_with(tmp_path, how):
    root = tmp_path / 'ADEChallengeData2016'
    ade20k_miniature(root)
    path = root / 'annotations' / 'validation' / 'ADE_val_00000002.png'
    if how == 'value':
        write_png(np.full((HEIGHT, WIDTH), 151), str(path))
    else:
        write_png(np.zeros((HEIGHT - 1, WIDTH)), str(path))
    return root, path


@pytest.mark.parametrize('how, message', [('value', r'\[151\]'), ('size', '60×39 but its image is 60×40')])
def test_ade20k_bad_annotation_is_named(tmp_path, how, message):
    root, path = ade20k_with(tmp_path, how)
    with pytest.raises(SystemExit, match=re.escape(str(path)) + '.*' + message):
        prepare.prepare_ade20k(str(root))


def test_missing_folders_are_named(tmp_path):
    cityscapes = tmp_path / 'cityscapes'
    cityscapes_miniature(cityscapes)
    shutil.rmtree(cityscapes / 'gtFine')
    with pytest.raises(SystemExit, match='missing ' + re.escape(str(cityscapes / 'gtFine'))):
        prepare.prepare_cityscapes(str(cityscapes))
    ade20k = tmp_path / 'ADEChallengeData2016'
    ade20k_miniature(ade20k)
    shutil.rmtree(ade20k / 'annotations' / 'validation')
    with pytest.raises(SystemExit, match='missing ' + re.escape(str(ade20k / 'annotations' / 'validation'))):
        prepare.prepare_ade20k(str(ade20k))
    with pytest.raises(SystemExit, match='neither COCO-Stuff 10k'):
        prepare.prepare_cocostuff(str(ade20k))
    coco = tmp_path / 'coco'
    cocostuff164k_miniature(coco, 'stuffthingmaps')  # neither of the two names the release uses
    with pytest.raises(SystemExit, match='stuffthingmaps_trainval2017'):
        prepare.prepare_cocostuff(str(coco))
    voc, context = tmp_path / 'VOC2010', tmp_path / 'pascal-context'
    context_miniature(voc, context)
    for folder in ('trainval', '59_context_labels'):
        shutil.rmtree(context / folder)
    with pytest.raises(SystemExit, match='neither trainval/'):
        prepare.prepare_context(str(voc), str(context))


def test_unknown_ids_are_named(tmp_path):
    coco = tmp_path / 'cocostuff-10k-v1.1'
    cocostuff10k_miniature(coco)
    mat = coco / 'annotations' / 'COCO_train2014_000000000825.mat'
    scipy.io.savemat(str(mat), {'S': np.full((HEIGHT, WIDTH), 183, np.uint16)})
    with pytest.raises(SystemExit, match=re.escape(str(mat)) + r'.*\[183\]'):
        prepare.prepare_cocostuff(str(coco))
    os.remove(mat)
    with pytest.raises(SystemExit, match='lists COCO_train2014_000000000825'):
        prepare.prepare_cocostuff(str(coco))

    voc, context = tmp_path / 'VOC2010', tmp_path / 'pascal-context'
    context_miniature(voc, context)
    mat = context / 'trainval' / '2008_000007.mat'
    scipy.io.savemat(str(mat), {'LabelMap': np.full((HEIGHT, WIDTH), 460, np.uint16)})
    with pytest.raises(SystemExit, match=re.escape(str(mat)) + r'.*\[460\]'):
        prepare.prepare_context(str(voc), str(context))
    shutil.rmtree(context / 'trainval')
    png = context / '59_context_labels' / '2008_000007.png'
    write_png(np.full((HEIGHT, WIDTH), 60), str(png))
    with pytest.raises(SystemExit, match=re.escape(str(png)) + r'.*\[60\]'):
        prepare.prepare_context(str(voc), str(context))
    os.remove(png)
    with pytest.raises(SystemExit, match='lists 2008_000007'):
        prepare.prepare_context(str(voc), str(context))


# ---------------------------------------------------------------- train and evaluate through the scripts

def train_and_evaluate(tmp_path, data_root, **overrides):
    """train.py (2 steps, no checkpoint but the final one, no image panel) then `eval.py --save-pred preds
    --attention attn` in an experiment on data_root; returns (experiment, eval JSON)."""
    experiment = make_experiment(tmp_path / 'exp', data_root, TRAIN_SPLIT='train', ITER_MAX=2, ITER_SAVE=1000,
                                 IMAGE_EVERY=1000, **overrides)
    for script in (('train.py',), ('eval.py', '--save-pred', 'preds', '--attention', 'attn')):
        done = run_script(experiment, *script)
        assert done.returncode == 0, done.stderr
    with open(experiment / 'logdir' / 'eval_final.json') as f:
        return experiment, json.load(f)


def test_cityscapes_trains_and_evaluates(tmp_path):
    root = tmp_path / 'cityscapes'
    cityscapes_miniature(root)
    prepare.prepare_cityscapes(str(root))
    experiment, result = train_and_evaluate(tmp_path, root, DATASET='cityscapes', N_CLASSES=19)
    assert list(result['per_class']) == CITYSCAPES_NAMES and result['n_images'] == 2
    pred = Image.open(experiment / 'preds' / 'val' / 'frankfurt' / 'frankfurt_000000_000294.png')
    assert pred.mode == 'P' and pred.size == (WIDTH, HEIGHT)
    assert (experiment / 'attn' / 'val' / 'frankfurt' / 'frankfurt_000000_000294_attention.png').exists()
    assert pred.getpalette()[:3] == [128, 64, 128] and pred.getpalette()[18 * 3:19 * 3] == [119, 11, 32]


def test_context_59_trains_and_evaluates(tmp_path):
    voc, context = tmp_path / 'VOC2010', tmp_path / 'pascal-context'
    context_miniature(voc, context)
    prepare.prepare_context(str(voc), str(context))
    experiment, result = train_and_evaluate(tmp_path, voc, DATASET='context', N_CLASSES=59)
    names = list(result['per_class'])
    assert len(names) == 59 and names[:3] == ['aeroplane', 'bag', 'bed'] and 'background' not in names
    pred = Image.open(experiment / 'preds' / '2008_000009.png')
    assert pred.size == (WIDTH, HEIGHT) and pred.getpalette()[:3] == [128, 0, 0]  # class 0 is aeroplane
