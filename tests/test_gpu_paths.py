"""The CUDA paths that no CPU runs, tested on the CPU with fakes: the mixed-precision dtype by compute capability
and a resume across it, COMPILE under torchrun on GPUs, evaluation in float32 unless EVAL_AMP (the CPU's bfloat16:
test_cpu_bfloat16.py), micro-batches
(ACCUM_STEPS) and the out-of-memory message, DETERMINISTIC, and where benchmark.py measures peak memory. What only
a GPU confirms is in the README's "On a GPU"."""
import contextlib
import copy
import math
import os
import signal
import types

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

import benchmark
import checkpoint
import evaluation
import network
import runtime
import settings
import train
from harness import TINY, log_records, messages


# ---------------------------------------------------------------- 1. mixed precision by what the GPU has

@pytest.mark.parametrize('capability, expected', [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bfloat16_only_where_the_gpu_has_it_in_hardware(monkeypatch, capability, expected):
    """A T4 (7.5) or V100 (7.0) gets float16 with the scaler, though torch counts their emulated bfloat16 as
    supported; an A100 (8.0) and an H100 (9.0) get bfloat16."""
    monkeypatch.setattr(settings, 'AMP', True)
    asked = []
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    assert runtime.autocast_dtype(torch.device('cuda', 1)) == expected
    assert asked == [torch.device('cuda', 1)]  # the device's own, not the current one
    monkeypatch.setattr(settings, 'AMP', False)
    assert runtime.autocast_dtype(torch.device('cuda', 1)) is None


def resume_into(scaler, path):
    """Loads path into a small net, its optimizer and scaler, as checkpoint.resume does; returns the step."""
    net = nn.Conv2d(1, 1, 1)
    return checkpoint.load_checkpoint(net, path, torch.optim.SGD(net.parameters(), lr=0.1), scaler)['step']


def save_with(scaler, name, step):
    net = nn.Conv2d(1, 1, 1)
    checkpoint.save_checkpoint(name, net, torch.optim.SGD(net.parameters(), lr=0.1), scaler, step)
    return os.path.join(settings.MODEL_DIR, name)


def test_a_run_resumes_across_the_precision_choice(monkeypatch, tmp_path):
    """GradScaler's own load refuses an empty state; a checkpoint of a run without float16 (CPU, AMP off, bfloat16)
    resumes into a float16 run with a fresh scale and a log line, and a float16 run's into one without. The
    scalers are torch's, on the CPU (a 'cuda' one disables itself without a GPU): the same class and state."""
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    with pytest.raises(RuntimeError, match='The source state dict is empty'):
        torch.amp.GradScaler('cpu').load_state_dict({})  # what a resume met before
    without = save_with(torch.amp.GradScaler('cpu', enabled=False), 'bf16.pth', 3)
    fp16 = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10)
    with log_records() as records:
        assert resume_into(fp16, without) == 3
    assert 'bf16.pth was saved without float16 mixed precision: the gradient scale starts fresh' in messages(records)
    assert fp16.is_enabled() and fp16.get_scale() == 2.0 ** 10
    scaled = save_with(torch.amp.GradScaler('cpu', init_scale=4.0), 'fp16.pth', 5)
    disabled = torch.amp.GradScaler('cpu', enabled=False)
    assert resume_into(disabled, scaled) == 5
    assert not disabled.is_enabled() and disabled.state_dict() == {}
    resumed = torch.amp.GradScaler('cpu')  # float16 to float16: the scale goes on where it was
    with log_records() as records:
        resume_into(resumed, scaled)
    assert resumed.get_scale() == 4.0 and 'starts fresh' not in messages(records)


# ---------------------------------------------------------------- 2. COMPILE under torchrun on GPUs

def test_compile_under_torchrun_on_gpus_is_refused_saying_why_and_what_to_use(monkeypatch):
    monkeypatch.setattr(settings, 'COMPILE', True)
    with pytest.raises(ValueError, match=r'COMPILE=True under torchrun on GPUs \(2 processes\).*SyncBatchNorm.*'
                                         r'Set COMPILE = False for DDP, or train on one GPU'):
        runtime.compiles(torch.device('cuda', 0), 2)
    assert runtime.compiles(torch.device('cuda', 0), 1) and runtime.compiles(torch.device('cpu'), 2)
    monkeypatch.setattr(settings, 'COMPILE', False)
    assert not runtime.compiles(torch.device('cuda', 0), 2)


def test_train_refuses_compile_under_a_faked_cuda_ddp_set_up_before_anything(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, 'setup_runtime', lambda: (0, 2, torch.device('cuda', 0)))  # rank 0 of 2 GPUs
    monkeypatch.setattr(settings, 'COMPILE', True)
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path / 'models'))
    with pytest.raises(ValueError, match='COMPILE=True under torchrun on GPUs'):
        train.main()
    assert not os.path.exists(tmp_path / 'models')  # before the folder, the data and the network


# ---------------------------------------------------------------- 3. evaluation in float32 unless EVAL_AMP

def recording_net(seen):
    """A stand-in for EMANet's eval forward that records the autocast state and the input dtype it runs under."""
    def net(img, size=None):
        seen.append((torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'), img.dtype))
        return torch.zeros(img.shape[0], settings.N_CLASSES, *(size or img.shape[-2:]))
    return net


@pytest.mark.parametrize('half, name', [(torch.bfloat16, 'bf16'), (torch.float16, 'fp16')])
def test_evaluation_on_a_gpu_is_float32_unless_eval_amp_and_then_named(monkeypatch, half, name):
    """This process's device faked as a GPU whose training precision (runtime.autocast_dtype, faked) is half.
    predict's autocast itself, which only the CPU can run here: test_cpu_bfloat16.py."""
    gpu = torch.device('cuda', 0)
    monkeypatch.setattr(runtime, 'autocast_dtype', lambda device: half)
    monkeypatch.setattr(runtime, 'process_device', lambda: gpu)
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    assert evaluation.eval_dtype(gpu) is None
    assert evaluation.protocol() == 'flip' and evaluation.scalar_prefix() == 'val_flip'
    assert evaluation.summary(torch.eye(settings.N_CLASSES, dtype=torch.int64), 1)['precision'] == 'float32'
    monkeypatch.setattr(settings, 'EVAL_AMP', True)
    assert evaluation.eval_dtype(gpu) == half
    assert evaluation.protocol() == f'flip_{name}' and evaluation.scalar_prefix() == f'val_flip_{name}'
    result = evaluation.summary(torch.eye(settings.N_CLASSES, dtype=torch.int64), 1)
    assert result['protocol'] == f'flip_{name}' and result['precision'] == str(half).replace('torch.', '')


# ---------------------------------------------------------------- 4. micro-batches and out of memory

class SmallEMANet(nn.Module):
    """EMANet's learning parts at a size a CPU steps in milliseconds: a conv, the real EM unit (bases and all) and
    the real loss; with its one BatchNorm (the unit's) in eval mode, which micro-batches change (below)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.emau = network.EMAU(16, 4, 3)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, img, label):
        x, bases = self.emau(torch.relu(self.stem(img)))  # b × 16 × h × w, b × 16 × 4
        return network.per_image_loss(self.head(x), label), bases


def one_step(net, img, label, accum_steps, monkeypatch, wrap=lambda net: net):
    monkeypatch.setattr(settings, 'ACCUM_STEPS', accum_steps)
    optimizer = torch.optim.SGD(train.param_groups(net), lr=0.1, momentum=0.9)
    loss = network.train_step(wrap(net), net, optimizer, torch.amp.GradScaler('cpu', enabled=False), img, label,
                              None, 1, 0)
    return loss, net.state_dict()


def test_micro_batches_give_the_update_of_the_whole_batch(monkeypatch, tmp_path):
    """One step on 4 images as 1, 2 and 4 micro-batches, and as 2 under DDP (one gloo process: its no_sync and
    reducer): the same loss, weights and bases, to float64 rounding. With the BatchNorm in training mode, each
    micro-batch is normalised with its own statistics: the difference README and settings.py state."""
    initial = SmallEMANet().double()
    img = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    label = torch.randint(0, 5, (4, 9, 9))
    label[0, :4] = settings.IGNORE_LABEL
    assert not torch.allclose(one_step(copy.deepcopy(initial), img, label, 2, monkeypatch)[0],
                              one_step(copy.deepcopy(initial), img, label, 1, monkeypatch)[0], rtol=1e-6)
    initial.emau.conv2[1].eval()
    loss, whole = one_step(copy.deepcopy(initial), img, label, 1, monkeypatch)
    assert not torch.equal(whole['head.weight'], initial.head.weight)
    assert not torch.equal(whole['emau.mu'], initial.emau.mu)
    runs = {n: one_step(copy.deepcopy(initial), img, label, n, monkeypatch) for n in (2, 4)}
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        runs['ddp'] = one_step(copy.deepcopy(initial), img, label, 2, monkeypatch,
                               wrap=nn.parallel.DistributedDataParallel)
    finally:
        dist.destroy_process_group()
    for name, (micro_loss, state) in runs.items():
        assert torch.allclose(micro_loss, loss, rtol=1e-12, atol=0), name
        for key, tensor in whole.items():
            assert torch.allclose(state[key], tensor, rtol=1e-12, atol=1e-15), (name, key)


class TinyNet(nn.Module):
    """What train_step needs of EMANet: (per-image losses, bases b × c × k) from (img, label), and emau.mu."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.emau = nn.Module()
        self.emau.register_buffer('mu', torch.zeros(1, 2, 3))

    def forward(self, img, label):
        x = self.conv(img)  # b × 2 × h × w
        return (x ** 2).mean(dim=(1, 2, 3)), x.flatten(2)[..., :3]


class RecordingDDP(nn.Module):
    """DDP's no_sync as train_step uses it: records, for each forward, whether gradients would be reduced."""

    def __init__(self, module):
        super().__init__()
        self.module, self.sync, self.forwards = module, True, []

    @contextlib.contextmanager
    def no_sync(self):
        self.sync = False
        try:
            yield
        finally:
            self.sync = True

    def forward(self, *args):
        self.forwards.append(self.sync)
        return self.module(*args)


def test_ddp_reduces_after_the_last_micro_batch_only(monkeypatch):
    monkeypatch.setattr(settings, 'ACCUM_STEPS', 3)
    net = TinyNet()
    model = RecordingDDP(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = network.train_step(model, net, optimizer, torch.amp.GradScaler('cpu', enabled=False),
                              torch.randn(6, 3, 4, 4), torch.zeros(6, 4, 4, dtype=torch.long), None, 1, 0)
    assert model.forwards == [False, False, True]
    assert loss.shape == () and loss > 0


@pytest.fixture
def in_process_run(monkeypatch, tmp_path, root):
    """train.main() in this process on six tiny images (conftest's `root`), in tmp_path; the signal handlers it
    installs are put back afterwards."""
    monkeypatch.chdir(tmp_path)
    for name, value in {**TINY, 'DATA_ROOT': root, 'MODEL_DIR': str(tmp_path / 'models'),
                        'LOG_DIR': str(tmp_path / 'logdir')}.items():
        monkeypatch.setattr(settings, name, value)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_out_of_memory_names_batch_crop_precision_and_what_reduces_memory(monkeypatch, in_process_run):
    """torch.OutOfMemoryError, as CUDA raises it, in the first step of a run of 2 micro-batches: a message, not a
    traceback, naming only remedies that apply (micro-batches of one image split no further, N_LAYERS is 50
    already; AMP is off, as TINY has it); the log line at the start names the micro-batches."""
    monkeypatch.setattr(settings, 'ACCUM_STEPS', 2)

    def out_of_memory(*args):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
    monkeypatch.setattr(network, 'train_step', out_of_memory)
    with log_records() as records, pytest.raises(SystemExit) as stopped:
        train.main()
    assert 'batch 2: 1 process(es) x 2 micro-batch(es) of 1 images' in messages(records)
    message = str(stopped.value.code)
    for part in ('step 1: the GPU ran out of memory with BATCH_SIZE=2 (1 process(es) x 2 micro-batch(es) of 1 images)',
                 'CROP_SIZE=33', 'N_LAYERS=50', 'torch.float32 (AMP=False)',
                 'Less memory per step: AMP = True; a smaller CROP_SIZE; more GPUs (torchrun'):
        assert part in message, message
    assert 'ACCUM_STEPS=' not in message.split('Less memory')[1] and 'N_LAYERS =' not in message


@pytest.mark.parametrize('world, batch, accum, amp, layers, remedies', [
    (2, 8, 1, True, 50, ['ACCUM_STEPS=2 (micro-batches of 2 images, the same global batch)', 'a smaller CROP_SIZE',
                         'more GPUs (torchrun: each process takes its share of the batch)']),
    (2, 8, 2, False, 101, ['ACCUM_STEPS=4 (micro-batches of 1 images, the same global batch)', 'AMP = True',
                           'a smaller CROP_SIZE', 'N_LAYERS = 50', 'more GPUs (torchrun: each process takes its '
                                                                  'share of the batch)']),
    (2, 12, 2, True, 152, ['ACCUM_STEPS=3 (micro-batches of 2 images, the same global batch)', 'a smaller CROP_SIZE',
                           'N_LAYERS = 101 or 50', 'more GPUs (torchrun: each process takes its share of the batch)']),
    (4, 8, 2, True, 50, ['a smaller CROP_SIZE', 'more GPUs (torchrun: each process takes its share of the batch)']),
    (8, 8, 1, True, 50, ['a smaller CROP_SIZE']),  # an image per process: nothing to split, no process to add
])
def test_memory_remedies_are_those_of_each_process_share(monkeypatch, world, batch, accum, amp, layers, remedies):
    for name, value in dict(BATCH_SIZE=batch, ACCUM_STEPS=accum, AMP=amp, N_LAYERS=layers).items():
        monkeypatch.setattr(settings, name, value)
    assert train.memory_remedies(world) == remedies


def test_out_of_memory_while_validating_keeps_the_training(monkeypatch, tmp_path):
    """Validation at step 7 runs out of GPU memory (torch.OutOfMemoryError, as CUDA raises it) after the last
    latest.pth, of step 5: latest.pth is saved at step 7 first, and the message names the evaluation settings that
    need less."""
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    monkeypatch.setattr(settings, 'CROP_SIZE', 33)
    net = nn.Conv2d(3, 2, 1)
    optimizer, scaler = torch.optim.SGD(net.parameters(), lr=0.1), torch.amp.GradScaler('cpu', enabled=False)
    checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, 5)
    with torch.no_grad():
        net.weight += 1  # steps 6 and 7

    def out_of_memory(*args):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 8.00 GiB')
    monkeypatch.setattr(evaluation, 'evaluate', out_of_memory)
    with pytest.raises(SystemExit) as stopped:
        train.validate(net, optimizer, scaler, torch.device('cpu'), 0, 1, 7, None, -math.inf, None)
    message = str(stopped.value.code)
    assert message.startswith("step 7: the GPU ran out of memory validating on VAL_SPLIT='val'"), message
    assert 'latest.pth holds this step: nothing of the training is lost' in message
    assert ('Less memory per image: EVAL_WINDOW = 33 (windows of the training crop slide over each image); '
            'EVAL_IMAGES = N (the first N images only); EVAL_EVERY = 0') in message
    latest = torch.load(tmp_path / 'latest.pth', weights_only=True)
    assert latest['step'] == 7 and torch.equal(latest['net']['weight'], net.weight)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 17)
    monkeypatch.setattr(settings, 'EVAL_IMAGES', 2)
    assert train.validation_memory_remedies() == [
        'EVAL_EVERY = 0 (no validation while training; eval.py evaluates the checkpoints after it)']


@pytest.mark.parametrize('accum_steps', [3, 0])
def test_micro_batches_that_do_not_divide_the_batch_are_named(monkeypatch, in_process_run, accum_steps):
    monkeypatch.setattr(settings, 'ACCUM_STEPS', accum_steps)
    with pytest.raises(SystemExit, match=f"ACCUM_STEPS={accum_steps} must be a whole number of micro-batches that "
                                         f"divides each process's 2 images"):
        train.main()


def test_per_process_checks_read_each_process_share(monkeypatch, in_process_run, tmp_path):
    """Under a faked torchrun of 2 processes: 4 micro-batches divide the global batch of 4, not each process's 2;
    a batch of 3 does not split over 2 processes. Both refused before anything is written."""
    monkeypatch.setattr(runtime, 'setup_runtime', lambda: (0, 2, torch.device('cpu')))
    monkeypatch.setattr(settings, 'BATCH_SIZE', 4)
    monkeypatch.setattr(settings, 'ACCUM_STEPS', 4)
    with pytest.raises(SystemExit, match=r"ACCUM_STEPS=4 must be a whole number of micro-batches that divides each "
                                         r"process's 2 images \(BATCH_SIZE=4, 2 processes\)"):
        train.main()
    monkeypatch.setattr(settings, 'BATCH_SIZE', 3)
    monkeypatch.setattr(settings, 'ACCUM_STEPS', 1)
    with pytest.raises(SystemExit, match='BATCH_SIZE=3 is not divisible by the 2 processes'):
        train.main()
    assert not os.path.exists(tmp_path / 'models')


# ---------------------------------------------------------------- 5. DETERMINISTIC

@pytest.fixture
def determinism_restored(monkeypatch):
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)  # and back as it was afterwards
    cudnn = torch.backends.cudnn
    before = torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(before[0])
    cudnn.deterministic, cudnn.benchmark = before[1:]


def test_deterministic_sets_what_it_names(monkeypatch, determinism_restored):
    cudnn = torch.backends.cudnn
    torch.use_deterministic_algorithms(False)
    cudnn.deterministic, cudnn.benchmark = False, True
    monkeypatch.setattr(settings, 'DETERMINISTIC', False)
    runtime.set_determinism()
    assert not torch.are_deterministic_algorithms_enabled() and not cudnn.deterministic and cudnn.benchmark
    assert 'CUBLAS_WORKSPACE_CONFIG' not in os.environ and runtime.cudnn_benchmark() == settings.CUDNN_BENCHMARK
    monkeypatch.setattr(settings, 'DETERMINISTIC', True)
    runtime.set_determinism()
    assert torch.are_deterministic_algorithms_enabled() and cudnn.deterministic and not cudnn.benchmark
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8' and not runtime.cudnn_benchmark()


def test_setup_runtime_sets_determinism_before_any_cuda_work(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, 'set_determinism', lambda: calls.append('determinism'))
    monkeypatch.setattr(runtime, 'process_device', lambda: calls.append('device') or torch.device('cpu'))
    assert runtime.setup_runtime() == (0, 1, torch.device('cpu'))
    assert calls == ['determinism', 'device']


# ---------------------------------------------------------------- 6. benchmark.py's peak memory on CUDA

@pytest.fixture
def fake_cuda_memory(monkeypatch):
    """torch.cuda's memory statistics as a list of events; allocated memory 100 MiB, its peak 300 MiB."""
    events = []
    for name, value in (('synchronize', None), ('empty_cache', None), ('reset_peak_memory_stats', None),
                        ('memory_allocated', 100 * 2 ** 20), ('max_memory_allocated', 300 * 2 ** 20)):
        monkeypatch.setattr(torch.cuda, name, lambda *args, name=name, value=value: events.append(name) or value)
    return events


def test_inference_peak_is_one_forward_after_warm_up_from_a_reset_baseline(monkeypatch, fake_cuda_memory):
    events = fake_cuda_memory
    monkeypatch.setattr(benchmark, 'random_images', lambda batch, height, width, device, channels_last:
                        torch.zeros(batch, 3, height, width))  # the images stay on the CPU
    variants = {name: (name, lambda img, name=name: events.append(f'forward {name}'), False, 'float32')
                for name in ('eager', 'compiled')}
    args = types.SimpleNamespace(eval_batch=1, warmup=2, iters=1, repeats=1)
    results, limits = benchmark.measure_inference(torch.device('cuda'), args, variants, 9, 9)
    expected = []
    for name in variants:  # what an earlier row left is freed; the peak restarts after the warm-up
        expected += ['empty_cache', 'reset_peak_memory_stats', 'memory_allocated', f'forward {name}',
                     f'forward {name}', 'synchronize', 'reset_peak_memory_stats', f'forward {name}',
                     'max_memory_allocated']
    assert events[:len(expected)] == expected
    assert [results[name]['peak_mib'] for name in variants] == [200, 200]  # above the baseline
    assert limits is None  # the CPU's


def test_training_and_attention_peaks_restart_after_warm_up(fake_cuda_memory):
    events = fake_cuda_memory
    args = types.SimpleNamespace(warmup=2, iters=1, repeats=2)
    benchmark.median_seconds(lambda: events.append('call'), torch.device('cuda'), args)
    assert events[:6] == ['call', 'call', 'synchronize', 'reset_peak_memory_stats', 'call', 'synchronize']
    assert events.count('reset_peak_memory_stats') == 1


def test_compiled_inference_shares_the_eager_net_and_compiles_each_size_statically(monkeypatch):
    built, compiled = [], []
    monkeypatch.setattr(benchmark, 'build_net', lambda device, channels_last: built.append(TinyNet()) or built[-1])
    monkeypatch.setattr(torch, 'compile', lambda model, **options: compiled.append((model, options)) or model)
    monkeypatch.setattr(runtime, 'autocast_dtype', lambda device: torch.bfloat16)
    variants = benchmark.inference_variants(torch.device('cuda'), types.SimpleNamespace(compile=True), None)
    assert set(variants) == {'eager', 'compiled'} and variants['compiled'][0] == 'bfloat16 + channels-last + torch.compile'
    assert len(built) == 1 and compiled == [(built[0], {'dynamic': False})]
