"""Your own data: `prepare.py folder` on miniatures in the formats tools write, DATASET 'folder' through
training and evaluation, `prepare.py check`'s table and warnings, and hubconf.py (the Python API and torch.hub)
against eval.py."""
import errno
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import struct
import unicodedata
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

import checkpoint
import dataset
import hubconf
import network
import prepare
import settings
from harness import ROOT, TINY, make_experiment, run_script

pytestmark = pytest.mark.xdist_group(__name__)  # the trained experiment is shared by the module's tests

TABLE = [('background', (0, 0, 0)), ('red thing', (255, 0, 0)), ('leaf', (0, 200, 0))]
COLOURS = np.array([rgb for _, rgb in TABLE], np.uint8)
SIZE = (40, 30)  # W × H of every miniature image as shown
# the three forms of one colours file: 'name r g b', CVAT's labelmap.txt, CamVid's label_colors.txt
COLOUR_FILES = {
    'plain': 'background 0 0 0\nred thing 255 0 0\nleaf 0 200 0\n',
    'cvat': '# label:color_rgb:parts:actions\nbackground:0,0,0::\nred thing:255,0,0::\nleaf:0,200,0::\n',
    'camvid': '0 0 0\tbackground\n255 0 0\tred thing\n0 200 0\tleaf\n',
}


def class_map(rng, height=SIZE[1], width=SIZE[0], block=10, classes=3):
    """H × W classes in blocks of block × block px."""
    grid = rng.integers(0, classes, (-(-height // block), -(-width // block)))
    return np.kron(grid, np.ones((block, block), int))[:height, :width].astype(np.uint8)


def save_image(array, path, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    extension = os.path.splitext(path)[1]
    sharp = {'.jpg': {'quality': 100, 'subsampling': 0}, '.jpeg': {'quality': 100, 'subsampling': 0},
             '.webp': {'lossless': True}}.get(extension, {})  # colours that still tell the class
    Image.fromarray(array).save(path, **sharp, **options)


def miniature(folder, seed=0, n=10):
    """images/ and masks/ (RGB colour masks of TABLE) as a user has them: nested folders, every extension, an
    image and a mask without partners, an EXIF-rotated photo whose mask has its shown size, a grayscale and a
    16-bit image. Returns {id: class map}."""
    rng = np.random.default_rng(seed)
    labels = {}
    for index in range(n):
        image_id = f'{"a/b/" if index % 3 == 0 else ""}img_{index:03d}'
        label = class_map(rng)
        extension = ('.jpg', '.png', '.bmp', '.tif', '.webp', '.jpeg')[index % 6]
        save_image(COLOURS[label], f'{folder}/images/{image_id}{extension}')
        save_image(COLOURS[label], f'{folder}/masks/{image_id}.png')
        labels[image_id] = label
    labels['phone'] = class_map(rng)  # stored turned by 90°: EXIF orientation 6 shows it upright, as its mask
    exif = Image.Exif()
    exif[dataset.EXIF_ORIENTATION] = 6
    save_image(np.rot90(COLOURS[labels['phone']]).copy(), f'{folder}/images/phone.jpg', exif=exif)
    save_image(COLOURS[labels['phone']], f'{folder}/masks/phone.png')
    labels['grey'] = class_map(rng)
    save_image(80 * labels['grey'], f'{folder}/images/grey.png')
    save_image(COLOURS[labels['grey']], f'{folder}/masks/grey.png')
    labels['deep'] = class_map(rng)
    Image.fromarray(20000 * labels['deep'].astype(np.uint16)).save(f'{folder}/images/deep.png')  # I;16
    save_image(COLOURS[labels['deep']], f'{folder}/masks/deep.png')
    save_image(COLOURS[class_map(rng)], f'{folder}/images/a/no_mask.png')
    save_image(COLOURS[class_map(rng)], f'{folder}/masks/no_image.png')
    with open(f'{folder}/colours.txt', 'w') as f:
        f.write(COLOUR_FILES['plain'])
    return labels


@pytest.fixture
def log():
    """What settings.logger writes during the test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    settings.logger.addHandler(handler)
    yield stream
    settings.logger.removeHandler(handler)


def hashed_val(ids, fraction):
    """The ids that validate, as DATASETS.md defines the split: the first 8 bytes of the SHA-256 of the id, as a
    fraction of 2**64, below fraction."""
    return sorted(i for i in ids if int(hashlib.sha256(i.encode('utf-8')).hexdigest()[:16], 16) / 2 ** 64 < fraction)


def as_folder(monkeypatch, root, n_classes):
    for name, value in (('DATASET', 'folder'), ('DATA_ROOT', str(root)), ('N_CLASSES', n_classes),
                        ('TRAIN_SPLIT', 'train'), ('VAL_SPLIT', 'val')):
        monkeypatch.setattr(settings, name, value)


def written_labels(out):
    return {image_id: dataset.read_label(os.path.join(out, 'labels', image_id + '.png'))
            for split in ('train', 'val') for image_id in dataset.read_list(os.path.join(out, 'lists', split + '.txt'))}


# ---------------------------------------------------------------- prepare.py folder

def test_colour_masks_through_a_table_in_every_form_a_user_has(tmp_path, monkeypatch, log):
    labels = miniature(tmp_path)
    out = str(tmp_path / 'data')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, colours_file=f'{tmp_path}/colours.txt')
    err = log.getvalue()
    assert '1 image file(s) with no mask' in err and 'no_mask.png' in err
    assert '1 mask file(s) with no image' in err and 'no_image.png' in err
    found = written_labels(out)
    assert found.keys() == labels.keys()
    for image_id, label in labels.items():
        np.testing.assert_array_equal(found[image_id], label, err_msg=image_id)
    assert dataset.read_lines(f'{out}/classes.txt') == [name for name, _ in TABLE]
    assert dataset.read_lines(f'{out}/palette.txt') == ['0 0 0', '255 0 0', '0 200 0']
    assert not os.path.exists(f'{out}/images') and not os.path.exists(f'{out}/phone.jpg')  # images stay put
    lists = {split: dataset.read_list(f'{out}/lists/{split}.txt') for split in ('train', 'val')}
    assert lists == {'train': sorted(set(labels) - set(hashed_val(labels, 0.1))), 'val': hashed_val(labels, 0.1)}

    as_folder(monkeypatch, out, 3)
    assert dataset.current()['classes'] == ('background', 'red thing', 'leaf')
    assert dataset.palette()[:9] == [0, 0, 0, 255, 0, 0, 0, 200, 0]
    image, label = dataset.load_sample('phone')  # read as shown, as its mask was drawn
    assert image.size == SIZE == dataset.sample_size('phone')
    assert (np.abs(np.asarray(image, int) - COLOURS[label]).max(axis=2) < 40).mean() > 0.97
    image, _ = dataset.load_sample('grey')
    assert image.mode == 'RGB' and sorted(np.unique(np.asarray(image)[..., 0])) == sorted(
        80 * np.unique(labels['grey']))
    image, _ = dataset.load_sample('deep')  # 16 bit → 8 bit: 20000 / 257
    assert sorted(np.unique(np.asarray(image)[..., 1])) == sorted(np.round(20000 * np.unique(labels['deep']).astype(int) / 257))
    assert dataset.check() == []


@pytest.mark.parametrize('form', sorted(COLOUR_FILES))
def test_the_three_colour_file_forms_read_alike(tmp_path, form):
    path = tmp_path / 'colours.txt'
    path.write_text(COLOUR_FILES[form])
    assert [(name, rgb) for name, rgb, _ in prepare.read_colours(str(path))] == TABLE


def test_a_cvat_export_is_a_folder_of_masks(tmp_path):
    labels = miniature(tmp_path, n=3)
    export = tmp_path / 'cvat'
    shutil.copytree(tmp_path / 'masks', export / 'SegmentationClass')
    (export / 'labelmap.txt').write_text(COLOUR_FILES['cvat'])
    shutil.copytree(tmp_path / 'masks', export / 'SegmentationObject')  # instances: colours of no class
    for colours_file in (None, str(export / 'labelmap.txt')):  # its labelmap found, or given: "no image has a mask"
        prepare.prepare_folder(f'{tmp_path}/images', str(export), str(tmp_path / 'data'), colours_file=colours_file)
        found = written_labels(str(tmp_path / 'data'))
        for image_id, label in labels.items():
            np.testing.assert_array_equal(found[image_id], label)


def test_camvids_masks_named_as_their_images_plus_l_pair(tmp_path, log):
    """CamVid's LabeledApproved_full/0001TP_006690_L.png labels 701_StillsRaw_full/0001TP_006690.png: every
    mask's name adds _L to its image's. It was "no image has a mask of the same path"; a suffix that makes only
    some masks pair is no rule (they stay unpaired)."""
    rng = np.random.default_rng(4)
    labels = {f'0001TP_{frame:06d}': class_map(rng) for frame in (6690, 6720, 6750)}
    for image_id, label in labels.items():
        save_image(COLOURS[label], f'{tmp_path}/701_StillsRaw_full/{image_id}.png')
        save_image(COLOURS[label], f'{tmp_path}/LabeledApproved_full/{image_id}_L.png')
    (tmp_path / 'label_colors.txt').write_text(COLOUR_FILES['camvid'])
    prepare.prepare_folder(f'{tmp_path}/701_StillsRaw_full', f'{tmp_path}/LabeledApproved_full',
                           str(tmp_path / 'data'), colours_file=f'{tmp_path}/label_colors.txt')
    assert "every mask's name is its image's and '_L' (as CamVid's are): paired so" in log.getvalue()
    found = written_labels(str(tmp_path / 'data'))
    assert sorted(found) == sorted(labels)
    for image_id, label in labels.items():
        np.testing.assert_array_equal(found[image_id], label)
    os.rename(tmp_path / 'LabeledApproved_full' / '0001TP_006690_L.png', tmp_path / 'LabeledApproved_full' / 'x_L.png')
    with pytest.raises(SystemExit, match='no image of .* has a mask of the same path'):
        prepare.prepare_folder(f'{tmp_path}/701_StillsRaw_full', f'{tmp_path}/LabeledApproved_full',
                               str(tmp_path / 'data'), colours_file=f'{tmp_path}/label_colors.txt')


def test_a_colour_missing_from_the_table_is_named_with_file_and_pixel(tmp_path):
    miniature(tmp_path, n=2)
    mask = np.asarray(Image.open(tmp_path / 'masks' / 'grey.png')).copy()
    mask[7, 12] = (10, 20, 30)
    Image.fromarray(mask).save(tmp_path / 'masks' / 'grey.png')
    with pytest.raises(SystemExit, match=r'grey\.png has the colour \(10, 20, 30\) at pixel \(x=12, y=7\)'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                               colours_file=f'{tmp_path}/colours.txt')


def test_without_a_table_the_colours_found_are_the_classes_and_a_rerun_keeps_their_names(tmp_path, log):
    labels = miniature(tmp_path, n=4)
    out = str(tmp_path / 'data')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    err = log.getvalue()
    total = {k: sum((label == k).sum() for label in labels.values()) for k in range(3)}
    assert f'class_1  (0, 200, 0): {total[2]} px' in err and f'class_2  (255, 0, 0): {total[1]} px' in err
    found = written_labels(out)
    for image_id, label in labels.items():  # colour order: black, green, red
        np.testing.assert_array_equal(found[image_id], np.array([0, 2, 1], np.uint8)[label])
    assert dataset.read_lines(f'{out}/palette.txt') == ['0 0 0', '0 200 0', '255 0 0']
    # the user names the classes; a re-run keeps the names and touches no label it wrote
    (tmp_path / 'data' / 'classes.txt').write_text('ground\nplant\nfruit\n')
    (tmp_path / 'data' / 'notes.txt').write_text('mine')
    mtimes = {path: os.stat(path).st_mtime_ns for path in map(str, (tmp_path / 'data' / 'labels').rglob('*.png'))}
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    assert dataset.read_lines(f'{out}/classes.txt') == ['ground', 'plant', 'fruit']
    assert {path: os.stat(path).st_mtime_ns for path in mtimes} == mtimes
    assert (tmp_path / 'data' / 'notes.txt').read_text() == 'mine'


def index_miniature(folder, mode, values):
    """images/ and masks/ of single-channel masks (mode 'L' or palette 'P') holding values → {id: values map}."""
    rng = np.random.default_rng(1)
    masks = {}
    for index in range(4):
        label = np.asarray(values, np.uint8)[class_map(rng, classes=len(values))]
        save_image(COLOURS[class_map(rng)], f'{folder}/images/{index}.jpg')
        mask = Image.fromarray(label)
        if mode == 'P':
            mask.putpalette([9, 9, 9, 200, 100, 50, 1, 2, 3] * 85 + [7, 7, 7])
        os.makedirs(f'{folder}/masks', exist_ok=True)
        mask.save(f'{folder}/masks/{index}.png')
        masks[str(index)] = label
    return masks


def test_palette_masks_are_read_as_their_indices_in_their_colours(tmp_path):
    masks = index_miniature(tmp_path, 'P', (0, 1, 2, 255))
    out = str(tmp_path / 'data')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    found = written_labels(out)
    for image_id, label in masks.items():
        np.testing.assert_array_equal(found[image_id], label)
    assert dataset.read_lines(f'{out}/classes.txt') == ['class_0', 'class_1', 'class_2']
    assert dataset.read_lines(f'{out}/palette.txt') == ['9 9 9', '200 100 50', '1 2 3']


def test_binary_masks_need_binary_and_ignore_names_no_label(tmp_path):
    masks = index_miniature(tmp_path, 'L', (0, 255))
    out = str(tmp_path / 'data')
    with pytest.raises(SystemExit, match='only 0 and 255.*IGNORE_LABEL.*--binary'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, binary=True)
    for image_id, label in written_labels(out).items():
        np.testing.assert_array_equal(label, masks[image_id] // 255)
    assert len(dataset.read_lines(f'{out}/classes.txt')) == 2

    shutil.rmtree(tmp_path / 'masks')
    masks = index_miniature(tmp_path, 'L', (0, 1, 9))
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, ignore='9')
    for image_id, label in written_labels(out).items():
        np.testing.assert_array_equal(label, np.where(masks[image_id] == 9, 255, masks[image_id]))
    assert dataset.read_lines(f'{out}/classes.txt') == ['class_0', 'class_1']


def test_sizes_unpaired_folders_and_the_split(tmp_path):
    miniature(tmp_path, n=8)
    images, masks, out = f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data')
    prepare.prepare_folder(images, masks, out, val_fraction=0.25)
    first = {split: dataset.read_list(f'{out}/lists/{split}.txt') for split in ('train', 'val')}
    shutil.copytree(tmp_path / 'images', tmp_path / 'copy' / 'images')
    shutil.copytree(tmp_path / 'masks', tmp_path / 'copy' / 'masks')
    prepare.prepare_folder(f'{tmp_path}/copy/images', f'{tmp_path}/copy/masks', f'{tmp_path}/copy/data',
                           val_fraction=0.25)
    assert {split: dataset.read_list(f'{tmp_path}/copy/data/lists/{split}.txt') for split in first} == first
    assert first['val'] == hashed_val(first['train'] + first['val'], 0.25)

    prepare.prepare_folder(images, masks, out, val_images=images, val_masks=masks)
    assert dataset.read_list(f'{out}/lists/val.txt')[0] == 'val/a/b/img_000'

    save_image(COLOURS[class_map(np.random.default_rng(0), 31, 40)], f'{masks}/img_001.png')
    with pytest.raises(SystemExit, match=r'img_001\.png is 40×31 but its image .*img_001\.png is 40×30'):
        prepare.prepare_folder(images, masks, out)
    os.remove(f'{masks}/img_001.png')
    os.remove(f'{images}/phone.jpg')
    save_image(np.zeros((40, 30, 3), np.uint8), f'{images}/phone.jpg')  # no EXIF: 30 × 40 both ways
    with pytest.raises(SystemExit, match=r'phone\.png is 40×30 but its image .*phone\.jpg is 30×40'):
        prepare.prepare_folder(images, f'{masks}', out, colours_file=f'{tmp_path}/colours.txt')
    with pytest.raises(SystemExit, match='no image of .* has a mask of the same path'):
        prepare.prepare_folder(images, f'{masks}/a', out)


def test_n_classes_that_disagrees_with_classes_txt_is_named(tmp_path, monkeypatch):
    miniature(tmp_path, n=2)
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                           colours_file=f'{tmp_path}/colours.txt')
    as_folder(monkeypatch, tmp_path / 'data', 5)
    with pytest.raises(ValueError, match=r"N_CLASSES=5 but DATASET='folder' has 3 classes in .*classes\.txt"):
        dataset.current()


# ---------------------------------------------------------------- masks as tools write them (issue 39, part 1)

def write_pairs(folder, masks):
    """images/<id>.png (grey, of each mask's size) and masks/<id>.png (each mask as given: a PIL image)."""
    for image_id, mask in masks.items():
        save_image(np.full((mask.height, mask.width), 90, np.uint8), f'{folder}/images/{image_id}.png')
        os.makedirs(os.path.dirname(f'{folder}/masks/{image_id}.png'), exist_ok=True)
        mask.save(f'{folder}/masks/{image_id}.png')


def optimised(label, order):
    """The colour mask COLOURS[label] as an optimiser re-saves it: a palette PNG whose palette lists TABLE's
    colours in order (a permutation), its indices pointing into that."""
    mask = Image.fromarray(np.argsort(order).astype(np.uint8)[label], 'L').convert('P')
    mask.putpalette(COLOURS[list(order)].ravel().tolist())
    return mask


def test_palette_masks_of_colours_are_read_by_their_colours_each_through_its_own_palette(tmp_path, log):
    rng = np.random.default_rng(5)
    labels = {f'{k}': class_map(rng) for k in range(4)}
    orders = [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0)]  # each file's palette in an order of its own
    write_pairs(tmp_path, {image_id: optimised(label, order)
                           for (image_id, label), order in zip(labels.items(), orders)})
    out = str(tmp_path / 'data')
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['cvat'])
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, colours_file=f'{tmp_path}/colours.txt')
    for image_id, label in written_labels(out).items():
        np.testing.assert_array_equal(label, labels[image_id], err_msg=image_id)
    assert 'masks: 4 palette PNGs read by their colours, each through its own palette' in log.getvalue()
    # without a table the indices cannot be trusted when the palettes disagree: refused, naming two files
    with pytest.raises(SystemExit, match=r'palette masks disagree: index 0 is \(0, 0, 0\) in \S+/masks/0\.png but '
                                         r'\(0, 200, 0\) in \S+/masks/1\.png.*give --colours FILE'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'other'))
    # among RGB masks, a re-saved one is read by its colours too (without a table: each colour a class)
    save_image(COLOURS[labels['0']], f'{tmp_path}/masks/0.png')
    os.remove(f'{tmp_path}/masks/2.png')
    os.remove(f'{tmp_path}/masks/3.png')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'mixed'))
    assert 'masks: 1 RGB colours, 1 palette PNGs read by their colours' in log.getvalue()
    for image_id, label in written_labels(str(tmp_path / 'mixed')).items():  # colour order: black, green, red
        np.testing.assert_array_equal(label, np.array([0, 2, 1], np.uint8)[labels[image_id]], err_msg=image_id)


def test_palette_masks_whose_palettes_agree_are_read_by_their_indices(tmp_path, log):
    """A colour that only one file's palette has at an index the others leave unused agrees; the indices decide."""
    rng = np.random.default_rng(6)
    labels = {f'{k}': class_map(rng) for k in range(2)}
    short = Image.fromarray(np.minimum(labels['0'], 1))
    short.putpalette(COLOURS[:2].ravel().tolist())  # 2 entries: those it uses, as an optimiser leaves them
    full = Image.fromarray(labels['1'])
    full.putpalette(COLOURS.ravel().tolist())
    write_pairs(tmp_path, {'0': short, '1': full})
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))
    assert 'masks: 2 palette PNGs read by their indices (their palettes agree)' in log.getvalue()
    found = written_labels(str(tmp_path / 'data'))
    np.testing.assert_array_equal(found['0'], np.minimum(labels['0'], 1))
    np.testing.assert_array_equal(found['1'], labels['1'])
    assert dataset.read_lines(f'{tmp_path}/data/palette.txt') == ['0 0 0', '255 0 0', '0 200 0']


def test_palettes_that_differ_only_at_indices_no_pixel_uses_agree(tmp_path, log):
    """One tool writes VOC's colour map in all 256 entries, another the classes' colours then black: they differ at
    index 3 and on, which no pixel uses; the indices decide. Where a pixel uses an index, its colour must agree."""
    rng = np.random.default_rng(8)
    labels = {f'{k}': class_map(rng) for k in range(4)}
    masks = {}
    for image_id, label in labels.items():
        masks[image_id] = Image.fromarray(label, 'L').convert('P')
        masks[image_id].putpalette(dataset.voc_palette() if int(image_id) % 2 else
                                   dataset.voc_palette()[:9] + [0] * (768 - 9))
    write_pairs(tmp_path / 'unused', masks)
    prepare.prepare_folder(f'{tmp_path}/unused/images', f'{tmp_path}/unused/masks', str(tmp_path / 'data'))
    assert 'masks: 4 palette PNGs read by their indices (their palettes agree)' in log.getvalue()
    assert {image_id: label.tolist() for image_id, label in written_labels(str(tmp_path / 'data')).items()} == \
        {image_id: label.tolist() for image_id, label in labels.items()}
    masks['0'] = Image.fromarray(np.full(labels['0'].shape, 3, np.uint8), 'L').convert('P')  # index 3, used: black
    masks['0'].putpalette(dataset.voc_palette()[:9] + [0] * (768 - 9))
    masks['3'] = Image.fromarray(np.maximum(labels['3'], 3), 'L').convert('P')  # index 3, used: VOC's olive
    masks['3'].putpalette(dataset.voc_palette())
    write_pairs(tmp_path / 'used', {'0': masks['0'], '3': masks['3']})
    with pytest.raises(SystemExit, match=r'palette masks disagree: index 3 is \(0, 0, 0\) in \S+/masks/0\.png but '
                                         r'\(128, 128, 0\) in \S+/masks/3\.png'):
        prepare.prepare_folder(f'{tmp_path}/used/images', f'{tmp_path}/used/masks', str(tmp_path / 'data2'))


@pytest.mark.parametrize('table, line', [('cvat', 2), ('camvid', 1)])
def test_ignore_wins_over_a_colours_file_that_lists_the_colour(tmp_path, log, table, line):
    """CVAT's labelmap.txt always starts with background:0,0,0, CamVid's label_colors.txt with its Void 0 0 0."""
    labels = miniature(tmp_path, n=3)
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES[table])
    out = str(tmp_path / 'data')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, colours_file=f'{tmp_path}/colours.txt',
                           ignore='0,0,0')
    for image_id, label in written_labels(out).items():
        np.testing.assert_array_equal(label, np.array([255, 0, 1], np.uint8)[labels[image_id]], err_msg=image_id)
    assert dataset.read_lines(f'{out}/classes.txt') == ['red thing', 'leaf']
    assert f"--ignore wins over {tmp_path}/colours.txt line {line}, 'background' (0, 0, 0): that colour is no " \
           f"label" in log.getvalue()


def test_ignore_wins_over_a_colours_file_for_index_masks_too(tmp_path, log):
    masks = index_miniature(tmp_path, 'L', (0, 1, 2))
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'])
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                           colours_file=f'{tmp_path}/colours.txt', ignore='0')
    assert f"--ignore wins over {tmp_path}/colours.txt line 1, 'background' (0, 0, 0): that value is no label" in \
        log.getvalue()
    assert dataset.read_lines(f'{tmp_path}/data/classes.txt') == ['red thing', 'leaf']
    for image_id, label in written_labels(str(tmp_path / 'data')).items():
        np.testing.assert_array_equal(label, np.array([255, 0, 1], np.uint8)[masks[image_id]])


def soft_binary(rng):
    """A 0/255 mask drawn at 4× and resized with bilinear, as an everyday script does: soft edges."""
    big = np.zeros((120, 160), np.uint8)
    y, x = np.mgrid[:120, :160]
    big[(y - rng.uniform(40, 80)) ** 2 + (x - rng.uniform(50, 110)) ** 2 < rng.uniform(25, 35) ** 2] = 255
    return Image.fromarray(big).resize((40, 30), Image.Resampling.BILINEAR)


def test_soft_masks_are_refused_saying_what_happened_and_what_to_do(tmp_path):
    rng = np.random.default_rng(7)
    write_pairs(tmp_path / 'binary', {f'{k}': soft_binary(rng) for k in range(3)})
    with pytest.raises(SystemExit, match=r'the masks are soft: \d+ values \(.*\) lie between the values of their '
                                         r'neighbours.*bilinear.*nearest-neighbour.*--binary --threshold 128'):
        prepare.prepare_folder(f'{tmp_path}/binary/images', f'{tmp_path}/binary/masks', str(tmp_path / 'data'))
    with pytest.raises(SystemExit, match='the masks are soft'):  # --binary alone: only 0 and 255 are classes
        prepare.prepare_folder(f'{tmp_path}/binary/images', f'{tmp_path}/binary/masks', str(tmp_path / 'data'),
                               binary=True)
    prepare.prepare_folder(f'{tmp_path}/binary/images', f'{tmp_path}/binary/masks', str(tmp_path / 'data'),
                           binary=True, threshold=128)
    for image_id, label in written_labels(str(tmp_path / 'data')).items():
        mask = np.asarray(Image.open(f'{tmp_path}/binary/masks/{image_id}.png'))
        np.testing.assert_array_equal(label, (mask >= 128).astype(np.uint8))
    # a colour mask with blended edges, with its table and without
    label = class_map(rng, 120, 160, block=40)
    mask = Image.fromarray(COLOURS[label]).resize((40, 30), Image.Resampling.BILINEAR)
    write_pairs(tmp_path / 'colour', {'0': mask, '1': mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)})
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'])
    for table in (f'{tmp_path}/colours.txt', None):
        with pytest.raises(SystemExit, match=r'the masks are soft: \d+ colours \(\(.*\) lie between the colours of'
                                             r'.*grey ones saved as RGB can be saved as grey \(mode L\), then cut'):
            prepare.prepare_folder(f'{tmp_path}/colour/images', f'{tmp_path}/colour/masks', str(tmp_path / 'data'),
                                   colours_file=table)  # not --binary: refused for colour masks


def blend_mask(values, extra=0):
    """An index mask: 0 left of column 5, 10 from column 6; in column 5 (else 0) one pixel of each of values
    between a 0 and a 10, so each lies between its neighbours; the last of values also on a row of extra pixels
    inside the 0s, where it lies between none."""
    mask = np.zeros((4 * len(values) + 4, 12), np.uint8)
    mask[:, 6:] = 10
    for k, value in enumerate(values):
        mask[2 + 4 * k, 5] = value
    mask[-2, 1:1 + extra] = values[-1]
    return Image.fromarray(mask)


@pytest.mark.parametrize('values, extra, soft', [
    ((3, 4), 0, False),            # SOFT_VALUES = 2 values between their neighbours: lines of 1 px, classes
    ((3, 4, 5), 0, True),          # one more: soft
    ((3, 4, 5), 1, False),         # 5: 1 px between, 1 px not: half of its pixels is no majority
    ((3, 4, 5, 5), 1, True),       # 5: 2 between, 1 not
    ((3, 4, 5, 5), 2, False),      # 5: 2 between, 2 not
    ((3, 4, 5, 5, 5), 2, True),    # 5: 3 between, 2 not
])
def test_soft_masks_at_the_thresholds(tmp_path, values, extra, soft):
    # the other classes 1..9 as stripes 3 px wide (between none): the values in column 5 leave no class empty
    stripes = Image.fromarray(np.tile(np.repeat(np.array([1, 2, 6, 7, 8, 9], np.uint8), 3), (4, 1)))
    write_pairs(tmp_path, {'0': blend_mask(values, extra), '1': blend_mask((3,)), '2': stripes})
    assert prepare.SOFT_VALUES == 2
    if soft:
        with pytest.raises(SystemExit, match=r'the masks are soft: 3 values \(3, 4, 5\)'):
            prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))
    else:
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))
        assert len(dataset.read_lines(f'{tmp_path}/data/classes.txt')) == 11


def halved(mask):
    """mask at half its size with the 2 × 2 mean of each pixel (PIL's reduce(2), as cv2.resize's INTER_AREA or
    INTER_LINEAR at exactly 1/2): a soft mask whose edges hold few blended values."""
    return mask.reduce(2)


def test_masks_halved_by_their_means_are_soft(tmp_path):
    """A 0/255 mask of drawn shapes halved blends 0 and 255 (IGNORE_LABEL) into 64, 128 and 191 (the second
    class's pixels were 255, not IGNORE_LABEL, when they lie between); a 0/255 mask of edges on odd columns
    only, into 128 alone, whose index leaves classes 1..127 with no pixel: no class index; a two-colour mask
    into one colour between the two. Each is refused as soft, none becomes classes."""
    rng = np.random.default_rng(3)
    shapes = {}
    for k in range(3):
        big = Image.new('L', (80, 60))
        ImageDraw.Draw(big).ellipse(tuple(rng.integers(5, 25, 2)) + tuple(rng.integers(40, 58, 2)), fill=255)
        shapes[f'{k}'] = halved(big)
    stripes = [np.kron(rng.integers(0, 2, (2, 5)), np.ones((30, 16), int))[:, 3:-13] for _ in range(2)]  # 60 × 64
    strips = {f'{k}': halved(Image.fromarray((255 * big).astype(np.uint8))) for k, big in enumerate(stripes)}
    two_colours = {f'{k}': halved(Image.fromarray(COLOURS[big])) for k, big in enumerate(stripes)}
    for case, masks, values, found in (
            ('shapes', shapes, r'3 values \(64, 128, 191\)', {0, 64, 128, 191, 255}),
            ('strips', strips, r'1 values \(128\)', {0, 128, 255}),
            ('colours', two_colours, r'1 colours \(\(128, 0, 0\)\)', {(0, 0, 0), (128, 0, 0), (255, 0, 0)})):
        assert {value if np.ndim(value) == 0 else tuple(value) for mask in masks.values()
                for value in np.unique(np.asarray(mask).reshape(-1, *np.shape(mask)[2:]), axis=0).tolist()} == found
        write_pairs(tmp_path / case, masks)
        with pytest.raises(SystemExit, match=rf'the masks are soft: {values} lie between'):
            prepare.prepare_folder(f'{tmp_path}/{case}/images', f'{tmp_path}/{case}/masks',
                                   str(tmp_path / case / 'data'))


def test_a_line_class_whose_index_leaves_no_class_empty_is_a_class(tmp_path):
    """Background 0 and cells 2 with a contour class 1 one pixel wide between them: 1 lies between its neighbours
    at every pixel, yet classes 0..2 all hold pixels, so it is a class (SOFT_VALUES of them are)."""
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    mask[6:14, 6:14] = 2
    write_pairs(tmp_path, {'0': Image.fromarray(mask), '1': Image.fromarray(mask.T.copy())})
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))
    assert written_labels(str(tmp_path / 'data'))['0'].tolist() == mask.tolist()


def distinct_colours(height, width):
    """An RGB mask of height·width colours, each once; red alternates 128/0 as on a chessboard, so none lies
    between its neighbours (no mask is soft)."""
    y, x = np.mgrid[:height, :width]
    return Image.fromarray(np.stack([128 * ((x + y) % 2 == 0), y * width + x, np.full_like(x, 7)], -1).astype(np.uint8))


@pytest.mark.parametrize('height, width, refused', [(15, 17, False), (16, 16, True)])  # 255 colours, 256
def test_class_counts_labels_cannot_hold_are_refused_before_anything_is_written(tmp_path, height, width, refused):
    write_pairs(tmp_path, {'0': distinct_colours(height, width), '1': distinct_colours(height, width)})
    out = tmp_path / 'data'
    if not refused:
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out))
        assert len(dataset.read_lines(out / 'classes.txt')) == 255 and written_labels(str(out))['0'].max() == 254
        return
    with pytest.raises(SystemExit, match=r'the masks make 256 classes \(0\.\.255\), but a label holds 255 at most: a '
                                         r'label PNG has 8 bits \(0\.\.255\), and IGNORE_LABEL = 255 is "no label"'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out))
    assert not out.exists()


@pytest.mark.parametrize('n_classes, refused', [(3, False), (4, True)])
def test_a_class_index_at_ignore_label_is_refused(tmp_path, monkeypatch, n_classes, refused):
    monkeypatch.setattr(settings, 'IGNORE_LABEL', 3)
    miniature(tmp_path, n=2)
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'] + 'sky 0 0 255\n' * (n_classes == 4))
    run = functools.partial(prepare.prepare_folder, f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                            colours_file=f'{tmp_path}/colours.txt')
    if refused:
        with pytest.raises(SystemExit, match=r'4 classes \(0\.\.3\), but a label holds 3 at most.*IGNORE_LABEL = 3'):
            run()
    else:
        run()


def test_jpeg_masks_are_refused_as_jpeg_masks(tmp_path):
    miniature(tmp_path, n=2)
    for path in (tmp_path / 'masks').rglob('*.png'):
        Image.open(path).save(path.with_suffix('.jpg'), quality=95)
        os.remove(path)
    with pytest.raises(SystemExit, match=r'prepare: \d+ mask\(s\) are JPEG files \(\S+\.jpg.*lossy.*export the '
                                         r'masks as PNG'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))


@pytest.mark.parametrize('extension', ['webp', 'gif'])
def test_masks_of_no_mask_type_are_named_by_their_type(tmp_path, extension):
    """WebP (lossy by default) or GIF masks were "masks (0 files)", as JPEG masks were."""
    miniature(tmp_path, n=2)
    for path in (tmp_path / 'masks').rglob('*.png'):
        Image.open(path).save(path.with_suffix(f'.{extension}'))
        os.remove(path)
    count = len(list((tmp_path / 'masks').rglob(f'*.{extension}')))
    with pytest.raises(SystemExit, match=rf'\(0 files\): a/b/img_001\.jpg pairs with a/b/img_001\.png; masks are '
                                         rf'\.png, \.bmp, \.tif or \.tiff files, and {tmp_path}/masks holds '
                                         rf'{count} \.{extension} file\(s\)'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))


def test_files_that_are_no_data_are_skipped_and_counted(tmp_path, log):
    labels = miniature(tmp_path, n=3)
    for side in ('images', 'masks'):
        (tmp_path / side / '._img_001.png').write_bytes(b'\x00\x05\x16\x07 AppleDouble')  # macOS's resource forks
        (tmp_path / side / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
        (tmp_path / side / 'Thumbs.db').write_bytes(b'\xd0\xcf\x11\xe0')
        (tmp_path / side / 'desktop.ini').write_text('[.ShellClassInfo]\n')
        (tmp_path / side / '.thumbnails').mkdir()
        save_image(COLOURS[class_map(np.random.default_rng(0))], f'{tmp_path}/{side}/.thumbnails/img_001.png')
        (tmp_path / side / '__MACOSX').mkdir()
        (tmp_path / side / '__MACOSX' / '._img_002.png').write_bytes(b'\x00\x05\x16\x07')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                           colours_file=f'{tmp_path}/colours.txt')
    assert written_labels(str(tmp_path / 'data')).keys() == labels.keys()
    assert re.search(r"4 file\(s\) and 2 folder\(s\) of \S+/masks skipped: no data \(macOS's \._\* and \.DS_Store, "
                     r"Thumbs\.db, desktop\.ini, __MACOSX, hidden ones\)", log.getvalue())


def test_colours_files_with_a_byte_order_mark_and_repeated_names(tmp_path, monkeypatch):
    path = tmp_path / 'colours.txt'
    for form in COLOUR_FILES:
        path.write_text('\ufeff' + COLOUR_FILES[form].replace('\n', '\r\n'), encoding='utf-8')  # Notepad's UTF-8
        assert [(name, rgb) for name, rgb, _ in prepare.read_colours(str(path))] == TABLE, form
    path.write_text(COLOUR_FILES['plain'] + 'leaf 0 0 255\n')
    with pytest.raises(SystemExit, match=r"has the name 'leaf' on lines 3 and 4: each class needs its own"):
        prepare.read_colours(str(path))
    miniature(tmp_path, n=2)
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))
    as_folder(monkeypatch, tmp_path / 'data', 3)
    (tmp_path / 'data' / 'classes.txt').write_text('\ufeffground\nthing\nground\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"classes\.txt names 'ground' twice \(lines 1 and 3\)"):
        dataset.current()  # eval's table and JSON, keyed by name, would lose a class
    (tmp_path / 'data' / 'classes.txt').write_text('\ufeffground\nthing\nplant\n', encoding='utf-8')
    assert dataset.current()['classes'] == ('ground', 'thing', 'plant')


def exif_photo(path, label, orientation):
    """A JPEG whose pixels are COLOURS[label] stored turned or mirrored so that EXIF orientation shows label."""
    shown = COLOURS[label]
    stored = {1: shown, 3: np.rot90(shown, 2), 6: np.rot90(shown, 1), 8: np.rot90(shown, -1)}[orientation]
    exif = Image.Exif()
    exif[dataset.EXIF_ORIENTATION] = orientation
    save_image(np.ascontiguousarray(stored), path, exif=exif)
    return np.ascontiguousarray(stored)


@pytest.mark.parametrize('drawn', ['shown', 'stored'])
def test_exif_orientation_is_one_rule_for_the_folder(tmp_path, monkeypatch, log, drawn):
    """The masks of a turned non-square photo tell how every mask was drawn; the square one (orientation 8) and
    the upside-down one (3) follow that rule, named in a warning."""
    rng = np.random.default_rng(8)
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'])
    photos = {'wide': (6, class_map(rng, 30, 40)), 'square': (8, class_map(rng, 30, 30)),
              'upside': (3, class_map(rng, 30, 40)), 'plain': (1, class_map(rng, 30, 40))}
    drawn_on = {}
    for image_id, (orientation, label) in photos.items():
        stored = exif_photo(f'{tmp_path}/images/{image_id}.jpg', label, orientation)
        drawn_on[image_id] = COLOURS[label] if drawn == 'shown' else stored
        save_image(drawn_on[image_id], f'{tmp_path}/masks/{image_id}.png')
    out = tmp_path / 'data'
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out), colours_file=f'{tmp_path}/colours.txt')
    rule = 'as a viewer shows them' if drawn == 'shown' else 'as stored'
    assert re.search(rf'2 photo\(s\) whose EXIF orientation turns or mirrors them .* read {rule}, as the masks of 1 '
                     rf'turned photo\(s\) say by their size: \S+/square\.jpg \(8\), \S+/upside\.jpg \(3\)',
                     log.getvalue())
    as_folder(monkeypatch, out, 3)
    for image_id in photos:  # every image read as its mask was drawn
        image, label = dataset.load_sample(image_id)
        assert (np.abs(np.asarray(image, int) - COLOURS[label]).max(axis=2) < 40).mean() > 0.97, image_id
        assert (COLOURS[label] == drawn_on[image_id]).all(), image_id
    # a turned photo whose mask says the other way: refused, naming both
    other = 'stored' if drawn == 'shown' else 'shown'
    label = class_map(rng, 30, 40)
    stored = exif_photo(f'{tmp_path}/images/tall.jpg', label, 8)
    save_image(COLOURS[label] if other == 'shown' else stored, f'{tmp_path}/masks/tall.png')
    with pytest.raises(SystemExit, match=r'\S+/wide\.png has the size of \S+/wide\.jpg as a viewer shows it \(EXIF '
                                         r'orientation 6\), but \S+/tall\.png has that of \S+/tall\.jpg as stored'
                       if drawn == 'shown' else r'\S+/tall\.png has the size of \S+/tall\.jpg as a viewer shows it '
                                                r'\(EXIF orientation 8\), but \S+/wide\.png has that of \S+/wide\.jpg '
                                                r'as stored: one rule must hold for every pair'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out),
                               colours_file=f'{tmp_path}/colours.txt')
    os.remove(f'{tmp_path}/masks/tall.png')
    with pytest.raises(SystemExit, match=rf'wide\.jpg {"as stored" if other == "shown" else "as a viewer shows it"} '
                                         rf'\(EXIF orientation 6\), but --exif {other} says the masks follow the '
                                         rf'photos'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out),
                               colours_file=f'{tmp_path}/colours.txt', exif=other)


def test_exif_without_a_turned_photo_follows_the_flag_or_the_default(tmp_path, monkeypatch, log):
    rng = np.random.default_rng(9)
    label = class_map(rng, 30, 30)
    stored = exif_photo(f'{tmp_path}/images/square.jpg', label, 6)
    save_image(stored, f'{tmp_path}/masks/square.png')  # drawn on the stored pixels: only --exif can say so
    plain = class_map(rng)
    exif_photo(f'{tmp_path}/images/plain.jpg', plain, 1)
    save_image(COLOURS[plain], f'{tmp_path}/masks/plain.png')
    out = tmp_path / 'data'
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'])
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out), colours_file=f'{tmp_path}/colours.txt')
    assert 'read as a viewer shows them, by default: no turned, non-square photo tells' in log.getvalue() and \
        'give --exif stored' in log.getvalue()
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out), colours_file=f'{tmp_path}/colours.txt',
                           exif='stored')
    assert 'read as stored, --exif' in log.getvalue()
    as_folder(monkeypatch, out, 3)
    image, label = dataset.load_sample('square')
    assert (np.abs(np.asarray(image, int) - COLOURS[label]).max(axis=2) < 40).mean() > 0.97


@pytest.mark.parametrize('orientation', range(1, 9))
def test_each_exif_orientation_by_its_own_case(tmp_path, orientation):
    """Orientations 5-8 turn the photo by 90° (its shown size is its stored size turned), 1-4 do not; read_photo
    shows each as Pillow's exif_transpose does."""
    photo = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3
    exif = Image.Exif()
    exif[dataset.EXIF_ORIENTATION] = orientation
    Image.fromarray(photo).save(tmp_path / 'photo.png', exif=exif)
    save_image(np.zeros((4, 6), np.uint8), f'{tmp_path}/mask.png')
    shown, stored, found, *_ = prepare.pair_header((str(tmp_path / 'photo.png'), str(tmp_path / 'mask.png')))
    assert (stored, found) == ((6, 4), orientation)
    assert shown == ((4, 6) if orientation in (5, 6, 7, 8) else (6, 4))
    expected = {1: photo, 2: photo[:, ::-1], 3: photo[::-1, ::-1], 4: photo[::-1], 5: photo.transpose(1, 0, 2),
                6: np.rot90(photo, -1), 7: photo[::-1, ::-1].transpose(1, 0, 2), 8: np.rot90(photo, 1)}[orientation]
    np.testing.assert_array_equal(np.asarray(dataset.read_photo(tmp_path / 'photo.png')), expected)


# ---------------------------------------------------------------- re-runs (issue 39, part 2)

def test_names_follow_their_colours_across_reruns(tmp_path, log):
    rng = np.random.default_rng(10)
    out = str(tmp_path / 'data')
    two = {f'{k}': class_map(rng, classes=2) for k in range(3)}  # black and red
    write_pairs(tmp_path, {image_id: Image.fromarray(COLOURS[label]) for image_id, label in two.items()})
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    assert dataset.read_lines(f'{out}/palette.txt') == ['0 0 0', '255 0 0']
    (tmp_path / 'data' / 'classes.txt').write_text('ground\nfruit\n')
    # a new colour (green, which sorts before red) is a new class at the end: red keeps index 1 and its name
    three = class_map(rng)
    write_pairs(tmp_path, {'new': Image.fromarray(COLOURS[three])})
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    assert dataset.read_lines(f'{out}/classes.txt') == ['ground', 'fruit', 'class_2']
    assert dataset.read_lines(f'{out}/palette.txt') == ['0 0 0', '255 0 0', '0 200 0']
    assert "the classes since the last run: new class 2 'class_2' (0, 200, 0); the others keep their names" in \
        log.getvalue()
    np.testing.assert_array_equal(written_labels(out)['new'], three)
    # the user names it; then every red pixel goes: red is named as gone, green keeps its name
    (tmp_path / 'data' / 'classes.txt').write_text('ground\nfruit\nleaf\n')
    for image_id, label in {**two, 'new': three}.items():
        save_image(COLOURS[np.where(label == 1, 0, label)], f'{tmp_path}/masks/{image_id}.png')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    assert dataset.read_lines(f'{out}/classes.txt') == ['ground', 'leaf']
    assert "'fruit' (255, 0, 0) is gone (no mask holds it now); the others keep their names" in log.getvalue()
    # a colours file names its own classes, said where it renames
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'])
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, colours_file=f'{tmp_path}/colours.txt')
    assert "'ground' (0, 0, 0) is now 'background'" in log.getvalue()


def test_a_rerun_that_stops_on_a_bad_mask_leaves_the_previous_dataset_whole(tmp_path, monkeypatch):
    labels = miniature(tmp_path, n=4)
    out = tmp_path / 'data'
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out), colours_file=f'{tmp_path}/colours.txt')
    before = {path: path.read_bytes() for path in out.rglob('*') if path.is_file()}
    # a new table (a class more, renamed) and one mask of a colour it lacks, the last one of the run
    (tmp_path / 'colours.txt').write_text('ground 0 0 0\nfruit 255 0 0\nplant 0 200 0\nsky 0 0 255\n')
    mask = np.asarray(Image.open(tmp_path / 'masks' / 'phone.png')).copy()
    mask[3, 4] = (10, 20, 30)
    Image.fromarray(mask).save(tmp_path / 'masks' / 'phone.png')
    with pytest.raises(SystemExit, match=r'phone\.png has the colour \(10, 20, 30\) at pixel \(x=4, y=3\)'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out),
                               colours_file=f'{tmp_path}/colours.txt')
    assert {path: path.read_bytes() for path in out.rglob('*') if path.is_file()} == before
    as_folder(monkeypatch, out, 3)
    assert dataset.check() == [] and dataset.current()['classes'] == ('background', 'red thing', 'leaf')
    assert written_labels(str(out)).keys() == labels.keys()


def test_every_state_of_the_swap_is_refused_or_whole(tmp_path, monkeypatch):
    """A run stopped between any two steps of swapping its new dataset in leaves a folder `check` refuses (no
    lists) or a whole dataset; the next run ends whole, with the names the user typed."""
    miniature(tmp_path, n=2)
    out = str(tmp_path / 'data')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
    (tmp_path / 'data' / 'classes.txt').write_text('ground\nplant\nfruit\n')
    rename, replace = os.rename, os.replace
    for stop in range(7):  # the swap's 7 renames: old lists and labels out, new labels in, 3 files, new lists in
        calls = []

        def stopping(move, source, target):
            if os.path.dirname(target) == out or prepare.OLD in target:  # the swap's, not a label's in NEW
                calls.append(target)
                if len(calls) > stop:
                    raise KeyboardInterrupt
            move(source, target)
        monkeypatch.setattr(os, 'rename', functools.partial(stopping, rename))
        monkeypatch.setattr(os, 'replace', functools.partial(stopping, replace))
        with pytest.raises(KeyboardInterrupt):
            prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
        monkeypatch.setattr(os, 'rename', rename)
        monkeypatch.setattr(os, 'replace', replace)
        with monkeypatch.context() as folder:
            as_folder(folder, out, 3)
            problems = dataset.check()
        assert problems if stop else problems == [], stop
        if stop:  # what to do: run it again (TRAIN_SPLIT is 'train' already: "add the line" it said)
            assert re.fullmatch(rf"TRAIN_SPLIT = 'train' has no list file: {re.escape(out)}/lists/train\.txt; a "
                                rf"`prepare\.py folder` run stopped while it replaced the dataset in "
                                rf"{re.escape(out)}: run it again", problems[0]), problems
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out)
        assert dataset.read_lines(f'{out}/classes.txt') == ['ground', 'plant', 'fruit'], stop
        assert sorted(os.listdir(out)) == [prepare.LOCK, 'classes.txt', 'images.txt', 'labels', 'lists',
                                           'palette.txt'], stop


def test_labels_no_list_names_are_removed(tmp_path, log):
    miniature(tmp_path, n=4)
    out = tmp_path / 'data'
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out), colours_file=f'{tmp_path}/colours.txt')
    os.remove(tmp_path / 'masks' / 'a' / 'b' / 'img_000.png')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(out), colours_file=f'{tmp_path}/colours.txt')
    assert not (out / 'labels' / 'a' / 'b' / 'img_000.png').exists()
    assert sorted(str(path.relative_to(out / 'labels')) for path in (out / 'labels').rglob('*.png')) == \
        sorted(f'{image_id}.png' for image_id in written_labels(str(out)))
    assert f'1 label file(s) of the last run that no list names now removed: {os.path.join("a", "b", "img_000.png")}' \
        in log.getvalue()


@pytest.mark.parametrize('side, inside', [('masks', 'labels'), ('images', 'lists'), ('masks', prepare.NEW)])
def test_input_folders_inside_what_the_command_replaces_are_refused(tmp_path, side, inside):
    """data/mine/images + data/mine/labels with --out data/mine: the swap would move the user's own masks (or
    images) out with the old dataset and delete them."""
    miniature(tmp_path, n=2)
    out = tmp_path / 'data'
    os.makedirs(out)
    os.rename(tmp_path / side, out / inside)
    before = sorted(path.relative_to(out) for path in out.rglob('*'))
    folders = {'images': f'{tmp_path}/images', 'masks': f'{tmp_path}/masks', side: f'{out}/{inside}'}
    with pytest.raises(SystemExit, match=rf'--{side} {re.escape(str(out / inside))} lies in {re.escape(str(out))}'
                                         rf'/{re.escape(inside)}, which the command replaces'):
        prepare.prepare_folder(folders['images'], folders['masks'], str(out), colours_file=f'{tmp_path}/colours.txt')
    assert sorted(path.relative_to(out) for path in out.rglob('*')) == before


@pytest.mark.parametrize('name', ['trail ', ' lead', 'tab\there'])
def test_names_the_lists_cannot_hold_are_refused_naming_them(tmp_path, name):
    """Lists and images.txt hold an id a line, read without the spaces at its ends, images.txt a tab between id
    and path: 'trail .png' was prepared with exit 0, then `check` and training found no label for 'trail'."""
    miniature(tmp_path, n=2)
    for side, extension in (('images', '.png'), ('masks', '.png')):
        os.rename(tmp_path / side / f'img_001{extension}', tmp_path / side / f'{name}{extension}')
    with pytest.raises(SystemExit, match=rf'prepare: 1 pair\(s\) have names that a list cannot hold '
                                         rf'\({re.escape(repr(name))}\): rename them without spaces at the ends of '
                                         rf'a name, tabs or line breaks'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                               colours_file=f'{tmp_path}/colours.txt')


def test_a_second_run_on_one_out_while_the_first_writes_is_refused(tmp_path, monkeypatch):
    """Two runs at once on one --out wrote into one .prepare-new (one's rmtree under the other's labels: a
    dataset of one's lists and the other's labels, or a crash naming .prepare-new/palette.txt). The second, here
    started while the first writes its labels, is refused naming the first, and the first ends whole."""
    miniature(tmp_path, n=3)
    out = str(tmp_path / 'data')
    run = functools.partial(prepare.prepare_folder, f'{tmp_path}/images', f'{tmp_path}/masks', out,
                            colours_file=f'{tmp_path}/colours.txt')
    write_folder, refusals = prepare.write_folder, []

    def second_run_while_writing(*args):
        monkeypatch.setattr(prepare, 'write_folder', write_folder)
        try:
            run()
        except SystemExit as refusal:
            refusals.append(str(refusal))
        return write_folder(*args)
    monkeypatch.setattr(prepare, 'write_folder', second_run_while_writing)
    run()
    assert len(refusals) == 1 and re.fullmatch(rf'prepare: another prepare.py folder run \(pid {os.getpid()}, '
                                               rf'started .*\) is writing {re.escape(out)}: wait for it to end, then '
                                               rf'run again', refusals[0]), refusals
    assert sorted(written_labels(out)) == sorted(dataset.read_lines(f'{out}/lists/train.txt') +
                                                 dataset.read_lines(f'{out}/lists/val.txt'))


def test_a_file_system_without_locks_warns_and_prepares(tmp_path, monkeypatch, log):
    """flock on some NFS mounts fails with ENOLCK: that stopped the run with a bare traceback. It warns that nothing
    stops a second run and writes the dataset."""
    miniature(tmp_path, n=3)
    out = str(tmp_path / 'data')

    def no_locks(*args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(prepare.fcntl, 'flock', no_locks)
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, colours_file=f'{tmp_path}/colours.txt')
    assert re.search(rf'prepare: cannot lock {re.escape(out)}/\.prepare\.lock \(No locks available\): nothing '
                     rf'stops a second prepare.py folder run writing {re.escape(out)}', log.getvalue()), log.getvalue()
    assert sorted(written_labels(out)) == sorted(dataset.read_lines(f'{out}/lists/train.txt') +
                                                 dataset.read_lines(f'{out}/lists/val.txt'))


def test_transparent_pixels_of_colour_masks_are_no_label_and_half_transparent_ones_refused(tmp_path, log):
    """An RGBA mask (what Labelbox-style exports and a layer saved from an editor write) leaves the unlabelled
    pixels transparent, with any RGB under them: read as RGB they were labelled with the colour hidden there
    (background, or a class of their own), exit 0. Transparent pixels (alpha 0) are no label, said in one line,
    also through a palette PNG's transparency (tRNS); pixels half transparent (an anti-aliased layer) are refused,
    naming the mask and a pixel."""
    rng = np.random.default_rng(7)
    labels = {}
    for index, under in enumerate([(0, 0, 0), (255, 255, 255), (255, 0, 0)]):  # what the transparent pixels hide
        label = class_map(rng)
        hidden = np.zeros(label.shape, bool)
        hidden[:, :15] = True
        rgba = np.concatenate([COLOURS[label], np.full(label.shape + (1,), 255, np.uint8)], -1)
        rgba[hidden] = (*under, 0)
        save_image(COLOURS[label], f'{tmp_path}/images/{index}.png')
        save_image(rgba, f'{tmp_path}/masks/{index}.png')
        labels[str(index)] = np.where(hidden, 255, label)
    label = class_map(rng)  # a palette PNG: the colours of TABLE, then a fourth entry, transparent
    labels['p'] = np.where(label == 1, 255, label)
    mask = Image.fromarray(np.where(label == 1, 3, label).astype(np.uint8), 'P')
    mask.putpalette([*COLOURS.ravel(), 255, 0, 0])
    save_image(COLOURS[label], f'{tmp_path}/images/p.png')
    mask.save(f'{tmp_path}/masks/p.png', transparency=bytes([255, 255, 255, 0]))
    for colours_file in (None, 'colours.txt'):
        (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'])
        out = str(tmp_path / f'data_{colours_file}')
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', out, colours_file=colours_file and
                               f'{tmp_path}/colours.txt')
        classes = dataset.read_lines(f'{out}/classes.txt')
        found = written_labels(out)
        assert sorted(found) == sorted(labels)
        if colours_file:
            assert classes == [name for name, _ in TABLE]
            for image_id, label in labels.items():
                np.testing.assert_array_equal(found[image_id], label)
        else:  # the colours found, in their order (black, green, red): no class of the hidden white
            assert dataset.read_lines(f'{out}/palette.txt') == ['0 0 0', '0 200 0', '255 0 0']
            for image_id, label in labels.items():
                np.testing.assert_array_equal(found[image_id], np.array([0, 2, 1] + [255] * 253, np.uint8)[label])
        hidden = sum(int((label == 255).sum()) for label in labels.values())
        assert f'prepare: {hidden} pixels of 4 masks are transparent (alpha 0): no label (IGNORE_LABEL 255), no ' \
               f'class' in log.getvalue(), log.getvalue()
    rgba = np.asarray(Image.open(f'{tmp_path}/masks/1.png')).copy()
    rgba[4, 20, 3] = 128  # one anti-aliased pixel
    Image.fromarray(rgba).save(f'{tmp_path}/masks/1.png')
    with pytest.raises(SystemExit, match=rf'prepare: mask {tmp_path}/masks/1\.png is partly transparent at pixel '
                                         rf'\(x=20, y=4\) \(alpha 128\), 1 pixels in all: anti-aliased'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'again'))


def test_the_soft_mask_detector_judges_transparent_pixels_by_the_colour_they_hide(tmp_path):
    """A transparent pixel's code (TRANSPARENT, -1) read as r, g, b was white: an RGB mask whose tRNS colour is
    its unlabelled black, halved with a box filter (Pillow keeps tRNS), had its grey blends taken for a class,
    exit 0; white lines one pixel wide on a transparent background next to one class were refused as soft."""
    big = np.zeros((20, 40, 3), np.uint8)
    big[:, 11:21] = 255  # edges at odd columns: halved, each is one grey pixel between black and white
    halved = Image.fromarray(big).resize((20, 10), Image.Resampling.BOX)
    halved.info['transparency'] = (0, 0, 0)
    write_pairs(tmp_path / 'halved', {'0': halved, '1': halved.transpose(Image.Transpose.FLIP_LEFT_RIGHT)})
    with pytest.raises(SystemExit, match=r'the masks are soft: 1 colours \(\(128, 128, 128\)\)'):
        prepare.prepare_folder(f'{tmp_path}/halved/images', f'{tmp_path}/halved/masks', str(tmp_path / 'data'))
    rgba = np.zeros((10, 20, 4), np.uint8)  # transparent, hiding black
    rgba[2:8, 2:6] = (255, 0, 0, 255)
    rgba[:, 10] = rgba[5, 12:18] = (255, 255, 255, 255)  # lines of a class of their own
    write_pairs(tmp_path / 'lines', {'0': Image.fromarray(rgba), '1': Image.fromarray(rgba[::-1].copy())})
    prepare.prepare_folder(f'{tmp_path}/lines/images', f'{tmp_path}/lines/masks', str(tmp_path / 'data'))
    np.testing.assert_array_equal(written_labels(str(tmp_path / 'data'))['0'],
                                  np.where(rgba[..., 3] == 0, 255, rgba[..., 1] // 255))  # red 0, white 1


def test_masks_that_hold_no_class_are_refused(tmp_path):
    """Masks whose every pixel is no label (fully transparent, or the --ignore colour) made a dataset of 0
    classes, exit 0, and printed N_CLASSES = 0 to train on."""
    for channels, ignore in ((4, None), (3, '0,0,0')):  # RGBA of alpha 0; RGB black, black ignored
        mask = Image.fromarray(np.zeros((6, 8, channels), np.uint8))
        write_pairs(tmp_path, {'0': mask, '1': mask})
        with pytest.raises(SystemExit, match=r'prepare: the masks hold no class: every pixel of them is no label'):
            prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'), ignore=ignore)


def test_binary_and_threshold_are_refused_for_colour_masks(tmp_path):
    """Grey masks saved as RGB or RGBA (as editors do) are colour masks: --binary --threshold 128 (what the soft
    masks' error advises) was silently left unused, each grey of the soft edges a class of its own, exit 0."""
    rgb = np.repeat(np.linspace(0, 255, 8).astype(np.uint8)[None, :, None], 3, -1).repeat(6, 0)  # 6 × 8 × 3
    for mask in (rgb, np.concatenate([rgb, np.full((6, 8, 1), 255, np.uint8)], -1)):
        write_pairs(tmp_path, {'0': Image.fromarray(mask), '1': Image.fromarray(mask)})
        with pytest.raises(SystemExit, match=r'prepare: --binary reads grey masks .* but these hold colours'):
            prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'), binary=True,
                                   threshold=128)


def test_the_split_is_drawn_per_id_and_stays_as_pairs_are_added(tmp_path, log):
    ids = [f'scene_{k:02d}/{k:04d}' for k in range(40)]
    first, later = ids[:12], ids  # 28 pairs added
    split = prepare.split_pairs(first, 0.3)
    assert split['val'] == hashed_val(first, 0.3) and split['train'] == sorted(set(first) - set(split['val']))
    grown = prepare.split_pairs(later, 0.3)
    assert set(split['val']) <= set(grown['val']) and set(split['train']) <= set(grown['train'])
    # the cut, at the id of the median hash (both sides keep ids of their own): at its hash exactly it trains, a
    # fraction one float above validates it
    draws = {image_id: int(hashlib.sha256(image_id.encode()).hexdigest()[:16], 16) for image_id in ids}
    middle = sorted(ids, key=draws.get)[len(ids) // 2]
    at = draws[middle] / 2 ** 64
    at = at if at * 2 ** 64 <= draws[middle] else math.nextafter(at, 0)  # the largest fraction not above its hash
    assert middle not in prepare.split_pairs(ids, at)['val'] or at * 2 ** 64 < draws[middle]
    assert middle in prepare.split_pairs(ids, math.nextafter(at, 1))['val']


def test_the_split_of_a_name_is_that_of_its_unicode_form_anywhere(log):
    """macOS's HFS+ stores 'café' decomposed (NFD: e + combining accent), Linux keeps what it is given (mostly
    composed, NFC): one dataset copied between them is one split. café_2, _3 and _5 hash to other sides as bytes."""
    composed = [f'café_{k}' for k in range(8)]
    decomposed = [unicodedata.normalize('NFD', image_id) for image_id in composed]
    assert decomposed != composed
    split = prepare.split_pairs(composed, 0.5)
    assert split['val'] == hashed_val(composed, 0.5)
    assert {side: [unicodedata.normalize('NFC', i) for i in ids] for side, ids in
            prepare.split_pairs(decomposed, 0.5).items()} == split


def test_each_side_keeps_an_id_and_fractions_at_their_bounds(tmp_path, log):
    ids = [f'{k}' for k in range(6)]
    draws = {image_id: int(hashlib.sha256(image_id.encode()).hexdigest()[:16], 16) for image_id in ids}
    low, high = min(draws.values()) / 2 ** 64, max(draws.values()) / 2 ** 64
    split = prepare.split_pairs(ids, low / 2)  # the hash puts none in val: the lowest goes there
    assert split['val'] == [min(ids, key=draws.get)]
    assert f'puts none of the 6 pairs in val: {min(ids, key=draws.get)}, the nearest, goes there' in log.getvalue()
    split = prepare.split_pairs(ids, (1 + high) / 2)  # all in val by the hash: the highest trains
    assert split['train'] == [max(ids, key=draws.get)] and len(split['val']) == 5
    for fraction, n in ((0, 6), (1, 6), (0.5, 1), (-0.1, 6), (1.5, 6)):
        with pytest.raises(SystemExit, match=rf'--val-fraction {fraction} of {n} pairs: give a fraction in \(0, 1\)'):
            prepare.split_pairs(ids[:n], fraction)
    assert len(prepare.split_pairs(ids[:2], 0.5)['val']) == 1  # 2 pairs: the least that can be split


# ---------------------------------------------------------------- the settings it prints (issue 39, part 3)

def test_the_printed_settings_are_the_settings_that_work_and_datasets_md_shows_them(tmp_path, monkeypatch, log):
    miniature(tmp_path, n=3)
    monkeypatch.chdir(tmp_path)
    prepare.prepare_folder('images', 'masks', './data/mine', colours_file='colours.txt')
    printed = log.getvalue().split('the settings to train on it, for settings.py:\n')[1].splitlines()[:4]
    assert printed == ["DATASET = 'folder'", "DATA_ROOT = './data/mine'", 'N_CLASSES = 3', "TRAIN_SPLIT = 'train'"]
    docs = open(os.path.join(ROOT, 'DATASETS.md'), encoding='utf-8').read()
    shown = docs.split("## Your own data")[1].split('```python\n')[1].splitlines()[:4]
    assert [line.split('#')[0].rstrip() for line in shown] == printed
    values = {}
    exec('\n'.join(printed), values)  # pasteable as printed
    for name in ('DATASET', 'DATA_ROOT', 'N_CLASSES', 'TRAIN_SPLIT'):
        monkeypatch.setattr(settings, name, values[name])
    assert dataset.check() == []
    monkeypatch.setattr(settings, 'TRAIN_SPLIT', 'trainaug')  # a newcomer who pasted only the first lines
    assert "TRAIN_SPLIT = 'trainaug' has no list file: ./data/mine/lists/trainaug.txt; DATASET 'folder' has the " \
           "splits train and val: add the line TRAIN_SPLIT = 'train' to settings.py" in dataset.check()[0]
    monkeypatch.setattr(settings, 'TRAIN_SPLIT', 'train')  # the line is there, the list is not: no "add the line"
    os.remove('data/mine/lists/train.txt')
    assert dataset.check()[0] == ("TRAIN_SPLIT = 'train' has no list file: ./data/mine/lists/train.txt; "
                                  "`prepare.py folder ... --out ./data/mine` writes it")


# ---------------------------------------------------------------- thresholds at their bounds (issue 39, part 5)

def palette_png(path, indices, palette):
    """A palette PNG written byte by byte, as a tool may write it: its indices as they are, even past its palette
    (which Pillow's own writer would remap)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    height, width = indices.shape
    rows = b''.join(b'\x00' + row.astype(np.uint8).tobytes() for row in indices)  # filter 0 before each row
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 3, 0, 0, 0))
                + chunk(b'PLTE', bytes(palette)) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


@pytest.mark.parametrize('case, refusal', [
    ('grey and colour masks', r'the masks mix class indices \(\S+/0\.png\) and colours \(\S+/1\.png\)'),
    ('two files of one stem', r'\S+/0\.png and \S+/0\.tif share the name 0: which one is meant\?'),
    ('no folder', r'\S+/nowhere is not a folder'),
    ('an empty colours file', r'\S+/colours\.txt names no class'),
    ('a grey mask with alpha', r'mask \S+/1\.png has mode LA: neither class indices nor RGB colours'),
    ('an index past its palette', r'mask \S+/1\.png has the index 5, which its palette of 2 colours lacks'),
])
def test_each_refusal_with_an_input_that_has_its_cause(tmp_path, case, refusal):
    mask = np.zeros((6, 6), np.uint8)
    write_pairs(tmp_path, {'0': Image.fromarray(mask), '1': Image.fromarray(COLOURS[mask])})
    masks, colours = f'{tmp_path}/masks', None
    if case == 'two files of one stem':
        Image.fromarray(mask).save(f'{tmp_path}/masks/0.tif')
    elif case == 'no folder':
        masks = f'{tmp_path}/nowhere'
    elif case == 'an empty colours file':
        (tmp_path / 'colours.txt').write_text('# label:color_rgb:parts:actions\n')
        colours = f'{tmp_path}/colours.txt'
    elif case == 'a grey mask with alpha':
        Image.fromarray(np.dstack([mask, mask + 255])).save(f'{tmp_path}/masks/1.png')
    elif case == 'an index past its palette':
        indices = mask.copy()
        indices[2, 3] = 5
        palette_png(f'{tmp_path}/masks/1.png', indices, [0, 0, 0, 255, 0, 0])
        Image.fromarray(COLOURS[mask]).save(f'{tmp_path}/masks/0.png')
    with pytest.raises(SystemExit, match=refusal):
        prepare.prepare_folder(f'{tmp_path}/images', masks, str(tmp_path / 'data'), colours_file=colours)
    assert not (tmp_path / 'data').exists()


@pytest.mark.parametrize('unpaired, listed', [(5, 5), (6, 5)])
def test_unpaired_files_named_up_to_shown_unpaired(tmp_path, log, unpaired, listed):
    for name in ['a', 'b', *(f'alone_{k}' for k in range(unpaired))]:
        os.makedirs(tmp_path / 'images', exist_ok=True)
        (tmp_path / 'images' / f'{name}.jpg').write_bytes(b'')  # pairing reads names only
    for name in ('a', 'b'):
        os.makedirs(tmp_path / 'masks', exist_ok=True)
        (tmp_path / 'masks' / f'{name}.png').write_bytes(b'')
    assert list(prepare.paired_files(str(tmp_path / 'images'), str(tmp_path / 'masks'))) == ['a', 'b']
    line = next(line for line in log.getvalue().splitlines() if 'with no mask' in line)
    assert prepare.SHOWN_UNPAIRED == 5 and line.count('alone_') == listed
    assert line.startswith(f'prepare: {unpaired} image file(s)') and line.endswith(', ...') == (unpaired > listed)


@pytest.mark.parametrize('text, value', [('255', ('index', 255)), ('256', None), ('255,0,0', ('colour', 255 << 16)),
                                         ('0,0,256', None), ('-1', None), ('1,2', None)])
def test_ignore_values_at_their_bounds(text, value):
    if value is None:
        with pytest.raises(SystemExit, match=rf"--ignore '{text}': a mask value 0\.\.255 or a colour r,g,b"):
            prepare.parse_ignore(text)
    else:
        assert prepare.parse_ignore(text) == value


@pytest.mark.parametrize('line, ok', [('top 255 255 255', True), ('top 256 0 0', False), ('top:0,0,255::', True),
                                      ('top:0,256,0::', False)])
def test_colour_values_at_their_bounds(tmp_path, line, ok):
    (tmp_path / 'colours.txt').write_text(line + '\n')
    if ok:
        assert [rgb for _, rgb, _ in prepare.read_colours(str(tmp_path / 'colours.txt'))] == \
            [tuple(int(v) for v in line.replace(':', ' ').replace(',', ' ').split()[1:4])]
    else:
        with pytest.raises(SystemExit, match=r'line 1 is not "name r g b"'):
            prepare.read_colours(str(tmp_path / 'colours.txt'))


@pytest.mark.parametrize('top, ok', [(255, True), (256, False)])
def test_16_bit_index_masks_at_the_8_bit_bound(tmp_path, top, ok):
    mask = np.zeros((8, 8), np.uint16)
    mask[:4] = top
    write_pairs(tmp_path, {'0': Image.fromarray(mask), '1': Image.fromarray(mask)})
    run = functools.partial(prepare.prepare_folder, f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'),
                            ignore='255')
    if ok:
        run()
        assert written_labels(str(tmp_path / 'data'))['0'].max() == 255  # the --ignore value: no label
    else:
        with pytest.raises(SystemExit, match=r'0\.png has values up to 256: more than 8-bit class indices'):
            run()


@pytest.mark.parametrize('threshold', [1, 128, 255])
def test_the_binary_threshold_at_its_value_and_one_below(tmp_path, threshold):
    mask = np.full((6, 6), threshold, np.uint8)
    mask[:3] = threshold - 1
    write_pairs(tmp_path, {'0': Image.fromarray(mask), '1': Image.fromarray(mask)})
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'), binary=True,
                           threshold=threshold)
    np.testing.assert_array_equal(written_labels(str(tmp_path / 'data'))['0'], (mask >= threshold).astype(np.uint8))


@pytest.mark.parametrize('threshold, binary', [(0, True), (256, True), (128, False)])
def test_thresholds_out_of_range_or_without_binary_are_refused(tmp_path, threshold, binary):
    write_pairs(tmp_path, {image_id: Image.fromarray(np.zeros((6, 6), np.uint8)) for image_id in '01'})
    with pytest.raises(SystemExit, match=rf'--threshold {threshold}: a value 1\.\.255, with --binary'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'), binary=binary,
                               threshold=threshold)


def test_ignore_of_the_other_kind_is_refused(tmp_path):
    miniature(tmp_path, n=2)
    with pytest.raises(SystemExit, match='--ignore gives an index but the masks hold colours'):
        prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'), ignore='0')


@pytest.mark.parametrize('n_classes, shortened', [(24, False), (25, True)])
def test_check_table_lists_every_class_up_to_check_rows(tmp_path, monkeypatch, n_classes, shortened):
    (tmp_path / 'classes.txt').write_text(''.join(f'c{k}\n' for k in range(n_classes)))
    (tmp_path / 'palette.txt').write_text('0 0 0\n' * n_classes)
    as_folder(monkeypatch, tmp_path, n_classes)
    samples = [((8, 6), np.arange(1, n_classes + 1))]
    table = dataset.split_table({'TRAIN_SPLIT': dataset.split_stats(samples)})
    rows = [line for line in table.splitlines() if re.match(r' *\d+ c\d+ ', line)]
    assert dataset.CHECK_ROWS == 24 and len(rows) == 24
    assert ('... 1 classes between' in table) == shortened


# ---------------------------------------------------------------- check

def test_check_tables_every_split_and_warns_of_classes_training_never_sees(tmp_path, monkeypatch, log):
    rng = np.random.default_rng(3)
    for split, classes in (('train', 2), ('val', 3)):  # leaf (2) only in val
        for index in range(3):
            label = class_map(rng, classes=classes)
            label[0, 0] = 2 if split == 'val' else label[0, 0]
            save_image(COLOURS[label], f'{tmp_path}/{split}/images/{index}.png')
            save_image(COLOURS[label], f'{tmp_path}/{split}/masks/{index}.png')
    Image.fromarray(np.zeros((20, 50, 3), np.uint8)).save(f'{tmp_path}/train/images/3.png')
    Image.fromarray(np.zeros((20, 50, 3), np.uint8)).save(f'{tmp_path}/train/masks/3.png')
    (tmp_path / 'colours.txt').write_text(COLOUR_FILES['plain'] + 'sky 0 0 255\n')
    out = tmp_path / 'data'
    prepare.prepare_folder(f'{tmp_path}/train/images', f'{tmp_path}/train/masks', str(out),
                           f'{tmp_path}/val/images', f'{tmp_path}/val/masks', colours_file=f'{tmp_path}/colours.txt')
    as_folder(monkeypatch, out, 4)
    log.seek(0)
    log.truncate()
    assert dataset.check() == []
    err = log.getvalue()
    labels = written_labels(str(out))
    train = [labels[f'train/{i}'] for i in range(4)]
    background = sum((label == 0).sum() for label in train) / sum(label.size for label in train)
    assert 'train  TRAIN_SPLIT  4       40..50 × 20..30' in err and 'val    VAL_SPLIT    3       40 × 30' in err
    assert re.search(rf'\n  0 background +{100 * background:.2f}%  100.0% +\d', err)
    assert "1 classes are in VAL_SPLIT = 'val' but in no label of TRAIN_SPLIT = 'train': scored, never learnt: " \
           "2 'leaf'" in err
    assert "1 classes are in no label of TRAIN_SPLIT = 'train': 3 'sky'" in err


def test_check_table_stays_short_for_150_classes(monkeypatch):
    monkeypatch.setattr(settings, 'DATASET', 'ade20k')
    monkeypatch.setattr(settings, 'N_CLASSES', 150)
    rng = np.random.default_rng(0)
    samples = [((500, 375), rng.integers(0, 1000, 150) * (rng.random(150) < 0.3)) for _ in range(20)]
    stats = {'TRAIN_SPLIT': dataset.split_stats(samples), 'VAL_SPLIT': dataset.split_stats(samples[:5])}
    table = dataset.split_table(stats)
    assert len(table.splitlines()) <= dataset.CHECK_ROWS + 8 and '... 126 classes between' in table
    most = int(np.argmax(stats['TRAIN_SPLIT']['pixels']))
    assert table.splitlines()[5].split()[:2] == [str(most), dataset.ADE20K_CLASSES[most]]


# ---------------------------------------------------------------- trained on your own data

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """An experiment trained (TINY) and evaluated on a prepared folder: (experiment, data folder, labels)."""
    base = tmp_path_factory.mktemp('own')
    labels = miniature(base, n=14)
    experiment = make_experiment(base / 'experiment', base / 'data', LOG_EVERY=2)  # VOC's settings, but the data
    done = run_script(experiment, 'prepare.py', 'folder', '--images', f'{base}/images', '--masks', f'{base}/masks',
                      '--colours', f'{base}/colours.txt', '--val-fraction', '0.3', '--out', f'{base}/data')
    assert done.returncode == 0, done.stderr
    with open(experiment / 'settings.py', 'a') as f:  # what the command printed, pasted as it stands
        f.write('\n'.join(done.stderr.split('for settings.py:\n')[1].splitlines()[:4]) + '\n')
    for args in (('prepare.py', 'check'), ('train.py',), ('eval.py', '--save-pred', 'preds')):
        done = run_script(experiment, *args)
        assert done.returncode == 0, done.stderr
    return experiment, base, labels, done.stdout


def test_eval_scores_the_right_classes_by_name_in_the_datas_colours(trained):
    experiment, base, labels, output = trained
    result = json.loads((experiment / 'logdir' / 'eval_final.json').read_text())
    assert list(result['per_class']) == [name for name, _ in TABLE] and 'red thing' in output
    val = dataset.read_list(f'{base}/data/lists/val.txt')
    assert result['n_images'] == len(val) >= 4
    # the confusion counted by hand: the user's colour masks against the masks eval.py wrote
    expected = np.zeros((3, 3), int)
    for image_id in val:
        mask = np.asarray(Image.open(next((base / 'masks').glob(image_id + '.png'))).convert('RGB'))
        label = np.argmax((mask[:, :, None, :] == COLOURS).all(axis=3), axis=2)  # H × W classes of TABLE
        pred = Image.open(experiment / 'preds' / (image_id + '.png'))
        assert pred.size == SIZE and pred.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 200, 0]
        np.add.at(expected, (label, np.asarray(pred)), 1)
    assert np.array_equal(result['confusion'], expected)
    done = run_script(experiment, 'eval.py', '--submit', 'out')
    assert done.returncode != 0 and "DATASET='folder' has no benchmark server" in done.stderr
    done = run_script(experiment, 'compare.py', '.')
    assert done.returncode == 0 and 'mIoU' in done.stdout


def test_a_checkpoint_of_classes_the_data_no_longer_has_is_refused(trained, tmp_path, monkeypatch):
    """The data prepared again with a colour gone and one new (the same class count): eval.py filed the class
    trained as 'leaf' (0, 200, 0) under 'class_2' (0, 0, 255), exit 0, and a resumed run trained it on blue.
    A class renamed in classes.txt is the same class: said, and scored under its new name."""
    experiment, base, labels, _ = trained
    shutil.copytree(base / 'data', tmp_path / 'data')
    for image_id, label in labels.items():  # leaf (0, 200, 0) → blue: the masks drawn again
        save_image(np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255)], np.uint8)[label], f'{tmp_path}/masks/{image_id}.png')
    prepare.prepare_folder(f'{base}/images', f'{tmp_path}/masks', str(tmp_path / 'data'))
    folder = make_experiment(tmp_path / 'experiment', tmp_path / 'data', MODEL_DIR=str(experiment / 'models'),
                             DATASET='folder', N_CLASSES=3, TRAIN_SPLIT='train')
    done = run_script(folder, 'eval.py')
    assert done.returncode != 0 and not (folder / 'logdir' / 'eval_final.json').exists()
    assert re.search(rf"{re.escape(str(experiment / 'models' / 'final.pth'))} was trained on classes that "
                     rf"{re.escape(str(tmp_path / 'data'))} has no more: its class 2 'leaf' \(0, 200, 0\) is "
                     rf"'class_2' \(0, 0, 255\) there", done.stderr), done.stderr
    as_folder(monkeypatch, tmp_path / 'data', 3)  # train.py's resume loads it alike
    for name in ('N_LAYERS', 'EMA_CHANNELS'):
        monkeypatch.setattr(settings, name, TINY[name])
    with pytest.raises(checkpoint.CheckpointError, match=r"its class 2 'leaf' \(0, 200, 0\) is 'class_2'"):
        checkpoint.load_checkpoint(network.EMANet(), experiment / 'models' / 'final.pth')
    prepare.prepare_folder(f'{base}/images', f'{base}/masks', str(tmp_path / 'data'))  # leaf back as class 2
    (tmp_path / 'data' / 'classes.txt').write_text('background\nred thing\nplant\n')
    done = run_script(folder, 'eval.py')
    assert done.returncode == 0 and "its class 2 'leaf' is named 'plant' now" in done.stderr, done.stderr
    assert 'plant' in json.loads((folder / 'logdir' / 'eval_final.json').read_text())['per_class']


def test_the_python_api_segments_as_eval_does(trained, tmp_path):
    experiment, base, labels, _ = trained
    photos = [base / 'images' / 'phone.jpg', base / 'images' / 'deep.png', base / 'images' / 'img_001.png']
    done = run_script(experiment, 'eval.py', *(f'--image={photo}' for photo in photos), '--save-pred', str(tmp_path))
    assert done.returncode == 0, done.stderr
    before = settings.effective()
    model = hubconf.emanet(str(experiment / 'models' / 'final.pth'))
    assert settings.effective() == before  # the checkpoint's settings stay inside the model
    assert model.settings['N_CLASSES'] == 3 and model.settings['DATASET'] == 'folder'
    # the checkpoint names the classes and their colours, so the model knows them away from the data folder
    assert model.classes == [name for name, _ in TABLE] and model.palette == [tuple(rgb) for rgb in COLOURS]
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['palette'] == COLOURS.tolist()
    for photo in photos:
        expected = np.asarray(Image.open(tmp_path / (photo.stem + '.png')))
        mask = model(str(photo))
        assert mask.shape == (SIZE[1], SIZE[0]) and np.array_equal(mask, expected), photo
    array = np.asarray(ImageOps.exif_transpose(Image.open(photos[0])).convert('RGB'))
    mask, probabilities = model(array, probabilities=True)
    assert np.array_equal(mask, model(str(photos[0]))) and np.array_equal(mask, model(Image.fromarray(array)))
    for photo in photos:  # the PIL image opened from the file (EXIF orientation, 16 bit): the file's mask
        with Image.open(photo) as image:
            assert np.array_equal(model(image), model(str(photo))), photo
    np.testing.assert_array_equal(model.colorize(mask), COLOURS[mask])
    assert probabilities.shape == (3, SIZE[1], SIZE[0]) and np.allclose(probabilities.sum(0), 1, atol=1e-5)
    assert np.array_equal(probabilities.argmax(0), mask)
    assert settings.effective() == before

    # the authors' format holds no settings: the shapes say them; torch.hub loads either
    authors = tmp_path / 'authors.pth'
    torch.save({'net': torch.load(experiment / 'models' / 'final.pth', weights_only=True)['net'], 'step': 4}, authors)
    hub = torch.hub.load(ROOT, 'emanet', checkpoint=str(authors), source='local')
    assert {key: hub.settings[key] for key in ('N_CLASSES', 'N_LAYERS', 'EMA_CHANNELS', 'N_BASES', 'STRIDE')} == \
        {'N_CLASSES': 3, 'N_LAYERS': TINY['N_LAYERS'], 'EMA_CHANNELS': TINY['EMA_CHANNELS'], 'N_BASES': 64, 'STRIDE': 8}
    assert np.array_equal(hub(str(photos[0])), model(str(photos[0])))
    flipped = torch.hub.load(ROOT, 'emanet', checkpoint=str(experiment / 'models' / 'final.pth'), source='local',
                             scales=(0.75, 1.0), flip=True)
    _, scores = flipped(array, probabilities=True)
    assert flipped.settings['EVAL_FLIP'] and not np.allclose(scores, probabilities)
