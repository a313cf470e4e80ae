"""Data commands: the official downloads → the layout the loaders read, a generated demo dataset, and a check.

    python prepare.py voc --voc data/VOC2012 --sbd data/benchmark_RELEASE/dataset
        builds SegmentationClassAug/ and ImageSets/SegmentationAug/ inside the VOC2012 folder, which then
        is DATA_ROOT (train 1464, val 1449, trainval 2913, trainaug 10582 ids on the real data); with
        VOC2012test.tar unpacked into the same folder, also the test list (1456 images, no labels)
    python prepare.py cityscapes --root data/cityscapes
        writes gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png (the 19 trainIds of cityscapesScripts,
        every other id IGNORE_LABEL) and lists/{train,val}.txt (2975, 500 ids) into the folder holding
        leftImg8bit/ and gtFine/, which then is DATA_ROOT; ids look like train/aachen/aachen_000000_000019;
        with leftImg8bit/test/ there, also lists/test.txt (1525 images, no labels)
    python prepare.py ade20k --root data/ADEChallengeData2016
        writes labels/{training,validation}/ beside annotations/ (class k → k - 1, 0 'other' → IGNORE_LABEL) and
        lists/{train,val}.txt (20210, 2000 ids); the folder is DATA_ROOT; with release_test.zip unpacked into
        it or beside it, also lists/test.txt (release_test/testing/: 3352 images, no labels)
    python prepare.py cocostuff --root data/cocostuff
        the 10k release (images/, annotations/*.mat, imageLists/) or the 164k one (images/train2017/, val2017/
        and the stuffthingmaps PNGs in annotations/ or stuffthingmaps_trainval2017/): writes labels/ in the 171
        classes (unlabeled and the 11 ids never annotated → IGNORE_LABEL) and lists/{train,val}.txt (10k: 9000
        from train.txt, 1000 from test.txt; 164k: 118287, 5000); the folder is DATA_ROOT
    python prepare.py coco-voc --root data/coco
        COCO 2017 in VOC's 21 classes (DATASET = 'coco_voc'): from annotations/instances_{train,val}2017.json (polygons
        and RLE, crowds too, through pycocotools; the first instance in annotation order keeps a pixel) writes
        voc_labels/ and voc_lists/{train,val}.txt of the images with more than 1000 pixels of VOC classes; images
        in {train,val}2017/ or images/{train,val}2017/; the folder is DATA_ROOT
    python prepare.py coco-panoptic --root data/coco
        COCO 2017 panoptic as the EMANet detectron2 port trains on it (DATASET = 'coco_panoptic', 54 classes: 0 every
        thing, 1-53 the stuff categories in the JSON's order, 255 unlabeled): from annotations/panoptic_{train,val}
        2017.json and the PNGs of annotations/panoptic_{train,val}2017/ writes panoptic_labels/ and
        panoptic_lists/{train,val}.txt (118287, 5000 ids); the folder is DATA_ROOT
    python prepare.py context --root data/VOCdevkit/VOC2010 --context data/pascal-context
        from trainval/<id>.mat and labels.txt (or 59_context_labels/<id>.png and 59_labels.txt): writes
        SegmentationClassContext/ (0 background, 1-59) and ImageSets/SegmentationContext/{train,val}.txt (4998,
        5105 ids, VOC2010's ImageSets/Main lists) into the VOC2010 folder, which then is DATA_ROOT
    python prepare.py folder --images photos --masks masks --out data/mine [--colours labelmap.txt]
        your own data (DATASET = 'folder'): images and masks paired by relative path without extension
        (photos/a/img_1.jpg with masks/a/img_1.png); masks of class indices, palette PNGs (their indices), RGB
        colours (through --colours FILE, else each colour found is a class) or 0/255 (--binary); writes labels/,
        lists/{train,val}.txt (--val-fraction 0.1 drawn with a fixed seed, or --val-images DIR --val-masks DIR),
        classes.txt (name the classes there), palette.txt and images.txt; the folder is DATA_ROOT
    python prepare.py folder --images photos --masks cvat_export --out data/mine
        a CVAT "Segmentation mask 1.1" export: its SegmentationClass/ masks and labelmap.txt colours
    python prepare.py demo data/demo [--seed 0]
        writes a small generated dataset in the VOC layout (then set DATASET = 'demo', DATA_ROOT = './data/demo')
    python prepare.py check
        verifies DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT, names every bad file and exits 1 if there is one;
        prints each split's image count and sizes and each class's share of its pixels and images, and warns of
        the classes no training label has

Every command is safe to re-run: labels are compared with what is there and written (atomically) only when
they differ; a missing folder or file, an id no class has, or a label whose size is not its image's stops the
command, naming it. Images stay where they are; the lists name ids, which may hold sub-folders.
"""
import argparse
import collections
import contextlib
import functools
import json
import math
import os
import time

import numpy as np
import scipy.io
import scipy.ndimage
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

import dataset
import settings

# demo dataset: class index -> (shape, base RGB colour); four hues far apart, saturated, while backgrounds are greyish
DEMO_CLASSES = {1: ('triangle', (40, 80, 230)),    # aeroplane, blue
                6: ('rectangle', (240, 220, 40)),  # bus, yellow
                15: ('cross', (220, 40, 40)),      # person, red
                20: ('ellipse', (40, 200, 60))}    # tvmonitor, green


# ---------------------------------------------------------------- every dataset

UNKNOWN = -1  # in a lut: an id the release does not define, an error


@contextlib.contextmanager
def as_dataset(name):
    """While a command writes name's files: settings.DATASET = name and N_CLASSES = its class count, so the path
    helpers and the palette are name's whatever settings.py says (dataset.worker_pool hands them to worker
    processes, however they start); the old values afterwards. Each command is decorated with it."""
    saved = settings.DATASET, settings.N_CLASSES
    settings.DATASET, settings.N_CLASSES = name, len(dataset.DATASETS[name]['classes'])
    try:
        yield
    finally:
        settings.DATASET, settings.N_CLASSES = saved


def require(*paths):
    """Stops the command, naming the first of paths that does not exist."""
    for path in paths:
        if not os.path.exists(path):
            raise SystemExit(f'prepare: missing {path}')


def found_sources(read, base, folders, suffix):
    """(sources, lists) of splits whose label files lie below base, each split's in the folder that folders names:
    every file <stem><suffix> there or deeper is an id, its path from base less the suffix
    ('train/aachen/aachen_000000_000019'), whose label is read(file). A split without any stops the command."""
    sources, lists = {}, {}
    for split, folder in folders.items():
        found = found_files(base, folder, suffix)
        lists[split] = sorted(found)
        sources.update({image_id: (read, path) for image_id, path in found.items()})
    return sources, lists


def found_files(base, folder, suffix):
    """{id: file} of every file <stem><suffix> in base/folder or deeper, id its path from base less the suffix;
    none stops the command."""
    found = {}
    for directory, _, names in os.walk(os.path.join(base, folder)):
        for name in names:
            if name.endswith(suffix):
                image_id = os.path.relpath(os.path.join(directory, name[:-len(suffix)]), base)
                found[image_id.replace(os.sep, '/')] = os.path.join(directory, name)
    if not found:
        raise SystemExit(f'prepare: no *{suffix} file below {os.path.join(base, folder)}')
    return found


def listed_sources(read, lists, folder, extension, lists_dir):
    """{id: (read, folder/<id><extension>)} of every id of lists (split → ids, from the list files in lists_dir);
    an id without its file stops the command, naming both."""
    present = set(os.listdir(folder))
    sources = {}
    for image_id in sorted({image_id for ids in lists.values() for image_id in ids}):
        if image_id + extension not in present:
            raise SystemExit(f'prepare: {lists_dir} lists {image_id}, but there is no '
                             f'{os.path.join(folder, image_id + extension)}')
        sources[image_id] = (read, os.path.join(folder, image_id + extension))
    return sources


def read_mat(key, path):
    """The array `key` of a .mat file (COCO-Stuff 10k's S, PASCAL Context's LabelMap)."""
    try:
        return scipy.io.loadmat(path)[key]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f'unreadable {key} in {path}: {error}') from None


def read_mapped(read, lut, source):
    """H × W uint8 class indices of the ids read(source) returns, through lut (id → class index or IGNORE_LABEL);
    an id that lut lacks or has as UNKNOWN is an error naming source."""
    ids = np.asarray(read(source), np.int64)
    unknown = (ids < 0) | (ids >= len(lut))
    label = lut[np.where(unknown, 0, ids)]
    unknown |= label == UNKNOWN
    if unknown.any():
        raise ValueError(f'{source} has values {np.unique(ids[unknown]).tolist()}, which no class of its release has')
    return label.astype(np.uint8)


def image_size(path):
    """(W, H) of an image, from its header alone; errors name the file."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise FileNotFoundError(f'missing image: {path}') from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of reporting a broken file
        raise ValueError(f'unreadable image {path}: {error}') from None


def convert_label(job):
    """Writes the label read(source), once it fits its image, as target; 'kept' when an identical one is already
    there. job = (read, source, image, target)."""
    read, source, image, target = job
    label = read(source)
    dataset.check_label(label, image_size(image), source)
    return write_if_changed(label, target)


def write_if_changed(label, target):
    """Writes the label as target unless an identical one is there: 'kept' or 'written'."""
    if os.path.exists(target):
        try:
            if np.array_equal(dataset.read_label(target), label):
                return 'kept'
        except ValueError:  # a broken earlier output is rewritten
            pass
    dataset.save_label_png(label, target)
    return 'written'


def write_dataset(root, sources, lists):
    """Writes the label of every id of sources (id → (read, source file)) and the split lists (split → ids) into
    root, in the layout of settings.DATASET, then logs the counts.

    Safe to re-run: each label is converted again and compared with the existing file, which is rewritten only
    when it differs or does not read; files are written atomically and the lists last, so an interrupted run
    leaves no half file and no list of missing labels.
    """
    jobs = [(read, source, dataset.image_path(image_id, root), dataset.label_path(image_id, root))
            for image_id, (read, source) in sources.items()]
    outcomes, tic = collections.Counter(), time.time()
    try:
        with dataset.worker_pool() as pool:
            for done, outcome in enumerate(pool.imap_unordered(convert_label, jobs, chunksize=32), 1):
                outcomes[outcome] += 1
                settings.log_progress('prepare: labels', done, len(jobs), tic)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'prepare: {error}') from None
    dataset.write_lists(lists, root)
    settings.logger.info('prepare: %s %s; labels: %d written, %d already correct', settings.DATASET,
                         ', '.join(f'{split} {len(ids)}' for split, ids in lists.items()),
                         outcomes['written'], outcomes['kept'])


# ---------------------------------------------------------------- voc

def label_sources(ids, voc_dir, sbd_dir):
    """id -> (reader, file) of its label: VOC's palette PNG when VOC has one (it wins), else SBD's .mat."""
    voc_labels = set(os.listdir(os.path.join(voc_dir, 'SegmentationClass')))
    sbd_labels = set(os.listdir(os.path.join(sbd_dir, 'cls')))
    images = set(os.listdir(os.path.join(voc_dir, 'JPEGImages')))
    sources = {}
    for image_id in ids:
        if image_id + '.jpg' not in images:
            raise SystemExit(f'prepare: missing {os.path.join(voc_dir, "JPEGImages", image_id + ".jpg")}')
        if image_id + '.png' in voc_labels:
            sources[image_id] = (dataset.read_label, os.path.join(voc_dir, 'SegmentationClass', image_id + '.png'))
        elif image_id + '.mat' in sbd_labels:
            sources[image_id] = (read_sbd_label, os.path.join(sbd_dir, 'cls', image_id + '.mat'))
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


@as_dataset('voc')
def prepare_voc(voc_dir, sbd_dir):
    """Builds SegmentationClassAug/ and ImageSets/SegmentationAug/ inside voc_dir."""
    voc_lists = {split: os.path.join(voc_dir, 'ImageSets', 'Segmentation', split + '.txt')
                 for split in ('train', 'val', 'trainval')}
    sbd_lists = {split: os.path.join(sbd_dir, split + '.txt') for split in ('train', 'val')}
    require(voc_dir, os.path.join(voc_dir, 'JPEGImages'), os.path.join(voc_dir, 'SegmentationClass'),
            *voc_lists.values(), sbd_dir, os.path.join(sbd_dir, 'cls'), *sbd_lists.values())
    voc = {split: set(dataset.read_list(path)) for split, path in voc_lists.items()}
    sbd = {split: set(dataset.read_list(path)) for split, path in sbd_lists.items()}
    lists = {'train': sorted(voc['train']), 'val': sorted(voc['val']), 'trainval': sorted(voc['trainval']),
             'trainaug': sorted((voc['train'] | sbd['train'] | sbd['val']) - voc['val'])}
    sources = label_sources(sorted(set(lists['trainaug']) | set(lists['val'])), voc_dir, sbd_dir)
    test_list = os.path.join(voc_dir, 'ImageSets', 'Segmentation', 'test.txt')
    if os.path.exists(test_list):  # VOC2012test.tar unpacked into the same folder: images only
        lists['test'] = sorted(dataset.read_list(test_list))
        require(*(dataset.image_path(image_id, voc_dir) for image_id in lists['test']))
    from_voc = sum(read is dataset.read_label for read, _ in sources.values())
    settings.logger.info('prepare: labels: %d from VOC, %d from SBD', from_voc, len(sources) - from_voc)
    write_dataset(voc_dir, sources, lists)


# ---------------------------------------------------------------- cityscapes

@as_dataset('cityscapes')
def prepare_cityscapes(root):
    """Writes gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png from the _gtFine_labelIds.png beside each,
    and lists/{train,val}.txt; the images stay in leftImg8bit/."""
    splits = ('train', 'val')
    require(root, *(os.path.join(root, folder) for folder in ('gtFine', 'leftImg8bit')),
            *(os.path.join(root, 'gtFine', split) for split in splits))
    lut = np.full(256, settings.IGNORE_LABEL, np.int16)
    lut[list(dataset.CITYSCAPES_LABEL_IDS)] = np.arange(len(dataset.CITYSCAPES_LABEL_IDS))
    read = functools.partial(read_mapped, dataset.read_label, lut)
    sources, lists = found_sources(read, os.path.join(root, 'gtFine'), {split: split for split in splits},
                                   '_gtFine_labelIds.png')
    if os.path.isdir(os.path.join(root, 'leftImg8bit', 'test')):  # images only
        lists['test'] = sorted(found_files(os.path.join(root, 'leftImg8bit'), 'test', '_leftImg8bit.png'))
    write_dataset(root, sources, lists)


# ---------------------------------------------------------------- ade20k

@as_dataset('ade20k')
def prepare_ade20k(root):
    """Writes labels/{training,validation}/<stem>.png from annotations/ (0 'other' → IGNORE_LABEL, k → k - 1; a
    value above 150 is an error) and lists/{train,val}.txt; the images stay in images/."""
    splits = {'train': 'training', 'val': 'validation'}
    require(root, *(os.path.join(root, folder, sub) for folder in ('images', 'annotations') for sub in splits.values()))
    n_classes = len(dataset.ADE20K_CLASSES)
    lut = np.full(256, UNKNOWN, np.int16)
    lut[0] = settings.IGNORE_LABEL
    lut[1:n_classes + 1] = np.arange(n_classes)
    read = functools.partial(read_mapped, dataset.read_label, lut)
    sources, lists = found_sources(read, os.path.join(root, 'annotations'), splits, '.png')
    # release_test.zip unpacked into root or beside it: images only, ids like ../release_test/testing/ADE_test_00000001
    for test_dir in (os.path.join(root, 'release_test'), os.path.join(os.path.dirname(os.path.abspath(root)),
                                                                       'release_test')):
        if os.path.isdir(os.path.join(test_dir, 'testing')):
            images = os.path.relpath(os.path.join(test_dir, 'testing'), os.path.join(root, 'images'))
            lists['test'] = sorted(found_files(os.path.join(root, 'images'), images, '.jpg'))
            break
    write_dataset(root, sources, lists)


# ---------------------------------------------------------------- cocostuff

# the 11 thing ids of COCO-Stuff's 182 (nightrome/cocostuff labels.txt) that no image is annotated with, as its
# README lists them: they become IGNORE_LABEL, and the other 171 ids, in id order, the classes 0-170
COCOSTUFF_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)


def cocostuff_lut(offset, unlabeled):
    """id → class of COCO-Stuff labels that store id 1..182 as id - offset and unlabeled pixels as `unlabeled`."""
    used = [i for i in range(1, 183) if i not in COCOSTUFF_UNUSED_IDS]
    lut = np.full(256, UNKNOWN, np.int16)
    lut[np.array(COCOSTUFF_UNUSED_IDS) - offset] = settings.IGNORE_LABEL
    lut[np.array(used) - offset] = np.arange(len(used))
    lut[unlabeled] = settings.IGNORE_LABEL
    return lut


@as_dataset('cocostuff')
def prepare_cocostuff(root):
    """Writes labels/ and lists/{train,val}.txt from either release, told apart by its folders: 10k
    (imageLists/{train,test}.txt, images/<id>.jpg, annotations/<id>.mat with S: 0 unlabeled, ids 1..182) or 164k
    (images/{train,val}2017/, stuffthingmaps_trainval2017.zip's {train,val}2017/ PNGs of id - 1 and 255
    unlabeled, unzipped into annotations/ as its README does, or left as stuffthingmaps_trainval2017/)."""
    if os.path.isdir(os.path.join(root, 'imageLists')):
        # the 10k release's test list is the split its papers evaluate on: 'val' here, as VAL_SPLIT says
        lists_dir = os.path.join(root, 'imageLists')
        require(os.path.join(root, 'images'), os.path.join(root, 'annotations'),
                *(os.path.join(lists_dir, name) for name in ('train.txt', 'test.txt')))
        lists = {split: sorted(dataset.read_list(os.path.join(lists_dir, name)))
                 for split, name in (('train', 'train.txt'), ('val', 'test.txt'))}
        read = functools.partial(read_mapped, functools.partial(read_mat, 'S'), cocostuff_lut(0, 0))
        sources = listed_sources(read, lists, os.path.join(root, 'annotations'), '.mat', lists_dir)
    elif any(os.path.isdir(os.path.join(root, 'images', sub)) for sub in ('train2017', 'val2017')):
        splits = {'train': 'train2017', 'val': 'val2017'}
        folders = [os.path.join(root, name) for name in ('annotations', 'stuffthingmaps_trainval2017')]
        folder = next((folder for folder in folders if os.path.isdir(os.path.join(folder, 'train2017'))), None)
        if folder is None:
            raise SystemExit(f'prepare: COCO-Stuff 164k needs the train2017/ and val2017/ label PNGs of '
                             f'stuffthingmaps_trainval2017.zip in {folders[0]} or {folders[1]}')
        require(*(os.path.join(root, 'images', sub) for sub in splits.values()), os.path.join(folder, 'val2017'))
        read = functools.partial(read_mapped, dataset.read_label, cocostuff_lut(1, 255))
        sources, lists = found_sources(read, folder, splits, '.png')
    else:
        raise SystemExit(f'prepare: {root} is neither COCO-Stuff 10k (imageLists/, images/, annotations/) nor '
                         f'COCO-Stuff 164k (images/train2017/, images/val2017/)')
    write_dataset(root, sources, lists)


# ---------------------------------------------------------------- coco-voc and coco-panoptic

# COCO category id → VOC class, as PyTorch-Encoding's and torchvision's reference scripts map them; every other
# category is background 0
COCO_VOC_CLASSES = {1: 15, 2: 2, 3: 7, 4: 14, 5: 1, 6: 6, 7: 19, 9: 4, 16: 3, 17: 8, 18: 12, 19: 13, 20: 17, 21: 10,
                    44: 5, 62: 9, 63: 18, 64: 16, 67: 11, 72: 20}
COCO_VOC_MIN_PIXELS = 1000  # an image is kept only with more non-background pixels than this (PyTorch-Encoding's rule)


def read_json(path):
    """The parsed JSON file at path; a missing or unreadable one stops the command, naming it."""
    require(path)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise SystemExit(f'prepare: unreadable {path}: {error}') from None


def coco_images(root, folder):
    """The folder of a COCO release's images: root/folder (the official zips) or root/images/folder."""
    for path in (os.path.join(root, folder), os.path.join(root, 'images', folder)):
        if os.path.isdir(path):
            return path
    raise SystemExit(f'prepare: missing {os.path.join(root, folder)} (or {os.path.join(root, "images", folder)})')


def coco_id(root, images, file_name):
    """The id of a COCO image: its path from root less '.jpg' (train2017/000000000139)."""
    return os.path.relpath(os.path.join(images, os.path.splitext(file_name)[0]), root).replace(os.sep, '/')


def paint_instances(height, width, instances, source):
    """height × width uint8 VOC classes of instances ((category id, segmentation) in annotation order), as the COCO
    API decodes them: polygons (merged), uncompressed RLE (counts a list) and compressed RLE (counts a string).
    Every instance of a VOC class is painted, crowds too; the first one keeps a pixel. source names the
    annotation file in errors."""
    label = np.zeros((height, width), np.uint8)
    for category, segmentation in instances:
        if category not in COCO_VOC_CLASSES:
            continue
        try:
            if isinstance(segmentation, list):  # polygons
                rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation['counts'], list):  # uncompressed RLE (crowds)
                rle = coco_mask.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            mask = coco_mask.decode(rle).astype(bool)  # height × width
        except (TypeError, ValueError, KeyError, IndexError) as error:
            raise ValueError(f'{source}: a segmentation of category {category} does not decode: {error}') from None
        if mask.shape != (height, width):
            raise ValueError(f'{source}: a segmentation of category {category} is {mask.shape[1]}×{mask.shape[0]}, '
                             f'its image {width}×{height}')
        label[mask & (label == 0)] = COCO_VOC_CLASSES[category]
    return label


def foreground_pixels(job):
    """The number of non-background pixels of the label read(source) paints; job = (read, source)."""
    read, source = job
    return int(np.count_nonzero(read(source)))


def coco_voc_sources(root, split, folder):
    """{id: (read, source)} of the images of instances_<folder>.json with more than COCO_VOC_MIN_PIXELS pixels of
    VOC classes."""
    path = os.path.join(root, 'annotations', f'instances_{folder}.json')
    coco = read_json(path)
    images = coco_images(root, folder)
    instances = collections.defaultdict(list)
    for annotation in coco['annotations']:  # in annotation order
        instances[annotation['image_id']].append((annotation['category_id'], annotation['segmentation']))
    reads = {}
    for image in coco['images']:
        if any(category in COCO_VOC_CLASSES for category, _ in instances[image['id']]):
            source = f'{path} (image {image["id"]})'
            reads[coco_id(root, images, image['file_name'])] = (
                functools.partial(paint_instances, image['height'], image['width'], instances[image['id']]), source)
    try:
        with dataset.worker_pool() as pool:  # the labels are painted again when written: the rule needs them first
            counts = pool.map(foreground_pixels, list(reads.values()), chunksize=32)
    except ValueError as error:
        raise SystemExit(f'prepare: {error}') from None
    kept = {image_id: job for (image_id, job), count in zip(reads.items(), counts) if count > COCO_VOC_MIN_PIXELS}
    settings.logger.info('prepare: %s: %d images, %d with a VOC class, %d with more than %d pixels of them', split,
                         len(coco['images']), len(reads), len(kept), COCO_VOC_MIN_PIXELS)
    return kept


@as_dataset('coco_voc')
def prepare_coco_voc(root):
    """Writes voc_labels/ (VOC's 21 classes) and voc_lists/{train,val}.txt from annotations/instances_{train,val}
    2017.json; the images stay in {train,val}2017/ or images/{train,val}2017/."""
    sources, lists = {}, {}
    for split, folder in (('train', 'train2017'), ('val', 'val2017')):
        found = coco_voc_sources(root, split, folder)
        lists[split] = sorted(found)
        sources.update(found)
    write_dataset(root, sources, lists)


def read_panoptic(lut, segments, path):
    """H × W uint8 classes of a panoptic PNG (segment id = R + 256·G + 256²·B) whose segments ({segment id:
    category id}) map through lut ({category id: class}); 0 is unlabeled, IGNORE_LABEL; an id that segments lacks
    is an error naming the file."""
    rgb = dataset.open_image(path, 'panoptic PNG')
    if rgb.mode != 'RGB':
        raise ValueError(f'panoptic PNG {path} has mode {rgb.mode}, not RGB')
    rgb = np.asarray(rgb, np.uint32)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]  # H × W
    label = np.full(ids.shape, settings.IGNORE_LABEL, np.uint8)
    for segment_id in np.unique(ids).tolist():
        if segment_id == 0:
            continue
        if segment_id not in segments:
            raise ValueError(f'{path} has segment id {segment_id}, which its segments_info lacks')
        label[ids == segment_id] = lut[segments[segment_id]]
    return label


@as_dataset('coco_panoptic')
def prepare_coco_panoptic(root):
    """Writes panoptic_labels/ (0 things, 1..53 the stuff categories in the JSON's order, 255 unlabeled) and
    panoptic_lists/{train,val}.txt from annotations/panoptic_{train,val}2017.json and the PNGs in
    annotations/panoptic_{train,val}2017/; the images stay in {train,val}2017/ or images/{train,val}2017/."""
    sources, lists = {}, {}
    for split, folder in (('train', 'train2017'), ('val', 'val2017')):
        path = os.path.join(root, 'annotations', f'panoptic_{folder}.json')
        coco = read_json(path)
        stuff = [category['name'] for category in coco['categories'] if not category['isthing']]
        if tuple(stuff) != dataset.COCO_PANOPTIC_CLASSES[1:]:
            raise SystemExit(f'prepare: {path} has the stuff categories {stuff}, not the 53 of COCO panoptic 2017')
        lut = {category['id']: 0 for category in coco['categories'] if category['isthing']}
        lut.update({category['id']: index for index, category in
                    enumerate((c for c in coco['categories'] if not c['isthing']), 1)})
        images = coco_images(root, folder)
        file_names = {image['id']: image['file_name'] for image in coco['images']}
        pngs = os.path.join(root, 'annotations', f'panoptic_{folder}')
        require(pngs)
        found = {}
        for annotation in coco['annotations']:
            segments = {segment['id']: segment['category_id'] for segment in annotation['segments_info']}
            found[coco_id(root, images, file_names[annotation['image_id']])] = (
                functools.partial(read_panoptic, lut, segments), os.path.join(pngs, annotation['file_name']))
        lists[split] = sorted(found)
        sources.update(found)
    write_dataset(root, sources, lists)


# ---------------------------------------------------------------- context

# the names 59_labels.txt gives three of the 59 classes → theirs in labels.txt and dataset.CONTEXT_CLASSES, as the
# FCN authors' PASCAL Context layer renames them (shelhamer/fcn.berkeleyvision.org, pascalcontext_layers.py)
CONTEXT_59_RENAMED = {'diningtable': 'table', 'bedcloth': 'bedclothes', 'clothes': 'cloth'}


def read_class_names(path):
    """{id: name} of a PASCAL Context labels.txt or 59_labels.txt, lines '<id>: <name>'."""
    names = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                key, colon, name = line.partition(':')
                if not colon or not key.strip().isdigit():
                    raise SystemExit(f'prepare: {path} line {number} is not "<id>: <name>": {line.strip()!r}')
                names[int(key)] = name.strip()
    return names


def context_lut(names, path):
    """id → class (0 background, 1-59 as in dataset.CONTEXT_CLASSES) of labels whose ids are those of names
    ({id: class name}, read from path); 0 and the ids of every other class are background."""
    index = {name: class_id for class_id, name in names.items()}
    missing = [name for name in dataset.CONTEXT_CLASSES[1:] if name not in index]
    if missing:
        raise SystemExit(f'prepare: {path} lacks the classes {missing}')
    lut = np.full(max(names) + 1, UNKNOWN, np.int16)
    lut[[0, *names]] = 0
    lut[[index[name] for name in dataset.CONTEXT_CLASSES[1:]]] = np.arange(1, len(dataset.CONTEXT_CLASSES))
    return lut


@as_dataset('context')
def prepare_context(voc_dir, context_dir):
    """Writes SegmentationClassContext/<id>.png (0 background, 1-59) and ImageSets/SegmentationContext/{train,val}.txt
    into voc_dir, VOC2010 with its JPEGImages/ and ImageSets/Main/{train,val}.txt, from the PASCAL Context release
    in context_dir: trainval/<id>.mat (LabelMap of labels.txt's 459 classes) and labels.txt, or else
    59_context_labels/<id>.png (0 background, k the class on line k of 59_labels.txt) and 59_labels.txt."""
    lists_dir = os.path.join(voc_dir, 'ImageSets', 'Main')
    require(voc_dir, os.path.join(voc_dir, 'JPEGImages'), *(os.path.join(lists_dir, split + '.txt')
                                                             for split in ('train', 'val')), context_dir)
    if os.path.isdir(os.path.join(context_dir, 'trainval')):  # trainval.tar.gz: all 459 classes
        folder, extension, names_file, renamed = 'trainval', '.mat', 'labels.txt', {}
        read = functools.partial(read_mat, 'LabelMap')
    elif os.path.isdir(os.path.join(context_dir, '59_context_labels')):  # 59_context_labels.tar.gz
        folder, extension, names_file, renamed = '59_context_labels', '.png', '59_labels.txt', CONTEXT_59_RENAMED
        read = dataset.read_label
    else:
        raise SystemExit(f'prepare: {context_dir} has neither trainval/ (trainval.tar.gz) nor 59_context_labels/ '
                         f'(59_context_labels.tar.gz)')
    names_path = os.path.join(context_dir, names_file)
    require(names_path)
    names = {class_id: renamed.get(name, name) for class_id, name in read_class_names(names_path).items()}
    read = functools.partial(read_mapped, read, context_lut(names, names_path))
    lists = {split: sorted(dataset.read_list(os.path.join(lists_dir, split + '.txt'))) for split in ('train', 'val')}
    write_dataset(voc_dir, listed_sources(read, lists, os.path.join(context_dir, folder), extension, lists_dir), lists)


# ---------------------------------------------------------------- your own data

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
MASK_EXTENSIONS = ('.png', '.bmp', '.tif', '.tiff')  # lossless: a JPEG mask's colours are not its classes
SHOWN_UNPAIRED = 5  # unpaired files named, of each side
SPLIT_SEED = 0  # --val-fraction's split: the same files give the same split anywhere


def files_by_stem(folder, extensions):
    """{path from folder without extension, '/'-separated: file} of every file with one of extensions in
    folder or deeper; two files of one stem (a.jpg, a.png) stop the command, naming both."""
    if not os.path.isdir(folder):
        raise SystemExit(f'prepare: {folder} is not a folder')
    found = {}
    for directory, subfolders, names in os.walk(folder):
        subfolders.sort()
        for name in sorted(names):
            stem, extension = os.path.splitext(name)
            if extension.lower() in extensions:
                key = os.path.relpath(os.path.join(directory, stem), folder).replace(os.sep, '/')
                if key in found:
                    raise SystemExit(f'prepare: {found[key]} and {os.path.join(directory, name)} share the name '
                                     f'{key}: which one is meant?')
                found[key] = os.path.join(directory, name)
    return found


def paired_files(images_dir, masks_dir):
    """{relative path without extension: (image file, mask file)} of the images and masks of the same relative
    path; the unpaired ones are named (a count and the first few); none paired stops the command."""
    images, masks = files_by_stem(images_dir, IMAGE_EXTENSIONS), files_by_stem(masks_dir, MASK_EXTENSIONS)
    for files, side, others, other_side, other in ((images, 'image', masks, 'mask', masks_dir),
                                                   (masks, 'mask', images, 'image', images_dir)):
        alone = sorted(files.keys() - others.keys())
        if alone:
            settings.logger.warning('prepare: %d %s file(s) with no %s in %s, left out: %s%s', len(alone), side,
                                    other_side, other, ', '.join(files[key] for key in alone[:SHOWN_UNPAIRED]),
                                    ', ...' if len(alone) > SHOWN_UNPAIRED else '')
    pairs = {key: (images[key], masks[key]) for key in sorted(images.keys() & masks.keys())}
    if not pairs:
        raise SystemExit(f'prepare: no image of {images_dir} ({len(images)} files) has a mask of the same path '
                         f'without extension in {masks_dir} ({len(masks)} files): a/b/img_001.jpg pairs with '
                         f'a/b/img_001.png')
    return pairs


def read_colours(path):
    """[(name, (r, g, b))] in class order from a colours file in any of the forms tools write: 'name r g b'
    lines; CVAT's labelmap.txt ('name:r,g,b:parts:actions', '#' comments); CamVid's label_colors.txt
    ('r g b<TAB>name'). A line of no such form, a repeated name or colour stops the command, naming it."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise SystemExit(f'prepare: cannot read the colours file {path}: {error}') from None
    colours = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if ':' in line:  # CVAT: name:r,g,b:parts:actions
            name, _, rest = line.partition(':')
            values = rest.split(':')[0].split(',')
        else:
            words = line.split()
            if all(word.isdigit() for word in words[:3]):  # CamVid: r g b name
                values, name = words[:3], ' '.join(words[3:])
            else:  # name r g b
                values, name = words[-3:], ' '.join(words[:-3])
        values = [value.strip() for value in values]
        if not name.strip() or len(values) != 3 or not all(v.isdigit() and int(v) < 256 for v in values):
            raise SystemExit(f'prepare: {path} line {number} is not "name r g b", "r g b name" or CVAT\'s '
                             f'"name:r,g,b:parts:actions": {line!r}')
        colours.append((name.strip(), tuple(map(int, values))))
    for what, values in (('name', [name for name, _ in colours]), ('colour', [rgb for _, rgb in colours])):
        repeated = [value for value, count in collections.Counter(values).items() if count > 1]
        if repeated:
            raise SystemExit(f'prepare: {path} has the {what} {repeated[0]} more than once')
    if not colours:
        raise SystemExit(f'prepare: {path} names no class')
    return colours


def read_mask(path):
    """('index', H × W uint8) of a single-channel mask (8 or 16 bit grey, palette indices, 1 bit), or ('colour',
    H × W uint32 colour codes r·65536 + g·256 + b) of an RGB(A) one; errors name the file."""
    image = dataset.open_image(path, 'mask')
    if image.mode in ('RGB', 'RGBA'):
        rgb = np.asarray(image.convert('RGB'), np.uint32)
        return 'colour', (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    if image.mode not in ('L', 'P', '1', 'I', 'I;16', 'I;16B', 'I;16L'):
        raise ValueError(f'mask {path} has mode {image.mode}: neither class indices nor RGB colours')
    values = np.asarray(image, np.int64)
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f'mask {path} has values up to {values.max()}: more than 8-bit class indices')
    return 'index', values.astype(np.uint8)


def colour_name(code):
    return f'({code >> 16}, {(code >> 8) & 255}, {code & 255})'


def shown_and_stored(path):
    """((W, H) as a viewer shows the image, (W, H) as stored), from its header; errors name the file."""
    with dataset.open_image(path, 'image', decode=False) as image:
        turned = image.getexif().get(dataset.EXIF_ORIENTATION) in dataset.TURNING_ORIENTATIONS
        return image.size[::-1] if turned else image.size, image.size


def survey_pair(job):
    """What the first pass learns of a pair: (kind, {value or colour code: pixels}, palette or None, upright).
    The mask must have the image's size as a viewer shows it (then upright) or as stored. job = (image, mask)."""
    image, mask = job
    kind, values = read_mask(mask)
    shown, stored = shown_and_stored(image)
    size = values.shape[::-1]
    if size not in (shown, stored):
        turned = f' (as stored; {shown[0]}×{shown[1]} as shown)' if shown != stored else ''
        raise ValueError(f'mask {mask} is {size[0]}×{size[1]} but its image {image} is '
                         f'{stored[0]}×{stored[1]}{turned}')
    codes, counts = np.unique(values, return_counts=True)
    with dataset.open_image(mask, 'mask', decode=False) as opened:
        palette = opened.getpalette() if opened.mode == 'P' else None
    return kind, dict(zip(codes.tolist(), counts.tolist())), palette, size == shown


def label_of(job):
    """Writes the label of a mask as target: values through lut ({value: class or IGNORE_LABEL}); a value that
    lut lacks is an error naming the file, a pixel and the value. job = (mask, lut, target)."""
    mask, lut, target = job
    kind, values = read_mask(mask)
    keys = np.array(sorted(lut), np.int64)
    where = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
    known = keys[where] == values
    if not known.all():
        y, x = np.argwhere(~known)[0]
        value = int(values[y, x])
        what = f'colour {colour_name(value)}' if kind == 'colour' else f'value {value}'
        raise ValueError(f'mask {mask} has the {what} at pixel (x={x}, y={y}), which no class has '
                         f'(the colours file, --binary or --ignore decide the classes)')
    return write_if_changed(np.array([lut[k] for k in keys.tolist()], np.uint8)[where], target)


def parse_ignore(value):
    """--ignore VALUE: a class index (index masks) or 'r,g,b' (colour masks) → (kind, value or colour code)."""
    parts = value.split(',')
    if len(parts) == 1 and value.isdigit() and int(value) < 256:
        return 'index', int(value)
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) < 256 for p in parts):
        r, g, b = map(int, parts)
        return 'colour', (r << 16) | (g << 8) | b
    raise SystemExit(f'prepare: --ignore {value!r}: a mask value 0..255 or a colour r,g,b')


def folder_classes(kind, found, palette, colours, binary, ignore):
    """(names, palette, lut) of the masks: kind 'index' or 'colour', found {value or colour code: pixels} over
    every mask, palette the first palette mask's (or None), colours the --colours table (or None), binary
    --binary, ignore parse_ignore's (or None). lut maps every value allowed to a class or IGNORE_LABEL."""
    lut = {}
    if ignore is not None:
        if ignore[0] != kind:
            raise SystemExit(f'prepare: --ignore gives a{" colour" if ignore[0] == "colour" else "n index"} but the '
                             f'masks hold {"colours" if kind == "colour" else "class indices"}')
        lut[ignore[1]] = settings.IGNORE_LABEL
    values = set(found) - set(lut)
    if kind == 'colour':
        if colours is None:  # the colours found are the classes, in colour order
            colours = [(f'class_{k}', (code >> 16, (code >> 8) & 255, code & 255))
                       for k, code in enumerate(sorted(values))]
            settings.logger.info('prepare: %d colours found, each a class (name them in classes.txt):\n%s',
                                 len(colours), '\n'.join(f'  {name}  {rgb}: {found[(rgb[0] << 16) | (rgb[1] << 8) | rgb[2]]} px'
                                                         for name, rgb in colours))
        lut.update({(r << 16) | (g << 8) | b: k for k, (_, (r, g, b)) in enumerate(colours)})
        return [name for name, _ in colours], [rgb for _, rgb in colours], lut
    lut.setdefault(settings.IGNORE_LABEL, settings.IGNORE_LABEL)
    if binary:
        lut.update({0: 0, 255: 1})
        values = {0, 1} | (values - {0, 255})
    elif values and values <= {0, 255} and 255 in values and settings.IGNORE_LABEL == 255 and ignore is None:
        raise SystemExit('prepare: the masks hold only 0 and 255, a binary mask; but 255 is IGNORE_LABEL, "no label" '
                         'in a class-index mask, so the foreground would be ignored and one class trained: give '
                         '--binary (255 → class 1), or --ignore 255 if 255 does mean "no label"')
    classes = sorted(values - {settings.IGNORE_LABEL}) if not binary else [0, 1]
    n_classes = len(colours) if colours else max(classes, default=0) + 1
    lut.update({value: value for value in range(n_classes) if value not in lut})
    if colours:
        return [name for name, _ in colours], [rgb for _, rgb in colours], lut
    source = list(palette or []) + dataset.voc_palette()[len(palette or []):]  # palette masks: their own colours
    return [f'class_{k}' for k in range(n_classes)], [tuple(source[3 * k:3 * k + 3]) for k in range(n_classes)], lut


def previous_names(out, n_classes):
    """The class names of an earlier run's classes.txt in out when it has n_classes of them (the user may have
    named them), else None."""
    try:
        names = dataset.read_lines(os.path.join(out, dataset.FOLDER_FILES['classes']))
    except FileNotFoundError:
        return None
    return names if len(names) == n_classes else None


def write_text(path, lines):
    """Writes lines to path atomically."""
    with open(path + '.tmp', 'w') as f:
        f.write(''.join(line + '\n' for line in lines))
    os.replace(path + '.tmp', path)


def prepare_folder(images, masks, out, val_images=None, val_masks=None, val_fraction=0.1, colours_file=None,
                   binary=False, ignore=None):
    """Writes out/labels/<id>.png (single-channel class indices in the masks' colours), out/lists/{train,val}.txt,
    classes.txt, palette.txt and images.txt (each id's image, where it is) from folders of images and masks
    paired by relative path without extension; ids are those paths, under train/ and val/ when the validation
    set comes in folders of its own."""
    if os.path.isdir(os.path.join(masks, 'SegmentationClass')) and colours_file is None and \
            os.path.isfile(os.path.join(masks, 'labelmap.txt')):  # a CVAT "Segmentation mask 1.1" export
        colours_file = os.path.join(masks, 'labelmap.txt')
        masks = os.path.join(masks, 'SegmentationClass')
        settings.logger.info('prepare: a CVAT export: masks in %s, colours from %s', masks, colours_file)
    if val_images:
        splits = {split: {f'{split}/{key}': pair for key, pair in paired_files(*folders).items()}
                  for split, folders in (('train', (images, masks)), ('val', (val_images, val_masks)))}
        pairs = {**splits['train'], **splits['val']}
        lists = {split: sorted(found) for split, found in splits.items()}
    else:
        pairs = paired_files(images, masks)
        if not 0 < val_fraction < 1 or len(pairs) < 2:
            raise SystemExit(f'prepare: --val-fraction {val_fraction} of {len(pairs)} pairs: give a fraction in '
                             f'(0, 1) of at least 2 pairs, or --val-images and --val-masks')
        order = np.random.default_rng(SPLIT_SEED).permutation(len(pairs))
        # the nearest whole count, a half rounded up (round() would send 2.5 down and 3.5 up); 1 to n - 1
        n_val = min(len(pairs) - 1, max(1, math.floor(val_fraction * len(pairs) + 0.5)))
        ids = sorted(pairs)
        lists = {'train': sorted(ids[i] for i in order[n_val:]), 'val': sorted(ids[i] for i in order[:n_val])}
    ids = sorted(pairs)
    try:
        with dataset.worker_pool() as pool:
            surveys = pool.map(survey_pair, [pairs[image_id] for image_id in ids], chunksize=16)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'prepare: {error}') from None
    kinds = {kind: image_id for image_id, (kind, *_) in zip(ids, surveys)}
    if len(kinds) > 1:
        raise SystemExit(f'prepare: the masks mix class indices ({pairs[kinds["index"]][1]}) and RGB colours '
                         f'({pairs[kinds["colour"]][1]}): give them all in one form')
    kind, = kinds
    found = collections.Counter()
    for _, counts, _, _ in surveys:
        found.update(counts)
    palette = next((palette for _, _, palette, _ in surveys if palette is not None), None)
    colours = read_colours(colours_file) if colours_file else None
    names, palette, lut = folder_classes(kind, found, palette, colours, binary,
                                         parse_ignore(ignore) if ignore is not None else None)
    if colours is None and previous_names(out, len(names)):
        names = previous_names(out, len(names))
        settings.logger.info('prepare: the class names of %s kept', dataset.folder_file('classes', out))
    os.makedirs(out, exist_ok=True)
    write_text(dataset.folder_file('classes', out), names)
    write_text(dataset.folder_file('palette', out), [' '.join(map(str, rgb)) for rgb in palette])
    write_text(dataset.folder_file('images', out), [
        '\t'.join([image_id, os.path.relpath(os.path.abspath(pairs[image_id][0]), os.path.abspath(out))]
                  + ([] if upright else ['stored'])) for image_id, (*_, upright) in zip(ids, surveys)])
    saved = settings.DATASET, settings.N_CLASSES, settings.DATA_ROOT
    settings.DATASET, settings.N_CLASSES, settings.DATA_ROOT = 'folder', len(names), out
    try:
        jobs = [(pairs[image_id][1], lut, dataset.label_path(image_id, out)) for image_id in ids]
        outcomes = collections.Counter()
        with dataset.worker_pool() as pool:
            outcomes.update(pool.imap_unordered(label_of, jobs, chunksize=16))
        dataset.write_lists(lists, out)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'prepare: {error}') from None
    finally:
        settings.DATASET, settings.N_CLASSES, settings.DATA_ROOT = saved
    settings.logger.info('prepare: %s: %d classes (%s), train %d, val %d; labels: %d written, %d already correct',
                         out, len(names), ', '.join(names), len(lists['train']), len(lists['val']),
                         outcomes['written'], outcomes['kept'])
    settings.logger.info("prepare: in settings.py: DATASET = 'folder', DATA_ROOT = %r, N_CLASSES = %d, "
                         "TRAIN_SPLIT = 'train'", out, len(names))


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
    else:  # cross
        third_w, third_h = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + third_w, y0, x1 - third_w, y1), fill=1)
        draw.rectangle((x0, y0 + third_h, x1, y1 - third_h), fill=1)
    return np.asarray(mask, bool)


def demo_sample(rng):
    """(H × W × 3 uint8 image, H × W uint8 label) with 1-3 objects of DEMO_CLASSES on a background; 40 to 70 px
    a side, so that a crop of 49 holds most of an image and training on CPU sees many in a minute."""
    height, width = rng.integers(40, 71, 2)
    if height == width:
        width -= 5  # never square
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


@as_dataset('voc')
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
    cityscapes = commands.add_parser('cityscapes', help='Cityscapes: gtFine train-id labels and the split lists')
    cityscapes.add_argument('--root', required=True, help='folder with leftImg8bit/ and gtFine/ (becomes DATA_ROOT)')
    ade20k = commands.add_parser('ade20k', help='ADE20K SceneParsing: labels/ of the 150 classes and the lists')
    ade20k.add_argument('--root', required=True, help='ADEChallengeData2016 folder (becomes DATA_ROOT)')
    cocostuff = commands.add_parser('cocostuff', help='COCO-Stuff 10k or 164k: labels/ of the 171 classes, the lists')
    cocostuff.add_argument('--root', required=True, help='the release\'s folder, with images/ (becomes DATA_ROOT)')
    context = commands.add_parser('context', help='PASCAL Context: SegmentationClassContext/ (59 classes + background)')
    context.add_argument('--root', required=True, help='VOC2010 folder (becomes DATA_ROOT)')
    context.add_argument('--context', required=True, help='PASCAL Context folder: trainval/ and labels.txt, or '
                                                          '59_context_labels/ and 59_labels.txt')
    coco_voc = commands.add_parser('coco-voc', help="COCO 2017 instances in VOC's 21 classes, for pre-training")
    coco_voc.add_argument('--root', required=True, help='COCO folder with annotations/ (becomes DATA_ROOT)')
    coco_panoptic = commands.add_parser('coco-panoptic', help='COCO 2017 panoptic: things as one class + 53 stuff')
    coco_panoptic.add_argument('--root', required=True, help='COCO folder with annotations/ (becomes DATA_ROOT)')
    folder = commands.add_parser('folder', help='your own images and masks → DATASET \'folder\' in --out')
    folder.add_argument('--images', required=True, help='folder of images (jpg, png, bmp, tif, webp; sub-folders too)')
    folder.add_argument('--masks', required=True, help='folder of masks of the same relative paths (png, bmp, tif): '
                                                       'class indices, palette PNGs or RGB colours; a CVAT export')
    folder.add_argument('--val-images', help='folder of validation images (with --val-masks)')
    folder.add_argument('--val-masks', help='folder of validation masks')
    folder.add_argument('--val-fraction', type=float, default=0.1,
                        help='without --val-images: this share of the pairs, drawn with a fixed seed, validates '
                             '(default: 0.1)')
    folder.add_argument('--colours', metavar='FILE', help="the classes in order with their colours: 'name r g b' "
                                                          "lines, CVAT's labelmap.txt or CamVid's label_colors.txt")
    folder.add_argument('--binary', action='store_true', help='masks of 0 and 255: 255 is class 1 (not IGNORE_LABEL)')
    folder.add_argument('--ignore', metavar='VALUE', help='the mask value (or colour r,g,b) that means "no label"')
    folder.add_argument('--out', required=True, help='the folder to write (becomes DATA_ROOT)')
    demo = commands.add_parser('demo', help='write a small generated dataset')
    demo.add_argument('out_dir')
    demo.add_argument('--seed', type=int, default=0)
    commands.add_parser('check', help='verify DATA_ROOT for TRAIN_SPLIT and VAL_SPLIT')
    args = parser.parse_args()
    if args.command == 'folder' and bool(args.val_images) != bool(args.val_masks):
        parser.error('--val-images and --val-masks go together')
    if args.command == 'voc':
        prepare_voc(args.voc, args.sbd)
    elif args.command == 'cityscapes':
        prepare_cityscapes(args.root)
    elif args.command == 'ade20k':
        prepare_ade20k(args.root)
    elif args.command == 'cocostuff':
        prepare_cocostuff(args.root)
    elif args.command == 'context':
        prepare_context(args.root, args.context)
    elif args.command == 'coco-voc':
        prepare_coco_voc(args.root)
    elif args.command == 'coco-panoptic':
        prepare_coco_panoptic(args.root)
    elif args.command == 'folder':
        prepare_folder(args.images, args.masks, args.out, args.val_images, args.val_masks, args.val_fraction,
                       args.colours, args.binary, args.ignore)
    elif args.command == 'demo':
        make_demo(args.out_dir, args.seed)
    elif dataset.check():
        raise SystemExit(1)


if __name__ == '__main__':
    main()
