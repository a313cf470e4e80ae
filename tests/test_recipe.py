"""The authors' recipe, checked against independent references written here: the initialisation of every
head and EM-unit weight, a few SGD steps (groups, poly schedule, the bases' moving average), the paper's
ablation protocol (train at output stride 16, evaluate at 8), and one torch.compile graph."""
import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoint
import dataset
import network
import settings
import train
from harness import ONE_THREAD, TINY, make_experiment, run_script


# ---------------------------------------------------------------- initialisation

def authors_init_std(conv):
    """The authors' EMAU convs: normal(0, sqrt(2 / (k·k·out)))."""
    return math.sqrt(2 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels))


def pytorch_default_bound(conv):
    """What the authors' head convs keep: PyTorch's default kaiming_uniform_(a=√5), i.e. uniform(±1/√fan_in)."""
    return 1 / math.sqrt(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])


@pytest.mark.parametrize('channels', [512, 256])
def test_head_keeps_pytorch_default_init_and_emau_is_he_normal(monkeypatch, channels):
    monkeypatch.setattr(settings, 'EMA_CHANNELS', channels)
    torch.manual_seed(3)
    net = network.EMANet(21, 50)
    for conv in (net.fc0.conv, net.fc1[0].conv, net.fc2):  # uniform(±b): std b/√3, nothing beyond b
        bound = pytorch_default_bound(conv)
        weight = conv.weight.detach()
        assert weight.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    fc2_bias_bound = 1 / math.sqrt(256)
    assert net.fc2.bias.abs().max() <= fc2_bias_bound and net.fc2.bias.abs().max() > fc2_bias_bound / 2
    for conv in (net.emau.conv1, net.emau.conv2[0]):  # normal: a random draw of thousands of weights
        weight = conv.weight.detach()
        assert weight.std().item() == pytest.approx(authors_init_std(conv), rel=0.05)
        assert weight.abs().max() > 2.5 * authors_init_std(conv)  # tails a uniform draw of that std lacks
    for bn in (net.fc0.bn, net.emau.conv2[1], net.fc1[0].bn):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    # EMANet-50 at 512 channels: the classifier's spread was 8.7× this before it kept PyTorch's default
    assert net.fc2.weight.std().item() < 0.04


# ---------------------------------------------------------------- the recipe

def authors_lr(step):
    """The authors' poly schedule, updated every LR_DECAY steps, written out again."""
    last_update = (step // settings.LR_DECAY) * settings.LR_DECAY
    return settings.LR * (1 - last_update / settings.ITER_MAX) ** settings.POLY_POWER


def authors_sgd_step(net, buffers, step):
    """torch.optim.SGD's update with the authors' groups, by hand: conv weights decay, BN weights do not,
    biases take twice the learning rate and no decay; momentum buffers start as the first gradient."""
    lr = authors_lr(step)
    with torch.no_grad():
        for module in net.modules():
            if not isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
                continue
            for name, param in module.named_parameters(recurse=False):
                if param.grad is None:
                    continue
                decay = settings.WEIGHT_DECAY if name == 'weight' and isinstance(module, torch.nn.Conv2d) else 0
                gradient = param.grad + decay * param
                key = id(param)
                buffers[key] = gradient.clone() if key not in buffers else settings.LR_MOM * buffers[key] + gradient
                param -= (2 * lr if name == 'bias' else lr) * buffers[key]


def test_steps_through_train_py_equal_the_authors_recipe(monkeypatch):
    for name, value in dict(LR=0.05, LR_DECAY=2, ITER_MAX=10, EM_MOM=0.9).items():
        monkeypatch.setattr(settings, name, value)
    torch.manual_seed(0)
    ours = network.EMANet(21, 50).double().train()  # float64: a random net amplifies float32 rounding
    ours.fc1[1].eval()  # dropout off: both sides see the same pixels
    theirs = copy.deepcopy(ours)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, 33, 33, generator=generator, dtype=torch.float64),
                torch.randint(0, 21, (2, 33, 33), generator=generator)) for _ in range(3)]

    optimizer = torch.optim.SGD(train.param_groups(ours), lr=settings.LR, momentum=settings.LR_MOM)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    lrs = []
    for step, (img, label) in enumerate(batches, 1):  # steps 1, 2, 3: LR_DECAY = 2 changes the rate at 2
        lrs.append(train.set_lr(optimizer, step))
        network.train_step(ours, ours, optimizer, scaler, img, label, None, step, 0)

    buffers = {}
    for step, (img, label) in enumerate(batches, 1):
        theirs.zero_grad(set_to_none=True)
        loss, bases = theirs(img, label)
        loss.mean().backward()
        authors_sgd_step(theirs, buffers, step)
        with torch.no_grad():
            theirs.emau.mu.copy_(0.9 * theirs.emau.mu + 0.1 * bases.mean(dim=0, keepdim=True))

    assert lrs == [pytest.approx(authors_lr(step)) for step in (1, 2, 3)] and lrs[0] > lrs[1] == lrs[2]
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    for name, expected in theirs_state.items():  # float64 rounding, amplified by batch statistics: ~1e-12
        assert torch.allclose(ours_state[name].double(), expected.double(), rtol=1e-8, atol=1e-10), name
    torch.manual_seed(0)  # the steps moved what they must, and only that
    start = network.EMANet(21, 50).double().state_dict()
    for name in ('fc2.weight', 'fc2.bias', 'fc0.bn.weight', 'extractor.0.0.weight', 'emau.mu'):
        assert not torch.equal(start[name], theirs_state[name]), name
    assert torch.equal(start['emau.conv1.weight'], theirs_state['emau.conv1.weight'])  # frozen, no gradient


# ---------------------------------------------------------------- the ablation protocol: train at 16, test at 8

def test_weights_trained_at_stride_16_evaluate_at_stride_8(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, 'STRIDE', 16)
    torch.manual_seed(0)
    trained = network.EMANet(21, 50).eval()
    path = tmp_path / 'os16.pth'
    torch.save({'net': trained.state_dict(), 'step': 1}, path)
    monkeypatch.setattr(settings, 'EVAL_STRIDE', 8)
    at_eval_stride = network.EMANet(stride=settings.EVAL_STRIDE, n_layers=50).eval()
    checkpoint.load_checkpoint(at_eval_stride, path)
    monkeypatch.setattr(settings, 'STRIDE', 8)  # an independent OS8 net with the same weights
    os8 = network.EMANet(21, 50).eval()
    os8.load_state_dict(trained.state_dict())
    img = torch.randn(1, 3, 41, 49)
    with torch.no_grad():
        assert torch.equal(at_eval_stride(img), os8(img))
        assert not torch.allclose(trained(img), os8(img))  # the stride does change the computation
    assert at_eval_stride.extractor[6][0].conv2.stride == (1, 1)


def test_eval_py_runs_the_ablation_protocol(tmp_path, demo_data, monkeypatch):
    """A STRIDE = 16 experiment with EVAL_STRIDE = 8: eval.py pads images to k·8 + 1 and predicts what a net
    built at output stride 8 with the checkpoint's weights predicts."""
    experiment = make_experiment(tmp_path / 'exp', demo_data, STRIDE=16, EVAL_STRIDE=8, VAL_SPLIT='val_one')
    image_id = dataset.read_ids('val', str(demo_data))[0]
    dataset.write_lists({'val_one': [image_id]}, str(demo_data))
    (experiment / 'models').mkdir()
    monkeypatch.setattr(settings, 'EMA_CHANNELS', TINY['EMA_CHANNELS'])
    monkeypatch.setattr(settings, 'STRIDE', 16)
    trained = network.EMANet(21, 50)
    torch.save({'net': trained.state_dict(), 'step': 5}, experiment / 'models' / 'final.pth')
    monkeypatch.setattr(settings, 'STRIDE', 8)
    os8 = network.EMANet(21, 50).eval()
    os8.load_state_dict(trained.state_dict())
    image = dataset.read_image(dataset.image_path(image_id, str(demo_data)))
    width, height = image.size
    padded = (-(-(height - 1) // 8) * 8 + 1, -(-(width - 1) // 8) * 8 + 1)
    mean, std = np.array(settings.MEAN), np.array(settings.STD)
    img = torch.zeros(1, 3, *padded)
    img[0, :, :height, :width] = torch.from_numpy(((np.asarray(image) / 255 - mean) / std).transpose(2, 0, 1))
    with torch.no_grad():
        expected = os8(img).argmax(dim=1)[0, :height, :width].numpy()
    result = run_script(experiment, 'eval.py', '--save-pred', 'preds', env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    predicted = np.array(Image.open(experiment / 'preds' / f'{image_id}.png'))
    assert (predicted == expected).mean() > 0.999  # argmax ties aside, float32 rounding of other threads


# ---------------------------------------------------------------- torch.compile: one graph

@pytest.mark.parametrize('training', [True, False])
def test_forward_is_one_graph_for_torch_compile(monkeypatch, training):
    """A graph break costs GPU speed that CPU runs cannot show: the forward pass must stay one graph, in
    training (with the loss) and in evaluation."""
    torch._dynamo.reset()
    net = network.EMANet(21, 50).train(training)
    img, label = torch.randn(2, 3, 33, 33), torch.randint(0, 21, (2, 33, 33))
    explanation = torch._dynamo.explain(net)(img, label) if training else torch._dynamo.explain(net)(img)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
