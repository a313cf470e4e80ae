"""eval.py: metrics, confusion, multi-scale + flip prediction, and the command line run like a user runs it."""
import json
import math
import os
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import checkpoint
import dataset
import eval
import evaluation
import network
import settings
from harness import (DEMO_VAL_IDS, ONE_THREAD, ROOT, TWO_PROCESSES, log_records, make_experiment, run_script,
                     tiny_net)
from test_val import read_scalars

pytestmark = pytest.mark.xdist_group(__name__)  # one worker of pytest -n builds the module fixture once

VAL_IDS = DEMO_VAL_IDS[:3]


# ---------------------------------------------------------------- metrics

# rows: ground truth, columns: prediction. Class 2 is only predicted (IoU 0), class 3 appears nowhere (no IoU).
HAND_CONFUSION = [[5, 1, 0, 0],
                  [2, 3, 1, 0],
                  [0, 0, 0, 0],
                  [0, 0, 0, 0]]


def test_metrics_hand_computed():
    result = evaluation.metrics(HAND_CONFUSION)
    assert result['pAcc'] == pytest.approx(8 / 12)
    assert result['mAcc'] == pytest.approx((5 / 6 + 3 / 6) / 2)  # classes 0 and 1 are in the ground truth
    iou = result['IoU']
    assert iou[:3] == pytest.approx([5 / 8, 3 / 7, 0]) and math.isnan(iou[3])
    assert result['mIoU'] == pytest.approx((5 / 8 + 3 / 7 + 0) / 3)
    assert result['fIoU'] == pytest.approx(6 / 12 * 5 / 8 + 6 / 12 * 3 / 7)


def test_report_json_and_table(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(dataset.DATASETS, 'four', {**dataset.DATASETS['voc'], 'classes': ('sky', 'road', 'car', 'dog')})
    monkeypatch.setattr(settings, 'DATASET', 'four')  # classes are named as the dataset names them
    monkeypatch.setattr(settings, 'N_CLASSES', 4)
    monkeypatch.setattr(settings, 'LOG_DIR', str(tmp_path / 'logs'))
    monkeypatch.setattr(settings, 'EVAL_WINDOW', (9, 17))
    monkeypatch.setattr(settings, 'STRIDE', 16)
    monkeypatch.setattr(settings, 'EVAL_STRIDE', 8)  # the stride at test time is what is reported
    eval.report(np.array(HAND_CONFUSION), 'models/step_10.pth', 10, 2)
    with open(tmp_path / 'logs' / 'eval_step_10_window9x17_os8.json') as f:  # named by checkpoint and protocol
        result = json.load(f)
    assert result['mIoU'] == pytest.approx(59 / 168) and result['fIoU'] == pytest.approx(59 / 112)
    assert result['per_class'] == {'sky': pytest.approx(5 / 8), 'road': pytest.approx(3 / 7), 'car': 0.0, 'dog': None}
    assert result['step'] == 10 and result['n_images'] == 2 and result['scales'] == [1.0] and not result['flip']
    assert result['window'] == [9, 17] and result['stride'] == 8
    assert result['confusion'] == HAND_CONFUSION  # rows: ground truth, as given
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith('scales (1.0,), flip False, window (9, 17), stride 8')
    assert 'pAcc 66.67  mAcc 66.67  fIoU 52.68  mIoU 35.12' in out and '62.50' in out


def test_confusion_ignores_ignore_label(monkeypatch):
    monkeypatch.setattr(settings, 'N_CLASSES', 3)
    label = torch.tensor([[0, 1, 255], [2, 2, 255]])
    pred = torch.tensor([[0, 2, 1], [2, 1, 0]])
    confusion = evaluation.confusion_matrix(pred, label)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_confusion_and_metrics_follow_their_definitions(monkeypatch):
    monkeypatch.setattr(settings, 'N_CLASSES', 4)
    # asymmetric on purpose: class 3 is only predicted, class 2 never predicted, 255 ignored
    label = torch.tensor([[0, 0, 0, 1, 1, 2], [2, 2, 1, 0, 255, 255]])
    pred = torch.tensor([[0, 1, 3, 1, 1, 0], [1, 1, 1, 0, 2, 3]])
    confusion = evaluation.confusion_matrix(pred, label)
    assert confusion.tolist() == [[2, 1, 0, 1], [0, 3, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0]]  # rows: truth
    valid = label != 255
    truth, guess = label[valid], pred[valid]
    result = evaluation.metrics(confusion)
    assert result['pAcc'] == pytest.approx((truth == guess).float().mean().item())  # 5 / 10
    in_truth = [c for c in range(4) if (truth == c).any()]
    accuracy = [((guess == c) & (truth == c)).sum().item() / (truth == c).sum().item() for c in in_truth]
    assert result['mAcc'] == pytest.approx(sum(accuracy) / len(accuracy))  # (2/4 + 3/3 + 0/3) / 3
    iou = [((guess == c) & (truth == c)).sum().item() / ((guess == c) | (truth == c)).sum().item() for c in range(4)]
    assert result['IoU'] == pytest.approx(iou)  # 2/5, 3/6, 0, 0: class 3 predicted only
    assert result['mIoU'] == pytest.approx(sum(iou) / 4)
    frequency = [(truth == c).sum().item() / len(truth) for c in range(4)]
    assert result['fIoU'] == pytest.approx(sum(f * i for f, i in zip(frequency, iou)))
    assert result['mAcc'] != pytest.approx(evaluation.metrics(confusion.T)['mAcc'])  # the case tells rows from columns
    assert result['fIoU'] != pytest.approx(evaluation.metrics(confusion.T)['fIoU'])


def test_checkpoint_path(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'MODEL_DIR', 'runs/a')
    monkeypatch.chdir(tmp_path)
    assert checkpoint.checkpoint_path('final.pth') == os.path.join('runs/a', 'final.pth')
    assert checkpoint.checkpoint_path(os.path.join('b', 'x.pth')) == os.path.join('b', 'x.pth')
    (tmp_path / 'here.pth').touch()
    assert checkpoint.checkpoint_path('here.pth') == 'here.pth'


# ---------------------------------------------------------------- predict

class PositionNet(nn.Module):
    """EMANet's call signature with outputs we know: class 0's logit is the input's first channel, class 1's is
    the input height / 10, so each scale scores differently; the logits are resized to `size` as EMANet does."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, img, size=None):
        self.inputs.append(img.clone())
        logits = torch.cat([img[:, :1], torch.full_like(img[:, :1], img.shape[2] / 10)], dim=1)  # b × 2 × h × w
        return F.interpolate(logits, size=size or img.shape[-2:], mode='bilinear', align_corners=True)


def scores(first_channel, height):
    """Softmax of PositionNet's logits at one input height: b × 2 × H × W."""
    return F.softmax(torch.stack([first_channel, torch.full_like(first_channel, height / 10)], dim=1), dim=1)


def test_predict_single_scale_is_softmax_of_logits(monkeypatch):
    monkeypatch.setattr(settings, 'EVAL_SCALES', (1.0,))
    monkeypatch.setattr(settings, 'EVAL_FLIP', False)
    net, img = PositionNet(), torch.randn(1, 3, 17, 25)
    assert torch.allclose(evaluation.predict(net, img), scores(img[:, 0], 17))
    assert len(net.inputs) == 1 and torch.equal(net.inputs[0], img)


def test_predict_flip_mirrors_input_and_scores_back(monkeypatch):
    monkeypatch.setattr(settings, 'EVAL_SCALES', (1.0,))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    net, img = PositionNet(), torch.randn(2, 3, 17, 25)
    # the mirrored pass sees the mirrored image; its scores flipped back land where the plain pass's are,
    # so the average is the plain softmax (forgetting either flip averages two different maps)
    assert torch.allclose(evaluation.predict(net, img), scores(img[:, 0], 17), atol=1e-6)
    assert torch.equal(net.inputs[1], img.flip(-1))


def test_predict_averages_softmax_of_scales_at_full_resolution(monkeypatch):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_SCALES', (0.5, 1.0, 2.0))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    # a horizontal ramp survives align_corners resizing down and up exactly; a hand rescaling of the input to
    # round(s·(H − 1) / STRIDE)·STRIDE + 1 gives heights 9, 17, 33 and widths 17, 33, 65
    ramp = torch.linspace(-2, 2, 33).expand(1, 17, 33)
    img = torch.stack([ramp[0], torch.zeros(17, 33), torch.zeros(17, 33)])[None]  # 1 × 3 × 17 × 33
    net = PositionNet()
    prediction = evaluation.predict(net, img)
    assert [tuple(x.shape[-2:]) for x in net.inputs] == [(9, 17), (9, 17), (17, 33), (17, 33), (33, 65), (33, 65)]
    expected = sum(scores(ramp, height) for height in (9, 17, 33)) / 3
    assert prediction.shape == (1, 2, 17, 33) and prediction.dtype == torch.float32
    assert torch.allclose(prediction, expected, atol=1e-5)
    assert torch.allclose(prediction.sum(dim=1), torch.ones(1, 17, 33))


# ---------------------------------------------------------------- sliding window

class PixelNet(PositionNet):
    """Logits that depend on each pixel's input alone (its first two channels): windows change nothing."""

    def forward(self, img, size=None):
        self.inputs.append(img.clone())
        return F.interpolate(img[:, :2], size=size or img.shape[-2:], mode='bilinear', align_corners=True)


def coverage(height, width):
    """How many of eval.windows cover each pixel: height × width."""
    count = torch.zeros(height, width, dtype=torch.int64)
    for top, left, bottom, right in evaluation.windows(height, width):
        count[top:bottom, left:right] += 1
    return count


def test_window_positions_and_coverage_by_hand(monkeypatch):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 25)  # 3·8 + 1; a step of 2/3 · 25 ≈ 17, down to 16 = 2·8
    # rows of 57 = 7·8 + 1: [0, 25), [16, 41), [32, 57); columns of 41: [0, 25), [16, 41)
    assert evaluation.windows(57, 41) == [(0, 0, 25, 25), (0, 16, 25, 41), (16, 0, 41, 25), (16, 16, 41, 41),
                                          (32, 0, 57, 25), (32, 16, 57, 41)]
    rows = torch.tensor([1] * 16 + [2] * 9 + [1] * 7 + [2] * 9 + [1] * 16)  # 57
    columns = torch.tensor([1] * 16 + [2] * 9 + [1] * 16)  # 41
    assert torch.equal(coverage(57, 41), rows[:, None] * columns[None])
    monkeypatch.setattr(settings, 'EVAL_WINDOW', (100, 17))  # taller than the image: whole columns
    assert evaluation.windows(57, 41) == [(0, 0, 57, 17), (0, 8, 57, 25), (0, 16, 57, 33), (0, 24, 57, 41)]
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 769)  # Cityscapes at stride 8: every window on the 8-pixel grid
    assert evaluation.windows(1025, 2049) == [(top, left, top + 769, left + 769)
                                              for top in (0, 256) for left in (0, 512, 1024, 1280)]


@pytest.mark.parametrize('window', [1, 5, 16, 17, (9, 40), 64])
def test_windows_cover_every_pixel(monkeypatch, window):
    monkeypatch.setattr(settings, 'EVAL_WINDOW', window)
    for height, width in [(1, 1), (17, 33), (50, 23), (65, 129)]:
        boxes = evaluation.windows(height, width)
        assert len(set(boxes)) == len(boxes) and coverage(height, width).min() >= 1
        assert all(0 <= top < bottom <= height and 0 <= left < right <= width for top, left, bottom, right in boxes)


@pytest.mark.parametrize('window', [0, (5,), 'big'])
def test_bad_window_is_named(monkeypatch, window):
    monkeypatch.setattr(settings, 'EVAL_WINDOW', window)
    with pytest.raises(ValueError, match='EVAL_WINDOW='):
        evaluation.windows(17, 33)


def test_window_covering_the_image_is_whole_image_evaluation(monkeypatch):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_SCALES', (0.5, 1.0, 2.0))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    img = torch.randn(1, 3, 17, 33)
    whole_net = PositionNet()
    whole = evaluation.predict(whole_net, img)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 65)  # the largest scale is 33 × 65
    net = PositionNet()
    assert torch.equal(evaluation.predict(net, img), whole)
    assert [x.shape for x in net.inputs] == [x.shape for x in whole_net.inputs]


@pytest.mark.parametrize('window', [9, 16, (17, 5), (40, 24)])
def test_windows_of_a_per_pixel_net_give_the_whole_image_result(monkeypatch, window):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_SCALES', (0.75, 1.0, 1.5))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    img = torch.randn(2, 3, 17, 33)
    whole = evaluation.predict(PixelNet(), img)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', window)
    net = PixelNet()
    assert torch.allclose(evaluation.predict(net, img), whole, atol=1e-6)
    window_h, window_w = (window, window) if isinstance(window, int) else window
    assert len(net.inputs) > 6 and all(x.shape[2] <= window_h and x.shape[3] <= window_w for x in net.inputs)


def test_windows_composed_with_scales_and_flip(monkeypatch):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_SCALES', (0.5, 1.0, 2.0))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 17)
    ramp = torch.linspace(-2, 2, 33).expand(1, 17, 33)
    img = torch.stack([ramp[0], torch.zeros(17, 33), torch.zeros(17, 33)])[None]  # 1 × 3 × 17 × 33
    net = PositionNet()
    prediction = evaluation.predict(net, img)
    # scale 0.5 (9 × 17) runs whole; scale 1 (17 × 33) in 1 × 3 windows of 17 × 17 and scale 2 (33 × 65) in
    # 3 × 7, each flip too. PositionNet's class 1 logit is its input height / 10: the windows' 17, not 33
    shapes = [tuple(x.shape[-2:]) for x in net.inputs]
    assert shapes == [(9, 17)] * 2 + [(17, 17)] * (2 * 3 + 2 * 21)
    assert [torch.equal(x, img[..., left:left + 17]) for x, left in zip(net.inputs[2:5], (0, 8, 16))] == [True] * 3
    expected = (scores(ramp, 9) + 2 * scores(ramp, 17)) / 3
    assert torch.allclose(prediction, expected, atol=1e-5)


def test_attention_maps_of_emanet(monkeypatch):
    monkeypatch.setattr(settings, 'N_BASES', 6)
    net = network.EMANet(n_classes=21, n_layers=50).eval()
    maps = eval.attention_maps(net, torch.randn(1, 3, 33, 41))
    assert maps.shape == (6, 33, 41)  # fewer bases than ATTENTION_BASES: all of them
    assert maps.amin() >= 0 and maps.amax() <= 1 and torch.allclose(maps.flatten(1).amax(1), torch.ones(6))


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope='module')
def experiment(tmp_path_factory, demo_data):
    """An experiment folder (harness.py's tiny ResNet-50 settings) evaluating the demo data's first 3 val images,
    with a checkpoint models/ckpt.pth of that model."""
    with open(dataset.list_path('val_small', str(demo_data)), 'w') as f:
        f.write(''.join(image_id + '\n' for image_id in VAL_IDS))
    folder = tmp_path_factory.mktemp('eval') / 'exp'
    make_experiment(folder, demo_data, VAL_SPLIT='val_small', MODEL_DIR='models', LOG_DIR='logdir')
    (folder / 'models').mkdir()
    torch.save({'net': tiny_net().state_dict(), 'step': 7}, folder / 'models' / 'ckpt.pth')
    return folder


def read_mask(path):
    image = Image.open(path)
    assert image.mode == 'P' and image.getpalette()[:768] == dataset.voc_palette()
    return image


def test_eval_single_process_and_torchrun_agree(experiment, demo_data):
    single = run_script(experiment, 'eval.py', 'ckpt.pth', '--save-pred', 'preds',
                        '--attention', 'attn', '--attention-images', '2', env=ONE_THREAD)
    assert single.returncode == 0, single.stderr
    assert 'mIoU' in single.stdout and 'tvmonitor' in single.stdout
    with open(experiment / 'logdir' / 'eval_ckpt.json') as f:
        result = json.load(f)
    assert {'mIoU', 'pAcc', 'mAcc', 'fIoU'} <= set(result) and list(result['per_class']) == list(dataset.VOC_CLASSES)
    assert result['n_images'] == 3 and result['step'] == 7 and sum(map(sum, result['confusion'])) > 0
    counted = np.zeros((21, 21), np.int64)  # rows: ground truth, columns: the saved predictions
    for image_id in VAL_IDS:
        label = dataset.read_label(dataset.label_path(image_id, demo_data))
        pred = np.array(Image.open(experiment / 'preds' / f'{image_id}.png'))
        valid = label != settings.IGNORE_LABEL
        np.add.at(counted, (label[valid], pred[valid]), 1)
    assert result['confusion'] == counted.tolist() and not np.array_equal(counted, counted.T)
    for image_id in VAL_IDS:
        with Image.open(dataset.image_path(image_id, demo_data)) as image:
            assert read_mask(experiment / 'preds' / f'{image_id}.png').size == image.size
    width, height = Image.open(dataset.image_path(VAL_IDS[0], demo_data)).size
    assert sorted(os.listdir(experiment / 'attn')) == [f'{image_id}_attention.png' for image_id in VAL_IDS[:2]]
    assert Image.open(experiment / 'attn' / f'{VAL_IDS[0]}_attention.png').size == (3 * width, 3 * height)

    distributed = run_script(experiment, *TWO_PROCESSES, 'eval.py', str(experiment / 'models' / 'ckpt.pth'), '--save-pred', 'ddp_preds',
                             env=ONE_THREAD)
    assert distributed.returncode == 0, distributed.stderr
    with open(experiment / 'logdir' / 'eval_ckpt.json') as f:
        shards = json.load(f)
    assert shards['confusion'] == result['confusion']
    assert {k: shards[k] for k in ('mIoU', 'pAcc', 'mAcc', 'fIoU', 'per_class', 'n_images')} == \
        {k: result[k] for k in ('mIoU', 'pAcc', 'mAcc', 'fIoU', 'per_class', 'n_images')}
    for image_id in VAL_IDS:
        assert np.array_equal(np.array(read_mask(experiment / 'ddp_preds' / f'{image_id}.png')),
                              np.array(read_mask(experiment / 'preds' / f'{image_id}.png')))


def test_segment_own_images(experiment, demo_data, tmp_path):
    source = dataset.image_path(VAL_IDS[0], demo_data)
    own = tmp_path / 'holiday.png'
    Image.open(source).convert('RGBA').save(own)  # any format PIL reads
    done = run_script(experiment, 'eval.py', 'ckpt.pth', '--image', source, '--image', str(own), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    size = Image.open(source).size
    for stem in (VAL_IDS[0], 'holiday'):
        assert read_mask(experiment / 'logdir' / 'predictions' / f'{stem}.png').size == size
    missing = run_script(experiment, 'eval.py', 'ckpt.pth', '--image', source, '--image', 'nowhere.jpg',
                         '--save-pred', str(tmp_path / 'out'), env=ONE_THREAD)
    assert missing.returncode != 0 and 'nowhere.jpg' in missing.stderr and 'Traceback' not in missing.stderr
    assert read_mask(tmp_path / 'out' / f'{VAL_IDS[0]}.png').size == size


def test_another_folders_checkpoint_never_replaces_this_folders_results(experiment):
    """The issue's case: in one folder, eval.py of its own checkpoint, then of another folder's of the same name.
    The other's results go apart (named by their path), stay out of this folder's TensorBoard curve, and
    compare.py shows this folder's own number only."""
    other = experiment.parent / 'other' / 'models'
    other.mkdir(parents=True)
    torch.manual_seed(5)
    torch.save({'net': tiny_net().state_dict(), 'step': 9}, other / 'ckpt.pth')
    own = run_script(experiment, 'eval.py', 'ckpt.pth', env=ONE_THREAD)
    assert own.returncode == 0, own.stderr
    mine = (experiment / 'logdir' / 'eval_ckpt.json').read_text()
    theirs = run_script(experiment, 'eval.py', '../other/models/ckpt.pth', env=ONE_THREAD)
    assert theirs.returncode == 0, theirs.stderr
    assert "../other/models/ckpt.pth is not in MODEL_DIR='models'" in theirs.stderr
    assert (experiment / 'logdir' / 'eval_ckpt.json').read_text() == mine
    with open(experiment / 'logdir' / eval.OTHER_CHECKPOINTS / 'eval_up_other_models_ckpt.json') as f:
        result = json.load(f)
    assert result['step'] == 9 and result['checkpoint'] == '../other/models/ckpt.pth'
    assert result['confusion'] != json.loads(mine)['confusion']  # other weights: the two are told apart
    assert {step for step, _ in read_scalars(experiment / 'logdir')['val/mIoU']} == {7}  # no point at step 9
    table = run_script(experiment.parent, os.path.join(ROOT, 'compare.py'), 'exp', '--csv')
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert 'ckpt mIoU' in header and 'other' not in header and 'up_' not in header
    assert f"{100 * json.loads(mine)['mIoU']:.2f}" in row.split(',')


def test_result_names_tell_checkpoints_from_elsewhere_apart(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings, 'MODEL_DIR', './models')
    monkeypatch.setattr(settings, 'LOG_DIR', 'logs')
    (tmp_path / 'models').mkdir()
    other = os.path.join('logs', eval.OTHER_CHECKPOINTS)
    assert eval.result_path('models/final.pth') == os.path.join('logs', 'eval_final.json')
    assert eval.result_path(str(tmp_path / 'models' / 'step_4.pth')) == os.path.join('logs', 'eval_step_4.json')
    assert eval.result_path('final.pth') == os.path.join(other, 'eval_final.json')  # this folder, not MODEL_DIR
    assert eval.result_path('../exp_a/models/final.pth') == os.path.join(other, 'eval_up_exp_a_models_final.json')
    assert eval.result_path('../exp_b/models/final.pth') == os.path.join(other, 'eval_up_exp_b_models_final.json')
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    assert eval.result_path('../exp_a/models/final.onnx') == \
        os.path.join(other, 'eval_up_exp_a_models_final_flip_onnx.json')
    assert eval.result_path('models/final.onnx') == os.path.join('logs', 'eval_final_flip_onnx.json')


def test_missing_or_mismatched_checkpoint_is_an_error(experiment):
    missing = run_script(experiment, 'eval.py', env=ONE_THREAD)  # MODEL_DIR/final.pth does not exist
    assert missing.returncode != 0 and 'Traceback' not in missing.stderr
    assert os.path.join('models', 'final.pth') in missing.stderr and 'does not exist' in missing.stderr
    assert not (experiment / 'logdir' / 'eval_final.json').exists()
    torch.save({'net': tiny_net(5).state_dict(), 'step': 1},
               experiment / 'models' / 'five.pth')
    other = run_script(experiment, 'eval.py', 'five.pth', env=ONE_THREAD)
    assert other.returncode != 0 and 'Traceback' not in other.stderr
    assert 'fc2.weight has shape (5, 256, 1, 1)' in other.stderr and '(21, 256, 1, 1)' in other.stderr


def test_progress_lines_for_long_work_only(monkeypatch):
    # what the user sees: the records that reach the logger's handlers (its own writes them to stderr), whatever
    # pytest's log capture does; a fixed clock, so a busy machine does not change the seconds per item
    now = time.time()
    monkeypatch.setattr(time, 'time', lambda: now)
    with log_records() as records:
        for done in range(1, 21):
            settings.log_progress('images', done, 20, now)  # quick: silent
        assert not records
        for done in range(1, 21):
            settings.log_progress('images', done, 20, now - 100)  # 100 s in: every tenth and the end
    lines = [record.getMessage() for record in records]
    assert len(lines) == 10 and lines[-1].startswith('images 20/20, 5.000 s each, ETA 00:00:00')
    assert lines[0].startswith('images 2/20, 50.000 s each, ETA 00:15:00')
