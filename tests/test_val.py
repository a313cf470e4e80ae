"""Validation while training (EVAL_EVERY, EVAL_IMAGES, val.jsonl, best.pth), eval.py's curve (TensorBoard at the
checkpoint's step, --all) and the protocol names that keep every protocol's results apart."""
import json
import math
import os
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dataset
import eval
import evaluation
import settings
import train
from conftest import ONE_THREAD, TWO_PROCESSES, make_experiment, run_script

pytestmark = pytest.mark.xdist_group(__name__)  # one worker of pytest -n builds the module fixture once

METRICS = ('mIoU', 'pAcc', 'mAcc', 'fIoU', 'per_class', 'n_images')


def read_scalars(log_dir):
    """{tag: [(step, value), ...]} of every event file in log_dir, in the order they were written."""
    events = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}


def val_log(experiment):
    return evaluation.read_val_log(experiment / 'logdir' / 'val.jsonl')


def weights(path):
    return torch.load(path, weights_only=True)['net']


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the protocol's name, in process

@pytest.mark.parametrize('assignments, name', [
    ({}, ''),
    ({'EVAL_SCALES': (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), 'EVAL_FLIP': True}, 'ms_flip'),
    ({'EVAL_SCALES': [0.75, 1, 1.25]}, 'ms0.75-1-1.25'),
    ({'EVAL_SCALES': (0.5,)}, 'x0.5'),
    ({'EVAL_FLIP': True}, 'flip'),
    ({'EVAL_WINDOW': 769}, 'window769'),
    ({'EVAL_WINDOW': (513, 1025)}, 'window513x1025'),
    ({'EVAL_STRIDE': 8}, ''),  # the training stride: the authors' protocol
    ({'STRIDE': 16, 'EVAL_STRIDE': 8}, 'os8'),
    ({'EVAL_STAGE_NUM': 5}, 'stages5'),
    ({'EVAL_STAGE_NUM': 3}, ''),
])
def test_protocol_names_tags_and_files(monkeypatch, assignments, name):
    for key, value in assignments.items():
        monkeypatch.setattr(settings, key, value)
    monkeypatch.setattr(settings, 'LOG_DIR', 'logs')
    assert evaluation.protocol() == name
    assert evaluation.scalar_prefix() == ('val_' + name if name else 'val')
    assert eval.result_path('models/final.pth') == os.path.join('logs', f'eval_final_{name}.json' if name else
                                                                'eval_final.json')


def test_validation_history_of_a_resumed_and_of_a_fresh_run(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'LOG_DIR', str(tmp_path))
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    lines = [json.dumps({'step': step, 'mIoU': miou}) + '\n' for step, miou in ((2, 0.25), (4, 0.5))]
    (tmp_path / 'val.jsonl').write_text(''.join(lines) + '{"step": 6, "mIo')  # killed while writing
    torch.save({'net': {}, 'step': 4, 'best_mIoU': 0.5}, tmp_path / 'best.pth')
    assert train.validation_history(3) == (4, 0.5)
    assert (tmp_path / 'val.jsonl').read_text() == ''.join(lines)  # the cut line is gone, the others kept
    assert train.validation_history(0) == (0, -math.inf)  # a fresh run: nothing of an earlier one counts
    assert (tmp_path / 'val.jsonl').read_text() == ''


def test_eval_report_writes_the_protocols_file_and_tensorboard_curve(monkeypatch, tmp_path):
    from tensorboardX import SummaryWriter
    monkeypatch.setattr(settings, 'LOG_DIR', str(tmp_path))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    confusion = torch.zeros(21, 21, dtype=torch.int64)
    confusion[0, 0], confusion[0, 1], confusion[1, 1] = 6, 2, 4  # background IoU 6/8, aeroplane 4/6
    writer = SummaryWriter(str(tmp_path))
    eval.report(confusion.numpy(), 'models/step_10.pth', 10, 2, writer)
    writer.close()
    with open(tmp_path / 'eval_step_10_flip.json') as f:
        result = json.load(f)
    assert result['protocol'] == 'flip' and result['mIoU'] == pytest.approx((6 / 8 + 4 / 6) / 2)
    scalars = read_scalars(tmp_path)
    assert scalars['val_flip/mIoU'] == [(10, pytest.approx((6 / 8 + 4 / 6) / 2))]
    assert scalars['val_flip/pAcc'] == [(10, pytest.approx(10 / 12))] and scalars['val_flip/images'] == [(10, 2)]
    assert scalars['val_flip_class/aeroplane'] == [(10, pytest.approx(4 / 6))]
    assert 'val_flip_class/bird' not in scalars and not any(tag.startswith('val/') for tag in scalars)


# ---------------------------------------------------------------- training with EVAL_EVERY, under torchrun

@pytest.fixture(scope='module')
def trained(tmp_path_factory, demo_data):
    """Five tiny steps under torchrun with 2 processes, evaluated on 3 val images (one process takes 2, the other
    1) at steps 2, 4 and 5 (the end). Then the folder as a run killed after its evaluation of step 4 leaves it
    when its last latest.pth was that of step 2, resumed with EVAL_IMAGES = 2."""
    dataset.write_lists({'val_three': dataset.read_ids('val', str(demo_data))[:3]}, str(demo_data))
    experiment = make_experiment(tmp_path_factory.mktemp('val') / 'exp', demo_data, ITER_MAX=5, EVAL_EVERY=2,
                                 VAL_SPLIT='val_three', EMA_CHANNELS=256, CROP_SIZE=17)
    models = experiment / 'models'
    first = run_script(experiment, *TWO_PROCESSES, 'train.py', env=ONE_THREAD)
    assert first.returncode == 0, first.stderr
    out = {'experiment': experiment, 'first': first, 'scalars': read_scalars(experiment / 'logdir'),
           'log': val_log(experiment), 'final': weights(models / 'final.pth'),
           'best': torch.load(models / 'best.pth', weights_only=True)}
    shutil.copy(models / 'step_2.pth', models / 'latest.pth')
    os.remove(models / 'final.pth')
    lines = (experiment / 'logdir' / 'val.jsonl').read_text().splitlines(keepends=True)
    (experiment / 'logdir' / 'val.jsonl').write_text(''.join(lines[:2]))
    with open(experiment / 'settings.py', 'a') as f:
        f.write('EVAL_IMAGES = 2\n')
    out['resumed'] = run_script(experiment, *TWO_PROCESSES, 'train.py', env=ONE_THREAD)
    out['resumed_log'] = val_log(experiment)
    out['resumed_final'] = weights(models / 'final.pth')
    out['resumed_best'] = torch.load(models / 'best.pth', weights_only=True)
    return out


def check_best(best, log, experiment):
    """best.pth is the checkpoint of the step with the best mIoU in val.jsonl (the first of equals)."""
    top = max(log, key=lambda entry: entry['mIoU'])
    assert best['step'] == top['step'] and best['best_mIoU'] == top['mIoU']
    name = 'final.pth' if top['step'] == 5 else f"step_{top['step']}.pth"
    assert same_weights(best['net'], weights(experiment / 'models' / name))
    assert {'optimizer', 'scaler', 'settings'} <= set(best)  # a whole checkpoint, as the others


def test_evaluations_at_every_eval_every_steps_and_the_end(trained):
    log = trained['log']
    assert [entry['step'] for entry in log] == [2, 4, 5]
    assert all(entry['n_images'] == 3 and entry['split'] == 'val_three' and entry['protocol'] == '' for entry in log)
    assert all(set(METRICS) <= set(entry) and list(entry['per_class']) == list(dataset.VOC_CLASSES) for entry in log)
    scalars = trained['scalars']
    assert [step for step, _ in scalars['val/mIoU']] == [2, 4, 5]
    for key in ('mIoU', 'pAcc', 'mAcc'):  # TensorBoard holds what val.jsonl holds (as float32)
        assert [value for _, value in scalars[f'val/{key}']] == pytest.approx([e[key] for e in log], abs=1e-7)
    assert scalars['val/images'] == [(2, 3), (4, 3), (5, 3)]
    assert [value for _, value in scalars['val_class/background']] == \
        pytest.approx([e['per_class']['background'] for e in log], abs=1e-7)
    stderr = trained['first'].stderr
    for entry in log:
        assert f"step {entry['step']}: val mIoU {100 * entry['mIoU']:.2f}% " in stderr
    assert stderr.count(' 3 val_three images in ') == 3  # rank 0 alone logs
    check_best(trained['best'], log, trained['experiment'])


def test_a_resume_does_not_repeat_a_logged_evaluation_and_evaluations_leave_the_weights_alone(trained):
    resumed = trained['resumed']
    assert resumed.returncode == 0, resumed.stderr
    assert 'resumed from ./models/latest.pth at step 2' in resumed.stderr and 'step 5/5 loss' in resumed.stderr
    log = trained['resumed_log']
    assert [entry['step'] for entry in log] == [2, 4, 5] and log[:2] == trained['log'][:2]  # 4 not again
    assert resumed.stderr.count('val mIoU') == 1 and log[2]['n_images'] == 2  # the first 2 images of 3
    # the first run evaluated after steps 2 and 4, this one never before step 5: the same weights
    assert same_weights(trained['resumed_final'], trained['final'])
    check_best(trained['resumed_best'], log, trained['experiment'])  # the best of both runs


def test_eval_all_fills_the_curve_with_what_training_measured(trained):
    experiment, log_dir = trained['experiment'], trained['experiment'] / 'logdir'
    with open(experiment / 'settings.py', 'a') as f:
        f.write('EVAL_IMAGES = None\n')
    (log_dir / 'eval_step_2.json').write_text('{}')  # evaluated before: --all leaves it alone
    every = run_script(experiment, 'eval.py', '--all', env=ONE_THREAD)
    assert every.returncode == 0, every.stderr
    assert '1 step_<N>.pth in ./models to evaluate' in every.stderr
    assert (log_dir / 'eval_step_2.json').read_text() == '{}'
    with open(log_dir / 'eval_step_4.json') as f:
        single = json.load(f)  # one process evaluating every image gives what the two processes' shards gave
    assert single['step'] == 4 and single['protocol'] == ''
    assert {key: single[key] for key in METRICS} == {key: trained['log'][1][key] for key in METRICS}
    assert read_scalars(log_dir)['val/mIoU'][-1] == (4, pytest.approx(single['mIoU'], abs=1e-7))
