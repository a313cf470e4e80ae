"""network.py: shapes, the EM unit's invariants, gradients, the authors' layout, loading.
(Paper Table 1 is checked through benchmark.table1_sizes in test_benchmark.py.)"""
import math
from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import network
import settings
from checkpoint import CheckpointError
from harness import Payload
from network import EMANet, EMAU


def small_net(monkeypatch, **overrides):
    for name, value in overrides.items():
        monkeypatch.setattr(settings, name, value)
    return EMANet(n_classes=21, n_layers=50)


def meta_features(n_layers, stride, size=513):
    with torch.device('meta'):
        return network.backbone(n_layers, stride)(torch.empty(1, 3, size, size))


@pytest.mark.parametrize('stride, side', [(8, 65), (16, 33)])
def test_feature_size_at_513(stride, side):
    assert meta_features(50, stride).shape == (1, 2048, side, side)


@pytest.mark.parametrize('stride', [8, 16])
def test_logits_shape_and_loss(monkeypatch, stride):
    net = small_net(monkeypatch, STRIDE=stride)
    img = torch.randn(2, 3, 41, 37)
    lbl = torch.randint(0, 21, (2, 41, 37))
    loss, mu = net.train()(img, lbl)
    assert loss.shape == (2,) and mu.shape == (2, 512, 64)
    assert net.eval()(img).shape == (2, 21, 41, 37)
    assert net(img, size=(20, 30)).shape == (2, 21, 20, 30)


def conv3x3_geometry(layer):
    return [(block.conv2.stride[0], block.conv2.dilation[0], block.conv2.padding[0]) for block in layer]


@pytest.mark.parametrize('stride, layer3, layer4', [
    (8, [(1, 1, 1)] + [(1, 2, 2)] * 5, [(1, 2, 2), (1, 8, 8), (1, 16, 16)]),
    (16, [(2, 1, 1)] + [(1, 1, 1)] * 5, [(1, 1, 1), (1, 4, 4), (1, 8, 8)]),
])
def test_dilations_and_multi_grid(stride, layer3, layer4):
    extractor = network.backbone(50, stride)
    assert conv3x3_geometry(extractor[6]) == layer3
    assert conv3x3_geometry(extractor[7]) == layer4
    assert [len(extractor[i]) for i in range(4, 8)] == [3, 4, 6, 3]
    assert [len(network.backbone(n, 8)[6]) for n in (101, 152)] == [23, 36]


def test_deep_stem_and_init():
    extractor = EMANet(21, 50).extractor
    stem = extractor[0]
    assert [tuple(stem[i].weight.shape) for i in (0, 3, 6)] == [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3)]
    assert stem[0].stride == (2, 2) and isinstance(extractor[3], torch.nn.MaxPool2d)
    conv = extractor[6][2].conv2  # 3x3, 256 out: std sqrt(2 / (9·256))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.05)
    assert torch.all(extractor[1].weight == 1) and torch.all(extractor[1].bias == 0)
    assert extractor[1].momentum == settings.BN_MOM


def test_bases_buffer_init():
    unit = EMAU(32, 16)
    assert unit.mu.shape == (1, 32, 16)
    assert torch.allclose(unit.mu.norm(dim=1), torch.ones(1, 16), atol=1e-5)
    assert 'mu' in dict(unit.named_buffers()) and 'mu' not in dict(unit.named_parameters())


def test_em_step_invariants():
    unit = EMAU(16, 8)
    x = torch.randn(3, 16, 50)
    bases, responsibilities = unit.em_step(x, unit.mu.expand(3, -1, -1))
    assert responsibilities.shape == (3, 50, 8) and bases.shape == (3, 16, 8)
    assert torch.allclose(responsibilities.sum(dim=2), torch.ones(3, 50), atol=1e-5)
    assert torch.allclose(bases.norm(dim=1), torch.ones(3, 8), atol=1e-5)
    # the M-step is the responsibility-weighted mean of the pixels, normalised with 1e-6
    weights = responsibilities / (1e-6 + responsibilities.sum(dim=1, keepdim=True))
    expected = torch.einsum('bcn,bnk->bck', x, weights)
    assert torch.allclose(bases, expected / (1e-6 + expected.norm(dim=1, keepdim=True)), atol=1e-5)


def test_em_step_epsilons_keep_zero_input_finite():
    unit = EMAU(4, 3)
    bases, responsibilities = unit.em_step(torch.zeros(1, 4, 5), unit.mu)
    assert torch.all(bases == 0)  # 0 / (1e-6 + 0), not NaN
    assert torch.allclose(responsibilities, torch.full((1, 5, 3), 1 / 3))
    tiny = network.l2_normalise(torch.full((1, 2, 1), 1e-7))
    assert torch.allclose(tiny, torch.full((1, 2, 1), 1e-7 / (1e-6 + math.sqrt(2) * 1e-7)))


def em_formula(x, bases, norm):
    """One EM step written from the paper (DESIGN.md), independently of network.py. x: b × c × n, bases: b × c × k."""
    z = torch.exp(torch.einsum('bcn,bck->bnk', x, bases))
    z = z / z.sum(dim=2, keepdim=True)  # softmax over the k bases
    weights = z / (1e-6 + z.sum(dim=1, keepdim=True))  # each basis' responsibilities sum to 1 over the n pixels
    bases = torch.einsum('bcn,bnk->bck', x, weights)
    if norm == 'l2':
        bases = bases / (1e-6 + bases.pow(2).sum(dim=1, keepdim=True).sqrt())  # unit length over the c channels
    return bases, z


@pytest.mark.parametrize('norm', ['l2', 'none'])
def test_em_step_iterations_and_unit_output_follow_the_formula(norm):
    torch.manual_seed(3)
    unit = EMAU(16, 8, stage_num=3, norm=norm).double().eval()
    unit.conv2[1].running_mean.normal_()  # a batch norm that is not the identity
    unit.conv2[1].running_var.uniform_(0.5, 2)
    unit.conv2[1].weight.data.uniform_(0.5, 2)
    unit.conv2[1].bias.data.normal_()
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)  # b × c × h × w: 99 pixels, 8 bases
    pixels = F.conv2d(x, unit.conv1.weight, unit.conv1.bias).flatten(2)  # b × c × n
    bases = unit.mu.expand(2, -1, -1)
    # one step
    step_bases, step_z = unit.em_step(pixels, bases)
    expected_bases, expected_z = em_formula(pixels, bases, norm)
    assert torch.allclose(step_z, expected_z, atol=1e-12) and torch.allclose(step_bases, expected_bases, atol=1e-12)
    # the iterations, from the running bases
    for _ in range(3):
        bases, z = em_formula(pixels, bases, norm)
    em_bases, em_z = unit.em(x)
    assert torch.allclose(em_bases, bases, atol=1e-10) and torch.allclose(em_z, z, atol=1e-10)
    # the unit: reconstruction μ zᵀ → ReLU → 1x1 conv → BN → + input → ReLU
    bn = unit.conv2[1]
    reconstruction = F.relu(torch.einsum('bck,bnk->bcn', bases, z)).view_as(x)
    y = F.conv2d(reconstruction, unit.conv2[0].weight)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    out, out_bases = unit(x.clone())
    assert torch.allclose(out, F.relu(y + x), atol=1e-10) and torch.allclose(out_bases, bases, atol=1e-10)


def test_init_is_the_authors_on_convs_of_every_shape():
    net = EMANet(21, 50)
    shapes = set()
    for name, module in [*net.extractor.named_modules(prefix='extractor'), *net.emau.named_modules(prefix='emau')]:
        if isinstance(module, torch.nn.Conv2d):
            k, c_out, c_in = module.kernel_size[0], module.out_channels, module.in_channels
            shapes.add((k, c_in < c_out, c_in == c_out, c_in > c_out))
            # fan-out: normal(0, sqrt(2 / (k·k·out))); 1728 weights at least, so 10% is many standard errors
            assert module.weight.std().item() == pytest.approx(math.sqrt(2 / (k * k * c_out)), rel=0.1), name
            assert abs(module.weight.mean().item()) < 0.1 * math.sqrt(2 / (k * k * c_out)), name
        elif isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
    # 3x3 widening (stem 3→64, 64→128), equal and narrowing, 1x1 widening (conv3, downsample), equal, narrowing
    assert shapes == {(3, True, False, False), (3, False, True, False), (1, True, False, False),
                      (1, False, True, False), (1, False, False, True)}
    stem = net.extractor[0][0]
    assert stem.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.1)  # 0.059, not fan-in's 0.27
    # the head keeps PyTorch's default: uniform(±1/sqrt(fan_in)), std 1/sqrt(3·fan_in)
    for name, conv in [('fc0', net.fc0.conv), ('fc1', net.fc1[0].conv), ('fc2', net.fc2)]:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.abs().max().item() <= 1 / math.sqrt(fan_in), name
        assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1), name


def test_em_iterations_run_without_gradient(monkeypatch):
    net = small_net(monkeypatch)
    loss, mu = net.train()(torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33)))
    loss.mean().backward()
    assert not mu.requires_grad
    assert net.emau.conv1.weight.grad is None and net.emau.conv1.bias.grad is None
    for name in ('fc0.conv.weight', 'extractor.0.0.weight', 'extractor.7.2.conv3.weight',
                 'emau.conv2.0.weight', 'fc1.0.conv.weight', 'fc2.weight', 'fc2.bias'):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def batch_norm_train(x, params, prefix):
    return F.batch_norm(x, None, None, params[prefix + '.weight'], params[prefix + '.bias'], training=True)


def reference_head(params, feat, img_size, label, stage_num):
    """The authors' head written from the paper and DESIGN.md, op for op: permute, bmm,
    softmax over bases, divide by (1e-6 + sum over pixels), bmm, L2 with 1e-6."""
    x = F.relu(batch_norm_train(F.conv2d(feat, params['fc0.conv.weight'], padding=1), params, 'fc0.bn'))
    identity = x
    x = F.conv2d(x, params['emau.conv1.weight'], params['emau.conv1.bias'])
    b, c, h, w = x.size()
    x = x.view(b, c, h * w)
    mu = params['emau.mu'].repeat(b, 1, 1)
    with torch.no_grad():
        for _ in range(stage_num):
            z = F.softmax(torch.bmm(x.permute(0, 2, 1), mu), dim=2)
            z_ = z / (1e-6 + z.sum(dim=1, keepdim=True))
            mu = torch.bmm(x, z_)
            mu = mu / (1e-6 + mu.norm(dim=1, keepdim=True))
    x = F.relu(mu.matmul(z.permute(0, 2, 1)).view(b, c, h, w))
    x = batch_norm_train(F.conv2d(x, params['emau.conv2.0.weight']), params, 'emau.conv2.1')
    x = F.relu(x + identity)
    x = F.relu(batch_norm_train(F.conv2d(x, params['fc1.0.conv.weight'], padding=1), params, 'fc1.0.bn'))
    x = F.conv2d(x, params['fc2.weight'], params['fc2.bias'])
    pred = F.interpolate(x, size=img_size, mode='bilinear', align_corners=True)
    loss = F.nll_loss(F.log_softmax(pred, dim=1), label, ignore_index=255, reduction='none')
    return pred, loss.mean(dim=2).mean(dim=1), mu


def test_matches_reference_head(monkeypatch):
    net = small_net(monkeypatch).train()
    net.fc1[1].train(False)  # dropout off: the comparison is deterministic
    img = torch.randn(2, 3, 49, 45)
    label = torch.randint(0, 21, (2, 49, 45))
    label[:, :5] = 255
    loss, mu = net(img, label)
    loss.mean().backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)

    params = dict(net.named_parameters()) | dict(net.named_buffers())
    ref_pred, ref_loss, ref_mu = reference_head(params, net.extractor(img), img.shape[-2:], label, settings.STAGE_NUM)
    ref_loss.mean().backward()
    assert torch.allclose(loss, ref_loss, atol=1e-6)
    assert torch.allclose(mu, ref_mu, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(net(img), ref_pred, atol=1e-5)  # training-mode logits (no label)
    assert set(grads) == {k for k, p in net.named_parameters() if p.grad is not None}
    for name, grad in grads.items():  # float32 rounding grows through 50 layers: compare norms
        assert (grad - params[name].grad).norm() <= 1e-4 * grad.norm() + 1e-7, name


def authors_key_names(blocks):
    """The authors' checkpoint keys, spelled out from DESIGN.md (BN buffers included)."""
    def bn(prefix):
        return [f'{prefix}.{s}' for s in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')]
    keys = ['extractor.0.0.weight', *bn('extractor.0.1'), 'extractor.0.3.weight', *bn('extractor.0.4'),
            'extractor.0.6.weight', *bn('extractor.1')]
    for layer, n in zip(range(4, 8), blocks):
        for i in range(n):
            p = f'extractor.{layer}.{i}'
            keys += [f'{p}.conv1.weight', *bn(f'{p}.bn1'), f'{p}.conv2.weight', *bn(f'{p}.bn2'),
                     f'{p}.conv3.weight', *bn(f'{p}.bn3')]
            if i == 0:
                keys += [f'{p}.downsample.0.weight', *bn(f'{p}.downsample.1')]
    keys += ['fc0.conv.weight', *bn('fc0.bn'), 'emau.mu', 'emau.conv1.weight', 'emau.conv1.bias',
             'emau.conv2.0.weight', *bn('emau.conv2.1'), 'fc1.0.conv.weight', *bn('fc1.0.bn'),
             'fc2.weight', 'fc2.bias']
    return keys


def test_state_dict_names_are_the_authors():
    with torch.device('meta'):
        assert set(EMANet(21, 101).state_dict()) == set(authors_key_names((3, 4, 23, 3)))


def test_authors_checkpoint_round_trip(monkeypatch, tmp_path):
    net = small_net(monkeypatch).eval()
    with torch.no_grad():
        net.emau.mu.normal_()
    path = tmp_path / 'EMANet50.pth'
    torch.save({'net': net.state_dict(), 'step': 30000}, path)
    fresh = small_net(monkeypatch).eval()
    assert checkpoint.load_checkpoint(fresh, path)['step'] == 30000
    img = torch.randn(1, 3, 33, 33)
    assert torch.equal(fresh(img), net(img))
    # files from torch versions without BN counters load as well
    old = {k: v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    torch.save({'net': old, 'step': 1}, path)
    checkpoint.load_checkpoint(small_net(monkeypatch), path)


def test_checkpoint_for_another_class_count_names_key_and_shapes(monkeypatch, tmp_path):
    path = tmp_path / 'voc.pth'
    torch.save({'net': small_net(monkeypatch).state_dict(), 'step': 1}, path)
    with pytest.raises(CheckpointError, match=r'fc2.weight has shape \(21, 256, 1, 1\).*\(19, 256, 1, 1\)'):
        checkpoint.load_checkpoint(EMANet(n_classes=19, n_layers=50), path)
    with pytest.raises(CheckpointError, match='unexpected key extractor.6.6.conv1.weight'):
        checkpoint.load_checkpoint(EMANet(n_classes=21, n_layers=50), save(tmp_path, {'net': EMANet(21, 101).state_dict()}))


def save(tmp_path, obj, name='file.pth'):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_untrusted_and_broken_checkpoints_are_refused(monkeypatch, tmp_path):
    net = small_net(monkeypatch)
    with pytest.raises(CheckpointError, match='arbitrary unpickling'):
        checkpoint.load_checkpoint(net, save(tmp_path, {'net': {}, 'obj': Payload()}))
    assert not Payload.ran
    with pytest.raises(CheckpointError, match='not an EMANet checkpoint'):
        checkpoint.load_checkpoint(net, save(tmp_path, {'step': 1}))
    good = save(tmp_path, {'net': net.state_dict(), 'step': 1})
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match='truncated.pth is truncated or corrupt'):
        checkpoint.load_checkpoint(net, truncated)
    with pytest.raises(CheckpointError, match='nothere.pth does not exist'):
        checkpoint.load_checkpoint(net, tmp_path / 'nothere.pth')


def imagenet_file(extractor, tmp_path, drop=None, reshape=None, extra=None, counters=True):
    """An ImageNet backbone in the PyTorch-Encoding / timm deep-stem layout."""
    names = {0: 'conv1', 1: 'bn1', 4: 'layer1', 5: 'layer2', 6: 'layer3', 7: 'layer4'}
    state = {}
    for key, value in extractor.state_dict().items():
        index, rest = key.split('.', 1)
        if counters or not rest.endswith('num_batches_tracked'):
            state[f'{names[int(index)]}.{rest}'] = value.clone().normal_() if value.is_floating_point() else value
    state['fc.weight'], state['fc.bias'] = torch.randn(1000, 2048), torch.randn(1000)
    state.pop(drop, None)
    if reshape:
        state[reshape] = torch.randn(7, 7)
    state.update(extra or {})
    return save(tmp_path, state, 'resnet50s.pth'), state


def test_pretrained_loads_strictly(monkeypatch, tmp_path):
    net = small_net(monkeypatch)
    path, state = imagenet_file(net.extractor, tmp_path)
    checkpoint.load_pretrained(net, path)
    assert torch.equal(net.extractor[0][6].weight, state['conv1.6.weight'])
    assert torch.equal(net.extractor[1].running_var, state['bn1.running_var'])
    assert torch.equal(net.extractor[7][2].bn3.weight, state['layer4.2.bn3.weight'])
    path, state = imagenet_file(net.extractor, tmp_path, counters=False)
    checkpoint.load_pretrained(net, path)
    assert torch.equal(net.extractor[6][0].downsample[0].weight, state['layer3.0.downsample.0.weight'])


@pytest.mark.parametrize('kwargs, message', [
    (dict(drop='layer2.1.conv2.weight'), r'resnet50s.pth: missing key layer2.1.conv2.weight'),
    (dict(reshape='layer1.0.bn1.bias'), r'resnet50s.pth: key layer1.0.bn1.bias has shape \(7, 7\) in the file but \(64,\)'),
    (dict(extra={'layer3.6.conv1.weight': torch.zeros(1)}), r'resnet50s.pth: unexpected key layer3.6.conv1.weight'),
])
def test_pretrained_errors_name_key_and_file(monkeypatch, tmp_path, kwargs, message):
    net = small_net(monkeypatch)
    path, _ = imagenet_file(net.extractor, tmp_path, **kwargs)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_pretrained(net, path)


def test_pretrained_missing_file_says_where_to_get_one(monkeypatch, tmp_path):
    with pytest.raises(CheckpointError, match=r"PRETRAINED=.*nowhere.pth.*does not exist.*resnet50s.*README"):
        checkpoint.load_pretrained(small_net(monkeypatch), str(tmp_path / 'nowhere.pth'))


def count_em_steps(net, monkeypatch):
    calls = []
    original = EMAU.em_step
    monkeypatch.setattr(EMAU, 'em_step', lambda self, x, bases: calls.append(1) or original(self, x, bases))
    return calls


def test_ablation_width_bases_and_stages(monkeypatch):
    net = small_net(monkeypatch, EMA_CHANNELS=256, N_BASES=16, STAGE_NUM=5, EVAL_STAGE_NUM=2)
    assert net.emau.mu.shape == (1, 256, 16) and net.fc0.conv.out_channels == 256
    calls = count_em_steps(net, monkeypatch)
    img = torch.randn(1, 3, 33, 33)
    net.train()(img, torch.zeros(1, 33, 33, dtype=torch.long))
    assert len(calls) == 5
    net.eval()(img)
    assert len(calls) == 7
    monkeypatch.setattr(settings, 'EVAL_STAGE_NUM', None)
    net = EMANet(21, 50).eval()
    calls.clear()
    net(img)
    assert len(calls) == 5


def test_ablation_em_norm(monkeypatch):
    img = torch.randn(2, 3, 33, 33)
    _, mu = small_net(monkeypatch, EM_NORM='l2').train()(img, torch.zeros(2, 33, 33, dtype=torch.long))
    assert torch.allclose(mu.norm(dim=1), torch.ones(2, 64), atol=1e-5)
    _, mu = small_net(monkeypatch, EM_NORM='none').train()(img, torch.zeros(2, 33, 33, dtype=torch.long))
    assert not torch.allclose(mu.norm(dim=1), torch.ones(2, 64), atol=1e-2)
    with pytest.raises(ValueError, match="EM_NORM='l1'"):
        small_net(monkeypatch, EM_NORM='l1')


def test_ablation_em_grad_reaches_input_conv(monkeypatch):
    net = small_net(monkeypatch, EM_GRAD=True).train()
    loss, mu = net(torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33)))
    loss.mean().backward()
    assert net.emau.conv1.weight.grad.abs().sum() > 0
    assert mu.requires_grad


@pytest.mark.parametrize('momentum', [0.9, 1.0])
def test_update_bases_moving_average(monkeypatch, momentum):
    monkeypatch.setattr(settings, 'EM_MOM', momentum)
    unit = EMAU(8, 4)
    before = unit.mu.clone()
    mu = torch.randn(3, 8, 4)
    network.update_bases(unit, mu)
    assert torch.allclose(unit.mu, momentum * before + (1 - momentum) * mu.mean(dim=0, keepdim=True))
    if momentum == 1.0:
        assert torch.equal(unit.mu, before)


def test_bad_depth_and_stride_are_named():
    with pytest.raises(ValueError, match='N_LAYERS=34'):
        network.backbone(34, 8)
    with pytest.raises(ValueError, match='STRIDE=32'):
        network.backbone(50, 32)


def test_channels_last_gives_the_same_results(monkeypatch):
    """CHANNELS_LAST: the EM unit flattens pixels correctly whatever the memory layout. A layout
    bug gives differences of order one; other conv kernels only round differently, which in float64 stays
    far below the tolerance (in float32 the random net with batch statistics amplifies it to about 1e-4,
    more or less on other CPUs)."""
    net = small_net(monkeypatch).double()
    img, label = torch.randn(2, 3, 65, 65, dtype=torch.float64), torch.randint(0, 21, (2, 65, 65))
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        laid_out = deepcopy(net).to(memory_format=layout)
        x = img.contiguous(memory_format=layout)
        torch.manual_seed(0)  # the same dropout masks
        loss, mu = laid_out.train()(x, label)
        results.append((loss, mu, laid_out.eval()(x)))
    for expected, got in zip(*results):
        assert torch.allclose(got, expected, rtol=0, atol=1e-6 * expected.abs().max().item())


def test_em_and_loss_stay_float32_under_autocast(monkeypatch):
    net = small_net(monkeypatch).train()
    img, label = torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        features = net.fc0(net.extractor(img))
        loss, mu = net(img, label)
    assert features.dtype == torch.bfloat16  # the backbone did run in bfloat16
    assert loss.dtype == torch.float32 and mu.dtype == torch.float32
    assert torch.allclose(mu.norm(dim=1), torch.ones(2, 64), atol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert net.eval()(img).dtype == torch.float32


# ---------------------------------------------------------------- LOSS = 'ohem'

def logits_of(prob_true):
    """1 × 2 × 1 × n logits whose softmax gives class 0 exactly the probabilities prob_true (n)."""
    return torch.log(torch.stack([prob_true, 1 - prob_true]))[None, :, None, :]


# probabilities of the true class (class 0); the fifth pixel, the least probable, is ignored
HAND_PROBS = torch.tensor([0.9, 0.6, 0.3, 0.8, 0.05, 0.75], dtype=torch.float64)
HAND_LABEL = torch.tensor([[[0, 0, 0, 0, 255, 0]]])


@pytest.mark.parametrize('min_kept, kept', [
    (1, [0.6, 0.3]),                      # below 0.7: enough
    (3, [0.6, 0.3, 0.75]),                # two below 0.7: the three least probable
    (100, [0.9, 0.6, 0.3, 0.8, 0.75]),    # more than there are: every valid pixel
])
def test_ohem_keeps_hard_pixels_hand_computed(monkeypatch, min_kept, kept):
    monkeypatch.setattr(settings, 'LOSS', 'ohem')
    monkeypatch.setattr(settings, 'OHEM_THRESH', 0.7)
    monkeypatch.setattr(settings, 'OHEM_MIN_KEPT', min_kept)
    logits = logits_of(HAND_PROBS).requires_grad_()
    loss = network.per_image_loss(logits, HAND_LABEL)
    expected = -sum(math.log(p) for p in kept) / len(kept)
    assert loss.shape == (1,) and loss.item() == pytest.approx(expected, rel=1e-12)
    loss.sum().backward()
    touched = logits.grad.abs().sum(dim=1).flatten() > 0  # pixels the loss depends on
    assert HAND_PROBS[touched].tolist() == pytest.approx(kept)


def test_ohem_every_pixel_hard_is_the_mean_over_valid_pixels(monkeypatch):
    monkeypatch.setattr(settings, 'LOSS', 'ohem')
    monkeypatch.setattr(settings, 'OHEM_THRESH', 1.01)  # every probability is below
    monkeypatch.setattr(settings, 'OHEM_MIN_KEPT', 0)
    logits, label = torch.randn(3, 21, 9, 11), torch.randint(0, 21, (3, 9, 11))
    label[0, :4] = 255
    label[1, :, 3] = 255
    mean_over_valid = torch.stack([F.cross_entropy(logits[i:i + 1], label[i:i + 1], ignore_index=255)
                                   for i in range(3)])
    assert torch.allclose(network.per_image_loss(logits, label), mean_over_valid, atol=1e-6)
    monkeypatch.setattr(settings, 'LOSS', 'ce')  # the authors' loss counts ignored pixels as zeros instead
    assert network.per_image_loss(logits, label)[0] < mean_over_valid[0]


def test_ohem_never_counts_ignored_pixels(monkeypatch):
    monkeypatch.setattr(settings, 'LOSS', 'ohem')
    monkeypatch.setattr(settings, 'OHEM_MIN_KEPT', 10 ** 6)  # as many as there are, ignored ones included
    logits, label = torch.randn(2, 5, 6, 7, requires_grad=True), torch.randint(0, 5, (2, 6, 7))
    label[0, 2:] = 255
    label[1] = 255  # nothing valid: 0, not NaN
    loss = network.per_image_loss(logits, label)
    expected = F.cross_entropy(logits[:1, :, :2], label[:1, :2])
    assert torch.allclose(loss[0], expected) and loss[1] == 0
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[0, :, 2:] == 0) and torch.all(logits.grad[1] == 0)
    assert torch.all(network.hard_pixels(torch.rand(1, 4), torch.zeros(1, 4, dtype=torch.bool)) == 0)


def test_ohem_float32_under_autocast_and_one_graph(monkeypatch):
    """Under AMP the loss is float32; nothing is read back to the host, so dynamo captures it whole
    (fullgraph raises on a graph break such as .item())."""
    monkeypatch.setattr(settings, 'LOSS', 'ohem')
    monkeypatch.setattr(settings, 'OHEM_MIN_KEPT', 20)
    logits, label = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    assert network.per_image_loss(logits.bfloat16(), label).dtype == torch.float32
    compiled = torch.compile(network.per_image_loss, fullgraph=True, backend='eager')
    assert torch.allclose(compiled(logits, label), network.per_image_loss(logits, label))


def test_ohem_trains_through_the_training_step(monkeypatch):
    net = small_net(monkeypatch, LOSS='ohem', OHEM_MIN_KEPT=100).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    img, label = torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33))
    label[0, :10] = 255
    weights = net.fc2.weight.clone()
    loss = network.train_step(net, net, optimizer, torch.amp.GradScaler('cpu', enabled=False), img, label,
                              None, 1, 0)
    assert loss.shape == () and torch.isfinite(loss) and loss > 0
    assert not torch.equal(net.fc2.weight, weights) and torch.isfinite(net.fc2.weight).all()


def test_bad_loss_is_named_when_the_net_is_built(monkeypatch):
    with pytest.raises(ValueError, match="LOSS='focal'"):
        small_net(monkeypatch, LOSS='focal')
