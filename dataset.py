"""PASCAL VOC 2012 + SBD: the training and validation datasets, and the data commands.

    python dataset.py prepare --voc data/VOC2012 --sbd data/benchmark_RELEASE/dataset
        builds SegmentationClassAug/ and ImageSets/SegmentationAug/ inside the VOC2012 folder, which then
        is DATA_ROOT (train 1464, val 1449, trainval 2913, trainaug 10582 ids on the real data)
    python dataset.py demo data/demo [--seed 0]
        writes a small generated dataset in the same layout (then set DATA_ROOT = './data/demo')
    python dataset.py check
        verifies DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT, names every bad file and exits 1 if there is one

DATA_ROOT holds JPEGImages/<id>.jpg, SegmentationClassAug/<id>.png (class index per pixel, IGNORE_LABEL on
object borders and wherever no class applies) and ImageSets/SegmentationAug/{train,val,trainval,trainaug}.txt
(one id per line, sorted).
"""
import argparse
import collections
import functools
import multiprocessing
import os
import time

import numpy as np
import scipy.io
import scipy.ndimage
import torch
from PIL import Image, ImageDraw

import settings

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')
SPLITS = ('train', 'val', 'trainval', 'trainaug')

# demo dataset: class index -> (shape, base RGB colour); saturated colours, while backgrounds are greyish
DEMO_CLASSES = {1: ('triangle', (40, 90, 220)),    # aeroplane, blue
                6: ('rectangle', (235, 200, 30)),  # bus, yellow
                8: ('ellipse', (205, 105, 35)),    # cat, orange
                15: ('cross', (215, 30, 70)),      # person, red
                20: ('ring', (40, 185, 70))}       # tvmonitor, green


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


def colorize(label):
    """H × W class indices -> H × W × 3 uint8 VOC colours (IGNORE_LABEL 255 is cream, as in VOC)."""
    return np.array(voc_palette(), np.uint8).reshape(256, 3)[np.asarray(label, np.uint8)]


def save_label_png(label, path):
    """Writes H × W class indices as a palette PNG in VOC colours, atomically (write, then rename)."""
    image = Image.fromarray(np.asarray(label, np.uint8))
    image.putpalette(voc_palette())
    image.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def data_root_or_default(data_root):
    return settings.DATA_ROOT if data_root is None else data_root


def image_path(image_id, data_root=None):
    return os.path.join(data_root_or_default(data_root), 'JPEGImages', image_id + '.jpg')


def label_path(image_id, data_root=None):
    return os.path.join(data_root_or_default(data_root), 'SegmentationClassAug', image_id + '.png')


def list_path(split, data_root=None):
    return os.path.join(data_root_or_default(data_root), 'ImageSets', 'SegmentationAug', split + '.txt')


def read_list(path):
    """The ids of a list file, one per line (VOC's and SBD's lists, and ours)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_ids(split, data_root=None):
    return read_list(list_path(split, data_root))


def write_lists(lists, data_root):
    """Writes ImageSets/SegmentationAug/<split>.txt for each split -> ids of lists."""
    os.makedirs(os.path.dirname(list_path('train', data_root)), exist_ok=True)
    for split, ids in lists.items():
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
    """The smallest k·STRIDE + 1 ≥ size: the input sizes whose features align with the output stride."""
    return -(-(size - 1) // settings.STRIDE) * settings.STRIDE + 1


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


# ---------------------------------------------------------------- prepare

def label_sources(ids, voc_dir, sbd_dir):
    """id -> the file its label comes from: VOC's palette PNG when VOC has one (it wins), else SBD's .mat."""
    voc_labels = set(os.listdir(os.path.join(voc_dir, 'SegmentationClass')))
    sbd_labels = set(os.listdir(os.path.join(sbd_dir, 'cls')))
    images = set(os.listdir(os.path.join(voc_dir, 'JPEGImages')))
    sources = {}
    for image_id in ids:
        if image_id + '.jpg' not in images:
            raise SystemExit(f'prepare: missing {os.path.join(voc_dir, "JPEGImages", image_id + ".jpg")}')
        if image_id + '.png' in voc_labels:
            sources[image_id] = os.path.join(voc_dir, 'SegmentationClass', image_id + '.png')
        elif image_id + '.mat' in sbd_labels:
            sources[image_id] = os.path.join(sbd_dir, 'cls', image_id + '.mat')
        else:
            raise SystemExit(f'prepare: no label for {image_id}: neither '
                             f'{os.path.join(voc_dir, "SegmentationClass", image_id + ".png")} nor '
                             f'{os.path.join(sbd_dir, "cls", image_id + ".mat")} exists')
    return sources


def read_sbd_label(path):
    """H × W uint8 class map of an SBD cls/<id>.mat (struct GTcls, field Segmentation)."""
    try:
        return np.asarray(scipy.io.loadmat(path)['GTcls'][0]['Segmentation'][0], np.uint8)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise ValueError(f'unreadable SBD label {path}: {error}') from None


def convert_label(job):
    """Writes one SegmentationClassAug label from its source; 'kept' when an identical one is already there."""
    source, target = job
    label = read_label(source) if source.endswith('.png') else read_sbd_label(source)
    if os.path.exists(target):
        try:
            if np.array_equal(read_label(target), label):
                return 'kept'
        except ValueError:  # a broken earlier output is rewritten
            pass
    save_label_png(label, target)
    return 'written'


def prepare(voc_dir, sbd_dir):
    """Builds SegmentationClassAug/ and ImageSets/SegmentationAug/ inside voc_dir.

    Safe to re-run: each label is converted again and compared with the existing file, which is rewritten only
    when it differs or does not read; files are written atomically, so an interrupted run leaves no half file.
    """
    voc_lists = {split: os.path.join(voc_dir, 'ImageSets', 'Segmentation', split + '.txt')
                 for split in ('train', 'val', 'trainval')}
    sbd_lists = {split: os.path.join(sbd_dir, split + '.txt') for split in ('train', 'val')}
    for path in (voc_dir, os.path.join(voc_dir, 'JPEGImages'), os.path.join(voc_dir, 'SegmentationClass'),
                 *voc_lists.values(), sbd_dir, os.path.join(sbd_dir, 'cls'), *sbd_lists.values()):
        if not os.path.exists(path):
            raise SystemExit(f'prepare: missing {path}')
    voc = {split: set(read_list(path)) for split, path in voc_lists.items()}
    sbd = {split: set(read_list(path)) for split, path in sbd_lists.items()}
    lists = {'train': sorted(voc['train']), 'val': sorted(voc['val']), 'trainval': sorted(voc['trainval']),
             'trainaug': sorted((voc['train'] | sbd['train'] | sbd['val']) - voc['val'])}
    sources = label_sources(sorted(set(lists['trainaug']) | set(lists['val'])), voc_dir, sbd_dir)
    os.makedirs(os.path.join(voc_dir, 'SegmentationClassAug'), exist_ok=True)
    jobs = [(source, label_path(image_id, voc_dir)) for image_id, source in sources.items()]
    outcomes, tic = collections.Counter(), time.time()
    try:
        with multiprocessing.Pool() as pool:
            for done, outcome in enumerate(pool.imap_unordered(convert_label, jobs, chunksize=32), 1):
                outcomes[outcome] += 1
                settings.log_progress('prepare: labels', done, len(jobs), tic)
    except ValueError as error:
        raise SystemExit(f'prepare: {error}') from None
    write_lists(lists, voc_dir)
    from_voc = sum(source.endswith('.png') for source in sources.values())
    settings.logger.info('prepare: %s; labels: %d from VOC, %d from SBD, %d written, %d already correct',
                         ', '.join(f'{split} {len(ids)}' for split, ids in lists.items()),
                         from_voc, len(sources) - from_voc, outcomes['written'], outcomes['kept'])


# ---------------------------------------------------------------- demo

def demo_background(rng, height, width):
    """H × W × 3 float: a gradient, smooth blotches or a flat colour, in greyish tints unlike any object."""
    colours = rng.uniform(50, 170, (2, 1)) + rng.uniform(-25, 25, (2, 3))  # 2 × 3
    kind = rng.integers(3)
    if kind == 0:
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:height, 0:width]
        ramp = np.cos(angle) * x + np.sin(angle) * y
        ramp = ((ramp - ramp.min()) / (ramp.max() - ramp.min()))[..., None]  # H × W × 1 in [0, 1]
        return colours[0] * (1 - ramp) + colours[1] * ramp
    if kind == 1:
        blotches = rng.uniform(50, 170, (4, 4, 1)) + rng.uniform(-25, 25, (4, 4, 3))  # 4 × 4 × 3 greyish tints
        blotches = Image.fromarray(blotches.astype(np.uint8))
        return np.asarray(blotches.resize((width, height), Image.Resampling.BICUBIC), np.float64)
    return np.broadcast_to(colours[0], (height, width, 3)).astype(np.float64)


def demo_mask(shape, box, height, width):
    """H × W bool mask of a shape drawn in box = (x0, y0, x1, y1)."""
    mask = Image.new('L', (width, height))
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    if shape == 'triangle':
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=1)
    elif shape == 'rectangle':
        draw.rectangle(box, fill=1)
    elif shape == 'ellipse':
        draw.ellipse(box, fill=1)
    elif shape == 'cross':
        third_w, third_h = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + third_w, y0, x1 - third_w, y1), fill=1)
        draw.rectangle((x0, y0 + third_h, x1, y1 - third_h), fill=1)
    else:  # ring
        draw.ellipse(box, outline=1, width=max(4, int(min(x1 - x0, y1 - y0) / 4)))
    return np.asarray(mask, bool)


def demo_sample(rng):
    """(H × W × 3 uint8 image, H × W uint8 label) with 1-3 objects of DEMO_CLASSES on a background."""
    height, width = rng.integers(80, 141, 2)
    if height == width:
        width -= 9  # never square
    image = demo_background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    for class_index in rng.choice(list(DEMO_CLASSES), rng.integers(1, 4)):
        shape, colour = DEMO_CLASSES[class_index]
        size = rng.uniform(0.4, 0.75) * min(height, width) * rng.uniform(0.8, 1.25, 2)  # object w, h
        x0, y0 = rng.uniform(-0.15 * size, (width, height) - 0.85 * size)
        mask = demo_mask(shape, (x0, y0, x0 + size[0], y0 + size[1]), height, width)
        label[mask] = class_index
        image[mask] = np.asarray(colour) + rng.uniform(-25, 25, 3)
    # VOC-like ignore borders: every pixel with a differently labelled 3 × 3 neighbour, 2 px across an edge
    label[scipy.ndimage.maximum_filter(label, 3) != scipy.ndimage.minimum_filter(label, 3)] = settings.IGNORE_LABEL
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_demo(out_dir, seed=0, n_train=300, n_val=60):
    """Writes a generated dataset in the DATA_ROOT layout; the same seed gives the same files."""
    rng = np.random.default_rng(seed)
    ids = [f'{index:06d}' for index in range(n_train + n_val)]
    for folder in ('JPEGImages', 'SegmentationClassAug'):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    for image_id in ids:
        image, label = demo_sample(rng)
        Image.fromarray(image).save(image_path(image_id, out_dir), quality=90)
        save_label_png(label, label_path(image_id, out_dir))
    write_lists({'train': ids[:n_train], 'val': ids[n_train:], 'trainval': ids, 'trainaug': ids[:n_train]}, out_dir)
    settings.logger.info('demo: %d train, %d val images in %s', n_train, n_val, out_dir)


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


def main():
    parser = argparse.ArgumentParser(description='Prepare, generate or check the segmentation data.')
    commands = parser.add_subparsers(dest='command', required=True)
    prepare_parser = commands.add_parser('prepare', help='build the training layout from VOC2012 and SBD')
    prepare_parser.add_argument('--voc', required=True, help='VOC2012 folder (becomes DATA_ROOT)')
    prepare_parser.add_argument('--sbd', required=True, help="SBD's benchmark_RELEASE/dataset folder")
    demo_parser = commands.add_parser('demo', help='write a small generated dataset')
    demo_parser.add_argument('out_dir')
    demo_parser.add_argument('--seed', type=int, default=0)
    commands.add_parser('check', help='verify DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT')
    args = parser.parse_args()
    if args.command == 'prepare':
        prepare(args.voc, args.sbd)
    elif args.command == 'demo':
        make_demo(args.out_dir, args.seed)
    elif check():
        raise SystemExit(1)


if __name__ == '__main__':
    main()
