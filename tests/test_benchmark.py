"""benchmark.py: paper Table 1 sizes, the analytic growth of the two attention blocks, the reference data
pipeline, and a tiny end-to-end run. Nothing here asserts on a timing."""
import json
import types

import numpy as np
import pytest
import torch

import benchmark
import dataset
import runtime
import settings
from harness import ROOT, run_script

NATIVE = runtime.native_bfloat16()  # this machine's CPU: bfloat16 rows measured, or saying they cannot run


@pytest.mark.parametrize('channels', [512, 256])
def test_table1_sizes_match_paper(channels):
    backbone_params, backbone_macs, head_params, head_macs = benchmark.table1_sizes(channels)
    paper_backbone_params, paper_backbone_gmacs = benchmark.PAPER_TABLE1['backbone']
    paper_head_params, paper_head_gmacs = benchmark.PAPER_TABLE1[f'head_{channels}']
    assert backbone_params / 1e6 == pytest.approx(paper_backbone_params, rel=0.005)
    assert backbone_macs / 1e9 == pytest.approx(paper_backbone_gmacs, rel=0.01)
    assert head_params / 1e6 == pytest.approx(paper_head_params, rel=0.005)
    assert head_macs / 1e9 == pytest.approx(paper_head_gmacs, rel=0.01)


def test_table1_leaves_settings_unchanged():
    before = settings.EMA_CHANNELS, settings.STRIDE
    benchmark.table1_sizes(256)
    assert (settings.EMA_CHANNELS, settings.STRIDE) == before


def test_emau_grows_linearly_and_non_local_quadratically(monkeypatch):
    monkeypatch.setattr(settings, 'EMA_CHANNELS', 64)
    c = settings.EMA_CHANNELS
    blocks = benchmark.attention_blocks()
    for size in (16, 64):
        n = size * size
        # four 1x1 convs (n·c² each) and the two n × n × c products of the attention map
        assert benchmark.attention_macs(blocks['nonlocal'], size) == 4 * n * c * c + 2 * n * n * c
    emau = [benchmark.attention_macs(blocks['emau'], size) for size in (16, 32, 64)]
    assert emau[1] / emau[0] == pytest.approx(4) and emau[2] / emau[1] == pytest.approx(4)


def test_non_local_block_is_a_residual_attention():
    block = benchmark.NonLocal(8).eval()
    features = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        out = block(features)
        assert out.shape == features.shape
        torch.nn.init.zeros_(block.out.weight)
        torch.nn.init.zeros_(block.out.bias)
        assert torch.equal(block(features), features)


def test_authors_augment_gives_the_train_dataset_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, 'CROP_SIZE', 513)  # larger than some rescaled images: the padding path too
    root = str(tmp_path)
    ids = benchmark.write_jpeg_dataset(root, 2)
    train_set = dataset.TrainDataset(data_root=root, split='train')
    allowed = set(range(settings.N_CLASSES)) | {settings.IGNORE_LABEL}
    for seed in range(6):
        image, label = train_set[(seed % 2, seed)]
        source = dataset.read_image(dataset.image_path(ids[seed % 2], root))
        source_label = dataset.read_label(dataset.label_path(ids[seed % 2], root))
        assert source.size == (500, 375) and len(np.unique(source_label)) > 1
        ref_image, ref_label = benchmark.authors_augment(source, source_label, np.random.default_rng(seed))
        assert ref_image.shape == image.shape == (3, 513, 513)
        assert ref_label.shape == label.shape == (513, 513)
        assert ref_image.dtype == image.dtype == torch.float32
        assert ref_label.dtype == label.dtype == torch.int64
        assert ref_image.is_contiguous() and ref_label.is_contiguous() and torch.isfinite(ref_image).all()
        assert set(ref_label.unique().tolist()) <= allowed
        assert (image - ref_image).abs().max() <= 1e-3 and torch.equal(label, ref_label)


def test_inference_flops_are_the_papers_table_1_and_the_classifier(monkeypatch):
    """EMANet-101 OS8 at 513 × 513 (65 × 65 features): paper Table 1's backbone and head (fc0 + EM unit) MACs, and
    by hand fc1 (3 × 3, 512 → 256) and fc2 (1 × 1, 256 → 21); two FLOPs a multiply-add."""
    monkeypatch.setattr(settings, 'N_LAYERS', 101)
    pixels = 65 * 65
    head = pixels * (9 * 512 * 256 + 256 * 21) / 1e9
    expected = 2 * (benchmark.PAPER_TABLE1['backbone'][1] + benchmark.PAPER_TABLE1['head_512'][1] + head)
    assert benchmark.inference_gflop(1, 513, 513) == pytest.approx(expected, rel=0.01)
    assert benchmark.inference_gflop(3, 513, 513) == pytest.approx(3 * benchmark.inference_gflop(1, 513, 513))


def test_a_cpu_without_native_bfloat16_has_no_bfloat16_limit_and_rows_that_say_so(monkeypatch):
    for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    args = types.SimpleNamespace(eval_batch=1, warmup=0, iters=1, repeats=1)
    variants = {'eager': ('float32 eager', lambda img: img, False, 'float32'), 'openvino_bf16': None}
    limits = benchmark.limit_calls()
    assert set(limits) == {'float32'}
    measured, gflops = benchmark.measure_inference(torch.device('cpu'), args, variants, 9, 9, limits)
    assert gflops['float32'] > 0 and gflops['bfloat16'] is None and measured['openvino_bf16'] is None
    assert measured['eager']['of_limit'] == pytest.approx(measured['eager']['gflops'] / gflops['float32'])


def test_applied_settings_come_back_after_an_error():
    """settings.applied, which benchmark.py's sections and prepare.py's commands run under: the old values come
    back after an exception, and a name that was no setting is none again."""
    before = settings.N_LAYERS
    with pytest.raises(RuntimeError):
        with settings.applied({'N_LAYERS': 50, 'NOT_A_SETTING': 1}):
            assert settings.N_LAYERS == 50 and settings.NOT_A_SETTING == 1
            raise RuntimeError
    assert settings.N_LAYERS == before and not hasattr(settings, 'NOT_A_SETTING')


def numbers(tree):
    """Every number in a JSON tree, bools aside (None, memory that cannot be measured, is no number)."""
    if isinstance(tree, dict):
        return [x for value in tree.values() for x in numbers(value)]
    if isinstance(tree, list):
        return [x for value in tree for x in numbers(value)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.long
def test_tiny_run_prints_table_and_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    run = run_script(ROOT, 'benchmark.py', '--json', str(out), '--device', 'cpu', '--layers', '50', '--crop', '33',
                     '--batch', '1', '--eval-batch', '1', '--iters', '1', '--warmup', '0', '--repeats', '1',
                     '--infer-sizes', '33x33', '--sizes', '17,33', '--data-images', '2')
    assert run.returncode == 0, run.stderr
    amp = 'AMP (bfloat16)' if NATIVE else 'AMP: float32, this CPU has no native bfloat16'
    for title in ('cpu, torch', 'Paper Table 1', 'Training, EMANet-50', amp, 'CPU limits: a 2048x2048 matrix product',
                  'Inference', 'EM unit', 'Data loading'):
        assert title in run.stdout
    results = json.loads(out.read_text())
    assert results['device'] == 'cpu'
    assert set(results['table1']) == {'backbone', 'head_512', 'head_256'}
    train = results['train']
    assert train['config']['n_layers'] == 50 and train['config']['crop'] == 33
    assert train['amp']['dtype'] == train['amp_channels_last']['dtype'] == ('bfloat16' if NATIVE else 'float32')
    assert train['amp_channels_last']['channels_last'] and not train['amp']['channels_last']
    assert train['amp_channels_last_compiled'] is None
    assert train['float32']['images_per_s'] > 0 and train['float32']['vs_float32'] == 1
    assert train['speedup'] == train['amp']['vs_float32'] == pytest.approx(  # what train.py runs on the CPU
        train['amp']['images_per_s'] / train['float32']['images_per_s'])
    infer = results['infer']['33x33']
    limits = infer['limits']
    assert limits['float32'] > 0 and (limits['bfloat16'] > 0 if NATIVE else limits['bfloat16'] is None)
    with settings.applied({'N_LAYERS': 50}):  # the run's --layers
        assert infer['gflop_per_image'] == pytest.approx(benchmark.inference_gflop(1, 33, 33))
    rows = {line.split('  ')[1].strip(): line for line in run.stdout.splitlines() if line.startswith('33x33')}
    paths = {'eager': ('float32 eager', 'float32'), 'frozen': ('float32 frozen TorchScript (eval.py)', 'float32'),
             'onnxruntime': ('onnxruntime float32', 'float32'), 'openvino': ('OpenVINO float32', 'float32'),
             'eager_bf16': ('bfloat16 eager autocast', 'bfloat16'),
             'frozen_bf16': ('bfloat16 frozen TorchScript (eval.py EVAL_AMP)', 'bfloat16'),
             'openvino_bf16': ('OpenVINO bfloat16', 'bfloat16')}
    for name, (label, precision) in paths.items():
        if precision == 'bfloat16' and not NATIVE:  # a row that says so, and no numbers
            assert infer[name] is None and f'33x33  {name}' in rows and 'no native bfloat16' in rows[name]
            continue
        path = infer if name == 'eager' else infer[name]  # eager's numbers where they were before the others
        assert label in rows and path['precision'] == precision and path['seconds_per_image'] > 0
        assert path['images_per_s'] == pytest.approx(1 / path['seconds_per_image'])  # batch 1
        assert path['gflops'] == pytest.approx(infer['gflop_per_image'] / path['seconds_per_image'])
        assert path['of_limit'] == pytest.approx(path['gflops'] / limits[precision])
        assert path['vs_onnxruntime'] == pytest.approx(infer['onnxruntime']['seconds_per_image'] /
                                                       path['seconds_per_image'])
        assert path['vs_eager'] == pytest.approx(infer['seconds_per_image'] / path['seconds_per_image'])
        assert f"{path['seconds_per_image']:.3f}" in rows[label] and f"{100 * path['of_limit']:.0f}%" in rows[label]
    assert [row['size'] for row in results['attention']['sizes']] == [17, 33]
    for row in results['attention']['sizes']:
        assert row['emau_ms'] > 0 and row['nonlocal_ms'] > 0 and row['nonlocal_gmacs'] > row['emau_gmacs'] > 0
    assert results['data']['crop'] == settings.CROP_SIZE and results['data']['images'] == 2
    assert results['data']['train_dataset_per_s'] > 0 and results['data']['reference_per_s'] > 0
    assert all(x >= 0 for x in numbers(results))
