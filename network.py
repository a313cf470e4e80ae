"""EMANet: a deep-stem ResNet, the EM attention unit (EMAU) and the segmentation head.

State-dict names are those of the authors' released checkpoints, so their
`{'net': state_dict, 'step': N}` files load unchanged. The EM step is
`EMAU.em_step`; the moving average of the bases is `update_bases`.

    python network.py        # prints parameter counts of the current settings' model
"""
import math
import os
import pickle
import zipfile

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import settings

LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# layer3 and layer4 as (stride, dilation, multi-grid) for each output stride
DILATION = {8: ((1, 2, False), (1, 4, True)), 16: ((2, 1, False), (1, 2, True))}
MULTI_GRID = (1, 2, 4)


def batch_norm(channels):
    return nn.BatchNorm2d(channels, momentum=settings.BN_MOM)


def conv3x3(c_in, c_out, stride=1, dilation=1):
    return nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = batch_norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = batch_norm(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity, inplace=True)


def block_dilations(n_blocks, dilation, multi_grid):
    """The first block enters at half the dilation (as the PyTorch-Encoding ResNet does);
    with multi-grid the others take dilation × (2, 4)."""
    first = max(1, dilation // 2)
    if multi_grid:
        return [first] + [dilation * MULTI_GRID[i % 3] for i in range(1, n_blocks)]
    return [first] + [dilation] * (n_blocks - 1)


def make_layer(c_in, planes, n_blocks, stride=1, dilation=1, multi_grid=False):
    downsample = None
    if stride != 1 or c_in != planes * 4:
        downsample = nn.Sequential(nn.Conv2d(c_in, planes * 4, 1, stride, bias=False), batch_norm(planes * 4))
    dilations = block_dilations(n_blocks, dilation, multi_grid)
    blocks = [Bottleneck(c_in, planes, stride, dilations[0], downsample)]
    blocks += [Bottleneck(planes * 4, planes, 1, d) for d in dilations[1:]]
    return nn.Sequential(*blocks)


def deep_stem():
    """Three 3x3 convs instead of the 7x7 one; the last conv's BN is the separate `bn1`."""
    return nn.Sequential(
        conv3x3(3, 64, stride=2), batch_norm(64), nn.ReLU(inplace=True),
        conv3x3(64, 64), batch_norm(64), nn.ReLU(inplace=True),
        conv3x3(64, 128))


def backbone(n_layers, stride):
    """The ResNet as one Sequential: stem, bn1, relu, maxpool, layer1..layer4 (indices 0..7)."""
    if n_layers not in LAYERS:
        raise ValueError(f'N_LAYERS={n_layers!r}: must be one of {sorted(LAYERS)}')
    if stride not in DILATION:
        raise ValueError(f'STRIDE={stride!r}: must be one of {sorted(DILATION)}')
    blocks = LAYERS[n_layers]
    (s3, d3, g3), (s4, d4, g4) = DILATION[stride]
    return nn.Sequential(
        deep_stem(), batch_norm(128), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        make_layer(128, 64, blocks[0]),
        make_layer(256, 128, blocks[1], stride=2),
        make_layer(512, 256, blocks[2], s3, d3, g3),
        make_layer(1024, 512, blocks[3], s4, d4, g4))


class ConvBNReLU(nn.Module):
    def __init__(self, c_in, c_out, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = batch_norm(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def upcast(x):
    """At least float32: autocast's half-precision activations become float32, float64 stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def l2_normalise(bases):
    """Unit length over channels; 1e-6 keeps an all-zero basis finite.  # b × c × k"""
    return bases / (1e-6 + bases.norm(dim=1, keepdim=True))


class EMAU(nn.Module):
    """Expectation-Maximization Attention Unit.

    The E-step computes responsibilities of K bases for each pixel, the M-step
    re-estimates the bases as responsibility-weighted means of the pixels; the
    output is the low-rank reconstruction from the final bases and
    responsibilities. The iterations run without gradient (EM_GRAD=False, as
    published), so the input 1x1 conv gets none: the authors confirm this is
    intended. `mu` (1 × c × k) is the running estimate of the bases that every
    image starts from; `update_bases` maintains it after each training step.
    """

    def __init__(self, channels, n_bases, stage_num=3, eval_stage_num=None, norm='l2', grad=False):
        super().__init__()
        if norm not in ('l2', 'none'):
            raise ValueError(f"EM_NORM={norm!r}: must be 'l2' or 'none'")
        self.stage_num = stage_num
        self.eval_stage_num = stage_num if eval_stage_num is None else eval_stage_num
        self.norm = norm
        self.grad = grad
        bases = torch.empty(1, channels, n_bases).normal_(0, math.sqrt(2.0 / n_bases))
        self.register_buffer('mu', l2_normalise(bases))  # 1 × c × k
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv1.requires_grad_(grad)  # no gradient reaches it otherwise; frozen, DDP need not look for one
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), batch_norm(channels))

    def em_step(self, x, bases):
        """One E-step and M-step. x: b × c × n, bases: b × c × k."""
        responsibilities = F.softmax(torch.bmm(x.transpose(1, 2), bases), dim=2)  # b × n × k
        weights = responsibilities / (1e-6 + responsibilities.sum(dim=1, keepdim=True))  # b × n × k, columns sum to 1
        bases = torch.bmm(x, weights)  # b × c × k
        if self.norm == 'l2':
            bases = l2_normalise(bases)
        return bases, responsibilities

    def em(self, x):
        """The EM iterations from the running bases. x: the unit's input, b × c × h × w →
        bases b × c × k, responsibilities b × n × k (float32; no gradient unless EM_GRAD)."""
        x = self.conv1(upcast(x)).flatten(2)  # b × c × n
        bases = self.mu.expand(x.shape[0], -1, -1)  # b × c × k
        stages = self.stage_num if self.training else self.eval_stage_num
        with torch.no_grad():
            for _ in range(stages - 1 if self.grad else stages):
                bases, responsibilities = self.em_step(x, bases)
        if self.grad:
            bases, responsibilities = self.em_step(x, bases)
        return bases, responsibilities

    def forward(self, x):
        b, c, h, w = x.shape
        # the EM iterations and the reconstruction stay in float32 under autocast
        with torch.autocast('cuda' if x.is_cuda else 'cpu', enabled=False):
            bases, responsibilities = self.em(x)
            reconstruction = torch.bmm(bases, responsibilities.transpose(1, 2)).view(b, c, h, w)
        out = self.conv2(F.relu(reconstruction, inplace=True))
        return F.relu(out + x, inplace=True), bases


def per_image_loss(logits, label):
    """Pixel-wise NLL averaged over H and W; ignored pixels count as zeros, as in the
    authors' loss. logits: b × classes × h × w, label: b × h × w → b."""
    nll = F.nll_loss(F.log_softmax(upcast(logits), dim=1), label,
                     ignore_index=settings.IGNORE_LABEL, reduction='none')  # b × h × w
    return nll.mean(dim=(1, 2))


class EMANet(nn.Module):
    def __init__(self, n_classes=None, n_layers=None):
        super().__init__()
        n_classes = settings.N_CLASSES if n_classes is None else n_classes
        n_layers = settings.N_LAYERS if n_layers is None else n_layers
        channels = settings.EMA_CHANNELS
        self.n_layers = n_layers
        self.extractor = backbone(n_layers, settings.STRIDE)
        self.fc0 = ConvBNReLU(2048, channels, 3)
        self.emau = EMAU(channels, settings.N_BASES, settings.STAGE_NUM, settings.EVAL_STAGE_NUM,
                         settings.EM_NORM, settings.EM_GRAD)
        self.fc1 = nn.Sequential(ConvBNReLU(channels, 256, 3), nn.Dropout2d(p=0.1))
        self.fc2 = nn.Conv2d(256, n_classes, 1)
        init_weights(self)

    def forward(self, img, lbl=None, size=None):
        x = self.fc0(self.extractor(img))
        x, mu = self.emau(x)
        logits = self.fc2(self.fc1(x))
        logits = F.interpolate(upcast(logits), size=size or img.shape[-2:], mode='bilinear', align_corners=True)
        if self.training and lbl is not None:
            return per_image_loss(logits, lbl), mu
        return logits


def init_weights(net):
    """Convs He-normal over fan-out (k·k·out), BN weight 1 and bias 0; biases keep torch's default."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def update_bases(emau, mu):
    """Moving average of the bases over the whole global batch: mu is b × c × k from this
    process's images; the mean is all-reduced so every process keeps identical bases."""
    batch_mean = mu.mean(dim=0, keepdim=True)  # 1 × c × k
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(batch_mean)
        batch_mean /= dist.get_world_size()
    emau.mu.mul_(settings.EM_MOM).add_(batch_mean, alpha=1 - settings.EM_MOM)


class CheckpointError(RuntimeError):
    """A checkpoint or weight file that cannot be used; the message says which and why."""


class CorruptCheckpointError(CheckpointError):
    """A file that is truncated or damaged, as opposed to one for other settings."""


def read_weights(path, what='checkpoint'):
    """torch.load with weights_only=True, turning every failure into a CheckpointError that names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{what} {path} does not exist')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'Unsupported global' in str(e):  # a class or function to call: code, not weights
            raise CheckpointError(f'{what} {path} is not a plain weights file: it needs arbitrary unpickling, '
                                  f'which is refused so that nothing in it runs') from None
        raise CorruptCheckpointError(f'{what} {path} is truncated or corrupt (it does not unpickle)') from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptCheckpointError(f'{what} {path} is truncated or corrupt ({str(e).splitlines()[0]})') from None


def load_matching(module, state, path):
    """load_state_dict that names the first missing, unexpected or mis-shaped key and the file.
    BN num_batches_tracked counters are optional: older files lack them, and a fixed BN
    momentum never reads them."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise CheckpointError(f'{path}: missing key {missing[0]} ({len(missing)} missing in all); '
                              f'is it for another N_LAYERS or EMA_CHANNELS?')
    if unexpected:
        raise CheckpointError(f'{path}: unexpected key {unexpected[0]} ({len(unexpected)} unexpected in all); '
                              f'is it for another N_LAYERS?')
    for k, v in state.items():
        if not isinstance(v, torch.Tensor) or v.shape != own[k].shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise CheckpointError(f'{path}: key {k} has shape {shape} in the file but '
                                  f'{tuple(own[k].shape)} in the model (N_CLASSES={settings.N_CLASSES}, '
                                  f'N_LAYERS={settings.N_LAYERS}, EMA_CHANNELS={settings.EMA_CHANNELS}, '
                                  f'N_BASES={settings.N_BASES})')
    module.load_state_dict(state, strict=False)


def load_checkpoint(net, path):
    """Loads an EMANet checkpoint `{'net': state_dict, 'step': N, ...}` (the authors' files
    included) into net; returns the whole checkpoint dict."""
    ckpt = read_weights(path)
    if not isinstance(ckpt, dict) or 'net' not in ckpt:
        raise CheckpointError(f'{path} is not an EMANet checkpoint: expected a dict with a "net" state_dict')
    load_matching(net, ckpt['net'], path)
    return ckpt


def backbone_key(key):
    """PyTorch-Encoding / timm deep-stem ResNet name → our extractor name."""
    head, rest = key.split('.', 1)
    index = {'conv1': 0, 'bn1': 1, 'layer1': 4, 'layer2': 5, 'layer3': 6, 'layer4': 7}.get(head)
    return key if index is None else f'{index}.{rest}'


def load_pretrained(net, path):
    """Strictly loads an ImageNet deep-stem ResNet (`conv1.0/.1/.3/.4/.6`, `bn1`, `layer1..4`,
    `fc`) into net.extractor; the ImageNet classifier `fc` is dropped."""
    if not os.path.isfile(path):
        raise CheckpointError(
            f'PRETRAINED={path!r} does not exist. Put a deep-stem ImageNet ResNet-{net.n_layers} there '
            f"(timm's Gluon resnet{net.n_layers}s weights or PyTorch-Encoding's resnet{net.n_layers} "
            f'file, see README "Pretrained backbones"), or set PRETRAINED = None to train from scratch')
    state = read_weights(path, 'PRETRAINED file')
    if not isinstance(state, dict) or 'net' in state:
        raise CheckpointError(f'PRETRAINED file {path} is not an ImageNet ResNet state_dict '
                              f'(an EMANet checkpoint goes to eval.py or MODEL_DIR/latest.pth instead)')
    state = {backbone_key(k): v for k, v in state.items() if not k.startswith('fc.')}
    load_matching(net.extractor, state, path)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


if __name__ == '__main__':
    net = EMANet()
    settings.logger.info('EMANet-%d OS%d: backbone %.2fM, head %.2fM, total %.2fM parameters',
                         settings.N_LAYERS, settings.STRIDE, count_parameters(net.extractor) / 1e6,
                         (count_parameters(net.fc0) + count_parameters(net.emau)) / 1e6,
                         count_parameters(net) / 1e6)
