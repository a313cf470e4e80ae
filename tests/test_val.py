"""Validation while training (EVAL_EVERY, EVAL_IMAGES, val.jsonl, best.pth), eval.py's curve (TensorBoard at the
checkpoint's step, --all) and the protocol names that keep every protocol's results apart."""
import json
import math
import os
import re
import shutil
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dataset
import eval
import evaluation
import settings
import train
from harness import HANG_GUARD, ONE_THREAD, TWO_PROCESSES, make_experiment, run_script, start_training, wait_for

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
    assert evaluation.scalar_prefix(12) == '_'.join(filter(None, ('val', name, 'first12')))  # a subset's own tag
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


def test_best_pth_is_this_runs_only_if_val_jsonl_vouches_for_it(monkeypatch, tmp_path):
    """Whose best.pth it is comes from what it holds: its step and mIoU must be an evaluation val.jsonl lists.
    Otherwise (another run's; a copy; one that was damaged) it counts for nothing and is replaced, warned once."""
    monkeypatch.setattr(settings, 'LOG_DIR', str(tmp_path))
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    lines = ''.join(json.dumps({'step': step, 'mIoU': miou}) + '\n' for step, miou in ((2, 0.25), (4, 0.5)))
    warnings = []
    monkeypatch.setattr(train.logger, 'warning', lambda message, *args: warnings.append(message % args))
    for held, best in (({'step': 4, 'best_mIoU': 0.5}, 0.5),   # listed: this run's
                       ({'step': 2, 'best_mIoU': 0.25}, 0.25),  # an earlier best of this run, also listed
                       ({'step': 6, 'best_mIoU': 0.5}, -math.inf),   # a step val.jsonl does not hold
                       ({'step': 4, 'best_mIoU': 0.75}, -math.inf),  # the step, but another mIoU: another run's
                       ({'net': {}}, -math.inf)):                     # the authors' kind of file, no step
        (tmp_path / 'val.jsonl').write_text(lines)
        torch.save({'net': {}, **held}, tmp_path / 'best.pth')
        warnings.clear()
        assert train.validation_history(5) == (4, best), held
        assert len(warnings) == (best == -math.inf), held
    assert f"{tmp_path / 'best.pth'} is not this run's" in warnings[0]
    (tmp_path / 'best.pth').write_bytes(b'damaged')
    assert train.validation_history(5) == (4, -math.inf)
    assert 'best.pth is truncated or corrupt' in warnings[-2] and "is not this run's" in warnings[-1]


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
    experiment = make_experiment(tmp_path_factory.mktemp('val') / 'exp', demo_data, ITER_MAX=5, ITER_SAVE=2,
                                 EVAL_EVERY=2, VAL_SPLIT='val_three', CROP_SIZE=17)
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
    out['resumed_scalars'] = read_scalars(experiment / 'logdir')
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
    assert resumed.stderr.count('% (best ') == 1 and log[2]['n_images'] == 2  # the first 2 images of 3
    # a subset is tagged as one: its numbers never join the whole split's curve (the first run's step 5)
    assert f"step 5: val_first2 mIoU {100 * log[2]['mIoU']:.2f}%" in resumed.stderr
    scalars = trained['resumed_scalars']
    assert scalars['val_first2/mIoU'] == [(5, pytest.approx(log[2]['mIoU'], abs=1e-7))]
    assert scalars['val_first2/images'] == [(5, 2)] and 'val_first2_class/background' in scalars
    assert scalars['val/mIoU'] == trained['scalars']['val/mIoU'] and scalars['val/images'][-1] == (5, 3)
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


# ---------------------------------------------------------------- whose best.pth, which split: through train.py

def test_a_fresh_runs_best_pth_is_its_own_after_an_interruption(tmp_path, demo_data):
    """The issue's case: a best.pth left by a run of other settings, a fresh run stopped by SIGTERM before its
    first evaluation, then resumed: its first evaluation replaces best.pth, which then holds this run's weights,
    settings and the mIoU val.jsonl records."""
    dataset.write_lists({'val_two': dataset.read_ids('val', str(demo_data))[:2]}, str(demo_data))
    experiment = make_experiment(tmp_path / 'exp', demo_data, ITER_MAX=1000, ITER_SAVE=1000, EVAL_EVERY=1000,
                                 VAL_SPLIT='val_two', CROP_SIZE=17)
    (experiment / 'models').mkdir()
    earlier = {'net': {'fc2.bias': torch.ones(21)}, 'step': 3, 'best_mIoU': 0.9, 'settings': {'LR': 0.5}}
    torch.save(earlier, experiment / 'models' / 'best.pth')
    # stopped once it logged step 1: the evaluation at step 1000 is hundreds of steps away
    log = tmp_path / 'log'
    process = start_training(experiment, log)
    wait_for(log, 'step 1/1000', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=HANG_GUARD) == 128 + signal.SIGTERM, log.read_text()
    rest = log.read_text()
    stopped = int(re.search(r'latest.pth holds step (\d+)', rest).group(1))
    assert 'val mIoU' not in rest and val_log(experiment) == []
    assert "best.pth is not this run's" in rest  # the fresh run said so too
    with open(experiment / 'settings.py', 'a') as f:
        f.write(f'ITER_MAX = {stopped + 1}\n')
    resumed = run_script(experiment, 'train.py')
    assert resumed.returncode == 0, resumed.stderr
    assert "best.pth is not this run's (val.jsonl lists no evaluation of its step 3 with its mIoU 0.9)" in \
        resumed.stderr
    log = val_log(experiment)
    assert [entry['step'] for entry in log] == [stopped + 1]
    best = torch.load(experiment / 'models' / 'best.pth', weights_only=True)
    final = torch.load(experiment / 'models' / 'final.pth', weights_only=True)
    assert best['step'] == stopped + 1 and best['best_mIoU'] == log[0]['mIoU'] and best['settings'] == final['settings']
    assert same_weights(best['net'], final['net'])


def test_no_validation_on_a_split_without_labels(tmp_path, root):
    """VAL_SPLIT = 'test' (images only) with EVAL_EVERY: nothing to score, so no evaluation runs; the run says so
    once. A finished run started again says it again, and evaluates nothing either."""
    dataset.write_lists({'test': dataset.read_ids('val', root)[:3]}, root)
    experiment = make_experiment(tmp_path / 'exp', root, ITER_MAX=2, EVAL_EVERY=1, VAL_SPLIT='test')
    for run in range(2):
        done = run_script(experiment, 'train.py')
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("VAL_SPLIT='test' has images only, no labels to score: validation while training "
                                 "is skipped") == 1
        assert not [line for line in done.stderr.splitlines() if 'mIoU' in line and 'recipe:' not in line]  # no val
    assert val_log(experiment) == [] and not (experiment / 'models' / 'best.pth').exists()
    assert not any(tag.startswith('val') for tag in read_scalars(experiment / 'logdir'))
