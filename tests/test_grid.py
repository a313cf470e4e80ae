"""grid.py as a user drives it: make (names, the clean copy, refusals before anything is written), run over
folders of which one fails and one was interrupted (resumed to the weights of an uninterrupted run), skipped
when done, Ctrl-C, the same through submitit's local executor, status; eval.py --set against settings.py;
compare.py --plot's data. One module fixture trains the folders that the tests read."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from harness import (HANG_GUARD, ROOT, SPLITS, ForkedScript, block_sample, copy_code, make_experiment, run_script,
                      write_root)

import compare
import grid
import settings

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixture once

# --each blocks: A trains uninterrupted; B has A's settings and starts from A's step_2.pth as latest.pth (a run
# killed after step 2); C and G fail (a crop smaller than the output stride); D is never run; E is stopped by
# Ctrl-C; F is B again, through submitit
BLOCKS = """CROP_SIZE = 33

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
"""
A, B, C, D, E, F, G = ('g_CROP_SIZE33', 'g_CROP_SIZE33_SEED66', 'g_CROP_SIZE4', 'g_CROP_SIZE33_SEED1',
                       'g_CROP_SIZE33_ITER_MAX1000_ITER_SAVE1000', 'g_CROP_SIZE33_LR0.001', 'g_CROP_SIZE5')
SPEC = 'EVAL_STAGE_NUM=1;EVAL_STRIDE=16'  # one more protocol, named os16_stages1: a net built otherwise


def grid_py(tmp, *args, **kwargs):
    return run_script(tmp, str(tmp / 'base' / 'grid.py'), *args, **kwargs)


def weights(folder, name='final.pth'):
    return torch.load(folder / 'models' / name, weights_only=True)['net']


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
    assert made.stdout.split() == [A, B, C, D, E, F, G]
    first = grid_py(tmp, 'run', A, '--eval', SPEC)
    assert first.returncode == 0, first.stderr
    for folder in (B, F):  # killed after step 2: latest.pth of step 2, nothing after it
        shutil.copy(tmp / A / 'models' / 'step_2.pth', tmp / folder / 'models' / 'latest.pth')
    second = grid_py(tmp, 'run', A, B, C, '--eval', SPEC)
    third = grid_py(tmp, 'run', A, B, '--eval', SPEC)
    return tmp, first, second, third


def status_of(tmp, folder):
    return json.loads((tmp / folder / 'grid_status.json').read_text())


# ---------------------------------------------------------------- make

def test_make_copies_code_and_docs_only_and_appends_the_settings(tmp_path):
    base = copy_code(tmp_path / 'base')
    for name in ('README.md', 'requirements.txt', '.gitignore'):
        shutil.copy(os.path.join(ROOT, name), base)
    os.makedirs(base / 'models')
    shutil.copy(os.path.join(ROOT, 'models', 'README.md'), base / 'models')
    planted = ['models/final.pth', 'models/resnet50s.pth', 'logdir/eval_final.json', 'data/VOC2012/a.jpg',
               'exp_old/settings.py', '__pycache__/settings.cpython-312.pyc', 'final.pth', 'grid_train.log',
               'grid_status.json']
    for path in planted:
        os.makedirs((base / path).parent, exist_ok=True)
        (base / path).write_bytes(b'x')
    made = run_script(tmp_path, 'base/grid.py', 'make', 'abl/k', 'N_BASES=4,8', "EM_NORM='l2','none'",
                      'EVAL_SCALES=(1.0,),(0.5,1.0)')
    assert made.returncode == 0, made.stderr
    names = [f'k_N_BASES{k}_EM_NORM{norm}_EVAL_SCALES{scales}' for k in (4, 8) for norm in ('l2', 'none')
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
                         "'\"'\"'none'\"'\"'' 'EVAL_SCALES=(1.0,),(0.5,1.0)'\n"
                         "N_BASES = 8\nEM_NORM = 'l2'\nEVAL_SCALES = (0.5, 1.0)\n")
    values = settings.folder_settings(folder)
    assert (values['N_BASES'], values['EM_NORM'], values['EVAL_SCALES']) == (8, 'l2', (0.5, 1.0))


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
        status = status_of(tmp, folder)
        assert status['state'] == 'finished' and status['evaluated'] == {'eval.py': 4, SPEC: 4}
        assert sorted(os.listdir(tmp / folder / 'logdir')) == [
            'eval_final.json', 'eval_final_os16_stages1.json', *sorted(
                f for f in os.listdir(tmp / folder / 'logdir') if f.startswith('events')), 'settings.txt']
    failed = status_of(tmp, C)
    assert failed['state'] == 'failed' and failed['returncode'] == 1 and failed['command'] == 'python train.py'
    assert 'CROP_SIZE=4 is smaller than the output stride STRIDE=8' in failed['tail'][-1]
    # the third run starts nothing for A and B: their logs are as the second left them
    assert third.returncode == 0, third.stderr
    assert all(f'{folder}: finished and evaluated, skipped' in third.stderr for folder in (A, B))
    assert (tmp / B / 'grid_eval.log').read_text().count('==== ') == 2


@pytest.mark.long
def test_status_lines(ran):
    tmp = ran[0]
    result = grid_py(tmp, 'status', A, C, D)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ['folder', 'state', 'step', 'ETA', 'best', 'val', 'mIoU', 'recipe']
    # the recipe column, counted by hand: the grid's tiny settings against 'paper VOC' differ in N_LAYERS,
    # PRETRAINED, CROP_SIZE, BATCH_SIZE, images per BatchNorm, BN_MOM, LR, ITER_MAX, EMA_CHANNELS and N_BASES; against
    # 'paper ablation' as many (STRIDE for N_LAYERS), and the paper's VOC recipe comes first
    recipe = ['paper', 'VOC,', '10', 'differ']
    assert lines[0].split() == [A, 'finished', '4/4', '-', '-', *recipe]  # as the run recorded it
    assert lines[1].startswith(C) and 'failed (python train.py: CROP_SIZE=4 is smaller' in lines[1]
    assert lines[1].split()[-7:] == ['0/4', '-', '-', *recipe]
    assert lines[2].split() == [D, 'waiting', '0/4', '-', '-', *recipe]  # from its settings


@pytest.mark.long
def test_ctrl_c_stops_the_run_which_saves_latest(ran):
    tmp = ran[0]
    command = [sys.executable, str(tmp / 'base' / 'grid.py'), 'run', E]
    with ForkedScript(command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.time() + HANG_GUARD
        log = tmp / E / 'grid_train.log'
        while not (log.exists() and 'step 1/1000' in log.read_text()):
            assert time.time() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.5)
        status = grid_py(tmp, 'status', E)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=HANG_GUARD)
    line = status.stdout.splitlines()[1].split()
    assert line[:4] == [E, 'training', 'on', 'CPU'] and line[4].endswith('/1000') and ':' in line[5]
    assert process.returncode == 128 + signal.SIGINT
    assert f'stopped by SIGINT: each run saved latest.pth. To continue: python {command[1]} run {E}' in err
    assert status_of(tmp, E)['state'] == 'interrupted'
    assert torch.load(tmp / E / 'models' / 'latest.pth', weights_only=True)['step'] >= 1
    assert 'stopped by a signal: latest.pth holds step' in log.read_text()


def test_what_a_folder_still_needs(tmp_path):
    """train.py until final.pth holds ITER_MAX; then each evaluation that grid_status.json has not recorded for
    that step; and the commands for them."""
    folder = tmp_path / 'exp'
    fake_folder(folder, {}, ITER_MAX=4)
    assert grid.remaining(folder, [SPEC]) == (True, ['', SPEC])
    torch.save({'net': {}, 'step': 3}, folder / 'models' / 'final.pth')  # ITER_MAX raised after a run: train on
    assert grid.remaining(folder, [SPEC]) == (True, ['', SPEC])
    torch.save({'net': {}, 'step': 4}, folder / 'models' / 'final.pth')
    assert grid.remaining(folder, [SPEC]) == (False, ['', SPEC])
    grid.write_status(folder, evaluated={'eval.py': 4, SPEC: 3})  # SPEC of an earlier final.pth
    assert grid.remaining(folder, [SPEC]) == (False, [SPEC])
    grid.write_status(folder, evaluated={'eval.py': 4, SPEC: 4})
    assert grid.remaining(folder, [SPEC]) == (False, []) and grid.remaining(folder, []) == (False, [])
    grid.write_status(folder, evaluated={})
    assert grid.commands(folder, [SPEC], 2) == [
        ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'eval.py'],
         grid.EVAL_LOG, 'eval.py'),
        ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'eval.py',
          '--set', 'EVAL_STAGE_NUM=1', '--set', 'EVAL_STRIDE=16'], grid.EVAL_LOG, SPEC)]


def test_gpu_slots():
    assert grid.gpu_slots('0,1,2,3', 2) == [('0', '1'), ('2', '3')]
    assert grid.gpu_slots('4,5,6', 1) == [('4',), ('5',), ('6',)]
    assert grid.gpu_slots('0,1,2', 2) == [('0', '1')]  # GPU 2 idle, with a warning
    assert grid.gpu_slots('', 1) == [None]  # no GPU: one run at a time on the CPU
    with pytest.raises(ValueError, match='--gpus-per-run 4 but only 2 GPUs'):
        grid.gpu_slots('0,1', 4)


# ---------------------------------------------------------------- Slurm through submitit's local executor

@pytest.mark.long
def test_submitit_local_executor_resumes_records_failures_and_skips(ran):
    tmp = ran[0]
    first = grid_py(tmp, 'run', F, G, '--slurm', 'local')
    assert first.returncode == 0, first.stderr
    assert same_weights(weights(tmp / A), weights(tmp / F))
    assert 'resumed from ./models/latest.pth at step 2' in (tmp / F / 'grid_train.log').read_text()
    status = status_of(tmp, F)
    assert status['state'] == 'finished' and status['where'].startswith('job ')
    assert status_of(tmp, G)['state'] == 'failed'
    assert 'CROP_SIZE=5 is smaller' in status_of(tmp, G)['tail'][-1]
    again = grid_py(tmp, 'run', F, '--slurm', 'local')
    assert again.returncode == 0 and f'{F}: finished and evaluated, skipped' in again.stderr
    assert (tmp / F / 'grid_eval.log').read_text().count('==== ') == 1


def test_a_job_at_its_time_limit_stops_its_run_and_requeues_itself():
    job = grid.FolderJob('/somewhere/exp', ['--gpus-per-run', '2'])
    job.process = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    requeued = job.checkpoint()
    assert job.process.returncode == -signal.SIGTERM  # stopped, and waited for
    again = requeued.function
    assert isinstance(again, grid.FolderJob) and (again.folder, again.options) == (job.folder, job.options)
    assert requeued.args == () and again.process is None
    assert job.__getstate__()['process'] is None  # what submitit pickles


# ---------------------------------------------------------------- eval.py --set

@pytest.mark.long
def test_eval_set_equals_editing_settings(ran, tmp_path):
    tmp = ran[0]
    edited = tmp_path / 'edited'
    shutil.copytree(tmp / A, edited, copy_function=os.link)  # checkpoints shared: nothing writes into them
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


def test_plot_data_of_a_two_by_two_grid(tmp_path):
    folders = [fake_folder(tmp_path / f'k{k}_t{t}', {} if (k, t) == (64, 2) else {'final': (k / 1000 + t / 100, t)},
                           [(2, 0.1 * t), (4, 0.2 + k / 1000)], N_BASES=k, STAGE_NUM=t)
               for k in (32, 64) for t in (1, 2)]
    names = compare.folder_names(folders)
    curves, final, best = compare.plot_data(names, [compare.read_experiment(f) for f in folders])
    assert curves['xlabel'] == 'step' and curves['lines'][1][:2] == ('k32_t2', [2, 4])
    assert curves['lines'][1][2] == pytest.approx([20.0, 23.2])
    assert (final['xlabel'], final['ylabel']) == ('N_BASES', 'mIoU (%)')
    (label1, x1, y1), (label2, x2, y2) = final['lines']
    assert (label1, label2, x1, x2) == ('STAGE_NUM = 1', 'STAGE_NUM = 2', [32, 64], [32, 64])
    assert y1 == pytest.approx([4.2, 7.4]) and y2[0] == pytest.approx(5.2) and math.isnan(y2[1])  # missing: NaN
    assert best['xlabel'] == 'N_BASES' and best['lines'][0][2] == pytest.approx([23.2, 26.4])
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
