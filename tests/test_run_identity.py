"""A run's checkpoints are its folder's: which settings shape a trained network (checkpoint.changed_settings, what
grid.py and compare.py call stale), and train.py's resume refusing a checkpoint that another folder's run wrote
with other settings, except as INIT_FROM."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import checkpoint
import settings
from harness import log_records, messages


def save(name, step, **stored):
    """MODEL_DIR/name of a one-conv network, as save_checkpoint writes it, then with stored's keys replaced (the
    settings' entries one by one) as another folder's run would have written it."""
    net = nn.Conv2d(1, 1, 1)
    checkpoint.save_checkpoint(name, net, torch.optim.SGD(net.parameters(), lr=0.1),
                               torch.amp.GradScaler('cpu', enabled=False), step)
    path = checkpoint.model_file(name)
    ckpt = torch.load(path, weights_only=True)
    ckpt['settings'].update(stored.pop('settings', {}))
    ckpt.update(stored)
    torch.save({key: value for key, value in ckpt.items() if value is not None}, path)
    return path


def resume():
    net = nn.Conv2d(1, 1, 1)
    return checkpoint.resume(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.amp.GradScaler('cpu', enabled=False))


@pytest.fixture
def model_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    return tmp_path


def test_what_shapes_a_trained_network():
    ran = {'LR': 0.009, 'SCALES': (0.5, 1.0), 'ITER_MAX': 100, 'NUM_WORKERS': 4, 'LOG_EVERY': 20, 'IMAGE_EVERY': 500,
           'ITER_SAVE': 2000, 'DEVICE': None, 'MODEL_DIR': './models', 'LOG_DIR': './logdir', 'EVAL_STAGE_NUM': None,
           'EVAL_EVERY': 2000, 'EVAL_IMAGES': None, 'OLD_NAME': 1}
    now = {**ran, 'NUM_WORKERS': 0, 'LOG_EVERY': 1, 'IMAGE_EVERY': 2, 'ITER_SAVE': 10, 'DEVICE': 'cuda:1',
           'MODEL_DIR': '/scratch/m', 'LOG_DIR': '/scratch/l', 'EVAL_STAGE_NUM': 1, 'EVAL_EVERY': 0, 'EVAL_IMAGES': 5,
           'ITER_MAX': 200, 'NEW_NAME': 2, 'LR': np.float64(0.009), 'SCALES': [0.5, 1.0]}
    ran.update(CHANNELS_LAST=True, COMPILE=False, CUDNN_BENCHMARK=True, RECIPE=None)
    now.update(CHANNELS_LAST=False, COMPILE=True, CUDNN_BENCHMARK=False, RECIPE='paper VOC')
    del now['OLD_NAME']
    assert checkpoint.changed_settings(ran, now) == []  # raised ITER_MAX: unfinished; names of one side only
    assert checkpoint.changed_settings(ran, {**now, 'ITER_MAX': 99, 'LR': 0.01, 'SCALES': (1.0,)}) == [
        ('LR', 0.009, 0.01), ('SCALES', (0.5, 1.0), (1.0,)), ('ITER_MAX', 100, 99)]
    assert checkpoint.describe_changes([('LR', 0.009, 0.01), ('EM_NORM', 'l2', 'none')]) == (
        "LR=0.009 (now 0.01), EM_NORM='l2' (now 'none')")


def test_a_checkpoint_holds_the_folder_that_wrote_it(model_dir):
    path = save('latest.pth', 3)
    assert torch.load(path, weights_only=True)['folder'] == os.path.dirname(os.path.realpath(settings.__file__))


def test_resume_refuses_another_folders_checkpoint_of_other_settings(model_dir):
    save('latest.pth', 3, folder='/elsewhere/exp_a', settings={'LR': settings.LR * 2})
    with pytest.raises(checkpoint.CheckpointError, match=(
            rf"latest.pth was written by the run of /elsewhere/exp_a, with other settings \(LR={settings.LR * 2!r} "
            rf"\(now {settings.LR!r}\)\): a folder resumes its own run only. Give this folder a MODEL_DIR of its own; "
            rf"to start from that network, INIT_FROM = '.*latest.pth'")):
        resume()
    net = nn.Conv2d(1, 1, 1)
    checkpoint.init_from(net, checkpoint.model_file('latest.pth'))  # what INIT_FROM does with it: no refusal


def test_a_moved_or_copied_folder_resumes_and_older_checkpoints_as_before(model_dir):
    save('latest.pth', 3, folder='/elsewhere/exp_a', settings={'NUM_WORKERS': 16, 'MODEL_DIR': '/elsewhere/models'})
    with log_records() as records:
        assert resume() == 3
    assert 'written in /elsewhere/exp_a with these settings (a moved or copied folder): resuming it' in messages(
        records)
    save('latest.pth', 4, folder=None, settings={'LR': settings.LR * 2})  # no 'folder': written before the key
    with log_records() as records:
        assert resume() == 4
    assert f'resuming with LR = {settings.LR!r} (the checkpoint ran with {settings.LR * 2!r})' in messages(records)
