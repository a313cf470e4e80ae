"""bfloat16 on the CPU, where the processor computes it (AVX512-BF16, AMX): the one capability check
(runtime.native_bfloat16) faked both ways, as test_gpu_paths.py fakes CUDA, for what AMP and EVAL_AMP choose and
refuse; and on this machine's own CPU, a bfloat16 run that resumes bit for bit (without native bfloat16: AMP's
fallback to float32) and the demo's settings learning in either precision. The inference paths' results against
float32 (PyTorch, OpenVINO, the hub model) are in test_deploy.py, beside the exported file they need."""
import os

import pytest
import torch

import dataset
import eval as eval_script
import evaluation
import network
import runtime
import settings
import train
from harness import HANG_GUARD, ROOT, make_experiment, start_training, wait_for
from test_gpu_paths import in_process_run, log_records, messages, recording_net  # noqa: F401 (a fixture)

NATIVE = runtime.native_bfloat16()  # this machine's own answer, before any test fakes it
CPU = torch.device('cpu')
# (AVX512-BF16, AMX) as torch reports them: a Zen 4 EPYC, a Sapphire Rapids Xeon (both), an AVX2-only CPU
CPUS = {'avx512_bf16': (True, False), 'amx': (True, True), 'neither': (False, False)}


@pytest.fixture(params=CPUS, ids=list(CPUS))
def fake_cpu(request, monkeypatch):
    """This CPU as one of CPUS; returns whether it computes bfloat16 natively."""
    avx512_bf16, amx = CPUS[request.param]
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
    return avx512_bf16 or amx


def test_amp_trains_in_bfloat16_only_where_the_cpu_computes_it(monkeypatch, fake_cpu):
    monkeypatch.setattr(settings, 'AMP', True)
    assert runtime.native_bfloat16() == fake_cpu
    assert runtime.autocast_dtype(CPU) == (torch.bfloat16 if fake_cpu else None)
    monkeypatch.setattr(settings, 'AMP', False)
    assert runtime.autocast_dtype(CPU) is None


def test_eval_amp_evaluates_in_bfloat16_where_native_and_is_refused_elsewhere(monkeypatch, fake_cpu):
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    monkeypatch.setattr(settings, 'LOG_DIR', 'logs')
    img, seen = torch.randn(1, 3, 9, 9), []
    evaluation.predict(recording_net(seen), img)  # EVAL_AMP = False: float32 on every CPU, the authors' protocol
    assert [(enabled, dtype) for enabled, _, dtype in seen] == [(False, torch.float32)] * 2
    assert evaluation.protocol() == 'flip' and evaluation.summary(torch.eye(21, dtype=torch.int64), 1)['precision'] \
        == 'float32'
    monkeypatch.setattr(settings, 'EVAL_AMP', True)
    if not fake_cpu:
        for refused in (lambda: evaluation.eval_dtype(CPU), evaluation.protocol,
                        lambda: evaluation.predict(recording_net(seen), img)):
            with pytest.raises(ValueError, match='EVAL_AMP=True evaluates in bfloat16, but this CPU has no native '
                                                 'bfloat16.*emulated bfloat16 is slower than float32.*'
                                                 'EVAL_AMP = False'):
                refused()
        return
    seen.clear()
    evaluation.predict(recording_net(seen), img)
    assert [(enabled, dtype) for enabled, dtype, _ in seen] == [(True, torch.bfloat16)] * 2
    assert evaluation.protocol() == 'flip_bf16' and evaluation.scalar_prefix() == 'val_flip_bf16'
    result = evaluation.summary(torch.eye(21, dtype=torch.int64), 1, 'openvino')
    assert (result['protocol'], result['precision'], result['engine']) == ('flip_bf16', 'bfloat16', 'openvino')
    assert eval_script.result_path('models/final.pth') == 'logs/eval_final_flip_bf16.json'
    assert eval_script.result_path('models/final.onnx', 'openvino') == 'logs/eval_final_flip_bf16_onnx_openvino.json'


def test_eval_and_train_refuse_eval_amp_on_a_cpu_without_native_bfloat16_before_any_work(monkeypatch, in_process_run):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    monkeypatch.setattr(settings, 'EVAL_AMP', True)
    monkeypatch.setattr(settings, 'EVAL_EVERY', 2)
    monkeypatch.setattr('sys.argv', ['eval.py', 'no_such.pth'])
    for script in (eval_script.main, train.main):  # not the missing checkpoint, not a folder made
        with pytest.raises(ValueError, match='EVAL_AMP=True evaluates in bfloat16, but this CPU has no native'):
            script()
    assert not os.path.exists(settings.MODEL_DIR)


@pytest.mark.parametrize('given', [('no_such.pth',), ('--onnx', 'no_such.onnx')])
def test_eval_refuses_each_set_combination_before_the_first_is_evaluated(monkeypatch, in_process_run, given):
    """--set EVAL_AMP=False,True where EVAL_AMP = True is refused (PyTorch on a CPU without native bfloat16;
    onnxruntime on any): the refusal comes before the float32 evaluation (before: that one ran whole, here up to the
    missing file, and the command failed after its work)."""
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    for name in ('EVAL_AMP', 'DEVICE'):  # as eval.py leaves them
        monkeypatch.setattr(settings, name, getattr(settings, name))
    monkeypatch.setattr('sys.argv', ['eval.py', *given, '--set', 'EVAL_AMP=False,True'])
    with pytest.raises(ValueError, match='EVAL_AMP=True evaluates in bfloat16, but this CPU has no native|'
                                         'EVAL_AMP=True with --onnx: onnxruntime computes in float32'):
        eval_script.main()


class FirstStep(Exception):
    """What a stand-in for network.train_step raises to stop train.main() at its first step."""


def test_train_names_its_precision_in_its_first_line(monkeypatch, in_process_run, fake_cpu):
    """train.main() in this process up to its first step, whose train_step records the dtype it is given."""
    monkeypatch.setattr(settings, 'AMP', True)
    given = []

    def first_step(model, net, optimizer, scaler, img, label, dtype, step, rank):
        given.append(dtype)
        raise FirstStep
    monkeypatch.setattr(network, 'train_step', first_step)
    with log_records() as records, pytest.raises(FirstStep):
        train.main()
    line = next(m for m in messages(records).splitlines() if m.startswith('training EMANet'))
    if fake_cpu:
        assert given == [torch.bfloat16] and 'on cpu x1 (bfloat16 autocast)' in line
    else:
        assert given == [None]
        assert 'on cpu x1 (float32: AMP = True, but this CPU has no native bfloat16, which it would emulate slower ' \
               'than float32)' in line


def test_a_bfloat16_cpu_run_resumes_bit_for_bit(tmp_path, demo_data):
    """AMP = True on this machine's CPU: six tiny steps, stopped by SIGTERM (which saves latest.pth) after the second
    and resumed, end with
    the weights of an uninterrupted run, bit for bit. On a CPU without native bfloat16 both runs say they train in
    float32, and the same holds."""
    runs = {}
    for name in ('uninterrupted', 'resumed'):
        experiment = make_experiment(tmp_path / name, demo_data, AMP=True, ITER_MAX=6, CROP_SIZE=17)
        log = tmp_path / f'{name}.log'
        process = start_training(experiment, log)
        if name == 'resumed':
            wait_for(log, 'step 2/', process)
            process.terminate()
            assert process.wait(HANG_GUARD) != 0
            process = start_training(experiment, log)
        assert process.wait(HANG_GUARD) == 0, log.read_text()
        text = log.read_text()
        assert ('(bfloat16 autocast)' if NATIVE else '(float32: AMP = True, but this CPU has no native') in text
        runs[name] = torch.load(experiment / 'models' / 'final.pth', weights_only=True)['net']
    assert 'resumed from ./models/latest.pth at step' in text and 'step 6/6' in text
    for key, tensor in runs['uninterrupted'].items():
        assert torch.equal(tensor, runs['resumed'][key]), key


def demo_settings():
    """The settings demo.sh appends to its experiment, read from demo.sh itself."""
    text = open(f'{ROOT}/demo.sh').read()
    block = text.split('<<SETTINGS\n')[1].split('\nSETTINGS\n')[0]
    block = block.replace('$here/demo_data', 'demo_data').replace('${DEMO_ITER_MAX:-100}', '100')
    values = {}
    exec(block, {}, values)
    return values


def test_the_demos_settings_learn_in_bfloat16_as_in_float32(monkeypatch, demo_data):
    """The demo's network, batch, crop and learning rate on its data, three steps from its seed in this CPU's AMP
    precision and in float32: each loss falls, and bfloat16's follow float32's (the demo's 100 steps: README).
    On a CPU without native bfloat16 AMP is float32 too: the two runs are one computation, equal."""
    for name, value in {**demo_settings(), 'DATA_ROOT': str(demo_data)}.items():
        monkeypatch.setattr(settings, name, value)
    train_set = dataset.TrainDataset()
    losses = {}
    for amp in (True, False):
        monkeypatch.setattr(settings, 'AMP', amp)
        torch.manual_seed(settings.SEED)
        net = network.EMANet().train()
        optimizer = torch.optim.SGD(train.param_groups(net), lr=settings.LR, momentum=settings.LR_MOM)
        batches = train.train_batches(len(train_set), settings.BATCH_SIZE, 0, 1, 1)
        losses[amp] = []
        for step in (1, 2, 3):
            img, label = map(torch.stack, zip(*(train_set[item] for item in next(batches))))
            train.set_lr(optimizer, step)
            loss = network.train_step(net, net, optimizer, torch.amp.GradScaler('cpu', enabled=False), img, label,
                                      runtime.autocast_dtype(CPU), step, 0)
            losses[amp].append(loss.item())
    bf16, fp32 = losses[True], losses[False]
    assert bf16[0] > bf16[1] > bf16[2] and fp32[0] > fp32[1] > fp32[2] and fp32[2] < 0.6 * fp32[0]
    assert bf16 == pytest.approx(fp32, rel=0.1)
    assert (bf16 == fp32) != NATIVE  # bfloat16 did run where the CPU computes it
