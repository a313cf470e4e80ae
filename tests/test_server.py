"""The test-server path: INIT_FROM (staged training), COCO in VOC's classes and the panoptic port's COCO, the test
splits, and eval.py --submit's files in each benchmark server's format."""
import fnmatch
import json
import os
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoint
import dataset
import eval as eval_script
import prepare
import settings
import train
from harness import ROOT, TWO_PROCESSES, make_experiment, run_script, tiny_net, write_jpeg
from test_datasets import COCO_THING_IDS, PANOPTIC_STUFF, ade20k_miniature, cityscapes_miniature, write_image
from test_prepare import voc_sbd_miniature

pytestmark = pytest.mark.xdist_group(__name__)  # one worker of pytest -n builds the module fixture once

# VOC test ids of VOC2012test.tar, with their sizes (H, W): several, so a mix-up of sizes shows
VOC_TEST = {'2008_000001': (37, 50), '2008_000011': (45, 31), '2010_003789': (29, 41)}
# Cityscapes' test release: leftImg8bit/test/<city>/ (and gtFine/test/ with labels that mean nothing)
CITYSCAPES_TEST = ('berlin/berlin_000000_000019', 'bielefeld/bielefeld_000000_007186')
# cityscapesScripts' labels.py: trainId → regular labelId, written out here
CITYSCAPES_IDS = {0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 5: 17, 6: 19, 7: 20, 8: 21, 9: 22, 10: 23, 11: 24, 12: 25, 13: 26,
                  14: 27, 15: 28, 16: 31, 17: 32, 18: 33}


# ---------------------------------------------------------------- INIT_FROM

def test_init_from_starts_the_whole_network_and_resume_ignores_it(tmp_path, root):
    """A run with LR = 0, EM_MOM = 1 and BN_MOM = 0 changes no weight, no base and no BN statistic, so its
    final.pth holds exactly the network it started from: every tensor of the source file (the authors' format,
    {'net', 'step'}, with weights unlike any seed's) must be there. A mismatched source names the key and both
    shapes; a folder with a checkpoint of its own resumes from it and never reads INIT_FROM."""
    torch.manual_seed(1)
    source = tiny_net().state_dict()
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

    torch.save({'net': tiny_net(5).state_dict(), 'step': 1}, tmp_path / 'five_classes.pth')
    with pytest.raises(checkpoint.CheckpointError, match=r'five_classes.pth: key fc2.weight has shape \(5, 256, 1, 1\) '
                                                         r'in the file but \(21, 256, 1, 1\)'):
        checkpoint.init_from(tiny_net(), str(tmp_path / 'five_classes.pth'))

    with open(experiment / 'settings.py', 'a') as f:  # resumed with a source that would not even load
        f.write(f"ITER_MAX = 2\nINIT_FROM = {str(tmp_path / 'five_classes.pth')!r}\n")
    result = run_script(experiment, 'train.py')
    assert result.returncode == 0, result.stderr
    assert 'resumed from ./models/latest.pth at step 1' in result.stderr and 'started from' not in result.stderr
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['step'] == 2


def test_init_from_with_pretrained_is_an_error_that_says_so(monkeypatch):
    monkeypatch.setattr(settings, 'INIT_FROM', '../exp_coco/models/final.pth')
    monkeypatch.setattr(settings, 'PRETRAINED', './models/resnet50s.pth')
    with pytest.raises(SystemExit, match='set PRETRAINED = None to use INIT_FROM'):
        train.main()


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
        torch.save({'net': tiny_net(n_classes).state_dict(), 'step': 7}, base / f'{name}.pth')
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


def test_ade20k_test_release_inside_the_folder(tmp_path):
    root = tmp_path / 'ADEChallengeData2016'
    ade20k_miniature(root)
    write_image(str(root / 'release_test' / 'testing' / 'ADE_test_00000007.jpg'), 7)
    prepare.prepare_ade20k(str(root))
    assert (root / 'lists' / 'test.txt').read_text().split() == ['../release_test/testing/ADE_test_00000007']


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


def test_voc_comp5_files_and_archive(monkeypatch, tmp_path):
    """--comp 5 (VOC data only): the same layout under comp5_test_cls, in the archive too."""
    monkeypatch.setattr(settings, 'DATASET', 'voc')
    path = eval_script.submission_file('2008_000001', str(tmp_path), 5)
    assert path == str(tmp_path / 'results' / 'VOC2012' / 'Segmentation' / 'comp5_test_cls' / '2008_000001.png')
    eval_script.save_submission(np.full((4, 6), 20, np.uint8), path)
    with tarfile.open(eval_script.write_archive(str(tmp_path), 5)) as archive:
        assert archive.getnames()[-1] == 'results/VOC2012/Segmentation/comp5_test_cls/2008_000001.png'


def test_a_submission_holds_this_evaluations_files_only(tmp_path, servers):
    """The issue's case: --submit on val, then on test into the same folder, would mix 4 val masks into the test
    archive. The second run is refused, naming the folder, which it leaves as it was; a new folder gets the test
    split's files and nothing else."""
    root, n_classes, ckpt = servers['voc']
    experiment = make_experiment(tmp_path / 'exp', root, DATASET='voc', N_CLASSES=n_classes, VAL_SPLIT='val')
    first = run_script(experiment, 'eval.py', ckpt, '--submit', 'submit')
    assert first.returncode == 0, first.stderr
    written = {path: path.read_bytes() for path in (experiment / 'submit').rglob('*') if path.is_file()}
    val_ids = dataset.read_ids('val', root)
    assert len(written) == len(val_ids) + 1  # the masks and results.tgz
    with open(experiment / 'settings.py', 'a') as f:
        f.write("VAL_SPLIT = 'test'\n")
    again = run_script(experiment, 'eval.py', ckpt, '--submit', 'submit')
    assert again.returncode != 0 and 'Traceback' not in again.stderr
    assert '--submit submit is not empty' in again.stderr
    assert {path: path.read_bytes() for path in (experiment / 'submit').rglob('*') if path.is_file()} == written
    test = run_script(experiment, 'eval.py', ckpt, '--submit', 'submit_test')
    assert test.returncode == 0, test.stderr
    with tarfile.open(experiment / 'submit_test' / 'results.tgz') as archive:
        masks = [name for name in archive.getnames() if name.endswith('.png')]
    assert sorted(masks) == sorted(f'results/VOC2012/Segmentation/comp6_test_cls/{i}.png' for i in VOC_TEST)
    assert sorted(path.name for path in (experiment / 'submit_test').rglob('*.png')) == \
        sorted(f'{i}.png' for i in VOC_TEST)


def test_a_flat_submission_folder_with_other_files_is_refused(monkeypatch, tmp_path):
    """Cityscapes' and ADE20K's folders are zipped whole: a file already there (a mask of an earlier evaluation,
    anything) is refused before anything is loaded or written."""
    monkeypatch.setattr(settings, 'DATASET', 'ade20k')
    monkeypatch.setattr(settings, 'N_CLASSES', 150)
    (tmp_path / 'submit').mkdir()
    (tmp_path / 'submit' / 'ADE_val_00000001.png').write_bytes(b'an earlier mask')
    monkeypatch.setattr(sys, 'argv', ['eval.py', 'nowhere.pth', '--submit', str(tmp_path / 'submit')])
    with pytest.raises(ValueError, match=f'--submit {tmp_path / "submit"} is not empty'):
        eval_script.main()
    assert os.listdir(tmp_path / 'submit') == ['ADE_val_00000001.png']


def test_submit_with_own_images_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sys, 'argv', ['eval.py', '--image', 'a.jpg', '--submit', str(tmp_path / 'submit')])
    with pytest.raises(SystemExit):
        eval_script.parse_args()
    assert '--submit writes the server\'s files of VAL_SPLIT: not with --image' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'submit')


def test_submit_without_a_server_names_those_with_one(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'DATASET', 'context')
    monkeypatch.setattr(sys, 'argv', ['eval.py', 'final.pth', '--submit', str(tmp_path / 'submit')])
    with pytest.raises(ValueError, match="--submit: DATASET='context' has no benchmark server; those that have one: "
                                         "voc, cityscapes, ade20k"):
        eval_script.main()
    assert not os.path.exists(tmp_path / 'submit')


# ---------------------------------------------------------------- coco-voc

# COCO category id → VOC class, written out here (PyTorch-Encoding's table, DESIGN.md's list: person 1→15, bicycle
# 2→2, car 3→7, motorcycle 4→14, airplane 5→1, bus 6→6, train 7→19, boat 9→4, bird 16→3, cat 17→8, dog 18→12, horse
# 19→13, sheep 20→17, cow 21→10, bottle 44→5, chair 62→9, couch 63→18, potted plant 64→16, dining table 67→11, tv
# 72→20); every other category, 8 truck and 10 traffic light among them, is none
COCO_TO_VOC = {1: 15, 2: 2, 3: 7, 4: 14, 5: 1, 6: 6, 7: 19, 9: 4, 16: 3, 17: 8, 18: 12, 19: 13, 20: 17, 21: 10, 44: 5,
               62: 9, 63: 18, 64: 16, 67: 11, 72: 20}


def test_coco_voc_table_entry_by_entry():
    """prepare's table is the one above, and painting an instance of each COCO category alone gives its class."""
    assert prepare.COCO_VOC_CLASSES == COCO_TO_VOC
    whole = box(4, 5, 0, 0, 4, 5)
    for category in range(1, 92):  # the 80 categories, the ids COCO skips, and one beyond
        label = prepare.paint_instances(4, 5, [(category, compressed_rle(whole))], 'instances.json')
        assert (label == COCO_TO_VOC.get(category, 0)).all(), category


def box(height, width, top, left, bottom, right):
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def uncompressed_rle(mask):
    """COCO's uncompressed RLE of a mask, written here: run lengths in column-major order, starting with 0s."""
    flat = mask.flatten(order='F').astype(int)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {'size': list(mask.shape), 'counts': ([0] if flat[0] else []) + runs}


def compressed_rle(mask):
    from pycocotools import mask as coco_mask
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': rle['size'], 'counts': rle['counts'].decode()}


def coco_instances_miniature(root, images_folder):
    """instances_{train,val}2017.json and the images: a polygon, uncompressed RLE (a crowd), compressed RLE,
    overlaps, non-VOC categories, an image of exactly 1000 VOC pixels, one of 1001 and one of none, and one with an
    instance of each of the 80 COCO categories (a row each, in reverse id order). Returns {id: expected label} for
    the images that must be kept, painted here by the rule: annotation order, the first VOC instance keeps a
    pixel, other categories paint nothing."""
    from pycocotools import mask as coco_mask
    height, width = 40, 50
    polygon = [[5.0, 5.0, 30.0, 5.0, 30.0, 25.0, 5.0, 25.0]]  # a rectangle, rasterised by pycocotools
    polygon_mask = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygon, height, width))).astype(bool)
    crowd = box(height, width, 15, 20, 40, 50)
    dog = box(height, width, 0, 35, 40, 50)
    truck = box(height, width, 30, 0, 40, 20)
    small = box(height, width, 0, 0, 20, 50)  # exactly 1000 pixels: not more than 1000, dropped
    just_more = small | box(height, width, 20, 0, 21, 1)  # 1001 pixels: kept
    rows = {c: box(80, 60, row, 0, row + 1, 60) for row, c in enumerate(COCO_THING_IDS)}  # 20 VOC rows: 1200 px
    annotations = {  # image id → [(category, segmentation, iscrowd, mask)] in annotation order
        1: [(8, compressed_rle(truck), 0, truck),       # truck: no VOC class, paints nothing, blocks nothing
            (1, polygon, 0, polygon_mask),               # person, first: keeps its pixels
            (3, uncompressed_rle(crowd), 1, crowd),       # a crowd of cars: painted where person is not
            (18, compressed_rle(dog), 0, dog),            # dog, last: only where neither is
            (20, compressed_rle(truck), 0, truck)],       # sheep over the truck's pixels
        2: [(72, compressed_rle(small), 0, small)],
        3: [(10, compressed_rle(dog), 0, dog)],
        4: [(72, polygon, 0, polygon_mask), (44, uncompressed_rle(dog), 0, dog)],
        5: [(c, compressed_rle(rows[c]), 0, rows[c]) for c in reversed(COCO_THING_IDS)],
        6: [(7, compressed_rle(just_more), 0, just_more)],
    }
    sizes = {5: (80, 60)}  # (height, width) where not 40 × 50
    splits = {'train2017': (1, 2, 3, 5), 'val2017': (4, 6)}
    os.makedirs(root / 'annotations')
    expected, number = {}, 0
    for folder, image_ids in splits.items():
        coco = {'images': [], 'annotations': [], 'categories': [{'id': c, 'name': str(c)} for c in range(1, 91)]}
        for image_id in image_ids:
            height, width = sizes.get(image_id, (40, 50))
            name = f'{image_id:012d}.jpg'
            os.makedirs(root / images_folder / folder, exist_ok=True)
            write_jpeg(np.full((height, width, 3), 9 * image_id, np.uint8), str(root / images_folder / folder / name))
            coco['images'].append({'id': image_id, 'file_name': name, 'height': height, 'width': width})
            label = np.zeros((height, width), np.uint8)
            for category, segmentation, crowd, mask in annotations[image_id]:
                number += 1
                coco['annotations'].append({'id': number, 'image_id': image_id, 'category_id': category,
                                            'segmentation': segmentation, 'iscrowd': crowd})
                if category in COCO_TO_VOC:
                    label[mask & (label == 0)] = COCO_TO_VOC[category]
            if np.count_nonzero(label) > 1000:
                expected[os.path.normpath(os.path.join(images_folder, folder, f'{image_id:012d}'))] = label
        with open(root / 'annotations' / f'instances_{folder}.json', 'w') as f:
            json.dump(coco, f)
    return expected


@pytest.mark.parametrize('images_folder', ['.', 'images'])
def test_coco_voc_paints_voc_classes_by_the_rule(tmp_path, monkeypatch, images_folder):
    root = tmp_path / 'coco'
    expected = coco_instances_miniature(root, images_folder)
    prefix = '' if images_folder == '.' else 'images/'
    assert sorted(expected) == [prefix + 'train2017/000000000001', prefix + 'train2017/000000000005',
                                prefix + 'val2017/000000000004', prefix + 'val2017/000000000006']
    every = expected[prefix + 'train2017/000000000005']
    assert [every[row, 0] for row in range(80)] == [COCO_TO_VOC.get(c, 0) for c in COCO_THING_IDS]
    prepare.prepare_coco_voc(str(root))
    assert (root / 'voc_lists' / 'train.txt').read_text().split() == [prefix + 'train2017/000000000001',
                                                                       prefix + 'train2017/000000000005']
    assert (root / 'voc_lists' / 'val.txt').read_text().split() == [prefix + 'val2017/000000000004',
                                                                     prefix + 'val2017/000000000006']
    for image_id, label in expected.items():
        path = root / 'voc_labels' / f'{image_id}.png'
        np.testing.assert_array_equal(dataset.read_label(str(path)), label)
        assert Image.open(path).getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC's colours
    assert set(np.unique(expected[prefix + 'train2017/000000000001']).tolist()) == {0, 7, 12, 15, 17}
    for setting, value in dict(DATASET='coco_voc', N_CLASSES=21, DATA_ROOT=str(root), TRAIN_SPLIT='train').items():
        monkeypatch.setattr(settings, setting, value)
    assert dataset.check() == []
    written = {path: path.stat().st_mtime_ns for path in root.rglob('voc_labels/**/*.png')}
    prepare.prepare_coco_voc(str(root))  # again: every label is already right
    assert {path: path.stat().st_mtime_ns for path in root.rglob('voc_labels/**/*.png')} == written


def test_coco_voc_errors_name_the_file(tmp_path):
    root = tmp_path / 'coco'
    coco_instances_miniature(root, '.')
    os.remove(root / 'val2017' / '000000000004.jpg')
    with pytest.raises(SystemExit, match=r'missing image: .*val2017/000000000004.jpg'):
        prepare.prepare_coco_voc(str(root))
    path = root / 'annotations' / 'instances_train2017.json'
    coco = json.loads(path.read_text())
    coco['annotations'][1]['segmentation'] = compressed_rle(np.ones((10, 10), bool))  # not its image's size
    path.write_text(json.dumps(coco))
    with pytest.raises(SystemExit, match=r'instances_train2017.json \(image 1\): a segmentation of category 1 is '
                                         r'10×10, its image 50×40'):
        prepare.prepare_coco_voc(str(root))


# ---------------------------------------------------------------- coco-panoptic

# category id → class, from test_datasets' tables of panopticapi's panoptic_coco_categories.json: every thing 0,
# the 53 stuff categories 1..53 in the JSON's order
PANOPTIC_CLASSES = {**{c: 0 for c in COCO_THING_IDS}, **{c: k for k, c in enumerate(PANOPTIC_STUFF, 1)}}


def test_coco_panoptic_classes_are_the_stuff_categories_in_the_jsons_order():
    assert dataset.COCO_PANOPTIC_CLASSES == ('things', *PANOPTIC_STUFF.values())


def test_coco_panoptic_maps_segments_to_things_and_stuff(tmp_path, monkeypatch):
    root = tmp_path / 'coco'
    categories = [{'id': c, 'name': f'thing {c}', 'isthing': 1} for c in COCO_THING_IDS]
    categories += [{'id': c, 'name': name, 'isthing': 0} for c, name in PANOPTIC_STUFF.items()]
    height, width = 30, 40
    expected = {}
    for folder, image_id in (('train2017', 139), ('val2017', 285)):
        # segments: id → category; ids use all three channels (R + 256·G + 256²·B)
        segments = {1: 1, 2 + 256 * 1: 3, 7 + 256 * 3 + 65536 * 2: 92, 300: 149, 65536 * 255: 184,
                    5 + 65536: 200, 9: 1}
        segments.update({1000 + 257 * k + 65536 * (k % 3): c for k, c in enumerate(PANOPTIC_CLASSES)})  # each one
        ids = np.resize(np.array([0] + list(segments), np.uint32), (height, width))
        ids = np.roll(ids, image_id % 7)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], 2).astype(np.uint8)
        os.makedirs(root / 'annotations' / f'panoptic_{folder}', exist_ok=True)
        Image.fromarray(rgb).save(root / 'annotations' / f'panoptic_{folder}' / f'{image_id:012d}.png')
        os.makedirs(root / folder, exist_ok=True)
        write_jpeg(np.zeros((height, width, 3), np.uint8), str(root / folder / f'{image_id:012d}.jpg'))
        coco = {'images': [{'id': image_id, 'file_name': f'{image_id:012d}.jpg', 'height': height, 'width': width}],
                'annotations': [{'image_id': image_id, 'file_name': f'{image_id:012d}.png', 'segments_info': [
                    {'id': s, 'category_id': c, 'iscrowd': int(s == 9)} for s, c in segments.items()]}],
                'categories': categories}
        with open(root / 'annotations' / f'panoptic_{folder}.json', 'w') as f:
            json.dump(coco, f)
        lut = {0: 255, **{s: PANOPTIC_CLASSES[c] for s, c in segments.items()}}
        expected[f'{folder}/{image_id:012d}'] = np.vectorize(lut.__getitem__)(ids)
    prepare.prepare_coco_panoptic(str(root))
    assert (root / 'panoptic_lists' / 'train.txt').read_text().split() == ['train2017/000000000139']
    assert (root / 'panoptic_lists' / 'val.txt').read_text().split() == ['val2017/000000000285']
    for image_id, label in expected.items():
        np.testing.assert_array_equal(dataset.read_label(str(root / 'panoptic_labels' / f'{image_id}.png')), label)
    for setting, value in dict(DATASET='coco_panoptic', N_CLASSES=54, DATA_ROOT=str(root), TRAIN_SPLIT='train').items():
        monkeypatch.setattr(settings, setting, value)
    assert dataset.check() == []
    # a segment id that segments_info lacks is named with its file
    rgb[0, 0] = (4, 0, 0)
    Image.fromarray(rgb).save(root / 'annotations' / 'panoptic_val2017' / '000000000285.png')
    with pytest.raises(SystemExit, match='000000000285.png has segment id 4, which its segments_info lacks'):
        prepare.prepare_coco_panoptic(str(root))


# ---------------------------------------------------------------- start methods other than fork

SPAWNED = '''
import multiprocessing, sys
multiprocessing.set_start_method('spawn', force=True)
import dataset, prepare, settings
prepare.prepare_ade20k(sys.argv[1])
settings.DATASET, settings.N_CLASSES, settings.DATA_ROOT, settings.TRAIN_SPLIT = 'ade20k', 150, sys.argv[1], 'train'
sys.exit(len(dataset.check()))
'''


def test_workers_started_by_spawn_convert_and_check_with_the_parents_dataset(tmp_path):
    """Under spawn (macOS; forkserver, Python 3.14's Linux default, alike) each worker imports settings.py afresh,
    whose DATASET is VOC: prepare.py's label workers and check()'s must take the dataset of their parent."""
    root = tmp_path / 'ADEChallengeData2016'
    ade20k_miniature(root)
    done = run_script(ROOT, '-c', SPAWNED, str(root))
    assert done.returncode == 0, done.stderr
    assert 'labels: 5 written' in done.stderr and 'check: 5 images, 0 problems' in done.stderr
    assert 149 in dataset.read_label(str(root / 'labels' / 'training' / 'ADE_train_00000001.png'))
