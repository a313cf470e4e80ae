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
from PIL import Image

import settings

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')

# name → classes (names in label order), palette (RGB per class; None: the VOC colour map) and the paths,
# relative to DATA_ROOT, of an id's image and label and of a split's list
DATASETS = {
    'voc': dict(classes=VOC_CLASSES, palette=None, image='JPEGImages/{}.jpg', label='SegmentationClassAug/{}.png',
                list='ImageSets/SegmentationAug/{}.txt'),
}


def current():
    """The DATASETS entry of settings.DATASET; N_CLASSES must be its class count."""
    if settings.DATASET not in DATASETS:
        raise ValueError(f'DATASET={settings.DATASET!r}: must be one of {", ".join(map(repr, DATASETS))}')
    info = DATASETS[settings.DATASET]
    if settings.N_CLASSES != len(info['classes']):
        raise ValueError(f'N_CLASSES={settings.N_CLASSES} but DATASET={settings.DATASET!r} has '
                         f'{len(info["classes"])} classes')
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
    for every other index (IGNORE_LABEL 255 is VOC's cream)."""
    own = DATASETS[settings.DATASET]['palette'] if settings.DATASET in DATASETS else None
    colours = list(voc_palette())
    if own is not None:
        colours[:3 * len(own)] = [value for rgb in own for value in rgb]
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
    rename)."""
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


def read_label(path):
    """H × W uint8 class indices of a single-channel ('L' or palette 'P') PNG; errors name the file."""
    image = open_image(path, 'label')
    if image.mode not in ('L', 'P'):
        raise ValueError(f'label {path} has mode {image.mode}, not a single-channel L or P image')
    return np.array(image)


def check_label(label, image_size, path):
    """Raises ValueError naming path if the label does not match the image's (W, H) or has a bad value."""
    width, height = image_size
    if label.shape != (height, width):
        raise ValueError(f'label {path} is {label.shape[1]}×{label.shape[0]} but its image is {width}×{height}')
    bad = label[(label >= settings.N_CLASSES) & (label != settings.IGNORE_LABEL)]
    if bad.size:
        raise ValueError(f'label {path} has values {np.unique(bad).tolist()}, outside [0, {settings.N_CLASSES}) '
                         f'and not IGNORE_LABEL {settings.IGNORE_LABEL}')


def load_sample(image_id, data_root=None):
    """(RGB PIL image, H × W uint8 label) of an id, checked."""
    image = read_image(image_path(image_id, data_root))
    path = label_path(image_id, data_root)
    label = read_label(path)
    check_label(label, image.size, path)
    return image, label


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

def to_tensors(image, label, height, width, flip=False):
    """(3 × height × width float32, height × width int64) of an h × w sample (PIL or array): normalised with MEAN
    and STD on [0, 1] RGB, padded bottom/right with 0 (the mean colour) and IGNORE_LABEL, then mirrored if flip
    (so a flipped sample has its padding bottom/left)."""
    image, label = np.asarray(image), np.asarray(label)  # h × w × 3 uint8, h × w uint8
    if flip:  # views with negative strides: mirroring costs no copy
        image, label = image[:, ::-1], label[:, ::-1]
    h, w = label.shape
    left = width - w if flip else 0
    padded_label = torch.full((height, width), settings.IGNORE_LABEL, dtype=torch.int64)
    padded_label.numpy()[:h, left:left + w] = label
    mean = np.array(settings.MEAN, np.float32)[:, None, None]  # 3 × 1 × 1
    std = np.array(settings.STD, np.float32)[:, None, None]
    padded_image = torch.zeros(3, height, width)
    content = padded_image.numpy()[:, :h, left:left + w]  # 3 × h × w view
    # one pass converts, transposes and scales straight into the output, a second subtracts the mean
    np.multiply(image.transpose(2, 0, 1), 1 / (255 * std), out=content)
    content -= mean / std
    return padded_image, padded_label


def augment(image, label, rng):
    """The authors' training augmentation of (PIL RGB image, H × W uint8 label), with randomness from rng.

    Same distribution as: rescale by a factor drawn from SCALES to int(H·s) × int(W·s) (image bilinear, label
    nearest), pad bottom/right to CROP_SIZE, crop CROP_SIZE × CROP_SIZE at an offset uniform over every valid
    position, flip horizontally with p = 0.5, normalise. Only the crop window is resampled: PIL maps output pixel
    j of a box to source x = box_x0 + (j + 0.5)·box_w / out_w − 0.5, so with box_x0 = left·W / W_s and
    box_w / out_w = W / W_s it samples exactly where the full resize would for pixel left + j. What differs is
    rounding: bilinear values by at most 2 of 255 levels, and nearest neighbour may pick the other pixel where a
    source coordinate lies exactly on a pixel edge (a tie either way is right).
    """
    crop = settings.CROP_SIZE
    scale = settings.SCALES[rng.integers(len(settings.SCALES))]
    width, height = image.size
    scaled_w, scaled_h = int(width * scale), int(height * scale)
    top = int(rng.integers(max(scaled_h - crop, 0) + 1))
    left = int(rng.integers(max(scaled_w - crop, 0) + 1))
    flip = rng.random() < 0.5
    out_w, out_h = min(crop, scaled_w), min(crop, scaled_h)
    box = (left * width / scaled_w, top * height / scaled_h,
           (left + out_w) * width / scaled_w, (top + out_h) * height / scaled_h)
    image = image.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    label = Image.fromarray(label).resize((out_w, out_h), Image.Resampling.NEAREST, box=box)
    return to_tensors(image, label, crop, crop, flip)


def stride_size(size):
    """The smallest k·stride + 1 ≥ size, stride the output stride at test time (EVAL_STRIDE, else STRIDE): the
    input sizes whose features align with the output stride (the authors' pad_inf)."""
    stride = settings.EVAL_STRIDE or settings.STRIDE
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
