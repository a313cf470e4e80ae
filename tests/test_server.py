"""The test-server path: INIT_FROM (staged training), COCO in VOC's classes and the panoptic port's COCO, the test
splits, and eval.py --submit's files in each benchmark server's format."""
import os

import pytest
import torch

from conftest import make_experiment, run_script

import network
import settings


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
