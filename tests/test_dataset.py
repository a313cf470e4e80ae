"""dataset.py: the augmentation, the training and validation samples, and their errors, on tiny generated data."""
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import benchmark
import dataset
import settings
from harness import CLASS_COLOURS, break_sample


def unnormalize(image):
    """3 × H × W normalised tensor -> H × W × 3 float RGB in [0, 255]."""
    mean, std = np.array(settings.MEAN), np.array(settings.STD)
    return (image.numpy().transpose(1, 2, 0) * std + mean) * 255


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


# ---------------------------------------------------------------- TrainDataset

def random_sample(rng, height, width):
    """(PIL image, label) of random pixels and random classes, IGNORE_LABEL among them."""
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    classes = np.array([*range(settings.N_CLASSES), settings.IGNORE_LABEL], np.uint8)
    return image, rng.choice(classes, (height, width))


def assert_augment_equals_authors(image, label, seed):
    """dataset.augment and benchmark.authors_augment (the whole-image op) give the same sample for the seed;
    returns (scale, flipped), replaying the draws."""
    ours, our_label = dataset.augment(image, label, np.random.default_rng(seed))
    theirs, their_label = benchmark.authors_augment(image, label, np.random.default_rng(seed))
    assert ours.shape == theirs.shape == (3, settings.CROP_SIZE, settings.CROP_SIZE) and ours.dtype == torch.float32
    assert our_label.dtype == their_label.dtype == torch.int64
    assert np.abs(ours.numpy() - theirs.numpy()).max() <= 1e-3
    assert torch.equal(our_label, their_label)
    draws = np.random.default_rng(seed)
    scale = settings.SCALES[draws.integers(len(settings.SCALES))]
    width, height = image.size
    draws.integers(max(int(height * scale) - settings.CROP_SIZE, 0) + 1)  # top
    draws.integers(max(int(width * scale) - settings.CROP_SIZE, 0) + 1)  # left
    return scale, draws.random() < 0.5


def test_augment_equals_the_authors_whole_image_op(monkeypatch):
    monkeypatch.setattr(settings, 'CROP_SIZE', 41)
    rng = np.random.default_rng(1)
    seen, shapes = set(), set()
    for seed in range(300):
        height, width = rng.integers(15, 90, 2)  # × 0.5 … 2.0: from 7 to 178 px, around the crop of 41
        scale, flipped = assert_augment_equals_authors(*random_sample(rng, height, width), seed)
        seen.add((scale, flipped))
        shapes.add((height > width, int(height * scale) > 41, int(width * scale) > 41))
    assert seen == {(scale, flipped) for scale in settings.SCALES for flipped in (False, True)}
    assert len(shapes) == 6  # portrait and landscape: smaller than the crop, larger, larger along the long side only
    # the settings' crop on VOC-sized images, portrait and landscape
    monkeypatch.setattr(settings, 'CROP_SIZE', 513)
    for seed in range(8):
        assert_augment_equals_authors(*random_sample(rng, *((375, 500), (500, 375))[seed % 2]), seed)


@pytest.mark.parametrize('scale', settings.SCALES)
def test_augment_equals_the_authors_op_at_each_scale(monkeypatch, scale):
    monkeypatch.setattr(settings, 'SCALES', (scale,))
    monkeypatch.setattr(settings, 'CROP_SIZE', 33)
    rng = np.random.default_rng(2)
    thin = next(n for n in range(1, 4) if int(n * scale) >= 1)  # scales to exactly 1 px, but at 2.0 (to 2)
    assert int(thin * scale) == (2 if scale == 2 else 1)
    # 3 rows at 1.25 stay 3: torch's nearest kernels pick them differently for a small (3 × 37) and a large
    # (3 × 120) output
    for height, width in [(thin, 37), (37, thin), (thin, thin), (3, 37), (3, 120), (23, 50), (50, 23), (90, 61)]:
        flips = {assert_augment_equals_authors(*random_sample(rng, height, width), seed)[1] for seed in range(10)}
        assert flips == {False, True}


@pytest.mark.parametrize('scale', settings.SCALES)
def test_taps_pick_torchs_source_pixels(scale):
    for size in range(1, 701):
        scaled = int(size * scale)
        if scaled == 0:
            continue
        # 2 rows: torch's vectorised nearest kernel while the output's height + width ≤ 128, then its generic one;
        # 260 rows (130 to 520 scaled): the generic one, which differs from the other only on small sizes
        for rows in (2, 260) if size <= 64 else (2,):
            source = torch.arange(size, dtype=torch.float32).repeat(rows, 1)[None, None]  # values: source columns
            nearest = F.interpolate(source, scale_factor=scale, mode='nearest')[0, 0, 0].long().numpy()
            vectorised = int(rows * scale) + scaled <= 128
            np.testing.assert_array_equal(dataset.nearest_taps(0, scaled, size, scaled, scale, vectorised), nearest)
        source = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size)
        bilinear = F.interpolate(source, scale_factor=(1.0, scale), mode='bilinear', align_corners=True)[0, 0, 0]
        first, second, weight = dataset.linear_taps(0, scaled, size, scaled)
        np.testing.assert_allclose(first + weight * (second - first), bilinear.numpy(), atol=1e-4)
        start = scaled // 3  # a window's taps are those of the whole
        np.testing.assert_array_equal(dataset.linear_taps(start, scaled - start, size, scaled)[0], first[start:])


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
