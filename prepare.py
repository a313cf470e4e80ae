"""Data commands: the official downloads → the layout the loaders read, a generated demo dataset, and a check.

    python prepare.py voc --voc data/VOC2012 --sbd data/benchmark_RELEASE/dataset
        builds SegmentationClassAug/ and ImageSets/SegmentationAug/ inside the VOC2012 folder, which then
        is DATA_ROOT (train 1464, val 1449, trainval 2913, trainaug 10582 ids on the real data)
    python prepare.py demo data/demo [--seed 0]
        writes a small generated dataset in the VOC layout (then set DATA_ROOT = './data/demo')
    python prepare.py check
        verifies DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT, names every bad file and exits 1 if there is one

Every command is safe to re-run: labels are compared with what is there and written (atomically) only when
they differ; a missing folder or file stops the command, naming it.
"""
import argparse
import collections
import multiprocessing
import os
import time

import numpy as np
import scipy.io
import scipy.ndimage
from PIL import Image, ImageDraw

import dataset
import settings

# demo dataset: class index -> (shape, base RGB colour); saturated colours, while backgrounds are greyish
DEMO_CLASSES = {1: ('triangle', (40, 90, 220)),    # aeroplane, blue
                6: ('rectangle', (235, 200, 30)),  # bus, yellow
                8: ('ellipse', (205, 105, 35)),    # cat, orange
                15: ('cross', (215, 30, 70)),      # person, red
                20: ('ring', (40, 185, 70))}       # tvmonitor, green


# ---------------------------------------------------------------- voc

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
    label = dataset.read_label(source) if source.endswith('.png') else read_sbd_label(source)
    if os.path.exists(target):
        try:
            if np.array_equal(dataset.read_label(target), label):
                return 'kept'
        except ValueError:  # a broken earlier output is rewritten
            pass
    dataset.save_label_png(label, target)
    return 'written'


def prepare_voc(voc_dir, sbd_dir):
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
    voc = {split: set(dataset.read_list(path)) for split, path in voc_lists.items()}
    sbd = {split: set(dataset.read_list(path)) for split, path in sbd_lists.items()}
    lists = {'train': sorted(voc['train']), 'val': sorted(voc['val']), 'trainval': sorted(voc['trainval']),
             'trainaug': sorted((voc['train'] | sbd['train'] | sbd['val']) - voc['val'])}
    sources = label_sources(sorted(set(lists['trainaug']) | set(lists['val'])), voc_dir, sbd_dir)
    os.makedirs(os.path.join(voc_dir, 'SegmentationClassAug'), exist_ok=True)
    jobs = [(source, dataset.label_path(image_id, voc_dir)) for image_id, source in sources.items()]
    outcomes, tic = collections.Counter(), time.time()
    try:
        with multiprocessing.Pool() as pool:
            for done, outcome in enumerate(pool.imap_unordered(convert_label, jobs, chunksize=32), 1):
                outcomes[outcome] += 1
                settings.log_progress('prepare: labels', done, len(jobs), tic)
    except ValueError as error:
        raise SystemExit(f'prepare: {error}') from None
    dataset.write_lists(lists, voc_dir)
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
        Image.fromarray(image).save(dataset.image_path(image_id, out_dir), quality=90)
        dataset.save_label_png(label, dataset.label_path(image_id, out_dir))
    dataset.write_lists({'train': ids[:n_train], 'val': ids[n_train:], 'trainval': ids, 'trainaug': ids[:n_train]}, out_dir)
    settings.logger.info('demo: %d train, %d val images in %s', n_train, n_val, out_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    voc = commands.add_parser('voc', help='PASCAL VOC 2012 + SBD: SegmentationClassAug/ and the trainaug lists')
    voc.add_argument('--voc', required=True, help='VOC2012 folder (becomes DATA_ROOT)')
    voc.add_argument('--sbd', required=True, help="SBD's benchmark_RELEASE/dataset folder")
    demo = commands.add_parser('demo', help='write a small generated dataset')
    demo.add_argument('out_dir')
    demo.add_argument('--seed', type=int, default=0)
    commands.add_parser('check', help='verify DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT')
    args = parser.parse_args()
    if args.command == 'voc':
        prepare_voc(args.voc, args.sbd)
    elif args.command == 'demo':
        make_demo(args.out_dir, args.seed)
    elif dataset.check():
        raise SystemExit(1)


if __name__ == '__main__':
    main()
