"""Every consistency check, field by field: each field a check compares is changed alone, and the error (or the
warning) names that field: a resumed checkpoint's settings against the run's, eval.py --submit's dataset, N_CLASSES
against each dataset's class count, and a label's size and values against its image and N_CLASSES."""
import re
import sys

import numpy as np
import pytest
import torch

import checkpoint
import dataset
import eval as eval_script
import network
import settings
import train

# settings a checkpoint records, each with another value than the run's, one at a time
CHANGED = {'LR': 0.5, 'BATCH_SIZE': 4, 'EM_MOM': 0.5, 'DATA_ROOT': '/elsewhere', 'EVAL_FLIP': True,
           'SCALES': (1.0, 2.0), 'LOSS': 'ohem'}


def test_resume_names_each_setting_that_changed_alone(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    monkeypatch.setattr(settings, 'N_LAYERS', 50)
    monkeypatch.setattr(settings, 'EMA_CHANNELS', 64)
    net = network.EMANet()
    optimizer = torch.optim.SGD(train.param_groups(net), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 3)
    recorded = torch.load(tmp_path / 'latest.pth', weights_only=True)['settings']
    monkeypatch.setattr(settings.logger, 'handlers', [*settings.logger.handlers, caplog.handler])  # it propagates not
    assert checkpoint.resume(net, optimizer, scaler) == 3 and 'resuming with' not in caplog.text  # nothing changed
    for name, value in CHANGED.items():
        with monkeypatch.context() as changed:
            changed.setattr(settings, name, value)
            caplog.clear()
            checkpoint.resume(net, optimizer, scaler)
        log = caplog.text
        assert re.findall(r'resuming with (\w+) = ', log) == [name], (name, log)
        assert f'(the checkpoint ran with {recorded[name]!r})' in log


@pytest.mark.parametrize('name', dataset.DATASETS)
def test_submit_takes_exactly_the_datasets_with_a_server(monkeypatch, tmp_path, name):
    monkeypatch.setattr(settings, 'DATASET', name)
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    monkeypatch.setattr(sys, 'argv', ['eval.py', '--submit', str(tmp_path / 'submit')])
    if name in ('voc', 'cityscapes', 'ade20k'):  # past the check: then there is no final.pth to evaluate
        monkeypatch.setattr(settings, 'N_CLASSES', len(dataset.DATASETS[name]['classes']))
        with pytest.raises(checkpoint.CheckpointError, match='final.pth does not exist'):
            eval_script.main()
    else:
        with pytest.raises(ValueError, match=f"--submit: DATASET={name!r} has no benchmark server"):
            eval_script.main()


# 'folder' has no class list of its own: its count is classes.txt's (tests/test_own_data.py checks that one)
@pytest.mark.parametrize('name', [name for name in dataset.DATASETS if name != 'folder'])
def test_n_classes_must_be_the_datasets_count(monkeypatch, name):
    count = len(dataset.DATASETS[name]['classes'])
    monkeypatch.setattr(settings, 'DATASET', name)
    accepted = {count, count - 1} if dataset.DATASETS[name].get('background_optional') else {count}
    for n_classes in range(min(accepted) - 1, max(accepted) + 2):
        monkeypatch.setattr(settings, 'N_CLASSES', n_classes)
        if n_classes in accepted:
            assert len(dataset.current()['classes']) == n_classes
        else:
            with pytest.raises(ValueError, match=rf"N_CLASSES={n_classes} but DATASET={name!r} has {count} classes"):
                dataset.current()


@pytest.mark.parametrize('shape, value, error', [
    ((40, 50), 20, None), ((40, 50), 255, None),                    # the last class and IGNORE_LABEL
    ((40, 50), 21, r'values \[21\], outside \[0, 21\)'),            # N_CLASSES itself
    ((40, 50), 254, r'values \[254\], outside \[0, 21\)'),          # the value below IGNORE_LABEL
    ((39, 50), 0, '50×39 but its image is 50×40'),                  # the height alone
    ((40, 49), 0, '49×40 but its image is 50×40')])                 # the width alone
def test_label_checks_each_field(monkeypatch, shape, value, error):
    monkeypatch.setattr(settings, 'DATASET', 'voc')
    monkeypatch.setattr(settings, 'N_CLASSES', 21)
    label = np.zeros(shape, np.uint8)
    label[-1, -1] = value
    if error is None:
        dataset.check_label(label, (50, 40), 'x.png')
    else:
        with pytest.raises(ValueError, match='label x.png .*' + error):
            dataset.check_label(label, (50, 40), 'x.png')
