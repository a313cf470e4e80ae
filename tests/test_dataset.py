"""dataset.py: the augmentation, the training and validation samples, and their errors, on tiny generated data."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
import settings
from conftest import CLASS_COLOURS, break_sample


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
