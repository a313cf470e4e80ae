"""The datasets: each one's classes, palette and file layout, the training augmentation, and the two datasets
that training and evaluation read, `TrainDataset` and `ValDataset`.

DATASET picks the dataset and DATA_ROOT its folder, as `python prepare.py DATASET ...` leaves it (README
"Data"): images where the official download has them, labels as single-channel PNGs of class indices
(IGNORE_LABEL where no class applies), and split lists of ids, one per line. A dataset is an entry of
DATASETS: its class names, its palette, and where an id's image, label and split list are. `check()`
verifies DATA_ROOT before training (and as `python prepare.py check`).
"""
import functools
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

# name → classes (names in label order), palette (RGB per class; None: the VOC colour map), the paths, relative
# to DATA_ROOT, of an id's image and label and of a split's list, and background_optional: class 0 is a
# background that N_CLASSES = len(classes) - 1 ignores (labels are read with 0 → IGNORE_LABEL, k → k - 1)
DATASETS = {
    'voc': dict(classes=VOC_CLASSES, palette=None, image='JPEGImages/{}.jpg', label='SegmentationClassAug/{}.png',
                list='ImageSets/SegmentationAug/{}.txt'),
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
    # DATA_ROOT is VOC2010; ids like 2008_000002
    'context': dict(classes=CONTEXT_CLASSES, palette=None, image='JPEGImages/{}.jpg',
                    label='SegmentationClassContext/{}.png', list='ImageSets/SegmentationContext/{}.txt',
                    background_optional=True),
}


def drops_background():
    """Whether N_CLASSES leaves out the optional background class 0 of settings.DATASET (Context's 59)."""
    info = DATASETS.get(settings.DATASET, {})
    return info.get('background_optional', False) and settings.N_CLASSES == len(info['classes']) - 1


def current():
    """The DATASETS entry of settings.DATASET, its classes those N_CLASSES trains: all of them, or all but the
    background where that is optional; any other N_CLASSES is an error."""
    if settings.DATASET not in DATASETS:
        raise ValueError(f'DATASET={settings.DATASET!r}: must be one of {", ".join(map(repr, DATASETS))}')
    info = DATASETS[settings.DATASET]
    if drops_background():
        return dict(info, classes=info['classes'][1:])
    if settings.N_CLASSES != len(info['classes']):
        optional = f' ({len(info["classes"]) - 1} with the background ignored)' if info.get('background_optional') else ''
        raise ValueError(f'N_CLASSES={settings.N_CLASSES} but DATASET={settings.DATASET!r} has '
                         f'{len(info["classes"])} classes{optional}')
    return info


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
    info = DATASETS.get(settings.DATASET, {})
    colours = list(voc_palette())
    if info.get('palette') is not None:
        colours[:3 * len(info['palette'])] = [value for rgb in info['palette'] for value in rgb]
    if drops_background():
        colours[:3 * settings.N_CLASSES] = colours[3:3 * (settings.N_CLASSES + 1)]
    return colours


def colorize(label):
    """H × W class indices -> H × W × 3 uint8 colours of the current dataset."""
    return np.array(palette(), np.uint8).reshape(256, 3)[np.asarray(label, np.uint8)]


def denormalise(img):
    """A 3 × H × W normalised image → H × W × 3 uint8 RGB, for looking at it."""
    mean = torch.tensor(settings.MEAN).view(3, 1, 1)
    std = torch.tensor(settings.STD).view(3, 1, 1)
    return ((img * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)


def save_label_png(label, path):
    """Writes H × W class indices as a palette PNG in the current dataset's colours, atomically (write, then
    rename), making its folder if needed (ids may hold sub-folders)."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    image = Image.fromarray(np.asarray(label, np.uint8))
    image.putpalette(palette())
    image.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def data_root_or_default(data_root):
    return settings.DATA_ROOT if data_root is None else data_root


def image_path(image_id, data_root=None):
    return os.path.join(data_root_or_default(data_root), current()['image'].format(image_id))


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


def open_image(path, kind):
    """The decoded PIL image at path; errors name the file (kind says what it should be)."""
    try:
        image = Image.open(path)
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


def read_photo(path):
    """The RGB PIL image at path as an image viewer shows it (for the user's own files; the datasets' images are
    read as stored, by read_image): EXIF orientation applied, so a phone's portrait photo is upright at its shown
    size; transparent pixels composited on the MEAN colour, what the network sees as "no content" (the colour
    of its padding: 0 after normalising); 16-bit grayscale scaled to 8 bits (÷ 257); grayscale, palette, CMYK
    and other modes converted to RGB."""
    with open_image(path, 'image') as stored:
        image = ImageOps.exif_transpose(stored)
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):  # 16-bit grayscale PNG or TIFF: 0..65535
        levels = np.clip(np.asarray(image, np.float64), 0, 65535) / 257
        image = Image.fromarray(np.round(levels).astype(np.uint8))
    elif image.mode == 'F':  # 32-bit float grayscale (TIFF): taken as 0..1
        image = Image.fromarray(np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8))
    if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info:
        image = image.convert('RGBA')
        background = Image.new('RGB', image.size, tuple(round(255 * m) for m in settings.MEAN))
        background.paste(image, mask=image.getchannel('A'))
        return background
    return image.convert('RGB')


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
    image = read_image(image_path(image_id, data_root))
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
        raise FileNotFoundError(f'{setting} = {split!r} has no list file: {path}')
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


def augment(image, label, rng):
    """The authors' training augmentation of (PIL RGB image, H × W uint8 label), randomness from rng
    → (3 × CROP × CROP float32 image, CROP × CROP int64 label).

    What it computes, sample for sample (tests check it against benchmark.authors_augment, the op written
    literally: the image to float rounding, the label exactly): it draws s = SCALES[rng.integers(len(SCALES))],
    then top and left, each uniform over every valid offset of the padded sample, then flip = rng.random() < 0.5;
    the image normalised ((x/255 − MEAN)/STD) and rescaled by F.interpolate(scale_factor=s, mode='bilinear',
    align_corners=True) to floor(H·s) × floor(W·s), the label by mode='nearest'; both padded bottom/right to
    CROP_SIZE (image 0, label IGNORE_LABEL), cropped to CROP_SIZE² at (top, left), mirrored left-right if flip.

    How: only the crop window, from only the source pixels it reads. Bilinear interpolation is separable, so two
    F.embedding_bag passes do it: output column j blends the two source columns of linear_taps (rows of the
    transposed image: the gather takes whole rows), then output row i the two source rows, with weights that also
    normalise and an extra bias row that subtracts MEAN/STD from the content but not the padding. The label takes
    the rows and columns torch's nearest kernel would (nearest_taps).
    """
    crop = settings.CROP_SIZE
    scale = settings.SCALES[rng.integers(len(settings.SCALES))]
    width, height = image.size
    scaled_w, scaled_h = int(width * scale), int(height * scale)
    top = int(rng.integers(max(scaled_h - crop, 0) + 1))
    left = int(rng.integers(max(scaled_w - crop, 0) + 1))
    flip = rng.random() < 0.5
    out_w, out_h = min(crop, scaled_w), min(crop, scaled_h)  # the window's content; padding fills the rest
    y0, y1, wy = linear_taps(top, out_h, height, scaled_h)
    x0, x1, wx = linear_taps(left, out_w, width, scaled_w)
    vectorised = scaled_h + scaled_w <= 128  # torch's choice of nearest kernel for the 1 × 1 × H × W label
    label_rows = nearest_taps(top, out_h, height, scaled_h, scale, vectorised)
    label_cols = nearest_taps(left, out_w, width, scaled_w, scale, vectorised)
    if flip:  # content columns right to left, starting after the padding
        x0, x1, wx, label_cols = x0[::-1], x1[::-1], wx[::-1], label_cols[::-1]
    col = crop - out_w if flip else 0  # first content column of the output

    # columns: source column x is row x of the transposed image (PIL transposes fast), its source rows y0[0]..y1[-1]
    # (h of them) in a row of h·3 RGB values; output column j → row j of blended, 0 on padding
    h = y1[-1] + 1 - y0[0]
    source = np.asarray(image.transpose(Image.Transpose.TRANSPOSE))[:, y0[0]:y1[-1] + 1].reshape(width, h * 3)
    taps = np.zeros(crop, np.int64)
    taps[col:col + out_w] = 2
    blended = blend_rows(torch.from_numpy(source.astype(np.float32)), np.stack([x0, x1], 1),
                         np.stack([1 - wx, wx], 1), taps)  # crop × h·3
    # rows: row 3·y + c of table is channel c of source row y0[0] + y along the output columns; a last bias row is 1
    # on content columns, 0 on padding
    table = np.empty((h * 3 + 1, crop), np.float32)
    np.copyto(table[:-1], blended.numpy().T)
    table[-1] = 0
    table[-1, col:col + out_w] = 1
    channel = np.arange(3)[:, None]  # 3 × 1
    mean, std = np.float32(settings.MEAN)[:, None], np.float32(settings.STD)[:, None]
    indices = np.stack(np.broadcast_arrays(3 * (y0 - y0[0]) + channel, 3 * (y1 - y0[0]) + channel, 3 * h), 2)
    weights = np.stack(np.broadcast_arrays((1 - wy) / (255 * std), wy / (255 * std), -mean / std), 2)  # 3 × out_h × 3
    taps = np.zeros((3, crop), np.int64)
    taps[:, :out_h] = 3
    image = blend_rows(torch.from_numpy(table), indices, weights, taps.reshape(-1)).view(3, crop, crop)

    # the label: columns first over the rows it reads, then rows (whole rows: cheap to gather)
    window = np.full((crop, crop), settings.IGNORE_LABEL, np.uint8)
    window[:out_h, col:col + out_w] = (label[label_rows[0]:label_rows[-1] + 1].take(label_cols, 1)
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
    IGNORE_LABEL to H' = stride_size(H), W' = stride_size(W)."""

    def __init__(self, data_root=None, split=None):
        self.data_root, self.ids = open_split(data_root, split, 'VAL_SPLIT')

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        image, label = load_sample(self.ids[index], self.data_root)
        height, width = label.shape
        return to_tensors(image, label, stride_size(height), stride_size(width))


# ---------------------------------------------------------------- check

def check_sample(image_id, data_root):
    """Every problem of one id's image and label, as messages naming the file."""
    problems, image, label = [], None, None
    path = label_path(image_id, data_root)
    try:
        image = read_image(image_path(image_id, data_root))
    except (FileNotFoundError, ValueError) as error:
        problems.append(str(error))
    try:
        label = read_label(path)
    except (FileNotFoundError, ValueError) as error:
        problems.append(str(error))
    if image is not None and label is not None:
        try:
            check_label(label, image.size, path)
        except ValueError as error:
            problems.append(str(error))
    return problems


def check():
    """Verifies DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT; logs counts and every problem, returns the problems."""
    problems, ids = [], set()
    for setting in ('TRAIN_SPLIT', 'VAL_SPLIT'):
        try:
            _, split_ids = open_split(None, None, setting)
        except (FileNotFoundError, ValueError) as error:
            if str(error) not in problems:  # a missing DATA_ROOT is one problem, not one per split
                problems.append(str(error))
            continue
        settings.logger.info('check: %s = %r: %d ids', setting, getattr(settings, setting), len(split_ids))
        ids.update(split_ids)
    check_one = functools.partial(check_sample, data_root=settings.DATA_ROOT)
    tic = time.time()
    with multiprocessing.Pool() as pool:
        for done, found in enumerate(pool.imap(check_one, sorted(ids), chunksize=16), 1):  # in id order
            problems += found
            settings.log_progress('check: images', done, len(ids), tic)
    for problem in problems:
        settings.logger.error('check: %s', problem)
    settings.logger.info('check: %d images, %d problems in %s', len(ids), len(problems), settings.DATA_ROOT)
    return problems
