"""What real experiment folders and machines hold: settings that are no plain literals, stray checkpoints in the
folder, Python files that do not parse, an explicit GPU index, and MODEL_DIR files that are no step_<N>.pth of
the run. Most cases share one 2-step run (module fixture); a case that changes a folder works on a copy."""
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

from harness import SPLITS, block_sample, copy_code, make_experiment, run_script, write_root

import checkpoint
import runtime
import settings

pytestmark = pytest.mark.xdist_group(__name__)  # one worker of pytest -n builds the module fixture once

# what a user may append to settings.py: values computed with numpy, a pathlib.Path, a torch object
NON_LITERAL = """import numpy as np
import torch
from pathlib import Path
LR = 1e-3 * np.sqrt(2)
DATA_ROOT = Path(DATA_ROOT)
MEAN = np.array(MEAN)
EVAL_FLIP = np.bool_(False)
DEVICE = torch.device('cpu')
"""
STRAYS = ('final.pth', 'latest.pth', 'step_4.pth')  # checkpoints lying in the experiment folder itself


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(folder, DATA_ROOT, train.py's result, the stray files' bytes): a 2-step run with NON_LITERAL settings, in a folder
    that also holds an authors'-layout final.pth, another run's latest.pth and a step_4.pth of its own."""
    tmp = tmp_path_factory.mktemp('folders')
    rng = np.random.default_rng(0)
    samples = {f'{index:03d}': block_sample(rng, 37, 50) for index in range(4)}
    root = write_root(tmp / 'root', samples, {split: list(samples) for split in SPLITS})
    # latest.pth and final.pth at step 2, nothing else: every save of a ResNet-50 is 100 MB written and synced
    experiment = make_experiment(tmp / 'exp', root, ITER_MAX=2, ITER_SAVE=20, N_BASES=8)
    with open(experiment / 'settings.py', 'a') as f:
        f.write(NON_LITERAL)
    foreign = {'fc2.bias': torch.zeros(21)}  # weights of no EMANet of this folder: resuming from them fails loudly
    torch.save({'net': foreign, 'step': 999}, experiment / 'final.pth')
    torch.save({'net': foreign, 'step': 7, 'optimizer': {}, 'scaler': {}, 'settings': {}}, experiment / 'latest.pth')
    (experiment / 'step_4.pth').write_bytes(b'not a checkpoint')
    strays = {name: (experiment / name).read_bytes() for name in STRAYS}
    result = run_script(experiment, 'train.py')
    assert result.returncode == 0, result.stderr
    return experiment, root, result, strays


def copy_experiment(source, path):
    """A copy of an experiment folder whose checkpoints are hard links: cheap, and the source stays as it is,
    as saves replace a checkpoint by renaming, never write into it."""
    def link_or_copy(src, dst):
        return os.link(src, dst) if src.endswith('.pth') else shutil.copy2(src, dst)
    return shutil.copytree(source, path, copy_function=link_or_copy)


# ---------------------------------------------------------------- 1. settings that are no plain literals

def test_settings_that_are_no_literals_round_trip_through_checkpoints(trained, tmp_path):
    experiment, root, _, _ = trained
    for name in ('final.pth', 'latest.pth'):
        ckpt = torch.load(experiment / 'models' / name, weights_only=True)
        saved = ckpt['settings']
        assert type(saved['LR']) is float and saved['LR'] == 1e-3 * np.sqrt(2)
        assert saved['DATA_ROOT'] == root
        assert saved['MEAN'] == [0.485, 0.456, 0.406] and saved['EVAL_FLIP'] is False
        assert saved['DEVICE'] == "device(type='cpu')" and saved['CROP_SIZE'] == 33
        assert type(ckpt['optimizer']['param_groups'][0]['lr']) is float  # set from LR
    text = (experiment / 'logdir' / 'settings.txt').read_text()
    assert f'LR = {float(1e-3 * np.sqrt(2))!r}\n' in text and 'MEAN = [0.485, 0.456, 0.406]\n' in text
    assert f'DATA_ROOT = {root!r}\n' in text and 'np.' not in text and 'Path(' not in text

    evaluated = run_script(experiment, 'eval.py')
    assert evaluated.returncode == 0, evaluated.stderr
    assert '(step 2)' in evaluated.stdout

    # compare.py: the step, and a folder that assigns the same values as plain literals differs in none of them
    twin = copy_code(tmp_path / 'twin')
    with open(twin / 'settings.py', 'a') as f:
        f.write(''.join(f'{name} = {value!r}\n' for name, value in saved.items() if name != 'DEVICE'))
        f.write("DEVICE = \"device(type='cpu')\"\n")
    compared = run_script(tmp_path, 'twin/compare.py', '--csv', str(experiment), str(twin))
    assert compared.returncode == 0, compared.stderr
    header, row, twin_row = compared.stdout.splitlines()
    # no setting differs; the recipe the run recorded is the one its saved settings give
    assert header == 'experiment,recipe,step,final mIoU,final pAcc,best val mIoU,best val step,notes', header
    assert row.startswith('exp,"paper VOC, 10 differ",2,'), row
    assert twin_row.startswith('twin,"paper VOC, 10 differ",'), twin_row


def tiny_state():
    net = torch.nn.Conv2d(3, 2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    return net, optimizer, torch.amp.GradScaler('cuda', enabled=False)


@pytest.mark.parametrize('content, message, deletion_advised', [
    # written by code that stored settings as they were: numpy objects need arbitrary unpickling
    (lambda net: {'net': net.state_dict(), 'step': 3, 'settings': {'LR': np.float64(0.1)}},
     'latest.pth is not a plain weights file', False),
    # the authors' released layout: weights but no optimizer state
    (lambda net: {'net': net.state_dict(), 'step': 3}, 'latest.pth holds weights but no optimizer state', False),
    # weights of another network: the only case where the folder holds another run
    (lambda net: {'net': {'weight': torch.zeros(5, 3, 1, 1)}, 'step': 3, 'optimizer': {}, 'scaler': {}},
     'key weight has shape (5, 3, 1, 1)', True),
])
def test_resume_advises_removing_a_run_only_when_its_weights_do_not_fit(monkeypatch, tmp_path, content, message,
                                                                       deletion_advised):
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    net, optimizer, scaler = tiny_state()
    torch.save(content(net), tmp_path / 'latest.pth')
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.resume(net, optimizer, scaler)
    assert message in str(error.value)
    assert ('clean.sh' in str(error.value)) == deletion_advised
    assert os.path.exists(tmp_path / 'latest.pth')


def test_plain_values():
    class Knob(int):
        pass
    assert checkpoint.plain({'A': (np.float32(0.5), [np.int64(3), Knob(2)]), 'B': np.arange(3).reshape(1, 3),
                             'C': pathlib.Path('a/b'), 'D': np.bool_(True), 'E': None,
                             'F': torch.float16}) == \
        {'A': (0.5, [3, 2]), 'B': [[0, 1, 2]], 'C': 'a/b', 'D': True, 'E': None, 'F': 'torch.float16'}


# ---------------------------------------------------------------- 2. checkpoint names resolve in MODEL_DIR

def test_stray_checkpoints_in_the_folder_are_neither_resumed_nor_written(trained, monkeypatch):
    experiment, _, result, strays = trained
    assert 'steps 1..2' in result.stderr and 'resumed' not in result.stderr  # a fresh run
    assert {name: (experiment / name).read_bytes() for name in STRAYS} == strays  # untouched
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['step'] == 2
    # on the command line: a bare name is MODEL_DIR's first, else the folder's; a folder part makes it a path
    monkeypatch.chdir(experiment)
    monkeypatch.setattr(settings, 'MODEL_DIR', './models')
    assert checkpoint.checkpoint_path('final.pth') == os.path.join('./models', 'final.pth')
    assert checkpoint.checkpoint_path('step_4.pth') == 'step_4.pth'
    assert checkpoint.checkpoint_path('./final.pth') == './final.pth'
    assert checkpoint.model_file('step_4.pth') == os.path.join('./models', 'step_4.pth')
    stray = run_script(experiment, 'eval.py', './final.pth')
    assert stray.returncode != 0 and './final.pth: missing key' in stray.stderr, stray.stderr
    assert 'Traceback' not in stray.stderr


# ---------------------------------------------------------------- 5. Python files that do not parse

def test_python_files_that_do_not_parse_are_skipped_with_a_warning(trained, tmp_path):
    experiment = copy_experiment(trained[0], tmp_path / 'exp')
    broken = {'scratch.py': b'def half_written(:\n', 'old.py': b'print "python 2"\n',
              'junk.py': b'\x00\xff\xfe\x89PNG', 'latin.py': 'name = "caf\xe9"\n'.encode('latin-1')}
    for name, content in broken.items():
        (experiment / name).write_bytes(content)
    os.symlink(tmp_path / 'gone', experiment / 'gone.py')  # a dangling link
    with open(experiment / 'settings.py', 'a') as f:
        f.write('ITER_MAXX = 3\n')  # the check goes on with the other files
    evaluated = run_script(experiment, 'eval.py')  # warns and evaluates
    assert evaluated.returncode == 0 and '(step 2)' in evaluated.stdout, evaluated.stderr
    stopped = run_script(experiment, 'train.py')  # stops for the misspelling alone
    assert stopped.returncode != 0 and 'settings.py assigns names that no code reads' in stopped.stderr
    for result in (evaluated, stopped):
        assert 'ITER_MAXX is not a setting; did you mean ITER_MAX?' in result.stderr
        for name in [*broken, 'gone.py']:
            assert f'{name} is not readable Python' in result.stderr, (name, result.stderr)
        assert 'Traceback' not in result.stderr


# ---------------------------------------------------------------- 6. an explicit GPU index

@pytest.mark.parametrize('name, local_rank, world, available, count, expected', [
    (None, 0, 1, False, 0, 'cpu'),
    (None, 1, 2, True, 2, 'cuda:1'),
    ('cuda', 1, 2, True, 2, 'cuda:1'),  # each torchrun process its LOCAL_RANK
    ('cuda:1', 0, 1, True, 2, 'cuda:1'),  # honoured in one process
    (torch.device('cuda', 1), 0, 1, True, 2, 'cuda:1'),
    ('cpu', 3, 4, True, 4, 'cpu'),
    ('cuda:1', 0, 2, True, 2, "DEVICE='cuda:1' names one GPU, but under torchrun each of the 2 processes takes "
                              "cuda:LOCAL_RANK; set DEVICE = 'cuda' (or None) and choose the GPUs with CUDA_VISIBLE"),
    ('cuda:1', 0, 1, False, 0, "DEVICE='cuda:1', but this machine has no CUDA device"),
    ('cuda', 0, 1, False, 0, "DEVICE='cuda', but this machine has no CUDA device"),
    ('cuda:2', 0, 1, True, 2, "DEVICE='cuda:2' asks for cuda:2, but this process sees 2 CUDA device(s)"),
    ('cuda', 2, 3, True, 2, "DEVICE='cuda' asks for cuda:2 (LOCAL_RANK=2), but this process sees 2"),
    ('gpu', 0, 1, True, 1, "DEVICE='gpu' is no device"),
])
def test_choose_device(name, local_rank, world, available, count, expected):
    if expected.startswith(('cpu', 'cuda')):
        assert runtime.choose_device(name, local_rank, world, available, count) == torch.device(expected)
    else:
        with pytest.raises(ValueError) as error:
            runtime.choose_device(name, local_rank, world, available, count)
        assert expected in str(error.value)


def test_explicit_gpu_index_is_honoured_or_refused_never_replaced(tmp_path):
    experiment = make_experiment(tmp_path / 'exp', tmp_path / 'no data', DEVICE='cuda:1')
    result = run_script(experiment, 'train.py')
    assert result.returncode != 0 and "DEVICE='cuda:1'" in result.stderr, result.stderr
    assert 'Traceback' not in result.stderr


# ---------------------------------------------------------------- 7. MODEL_DIR files that are no step_<N>.pth

OTHER_NAMES = ('step_20000_best.pth', 'step_final.pth', 'step_-1.pth', 'step_0010.pth', 'step_.pth', 'step_3.pth.bak',
               'step_\u0663.pth')  # the last: an Arabic-Indic 3, which int() reads


def test_step_files_follow_the_runs_own_naming_rule(tmp_path):
    for name in (*OTHER_NAMES, 'step_2.pth', 'step_10.pth', 'step_9.pth'):
        (tmp_path / name).write_bytes(b'')
    assert checkpoint.step_files(str(tmp_path)) == {n: os.path.join(str(tmp_path), f'step_{n}.pth') for n in (2, 9, 10)}
    assert checkpoint.step_files(str(tmp_path / 'none yet')) == {}


def test_resume_and_clean_ignore_other_step_names_and_unchanged_settings(trained, tmp_path):
    """Files of step_*.pth names that the run does not write are neither resumed from nor removed; resuming with
    the NON_LITERAL settings warns only about the setting that changed."""
    experiment = copy_experiment(trained[0], tmp_path / 'exp')
    models = experiment / 'models'
    os.rename(models / 'latest.pth', models / 'step_2.pth')
    os.remove(models / 'final.pth')  # the run falls back on its newest step_<N>.pth
    for name in OTHER_NAMES:
        (models / name).write_bytes(b'a kept copy')
    with open(experiment / 'settings.py', 'a') as f:
        f.write('ITER_MAX = 3\n')
    result = run_script(experiment, 'train.py')
    assert result.returncode == 0, result.stderr
    assert 'resumed from ./models/step_2.pth at step 2' in result.stderr
    assert not any(name in result.stderr for name in OTHER_NAMES), result.stderr
    warnings = [line for line in result.stderr.splitlines() if 'resuming with' in line]
    assert len(warnings) == 1 and 'resuming with ITER_MAX = 3 (the checkpoint ran with 2)' in warnings[0], warnings
    assert torch.load(models / 'final.pth', weights_only=True)['step'] == 3
    cleaned = subprocess.run(['bash', 'clean.sh'], cwd=experiment, capture_output=True, text=True)
    assert cleaned.returncode == 0, cleaned.stderr
    assert sorted(os.listdir(models)) == sorted([*OTHER_NAMES, 'train.lock'])
