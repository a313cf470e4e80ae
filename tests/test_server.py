"""The test-server path: INIT_FROM (staged training), COCO in VOC's classes and the panoptic port's COCO, the test
splits, and eval.py --submit's files in each benchmark server's format."""
import fnmatch
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
import network
import prepare
import settings
from conftest import TWO_PROCESSES, make_experiment, run_script, write_jpeg
from test_datasets import ade20k_miniature, cityscapes_miniature, write_image
from test_prepare import voc_sbd_miniature

# VOC test ids of VOC2012test.tar, with their sizes (H, W): several, so a mix-up of sizes shows
VOC_TEST = {'2008_000001': (37, 50), '2008_000011': (45, 31), '2010_003789': (29, 41)}
# Cityscapes' test release: leftImg8bit/test/<city>/ (and gtFine/test/ with labels that mean nothing)
CITYSCAPES_TEST = ('berlin/berlin_000000_000019', 'bielefeld/bielefeld_000000_007186')
# cityscapesScripts' labels.py: trainId → regular labelId, written out here
CITYSCAPES_IDS = {0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 5: 17, 6: 19, 7: 20, 8: 21, 9: 22, 10: 23, 11: 24, 12: 25, 13: 26,
                  14: 27, 15: 28, 16: 31, 17: 32, 18: 33}


# ---------------------------------------------------------------- INIT_FROM

def test_init_from_starts_the_whole_network_and_resume_ignores_it(tmp_path, root, monkeypatch):
    """A run with LR = 0, EM_MOM = 1 and BN_MOM = 0 changes no weight, no base and no BN statistic, so its
    final.pth holds exactly the network it started from: every tensor of the source file (the authors' format,
    {'net', 'step'}, with weights unlike any seed's) must be there. A mismatched source names the key and both
    shapes; a folder with a checkpoint of its own resumes from it and never reads INIT_FROM."""
    monkeypatch.setattr(settings, 'N_LAYERS', 50)
    torch.manual_seed(1)
    source = network.EMANet(21, 50).state_dict()
    for key, value in source.items():
        if value.is_floating_point():  # BN statistics and the bases too: a seed's init never has them
            value.add_(torch.rand_like(value))
    torch.save({'net': source, 'step': 30000}, tmp_path / 'authors.pth')
    experiment = make_experiment(tmp_path / 'exp', root, INIT_FROM=str(tmp_path / 'authors.pth'), ITER_MAX=1,
                                 LR=0.0, EM_MOM=1.0, BN_MOM=0.0)
    result = run_script(experiment, 'train.py')
    assert result.returncode == 0, result.stderr
    ckpt = torch.load(experiment / 'models' / 'final.pth', weights_only=True)
    assert ckpt['step'] == 1 and ckpt['settings']['INIT_FROM'] == str(tmp_path / 'authors.pth')
    assert f"INIT_FROM = {str(tmp_path / 'authors.pth')!r}" in (experiment / 'logdir' / 'settings.txt').read_text()
    for key, value in source.items():
        if not key.endswith('num_batches_tracked'):
            assert torch.equal(ckpt['net'][key], value), key
    # the optimizer starts fresh: one step's momentum buffers, none from the source (it had none)
    assert len(ckpt['optimizer']['state']) > 0

    wrong = network.EMANet(5, 50).state_dict()
    torch.save({'net': wrong, 'step': 1}, tmp_path / 'five_classes.pth')
    mismatched = make_experiment(tmp_path / 'mismatched', root, INIT_FROM=str(tmp_path / 'five_classes.pth'))
    result = run_script(mismatched, 'train.py')
    assert result.returncode == 1
    assert 'five_classes.pth: key fc2.weight has shape (5, 256, 1, 1) in the file but (21, 256, 1, 1)' in result.stderr
    assert not os.path.exists(mismatched / 'models' / 'final.pth')

    with open(experiment / 'settings.py', 'a') as f:  # resumed with a source that would not even load
        f.write(f"ITER_MAX = 2\nINIT_FROM = {str(tmp_path / 'five_classes.pth')!r}\n")
    result = run_script(experiment, 'train.py')
    assert result.returncode == 0, result.stderr
    assert 'resumed from ./models/latest.pth at step 1' in result.stderr and 'started from' not in result.stderr
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['step'] == 2


def test_init_from_with_pretrained_is_an_error_that_says_so(tmp_path, root):
    experiment = make_experiment(tmp_path / 'exp', root, INIT_FROM='../exp_coco/models/final.pth',
                                 PRETRAINED='./models/resnet50s.pth')
    result = run_script(experiment, 'train.py')
    assert result.returncode == 1
    assert "set PRETRAINED = None to use INIT_FROM" in result.stderr


# ---------------------------------------------------------------- test splits and eval.py --submit

@pytest.fixture(scope='module')
def servers(tmp_path_factory):
    """{dataset: (DATA_ROOT, N_CLASSES, checkpoint)}: VOC, Cityscapes and ADE20K miniatures with their test
    releases, prepared by prepare.py, and an EMANet-50 checkpoint for each class count (the authors' format; its
    weights random: the files' format is what is tested, against the masks of --save-pred)."""
    base = tmp_path_factory.mktemp('servers')
    voc, sbd, _ = voc_sbd_miniature(base)
    for image_id, (height, width) in VOC_TEST.items():  # VOC2012test.tar, unpacked into the same VOC2012/
        write_jpeg(np.random.default_rng(height).integers(0, 256, (height, width, 3), np.uint8),
                   os.path.join(voc, 'JPEGImages', image_id + '.jpg'))
    with open(os.path.join(voc, 'ImageSets', 'Segmentation', 'test.txt'), 'w') as f:
        f.write(''.join(image_id + '\n' for image_id in VOC_TEST))
    prepare.prepare_voc(voc, sbd)
    cityscapes = base / 'cityscapes'
    cityscapes_miniature(cityscapes)
    for index, stem in enumerate(CITYSCAPES_TEST):
        write_image(os.path.join(cityscapes, 'leftImg8bit', 'test', stem + '_leftImg8bit.png'), 100 + index)
        label = os.path.join(cityscapes, 'gtFine', 'test', stem + '_gtFine_labelIds.png')
        os.makedirs(os.path.dirname(label))
        Image.new('L', (60, 40)).save(label)
    prepare.prepare_cityscapes(str(cityscapes))
    ade20k = base / 'data' / 'ADEChallengeData2016'
    ade20k_miniature(ade20k)
    for index in (1, 2):  # release_test.zip unpacked beside ADEChallengeData2016
        write_image(str(base / 'data' / 'release_test' / 'testing' / f'ADE_test_{index:08d}.jpg'), 200 + index)
    prepare.prepare_ade20k(str(ade20k))
    roots = {}
    for name, root, n_classes in (('voc', voc, 21), ('cityscapes', cityscapes, 19), ('ade20k', ade20k, 150)):
        torch.manual_seed(0)
        torch.save({'net': network.EMANet(n_classes, 50).state_dict(), 'step': 7}, base / f'{name}.pth')
        roots[name] = (str(root), n_classes, str(base / f'{name}.pth'))
    return roots


def test_prepare_lists_the_test_splits(servers):
    voc, cityscapes, ade20k = (servers[name][0] for name in ('voc', 'cityscapes', 'ade20k'))
    with open(os.path.join(voc, 'ImageSets', 'SegmentationAug', 'test.txt')) as f:
        assert f.read().split() == sorted(VOC_TEST)
    with open(os.path.join(cityscapes, 'lists', 'test.txt')) as f:
        assert f.read().split() == ['test/' + stem for stem in CITYSCAPES_TEST]
    assert not os.path.exists(os.path.join(cityscapes, 'gtFine', 'test', CITYSCAPES_TEST[0] + '_gtFine_labelTrainIds.png'))
    with open(os.path.join(ade20k, 'lists', 'test.txt')) as f:
        assert f.read().split() == [f'../../release_test/testing/ADE_test_{index:08d}' for index in (1, 2)]


def submit(tmp_path, servers, name, split, *launcher):
    """eval.py --submit (and --save-pred, the masks to compare with) of the checkpoint for name on split;
    returns (the CompletedProcess, the submission folder, the --save-pred folder)."""
    root, n_classes, ckpt = servers[name]
    experiment = make_experiment(tmp_path / 'exp', root, DATASET=name, N_CLASSES=n_classes, VAL_SPLIT=split)
    result = run_script(experiment, *launcher, 'eval.py', ckpt, '--submit', 'submit', '--save-pred', 'x/y/preds')
    assert result.returncode == 0, result.stderr
    return result, experiment / 'submit', experiment / 'x' / 'y' / 'preds'


def test_voc_test_submission_under_torchrun(tmp_path, servers):
    """Two processes, each writing its shard: comp6_test_cls/<id>.png, P mode in the VOC palette, 0..20, at each
    image's size, equal to the predicted masks; results.tgz (gzip) holds exactly results/... of every id.
    The test split has no labels: nothing is scored, and the report says so."""
    result, out, preds = submit(tmp_path, servers, 'voc', 'test', *TWO_PROCESSES)
    assert "no labelled pixel in VAL_SPLIT='test'" in result.stdout and 'mIoU' not in result.stdout
    assert not os.path.exists(tmp_path / 'exp' / 'logdir' / 'eval_voc.json')
    folder = out / 'results' / 'VOC2012' / 'Segmentation' / 'comp6_test_cls'
    assert sorted(os.listdir(folder)) == sorted(image_id + '.png' for image_id in VOC_TEST)
    values = set()
    for image_id, (height, width) in VOC_TEST.items():
        image = Image.open(folder / f'{image_id}.png')
        assert image.mode == 'P' and image.size == (width, height)
        assert image.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # background, aeroplane, bicycle
        pred = np.array(image)
        assert pred.max() <= 20
        np.testing.assert_array_equal(pred, np.array(Image.open(preds / f'{image_id}.png')))
        values |= set(np.unique(pred).tolist())
    assert len(values) > 1  # the comparison is not between two constant images
    with open(out / 'results.tgz', 'rb') as f:
        assert f.read(2) == b'\x1f\x8b'  # gzip
    with tarfile.open(out / 'results.tgz') as archive:
        names = archive.getnames()
        assert sorted(names) == sorted(['results', 'results/VOC2012', 'results/VOC2012/Segmentation',
                                        'results/VOC2012/Segmentation/comp6_test_cls'] +
                                       [f'results/VOC2012/Segmentation/comp6_test_cls/{i}.png' for i in VOC_TEST])
        member = archive.extractfile('results/VOC2012/Segmentation/comp6_test_cls/2008_000011.png')
        assert member.read() == (folder / '2008_000011.png').read_bytes()


def test_cityscapes_val_submission_has_label_ids_and_metrics(tmp_path, servers):
    """On a labelled split --submit also prints the metrics. The files: 8-bit L PNGs of regular labelIds at the
    image size, trainId → labelId as cityscapesScripts' table has it, and evalPixelLevelSemanticLabeling's
    search (os.walk below the results folder, fnmatch '<city>_<seq>_<frame>*.png') finds exactly one per image."""
    result, out, preds = submit(tmp_path, servers, 'cityscapes', 'val')
    assert 'mIoU' in result.stdout and 'traffic light' in result.stdout
    stems = ('frankfurt_000000_000294', 'lindau_000000_000019')
    walk = [name for _, _, names in os.walk(out) for name in names]
    assert sorted(walk) == sorted(stem + '_leftImg8bit.png' for stem in stems)
    lut = np.full(256, -1)
    lut[list(CITYSCAPES_IDS)] = list(CITYSCAPES_IDS.values())
    values = set()
    for stem in stems:
        city, sequence, frame = stem.split('_')
        assert len(fnmatch.filter(walk, f'{city}_{sequence}_{frame}*.png')) == 1
        image = Image.open(out / f'{stem}_leftImg8bit.png')
        assert image.mode == 'L' and image.size == (60, 40)
        pred = np.array(Image.open(preds / 'val' / city / f'{stem}.png'))
        np.testing.assert_array_equal(np.array(image), lut[pred])
        values |= set(np.unique(pred).tolist())
    assert len(values) > 1


def test_ade20k_test_submission_has_classes_plus_one(tmp_path, servers):
    result, out, preds = submit(tmp_path, servers, 'ade20k', 'test')
    assert "no labelled pixel in VAL_SPLIT='test'" in result.stdout
    assert sorted(os.listdir(out)) == ['ADE_test_00000001.png', 'ADE_test_00000002.png']
    values = set()
    for index in (1, 2):
        image = Image.open(out / f'ADE_test_{index:08d}.png')
        assert image.mode == 'L' and image.size == (60, 40)
        # --save-pred keeps the id's path: ../../release_test/testing/ below x/y/preds
        pred = np.array(Image.open(tmp_path / 'exp' / 'x' / 'release_test' / 'testing' / f'ADE_test_{index:08d}.png'))
        np.testing.assert_array_equal(np.array(image), pred + 1)
        assert 1 <= np.array(image).min() and np.array(image).max() <= 150
        values |= set(np.unique(pred).tolist())
    assert len(values) > 1


def test_submit_without_a_server_names_those_with_one(tmp_path, servers):
    root, _, ckpt = servers['voc']
    experiment = make_experiment(tmp_path / 'exp', root, DATASET='context', N_CLASSES=60)
    result = run_script(experiment, 'eval.py', ckpt, '--submit', 'submit')
    assert result.returncode == 1
    assert "--submit: DATASET='context' has no benchmark server; those that have one: voc, cityscapes, ade20k" in result.stderr
    assert not os.path.exists(experiment / 'submit')
