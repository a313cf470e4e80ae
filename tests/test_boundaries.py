"""Every rule with a boundary, tested at it on both sides: when an evaluation is due (EVAL_EVERY dividing ITER_MAX or
not, a step equal to ITER_MAX), the learning rate at ITER_MAX, windows that fit exactly or by one pixel less, and
which evaluation makes best.pth (the first of equal mIoUs stays); and validation, called as train.py calls it,
leaving the weights and the BatchNorm buffers alone and the net in training mode."""
import copy
import os

import numpy as np
import pytest
import torch

import checkpoint
import evaluation
import network
import settings
import train
from harness import TINY


class Scalars:
    """A SummaryWriter's add_scalar, kept."""
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass


@pytest.mark.parametrize('iter_max, eval_every, due', [
    (6, 3, [3, 6]),      # EVAL_EVERY divides ITER_MAX: the end is one of its multiples, evaluated once
    (7, 3, [3, 6, 7]),   # it does not: the end as well
    (5, 5, [5]),         # EVAL_EVERY = ITER_MAX
    (4, 5, [4]),         # EVAL_EVERY > ITER_MAX: the end alone
    (4, 1, [1, 2, 3, 4]),
    (4, 0, [])])         # off
def test_evaluation_due(monkeypatch, iter_max, eval_every, due):
    monkeypatch.setattr(settings, 'ITER_MAX', iter_max)
    monkeypatch.setattr(settings, 'EVAL_EVERY', eval_every)
    assert [step for step in range(1, iter_max + 1) if train.evaluation_due(step, 0)] == due
    # a step that val.jsonl holds is not evaluated again; the one after it is, when due
    assert [step for step in range(1, iter_max + 1) if train.evaluation_due(step, 3)] == [s for s in due if s > 3]
    if eval_every:  # a finished run (start = ITER_MAX) killed during its last evaluation evaluates it
        assert train.evaluation_due(iter_max, iter_max - 1) and not train.evaluation_due(iter_max, iter_max)


@pytest.mark.parametrize('iter_save, step_files, latest', [
    (9, [9, 18], list(range(1, 21))),           # ITER_SAVE // 10 = 0: latest.pth at every step
    (10, [10, 20], list(range(1, 21))),         # = 1
    (19, [19], list(range(1, 21))),             # = 1 still
    (20, [20], list(range(2, 21, 2))),          # = 2
    (30, [], list(range(3, 19, 3)) + [20]),     # = 3, and ITER_MAX (20) always, though 20 % 3 != 0
])
def test_checkpoint_cadence_at_the_boundaries(monkeypatch, iter_save, step_files, latest):
    monkeypatch.setattr(settings, 'ITER_MAX', 20)
    monkeypatch.setattr(settings, 'ITER_SAVE', iter_save)
    due = {step: train.saves_due(step) for step in range(1, 21)}
    assert [step for step, (kept, _) in due.items() if kept] == step_files
    assert [step for step, (_, latest_due) in due.items() if latest_due] == latest


def test_poly_lr_at_the_boundaries(monkeypatch):
    for name, value in dict(LR=0.01, ITER_MAX=100, POLY_POWER=0.9, LR_DECAY=10).items():
        monkeypatch.setattr(settings, name, value)
    assert train.poly_lr(9) == 0.01                                  # the last step before the first update
    assert train.poly_lr(10) == pytest.approx(0.01 * 0.9 ** 0.9)     # the update step itself
    assert train.poly_lr(99) == pytest.approx(0.01 * 0.1 ** 0.9)
    assert train.poly_lr(100) == 0.0                                 # step ITER_MAX
    monkeypatch.setattr(settings, 'LR_DECAY', 1)
    assert train.poly_lr(99) == pytest.approx(0.01 * 0.01 ** 0.9) and train.poly_lr(100) == 0.0


@pytest.mark.parametrize('size, window, starts', [
    (65, 65, [0]),            # a window that fits exactly: one
    (64, 65, [0]),
    (66, 65, [0, 1]),         # one pixel more: a second window, flush with the border
    (97, 49, [0, 32, 48]),    # step 2/3 of 49 = 33 → 32, a multiple of the stride 8; the last flush
    (81, 49, [0, 32]),        # 32 + 49 = 81: the second window ends exactly at the border, no third
    (82, 49, [0, 32, 33])])
def test_window_starts_at_the_boundaries(monkeypatch, size, window, starts):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_STRIDE', None)
    assert evaluation.window_starts(size, window) == starts


def test_windows_of_an_image_the_window_fits(monkeypatch):
    monkeypatch.setattr(settings, 'STRIDE', 8)
    monkeypatch.setattr(settings, 'EVAL_STRIDE', None)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 65)
    assert evaluation.windows(65, 65) == [(0, 0, 65, 65)]
    assert evaluation.windows(65, 66) == [(0, 0, 65, 65), (0, 1, 65, 66)]
    monkeypatch.setattr(settings, 'EVAL_WINDOW', (33, 65))
    assert evaluation.windows(65, 65) == [(0, 0, 33, 65), (16, 0, 49, 65), (32, 0, 65, 65)]


# ---------------------------------------------------------------- validation as train.py runs it

@pytest.fixture
def tiny(monkeypatch, tmp_path, root):
    """A tiny EMANet-50 on conftest's `root`: 6 images, its folders in tmp_path."""
    for name, value in {**TINY, 'DATA_ROOT': root, 'MODEL_DIR': str(tmp_path / 'models'),
                        'LOG_DIR': str(tmp_path / 'logdir'), 'VAL_SPLIT': 'val', 'EVAL_IMAGES': 1}.items():
        monkeypatch.setattr(settings, name, value)
    os.makedirs(tmp_path / 'models')
    os.makedirs(tmp_path / 'logdir')
    net = network.EMANet()
    net.train()
    return net, torch.optim.SGD(train.param_groups(net), lr=1e-3, momentum=0.9), \
        torch.amp.GradScaler('cpu', enabled=False)


def test_the_first_of_equal_evaluations_stays_best(tiny, monkeypatch):
    """best.pth is replaced only by a strictly better mIoU: equal results keep the first one's file."""
    net, optimizer, scaler = tiny
    def confusion(block):  # 21 × 21, classes 0 and 1 alone
        matrix = np.zeros((21, 21), np.int64)
        matrix[:2, :2] = block
        return matrix
    confusions = iter([confusion([[3, 1], [1, 3]]), confusion([[3, 1], [1, 3]]),  # mIoU 0.6, then the same
                       confusion([[4, 0], [1, 3]])])                              # then 0.775: better
    monkeypatch.setattr(evaluation, 'inference_net', lambda net, device: net)
    monkeypatch.setattr(evaluation, 'evaluate', lambda *args, **kwargs: (next(confusions), 2))
    best = -float('inf')
    steps = []
    for step in (2, 4, 6):
        best = train.validate(net, optimizer, scaler, torch.device('cpu'), 0, 1, step, Scalars(), best, None)
        steps.append(torch.load(checkpoint.model_file('best.pth'), weights_only=True)['step'])
    assert steps == [2, 2, 6]
    assert best == pytest.approx(0.775)


def test_validation_leaves_weights_and_bn_buffers_alone_in_train_and_eval_mode(tiny):
    """The real validation (1 image, the frozen CPU graph) of a net in training mode: afterwards the net is in
    training mode again, every parameter and buffer (BN statistics, the bases) is what it was, and the net computes
    what an untouched copy computes, in training mode (same dropout draws; BN statistics updated alike) and in
    eval mode."""
    net, optimizer, scaler = tiny
    untouched = copy.deepcopy(net)
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    train.validate(net, optimizer, scaler, torch.device('cpu'), 0, 1, 1, Scalars(), -float('inf'), None)
    assert net.training and all(module.training for module in net.modules())
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    img = torch.randn(2, 3, 33, 33, generator=torch.Generator().manual_seed(3))
    label = torch.randint(0, 5, (2, 33, 33), generator=torch.Generator().manual_seed(4))
    outputs = []
    for model in (net, untouched):
        torch.manual_seed(5)
        loss, mu = model(img, label)
        outputs.append((loss.detach(), mu, {name: t.clone() for name, t in model.state_dict().items()}))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    for name, tensor in outputs[0][2].items():  # the BN statistics that training-mode forward updated
        assert torch.equal(tensor, outputs[1][2][name]), name
    with torch.no_grad():
        assert torch.equal(net.eval()(img), untouched.eval()(img))
