"""grid.py as a user drives it: make (names, the clean copy, refusals before anything is written), run over
folders of which one fails and one was interrupted (resumed to the weights of an uninterrupted run), skipped
when done, a folder whose settings changed, a deleted result, two runs at once, Ctrl-C, kill -9, failures' reasons
(torchrun's too), the same through submitit's local executor with a real time-limit signal, status; eval.py --set
against settings.py; compare.py --plot's data and drawn lines. One module fixture trains the folders that the
tests read."""
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from harness import (HANG_GUARD, PAUSE_AT, ROOT, SPLITS, ForkedScript, block_sample, copy_code, make_experiment,
                     paused_in, process_state, processes_in, run_script, stop, wait_pending, write_root)

import compare
import grid
import settings

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixture once

# --each blocks: A trains uninterrupted; B has A's settings and starts from A's step_2.pth as latest.pth (a run
# killed after step 2); C and G fail (a crop smaller than the output stride); D is never run; E is stopped by
# Ctrl-C; F (through submitit) and K (grid.py killed with -9) have A's settings and are interrupted mid-training
BLOCKS = """# the folders of the tests
CROP_SIZE = 33

CROP_SIZE = 33
SEED = 66

CROP_SIZE = 4

CROP_SIZE = 33
SEED = 1

# stopped with Ctrl-C long before its end
CROP_SIZE = 33
ITER_MAX = 1000
ITER_SAVE = 1000

CROP_SIZE = 33
LR = 0.001

CROP_SIZE = 5

# a block of comments only is no folder

CROP_SIZE = 33
IMAGE_EVERY = 2


"""
A, B, C, D, E, F, G, K = ('g_CROP_SIZE33', 'g_CROP_SIZE33_SEED66', 'g_CROP_SIZE4', 'g_CROP_SIZE33_SEED1',
                          'g_CROP_SIZE33_ITER_MAX1000_ITER_SAVE1000', 'g_CROP_SIZE33_LR0.001', 'g_CROP_SIZE5',
                          'g_CROP_SIZE33_IMAGE_EVERY2')
SPEC = 'EVAL_STAGE_NUM=1;EVAL_STRIDE=16'  # one more protocol, named os16_stages1: a net built otherwise


def grid_py(tmp, *args, **kwargs):
    return run_script(tmp, str(tmp / 'base' / 'grid.py'), *args, **kwargs)


def background_grid_py(tmp, *args, pause_at=None):
    """(grid.py started in the background, in a session of its own; the file its output goes to). With pause_at,
    the script of its runs that writes that text stops there (harness.PAUSE_AT)."""
    path = tmp / f'grid_py_{time.monotonic_ns()}.log'
    with open(path, 'w') as log:
        return ForkedScript([sys.executable, str(tmp / 'base' / 'grid.py'), *args], cwd=tmp, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **({PAUSE_AT: pause_at} if pause_at else {})}), path


def end_all(folder, *processes):
    """SIGKILL for what a failed test leaves behind: the commands it started (each in a session of its own) with
    their process groups, and the runs in folder, in groups of their own (a paused one would wait forever)."""
    for process in processes:
        stop(process)
    for pid in processes_in(folder):
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            os.kill(int(pid), signal.SIGKILL)


def wait_until_gone(folder):
    """Waits until no process works in folder any more."""
    deadline = time.time() + HANG_GUARD
    while processes_in(folder):
        assert time.time() < deadline, processes_in(folder)
        time.sleep(0.05)


def wait_for_text(path, text, process):
    deadline = time.time() + HANG_GUARD
    while not (path.exists() and text in path.read_text()):
        assert time.time() < deadline and process.poll() is None, process.args
        time.sleep(0.05)


def weights(folder, name='final.pth'):
    return torch.load(folder / 'models' / name, weights_only=True)['net']


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def copy_folder(source, target):
    """A copy of an experiment folder: its checkpoints hard links (nothing writes into a checkpoint: a save replaces
    it), its other files its own, to edit."""
    shutil.copytree(source, target, copy_function=lambda s, d: (os.link if s.endswith('.pth') else shutil.copy2)(s, d))
    return target


def evaluations(folder):
    """The ==== lines of folder's grid_eval.log: one per eval.py run."""
    path = folder / 'grid_eval.log'
    return [line for line in path.read_text().splitlines() if line.startswith('==== ')] if path.exists() else []


@pytest.fixture(scope='module')
def ran(tmp_path_factory):
    """(tmp, the results of the three `grid.py run`s): A trained, then A B C run (A skipped, B resumed, C fails),
    then A B again (both skipped)."""
    tmp = tmp_path_factory.mktemp('grid')
    rng = np.random.default_rng(0)
    samples = {f'{index:03d}': block_sample(rng, 37, 50) for index in range(4)}
    root = write_root(tmp / 'root', samples, {split: list(samples) for split in SPLITS})
    make_experiment(tmp / 'base', root, EMA_CHANNELS=16, N_BASES=4, ITER_SAVE=2)  # A's step_2.pth starts B
    (tmp / 'blocks.txt').write_text(BLOCKS)
    made = grid_py(tmp, 'make', 'g', '--each', 'blocks.txt')
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == [A, B, C, D, E, F, G, K]
    first = grid_py(tmp, 'run', A, '--eval', SPEC)
    assert first.returncode == 0, first.stderr
    shutil.copy(tmp / A / 'models' / 'step_2.pth', tmp / B / 'models' / 'latest.pth')  # killed after step 2
    second = grid_py(tmp, 'run', A, B, C, '--eval', SPEC)
    third = grid_py(tmp, 'run', A, B, '--eval', SPEC)
    return tmp, first, second, third


def status_of(tmp, folder):
    return json.loads((tmp / folder / 'grid_status.json').read_text())


def status_lines(tmp, *folders):
    """{folder: (state, step, ETA)} of `grid.py status`, cut at its header's columns."""
    result = grid_py(tmp, 'status', *folders)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    cuts = [header.index(name) for name in ('state', 'step', 'ETA', 'best val mIoU')]
    return {line[:cuts[0]].strip(): tuple(line[a:b].strip() for a, b in zip(cuts, cuts[1:])) for line in lines}


# ---------------------------------------------------------------- make

def test_make_copies_code_and_docs_only_and_appends_the_settings(tmp_path):
    base = copy_code(tmp_path / 'base')
    for name in ('README.md', 'requirements.txt', '.gitignore'):
        shutil.copy(os.path.join(ROOT, name), base)
    os.makedirs(base / 'models')
    shutil.copy(os.path.join(ROOT, 'models', 'README.md'), base / 'models')
    planted = ['models/final.pth', 'models/resnet50s.pth', 'logdir/eval_final.json', 'data/VOC2012/a.jpg',
               'exp_old/settings.py', '__pycache__/settings.cpython-312.pyc', 'final.pth', 'grid_train.log',
               'grid_status.json', 'grid.lock']
    for path in planted:
        os.makedirs((base / path).parent, exist_ok=True)
        (base / path).write_bytes(b'x')
    made = run_script(tmp_path, 'base/grid.py', 'make', 'abl/k', 'N_BASES=4,8', "EM_NORM='l2','none'",
                      'SCALES=(1.0,),(0.5,1.0)')
    assert made.returncode == 0, made.stderr
    names = [f'k_N_BASES{k}_EM_NORM{norm}_SCALES{scales}' for k in (4, 8) for norm in ('l2', 'none')
             for scales in ('1.0', '0.5-1.0')]
    assert made.stdout.split() == [f'abl/{name}' for name in names]
    assert sorted(os.listdir(tmp_path / 'abl')) == sorted(names)
    folder = tmp_path / 'abl' / names[5]  # N_BASES 8, 'l2', (0.5, 1.0)
    expected = {name for name in os.listdir(base) if name.endswith(('.py', '.sh', '.md'))}
    expected |= {'requirements.txt', '.gitignore', 'models', 'models/README.md'}
    copied = {os.path.relpath(os.path.join(d, f), folder) for d, dirs, files in os.walk(folder) for f in dirs + files}
    assert copied == expected
    text = (folder / 'settings.py').read_text()
    assert text.startswith((base / 'settings.py').read_text())
    assert text.endswith("# made by grid.py: python base/grid.py make abl/k N_BASES=4,8 'EM_NORM='\"'\"'l2'\"'\"',"
                         "'\"'\"'none'\"'\"'' 'SCALES=(1.0,),(0.5,1.0)'\n"
                         "N_BASES = 8\nEM_NORM = 'l2'\nSCALES = (0.5, 1.0)\n")
    values = settings.folder_settings(folder)
    assert (values['N_BASES'], values['EM_NORM'], values['SCALES']) == (8, 'l2', (0.5, 1.0))
    assert 'grid.lock' in (folder / '.gitignore').read_text().split()


def test_make_refuses_unknown_settings_and_existing_folders_before_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match='EM_MOMENTUM is not a setting; did you mean EM_MOM'):
        grid.make('t', ['N_BASES=32,64', 'EM_MOMENTUM=0.5'], None, False)
    with pytest.raises(ValueError, match='must be Python literals'):
        grid.make('t', ['EM_NORM=none'], None, False)  # a string without quotes
    (tmp_path / 'blocks.txt').write_text('N_BASES = 32\n\nN_BASE = 64\n')
    with pytest.raises(ValueError, match="blocks.txt: `N_BASE = 64`: N_BASE is not a setting; did you mean N_BASES"):
        grid.make('t', [], 'blocks.txt', False)
    (tmp_path / 'blocks.txt').write_text('N_BASES = 32\n\nEM_NORM = none\n')
    with pytest.raises(ValueError, match='blocks.txt: `EM_NORM = none`: the value is no Python literal'):
        grid.make('t', [], 'blocks.txt', False)
    assert os.listdir(tmp_path) == ['blocks.txt']
    (tmp_path / 't_N_BASES64').mkdir()
    with pytest.raises(ValueError, match='already there: t_N_BASES64'):
        grid.make('t', ['N_BASES=32,64'], None, False)
    assert sorted(os.listdir(tmp_path)) == ['blocks.txt', 't_N_BASES64']
    assert grid.make('t', ['N_BASES=32,64'], None, True) == ['t_N_BASES32']
    assert os.listdir(tmp_path / 't_N_BASES64') == []  # left as it was


def test_make_refuses_evaluation_settings_pointing_to_run_eval(tmp_path, monkeypatch):
    """Folders that differ in an EVAL_* setting alone would train identical networks."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r'EVAL_STAGE_NUM changes only evaluations, not the trained network: .*'
                                         r'grid.py run FOLDERS --eval "EVAL_STAGE_NUM=V1,V2"'):
        grid.make('t', ['STAGE_NUM=1,2', 'EVAL_STAGE_NUM=1,2'], None, False)
    (tmp_path / 'blocks.txt').write_text('N_BASES = 32\nEVAL_EVERY = 100\n')
    with pytest.raises(ValueError, match='EVAL_EVERY changes only evaluations.*set EVAL_EVERY in settings.py before'):
        grid.make('t', [], 'blocks.txt', False)
    assert os.listdir(tmp_path) == ['blocks.txt']


def test_each_files_of_comments_blank_lines_a_bom_and_crlf(tmp_path):
    path = tmp_path / 'blocks.txt'
    path.write_bytes('\ufeff# seeds\r\nSEED = 1\r\n\r\n# only a comment\r\n\r\n\r\nSEED = 2\r\n\r\n\r\n  \n'.encode())
    assert grid.read_blocks(path) == [{'SEED': 1}, {'SEED': 2}]
    for text in ('', '\n\n', '# a comment\n\n# another\n'):
        path.write_text(text)
        with pytest.raises(ValueError, match='holds no settings lines'):
            grid.read_blocks(path)


def test_long_names_are_cut_with_a_stable_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scales = [tuple(round(0.5 + i / 100, 2) for i in range(n)) for n in (60, 61)]
    (tmp_path / 'blocks.txt').write_text(''.join(f'SCALES = {s!r}\n\n' for s in scales))
    made = grid.make('t', [], 'blocks.txt', False)
    assert len(made) == 2 and all(len(name.encode()) == grid.NAME_MAX for name in made)
    assert made == [grid.folder_name('t', {'SCALES': s}) for s in scales]  # the same name each time
    assert made[0].startswith('t_SCALES0.5-0.51-0.52') and made[0] != made[1]
    assert [settings.folder_settings(folder)['SCALES'] for folder in made] == scales  # the settings in full
    assert grid.folder_name('abl/t', {'N_BASES': 4}) == 'abl/t_N_BASES4'


def test_make_leaves_no_half_made_folder_on_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copies = []

    def full_disk(source, target):
        copies.append(target)
        if len(copies) == 3:
            raise OSError(28, 'No space left on device')
        return shutil.copyfile(source, target)
    monkeypatch.setattr(shutil, 'copy2', full_disk)
    with pytest.raises(OSError, match='No space left'):
        grid.make('t', ['N_BASES=4,8'], None, False)
    assert os.listdir(tmp_path) == []


def test_make_refuses_folders_that_share_an_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path / 'models'))  # absolute: every folder's
    with pytest.raises(ValueError, match=r't_N_BASES4 and t_N_BASES8 have one MODEL_DIR, .*models: their runs would '
                                         r'resume and replace each other'):
        grid.make('t', ['N_BASES=4,8'], None, False)
    monkeypatch.setattr(settings, 'MODEL_DIR', './models')
    (tmp_path / 'blocks.txt').write_text(f'LOG_DIR = {str(tmp_path / "logs")!r}\nSEED = 1\n\n'
                                         f'LOG_DIR = {str(tmp_path / "logs")!r}\nSEED = 2\n')
    with pytest.raises(ValueError, match='have one LOG_DIR'):
        grid.make('t', [], 'blocks.txt', False)
    assert os.listdir(tmp_path) == ['blocks.txt']


def test_the_docstrings_make_lines_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [line.split('#')[0] for line in grid.__doc__.splitlines() if line.strip().startswith('python grid.py make')]
    assert len(lines) >= 3
    for line in lines:
        words = shlex.split(line)[3:]
        if '--each' in words:
            continue
        assert grid.make(words[0], words[1:], None, False)


def test_values_split_as_python_literals():
    assert settings.parse_values('N_BASES=32,64') == ('N_BASES', (32, 64))
    assert settings.parse_values('SCALES=(0.5,1.0),(1.0,)') == ('SCALES', ((0.5, 1.0), (1.0,)))
    assert settings.parse_values("EM_NORM='l2','a,b'") == ('EM_NORM', ('l2', 'a,b'))
    assert settings.parse_values('EVAL_WINDOW=None,(513, 1025)') == ('EVAL_WINDOW', (None, (513, 1025)))
    assert grid.value_name((0.5, 1.0)) == '0.5-1.0' and grid.value_name('./a b') == '.-a-b'


# ---------------------------------------------------------------- run, skip, resume, failure, status

@pytest.mark.long
def test_run_resumes_records_failures_and_skips_what_is_done(ran):
    tmp, first, second, third = ran
    assert second.returncode == 1 and C in second.stderr and 'CROP_SIZE=4 is smaller' in second.stderr
    assert f'{A}: finished and evaluated, skipped' in second.stderr
    # B resumed at step 2 and ended with the weights of A's uninterrupted run
    log = (tmp / B / 'grid_train.log').read_text()
    assert 'resumed from ./models/latest.pth at step 2' in log and 'step 1/4' not in log
    assert same_weights(weights(tmp / A), weights(tmp / B))
    for folder in (A, B):
        assert status_of(tmp, folder)['state'] == 'finished'
        assert sorted(os.listdir(tmp / folder / 'logdir')) == [
            'eval_final.json', 'eval_final_os16_stages1.json', *sorted(
                f for f in os.listdir(tmp / folder / 'logdir') if f.startswith('events')), 'settings.txt']
        for name in ('eval_final.json', 'eval_final_os16_stages1.json'):
            assert json.loads((tmp / folder / 'logdir' / name).read_text())['step'] == 4
    failed = status_of(tmp, C)
    assert failed['state'] == 'failed' and failed['returncode'] == 1 and failed['command'] == 'python train.py'
    assert failed['reason'] == 'CROP_SIZE=4 is smaller than the output stride STRIDE=8'
    # the third run starts nothing for A and B: their logs are as the second left them
    assert third.returncode == 0, third.stderr
    assert all(f'{folder}: finished and evaluated, skipped' in third.stderr for folder in (A, B))
    assert len(evaluations(tmp / B)) == 2


@pytest.mark.long
def test_status_lines(ran):
    tmp = ran[0]
    lines = status_lines(tmp, A, C, D)
    assert lines[A] == ('finished', '4/4', '-')
    assert lines[C] == ('failed (python train.py: CROP_SIZE=4 is smaller than the output stride STRIDE=8)', '0/4', '-')
    assert lines[D] == ('waiting', '0/4', '-')
    header, *rows = grid_py(tmp, 'status', A, C, D).stdout.splitlines()
    assert header.split()[-1] == 'recipe'
    # the recipe column, counted by hand: the grid's tiny settings against 'paper VOC' differ in N_LAYERS,
    # PRETRAINED, CROP_SIZE, BATCH_SIZE, images per BatchNorm, BN_MOM, LR, ITER_MAX, EMA_CHANNELS and N_BASES; against
    # 'paper ablation' as many (STRIDE for N_LAYERS), and the paper's VOC recipe comes first. A as its run recorded
    # it, C and D (no checkpoint) from their settings
    assert [row[header.index('recipe'):].strip() for row in rows] == ['paper VOC, 10 differ'] * 3


def test_status_step_is_the_one_a_rerun_resumes_from(tmp_path):
    """The newest intact checkpoint's step (a corrupt latest.pth: the newest step_<N>.pth), the last logged step
    beside it when they differ (a run killed between two saves)."""
    folder = tmp_path / 'exp'
    fake_folder(folder, {}, ITER_MAX=10)
    for name, step in (('step_2.pth', 2), ('step_4.pth', 4)):
        torch.save({'net': {}, 'step': step, 'settings': {}}, folder / 'models' / name)
    (folder / 'models' / 'latest.pth').write_bytes(b'cut short')
    (folder / grid.TRAIN_LOG).write_text('12:00:00 INFO step 5/10 loss 0.5 lr 1e-3 2.0 img/s ETA 00:00:05\n')
    assert grid.status_line(str(folder))[1:4] == ['waiting', '4/10 (logged 5)', '-']
    torch.save({'net': {}, 'step': 5, 'settings': {}}, folder / 'models' / 'latest.pth')
    assert grid.status_line(str(folder))[2] == '5/10'
    for name in (grid.STATUS, grid.LOCK, grid.TRAIN_LOG):  # empty files: cut short, or never written
        (folder / name).write_text('')
    assert grid.status_line(str(folder))[1:4] == ['waiting', '5/10', '-']
    with pytest.raises(grid.Refused, match=r'cannot write .*gone/grid.lock: No such file or directory'):
        grid.hold_folder(str(tmp_path / 'gone'))


@pytest.mark.long
def test_a_folder_whose_settings_changed_after_it_finished_is_stale(ran, tmp_path):
    """Refused by run (naming the setting, exit 1), stale in status and compare.py; a setting that does not shape
    the trained network (NUM_WORKERS, EVAL_*) and a raised ITER_MAX leave it its own."""
    tmp = ran[0]
    edited = copy_folder(tmp / A, tmp_path / 'edited')
    with open(edited / 'settings.py', 'a') as f:
        f.write('NUM_WORKERS = 2\nEVAL_FLIP = True\nITER_MAX = 5\n')
    assert grid.plan(str(edited), [], 1) == [([sys.executable, 'train.py'], grid.TRAIN_LOG),
                                             ([sys.executable, 'eval.py'], grid.EVAL_LOG)]  # unfinished: trains on
    with open(edited / 'settings.py', 'a') as f:
        f.write('ITER_MAX = 4\nLR = 0.01\n')
    logs = [(edited / name).read_text() for name in (grid.TRAIN_LOG, grid.EVAL_LOG)]
    result = grid_py(tmp, 'run', str(edited))
    assert result.returncode == 1 and 'stale: its checkpoints ran with LR=0.001 (now 0.01)' in result.stderr
    assert 'NUM_WORKERS' not in result.stderr and '1 of 1 folders failed or were refused' in result.stderr
    assert [(edited / name).read_text() for name in (grid.TRAIN_LOG, grid.EVAL_LOG)] == logs  # nothing ran
    assert 'LR=0.001 (now 0.01)' in status_of(tmp_path, 'edited')['reason']
    assert status_lines(tmp, str(edited))[str(edited)][0] == 'stale: its checkpoints ran with LR=0.001 (now 0.01)'
    notes = compare.read_experiment(str(edited))['notes']
    assert any(note.startswith('stale: ') and 'ran with LR=0.001 (now 0.01)' in note for note in notes), notes
    assert not any('stale' in note for note in compare.read_experiment(str(tmp / A))['notes'])


@pytest.mark.long
def test_a_deleted_evaluation_is_computed_again_and_specs_are_what_they_set(ran, tmp_path):
    tmp = ran[0]
    folder = copy_folder(tmp / A, tmp_path / 'deleted')
    (folder / 'grid_eval.log').unlink()
    os.remove(folder / 'logdir' / 'eval_final_os16_stages1.json')
    plain = (folder / 'logdir' / 'eval_final.json').stat().st_mtime_ns
    assert status_lines(tmp, str(folder))[str(folder)][0] == (  # not 'finished', as grid_status.json says
        'finished before; a rerun runs eval.py --set EVAL_STAGE_NUM=1 --set EVAL_STRIDE=16')
    result = grid_py(tmp, 'run', str(folder), '--eval', SPEC)
    assert result.returncode == 0, result.stderr
    assert evaluations(folder) == [evaluations(folder)[0]] and evaluations(folder)[0].endswith(
        'grid.py: python eval.py --set EVAL_STAGE_NUM=1 --set EVAL_STRIDE=16 on CPU')
    assert json.loads((folder / 'logdir' / 'eval_final_os16_stages1.json').read_text())['step'] == 4
    assert (folder / 'logdir' / 'eval_final.json').stat().st_mtime_ns == plain
    again = grid_py(tmp, 'run', str(folder), '--eval', 'EVAL_STRIDE = 16; EVAL_STAGE_NUM = 1',
                    '--eval', 'EVAL_STAGE_NUM=3')  # the same files: eval_final_os16_stages1.json, eval_final.json
    assert again.returncode == 0 and 'finished and evaluated, skipped' in again.stderr, again.stderr
    assert len(evaluations(folder)) == 1 and status_lines(tmp, str(folder))[str(folder)][0] == 'finished'


def test_eval_specs_that_set_nothing_or_a_setting_twice_are_refused():
    for spec, message in (('', 'sets nothing'), (' ; ', 'sets nothing'), ('EVAL_FLIP=True;EVAL_FLIP=False', 'twice'),
                          ('EVAL_FLIP=True;N_BASES=8', 'N_BASES is no evaluation setting')):
        with pytest.raises(ValueError, match=message):
            grid.eval_specs([spec])
    assert grid.eval_specs(['EVAL_FLIP=True; EVAL_STAGE_NUM=1,2']) == ['EVAL_FLIP=True; EVAL_STAGE_NUM=1,2']


def test_what_a_folder_still_needs(tmp_path):
    """train.py until final.pth holds ITER_MAX; then each evaluation whose result file (computed as eval.py names it)
    does not hold final.pth's step; a spec whose files an earlier one gives is not run again."""
    folder = tmp_path / 'exp'
    fake_folder(folder, {}, ITER_MAX=4, STAGE_NUM=3)
    train, evaluate = ([sys.executable, 'train.py'], grid.TRAIN_LOG), ([sys.executable, 'eval.py'], grid.EVAL_LOG)
    spec = ([sys.executable, 'eval.py', '--set', 'EVAL_STAGE_NUM=1', '--set', 'EVAL_STRIDE=16'], grid.EVAL_LOG)
    assert grid.plan(str(folder), [SPEC], 1) == [train, evaluate, spec]
    torch.save({'net': {}, 'step': 3, 'settings': {}}, folder / 'models' / 'final.pth')  # ITER_MAX raised: train on
    assert grid.plan(str(folder), [SPEC], 1) == [train, evaluate, spec]
    torch.save({'net': {}, 'step': 4, 'settings': {}}, folder / 'models' / 'final.pth')
    assert grid.plan(str(folder), [SPEC], 1) == [evaluate, spec]
    assert grid.result_files(str(folder), settings.folder_settings(folder), 'EVAL_STAGE_NUM=1,3;EVAL_STRIDE=16') == [
        str(folder / 'logdir' / name) for name in ('eval_final_os16_stages1.json', 'eval_final_os16.json')]
    results = {'eval_final.json': 4, 'eval_final_os16_stages1.json': 3}  # SPEC's of an earlier final.pth
    for name, step in results.items():
        (folder / 'logdir' / name).write_text(json.dumps({'step': step}))
    assert grid.plan(str(folder), [SPEC, 'EVAL_STAGE_NUM=3'], 1) == [spec]  # 3 = STAGE_NUM: eval_final.json
    (folder / 'logdir' / 'eval_final_os16_stages1.json').write_text(json.dumps({'step': 4}))
    assert grid.plan(str(folder), [SPEC], 1) == [] and grid.plan(str(folder), [], 1) == []
    (folder / 'logdir' / 'eval_final.json').write_text('{"step": 4')  # cut short by a kill
    assert grid.plan(str(folder), [], 2) == [
        ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'eval.py'],
         grid.EVAL_LOG)]


def test_slurm_leaves_a_result_named_by_the_nodes_precision_to_its_job(tmp_path, monkeypatch):
    """--slurm from a login node whose CPU computes no bfloat16: an --eval of EVAL_AMP = True names its result by a
    precision only the job's node knows, so the job is submitted (its grid.py run plans it there), not refused; a
    finished and evaluated folder without such a spec is skipped, a stale one refused."""
    folder = tmp_path / 'exp'
    fake_folder(folder, {}, ITER_MAX=4)
    torch.save({'net': {}, 'step': 4, 'settings': {}}, folder / 'models' / 'final.pth')
    (folder / 'logdir' / 'eval_final.json').write_text(json.dumps({'step': 4}))
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    submitted = []

    class Executor:  # submitit's, as far as submit uses it
        def __init__(self, folder, cluster):
            pass

        def update_parameters(self, **parameters):
            pass

        def submit(self, job):
            submitted.append(job.folder)
            return type('Job', (), {'job_id': str(len(submitted))})()
    import submitit
    monkeypatch.setattr(submitit, 'AutoExecutor', Executor)
    args = type('Args', (), dict(gpus_per_run=1, slurm='gpu', time=60, nodes=1, account=None))()
    assert grid.submit([str(folder)], [], args) == [] and submitted == []  # finished and evaluated
    assert grid.submit([str(folder)], ['EVAL_AMP=True'], args) == [] and submitted == [str(folder.resolve())]
    with open(folder / 'settings.py', 'a') as f:
        f.write('SEED = 1\n')
    torch.save({'net': {}, 'step': 4, 'settings': {'SEED': 2}}, folder / 'models' / 'final.pth')
    assert grid.submit([str(folder)], ['EVAL_AMP=True'], args) == [str(folder)] and len(submitted) == 1


def test_final_pth_replaced_or_trained_again_is_no_finished_folder(tmp_path):
    """A final.pth that another run wrote with other settings (copied over this folder's own) makes the folder
    stale, though the checkpoint a rerun resumes from is its own; a result older than final.pth (a final.pth
    trained again in place, at the same step) is evaluated again."""
    folder = tmp_path / 'exp'
    fake_folder(folder, {}, ITER_MAX=4, SEED=1)
    for name, seed in (('latest.pth', 1), ('final.pth', 2)):
        torch.save({'net': {}, 'step': 4, 'settings': {'SEED': seed}}, folder / 'models' / name)
    with pytest.raises(grid.Refused, match=r'stale: final.pth ran with SEED=2 \(now 1\)'):
        grid.plan(str(folder), [], 1)
    assert grid.status_line(str(folder))[1] == 'stale: final.pth ran with SEED=2 (now 1)'
    latest_time = os.path.getmtime(folder / 'models' / 'latest.pth')
    os.utime(folder / 'models' / 'final.pth', (latest_time - 60, latest_time - 60))  # latest.pth the newer
    assert 'stale: final.pth ran with SEED=2 (now 1)' in compare.read_experiment(str(folder))['notes']
    torch.save({'net': {}, 'step': 4, 'settings': {'SEED': 1}}, folder / 'models' / 'final.pth')
    result = folder / 'logdir' / 'eval_final.json'
    result.write_text(json.dumps({'step': 4}))
    assert grid.plan(str(folder), [], 1) == []
    final_time = os.path.getmtime(folder / 'models' / 'final.pth')
    os.utime(result, (final_time - 60, final_time - 60))  # of the final.pth before this one
    assert grid.plan(str(folder), [], 1) == [([sys.executable, 'eval.py'], grid.EVAL_LOG)]
    assert ('eval_final.json older than final.pth: results of an earlier one; evaluate it again'
            in compare.read_experiment(str(folder))['notes'])


def test_a_broken_settings_py_counts_as_failed(ran, tmp_path):
    tmp = ran[0]
    broken = copy_folder(tmp / D, tmp_path / 'broken')
    with open(broken / 'settings.py', 'a') as f:
        f.write('N_BASES = undefined_name\n')
    result = grid_py(tmp, 'run', str(broken))
    assert result.returncode == 1, result.stderr
    assert "settings.py does not run: NameError: name 'undefined_name' is not defined" in result.stderr
    assert f'1 of 1 folders failed or were refused (their grid_status.json and logs say why): {broken}' in result.stderr
    assert status_lines(tmp, str(broken))[str(broken)][0].startswith('settings.py does not run: NameError')


def test_run_refuses_folders_that_share_an_output_folder_before_anything_trains(ran, tmp_path):
    tmp = ran[0]
    shared = tmp_path / 'shared_models'
    for name in ('one', 'two'):
        copy_folder(tmp / D, tmp_path / name)
        with open(tmp_path / name / 'settings.py', 'a') as f:
            f.write(f'MODEL_DIR = {str(shared)!r}\n')
    result = grid_py(tmp, 'run', str(tmp_path / 'one'), str(tmp_path / 'two'))
    assert result.returncode == 1
    assert f'{tmp_path / "one"} and {tmp_path / "two"} have one MODEL_DIR, {shared}' in result.stderr
    assert not os.path.exists(shared) and not os.path.exists(tmp_path / 'one' / grid.TRAIN_LOG)


def test_failure_reasons_are_the_errors_themselves():
    """The error itself, from what a failed command wrote: torchrun's report after its workers' output, torch's log
    lines and a traceback's frames are passed over; an error log record when the exit prints nothing."""
    torchrun = ['12:00:01 INFO training EMANet-50 OS8 on cpu x2',
                'CROP_SIZE=4 is smaller than the output stride STRIDE=8', 'CROP_SIZE=4 is smaller than the output '
                'stride STRIDE=8', '[W1206 20:53:44.123456 ProcessGroupGloo.cpp:1] Warning: destroy_process_group()',
                'E1206 20:53:44.741000 10512 site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] '
                'failed (exitcode: 1) local_rank: 0 (pid: 10557) of binary: /usr/bin/python',
                'Traceback (most recent call last):', '  File "torch/distributed/run.py", line 1032, in <module>',
                'torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ', '=' * 60, 'train.py FAILED',
                '-' * 60, 'Root Cause (first observed failure):', '  exitcode  : 1 (pid: 10557)', '=' * 60]
    assert grid.failure_reason(torchrun, 1) == 'CROP_SIZE=4 is smaller than the output stride STRIDE=8'
    traceback = ['12:00:01 INFO step 3/4 loss 1.0', 'Traceback (most recent call last):', '  File "train.py", line 9',
                 '    main()', 'RuntimeError: CUDA error: an illegal memory access was encountered',
                 'CUDA kernel errors might be asynchronously reported', 'For debugging consider CUDA_LAUNCH_BLOCKING=1']
    assert grid.failure_reason(traceback, 1) == 'RuntimeError: CUDA error: an illegal memory access was encountered'
    exit_message = ['12:00:01 WARNING resuming with LR = 0.1', 'first line of the message', 'its second line', '']
    assert grid.failure_reason(exit_message, 1) == 'first line of the message'
    logged = ['12:00:01 ERROR MODEL_DIR=./models belongs to a training run that is still going', '12:00:02 INFO bye']
    assert grid.failure_reason(logged, 1) == 'MODEL_DIR=./models belongs to a training run that is still going'
    assert grid.failure_reason([], -9) == 'killed by SIGKILL' and grid.failure_reason(['', '  '], 2) == (
        'exit 2 without an error message')
    assert grid.failure_reason(['[rank1]:ValueError: x'], 1) == 'ValueError: x'
    worker = ['12:00:01 INFO step 2/300 loss 3.0984', '[rank0]: Traceback (most recent call last):',  # as torch 2.13
              '[rank0]:   File "train.py", line 436, in <module>', '[rank0]:     runtime.run_script(main)',
              '[rank0]: ValueError: the loss is nan', 'E1206 23:05:21.184000 6063 site-packages/torch/distributed/'
              'elastic/multiprocessing/api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 6081) of binary: python',
              *torchrun[6:]]
    assert grid.failure_reason(worker, 1) == 'ValueError: the loss is nan'
    # a worker killed by the kernel's out-of-memory killer: the others lose their connection to it, which is no cause
    killed = worker[:4] + ['[rank0]: RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:39298',
                           worker[5].replace('exitcode: 1) local_rank: 0', 'exitcode: -9) local_rank: 1')]
    assert grid.failure_reason(killed, 1) == 'a worker of torchrun (local rank 1) was killed by SIGKILL'
    assert grid.failure_reason(['12:00:01 INFO step 2/300 loss 3.0984', 'a warning of a library'], -9) == (
        'killed by SIGKILL')


@pytest.mark.long
def test_a_torchrun_failure_and_a_misspelt_setting_are_named(ran, tmp_path):
    tmp = ran[0]
    misspelt = copy_folder(tmp / D, tmp_path / 'misspelt')
    with open(misspelt / 'settings.py', 'a') as f:
        f.write('EM_MOMENTUM = 0.5\n')
    result = grid_py(tmp, 'run', str(misspelt), '--gpus-per-run', '2')  # torchrun with 2 processes on the CPU
    assert result.returncode == 1
    reason = 'settings.py assigns names that no code reads: EM_MOMENTUM (did you mean EM_MOM?)'
    status = status_of(tmp_path, 'misspelt')
    assert status['reason'].startswith(reason) and status['command'].startswith('python -m torch.distributed.run')
    assert 'train.py FAILED' in status['tail']  # torchrun's report is in the tail, not the reason
    assert reason in result.stderr
    assert status_lines(tmp, str(misspelt))[str(misspelt)][0].startswith('failed (python -m torch.distributed.run')


# ---------------------------------------------------------------- two runs at once, signals, kill -9

@pytest.mark.long
def test_two_runs_on_the_same_folders_evaluate_each_once(ran, tmp_path):
    """Two runs over x and y, in opposite orders, overlapping for sure: the first is held in x's evaluation (paused
    right after writing its result) while the second evaluates y and then waits for x; each folder is evaluated
    once, and neither run records the other's folder as failed."""
    tmp = ran[0]
    x, y = folders = [copy_folder(tmp / A, tmp_path / name) for name in ('x', 'y')]
    for folder in folders:
        shutil.rmtree(folder / 'logdir')
        (folder / 'grid_eval.log').unlink()
    first, first_log = background_grid_py(tmp, 'run', str(x), str(y), pause_at='eval_final.json')
    second = None
    try:
        evaluating = paused_in(x, first)
        second, second_log = background_grid_py(tmp, 'run', str(y), str(x))
        wait_for_text(second_log, f'{x} is held by pid {first.pid} on ', second)
        os.kill(evaluating, signal.SIGCONT)
        for process, log in ((first, first_log), (second, second_log)):
            assert process.wait(HANG_GUARD) == 0, log.read_text()
    finally:
        end_all(x, first, *filter(None, [second]))
    assert f'{y}: finished and evaluated, skipped' in first_log.read_text()
    assert f'{x}: finished and evaluated, skipped' in second_log.read_text()
    for folder in folders:
        assert len(evaluations(folder)) == 1, evaluations(folder)
        assert status_of(tmp_path, folder.name)['state'] == 'finished'
        assert (folder / grid.LOCK).read_text() == ''  # let go


# another grid.py run, elsewhere: a process of its own (the runs this test starts are forks of it, which keep
# what it has open: a lock of its own, or a pipe's end)
HOLDER = """import fcntl, sys, time
lock = open(sys.argv[1], 'a+')
fcntl.flock(lock, fcntl.LOCK_EX)
lock.write('pid 1 on node7, started 2026-01-01 00:00:00\\n')
lock.flush()
print('held', flush=True)
time.sleep(600)  # until the test ends it
"""


def test_a_folder_another_run_holds_is_waited_for_and_named_by_status(ran):
    tmp = ran[0]
    name = 'pid 1 on node7, started 2026-01-01 00:00:00'
    with subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp / A / grid.LOCK)], stdout=subprocess.PIPE,
                          text=True) as other:
        assert other.stdout.readline() == 'held\n'
        assert status_lines(tmp, A)[A][0] == f'finished (held by {name})'
        waiting, log = background_grid_py(tmp, 'run', A)
        try:
            wait_for_text(log, f'{A} is held by {name}: waiting for it', waiting)
            other.terminate()  # the other run ends
            assert waiting.wait(HANG_GUARD) == 0, log.read_text()
        finally:
            end_all(tmp / A, waiting)
    assert f'{A}: finished and evaluated, skipped' in log.read_text()
    assert status_lines(tmp, A)[A][0] == 'finished'


@pytest.mark.long
def test_ctrl_c_stops_the_run_which_saves_latest(ran):
    """Ctrl-C of grid.py while train.py is held after its first step (so that what status shows and the step saved
    do not depend on the machine's speed): passed on, train.py saves latest.pth at the end of its step, 2."""
    tmp = ran[0]
    command = [sys.executable, str(tmp / 'base' / 'grid.py'), 'run', E]
    log = tmp / E / 'grid_train.log'
    process = ForkedScript(command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, env={**os.environ, PAUSE_AT: 'step 1/1000 loss'})
    try:
        train = paused_in(tmp / E, process)
        state, step, eta = status_lines(tmp, E)[E]
        process.send_signal(signal.SIGINT)
        wait_pending(train, signal.SIGINT)
        os.kill(train, signal.SIGCONT)
        out, err = process.communicate(timeout=HANG_GUARD)
    finally:
        end_all(tmp / E, process)
    assert re.fullmatch(rf'training on CPU \(held by pid {process.pid} on .+, started .+\)', state), state
    assert step == '0/1000 (logged 1)' and ':' in eta
    assert process.returncode == 128 + signal.SIGINT
    assert f'stopped by SIGINT: each run saved latest.pth. To continue: python {command[1]} run {E}' in err
    assert status_of(tmp, E)['state'] == 'interrupted'
    assert 'stopped by a signal: latest.pth holds step 2' in log.read_text()
    assert torch.load(tmp / E / 'models' / 'latest.pth', weights_only=True)['step'] == 2
    assert status_lines(tmp, E)[E][:2] == ('interrupted', '2/1000')


def test_a_signal_as_grid_py_starts_a_run_stops_that_run(ran, tmp_path):
    """SIGTERM reaching grid.py between choosing a folder's run and starting it (grid.py held there, at the log line
    that names the run): the run is stopped as soon as it started, not left to train to its end unsignalled."""
    tmp = ran[0]
    folder = copy_folder(tmp / D, tmp_path / 'started')
    process, log = background_grid_py(tmp, 'run', str(folder), pause_at=f'{folder}: train.py on CPU')
    try:
        assert paused_in(tmp, process) == process.pid
        process.send_signal(signal.SIGTERM)
        wait_pending(process.pid, signal.SIGTERM)
        os.kill(process.pid, signal.SIGCONT)
        assert process.wait(HANG_GUARD) == 128 + signal.SIGTERM, log.read_text()
    finally:
        end_all(folder, process)
    assert 'Error' not in log.read_text(), log.read_text()
    assert status_of(tmp_path, 'started')['state'] == 'interrupted'
    assert not (folder / 'models' / 'final.pth').exists() and 'step 4/4' not in (folder / grid.TRAIN_LOG).read_text()


@pytest.mark.long
def test_kill_9_of_grid_py_stops_its_run_and_a_rerun_finishes_the_folder_once(ran):
    """train.py, held after its first step, gets SIGTERM when grid.py dies by kill -9 (the parent-death signal)
    rather than going on unattended, and saves latest.pth at the end of its step; the rerun resumes from it,
    evaluates once and ends with the weights of an uninterrupted run."""
    tmp = ran[0]
    log = tmp / K / grid.TRAIN_LOG
    killed, _ = background_grid_py(tmp, 'run', K, pause_at='step 1/4 loss')
    try:
        train = paused_in(tmp / K, killed)
        killed.kill()
        killed.wait()  # the parent-death signal is sent as grid.py exits: before it can be waited for
        with contextlib.suppress(ProcessLookupError):  # the kernel lets a stopped process go on when its parent
            os.kill(train, signal.SIGCONT)             # dies, too: it may be gone already
        wait_until_gone(tmp / K)  # train.py ends by itself
    finally:
        end_all(tmp / K, killed)
    assert 'stopped by a signal: latest.pth holds step 2' in log.read_text(), log.read_text()
    assert status_lines(tmp, K)[K][:2] == ('interrupted', '2/4')
    rerun = grid_py(tmp, 'run', K)
    assert rerun.returncode == 0, rerun.stderr
    assert log.read_text().count('resumed from ./models/latest.pth at step 2') == 1
    assert same_weights(weights(tmp / A), weights(tmp / K)) and len(evaluations(tmp / K)) == 1


# ---------------------------------------------------------------- Slurm through submitit's local executor

@pytest.mark.long
def test_submitit_requeues_a_job_at_its_time_limit_which_resumes(ran):
    """submitit's signal (SIGUSR2, as at a time limit or a preemption) delivered to the job while FolderJob waits
    on its grid.py: train.py saves latest.pth, the job is requeued and resumes to the weights of an uninterrupted
    run. A failing folder (G) makes the command exit non-zero, as the local queue does; what is done is skipped."""
    tmp = ran[0]
    log = tmp / F / grid.TRAIN_LOG
    submitter, output = background_grid_py(tmp, 'run', F, G, '--slurm', 'local', pause_at='step 1/4 loss')
    try:
        train = paused_in(tmp / F, submitter)  # held after step 1: the requeued run logs steps 3 and 4 only
        in_job = process_state(train)[1]  # grid.py run --in-job
        job = process_state(in_job)[1]  # submitit's job process, inside FolderJob.__call__'s wait
        assert re.match(rf'pid {in_job} on ', (tmp / F / grid.LOCK).read_text())
        os.kill(job, signal.SIGUSR2)
        wait_pending(train, signal.SIGTERM)  # the handler's SIGTERM, passed on by grid.py
        os.kill(train, signal.SIGCONT)
        assert submitter.wait(HANG_GUARD) == 1
    finally:
        end_all(tmp / F, submitter)
    text = output.read_text()
    assert f'1 of 2 folders failed or were refused (their grid_status.json and logs say why): {G}' in text, text
    assert 'stopped by a signal: latest.pth holds step 2' in log.read_text(), log.read_text()
    assert log.read_text().count('resumed from ./models/latest.pth at step 2') == 1
    assert same_weights(weights(tmp / A), weights(tmp / F))
    submitit_log = '\n'.join(path.read_text() for path in (tmp / F / 'grid_submitit').glob('*_log.*'))
    assert 'Caught signal SIGUSR2' in submitit_log and submitit_log.count(': train.py on job') == 2  # requeued
    status = status_of(tmp, F)
    assert status['state'] == 'finished' and status['where'].startswith('job ')
    assert status_of(tmp, G)['state'] == 'failed' and status_of(tmp, G)['reason'] == (
        'CROP_SIZE=5 is smaller than the output stride STRIDE=8')
    again = grid_py(tmp, 'run', F, '--slurm', 'local')
    assert again.returncode == 0 and f'{F}: finished and evaluated, skipped' in again.stderr
    assert len(evaluations(tmp / F)) == 1


def test_a_job_handler_stops_its_run_and_requeues_itself():
    job = grid.FolderJob('/somewhere/exp', ['--gpus-per-run', '2'])
    job.process = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    requeued = job.checkpoint()
    assert job.process.returncode == -signal.SIGTERM  # stopped, and waited for
    again = requeued.function
    assert isinstance(again, grid.FolderJob) and (again.folder, again.options) == (job.folder, job.options)
    assert requeued.args == () and again.process is None
    assert job.__getstate__()['process'] is None  # what submitit pickles


def test_gpu_ids_are_those_this_process_sees(monkeypatch):
    """Within an inherited CUDA_VISIBLE_DEVICES (faked GPUs: torch.cuda's counts)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    assert grid.gpu_slots('0,1,2,3', 2) == [('0', '1'), ('2', '3')]
    assert grid.gpu_slots('1,2,3', 1) == [('1',), ('2',), ('3',)]
    assert grid.gpu_slots('0,1,2', 2) == [('0', '1')]  # GPU 2 idle, with a warning
    assert grid.gpu_slots(None, 4) == [('0', '1', '2', '3')]
    with pytest.raises(ValueError, match='--gpus-per-run 4 but only 2 GPUs'):
        grid.gpu_slots('0,1', 4)
    with pytest.raises(ValueError, match=r'--gpus 0,4: 4 is no GPU of this process.*it sees 4 GPUs: 0..3\)'):
        grid.gpu_slots('0,4', 1)
    with pytest.raises(ValueError, match='1 is no GPU of this process, or given twice'):
        grid.gpu_slots('1,1', 1)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')  # a Slurm allocation: torch sees 2, numbered 0 and 1
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert grid.gpu_slots('0', 1) == [('2',)] and grid.gpu_slots('1,0', 1) == [('3',), ('2',)]
    assert grid.gpu_slots(None, 1) == [('2',), ('3',)]
    with pytest.raises(ValueError, match='2 is no GPU of this process.*2 GPUs: 0..1 of CUDA_VISIBLE_DEVICES=2,3'):
        grid.gpu_slots('2', 1)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # no CUDA
    assert grid.gpu_slots(None, 1) == [None] and grid.gpu_slots('', 1) == [None]  # the CPU
    with pytest.raises(ValueError, match="--gpus 0: this machine has no CUDA device that PyTorch sees with "
                                         "CUDA_VISIBLE_DEVICES='2,3'"):
        grid.gpu_slots('0', 1)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')  # every GPU hidden
    with pytest.raises(ValueError, match="sees with CUDA_VISIBLE_DEVICES='' "):
        grid.gpu_slots('0', 1)
    assert grid.gpu_slots(None, 1) == [None]
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # UUIDs, as Slurm and MIG give them
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', 'GPU-8a1b, MIG-3c4d')
    assert grid.gpu_slots('1', 1) == [('MIG-3c4d',)] and grid.gpu_slots(None, 2) == [('GPU-8a1b', 'MIG-3c4d')]


# ---------------------------------------------------------------- eval.py --set

@pytest.mark.long
def test_eval_set_equals_editing_settings(ran, tmp_path):
    tmp = ran[0]
    edited = copy_folder(tmp / A, tmp_path / 'edited')
    shutil.rmtree(edited / 'logdir')
    with open(edited / 'settings.py', 'a') as f:
        f.write('EVAL_STAGE_NUM = 1\nEVAL_STRIDE = 16\n')
    result = run_script(edited, 'eval.py')
    assert result.returncode == 0, result.stderr
    by_edit = json.loads((edited / 'logdir' / 'eval_final_os16_stages1.json').read_text())
    by_set = json.loads((tmp / A / 'logdir' / 'eval_final_os16_stages1.json').read_text())
    assert by_set['confusion'] == by_edit['confusion'] and by_set['mIoU'] == by_edit['mIoU']
    assert (by_set['stride'], by_set['stage_num']) == (16, 1)
    plain = json.loads((tmp / A / 'logdir' / 'eval_final.json').read_text())
    assert (plain['stride'], plain['stage_num']) == (8, 3)


def test_eval_set_takes_evaluation_settings_only(monkeypatch, capsys):
    import eval as eval_script
    monkeypatch.setattr(sys, 'argv', ['eval.py', '--set', 'EVAL_STAGE_NUM=1,2', '--set', 'EVAL_FLIP=False,True'])
    assert eval_script.parse_args().set == [
        {'EVAL_STAGE_NUM': 1, 'EVAL_FLIP': False}, {'EVAL_STAGE_NUM': 1, 'EVAL_FLIP': True},
        {'EVAL_STAGE_NUM': 2, 'EVAL_FLIP': False}, {'EVAL_STAGE_NUM': 2, 'EVAL_FLIP': True}]
    monkeypatch.setattr(sys, 'argv', ['eval.py'])
    assert eval_script.parse_args().set == [{}]
    for argv, message in ((['--set', 'N_BASES=8'], 'N_BASES shapes training'),
                          (['--set', 'EVAL_STAGENUM=2'], 'did you mean EVAL_STAGE_NUM'),
                          (['--set', 'EVAL_FLIP=True', '--set', 'EVAL_FLIP=False'], 'given twice'),
                          (['--set', 'EVAL_FLIP=False,True', '--save-pred', 'p'], 'write over each other'),
                          (['--set', 'EVAL_STAGE_NUM=1,2', '--submit', 's'], 'write over each other')):
        monkeypatch.setattr(sys, 'argv', ['eval.py', *argv])
        with pytest.raises(SystemExit):
            eval_script.parse_args()
        assert message in capsys.readouterr().err
    monkeypatch.setattr(sys, 'argv', ['eval.py', '--set', 'EVAL_FLIP=True', '--save-pred', 'p'])
    assert eval_script.parse_args().set == [{'EVAL_FLIP': True}]  # one evaluation: its masks are its own
    with pytest.raises(ValueError, match='N_BASES is no evaluation setting'):
        grid.eval_specs(['EVAL_FLIP=True;N_BASES=8'])


def test_eval_onnx_refuses_half_precision_it_would_not_compute(monkeypatch):
    import eval as eval_script
    monkeypatch.setattr(settings, 'EVAL_AMP', True)
    monkeypatch.setattr(settings, 'DEVICE', settings.DEVICE)  # eval.py --onnx evaluates on the CPU
    monkeypatch.setattr(sys, 'argv', ['eval.py', '--onnx', 'never_read.onnx'])
    with pytest.raises(ValueError, match='EVAL_AMP=True with --onnx: onnxruntime computes in float32'):
        eval_script.main()


# ---------------------------------------------------------------- compare.py --plot

def fake_folder(path, results, curve=(), **assigned):
    """An experiment folder as compare.py reads it, without training: settings, eval_<label>.json files
    (label → (mIoU, EM iterations)), val.jsonl."""
    os.makedirs(path / 'logdir')
    os.makedirs(path / 'models')
    shutil.copy(os.path.join(ROOT, 'settings.py'), path)
    with open(path / 'settings.py', 'a') as f:
        f.writelines(f'{name} = {value!r}\n' for name, value in assigned.items())
    for label, (miou, stage_num) in results.items():
        (path / 'logdir' / f'eval_{label}.json').write_text(json.dumps(
            {'mIoU': miou, 'pAcc': 0.9, 'scales': [1.0], 'flip': False, 'window': None, 'stride': 8,
             'stage_num': stage_num}))
    (path / 'logdir' / 'val.jsonl').write_text(''.join(json.dumps({'step': s, 'mIoU': m}) + '\n' for s, m in curve))
    return str(path)


def drawn(figure):
    """[(title, x label, [(label, xs, ys)])] of each panel of a figure, as its lines hold them."""
    return [(ax.get_title(), ax.get_xlabel(), [(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
                                                for line in ax.get_lines()]) for ax in figure.axes]


def test_plot_of_a_one_setting_grid_is_one_line(tmp_path):
    """A STAGE_NUM grid evaluated as trained (EVAL_STAGE_NUM None follows STAGE_NUM in each result): one line of
    mIoU against STAGE_NUM, not a dot per value."""
    folders = [fake_folder(tmp_path / f't{t}', {'final': (t / 10, t)}, STAGE_NUM=t) for t in (1, 2, 3)]
    panels = compare.plot_data(compare.folder_names(folders), [compare.read_experiment(f) for f in folders])
    assert [(p['title'], p['xlabel']) for p in panels] == [('final', 'STAGE_NUM')]
    (label, xs, ys), = panels[0]['lines']
    assert (label, xs) == ('', [1, 2, 3]) and ys == pytest.approx([10, 20, 30])
    figure = compare.plot(panels, tmp_path / 'one.png')
    (title, xlabel, lines), = drawn(figure)
    assert (title, xlabel, len(lines)) == ('final', 'STAGE_NUM', 1)
    assert lines[0][1] == [1, 2, 3] and lines[0][2] == pytest.approx([10, 20, 30])
    strides = [fake_folder(tmp_path / f's{s}', {'final': (s / 100, 3)}, STRIDE=s) for s in (8, 16)]
    for folder, stride in zip(strides, (8, 16)):  # eval.py records the stride it evaluated at: STRIDE's
        result = json.loads((tmp_path / f's{stride}' / 'logdir' / 'eval_final.json').read_text())
        (tmp_path / f's{stride}' / 'logdir' / 'eval_final.json').write_text(json.dumps({**result, 'stride': stride}))
    panels = compare.plot_data(compare.folder_names(strides), [compare.read_experiment(f) for f in strides])
    assert panels[0]['xlabel'] == 'STRIDE' and len(panels[0]['lines']) == 1


def test_plot_of_a_one_setting_grid_with_a_missing_result_has_a_gap(tmp_path):
    """STAGE_NUM=2 not evaluated yet: a gap at 2 (NaN, its tick kept), not a line from 1 straight to 3."""
    folders = [fake_folder(tmp_path / f't{t}', {} if t == 2 else {'final': (t / 10, t)}, STAGE_NUM=t) for t in (1, 2, 3)]
    panels = compare.plot_data(compare.folder_names(folders), [compare.read_experiment(f) for f in folders])
    figure = compare.plot(panels, tmp_path / 'gap.png')
    (title, xlabel, [(_, xs, ys)]), = drawn(figure)
    assert (title, xlabel, xs) == ('final', 'STAGE_NUM', [1, 2, 3]) and list(figure.axes[0].get_xticks()) == [1, 2, 3]
    assert ys[::2] == pytest.approx([10, 30]) and math.isnan(ys[1])


def test_plot_data_of_a_two_by_two_grid(tmp_path):
    folders = [fake_folder(tmp_path / f'k{k}_t{t}', {} if (k, t) == (64, 2) else {'final': (k / 1000 + t / 100, t)},
                           [(2, 0.1 * t), (4, 0.2 + k / 1000)], N_BASES=k, STAGE_NUM=t)
               for k in (32, 64) for t in (1, 2)]
    names = compare.folder_names(folders)
    panels = compare.plot_data(names, [compare.read_experiment(f) for f in folders])
    curves, final, best = panels
    assert curves['xlabel'] == 'step' and curves['lines'][1][:2] == ('k32_t2', [2, 4])
    assert curves['lines'][1][2] == pytest.approx([20.0, 23.2])
    assert (final['title'], final['xlabel'], final['ylabel']) == ('final', 'N_BASES', 'mIoU (%)')
    (label1, x1, y1), (label2, x2, y2) = final['lines']
    assert (label1, label2, x1, x2) == ('STAGE_NUM = 1', 'STAGE_NUM = 2', [32, 64], [32, 64])
    assert y1 == pytest.approx([4.2, 7.4]) and y2[0] == pytest.approx(5.2) and math.isnan(y2[1])  # missing: NaN
    assert best['xlabel'] == 'N_BASES' and best['lines'][0][2] == pytest.approx([23.2, 26.4])
    figure = compare.plot(panels, tmp_path / 'two.png')
    assert list(figure.axes[1].get_xticks()) == [32, 64]  # a tick at each value of the setting, none between
    lines = drawn(figure)[1][2]
    assert [(label, xs) for label, xs, _ in lines] == [('STAGE_NUM = 1', [32, 64]), ('STAGE_NUM = 2', [32, 64])]
    assert lines[0][2] == pytest.approx([4.2, 7.4]) and math.isnan(lines[1][2][1])
    out = tmp_path / 'grid.png'
    result = run_script(tmp_path, os.path.join(ROOT, 'compare.py'), *folders, '--plot', str(out), '--csv')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith('experiment,recipe,N_BASES,STAGE_NUM,step,final mIoU')
    with Image.open(out) as image:
        assert image.format == 'PNG' and image.size == (1500, 400)  # three panels


def test_plot_data_draws_pytorchs_evaluations_not_an_onnx_files(tmp_path):
    """eval.py's results of an export.py file (eval_final_onnx.json, eval_final_bf16_onnx_openvino.json) hold the
    evaluation settings of PyTorch's own: drawn with them, they took their points (OpenVINO's bfloat16 mIoU drawn as
    EVAL_AMP = True's, the file that sorted last). They are the table's columns, not the figure's."""
    folders = []
    for k in (32, 64):
        folders.append(fake_folder(tmp_path / f'k{k}', {'final': (k / 1000, 3)}, N_BASES=k))
        for label, miou, precision, engine in (('final_bf16', k / 1000 + 0.01, 'bfloat16', 'pytorch'),
                                               ('final_onnx', 0.9, 'float32', 'onnxruntime'),
                                               ('final_bf16_onnx_openvino', 0.8, 'bfloat16', 'openvino'),
                                               ('final_onnx_openvino', 0.7, 'float32', 'openvino')):
            (tmp_path / f'k{k}' / 'logdir' / f'eval_{label}.json').write_text(json.dumps(
                {'mIoU': miou, 'scales': [1.0], 'flip': False, 'window': None, 'stride': 8, 'stage_num': 3,
                 'precision': precision, 'engine': engine}))
    experiments = [compare.read_experiment(f) for f in folders]
    [final] = compare.plot_data(compare.folder_names(folders), experiments)
    assert final['xlabel'] == 'EVAL_AMP'
    assert [(label, x, y) for label, x, y in final['lines']] == \
        [('N_BASES = 32', [False, True], pytest.approx([3.2, 4.2])), ('N_BASES = 64', [False, True],
                                                                        pytest.approx([6.4, 7.4]))]
    assert 'final_bf16_onnx_openvino mIoU' in compare.table(folders, experiments)[0]


def test_plot_data_of_fig4_across_evaluation_settings(tmp_path):
    """A STAGE_NUM grid evaluated with eval.py --set EVAL_STAGE_NUM=1,2,3: mIoU against T_eval, a line per T_train."""
    folders = [fake_folder(tmp_path / f't{t}', {('final' if e == t else f'final_stages{e}'): (t / 10 + e / 100, e)
                                                 for e in (1, 2, 3) if (t, e) != (2, 3)}, STAGE_NUM=t)
               for t in (1, 2)]
    panels = compare.plot_data(compare.folder_names(folders), [compare.read_experiment(f) for f in folders])
    assert [p['title'] for p in panels] == ['final']
    assert panels[0]['xlabel'] == 'EVAL_STAGE_NUM'
    (label1, x1, y1), (label2, x2, y2) = panels[0]['lines']
    assert (label1, label2, x1) == ('STAGE_NUM = 1', 'STAGE_NUM = 2', [1, 2, 3])
    assert y1 == pytest.approx([11, 12, 13]) and y2[:2] == pytest.approx([21, 22]) and math.isnan(y2[2])
    (title, xlabel, lines), = drawn(compare.plot(panels, tmp_path / 'fig4.png'))
    assert (title, xlabel, [label for label, _, _ in lines]) == ('final', 'EVAL_STAGE_NUM',
                                                                ['STAGE_NUM = 1', 'STAGE_NUM = 2'])
    assert lines[0][1] == [1, 2, 3] and lines[0][2] == pytest.approx([11, 12, 13])
