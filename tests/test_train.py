"""train.py: the recipe, checkpoints, exact resume, interruptions, DDP, and every early error.

Also a script: under torchrun (or plain python) `python tests/test_train.py ddp-step OUT` runs two
training steps on a fixed global batch and saves the weights, for the DDP equivalence test.
"""
import errno
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import time

import pytest
import torch

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
else:
    from harness import (HANG_GUARD, ONE_THREAD, ROOT, TINY, TORCHRUN, TWO_PROCESSES, Payload, make_experiment,
                          processes_in, run_script, start_training, stop, wait_for)

import checkpoint
import network
import runtime
import settings
import train


# ---------------------------------------------------------------- the recipe, in process

def test_param_groups_cover_every_trainable_parameter_once(monkeypatch):
    monkeypatch.setattr(settings, 'N_LAYERS', 50)
    net = network.EMANet()
    groups = train.param_groups(net)
    grouped = [id(p) for g in groups for p in g['params']]
    assert len(grouped) == len(set(grouped))
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert trainable <= set(grouped)
    assert set(grouped) - trainable == {id(net.emau.conv1.weight), id(net.emau.conv1.bias)}  # frozen, no grad
    assert [g['weight_decay'] for g in groups] == [settings.WEIGHT_DECAY, 0.0, 0.0]
    assert id(net.fc2.bias) in {id(p) for p in groups[2]['params']}
    assert id(net.fc0.bn.weight) in {id(p) for p in groups[1]['params']}


def test_poly_lr_every_lr_decay_steps_with_double_bias_lr(monkeypatch):
    monkeypatch.setattr(settings, 'ITER_MAX', 100)
    monkeypatch.setattr(settings, 'LR_DECAY', 10)
    assert train.poly_lr(1) == train.poly_lr(9) == settings.LR
    assert train.poly_lr(10) == pytest.approx(settings.LR * 0.9 ** settings.POLY_POWER)
    assert train.poly_lr(19) == train.poly_lr(10)
    assert train.poly_lr(100) == 0
    optimizer = torch.optim.SGD(train.param_groups(network.EMANet(21, 50)), lr=1)
    lr = train.set_lr(optimizer, 55)
    assert [g['lr'] for g in optimizer.param_groups] == [lr, lr, 2 * lr]
    assert lr == pytest.approx(settings.LR * 0.5 ** settings.POLY_POWER)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batches_resume_exactly_and_differ_between_processes():
    full = take(train.train_batches(20, 3, 0, 2, first_step=1), 8)
    assert take(train.train_batches(20, 3, 0, 2, first_step=5), 4) == full[4:]
    other_rank = take(train.train_batches(20, 3, 1, 2, first_step=1), 3)
    epoch0 = [i for batch in full[:3] + other_rank for i, _ in batch]
    assert len(set(epoch0)) == 18  # one epoch, split across the processes without overlap
    assert {seed for _, seed in full[0]}.isdisjoint({seed for _, seed in other_rank[0]})
    assert sorted(i for b in full[:3] for i, _ in b) != sorted(i for b in full[3:6] for i, _ in b)


def test_float16_step_with_gradient_scaler():
    """AMP on a GPU without bfloat16, run on CPU: a step whose scaled float16 gradients overflow
    is skipped and halves the scale, the next one trains; the loss and the bases stay float32."""
    net = network.EMANet(21, 50).train()
    for frozen in (net.extractor, net.fc0):
        frozen.requires_grad_(False)  # CPU float16 backward through them takes seconds
    optimizer = sgd(net)
    train.set_lr(optimizer, 1)
    img, label = torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33))
    weights, bases = net.fc2.weight.clone(), net.emau.mu.clone()
    overflowing = torch.amp.GradScaler('cpu', init_scale=2.0 ** 100)
    loss = network.train_step(net, net, optimizer, overflowing, img, label, torch.float16, 1, 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.equal(net.fc2.weight, weights) and not optimizer.state  # skipped
    assert overflowing.get_scale() == 2.0 ** 99
    assert net.emau.mu.dtype == torch.float32 and not torch.equal(net.emau.mu, bases)
    scaler = torch.amp.GradScaler('cpu', init_scale=1.0)
    network.train_step(net, net, optimizer, scaler, img, label, torch.float16, 2, 0)
    assert not torch.equal(net.fc2.weight, weights) and torch.isfinite(net.fc2.weight).all()
    assert scaler.get_scale() == 1.0


# ---------------------------------------------------------------- early errors, as a user meets them

@pytest.mark.parametrize('name, value', [('N_LAYERS', 34), ('STRIDE', 4), ('EM_NORM', 'l1')])
def test_bad_architecture_settings_are_named(monkeypatch, name, value):
    monkeypatch.setattr(settings, name, value)
    with pytest.raises(ValueError, match=f'{name}={value!r}'):
        network.EMANet()


@pytest.mark.parametrize('overrides, message', [
    (dict(DATA_ROOT='/nonexistent/voc'), 'DATA_ROOT.*/nonexistent/voc'),
    (dict(TRAIN_SPLIT='trainbig'), "TRAIN_SPLIT.*'trainbig'"),
    (dict(N_CLASSES=3), 'N_CLASSES=3'),
    (dict(PRETRAINED='/nonexistent/resnet50s.pth'), 'PRETRAINED=.*/nonexistent/resnet50s.pth.*does not exist'),
    (dict(CROP_SIZE=7), 'CROP_SIZE=7 is smaller than the output stride STRIDE=8'),
    (dict(N_LAYERS=34), 'N_LAYERS=34'),
    (dict(MODEL_DIR='./settings.py/models'), "MODEL_DIR='./settings.py/models' cannot be created"),
])
def test_train_stops_before_training_naming_the_setting(tmp_path, demo_data, overrides, message):
    experiment = make_experiment(tmp_path / 'exp', demo_data, **overrides)
    result = run_script(experiment, 'train.py')
    assert result.returncode == 1 and re.search(message, result.stderr), result.stderr
    assert 'Traceback' not in result.stderr
    assert not glob.glob(str(experiment / 'models' / '*.pth'))


def test_batch_size_not_divisible_by_the_processes_is_named(tmp_path, demo_data):
    experiment = make_experiment(tmp_path / 'exp', demo_data, BATCH_SIZE=5)
    result = run_script(experiment, *TWO_PROCESSES, 'train.py', env=ONE_THREAD)
    assert result.returncode != 0 and 'BATCH_SIZE=5 is not divisible by the 2 processes' in result.stderr


# ---------------------------------------------------------------- checkpoints, in process

def sgd(net):
    return torch.optim.SGD(train.param_groups(net), lr=settings.LR, momentum=settings.LR_MOM)


def small_run_state(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    net = network.EMANet(21, 50)
    return net, sgd(net), torch.amp.GradScaler('cuda', enabled=False)


def test_full_disk_keeps_the_previous_checkpoint(monkeypatch, tmp_path):
    net, optimizer, scaler = small_run_state(monkeypatch, tmp_path)
    checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 3)
    before = (tmp_path / 'latest.pth').read_bytes()

    def full_disk(obj, f):
        f.write(b'partial')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(checkpoint.CheckpointError, match=r'could not write .*latest.pth: No space left on device.*intact'):
        checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 4)
    assert (tmp_path / 'latest.pth').read_bytes() == before
    assert os.listdir(tmp_path) == ['latest.pth']


@pytest.mark.parametrize('hard_links', [True, False])
def test_final_pth_is_the_latest_pth_of_iter_max_and_stays_when_latest_moves_on(monkeypatch, tmp_path, hard_links):
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    net = torch.nn.Conv2d(3, 4, 1)  # the format, not the network, is under test
    optimizer, scaler = torch.optim.SGD(net.parameters(), lr=0.1), torch.amp.GradScaler('cuda', enabled=False)
    if not hard_links:
        def refused(*args):
            raise OSError(errno.EPERM, 'Operation not permitted')
        monkeypatch.setattr(os, 'link', refused)
    checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 4)
    checkpoint.link_checkpoint('latest.pth', 'final.pth')
    assert (tmp_path / 'final.pth').read_bytes() == (tmp_path / 'latest.pth').read_bytes()
    assert os.path.samefile(tmp_path / 'final.pth', tmp_path / 'latest.pth') == hard_links
    with torch.no_grad():
        net.weight.add_(1)
    checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 6)  # ITER_MAX raised: training goes on
    final, latest = (torch.load(tmp_path / name, weights_only=True) for name in ('final.pth', 'latest.pth'))
    assert final['step'] == 4 and latest['step'] == 6 and torch.equal(final['net']['weight'] + 1, latest['net']['weight'])
    assert sorted(os.listdir(tmp_path)) == ['final.pth', 'latest.pth']
    def full_disk(*args):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'link', full_disk)
    monkeypatch.setattr(shutil, 'copyfile', full_disk)
    with pytest.raises(checkpoint.CheckpointError, match=r'could not write .*final.pth: No space left on device; '
                                                        r'.*latest.pth holds the same checkpoint'):
        checkpoint.link_checkpoint('latest.pth', 'final.pth')
    assert torch.load(tmp_path / 'final.pth', weights_only=True)['step'] == 4
    assert sorted(os.listdir(tmp_path)) == ['final.pth', 'latest.pth']


def test_non_finite_weights_are_never_written(monkeypatch, tmp_path):
    net, optimizer, scaler = small_run_state(monkeypatch, tmp_path)
    with torch.no_grad():
        net.fc2.weight[0, 0] = float('nan')
    with pytest.raises(checkpoint.CheckpointError, match='step 7: fc2.weight is not finite; latest.pth was not written'):
        checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 7)
    assert os.listdir(tmp_path) == []


def test_corrupt_latest_falls_back_to_newest_intact_step(monkeypatch, tmp_path, caplog):
    net, optimizer, scaler = small_run_state(monkeypatch, tmp_path)
    for step in (2, 4):
        checkpoint.save_checkpoint(f'step_{step}.pth', net, optimizer, scaler, step)
    (tmp_path / 'latest.pth').write_bytes((tmp_path / 'step_4.pth').read_bytes()[:10000])
    assert checkpoint.resume(net, optimizer, scaler) == 4
    (tmp_path / 'latest.pth').write_bytes(b'')  # empty (a full disk, a copy cut at 0): its EOFError has no message
    assert checkpoint.resume(net, optimizer, scaler) == 4
    (tmp_path / 'step_4.pth').write_bytes(b'garbage')
    assert checkpoint.resume(net, optimizer, scaler) == 2
    for path in glob.glob(str(tmp_path / 'step_*.pth')):
        os.remove(path)
    with pytest.raises(checkpoint.CheckpointError, match=r'latest.pth is truncated or corrupt.*No intact step_<N>.pth.*remove it'):
        checkpoint.resume(net, optimizer, scaler)


def test_untrusted_latest_is_refused_and_not_run(monkeypatch, tmp_path):
    net, optimizer, scaler = small_run_state(monkeypatch, tmp_path)
    torch.save({'net': {}, 'payload': Payload()}, tmp_path / 'latest.pth')
    with pytest.raises(checkpoint.CheckpointError, match='latest.pth is not a plain weights file'):
        checkpoint.resume(net, optimizer, scaler)
    assert not Payload.ran


# ---------------------------------------------------------------- whole runs, as a user runs them

def read_scalars(logdir):
    from tensorboardX.proto import event_pb2
    tags = {}
    for path in glob.glob(os.path.join(logdir, 'events.out.tfevents*')):
        data = open(path, 'rb').read()
        position = 0
        while position < len(data):  # TFRecord: length, crc, payload, crc
            length = int.from_bytes(data[position:position + 8], 'little')
            event = event_pb2.Event.FromString(data[position + 12:position + 12 + length])
            position += 16 + length
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


@pytest.mark.long
def test_smoke_run_then_eval_writes_checkpoints_settings_tensorboard_and_metrics(tmp_path, demo_data):
    experiment = make_experiment(tmp_path / 'exp', demo_data, ITER_SAVE=2)
    result = run_script(experiment, 'train.py')
    assert result.returncode == 0, result.stderr
    assert 'step 4/4 loss' in result.stderr and 'img/s ETA' in result.stderr
    assert sorted(os.listdir(experiment / 'models')) == ['final.pth', 'latest.pth', 'step_2.pth', 'step_4.pth', 'train.lock']
    assert (experiment / 'models' / 'train.lock').read_text() == ''  # released at the end
    assert os.path.samefile(experiment / 'models' / 'final.pth', experiment / 'models' / 'latest.pth')  # one write
    ckpt = torch.load(experiment / 'models' / 'final.pth', weights_only=True)
    assert ckpt['step'] == 4 and {'net', 'optimizer', 'scaler', 'settings'} <= set(ckpt)
    assert ckpt['settings']['CROP_SIZE'] == 33
    assert 'CROP_SIZE = 33\n' in (experiment / 'logdir' / 'settings.txt').read_text()
    tags = read_scalars(experiment / 'logdir')
    assert tags['train/loss'] == [1, 2, 3, 4] and tags['train/lr'] == [1, 2, 3, 4]
    assert tags['train/input_truth_prediction'] == [2, 4]
    def checkpoints():
        return {path: os.stat(path).st_mtime_ns for path in glob.glob(str(experiment / 'models' / '*.pth'))}
    before = checkpoints()
    again = run_script(experiment, 'train.py')  # a finished run says so and touches nothing
    assert again.returncode == 0, again.stderr
    assert 'this run is finished: step 4 of ITER_MAX=4, ./models/final.pth' in again.stderr
    assert checkpoints() == before
    evaluated = run_script(experiment, 'eval.py')
    assert evaluated.returncode == 0, evaluated.stderr
    assert 'mIoU' in evaluated.stdout and 'tvmonitor' in evaluated.stdout
    result = json.load(open(experiment / 'logdir' / 'eval_final.json'))
    assert {'mIoU', 'pAcc', 'mAcc', 'fIoU', 'per_class'} <= set(result) and result['step'] == 4


def initial_net():
    """The EMANet that train.py starts every process from: initialised after seeding with SEED."""
    torch.manual_seed(settings.SEED)
    return network.EMANet(21, 50)


# train.py with torch.compile's backend set to aot_eager: the graph capture, functionalised BN and bases updates
# and compiled autograd of COMPILE, without inductor's C++ code generation (over two minutes of compiling on
# 2 cores; on GPUs inductor generates Triton code instead, which a CPU run would not test either)
AOT_EAGER_TRAIN = """
import runpy, sys, torch
compile = torch.compile
def aot_eager(model, **options):
    print('torch.compile:', type(model).__name__, file=sys.stderr)
    return compile(model, backend='aot_eager', **options)
torch.compile = aot_eager
runpy.run_path('train.py', run_name='__main__')
"""


@pytest.mark.long
def test_compiled_step_matches_eager_and_saves_plain_names(tmp_path, demo_data, monkeypatch):
    """COMPILE=True: the first step's loss, gradients and bases are eager's to rounding, and final.pth loads
    into a plain EMANet."""
    monkeypatch.setattr(settings, 'EMA_CHANNELS', TINY['EMA_CHANNELS'])
    weights, losses = {}, {}
    for name, extra in (('eager', {}), ('compiled', {'COMPILE': True})):
        experiment = make_experiment(tmp_path / name, demo_data, ITER_MAX=1, **extra)
        result = run_script(experiment, '-c', AOT_EAGER_TRAIN)
        assert result.returncode == 0, result.stderr
        assert ('torch.compile: EMANet' in result.stderr) == (name == 'compiled'), result.stderr
        weights[name] = checkpoint.load_checkpoint(initial_net(), experiment / 'models' / 'final.pth')['net']
        losses[name] = float(re.search(r'step 1/1 loss (\S+)', result.stderr).group(1))
    assert losses['compiled'] == pytest.approx(losses['eager'], rel=1e-3)
    initial = initial_net().state_dict()
    for key in ('fc2.weight', 'emau.mu'):
        change = (weights['eager'][key] - initial[key]).abs().max()
        assert (weights['compiled'][key] - weights['eager'][key]).abs().max() < 1e-2 * change, key


def test_non_finite_loss_stops_with_the_step_and_causes(tmp_path, demo_data):
    experiment = make_experiment(tmp_path / 'exp', demo_data, STD=(0.0, 0.0, 0.0))
    result = run_script(experiment, 'train.py')
    assert result.returncode == 1
    assert 'step 1: the loss is nan' in result.stderr and 'LR=' in result.stderr and 'AMP=' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not glob.glob(str(experiment / 'models' / '*.pth'))


@pytest.mark.parametrize('sig, workers', [(signal.SIGTERM, 0), (signal.SIGINT, 2)])
def test_signal_saves_the_current_step_and_exits(tmp_path, demo_data, sig, workers):
    """SIGTERM as a cluster sends it to the process; SIGINT as Ctrl-C in a terminal sends it, to the
    whole process group, data workers included."""
    experiment = make_experiment(tmp_path / 'exp', demo_data, ITER_MAX=1000, ITER_SAVE=10000, NUM_WORKERS=workers)
    log = tmp_path / 'log'
    process = start_training(experiment, log)
    wait_for(log, 'step 2/1000', process)
    os.killpg(process.pid, sig) if sig == signal.SIGINT else process.send_signal(sig)
    assert process.wait(timeout=HANG_GUARD) == 128 + sig, log.read_text()
    step = torch.load(experiment / 'models' / 'latest.pth', weights_only=True)['step']
    assert step >= 2 and f'latest.pth holds step {step}' in log.read_text()
    assert 'Traceback' not in log.read_text()


@pytest.mark.long
def test_under_torchrun_rank_0_holds_the_lock_sigterm_saves_and_the_run_resumes_from_a_model_dir_all_nodes_see(
        tmp_path, demo_data):
    experiment = make_experiment(tmp_path / 'exp', demo_data, ITER_MAX=1000, ITER_SAVE=10000)
    log = tmp_path / 'log'
    process = start_training(experiment, log, *TWO_PROCESSES)
    try:
        wait_for(log, 'step 2/1000', process)
        # torchrun on CPU: plain BatchNorm per process, each over its process's share of the batch; rank 0 says so
        assert log.read_text().count("recipe:   images per BatchNorm 1 (BATCH_SIZE 2 / 2 processes, BatchNorm per "
                                     "process), the recipe's 16: ") == 1
        holder = (experiment / 'models' / 'train.lock').read_text().strip()
        pid = re.match(r'pid (\d+) on ', holder).group(1)
        workers = [worker for worker in processes_in(experiment) if int(worker) != process.pid]
        assert pid in workers  # a worker, not the launcher
        # rank 0: the one worker that writes TensorBoard's events
        assert [worker for worker in workers if 'events.out.tfevents' in open_files(worker)] == [pid]
        second = run_script(experiment, 'train.py')
        assert second.returncode != 0 and holder in second.stderr, second.stderr
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=HANG_GUARD)
    finally:
        stop(process)
    assert (experiment / 'models' / 'train.lock').read_text() == ''
    step = torch.load(experiment / 'models' / 'latest.pth', weights_only=True)['step']
    assert step >= 2 and f'latest.pth holds step {step}' in log.read_text()
    assert processes_in(experiment) == []
    with open(experiment / 'settings.py', 'a') as f:
        f.write(f'ITER_MAX = {step + 2}\n')
    since = len(log.read_text())
    process = start_training(experiment, log, *TWO_PROCESSES)
    assert process.wait(timeout=HANG_GUARD) == 0, log.read_text()[since:]
    assert log.read_text()[since:].count(f'resumed from ./models/latest.pth at step {step}') == 1  # rank 0 only
    assert load_final(experiment)['step'] == step + 2
    with open(experiment / 'settings.py', 'a') as f:  # a second node that does not see rank 0's MODEL_DIR
        f.write(f"ITER_MAX = {step + 4}\nMODEL_DIR = './models' if os.environ['RANK'] == '0' else './elsewhere'\n")
    since = len(log.read_text())
    port = free_port()  # two nodes on this machine, with torchrun's multi-node flags
    nodes = [start_training(experiment, log, *TORCHRUN, '--nnodes=2', f'--node_rank={node}',
                            '--nproc_per_node=1', '--master_addr=127.0.0.1', f'--master_port={port}')
             for node in (0, 1)]
    assert [node.wait(timeout=HANG_GUARD) != 0 for node in nodes] == [True, True]
    assert f"resume from different steps (0 to {step + 2}): MODEL_DIR='./elsewhere'" in log.read_text()[since:]


def open_files(pid):
    """The paths that process pid holds open, joined by newlines."""
    paths = []
    for fd in glob.glob(f'/proc/{pid}/fd/*'):
        try:
            paths.append(os.readlink(fd))
        except OSError:  # closed since the listing
            pass
    return '\n'.join(paths)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def load_final(experiment):
    return torch.load(experiment / 'models' / 'final.pth', weights_only=True)


LONG = dict(ITER_MAX=16, ITER_SAVE=20, CROP_SIZE=17, LOG_EVERY=1, IMAGE_EVERY=1000)


@pytest.mark.long
def test_interrupted_run_ends_with_the_uninterrupted_weights(tmp_path, demo_data):
    """Sixteen tiny steps, killed four times at random moments (SIGKILL, even mid-save, and SIGTERM) a few
    steps past a save, resumed each time, end bit for bit where one uninterrupted run ends. The kills follow
    the steps the log shows, not the clock: however loaded the machine, every restart resumes."""
    reference = make_experiment(tmp_path / 'reference', demo_data, **LONG)
    assert run_script(reference, 'train.py', env=ONE_THREAD).returncode == 0  # as start_training: the same sums
    experiment = make_experiment(tmp_path / 'interrupted', demo_data, **LONG)
    log = tmp_path / 'log'
    rng = random.Random(5)
    target = 0
    for attempt in range(4):
        since = len(log.read_text()) if log.exists() else 0
        process = start_training(experiment, log)
        # past the next latest.pth save (every 2 steps) whatever the machine's speed, then a random moment
        # within the following steps, sometimes mid-save
        target += rng.randint(3, 4)
        wait_for(log, f'step {target}/', process, since)
        time.sleep(rng.uniform(0, 0.5))
        process.send_signal(signal.SIGKILL if attempt % 2 == 0 else signal.SIGTERM)
        process.wait(timeout=HANG_GUARD)
        for path in glob.glob(str(experiment / 'models' / '*.pth')):
            checkpoint.read_weights(path)  # every checkpoint file is complete
    process = start_training(experiment, log)
    assert process.wait(timeout=HANG_GUARD) == 0, log.read_text()
    assert log.read_text().count('resumed from') == 4
    expected, got = load_final(reference), load_final(experiment)
    for name, tensor in expected['net'].items():
        assert torch.equal(tensor, got['net'][name]), name
    momentum = [s['momentum_buffer'] for s in expected['optimizer']['state'].values()]
    assert all(torch.equal(a, s['momentum_buffer']) for a, s in zip(momentum, got['optimizer']['state'].values()))
    assert not glob.glob(str(experiment / 'models' / '*.tmp*'))


# ---------------------------------------------------------------- DDP equals one process

def fixed_global_batch():
    generator = torch.Generator().manual_seed(1)
    img = torch.randn(2, 3, 17, 17, generator=generator, dtype=torch.float64)
    return img, torch.randint(0, 21, (2, 17, 17), generator=generator)


def freeze_batch_norm(net, img):
    """CPU BN is not synchronised: set its statistics from the whole global batch (the same in
    every process), then freeze them, and dropout."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        net(img)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout2d)):
            m.eval()


# the settings of ddp_step's net and steps (an EM unit of 64 channels: its 512 would be a third of the float64 work)
DDP_STEP = dict(N_LAYERS=50, PRETRAINED=None, BATCH_SIZE=2, LR=1e-5, EMA_CHANNELS=64)


def ddp_step(out):
    """Two steps on a fixed global batch of 2 images, split across however many processes run this."""
    for name, value in DDP_STEP.items():
        setattr(settings, name, value)
    rank, world, device = runtime.setup_runtime()
    net = initial_net().double()  # float64: a random net's gradients amplify rounding
    img, label = fixed_global_batch()
    freeze_batch_norm(net, img)
    optimizer = sgd(net)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    mine = slice(rank * 2 // world, (rank + 1) * 2 // world)
    for step in (1, 2):
        train.set_lr(optimizer, step)
        network.train_step(model, net, optimizer, torch.amp.GradScaler('cuda', enabled=False),
                           img[mine], label[mine], None, step, rank)
    torch.save(net.state_dict(), f'{out}.rank{rank}')


@pytest.mark.long
def test_one_ddp_step_equals_one_single_process_step(tmp_path, monkeypatch):
    script = os.path.join(ROOT, 'tests', 'test_train.py')
    single = run_script(ROOT, script, 'ddp-step', str(tmp_path / 'single.pth'), env=ONE_THREAD)
    assert single.returncode == 0, single.stderr
    ddp = run_script(ROOT, *TWO_PROCESSES, script, 'ddp-step', str(tmp_path / 'ddp.pth'), env=ONE_THREAD)
    assert ddp.returncode == 0, ddp.stderr
    single = torch.load(tmp_path / 'single.pth.rank0')
    for name, value in DDP_STEP.items():
        monkeypatch.setattr(settings, name, value)
    initial = initial_net().double().state_dict()
    assert torch.equal(single['emau.conv1.weight'], initial['emau.conv1.weight'])  # same start; frozen
    assert not torch.equal(single['fc2.weight'], initial['fc2.weight'])  # the steps moved the weights
    assert not torch.equal(single['emau.mu'], initial['emau.mu'])  # and the bases
    for rank in (0, 1):  # every process holds the single process's weights and bases
        ddp = torch.load(tmp_path / f'ddp.pth.rank{rank}')
        for name, tensor in single.items():
            assert torch.allclose(tensor, ddp[name], rtol=1e-9, atol=1e-12), (rank, name)


if __name__ == '__main__' and sys.argv[1] == 'ddp-step':
    ddp_step(sys.argv[2])
