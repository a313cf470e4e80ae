"""Your own data: `prepare.py folder` on miniatures in the formats tools write, DATASET 'folder' through
training and evaluation, `prepare.py check`'s table and warnings, and hubconf.py (the Python API and torch.hub)
against eval.py."""
import io
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import dataset
import hubconf
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
    assert len(lists['val']) == round(0.1 * len(labels)) and not set(lists['train']) & set(lists['val'])

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
    assert prepare.read_colours(str(path)) == TABLE


def test_a_cvat_export_is_a_folder_of_masks(tmp_path):
    labels = miniature(tmp_path, n=3)
    export = tmp_path / 'cvat'
    shutil.copytree(tmp_path / 'masks', export / 'SegmentationClass')
    (export / 'labelmap.txt').write_text(COLOUR_FILES['cvat'])
    prepare.prepare_folder(f'{tmp_path}/images', str(export), str(tmp_path / 'data'))
    found = written_labels(str(tmp_path / 'data'))
    for image_id, label in labels.items():
        np.testing.assert_array_equal(found[image_id], label)


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


@pytest.mark.parametrize('n, fraction, n_val', [
    (4, 0.25, 1), (8, 0.25, 2),             # exact fractions
    (10, 0.25, 3), (14, 0.25, 4),           # exactly half a pair over: up, both times (round() gives 2 and 4)
    (9, 0.5, 5), (4, 0.1, 1), (4, 0.9, 3),  # a half up; at least one pair in val, at least one in train
])
def test_the_split_at_exact_fractions(tmp_path, n, fraction, n_val):
    for index in range(n):
        save_image(np.zeros((4, 4), np.uint8), f'{tmp_path}/images/{index}.png')
        save_image(np.zeros((4, 4), np.uint8), f'{tmp_path}/masks/{index}.png')
    prepare.prepare_folder(f'{tmp_path}/images', f'{tmp_path}/masks', str(tmp_path / 'data'), val_fraction=fraction)
    lists = {split: dataset.read_list(f'{tmp_path}/data/lists/{split}.txt') for split in ('train', 'val')}
    assert (len(lists['val']), len(lists['train'])) == (n_val, n - n_val)


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
    assert len(first['val']) == 3  # a quarter of 11

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
    experiment = make_experiment(base / 'experiment', base / 'data', DATASET='folder', N_CLASSES=3,
                                 TRAIN_SPLIT='train', LOG_EVERY=2)
    for args in (('prepare.py', 'folder', '--images', f'{base}/images', '--masks', f'{base}/masks', '--colours',
                  f'{base}/colours.txt', '--val-fraction', '0.3', '--out', f'{base}/data'),
                 ('prepare.py', 'check'), ('train.py',), ('eval.py', '--save-pred', 'preds')):
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


def test_the_python_api_segments_as_eval_does(trained, tmp_path):
    experiment, base, labels, _ = trained
    photos = [base / 'images' / 'phone.jpg', base / 'images' / 'deep.png', base / 'images' / 'img_001.png']
    done = run_script(experiment, 'eval.py', *(f'--image={photo}' for photo in photos), '--save-pred', str(tmp_path))
    assert done.returncode == 0, done.stderr
    before = settings.effective()
    model = hubconf.emanet(str(experiment / 'models' / 'final.pth'))
    assert settings.effective() == before  # the checkpoint's settings stay inside the model
    assert model.settings['N_CLASSES'] == 3 and model.settings['DATASET'] == 'folder'
    for photo in photos:
        expected = np.asarray(Image.open(tmp_path / (photo.stem + '.png')))
        mask = model(str(photo))
        assert mask.shape == (SIZE[1], SIZE[0]) and np.array_equal(mask, expected), photo
    array = np.asarray(ImageOps.exif_transpose(Image.open(photos[0])).convert('RGB'))
    mask, probabilities = model(array, probabilities=True)
    assert np.array_equal(mask, model(str(photos[0]))) and np.array_equal(mask, model(Image.fromarray(array)))
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
