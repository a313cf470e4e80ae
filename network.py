"""EMANet, the method and how it learns: a deep-stem ResNet, the EM attention unit (EMAU) and the segmentation
head; the initialisation, the loss, the training step and the bases' moving average.

State-dict names are those of the authors' released checkpoints, so their `{'net': state_dict, 'step': N}`
files load unchanged (checkpoint.py reads and writes them). The EM step is `EMAU.em_step`; the loss is
`per_image_loss` (OHEM: `hard_pixels`); one SGD step is `train_step`; the moving average of the bases is
`update_bases`.

    python network.py        # prints parameter counts of the current settings' model
"""
import contextlib
import math

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
    intended. The buffer `mu` (1 × c × k) is the running estimate of the bases
    that every image starts from; `update_bases` maintains it after each
    training step from the per-image bases that `forward` returns.
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
        bases b × c × k, responsibilities b × n × k (no gradient unless EM_GRAD)."""
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
        with torch.autocast('cuda' if x.is_cuda else 'cpu', enabled=False):  # EM and reconstruction in float32
            bases, responsibilities = self.em(x)
            reconstruction = torch.bmm(bases, responsibilities.transpose(1, 2)).view(b, c, h, w)
        out = self.conv2(F.relu(reconstruction, inplace=True))
        return F.relu(out + x, inplace=True), bases


LOSSES = ('ce', 'ohem')


def loss_kind():
    """settings.LOSS, checked; EMANet checks it when built, so a misspelt value stops a run before its first step."""
    if settings.LOSS not in LOSSES:
        raise ValueError(f"LOSS={settings.LOSS!r}: must be 'ce' (the authors' per-image mean) or 'ohem' "
                         f"(online hard example mining)")
    return settings.LOSS


def per_image_loss(logits, label):
    """The training loss of each image (b), in float32 under autocast. logits: b × classes × h × w,
    label: b × h × w.

    LOSS='ce': pixel-wise NLL averaged over H and W, ignored pixels counting as zeros, as in the authors' loss.
    LOSS='ohem': the NLL averaged over the image's hard pixels (see `hard_pixels`). The selection is per image,
    OHEM_MIN_KEPT included, so that this stays a loss per image: the training step averages images and DDP
    averages processes, as with 'ce'. An image without a valid pixel gives 0."""
    nll = F.nll_loss(F.log_softmax(upcast(logits), dim=1), label,
                     ignore_index=settings.IGNORE_LABEL, reduction='none')  # b × h × w
    if loss_kind() == 'ce':
        return nll.mean(dim=(1, 2))
    nll = nll.flatten(1)  # b × n
    kept = hard_pixels(nll.detach(), label.flatten(1) != settings.IGNORE_LABEL)  # b × n
    return (nll * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)


def hard_pixels(nll, valid):
    """Online hard example mining (b × n bool): of the valid pixels, those whose probability of the true class,
    exp(−NLL), is below OHEM_THRESH, and in any case the OHEM_MIN_KEPT least probable ones. Masks and topk, no
    value read back to the host, so torch.compile keeps one graph and the GPU never waits. nll, valid: b × n."""
    prob = torch.where(valid, torch.exp(-nll), math.inf)  # b × n, ignored pixels rank last
    hardest = prob.topk(min(settings.OHEM_MIN_KEPT, prob.shape[1]), dim=1, largest=False).indices  # b × k
    return (prob < settings.OHEM_THRESH).scatter(1, hardest, True) & valid


class EMANet(nn.Module):
    def __init__(self, n_classes=None, n_layers=None, stride=None):
        super().__init__()
        n_classes = settings.N_CLASSES if n_classes is None else n_classes
        n_layers = settings.N_LAYERS if n_layers is None else n_layers
        channels = settings.EMA_CHANNELS
        loss_kind()  # a bad LOSS stops here, not at the first step
        self.n_layers = n_layers
        self.extractor = backbone(n_layers, settings.STRIDE if stride is None else stride)
        self.fc0 = ConvBNReLU(2048, channels, 3)
        self.emau = EMAU(channels, settings.N_BASES, settings.STAGE_NUM, settings.EVAL_STAGE_NUM,
                         settings.EM_NORM, settings.EM_GRAD)
        self.fc1 = nn.Sequential(ConvBNReLU(channels, 256, 3), nn.Dropout2d(p=0.1))
        self.fc2 = nn.Conv2d(256, n_classes, 1)
        init_weights(self.extractor)  # as the authors: fc0, fc1 and fc2 keep PyTorch's default initialisation
        init_weights(self.emau)

    def features(self, img):
        """The EM unit's input: b × EMA_CHANNELS × h × w at the output stride."""
        return self.fc0(self.extractor(img))

    def forward(self, img, lbl=None, size=None):
        x, bases = self.emau(self.features(img))
        logits = self.fc2(self.fc1(x))
        logits = F.interpolate(upcast(logits), size=size or img.shape[-2:], mode='bilinear', align_corners=True)
        if self.training and lbl is not None:
            return per_image_loss(logits, lbl), bases
        return logits


def init_weights(module):
    """The authors' scheme: convs normal(0, sqrt(2 / (k·k·out))), BN weight 1 and bias 0; biases keep
    torch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def train_step(model, net, optimizer, scaler, img, label, dtype, step, rank):
    """One SGD step on this process's share of the global batch, then the bases' moving average; returns the
    mean loss of its images as a tensor on the device (reading it back is left to the caller). model is net,
    or net wrapped by DDP or torch.compile.

    The share runs as ACCUM_STEPS micro-batches (`img.chunk`), each one's summed image losses divided by the
    whole share's image count, so that the accumulated gradients, and the update, are those of the whole share;
    DDP reduces them after the last one only (no_sync: less communication, the same sums). The bases' moving
    average takes every micro-batch's bases. BatchNorm is the one difference: it normalises each micro-batch
    with that micro-batch's statistics, and updates its running statistics once per micro-batch."""
    torch.manual_seed(hash((settings.SEED, step, rank)) % 2 ** 63)  # dropout masks follow the step: exact resume
    optimizer.zero_grad(set_to_none=True)
    micro_batches = list(zip(img.chunk(settings.ACCUM_STEPS), label.chunk(settings.ACCUM_STEPS)))
    loss, bases = 0, []
    for i, (micro_img, micro_label) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else getattr(model, 'no_sync', contextlib.nullcontext)():
            with torch.autocast(img.device.type, dtype=dtype, enabled=dtype is not None):
                losses, micro_bases = model(micro_img, micro_label)  # b' losses, b' × c × k
            micro_loss = losses.sum() / len(img)
            scaler.scale(micro_loss).backward()
        loss = loss + micro_loss.detach()
        bases.append(micro_bases)
    scaler.step(optimizer)
    scaler.update()
    update_bases(net.emau, torch.cat(bases))
    return loss


@torch.no_grad()
def update_bases(emau, bases):
    """The moving average of the running bases over the whole global batch: bases is b × c × k from this
    process's images; the mean is all-reduced so every process keeps identical running bases."""
    batch_mean = all_reduce_mean(bases.mean(dim=0, keepdim=True))  # 1 × c × k
    emau.mu.mul_(settings.EM_MOM).add_(batch_mean, alpha=1 - settings.EM_MOM)


def all_reduce_mean(values):
    """The mean of a tensor over all processes (itself in a single process)."""
    if dist.is_available() and dist.is_initialized():  # NCCL reduces tensors on the GPU, gloo on the CPU
        on_gpu = dist.get_backend() == 'nccl'
        reduced = values.to(torch.device('cuda', torch.cuda.current_device()) if on_gpu else torch.device('cpu'))
        dist.all_reduce(reduced)
        values = (reduced / dist.get_world_size()).to(values.device)
    return values


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


if __name__ == '__main__':
    net = EMANet()
    settings.logger.info('EMANet-%d OS%d: backbone %.2fM, head %.2fM, total %.2fM parameters',
                         settings.N_LAYERS, settings.STRIDE, count_parameters(net.extractor) / 1e6,
                         (count_parameters(net.fc0) + count_parameters(net.emau)) / 1e6,
                         count_parameters(net) / 1e6)
