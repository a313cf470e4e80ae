"""The research workflow as a user meets it, through the real scripts: misspelt settings, one run per
experiment folder (and the lock a killed run leaves; rank 0's lock under torchrun is checked by test_train's
torchrun run), continuing a finished run, and compare.py."""
import csv
import errno
import fcntl
import io
import json
import os
import re
import runpy
import signal
import socket

import pytest
import torch

from harness import HANG_GUARD, copy_code, make_experiment, run_script, start_training, stop, wait_for

import checkpoint
import settings


def append(experiment, **assignments):
    with open(experiment / 'settings.py', 'a') as f:
        f.writelines(f'{name} = {value!r}\n' for name, value in assignments.items())


def checkpoints(experiment):
    return {path.name: path.stat().st_mtime_ns for path in (experiment / 'models').glob('*.pth')}


# ---------------------------------------------------------------- misspelt settings

def test_every_setting_of_the_repository_is_read_by_its_code():
    assert settings.unread_settings() == {}


def test_misspelt_setting_stops_training_and_a_helper_only_warns(tmp_path, root):
    # helpers of the experiment's own: an underscore or lower-case name is no setting; an unknown name warns
    experiment = make_experiment(tmp_path / 'exp', root, ITER_MAX=1, ITER_SAVE=10000, _ROOT='/x', wibble=2, WIBBLE=3)
    trained = run_script(experiment, 'train.py')
    assert trained.returncode == 0, trained.stderr
    assert 'WIBBLE is not a setting that any code reads' in trained.stderr
    assert '_ROOT' not in trained.stderr and 'wibble' not in trained.stderr and 'did you mean' not in trained.stderr
    assert 'step 1/1 loss' in trained.stderr
    before = checkpoints(experiment)
    assert 'final.pth' in before

    append(experiment, EM_MOMENTUM=0.5)
    refused = run_script(experiment, 'train.py')
    assert refused.returncode != 0
    assert 'EM_MOMENTUM is not a setting; did you mean EM_MOM?' in refused.stderr
    assert 'Traceback' not in refused.stderr and 'training EMANet' not in refused.stderr
    assert 'this run is finished' not in refused.stderr  # stopped before it looked at the checkpoints
    assert checkpoints(experiment) == before  # nothing written

    evaluated = run_script(experiment, 'eval.py')  # evaluation only warns: the weights are what they are
    assert evaluated.returncode == 0, evaluated.stderr
    assert 'EM_MOMENTUM is not a setting; did you mean EM_MOM?' in evaluated.stderr
    assert json.loads((experiment / 'logdir' / 'eval_final.json').read_text())['step'] == 1


# ---------------------------------------------------------------- one run per experiment folder

def test_a_second_run_in_the_folder_is_refused_and_the_first_goes_on(tmp_path, root):
    experiment = make_experiment(tmp_path / 'exp', root, ITER_MAX=1000, ITER_SAVE=10000)
    log = tmp_path / 'log'
    first = start_training(experiment, log)
    try:
        wait_for(log, 'step 2/1000', first)
        second = run_script(experiment, 'train.py')
        assert second.returncode != 0
        assert str(experiment) in second.stderr  # the folder
        assert f'pid {first.pid} on {socket.gethostname()}' in second.stderr  # and who holds it
        assert 'Traceback' not in second.stderr
        assert not list((experiment / 'models').glob('*.pth'))  # the second run wrote nothing
        since = len(log.read_text())
        wait_for(log, ' loss ', first, since)  # the first run goes on
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=HANG_GUARD) == 128 + signal.SIGTERM, log.read_text()
    finally:
        stop(first)
    assert (experiment / 'models' / 'train.lock').read_text() == ''  # released


def test_a_killed_run_leaves_a_stale_lock_that_the_next_run_takes_over(tmp_path, root):
    experiment = make_experiment(tmp_path / 'exp', root, ITER_MAX=1000, ITER_SAVE=10000)
    log = tmp_path / 'log'
    killed = start_training(experiment, log)
    try:
        wait_for(log, 'step 1/1000', killed)
    finally:
        stop(killed)  # SIGKILL: no exit handler runs
    lock = experiment / 'models' / 'train.lock'
    holder = f'pid {killed.pid} on {socket.gethostname()}'
    assert lock.read_text().startswith(holder)
    append(experiment, ITER_MAX=1)
    again = run_script(experiment, 'train.py')
    assert again.returncode == 0, again.stderr
    assert f'taking over ./models/train.lock from a run that ended without releasing it ({holder}' in again.stderr
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['step'] == 1
    assert lock.read_text() == ''


def test_a_filesystem_without_posix_locks_is_named_not_taken_for_a_running_run(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    warnings = []
    monkeypatch.setattr(settings.logger, 'warning', lambda message, *args: warnings.append(message % args))

    def no_locks(file, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, 'lockf', no_locks)
    checkpoint.lock_model_dir()  # trains unlocked, saying so
    assert len(warnings) == 1 and 'does not support POSIX locks' in warnings[0] and 'train.lock' in warnings[0]
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path / 'settings.py'))  # a MODEL_DIR that is a file
    (tmp_path / 'settings.py').write_text('')
    with pytest.raises(checkpoint.CheckpointError, match='cannot write .*settings.py/train.lock'):
        checkpoint.lock_model_dir()


# ---------------------------------------------------------------- finished runs

def test_raising_iter_max_continues_a_finished_run(tmp_path, root):
    experiment = make_experiment(tmp_path / 'exp', root, ITER_MAX=1, ITER_SAVE=10000, LR_DECAY=1)
    first = run_script(experiment, 'train.py')
    assert first.returncode == 0, first.stderr
    assert 'step 1/1 loss' in first.stderr and ' lr 0.000e+00 ' in first.stderr  # poly: 0 at ITER_MAX
    append(experiment, ITER_MAX=3)
    again = run_script(experiment, 'train.py')
    assert again.returncode == 0, again.stderr
    assert 'resumed from ./models/latest.pth at step 1' in again.stderr
    assert 'this run is finished' not in again.stderr
    # the schedule is the new ITER_MAX's: the learning rate is back up at the resumed step
    assert 'step 2/3 loss ' in again.stderr and f' lr {1e-3 * (1 - 2 / 3) ** 0.9:.3e} ' in again.stderr
    assert 'step 1/' not in again.stderr
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['step'] == 3
    os.remove(experiment / 'models' / 'final.pth')  # a hard link of latest.pth: replaced, not cut short in place
    (experiment / 'models' / 'final.pth').write_bytes(b'PK cut short')
    finished = run_script(experiment, 'train.py')  # the finished run writes it again from latest.pth
    assert finished.returncode == 0 and 'this run is finished' in finished.stderr, finished.stderr
    assert torch.load(experiment / 'models' / 'final.pth', weights_only=True)['step'] == 3


# ---------------------------------------------------------------- compare.py

def fake_checkpoint(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'net': {'fc2.weight': torch.zeros(3, 3)}, 'step': step, 'optimizer': {}, 'scaler': {},
                'settings': {}}, path)


def fake_eval(path, checkpoint, step, miou, pacc, scales=(1.0,), flip=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'mIoU': miou, 'pAcc': pacc, 'mAcc': miou, 'fIoU': pacc, 'per_class': {},
                                'checkpoint': checkpoint, 'step': step, 'split': 'val', 'n_images': 1449,
                                'scales': list(scales), 'flip': flip, 'confusion': []}))


def compare_folders(tmp_path):
    """Experiment folders as compare.py finds them, made without training; (folders, the folder compare runs in)."""
    def experiment(name, **assignments):
        folder = copy_code(tmp_path / name)
        append(folder, **assignments)
        return folder

    base = experiment('emanet')  # the defaults: final.pth, single-scale evaluation
    fake_checkpoint(base / 'models' / 'latest.pth', 30000)
    fake_checkpoint(base / 'models' / 'final.pth', 30000)
    fake_eval(base / 'logdir' / 'eval_final.json', './models/final.pth', 30000, 0.80512, 0.95)
    k32 = experiment('exp_k32', EMA_CHANNELS=256, N_BASES=32)  # multi-scale + flip
    fake_checkpoint(k32 / 'models' / 'final.pth', 30000)
    fake_eval(k32 / 'logdir' / 'eval_final_ms_flip.json', './models/final.pth', 30000, 0.81234, 0.96106,
              scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)
    # validation while training: the best line of val.jsonl (the first of equals; a line cut short is left out)
    (k32 / 'logdir' / 'val.jsonl').write_text(''.join(json.dumps({'step': step, 'mIoU': miou}) + '\n' for step, miou
                                                      in ((2000, 0.6), (4000, 0.7913), (6000, 0.7913), (8000, 0.7)))
                                              + '{"step": 10000, "mIoU": 0.9')
    k16 = experiment('exp_k16', N_BASES=16, LOG_DIR='./runs')  # still training; its LOG_DIR elsewhere
    fake_checkpoint(k16 / 'models' / 'latest.pth', 1200)
    fake_eval(k16 / 'runs' / 'eval_latest.json', './models/latest.pth', 1200, 0.5, 0.9)
    torch.save({'net': {}, 'step': 1000, 'best_mIoU': 0.4567}, k16 / 'models' / 'best.pth')  # no val.jsonl
    fresh = experiment('exp_fresh', N_BASES=8)  # no results yet
    broken = experiment('exp_broken', N_BASES=4)
    (broken / 'models').mkdir()
    (broken / 'models' / 'latest.pth').write_bytes(b'not a checkpoint')
    # a settings.py that runs only on its cluster: the settings its run wrote are read instead
    cluster = copy_code(tmp_path / 'exp_cluster')
    with open(cluster / 'settings.py', 'a') as f:
        f.write("_NODE = os.environ['EMANET_TEST_NEVER_SET']\n")
    defaults = runpy.run_path(str(base / 'settings.py'))
    written = {name: value for name, value in defaults.items() if name.isupper() and not name.startswith('_')}
    written['N_BASES'] = 48
    (cluster / 'logdir').mkdir()
    (cluster / 'logdir' / 'settings.txt').write_text(
        ''.join(f'{name} = {value!r}\n' for name, value in written.items() if name != 'DEVICE')
        + "DEVICE = device(type='cuda', index=0)\n")  # a value that is no literal
    notes = tmp_path / 'notes'
    notes.mkdir()
    return [base, k32, k16, fresh, broken, cluster, notes], base


EXPECTED_COLUMNS = ['experiment', 'recipe', 'EMA_CHANNELS', 'N_BASES', 'LOG_DIR', 'DEVICE', 'step', 'final mIoU', 'final pAcc',
                    'final_ms_flip mIoU', 'final_ms_flip pAcc', 'latest mIoU', 'latest pAcc', 'best val mIoU',
                    'best val step', 'notes']
EXPECTED = {  # None: missing ('-' in the tables, an empty cell in csv); the recipe closest to each folder's settings
    'emanet': ['paper VOC', '512', '64', './logdir', 'None', '30000', '80.51', '95.00', None, None, None, None, None, None],
    'exp_k32': ['paper VOC 256, 1 differs', '256', '32', './logdir', 'None', '30000', None, None, '81.23', '96.11', None, None, '79.13', '4000'],
    'exp_k16': ['paper VOC, 1 differs', '512', '16', './runs', 'None', '1200', None, None, None, None, '50.00', '90.00', '45.67', '1000'],
    'exp_fresh': ['paper VOC, 1 differs', '512', '8', './logdir', 'None', None, None, None, None, None, None, None, None, None],
    'exp_broken': ['paper VOC, 1 differs', '512', '4', './logdir', 'None', None, None, None, None, None, None, None, None, None],
    'exp_cluster': ['paper VOC, 1 differs', '512', '48', './logdir', "device(type='cuda', index=0)", None, None, None,
                    None, None, None, None, None, None],
}
EXPECTED_NOTES = {'emanet': [], 'exp_k32': [], 'exp_k16': ['not finished'],
                  'exp_fresh': ['no checkpoint yet', 'no eval yet'],
                  'exp_broken': ['latest.pth is truncated or corrupt', 'no eval yet'],
                  'exp_cluster': ['settings from ./logdir/settings.txt', 'KeyError', 'no checkpoint yet']}


def check_rows(rows, missing):
    """rows: cells by column name, one per folder, in the order given."""
    assert [row['experiment'] for row in rows] == list(EXPECTED)
    for row in rows:
        name = row['experiment']
        expected = [missing if cell is None else cell for cell in EXPECTED[name]]
        assert [row[column] for column in EXPECTED_COLUMNS[1:-1]] == expected, name
        assert all(note in row['notes'] for note in EXPECTED_NOTES[name]), (name, row['notes'])
    assert 'no eval yet' not in rows[0]['notes'] and 'no eval yet' not in rows[2]['notes']


def test_compare_shows_the_settings_that_differ_the_steps_and_the_metrics(tmp_path):
    folders, here = compare_folders(tmp_path)
    folders = [str(folder) for folder in folders]
    plain = run_script(here, 'compare.py', *folders)
    assert plain.returncode == 0, plain.stderr
    assert f'{folders[-1]} is not an experiment folder (no settings.py)' in plain.stderr
    assert 'exp_cluster: settings.py does not run' in plain.stderr
    lines = plain.stdout.splitlines()
    # aligned: the dashes under the header mark where each column starts and ends
    spans = [m.span() for m in re.finditer('-+', lines[1])]
    cells = [[line[start:end if i < len(spans) - 1 else None].strip() for i, (start, end) in enumerate(spans)]
             for line in lines]
    assert cells[0] == EXPECTED_COLUMNS and len(lines) == 2 + 6
    check_rows([dict(zip(cells[0], row)) for row in cells[2:]], '-')

    markdown = run_script(here, 'compare.py', '--markdown', *folders)
    assert markdown.returncode == 0, markdown.stderr
    table, deviations = markdown.stdout.split('\n\n')
    assert deviations.splitlines() == ['Deviations from the published recipe (DATASETS.md) of each row:'] + [
        line for name, bases in (('exp_k32', 32), ('exp_k16', 16), ('exp_fresh', 8), ('exp_broken', 4),
                                 ('exp_cluster', 48))
        for line in (f'- {name}: {EXPECTED[name][0]}', f"  - N_BASES {bases}, the recipe's 64")]
    lines = table.splitlines()
    cells = [[cell.strip() for cell in line.strip().strip('|').split(' | ')] for line in lines]
    assert cells[0] == EXPECTED_COLUMNS and set(lines[1].replace(' ', '')) == set('|-:')
    check_rows([dict(zip(cells[0], row)) for row in cells[2:]], '-')

    table = run_script(here, 'compare.py', '--csv', *folders)
    assert table.returncode == 0, table.stderr
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert list(rows[0]) == EXPECTED_COLUMNS
    check_rows(rows, '')

    alone = run_script(here, 'compare.py', str(tmp_path / 'notes'))
    assert alone.returncode != 0 and 'no experiment folder' in alone.stderr


def test_compare_reads_the_step_without_loading_the_weights(tmp_path, monkeypatch):
    import compare
    fake_checkpoint(tmp_path / 'final.pth', 7)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *args, **kwargs: loads.append(kwargs) or real_load(*args, **kwargs))
    assert compare.checkpoint_step(tmp_path / 'final.pth') == 7
    assert loads == [dict(map_location='cpu', weights_only=True, mmap=True)]
