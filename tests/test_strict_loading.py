"""Every path that loads weights is strict: eval.py, export.py, a resumed run, INIT_FROM and PRETRAINED refuse a
file that lacks a weight, a BatchNorm buffer or the bases emau.mu, or that holds an extra key, with the error type
meant for it and a message that names the key and the file. One valid checkpoint (EMANet-50) is built once; the
broken files are copies of it less (or plus) one key. The functions are called in-process for every kind of
breakage; the scripts (eval.py, export.py, train.py) run in-process through main() for every kind, and a few as a
user runs them, to see the message reach the terminal without a traceback."""
import os
import re
import sys

import pytest
import torch

import checkpoint
import eval as eval_script
import export
import network
import settings
import train
from harness import TINY, make_experiment, run_script, tiny_net

pytestmark = pytest.mark.xdist_group(__name__)  # one worker of pytest -n builds the module fixture once

# what is taken out of (or put into) a whole-network checkpoint, and the key the error must name
BROKEN = {'weight': 'extractor.7.2.conv3.weight', 'bn buffer': 'fc0.bn.running_mean', 'bases': 'emau.mu',
          'extra key': 'emau.extra'}
# the same for an ImageNet backbone file in the deep-stem layout (it has no bases)
BROKEN_BACKBONE = {'weight': 'layer4.2.conv3.weight', 'bn buffer': 'bn1.running_mean', 'extra key': 'layer4.3.conv1.weight'}
# the deep-stem file's names of our extractor's modules, as PyTorch-Encoding and timm name them
BACKBONE_NAMES = {'0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2', '6': 'layer3', '7': 'layer4'}


def broken_state(state, key):
    state = dict(state)
    if key in state:
        del state[key]
    else:
        state[key] = torch.ones(1)
    return state


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """{kind: broken whole checkpoint}, {kind: broken backbone file}, and the valid files they derive from."""
    folder = tmp_path_factory.mktemp('strict')
    saved = settings.MODEL_DIR
    settings.MODEL_DIR = str(folder)
    try:
        torch.manual_seed(0)
        net = tiny_net()
        optimizer = torch.optim.SGD(train.param_groups(net), lr=1e-3, momentum=0.9)
        checkpoint.save_checkpoint('valid.pth', net, optimizer, torch.amp.GradScaler('cpu', enabled=False), 3)
    finally:
        settings.MODEL_DIR = saved
    valid = torch.load(folder / 'valid.pth', weights_only=True)
    whole = {}
    for kind, key in BROKEN.items():
        whole[kind] = str(folder / f'{kind.replace(" ", "_")}.pth')
        torch.save({**valid, 'net': broken_state(valid['net'], key)}, whole[kind])
    backbone = {BACKBONE_NAMES[k.split('.', 1)[0]] + '.' + k.split('.', 1)[1]: v
                for k, v in net.extractor.state_dict().items()}
    backbone.update({'fc.weight': torch.zeros(1000, 2048), 'fc.bias': torch.zeros(1000)})  # ImageNet's classifier
    torch.save(backbone, folder / 'resnet50s.pth')
    backbones = {}
    for kind, key in BROKEN_BACKBONE.items():
        backbones[kind] = str(folder / f'resnet50s_{kind.replace(" ", "_")}.pth')
        torch.save(broken_state(backbone, key), backbones[kind])
    return {'whole': whole, 'backbone': backbones, 'valid': str(folder / 'valid.pth'),
            'valid_backbone': str(folder / 'resnet50s.pth')}


def assert_refused(excinfo, error_type, key, path):
    """The error is exactly error_type (not a subclass, not another crash) and names key and path."""
    assert type(excinfo.value) is error_type, repr(excinfo.value)
    message = str(excinfo.value)
    assert re.search(rf'\b{re.escape(key)}\b', message) and path in message, message


@pytest.fixture
def tiny(monkeypatch, tmp_path, root):
    """This process's settings as a tiny experiment's on conftest's `root`, its folders in tmp_path."""
    for name, value in {**TINY, 'DATA_ROOT': root, 'MODEL_DIR': str(tmp_path / 'models'),
                        'LOG_DIR': str(tmp_path / 'logdir')}.items():
        monkeypatch.setattr(settings, name, value)
    os.makedirs(tmp_path / 'models')


def test_the_valid_files_load(files, tiny):
    """The files broken below differ from these by one key alone: these load on every path."""
    net = network.EMANet()
    checkpoint.init_from(net, files['valid'])
    checkpoint.load_pretrained(net, files['valid_backbone'])
    net = network.EMANet()
    optimizer = torch.optim.SGD(train.param_groups(net), lr=1e-3, momentum=0.9)
    os.link(files['valid'], checkpoint.model_file('latest.pth'))
    assert checkpoint.resume(net, optimizer, torch.amp.GradScaler('cpu', enabled=False)) == 3


# ---------------------------------------------------------------- the functions

@pytest.mark.parametrize('kind', BROKEN)
def test_load_checkpoint_and_init_from_refuse(files, tiny, kind):
    path = files['whole'][kind]
    with pytest.raises(checkpoint.CheckpointError) as excinfo:
        checkpoint.load_checkpoint(network.EMANet(), path)
    assert_refused(excinfo, checkpoint.MismatchError, BROKEN[kind], path)
    with pytest.raises(checkpoint.CheckpointError) as excinfo:
        checkpoint.init_from(network.EMANet(), path)
    assert_refused(excinfo, checkpoint.MismatchError, BROKEN[kind], path)


@pytest.mark.parametrize('kind', BROKEN)
def test_resume_refuses_and_says_the_folder_holds_another_run(files, tiny, kind):
    latest = checkpoint.model_file('latest.pth')
    os.link(files['whole'][kind], latest)
    net = network.EMANet()
    optimizer = torch.optim.SGD(train.param_groups(net), lr=1e-3, momentum=0.9)
    with pytest.raises(checkpoint.CheckpointError) as excinfo:
        checkpoint.resume(net, optimizer, torch.amp.GradScaler('cpu', enabled=False))
    assert_refused(excinfo, checkpoint.CheckpointError, BROKEN[kind], latest)
    assert 'holds a run with other settings' in str(excinfo.value)


@pytest.mark.parametrize('kind', BROKEN_BACKBONE)
def test_load_pretrained_refuses_naming_the_files_own_key(files, tiny, kind):
    path = files['backbone'][kind]
    with pytest.raises(checkpoint.CheckpointError) as excinfo:
        checkpoint.load_pretrained(network.EMANet(), path)
    assert_refused(excinfo, checkpoint.MismatchError, BROKEN_BACKBONE[kind], path)


# ---------------------------------------------------------------- the scripts, in-process

@pytest.mark.parametrize('script', ['eval', 'export'])
@pytest.mark.parametrize('kind', BROKEN)
def test_eval_and_export_refuse(files, tiny, monkeypatch, script, kind):
    path = files['whole'][kind]
    monkeypatch.setattr(sys, 'argv', [f'{script}.py', path])
    with pytest.raises(checkpoint.CheckpointError) as excinfo:
        (eval_script if script == 'eval' else export).main()
    assert_refused(excinfo, checkpoint.MismatchError, BROKEN[kind], path)


@pytest.mark.parametrize('path, kind', [('INIT_FROM', 'bases'), ('resume', 'bn buffer'), ('PRETRAINED', 'weight'),
                                        ('INIT_FROM', 'extra key')])
def test_train_refuses_to_resume_or_start_from(files, tiny, monkeypatch, path, kind):
    """train.py's three paths (each kind of breakage is refused on each by the functions above)."""
    if path == 'PRETRAINED':
        monkeypatch.setattr(settings, 'PRETRAINED', files['backbone'][kind])
        error, key, named = checkpoint.MismatchError, BROKEN_BACKBONE[kind], files['backbone'][kind]
    elif path == 'INIT_FROM':
        monkeypatch.setattr(settings, 'INIT_FROM', files['whole'][kind])
        error, key, named = checkpoint.MismatchError, BROKEN[kind], files['whole'][kind]
    else:
        named = checkpoint.model_file('latest.pth')
        os.link(files['whole'][kind], named)
        error, key = checkpoint.CheckpointError, BROKEN[kind]
    with pytest.raises(checkpoint.CheckpointError) as excinfo:
        train.main()
    assert_refused(excinfo, error, key, named)


# ---------------------------------------------------------------- the scripts, as a user runs them

@pytest.mark.parametrize('script, kind, setting', [
    ('eval.py', 'weight', None), ('export.py', 'extra key', None), ('train.py', 'bn buffer', 'PRETRAINED')])
def test_scripts_say_which_key_of_which_file(files, tmp_path, root, script, kind, setting):
    """The message reaches the user: exit status 1, the key and the file named, no traceback."""
    experiment = make_experiment(tmp_path / 'exp', root, **({setting: '<file>'} if setting else {}))
    if setting == 'PRETRAINED':
        path, key = files['backbone'][kind], BROKEN_BACKBONE[kind]
    else:
        path, key = files['whole'][kind], BROKEN[kind]
    args = (script,)
    if setting:
        with open(experiment / 'settings.py', 'a') as f:
            f.write(f'{setting} = {path!r}\n')
    elif script == 'train.py':  # a run resuming from its folder's latest.pth
        os.makedirs(experiment / 'models')
        os.link(path, experiment / 'models' / 'latest.pth')
        path = './models/latest.pth'
    else:
        args = (script, path)
    done = run_script(experiment, *args)
    assert done.returncode == 1, done.stderr
    assert key in done.stderr and path in done.stderr, done.stderr
    assert 'Traceback' not in done.stderr
