"""The datasets beyond VOC: prepare.py on miniatures of each official download (its real folders, file names and
formats, made-up content), the written labels value by value against mappings written out here by hand, the lists,
the errors; then Cityscapes and PASCAL Context (59 classes) trained and evaluated through the scripts."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import dataset
import prepare
import settings
from conftest import HANG_GUARD, ROOT, make_experiment, run_script

HEIGHT, WIDTH = 40, 60

# Cityscapes labelId → trainId, read off cityscapesScripts' labels.py table: ignored ids among them (void 0-6,
# parking 9, polegroup 18, caravan 29, trailer 30, 34 is no id at all, and license plate's -1, as a uint8 reads it)
CITYSCAPES_TRAIN_IDS = {0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 9: 255, 11: 2, 17: 5, 18: 255, 23: 10, 24: 11, 26: 13,
                        29: 255, 30: 255, 31: 16, 33: 18, 34: 255, 255: 255}
CITYSCAPES_NAMES = ['road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
                    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
                    'bicycle']

# ADE20K annotation value → class: 0 'other' ignored, k → k - 1
ADE20K_CLASSES = {0: 255, 1: 0, 2: 1, 75: 74, 149: 148, 150: 149}

# COCO-Stuff id (as the 10k .mat holds it) → class, round the dropped thing ids 12, 26 and 91; 0 is unlabeled
COCOSTUFF_CLASSES = {0: 255, 1: 0, 11: 10, 12: 255, 13: 11, 25: 23, 26: 255, 27: 24, 90: 79, 91: 255, 92: 80,
                     182: 170}

# PASCAL Context: the 59 classes' ids in labels.txt (the release's 459 classes, alphabetical) ...
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
# ... and labels.txt id → written class (0 background, 1-59 alphabetical); 0, 1, 100 and 459 are no class of the 59
CONTEXT_CLASSES = {0: 0, 1: 0, 2: 1, 9: 2, 19: 4, 80: 18, 100: 0, 397: 50, 427: 55, 454: 58, 458: 59, 459: 0}
# the same classes as 59_context_labels values: aeroplane, bag, bedcloth, clothes, diningtable, tvmonitor, ...
CONTEXT_59_CLASSES = {0: 0, 1: 1, 21: 2, 52: 4, 28: 18, 11: 50, 20: 55, 58: 58, 59: 59}


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
    renamed = {'diningtable': 'table', 'bedcloth': 'bedclothes', 'clothes': 'cloth'}
    line = {renamed.get(name, name): k for k, name in enumerate(CONTEXT_59_LINES, 1)}
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
    done = subprocess.run([sys.executable, 'prepare.py', 'cityscapes', '--root', str(root)], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_GUARD)
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
