"""prepare.py: VOC + SBD preparation on a miniature of both downloads, the demo dataset, and check."""
import os
import re
import shutil

import numpy as np
import pytest
import scipy.io

import dataset
import prepare
from harness import ROOT, SPLITS, break_sample, run_script, write_jpeg


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
    prepare.prepare_voc(voc, sbd)
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
    prepare.prepare_voc(voc, sbd)
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
        prepare.prepare_voc(voc, sbd)


def test_prepare_names_an_id_without_label_or_image(tmp_path):
    voc, sbd = voc_sbd_miniature(tmp_path)[:2]
    os.remove(os.path.join(sbd, 'cls', 'sbd_2.mat'))
    with pytest.raises(SystemExit, match='no label for sbd_2'):
        prepare.prepare_voc(voc, sbd)
    os.remove(os.path.join(voc, 'JPEGImages', 'sbd_1.jpg'))
    with pytest.raises(SystemExit, match='sbd_1.jpg'):
        prepare.prepare_voc(voc, sbd)


# ---------------------------------------------------------------- demo and check

def run_check(tmp_path, data_root):
    """`python prepare.py check` in an experiment folder whose settings.py points DATA_ROOT at data_root."""
    experiment = tmp_path / 'experiment'
    experiment.mkdir(exist_ok=True)
    for name in ('settings.py', 'dataset.py', 'prepare.py'):
        shutil.copy(os.path.join(ROOT, name), experiment / name)
    with open(experiment / 'settings.py', 'a') as f:
        f.write(f'\nDATA_ROOT = {str(data_root)!r}\n')
    done = run_script(experiment, 'prepare.py', 'check')
    return done.returncode, done.stdout + done.stderr


def test_demo_command_writes_a_dataset_that_check_accepts(tmp_path):
    out = tmp_path / 'demo'
    done = run_script(ROOT, 'prepare.py', 'demo', str(out), '--seed', '5')
    assert done.returncode == 0, done.stderr
    splits = {split: dataset.read_ids(split, str(out)) for split in SPLITS}
    assert splits['trainaug'] == splits['train'] and len(splits['train']) >= 200 and len(splits['val']) >= 40
    assert not set(splits['train']) & set(splits['val'])
    assert splits['trainval'] == sorted(splits['train'] + splits['val'])
    assert len(os.listdir(out / 'JPEGImages')) == len(os.listdir(out / 'SegmentationClassAug')) == len(
        splits['trainval'])
    returncode, output = run_check(tmp_path, out)
    assert returncode == 0, output


def test_demo_is_deterministic_varied_and_in_range(tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        prepare.make_demo(str(tmp_path / name), seed, n_train=12, n_val=4)

    def files(name):
        folder = tmp_path / name
        return {path: (folder / path).read_bytes() for path in sorted(
            os.path.join(directory, file) for directory in ('JPEGImages', 'SegmentationClassAug') for file in
            os.listdir(folder / directory))}
    assert files('a') == files('b') and files('a').keys() == files('c').keys() and files('a') != files('c')
    classes, sizes = set(), set()
    for image_id in dataset.read_ids('trainval', str(tmp_path / 'a')):
        image, label = dataset.load_sample(image_id, str(tmp_path / 'a'))
        assert 40 <= min(image.size) and max(image.size) <= 70 and image.size[0] != image.size[1]
        assert (label != 0).mean() > 0.05  # objects are a good fraction of the image
        classes |= set(np.unique(label).tolist())
        sizes.add(image.size)
    assert 255 in classes and len(classes - {0, 255}) >= 3 and classes <= {0, 255, *prepare.DEMO_CLASSES}
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
