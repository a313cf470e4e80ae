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
        (photos/a/img_1.jpg with masks/a/img_1.png; macOS's ._* files, .DS_Store, Thumbs.db, desktop.ini and
        hidden folders skipped); masks of class indices, RGB colours (through --colours FILE, else each colour
        found is a class), palette PNGs (by their colours with a colours file or among RGB masks, else by their
        indices, on which their palettes must agree) or 0/255 (--binary; --binary --threshold 128 cuts a soft
        one); --ignore VALUE or r,g,b is "no label", even where the colours file lists it; soft (interpolated)
        masks, JPEG masks and class counts a label cannot hold are refused; writes labels/, lists/{train,val}.txt
        (--val-fraction 0.1: each pair by a hash of its path; or --val-images DIR --val-masks DIR), classes.txt
        (name the classes there: a re-run keeps each name with its colour), palette.txt and images.txt, all
        replaced together at the end; prints the settings lines to train on it; the folder is DATA_ROOT
    python prepare.py folder --images photos --masks masks --out data/mine --exif stored
        masks drawn on the photos as stored, not as a viewer shows them (EXIF orientation), where no turned,
        non-square photo's mask tells by its size
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
import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
import unicodedata

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


def as_dataset(name):
    """While a command writes name's files: settings.DATASET = name and N_CLASSES = its class count, so the path
    helpers and the palette are name's whatever settings.py says (dataset.worker_pool hands them to worker
    processes, however they start); the old values afterwards. Each command is decorated with it."""
    return settings.applied({'DATASET': name, 'N_CLASSES': len(dataset.DATASETS[name]['classes'])})


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
JPEG_EXTENSIONS = ('.jpg', '.jpeg')
# what Windows and macOS's zip tool leave in folders; names that start with '.' (macOS's ._name files, .DS_Store,
# hidden folders) are no data either
NOT_DATA = ('thumbs.db', 'desktop.ini', '__macosx')
SHOWN_UNPAIRED = 5  # unpaired files named, of each side
SOFT_VALUES = 2  # values (or colours) found mostly between their neighbours that masks may hold: more, they are soft
NEW, OLD = dataset.PREPARE_NEW, '.prepare-old'  # in --out while a run replaces its dataset: the new one, the old
TRANSPARENT = -1  # the colour code of a colour mask's transparent pixel (alpha 0): no label
LOCK = '.prepare.lock'  # in --out: held by the run that writes NEW and swaps it in, naming it


def files_by_stem(folder, extensions):
    """{path from folder without extension, '/'-separated: file} of every file with one of extensions in
    folder or deeper; files and folders that are no data (NOT_DATA, hidden ones) are skipped, counted in one
    line; two files of one stem (a.jpg, a.png) stop the command, naming both."""
    if not os.path.isdir(folder):
        raise SystemExit(f'prepare: {folder} is not a folder')
    found, skipped = {}, collections.Counter()
    for directory, subfolders, names in os.walk(folder):
        for kind, entries in (('folder', subfolders), ('file', names)):
            kept = sorted(name for name in entries if not name.startswith('.') and name.lower() not in NOT_DATA)
            skipped[kind] += len(entries) - len(kept)
            entries[:] = kept  # os.walk goes into the subfolders left
        for name in names:
            stem, extension = os.path.splitext(name)
            if extension.lower() in extensions:
                key = os.path.relpath(os.path.join(directory, stem), folder).replace(os.sep, '/')
                if key in found:
                    raise SystemExit(f'prepare: {found[key]} and {os.path.join(directory, name)} share the name '
                                     f'{key}: which one is meant?')
                found[key] = os.path.join(directory, name)
    if sum(skipped.values()):
        settings.logger.info("prepare: %d file(s) and %d folder(s) of %s skipped: no data (macOS's ._* and .DS_Store, "
                             "Thumbs.db, desktop.ini, __MACOSX, hidden ones)", skipped['file'], skipped['folder'],
                             folder)
    return found


def paired_files(images_dir, masks_dir):
    """{relative path without extension: (image file, mask file)} of the images and masks of the same relative
    path (or, where none pairs so, of the image's path and a suffix that every mask's name has: CamVid's _L, if
    that pairs each mask); the unpaired ones are named (a count and the first few); none paired, JPEG masks, or
    names a list cannot hold stop the command."""
    images = files_by_stem(images_dir, IMAGE_EXTENSIONS)
    masks = files_by_stem(masks_dir, MASK_EXTENSIONS + JPEG_EXTENSIONS)
    if masks and not images.keys() & masks.keys():  # maybe each mask's name adds a suffix to its image's
        common = os.path.commonprefix([key[::-1] for key in masks])[::-1].rsplit('/', 1)[-1]  # of the names
        for suffix in (common[start:] for start in range(len(common))):  # the longest that pairs every mask
            if {key[:-len(suffix)] for key in masks} <= images.keys():
                settings.logger.info("prepare: every mask's name is its image's and %r (as CamVid's are): paired so",
                                     suffix)
                masks = {key[:-len(suffix)]: path for key, path in masks.items()}
                break
    jpeg = sorted(key for key in images.keys() & masks.keys() if masks[key].lower().endswith(JPEG_EXTENSIONS))
    if jpeg:
        raise SystemExit(f'prepare: {len(jpeg)} mask(s) are JPEG files ({", ".join(masks[key] for key in jpeg[:2])}'
                         f'{", ..." if len(jpeg) > 2 else ""}): a JPEG mask holds no exact class, since its lossy '
                         f'compression changes the values and colours around every edge; export the masks as PNG')
    for files, side, others, other_side, other in ((images, 'image', masks, 'mask', masks_dir),
                                                   (masks, 'mask', images, 'image', images_dir)):
        alone = sorted(files.keys() - others.keys())
        if alone:
            settings.logger.warning('prepare: %d %s file(s) with no %s in %s, left out: %s%s', len(alone), side,
                                    other_side, other, ', '.join(files[key] for key in alone[:SHOWN_UNPAIRED]),
                                    ', ...' if len(alone) > SHOWN_UNPAIRED else '')
    pairs = {key: (images[key], masks[key]) for key in sorted(images.keys() & masks.keys())}
    unlistable = [key for key in pairs if key != key.strip() or any(c in key for c in '\t\n\r')]
    if unlistable:  # lists and images.txt hold an id a line, stripped; images.txt a tab after it
        raise SystemExit(f'prepare: {len(unlistable)} pair(s) have names that a list cannot hold '
                         f'({", ".join(map(repr, unlistable[:SHOWN_UNPAIRED]))}): rename them without spaces at the '
                         f'ends of a name, tabs or line breaks')
    if not pairs:
        others = collections.Counter(os.path.splitext(name)[1].lower() for _, _, names in os.walk(masks_dir)
                                     for name in names if not name.startswith('.')
                                     and os.path.splitext(name)[1].lower() not in MASK_EXTENSIONS)  # .webp, .gif
        held = ', '.join(f'{count} {extension or "extensionless"} file(s)'
                         for extension, count in others.most_common(3))
        raise SystemExit(f'prepare: no image of {images_dir} ({len(images)} files) has a mask of the same path '
                         f'without extension in {masks_dir} ({len(masks)} files): a/b/img_001.jpg pairs with '
                         f'a/b/img_001.png' + (f'; masks are {", ".join(MASK_EXTENSIONS[:-1])} or '
                                               f'{MASK_EXTENSIONS[-1]} files, and {masks_dir} holds {held}' if held
                                               else ''))
    return pairs


def split_pairs(ids, fraction):
    """{'train': ids, 'val': ids} of the ids: an id validates when the first 8 bytes of the SHA-256 of its UTF-8
    text (composed: Unicode NFC), as a fraction of 2**64, lie below fraction. The split is the same on any machine,
    and an id's side depends on the id alone, so adding pairs never moves one; the val count is a fraction of the
    ids in expectation (binomial: about fraction·n ± sqrt(fraction·(1 − fraction)·n)). Each side keeps one id at
    least: where the hash gives a side none, the id nearest the cut goes there, said in the log (adding pairs may
    send it back)."""
    if not 0 < fraction < 1 or len(ids) < 2:
        raise SystemExit(f'prepare: --val-fraction {fraction} of {len(ids)} pairs: give a fraction in (0, 1) of at '
                         f'least 2 pairs, or --val-images and --val-masks')
    draw = {image_id: int.from_bytes(hashlib.sha256(unicodedata.normalize('NFC', image_id).encode()).digest()[:8],
                                     'big') for image_id in ids}  # NFC: macOS's HFS+ names decomposed
    val = [image_id for image_id in ids if draw[image_id] < fraction * 2 ** 64]
    for side, chosen, nearest in (('val', not val, min), ('train', len(val) == len(ids), max)):
        if chosen:
            moved = nearest(draw, key=draw.get)
            val = [image_id for image_id in val if image_id != moved] if side == 'train' else [moved]
            settings.logger.info('prepare: the hash of the ids puts none of the %d pairs in %s: %s, the nearest, goes '
                                 'there', len(ids), side, moved)
    return {'train': sorted(set(ids) - set(val)), 'val': sorted(val)}


def colour_codes(rgb):
    """r·65536 + g·256 + b of each colour of an array-like ... × 3, as int64."""
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_of(code):
    """(r, g, b) of a colour code."""
    return code >> 16, (code >> 8) & 255, code & 255


def read_colours(path):
    """[(name, (r, g, b), 'FILE line N')] in class order from a colours file in any of the forms tools write: 'name r
    g b' lines; CVAT's labelmap.txt ('name:r,g,b:parts:actions', '#' comments); CamVid's label_colors.txt ('r g
    b<TAB>name'); UTF-8 with or without a byte-order mark. A line of no such form, a repeated name or colour stops
    the command, naming the lines."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
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
        colours.append((name.strip(), tuple(map(int, values)), number))
    for what, position in (('name', 0), ('colour', 1)):
        lines_of = collections.defaultdict(list)
        for entry in colours:
            lines_of[entry[position]].append(entry[2])
        repeated = next(((value, numbers) for value, numbers in lines_of.items() if len(numbers) > 1), None)
        if repeated:
            raise SystemExit(f'prepare: {path} has the {what} {repeated[0]!r} on lines '
                             f'{" and ".join(map(str, repeated[1]))}: each class needs its own')
    if not colours:
        raise SystemExit(f'prepare: {path} names no class')
    return [(name, rgb, f'{path} line {number}') for name, rgb, number in colours]


def mask_kind(image, path):
    """How an opened mask holds its classes: 'index' (grey: 8 or 16 bit, 1 bit), 'palette' (a palette PNG: indices
    and colours) or 'colour' (RGB or RGBA); any other mode is an error naming path."""
    if image.mode in ('RGB', 'RGBA'):
        return 'colour'
    if image.mode == 'P':
        return 'palette'
    if image.mode in ('L', '1', 'I', 'I;16', 'I;16B', 'I;16L'):
        return 'index'
    raise ValueError(f'mask {path} has mode {image.mode}: neither class indices nor RGB colours')


def read_mask(path, by_colour):
    """(reading, H × W int64, H × W int64 stored) of a mask: 'colour' and the colour codes of an RGB(A) mask, or of
    a palette PNG's pixels through its own palette when by_colour (TRANSPARENT where alpha is 0; pixels partly
    transparent are an error), with the codes its pixels store (those of its transparent pixels too); else 'index'
    and its values (8 or 16 bit grey, 1 bit, a palette PNG's indices), twice. Errors name the file."""
    image = dataset.open_image(path, 'mask')
    kind = mask_kind(image, path)
    values = np.asarray(image, np.int64) if kind != 'colour' else None
    if kind == 'colour' or kind == 'palette' and by_colour:
        if kind == 'colour':
            codes = colour_codes(np.asarray(image.convert('RGB')))
        else:
            palette = colour_codes(np.reshape(image.getpalette(), (-1, 3)))
            if values.max() >= len(palette):
                raise ValueError(f'mask {path} has the index {values.max()}, which its palette of {len(palette)} '
                                 f'colours lacks')
            codes = palette[values]
        if image.has_transparency_data:  # an alpha channel, or PNG's tRNS: pixels that show no colour
            alpha = np.asarray(image.convert('RGBA'))[..., 3]
            partly = np.argwhere((0 < alpha) & (alpha < 255))
            if len(partly):
                y, x = partly[0]
                raise ValueError(f'mask {path} is partly transparent at pixel (x={x}, y={y}) (alpha {alpha[y, x]}), '
                                 f'{len(partly)} pixels in all: anti-aliased edges show no class. Draw the masks '
                                 f'without anti-aliasing, or flatten them onto their colours')
            return 'colour', np.where(alpha == 0, TRANSPARENT, codes), codes
        return 'colour', codes, codes
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f'mask {path} has values up to {values.max()}: more than 8-bit class indices')
    return 'index', values, values


def pair_header(job):
    """What the headers of a pair say: (image (W, H) as a viewer shows it, as stored, its EXIF orientation, the
    mask's kind (mask_kind), its (W, H), the colour code of each entry of its palette or None). job = (image,
    mask)."""
    image, mask = job
    with dataset.open_image(image, 'image', decode=False) as opened:
        orientation, stored = opened.getexif().get(dataset.EXIF_ORIENTATION), opened.size
    shown = stored[::-1] if orientation in dataset.TURNING_ORIENTATIONS else stored
    with dataset.open_image(mask, 'mask', decode=False) as opened:
        kind = mask_kind(opened, mask)
        palette = colour_codes(np.reshape(opened.getpalette(), (-1, 3))).tolist() if kind == 'palette' else None
        return shown, stored, orientation, kind, opened.size, palette


def orientation_rule(ids, pairs, headers, exif):
    """'shown' (the masks were drawn on the photos as a viewer shows them, EXIF orientation applied) or 'stored':
    one rule for every pair, what the masks of turned (EXIF orientation 5-8), non-square photos say by their size,
    else exif (--exif), else 'shown'. A mask of neither size, turned photos whose masks disagree, or one against
    --exif stop the command; the photos whose orientation changes them but whose masks' size cannot tell (square
    ones, those turned by 180° or mirrored) are named in a warning: the rule decided them."""
    how = {'shown': 'as a viewer shows it', 'stored': 'as stored'}
    sides, undecided = {'shown': [], 'stored': []}, []  # (image, orientation) of the photos each rule fits
    for image_id, (shown, stored, orientation, _, size, _) in zip(ids, headers):
        image, mask = pairs[image_id]
        if size not in (shown, stored):
            turned = f' (as stored; {shown[0]}×{shown[1]} as shown)' if shown != stored else ''
            raise SystemExit(f'prepare: mask {mask} is {size[0]}×{size[1]} but its image {image} is '
                             f'{stored[0]}×{stored[1]}{turned}')
        if shown != stored:
            sides['shown' if size == shown else 'stored'].append((image_id, orientation))
        elif orientation in range(2, 9):  # the orientations that turn or mirror a photo
            undecided.append((image_id, orientation))
    told = [side for side in sides if sides[side]]
    if len(told) == 2 or exif and told and told != [exif]:
        side = told[0]
        other = 'stored' if side == 'shown' else 'shown'
        first, orientation = sides[side][0]
        against = (f'but {pairs[sides[other][0][0]][1]} has that of {pairs[sides[other][0][0]][0]} {how[other]}'
                   if sides[other] else f'but --exif {exif} says the masks follow the photos {how[exif]}')
        raise SystemExit(f'prepare: {pairs[first][1]} has the size of {pairs[first][0]} {how[side]} (EXIF orientation '
                         f'{orientation}), {against}: one rule must hold for every pair; re-export the masks that '
                         f'follow the other')
    rule = exif or (told[0] if told else 'shown')
    if undecided:
        source = ('--exif' if exif else f'as the masks of {len(sides[rule])} turned photo(s) say by their size'
                  if told else 'by default: no turned, non-square photo tells')
        read, other = ('as a viewer shows them', 'stored') if rule == 'shown' else ('as stored', 'shown')
        settings.logger.warning(
            'prepare: %d photo(s) whose EXIF orientation turns or mirrors them have masks whose size cannot tell how '
            'they were drawn (square, or turned by 180° or mirrored): read %s, %s: %s; if their masks were drawn on '
            'the photos %s, give --exif %s', len(undecided), read, source,
            ', '.join(f'{pairs[image_id][0]} ({orientation})' for image_id, orientation in undecided),
            'as stored' if rule == 'shown' else 'as a viewer shows them', other)
    return rule


def mask_reading(ids, pairs, headers, colours):
    """('index' or 'colour', by_colour) of the masks: palette PNGs are read by their colours (each through its own
    palette: an optimiser's re-save orders it as it likes) with a colours file or among RGB colour masks, else by
    their indices (agreed_palette then checks their palettes). Masks that mix grey class indices with colours
    stop the command, naming two files; the reading is logged."""
    kinds = collections.Counter(header[3] for header in headers)
    by_colour = colours is not None or kinds['colour'] > 0
    reading = {image_id: 'colour' if header[3] == 'colour' or header[3] == 'palette' and by_colour else 'index'
               for image_id, header in zip(ids, headers)}
    first = {kind: pairs[image_id][1] for image_id, kind in reversed(reading.items())}
    if len(first) > 1:
        raise SystemExit(f'prepare: the masks mix class indices ({first["index"]}) and colours ({first["colour"]}): '
                         f'give them all in one form')
    described = {'colour': 'RGB colours', 'index': 'grey class indices', 'palette': 'palette PNGs read by their '
                 + ('colours, each through its own palette' if by_colour else 'indices (their palettes agree)')}
    settings.logger.info('prepare: masks: %s', ', '.join(f'{count} {described[kind]}' for kind, count in kinds.items()))
    kind, = first
    return kind, by_colour


def agreed_palette(ids, pairs, headers, surveys):
    """Each index's colour code of palette PNGs read by their indices (for the classes' colours), or None if there
    are none: the colour of every mask whose pixels use the index (of the first palette that has it where none
    does: an index no pixel uses tells nothing). Masks whose palettes give an index their pixels use two colours
    stop the command, naming both: their colours, not their indices, may be the classes."""
    palette = {}  # index → (colour code, the first mask with it, whether its pixels use the index)
    for image_id, header, (counts, _) in zip(ids, headers, surveys):
        for index, code in enumerate(header[5] or []):
            known, mask, known_used = palette.setdefault(index, (code, pairs[image_id][1], index in counts))
            if index in counts and known_used and code != known:
                raise SystemExit(
                    f'prepare: the palette masks disagree: index {index} is {rgb_of(known)} in {mask} but '
                    f'{rgb_of(code)} in {pairs[image_id][1]}; if their colours are the classes (masks re-saved '
                    f'by an optimiser or as GIMP "indexed", each with a palette of its own order), give --colours '
                    f'FILE listing them; if their indices are, give every mask the same palette')
            if index in counts and not known_used:
                palette[index] = code, pairs[image_id][1], True
    return [palette[index][0] for index in range(len(palette))] if palette else None


def between_neighbours(values):
    """H × W bool: the pixels unlike both neighbours along a row or a column whose value lies between theirs in
    each channel (a colour code's r, g, b; a grey value): what interpolation makes of an edge (a resize other than
    nearest-neighbour, anti-aliasing), what a drawn class region never is but where it is a line one pixel wide.
    An ignored value is a neighbour like any other: a 0/255 mask blends its 255 (IGNORE_LABEL) too. values:
    H × W values or colour codes."""
    rgb = np.stack([(values >> shift).astype(np.uint8) for shift in (16, 8, 0)], -1)  # H × W × 3; grey: 0, 0, v
    between = np.zeros(values.shape, bool)
    for codes, channels, found in ((values, rgb, between), (values.T, rgb.transpose(1, 0, 2), between.T)):
        # along each row: the pixels unlike both neighbours (edges only: few), then their channels
        rows, cols = np.nonzero((codes[:, 1:-1] != codes[:, :-2]) & (codes[:, 1:-1] != codes[:, 2:]))
        before, at, after = channels[rows, cols], channels[rows, cols + 1], channels[rows, cols + 2]  # n × 3
        inside = ((np.minimum(before, after) <= at) & (at <= np.maximum(before, after))).all(-1)
        found[rows[inside], cols[inside] + 1] = True
    return between


def survey_mask(job):
    """({value or colour code: pixels}, {value or colour code: its pixels between their neighbours}) of a mask,
    read as job = (mask, by_colour) says (read_mask, between_neighbours)."""
    _, values, stored = read_mask(*job)
    codes, counts = np.unique(values, return_counts=True)
    # judged by the colours stored: interpolation blended a transparent pixel's hidden colour (an RGB mask's tRNS
    # colour) with its neighbours', and TRANSPARENT has no r, g, b
    blended, blends = np.unique(values[between_neighbours(stored)], return_counts=True)
    return dict(zip(codes.tolist(), counts.tolist())), dict(zip(blended.tolist(), blends.tolist()))


def refuse_soft(kind, ids, pairs, surveys, colours):
    """Stops the command if the masks are soft: values (or colours) lie between their neighbours' at most of their
    pixels, so no region of their own holds them: interpolation blended the classes at their edges. SOFT_VALUES
    such values may be classes drawn as lines one pixel wide, unless they cannot be: a grey value whose index
    leaves a class below it with no pixel (0/255 halved: 128), a colour between the only two others (a two-colour
    mask's blend). Names the mask that has the most such pixels, and what to do."""
    found, blends = collections.Counter(), collections.Counter()
    for counts, between in surveys:
        found.update(counts)
        blends.update(between)
    table = {colour_codes(rgb) for _, rgb, _ in colours or []} if kind == 'colour' else set()
    soft = sorted(value for value, pixels in blends.items()  # transparent pixels are no label, whatever they hide
                  if 2 * pixels > found[value] and value not in table and value != TRANSPARENT)
    blends_only = (kind == 'index' and any(value not in found for value in range(max(soft, default=0))) or
                   kind == 'colour' and len(found) - len(soft) == 2)
    if len(soft) <= SOFT_VALUES and not (soft and blends_only):
        return
    most = max(range(len(ids)), key=lambda i: sum(surveys[i][1].get(value, 0) for value in soft))
    shown = ', '.join(str(rgb_of(value)) if kind == 'colour' else str(value) for value in soft[:6])
    raise SystemExit(
        f'prepare: the masks are soft: {len(soft)} {"colours" if kind == "colour" else "values"} ({shown}'
        f'{", ..." if len(soft) > 6 else ""}) lie between the {"colours" if kind == "colour" else "values"} of '
        f'their neighbours at most of their pixels, {sum(blends[value] for value in soft)} pixels in all, the most '
        f'in {pairs[ids[most]][1]}: interpolation blended the classes at their edges (a mask resized with bilinear '
        f'or bicubic, or drawn with anti-aliasing), so those pixels show no class. Resize masks with '
        f'nearest-neighbour or draw them without anti-aliasing' +
        ('; a 0/255 mask can be cut with --binary --threshold 128' if kind == 'index' else
         '; grey ones saved as RGB can be saved as grey (mode L), then cut with --binary --threshold 128'))


def parse_ignore(value):
    """--ignore VALUE: a class index (index masks) or 'r,g,b' (colour masks) → (kind, value or colour code)."""
    parts = value.split(',')
    if len(parts) == 1 and value.isdigit() and int(value) < 256:
        return 'index', int(value)
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) < 256 for p in parts):
        return 'colour', int(colour_codes(list(map(int, parts))))
    raise SystemExit(f'prepare: --ignore {value!r}: a mask value 0..255 or a colour r,g,b')


def folder_classes(kind, found, palette, colours, binary, threshold, ignore, previous):
    """(names, colours (r, g, b) per class, lut) of the masks: kind 'index' or 'colour' (mask_reading), found
    {value or colour code: pixels} over every mask, palette the agreed palette's colour codes (or None), colours
    the --colours table (read_colours, or None), binary --binary, threshold --threshold (or None), ignore
    parse_ignore's (or None), previous the last run's [(name, (r, g, b))] (previous_classes, or None). lut maps
    every value allowed to a class or IGNORE_LABEL. --ignore wins over the table. Without a table the names follow
    previous, by colour for colour masks (their order too: a new colour is a class at the end), by index for
    index masks. A class count that labels cannot hold stops the command."""
    if ignore is not None and ignore[0] != kind:
        raise SystemExit(f'prepare: --ignore gives a{" colour" if ignore[0] == "colour" else "n index"} but the '
                         f'masks hold {"colours" if kind == "colour" else "class indices"}')
    if binary and kind == 'colour':  # else each colour would be a class, --threshold unused
        raise SystemExit('prepare: --binary reads grey masks (0 and 255, or cut at --threshold), but these hold '
                         'colours (RGB or RGBA, grey ones too): save them as grey (mode L) masks, or leave --binary '
                         'out, so that each colour is a class')
    if kind == 'colour':
        lut = {TRANSPARENT: settings.IGNORE_LABEL}
    elif threshold is not None:  # --binary --threshold T: T and above are the foreground
        lut = {value: int(value >= threshold) for value in range(256)}
    elif binary:
        lut = {0: 0, 255: 1}
    elif set(found) <= {0, 255} and 255 in found and settings.IGNORE_LABEL == 255 and ignore is None:
        raise SystemExit('prepare: the masks hold only 0 and 255, a binary mask; but 255 is IGNORE_LABEL, "no '
                         'label" in a class-index mask, so the foreground would be ignored and one class trained: '
                         'give --binary (255 → class 1), or --ignore 255 if 255 does mean "no label"')
    else:
        lut = {settings.IGNORE_LABEL: settings.IGNORE_LABEL}
    if ignore is not None:
        lut[ignore[1]] = settings.IGNORE_LABEL
    if colours is not None:
        keys = [int(colour_codes(rgb)) if kind == 'colour' else k for k, (_, rgb, _) in enumerate(colours)]
        for key, (name, rgb, where) in zip(keys, colours):
            if lut.get(key) == settings.IGNORE_LABEL:
                settings.logger.warning('prepare: --ignore wins over %s, %r %s: that %s is no label, not a class',
                                        where, name, rgb, 'colour' if kind == 'colour' else 'value')
        table = [(key, name, rgb) for key, (name, rgb, _) in zip(keys, colours)
                 if lut.get(key) != settings.IGNORE_LABEL]
        lut.update({key: k for k, (key, _, _) in enumerate(table) if key not in lut})
        names, rgbs = [name for _, name, _ in table], [rgb for _, _, rgb in table]
    elif kind == 'colour':  # the colours found are the classes: the last run's in its order, then the new ones
        codes = {code for code in found if code not in lut}
        rgbs = [rgb for _, rgb in previous or [] if int(colour_codes(rgb)) in codes]
        rgbs += [rgb_of(code) for code in sorted(codes - {int(colour_codes(rgb)) for rgb in rgbs})]
        lut.update({int(colour_codes(rgb)): k for k, rgb in enumerate(rgbs)})
        names = class_names(rgbs, {rgb: name for name, rgb in previous or []})
        settings.logger.info('prepare: %d colours found, each a class (name them in classes.txt):\n%s', len(rgbs),
                             '\n'.join(f'  {name}  {rgb}: {found[int(colour_codes(rgb))]} px'
                                       for name, rgb in zip(names, rgbs)))
    else:  # class indices: the values found, or 0 and 1 of --binary
        n_classes = 2 if binary else max(set(found) - set(lut), default=0) + 1
        lut.update({value: value for value in range(n_classes) if value not in lut})
        colour_map = colour_codes(np.reshape(dataset.voc_palette(), (-1, 3))).tolist()
        rgbs = [rgb_of(code) for code in ((palette or []) + colour_map[len(palette or []):])[:n_classes]]
        names = class_names(range(n_classes), dict(enumerate(name for name, _ in previous or [])))
    if not names:  # nothing to learn: training on N_CLASSES = 0 fails far from the cause
        raise SystemExit('prepare: the masks hold no class: every pixel of them is no label (transparent, or the '
                         '--ignore value); give the masks that hold the classes')
    limit = min(256, settings.IGNORE_LABEL) if settings.IGNORE_LABEL >= 0 else 256
    if len(names) > limit:
        raise SystemExit(f'prepare: the masks make {len(names)} classes (0..{len(names) - 1}), but a label holds '
                         f'{limit} at most: a label PNG has 8 bits (0..255), and IGNORE_LABEL = '
                         f'{settings.IGNORE_LABEL} is "no label", no class; merge classes, or give --colours FILE '
                         f'listing the classes, so that another value or colour is an error naming its mask')
    if previous is not None:
        log_class_changes(previous, names, rgbs, kind == 'colour')
    return names, rgbs, lut


def class_names(keys, before):
    """The name of each class, by its key (colour or index): its name in before ({key: name}), else class_<k> (k
    its index; class_<k>_<n> where a kept name has that)."""
    names = [before.get(key) for key in keys]
    for k, name in enumerate(names):
        if name is None:
            names[k] = next(f'class_{k}' + suffix for suffix in [''] + [f'_{n}' for n in range(1, len(names) + 2)]
                            if f'class_{k}' + suffix not in names)
    return names


def log_class_changes(previous, names, rgbs, by_colour):
    """Logs how the classes differ from the last run's (previous: [(name, (r, g, b))]), matched by colour
    (by_colour) or by index: the new ones, the gone ones, the renamed ones (a colours file names its own)."""
    before = {rgb if by_colour else k: (name, rgb) for k, (name, rgb) in enumerate(previous)}
    now = {rgb if by_colour else k: (k, name, rgb) for k, (name, rgb) in enumerate(zip(names, rgbs))}
    changes = [f'new class {k} {name!r} {rgb}' for key, (k, name, rgb) in now.items() if key not in before]
    changes += [f'{name!r} {rgb} is gone (no mask holds it now)' for key, (name, rgb) in before.items()
                if key not in now]
    changes += [f'{before[key][0]!r} {rgb} is now {name!r}' for key, (k, name, rgb) in now.items()
                if key in before and before[key][0] != name]
    if changes:
        settings.logger.warning('prepare: the classes since the last run: %s; the others keep their names',
                                '; '.join(changes))


def previous_classes(out):
    """[(name, (r, g, b))] of the dataset an earlier run wrote in out, whose classes.txt the user may have edited;
    None if there is none. A run stopped while it swapped its dataset in (swap_in) left out without lists/ and
    its whole dataset in out/NEW: the names are there."""
    new = os.path.join(out, NEW)
    source = new if not os.path.isdir(os.path.join(out, 'lists')) and os.path.isdir(os.path.join(new, 'lists')) else out
    if not os.path.exists(dataset.folder_file('classes', source)):
        return None
    try:
        data = dataset.folder_data(source)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'prepare: {error}. Line k of classes.txt names the class of colour k of palette.txt: fix '
                         f'them, or remove both to start afresh') from None
    return list(zip(data['classes'], data['palette']))


def mapped(mask, by_colour, lut):
    """H × W uint8 label of a mask: its values (read_mask) through lut ({value or colour code: class or
    IGNORE_LABEL}); a value that lut lacks is an error naming the file, a pixel and the value."""
    reading, values, _ = read_mask(mask, by_colour)
    keys = np.array(sorted(lut), np.int64)
    where = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
    known = keys[where] == values
    if not known.all():
        y, x = np.argwhere(~known)[0]
        value = int(values[y, x])
        what = f'colour {rgb_of(value)}' if reading == 'colour' else f'value {value}'
        raise ValueError(f'mask {mask} has the {what} at pixel (x={x}, y={y}), which no class has '
                         f'(the colours file, --binary or --ignore decide the classes)')
    return np.array([lut[k] for k in keys.tolist()], np.uint8)[where]


def label_of(job):
    """Writes the label of a mask (mapped) as target: a hard link to previous (the last run's label of the id) when
    that holds the same classes, so an unchanged label keeps its file; 'kept' or 'written'. job = (mask,
    by_colour, lut, target, previous)."""
    mask, by_colour, lut, target, previous = job
    label = mapped(mask, by_colour, lut)
    try:
        same = np.array_equal(dataset.read_label(previous), label)
    except (FileNotFoundError, ValueError):  # none, or a broken earlier output
        same = False
    if not same:
        dataset.save_label_png(label, target)
        return 'written'
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(previous, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(previous, target)
    return 'kept'


def write_text(path, lines):
    """Writes lines to path atomically."""
    with open(path + '.tmp', 'w') as f:
        f.write(''.join(line + '\n' for line in lines))
    os.replace(path + '.tmp', path)


def swap_in(out):
    """Replaces the dataset in out (lists/, labels/, classes.txt, palette.txt, images.txt) with the one written in
    out/NEW. The old lists/ goes first and the new one comes last, so every state in between has no lists/,
    which `prepare.py check` and training refuse (and a run stopped there leaves out/NEW whole, for
    previous_classes); the three files are copied in atomically, each."""
    new, old = os.path.join(out, NEW), os.path.join(out, OLD)
    shutil.rmtree(old, ignore_errors=True)
    os.makedirs(old)
    for name in ('lists', 'labels'):
        if os.path.exists(os.path.join(out, name)):
            os.rename(os.path.join(out, name), os.path.join(old, name))
    os.rename(os.path.join(new, 'labels'), os.path.join(out, 'labels'))
    for kind in ('classes', 'palette', 'images'):
        shutil.copyfile(dataset.folder_file(kind, new), dataset.folder_file(kind, out) + '.tmp')
        os.replace(dataset.folder_file(kind, out) + '.tmp', dataset.folder_file(kind, out))
    os.rename(os.path.join(new, 'lists'), os.path.join(out, 'lists'))
    shutil.rmtree(old)
    shutil.rmtree(new)


def folder_survey(ids, pairs, colours, binary, threshold, ignore, exif, previous):
    """(upright, by_colour, names, colours (r, g, b) per class, lut) of the pairs (id → (image, mask)), from two
    passes over them, before anything is written: their headers (sizes, EXIF orientations, modes, palettes: the
    orientation rule, how the masks are read), then their values (the palettes' colours of the indices used,
    soft masks, the classes, values no class has).
    The other arguments are prepare_folder's, previous_classes' result; every problem stops the command."""
    try:
        with dataset.worker_pool() as pool:
            headers = pool.map(pair_header, [pairs[image_id] for image_id in ids], chunksize=64)
            upright = orientation_rule(ids, pairs, headers, exif) == 'shown'
            kind, by_colour = mask_reading(ids, pairs, headers, colours)
            surveys = pool.map(survey_mask, [(pairs[image_id][1], by_colour) for image_id in ids],
                               chunksize=16)
        palette = None if by_colour else agreed_palette(ids, pairs, headers, surveys)
        if threshold is None:
            refuse_soft(kind, ids, pairs, surveys, colours)
        found = collections.Counter()
        for counts, _ in surveys:
            found.update(counts)
        if found[TRANSPARENT]:
            settings.logger.info('prepare: %d pixels of %d masks are transparent (alpha 0): no label (IGNORE_LABEL '
                                 '%d), no class; to make them one, flatten the masks onto its colour',
                                 found[TRANSPARENT], sum(TRANSPARENT in counts for counts, _ in surveys),
                                 settings.IGNORE_LABEL)
        names, rgbs, lut = folder_classes(kind, found, palette, colours, binary, threshold, ignore, previous)
        first_bad = next((image_id for image_id, (counts, _) in zip(ids, surveys) if counts.keys() - lut.keys()), None)
        if first_bad is not None:
            mapped(pairs[first_bad][1], by_colour, lut)  # raises, naming the pixel
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'prepare: {error}') from None
    return upright, by_colour, names, rgbs, lut


def write_folder(new, out, pairs, lists, upright, by_colour, names, rgbs, lut):
    """Writes the dataset of pairs (id → (image, mask)) and lists (split → ids) into the folder new, as out will
    hold it (images.txt's paths are relative to out; a label that out/labels has alike is linked, not written):
    classes.txt, palette.txt and images.txt, the labels, then lists/, last. Returns the labels' outcomes."""
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new)
    write_text(dataset.folder_file('classes', new), names)
    write_text(dataset.folder_file('palette', new), [' '.join(map(str, rgb)) for rgb in rgbs])
    write_text(dataset.folder_file('images', new), [
        '\t'.join([image_id, os.path.relpath(os.path.abspath(image), os.path.abspath(out))]
                  + ([] if upright else ['stored'])) for image_id, (image, _) in pairs.items()])
    try:
        with settings.applied({'DATASET': 'folder', 'N_CLASSES': len(names), 'DATA_ROOT': new}):
            jobs = [(mask, by_colour, lut, dataset.label_path(image_id, new), dataset.label_path(image_id, out))
                    for image_id, (_, mask) in pairs.items()]
            with dataset.worker_pool() as pool:  # its workers take these settings: the labels' palette is new's
                outcomes = collections.Counter(pool.imap_unordered(label_of, jobs, chunksize=16))
            dataset.write_lists(lists, new)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'prepare: {error}') from None
    return outcomes


def prepare_folder(images, masks, out, val_images=None, val_masks=None, val_fraction=0.1, colours_file=None,
                   binary=False, ignore=None, threshold=None, exif=None):
    """Writes out/labels/<id>.png (single-channel class indices in the masks' colours), out/lists/{train,val}.txt,
    classes.txt, palette.txt and images.txt (each id's image, where it is) from folders of images and masks
    paired by relative path without extension; ids are those paths, under train/ and val/ when the validation
    set comes in folders of its own. Every problem stops it before it writes; it writes the new dataset into
    out/NEW, then swaps it in (swap_in), so a run that stops leaves the previous one whole, and labels no list
    names go with it. A second run that comes to write while one writes out is refused (out/LOCK)."""
    if os.path.isdir(os.path.join(masks, 'SegmentationClass')) and \
            os.path.isfile(os.path.join(masks, 'labelmap.txt')):  # a CVAT "Segmentation mask 1.1" export
        colours_file = colours_file or os.path.join(masks, 'labelmap.txt')
        masks = os.path.join(masks, 'SegmentationClass')
        settings.logger.info('prepare: a CVAT export: masks in %s, colours from %s', masks, colours_file)
    for flag, folder in (('images', images), ('masks', masks), ('val-images', val_images), ('val-masks', val_masks)):
        for replaced in (os.path.join(out, name) for name in ('labels', 'lists', NEW, OLD)):
            if folder and os.path.commonpath([os.path.realpath(folder), os.path.realpath(replaced)]) == \
                    os.path.realpath(replaced):  # swap_in would move it out with the old dataset, and delete it
                raise SystemExit(f'prepare: --{flag} {folder} lies in {replaced}, which the command replaces with '
                                 f'the dataset it writes: move the {flag.split("-")[-1]} elsewhere, or give another '
                                 f'--out')
    if threshold is not None and not (binary and 1 <= threshold <= 255):
        raise SystemExit(f'prepare: --threshold {threshold}: a value 1..255, with --binary')
    if val_images:
        splits = {split: {f'{split}/{key}': pair for key, pair in paired_files(*folders).items()}
                  for split, folders in (('train', (images, masks)), ('val', (val_images, val_masks)))}
        pairs = dict(sorted({**splits['train'], **splits['val']}.items()))
        lists = {split: sorted(found) for split, found in splits.items()}
    else:
        pairs = paired_files(images, masks)
        lists = split_pairs(list(pairs), val_fraction)
    colours = read_colours(colours_file) if colours_file else None
    upright, by_colour, names, rgbs, lut = folder_survey(
        list(pairs), pairs, colours, binary, threshold, parse_ignore(ignore) if ignore is not None else None, exif,
        previous_classes(out))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, LOCK), 'a+') as lock:  # one run writes out/NEW and swaps it in at a time
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped by the kernel when its process dies
        except BlockingIOError:
            lock.seek(0)
            raise SystemExit(f'prepare: another prepare.py folder run ({lock.read().strip()}) is writing {out}: wait '
                             f'for it to end, then run again') from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks (some NFS mounts)
            settings.logger.warning('prepare: cannot lock %s (%s): nothing stops a second prepare.py folder run '
                                    'writing %s; run one at a time', lock.name, e.strerror or e, out)
        lock.truncate(0)
        lock.write(f'pid {os.getpid()}, started {time.strftime("%Y-%m-%d %H:%M:%S")}')
        lock.flush()
        outcomes = write_folder(os.path.join(out, NEW), out, pairs, lists, upright, by_colour, names, rgbs, lut)
        labels = os.path.join(out, 'labels')
        stale = sorted(os.path.relpath(os.path.join(directory, name), labels)
                       for directory, _, files in os.walk(labels) for name in files
                       if os.path.relpath(os.path.join(directory, name), labels).replace(os.sep, '/')[:-len('.png')]
                       not in pairs)
        swap_in(out)
    if stale:
        settings.logger.info('prepare: %d label file(s) of the last run that no list names now removed: %s%s',
                             len(stale), ', '.join(stale[:SHOWN_UNPAIRED]),
                             ', ...' if len(stale) > SHOWN_UNPAIRED else '')
    settings.logger.info('prepare: %s: %d classes (%s), train %d, val %d; labels: %d written, %d already correct',
                         out, len(names), ', '.join(names), len(lists['train']), len(lists['val']),
                         outcomes['written'], outcomes['kept'])
    settings.logger.info("prepare: the settings to train on it, for settings.py:\nDATASET = 'folder'\nDATA_ROOT = %r\n"
                         "N_CLASSES = %d\nTRAIN_SPLIT = 'train'", out, len(names))


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
                        help='without --val-images: each pair validates with this probability, drawn from a hash of '
                             'its path, so adding pairs never moves one (default: 0.1)')
    folder.add_argument('--colours', metavar='FILE', help="the classes in order with their colours: 'name r g b' "
                                                          "lines, CVAT's labelmap.txt or CamVid's label_colors.txt")
    folder.add_argument('--binary', action='store_true', help='masks of 0 and 255: 255 is class 1 (not IGNORE_LABEL)')
    folder.add_argument('--threshold', type=int, metavar='T', help='with --binary: values of T and above are class 1, '
                                                                   'the others 0 (soft masks, resized with bilinear)')
    folder.add_argument('--exif', choices=('shown', 'stored'),
                        help='how the masks were drawn on photos with an EXIF orientation, where their size cannot '
                             'tell: on the photo as a viewer shows it (default) or as stored')
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
                       args.colours, args.binary, args.ignore, args.threshold, args.exif)
    elif args.command == 'demo':
        make_demo(args.out_dir, args.seed)
    elif dataset.check():
        raise SystemExit(1)


if __name__ == '__main__':
    main()
