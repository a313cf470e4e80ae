"""Tests of dataset.py on tiny generated data: python -m pytest -q tests/test_dataset.py"""
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dataset  # noqa: E402
import settings  # noqa: E402

# colours far apart, one per class, so a pixel's colour tells its class even after JPEG and resampling
CLASS_COLOURS = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], np.float32)


def write_jpeg(array, path):
    Image.fromarray(array).save(path, quality=100, subsampling=0)  # 4:4:4 keeps colours sharp


def write_root(root, samples, splits):
    """A DATA_ROOT holding samples (id -> (H × W × 3 uint8 image, H × W label)) and lists (split -> ids)."""
    for folder in ('JPEGImages', 'SegmentationClassAug'):
        os.makedirs(os.path.join(root, folder))
    for image_id, (image, label) in samples.items():
        write_jpeg(image, dataset.image_path(image_id, root))
        dataset.save_label_png(label, dataset.label_path(image_id, root))
    dataset.write_lists(splits, root)
    return str(root)


def block_sample(rng, height, width, block=12):
    """(image, label): blocks of classes 0-4 of block × block px, each painted in its CLASS_COLOURS colour."""
    grid = rng.integers(0, len(CLASS_COLOURS), (-(-height // block), -(-width // block)))
    label = np.kron(grid, np.ones((block, block), int))[:height, :width].astype(np.uint8)
    return CLASS_COLOURS[label].astype(np.uint8), label


@pytest.fixture
def root(tmp_path):
    """Six 37 × 50 block samples, listed in every split."""
    rng = np.random.default_rng(0)
    samples = {f'{index:03d}': block_sample(rng, 37, 50) for index in range(6)}
    return write_root(tmp_path / 'root', samples, {split: list(samples) for split in dataset.SPLITS})


def unnormalize(image):
    """3 × H × W normalised tensor -> H × W × 3 float RGB in [0, 255]."""
    mean, std = np.array(settings.MEAN), np.array(settings.STD)
    return (image.numpy().transpose(1, 2, 0) * std + mean) * 255


def pil_nearest_is_tie(offset, count, size, scaled):
    """For output pixels offset..offset+count of a size -> scaled resize: is the source coordinate exactly on a
    pixel edge, where nearest-neighbour rounding may go either way?"""
    return ((2 * (offset + np.arange(count)) + 1) * size) % (2 * scaled) == 0


# ---------------------------------------------------------------- helpers

def test_palette_colorize_and_label_png_round_trip(tmp_path):
    palette = dataset.voc_palette()
    assert len(palette) == 768 and len(dataset.VOC_CLASSES) == 21
    assert palette[3:6] == [128, 0, 0] and palette[15 * 3:16 * 3] == [192, 128, 128]
    assert palette[255 * 3:] == [224, 224, 192]
    label = np.array([[0, 1, 255], [15, 20, 3]], np.uint8)
    colours = dataset.colorize(label)
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    assert colours[0, 2].tolist() == [224, 224, 192] and colours[1, 0].tolist() == [192, 128, 128]
    path = str(tmp_path / 'label.png')
    dataset.save_label_png(label, path)
    assert Image.open(path).mode == 'P'
    np.testing.assert_array_equal(dataset.read_label(path), label)
    assert os.listdir(tmp_path) == ['label.png']


# ---------------------------------------------------------------- prepare

def voc_sbd_miniature(tmp_path):
    """Both downloads in miniature, with the real overlaps: 'shared' is in VOC train and SBD train (VOC's label
    wins), 'val_sbd' is in VOC val and SBD val (it must stay out of trainaug). Returns (voc, sbd, labels) where
    labels maps each id to the label prepare must write."""
    voc, sbd = tmp_path / 'VOC2012', tmp_path / 'benchmark_RELEASE' / 'dataset'
    for folder in (voc / 'JPEGImages', voc / 'SegmentationClass', voc / 'ImageSets' / 'Segmentation', sbd / 'cls'):
        os.makedirs(folder)
    voc_lists = {'train': ['train_1', 'shared'], 'val': ['val_1', 'val_sbd']}
    voc_lists['trainval'] = voc_lists['train'] + voc_lists['val']
    sbd_lists = {'train': ['shared', 'sbd_2', 'sbd_1'], 'val': ['val_sbd', 'sbd_3']}
    for lists, folder in ((voc_lists, voc / 'ImageSets' / 'Segmentation'), (sbd_lists, sbd)):
        for split, ids in lists.items():
            (folder / f'{split}.txt').write_text(''.join(image_id + '\n' for image_id in ids))
    labels = {}
    for index, image_id in enumerate(sorted(set(sum(voc_lists.values(), []) + sum(sbd_lists.values(), [])))):
        write_jpeg(np.full((16, 20, 3), 10 * index, np.uint8), str(voc / 'JPEGImages' / f'{image_id}.jpg'))
        if image_id in voc_lists['trainval']:  # a VOC palette PNG with a 255 border round its object
            label = np.zeros((16, 20), np.uint8)
            label[3:12, 4:15] = 255
            label[4:11, 5:14] = index + 1
            dataset.save_label_png(label, str(voc / 'SegmentationClass' / f'{image_id}.png'))
            labels[image_id] = label
        if image_id in sbd_lists['train'] + sbd_lists['val']:  # SBD: no borders, another object
            segmentation = np.zeros((16, 20), np.uint8)
            segmentation[8:, :10] = 20 - index
            scipy.io.savemat(str(sbd / 'cls' / f'{image_id}.mat'), {'GTcls': {
                'Segmentation': segmentation, 'Boundaries': np.zeros((1, 1)), 'CategoriesPresent': [20 - index]}})
            labels.setdefault(image_id, segmentation)
    return str(voc), str(sbd), labels


def test_prepare_builds_lists_and_labels_and_is_safe_to_rerun(tmp_path):
    voc, sbd, labels = voc_sbd_miniature(tmp_path)
    dataset.prepare(voc, sbd)
    assert dataset.read_ids('train', voc) == ['shared', 'train_1']
    assert dataset.read_ids('val', voc) == ['val_1', 'val_sbd']
    assert dataset.read_ids('trainval', voc) == ['shared', 'train_1', 'val_1', 'val_sbd']
    assert dataset.read_ids('trainaug', voc) == ['sbd_1', 'sbd_2', 'sbd_3', 'shared', 'train_1']
    written = sorted(os.listdir(os.path.join(voc, 'SegmentationClassAug')))
    assert written == sorted(image_id + '.png' for image_id in labels)
    for image_id, label in labels.items():
        np.testing.assert_array_equal(dataset.read_label(dataset.label_path(image_id, voc)), label)
    assert 255 in dataset.read_label(dataset.label_path('shared', voc))  # VOC's label, with its border

    # a re-run keeps correct labels untouched and repairs a broken or stale one
    def mtimes():
        return {name: os.stat(os.path.join(voc, 'SegmentationClassAug', name)).st_mtime_ns for name in written}
    before = mtimes()
    with open(dataset.label_path('sbd_1', voc), 'wb') as f:
        f.write(b'broken')
    dataset.save_label_png(np.zeros((16, 20), np.uint8), dataset.label_path('shared', voc))
    touched = mtimes()
    dataset.prepare(voc, sbd)
    after = mtimes()
    assert {name for name in written if after[name] != touched[name]} == {'sbd_1.png', 'shared.png'}
    assert {name for name in written if after[name] != before[name]} == {'sbd_1.png', 'shared.png'}
    for image_id, label in labels.items():
        np.testing.assert_array_equal(dataset.read_label(dataset.label_path(image_id, voc)), label)
    assert dataset.read_ids('trainaug', voc) == ['sbd_1', 'sbd_2', 'sbd_3', 'shared', 'train_1']


@pytest.mark.parametrize('missing', ['SegmentationClass', 'ImageSets/Segmentation/val.txt', 'cls', 'train.txt'])
def test_prepare_names_a_missing_folder_or_file(tmp_path, missing):
    voc, sbd = voc_sbd_miniature(tmp_path)[:2]
    path = os.path.join(sbd if missing in ('cls', 'train.txt') else voc, missing)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(SystemExit, match='missing ' + re.escape(path)):
        dataset.prepare(voc, sbd)


def test_prepare_names_an_id_without_label_or_image(tmp_path):
    voc, sbd = voc_sbd_miniature(tmp_path)[:2]
    os.remove(os.path.join(sbd, 'cls', 'sbd_2.mat'))
    with pytest.raises(SystemExit, match='no label for sbd_2'):
        dataset.prepare(voc, sbd)
    os.remove(os.path.join(voc, 'JPEGImages', 'sbd_1.jpg'))
    with pytest.raises(SystemExit, match='sbd_1.jpg'):
        dataset.prepare(voc, sbd)


# ---------------------------------------------------------------- TrainDataset

def reference_augment(image, label, rng):
    """The authors' way, drawing the same numbers: rescale the whole sample, pad, crop, flip, normalise.
    Returns (3 × CROP × CROP image, CROP × CROP label, the label's tie rows and columns)."""
    crop = settings.CROP_SIZE
    scale = settings.SCALES[rng.integers(len(settings.SCALES))]
    width, height = image.size
    scaled_w, scaled_h = int(width * scale), int(height * scale)
    scaled = np.asarray(image.resize((scaled_w, scaled_h), Image.Resampling.BILINEAR), np.float32)
    scaled = (scaled / 255 - np.array(settings.MEAN, np.float32)) / np.array(settings.STD, np.float32)
    scaled_label = np.asarray(Image.fromarray(label).resize((scaled_w, scaled_h), Image.Resampling.NEAREST))
    pad_h, pad_w = max(crop - scaled_h, 0), max(crop - scaled_w, 0)
    padded = np.pad(scaled, ((0, pad_h), (0, pad_w), (0, 0)))
    padded_label = np.pad(scaled_label, ((0, pad_h), (0, pad_w)), constant_values=settings.IGNORE_LABEL)
    top = rng.integers(padded.shape[0] - crop + 1)
    left = rng.integers(padded.shape[1] - crop + 1)
    image, label = padded[top:top + crop, left:left + crop], padded_label[top:top + crop, left:left + crop]
    tie_rows = pil_nearest_is_tie(top, crop, height, scaled_h)
    tie_cols = pil_nearest_is_tie(left, crop, width, scaled_w)
    if rng.random() < 0.5:
        image, label, tie_cols = image[:, ::-1], label[:, ::-1], tie_cols[::-1]
    return image.transpose(2, 0, 1), label, tie_rows[:, None] | tie_cols[None, :]


def test_augment_matches_rescaling_the_whole_sample(monkeypatch):
    monkeypatch.setattr(settings, 'CROP_SIZE', 41)
    rng = np.random.default_rng(1)
    for seed in range(150):
        height, width = rng.integers(15, 70, 2)
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        label = rng.integers(0, 21, (height, width), dtype=np.uint8)
        ours, our_label = dataset.augment(image, label, np.random.default_rng(seed))
        theirs, their_label, ties = reference_augment(image, label, np.random.default_rng(seed))
        # bilinear weights are rounded to fixed point differently: at most 2 of 255 grey levels apart
        assert np.abs(ours.numpy() - theirs).max() <= 2.01 / 255 / min(settings.STD)
        # nearest neighbour may round the other way only where the source coordinate lies exactly on a pixel edge
        differs = our_label.numpy() != their_label
        assert not (differs & ~ties).any()


def test_train_sample_keeps_image_and_label_aligned(root, monkeypatch):
    monkeypatch.setattr(settings, 'CROP_SIZE', 45)
    train = dataset.TrainDataset(root)
    content_sizes = set()
    for seed in range(60):
        image, label = train[(seed % len(train), seed)]
        assert image.shape == (3, 45, 45) and image.dtype == torch.float32
        assert label.shape == (45, 45) and label.dtype == torch.int64
        label = label.numpy()
        # pixels whose 3 × 3 neighbourhood has one class, away from the blending at block edges
        inside = (label != 255) & (np.array([np.roll(label, (dy, dx), (0, 1)) == label
                                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).all(0))
        inside[[0, -1]] = inside[:, [0, -1]] = False
        colours = unnormalize(image)[inside]  # N × 3
        nearest = np.linalg.norm(colours[:, None] - CLASS_COLOURS[None], axis=2).argmin(1)
        np.testing.assert_array_equal(nearest, label[inside])
        content_sizes.add((label != 255).sum())
    assert len(content_sizes) > 3


def test_train_padding_is_zero_and_ignore(root, monkeypatch):
    monkeypatch.setattr(settings, 'SCALES', (0.5,))
    monkeypatch.setattr(settings, 'CROP_SIZE', 33)
    train = dataset.TrainDataset(root)
    flips = set()
    for seed in range(20):
        image, label = train[(0, seed)]
        flipped = label[0, 0].item() == 255  # 37 × 50 at 0.5 is 18 × 25: content top-left, or top-right if flipped
        columns = slice(33 - 25, 33) if flipped else slice(0, 25)
        content = torch.zeros(33, 33, dtype=torch.bool)
        content[:18, columns] = True
        assert (label[content] != 255).all() and (label[~content] == 255).all()
        assert (image[:, ~content] == 0).all() and (image[:, content] != 0).any()
        flips.add(flipped)
    assert flips == {False, True}


def test_train_sample_depends_only_on_index_and_seed(root, monkeypatch):
    monkeypatch.setattr(settings, 'CROP_SIZE', 33)
    train = dataset.TrainDataset(root)
    first, again = train[(2, 7)], train[(2, 7)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    distinct = {train[(2, seed)][0].numpy().tobytes() for seed in range(10)}
    assert len(distinct) > 5
    image, label = train[3]  # a plain index draws fresh randomness
    assert image.shape == (3, 33, 33) and label.shape == (33, 33)
    # worker processes give the very same samples for the same (index, seed) pairs
    pairs = [(2, 7), (4, 1), (0, 3)]
    loader = torch.utils.data.DataLoader(train, sampler=pairs, batch_size=None, num_workers=2)
    for (index, seed), (image, label) in zip(pairs, loader):
        expected = train[(index, seed)]
        assert torch.equal(image, expected[0]) and torch.equal(label, expected[1])


# ---------------------------------------------------------------- ValDataset

@pytest.mark.parametrize('stride, padded_size', [(8, (41, 57)), (16, (49, 65))])
def test_val_sample_is_padded_to_stride_multiple_plus_one(root, monkeypatch, stride, padded_size):
    monkeypatch.setattr(settings, 'STRIDE', stride)
    val = dataset.ValDataset(root)
    assert val.ids == dataset.read_ids('val', root) and len(val) == 6
    image, label = val[1]
    assert tuple(label.shape) == padded_size and tuple(image.shape) == (3, *padded_size)
    assert label.dtype == torch.int64 and image.dtype == torch.float32
    source = np.asarray(Image.open(dataset.image_path(val.ids[1], root)), np.float32)  # 37 × 50 × 3
    np.testing.assert_allclose(unnormalize(image[:, :37, :50]), source, atol=1e-3)
    np.testing.assert_array_equal(label[:37, :50].numpy(), dataset.read_label(dataset.label_path(val.ids[1], root)))
    assert (label[37:] == 255).all() and (label[:, 50:] == 255).all()
    assert (image[:, 37:] == 0).all() and (image[:, :, 50:] == 0).all()


def test_stride_size():
    assert [dataset.stride_size(size) for size in (1, 2, 9, 10, 513, 514)] == [1, 9, 9, 17, 513, 521]


# ---------------------------------------------------------------- bad input

def break_sample(root, image_id, how):
    """Breaks the image or the label of image_id as `how` says; returns the broken file's path."""
    path = (dataset.image_path if how.endswith('image') else dataset.label_path)(image_id, root)
    if how.startswith('missing'):
        os.remove(path)
    elif how == 'corrupt image':
        with open(path, 'wb') as f:
            f.write(b'not a jpeg')
    elif how == 'truncated image':
        data = open(path, 'rb').read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
    elif how == 'corrupt label':
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n broken')
    elif how == 'RGB label':
        Image.new('RGB', (50, 37)).save(path)
    elif how == 'size mismatch':
        dataset.save_label_png(np.zeros((36, 50), np.uint8), path)
    else:  # out-of-range value: N_CLASSES itself is one too many
        values = dataset.read_label(path)
        values[5, 5] = settings.N_CLASSES
        dataset.save_label_png(values, path)
    return path


BREAKAGES = ['missing image', 'corrupt image', 'truncated image', 'missing label', 'corrupt label', 'RGB label',
             'size mismatch', 'out of range']


@pytest.mark.parametrize('how', BREAKAGES)
def test_bad_sample_raises_an_error_naming_the_file(root, how):
    path = break_sample(root, '002', how)
    error = FileNotFoundError if how.startswith('missing') else ValueError
    for data in (dataset.TrainDataset(root), dataset.ValDataset(root)):
        data[0]
        with pytest.raises(error, match=re.escape(path)):
            data[(2, 0)] if isinstance(data, dataset.TrainDataset) else data[2]


def test_missing_list_or_data_root_names_the_setting(root, monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="TRAIN_SPLIT = 'nope'.*nope.txt"):
        dataset.TrainDataset(root, 'nope')
    monkeypatch.setattr(settings, 'DATA_ROOT', root)
    monkeypatch.setattr(settings, 'VAL_SPLIT', 'missing')
    with pytest.raises(FileNotFoundError, match="VAL_SPLIT = 'missing'.*missing.txt"):
        dataset.ValDataset()
    assert len(dataset.TrainDataset()) == 6
    monkeypatch.setattr(settings, 'DATA_ROOT', str(tmp_path / 'nowhere'))
    with pytest.raises(FileNotFoundError, match='DATA_ROOT.*nowhere'):
        dataset.TrainDataset()


# ---------------------------------------------------------------- demo and check

def run_check(tmp_path, data_root):
    """`python dataset.py check` in an experiment folder whose settings.py points DATA_ROOT at data_root."""
    experiment = tmp_path / 'experiment'
    experiment.mkdir(exist_ok=True)
    for name in ('settings.py', 'dataset.py'):
        shutil.copy(os.path.join(REPO, name), experiment / name)
    with open(experiment / 'settings.py', 'a') as f:
        f.write(f'\nDATA_ROOT = {str(data_root)!r}\n')
    done = subprocess.run([sys.executable, 'dataset.py', 'check'], cwd=experiment, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_demo_command_writes_a_dataset_that_check_accepts(tmp_path):
    out = tmp_path / 'demo'
    subprocess.run([sys.executable, 'dataset.py', 'demo', str(out), '--seed', '5'], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    splits = {split: dataset.read_ids(split, str(out)) for split in dataset.SPLITS}
    assert splits['trainaug'] == splits['train'] and len(splits['train']) >= 200 and len(splits['val']) >= 40
    assert not set(splits['train']) & set(splits['val'])
    assert splits['trainval'] == sorted(splits['train'] + splits['val'])
    assert len(os.listdir(out / 'JPEGImages')) == len(os.listdir(out / 'SegmentationClassAug')) == len(
        splits['trainval'])
    returncode, output = run_check(tmp_path, out)
    assert returncode == 0, output


def test_demo_is_deterministic_varied_and_in_range(tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        dataset.make_demo(str(tmp_path / name), seed, n_train=12, n_val=4)

    def files(name):
        folder = tmp_path / name
        return {path: (folder / path).read_bytes() for path in sorted(
            os.path.join(directory, file) for directory in ('JPEGImages', 'SegmentationClassAug') for file in
            os.listdir(folder / directory))}
    assert files('a') == files('b') and files('a').keys() == files('c').keys() and files('a') != files('c')
    classes, sizes = set(), set()
    for image_id in dataset.read_ids('trainval', str(tmp_path / 'a')):
        image, label = dataset.load_sample(image_id, str(tmp_path / 'a'))
        assert 80 <= min(image.size) and max(image.size) <= 140 and image.size[0] != image.size[1]
        assert (label != 0).mean() > 0.05  # objects are a good fraction of the image
        classes |= set(np.unique(label).tolist())
        sizes.add(image.size)
    assert 255 in classes and len(classes - {0, 255}) >= 3 and classes <= {0, 255, *dataset.DEMO_CLASSES}
    assert len(sizes) > 8


def test_check_names_every_bad_file_and_setting(root, tmp_path):
    broken = [break_sample(root, image_id, how) for image_id, how in
              (('001', 'missing image'), ('003', 'out of range'), ('004', 'size mismatch'), ('005', 'corrupt label'))]
    returncode, output = run_check(tmp_path, root)
    assert returncode != 0
    for path in broken:
        assert path in output
    assert dataset.image_path('000', root) not in output and dataset.label_path('000', root) not in output
    os.remove(dataset.list_path('val', root))
    returncode, output = run_check(tmp_path, root)
    assert returncode != 0 and "VAL_SPLIT = 'val'" in output
    returncode, output = run_check(tmp_path, tmp_path / 'nowhere')
    assert returncode != 0 and 'DATA_ROOT' in output and 'nowhere' in output
