"""benchmark.py: paper Table 1 sizes, the analytic growth of the two attention blocks, the reference data
pipeline, and a tiny end-to-end run. Nothing here asserts on a timing."""
import json

import numpy as np
import pytest
import torch

import benchmark
import dataset
import settings
from harness import ROOT, run_script


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


def test_overridden_restores_settings():
    before = settings.N_LAYERS
    with pytest.raises(RuntimeError):
        with benchmark.overridden(N_LAYERS=50):
            assert settings.N_LAYERS == 50
            raise RuntimeError
    assert settings.N_LAYERS == before


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
    for title in ('cpu, torch', 'Paper Table 1', 'Training, EMANet-50', 'AMP n/a on CPU', 'Inference',
                  'EM unit', 'Data loading'):
        assert title in run.stdout
    results = json.loads(out.read_text())
    assert results['device'] == 'cpu'
    assert set(results['table1']) == {'backbone', 'head_512', 'head_256'}
    train = results['train']
    assert train['config']['n_layers'] == 50 and train['config']['crop'] == 33
    assert train['amp_channels_last']['channels_last'] and train['amp_channels_last']['dtype'] == 'float32'
    assert train['amp_channels_last_compiled'] is None
    assert train['float32']['images_per_s'] > 0 and train['float32']['vs_float32'] == 1
    assert train['speedup'] == train['amp_channels_last']['vs_float32'] == pytest.approx(
        train['amp_channels_last']['images_per_s'] / train['float32']['images_per_s'])
    assert results['infer']['33x33']['images_per_s'] > 0
    assert results['infer']['33x33']['onnxruntime']['images_per_s'] > 0 and 'onnxruntime float32' in run.stdout
    assert results['infer']['33x33']['frozen']['images_per_s'] > 0 and 'frozen TorchScript' in run.stdout
    assert [row['size'] for row in results['attention']['sizes']] == [17, 33]
    for row in results['attention']['sizes']:
        assert row['emau_ms'] > 0 and row['nonlocal_ms'] > 0 and row['nonlocal_gmacs'] > row['emau_gmacs'] > 0
    assert results['data']['crop'] == settings.CROP_SIZE and results['data']['images'] == 2
    assert results['data']['train_dataset_per_s'] > 0 and results['data']['reference_per_s'] > 0
    assert all(x >= 0 for x in numbers(results))
