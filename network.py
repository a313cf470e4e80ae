"""EMANet: a deep-stem ResNet, the EM attention unit (EMAU) and the segmentation head; the loss, the bases'
moving average, the runtime that every script shares (device, torchrun, autocast), and the checkpoint format.

State-dict names are those of the authors' released checkpoints, so their
`{'net': state_dict, 'step': N}` files load unchanged. The EM step is
`EMAU.em_step`; the loss is `per_image_loss` (OHEM: `hard_pixels`); the moving average of the bases is
`update_bases`; checkpoints are written by `save_checkpoint` and read by
`load_checkpoint` and `resume`.

    python network.py        # prints parameter counts of the current settings' model
"""
import atexit
import errno
import fcntl
import glob
import math
import os
import pickle
import socket
import time
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
    or net wrapped by DDP or torch.compile."""
    torch.manual_seed(hash((settings.SEED, step, rank)) % 2 ** 63)  # dropout masks follow the step: exact resume
    with autocast(img.device, dtype):
        loss, bases = model(img, label)
    loss = loss.mean()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    update_bases(net.emau, bases)
    return loss.detach()


@torch.no_grad()
def update_bases(emau, bases):
    """The moving average of the running bases over the whole global batch: bases is b × c × k from this
    process's images; the mean is all-reduced so every process keeps identical running bases."""
    batch_mean = all_reduce_mean(bases.mean(dim=0, keepdim=True))  # 1 × c × k
    emau.mu.mul_(settings.EM_MOM).add_(batch_mean, alpha=1 - settings.EM_MOM)


# ---------------------------------------------------------------- runtime: device, torchrun, precision

def run_script(main):
    """Runs an entry script's main(): a bad setting, data file or checkpoint ends it with the message that names
    it, not a traceback."""
    try:
        main()
    except (FileNotFoundError, ValueError, CheckpointError) as error:
        raise SystemExit(str(error)) from None


def setup_runtime():
    """(rank, world_size, device) from torchrun's environment, or a single process. Under torchrun the
    process group is NCCL on GPUs, gloo on CPU; rank 0 alone logs."""
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    device = torch.device(settings.DEVICE or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda':
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if rank:
        settings.logger.setLevel('ERROR')
    return rank, world, device


def autocast_dtype(device):
    """bfloat16 where the GPU supports it, else float16 (with a gradient scaler); None: no AMP."""
    if device.type != 'cuda' or not settings.AMP:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, dtype):
    """torch.autocast to dtype on device; dtype None leaves it off."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def to_device(x, device):
    """A module or a b × 3 × h × w batch on device, channels-last on CUDA when CHANNELS_LAST."""
    x = x.to(device, non_blocking=True)
    return x.to(memory_format=torch.channels_last) if device.type == 'cuda' and settings.CHANNELS_LAST else x


def all_reduce_mean(values):
    """The mean of a tensor over all processes (itself in a single process)."""
    if dist.is_available() and dist.is_initialized():  # NCCL reduces tensors on the GPU, gloo on the CPU
        on_gpu = dist.get_backend() == 'nccl'
        reduced = values.to(torch.device('cuda', torch.cuda.current_device()) if on_gpu else torch.device('cpu'))
        dist.all_reduce(reduced)
        values = (reduced / dist.get_world_size()).to(values.device)
    return values


# ---------------------------------------------------------------- checkpoints and pretrained weights

class CheckpointError(RuntimeError):
    """A checkpoint or weight file that cannot be used; the message says which and why."""


class CorruptCheckpointError(CheckpointError):
    """A file that is truncated or damaged, as opposed to one for other settings."""


def checkpoint_path(name):
    """An existing file or a name with a folder in it is a path; a bare name is MODEL_DIR/name."""
    name = os.fspath(name)
    if os.path.exists(name) or os.path.dirname(name):
        return name
    return os.path.join(settings.MODEL_DIR, name)


def read_weights(path, what='checkpoint', mmap=False):
    """torch.load with weights_only=True, turning every failure into a CheckpointError that names the file.
    mmap: tensors stay in the file until read (torch.save's zip files only), for a quick look at a checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{what} {path} does not exist')
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # an intact torch.save file whose pickle holds code, not only weights
            raise CheckpointError(f'{what} {path} is not a plain weights file: it needs arbitrary unpickling, '
                                  f'which is refused so that nothing in it runs') from None
        raise CorruptCheckpointError(f'{what} {path} is truncated or corrupt (it does not unpickle)') from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptCheckpointError(f'{what} {path} is truncated or corrupt ({str(e).splitlines()[0]})') from None


def load_state(module, state, path):
    """module.load_state_dict(state) with errors that name the file and the first mis-shaped, missing or
    unexpected key. BN num_batches_tracked counters are optional: older files lack them, and a fixed BN
    momentum never reads them."""
    own = module.state_dict()
    for k, v in state.items():
        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise CheckpointError(f'{path}: key {k} has shape {shape} in the file but '
                                  f'{tuple(own[k].shape)} in the model (N_CLASSES={settings.N_CLASSES}, '
                                  f'N_LAYERS={settings.N_LAYERS}, EMA_CHANNELS={settings.EMA_CHANNELS}, '
                                  f'N_BASES={settings.N_BASES})')
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing:
        raise CheckpointError(f'{path}: missing key {missing[0]} ({len(missing)} missing in all); '
                              f'is it for another N_LAYERS or EMA_CHANNELS?')
    if unexpected:
        raise CheckpointError(f'{path}: unexpected key {unexpected[0]} ({len(unexpected)} unexpected in all); '
                              f'is it for another N_LAYERS?')


def load_checkpoint(net, path, optimizer=None, scaler=None):
    """Loads a checkpoint `{'net': state_dict, 'step': N, ...}` (the authors' files included) into net, and
    into optimizer and scaler when given; returns the whole checkpoint dict."""
    ckpt = read_weights(path)
    if not isinstance(ckpt, dict) or 'net' not in ckpt:
        raise CheckpointError(f'{path} is not an EMANet checkpoint: expected a dict with a "net" state_dict')
    load_state(net, ckpt['net'], path)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt['optimizer'])
        scaler.load_state_dict(ckpt['scaler'])
    return ckpt


def save_checkpoint(name, net, optimizer, scaler, step):
    """Writes MODEL_DIR/name = {'net', 'step', 'optimizer', 'scaler', 'settings'} atomically: a temporary
    file, synced, then renamed over the old one, so a kill at any moment leaves the previous complete file
    or the new one. Refuses non-finite weights."""
    state = net.state_dict()
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f'step {step}: {bad} is not finite; {name} was not written')
    path = checkpoint_path(name)
    tmp = f'{path}.tmp{os.getpid()}'
    ckpt = {'net': state, 'step': step, 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
            'settings': settings.effective()}
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointError(f'could not write {path}: {e.strerror or e}. The previous checkpoint is intact; '
                              f'free space or fix MODEL_DIR={settings.MODEL_DIR!r}, then rerun to resume') from None


def lock_model_dir():
    """Makes this process the one training run of MODEL_DIR until it exits. The lock is a POSIX lock on
    MODEL_DIR/train.lock, which the kernel (or the file server) drops when its process dies, however it dies;
    the file names the holder for the next run's messages. Once it holds the lock it removes the temporary files
    of saves that a kill interrupted. Raises CheckpointError naming a run that holds it.
    Where MODEL_DIR's filesystem has no POSIX locks (some NFS or Lustre mounts) it warns and goes on unlocked."""
    path = os.path.join(settings.MODEL_DIR, 'train.lock')
    try:
        lock = open(path, 'a+')
    except OSError as e:
        raise CheckpointError(f'cannot write {path}: {e.strerror or e}') from None
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):  # held
            lock.seek(0)
            holder = lock.read().strip() or 'a process that has not written its name yet'
            lock.close()
            raise CheckpointError(f'MODEL_DIR={os.path.abspath(settings.MODEL_DIR)!r} belongs to a training run '
                                  f'that is still going ({holder}); stop it first, or train this experiment '
                                  f'elsewhere') from None
        lock.close()  # no lock to be had here (ENOLCK, EOPNOTSUPP, ENOSYS...)
        settings.logger.warning('cannot lock %s (%s): the filesystem of MODEL_DIR does not support POSIX locks, '
                                'so nothing stops a second run in this folder; start one at a time',
                                path, e.strerror or e)
    else:
        lock.seek(0)
        previous = lock.read().strip()
        if previous:
            settings.logger.warning('taking over %s from a run that ended without releasing it (%s)', path, previous)
        lock.truncate(0)
        lock.write(f'pid {os.getpid()} on {socket.gethostname()}, started {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        lock.flush()

        def release():  # a run that ends, even by an error or a signal, leaves an empty file: nothing to take over
            lock.truncate(0)
            lock.close()
        atexit.register(release)
    for partial in glob.glob(checkpoint_path('*.pth.tmp*')):  # saves that a kill interrupted: no run owns them now
        os.remove(partial)


def resume(net, optimizer, scaler):
    """Loads MODEL_DIR/latest.pth into net, optimizer and scaler, or, if it is missing or corrupt, final.pth or
    the newest intact step_<N>.pth; returns the step it holds, 0 for a fresh run."""
    latest = checkpoint_path('latest.pth')
    steps = sorted(glob.glob(checkpoint_path('step_*.pth')), key=lambda p: int(os.path.basename(p)[5:-4]))
    candidates = [path for path in [latest, checkpoint_path('final.pth')] + steps[::-1] if os.path.exists(path)]
    if not candidates:
        return 0
    if candidates[0] != latest:
        settings.logger.warning('%s is missing: resuming from the newest other checkpoint', latest)
    for path in candidates:
        try:
            ckpt = load_checkpoint(net, path, optimizer, scaler)
            break
        except CorruptCheckpointError as e:
            settings.logger.warning('%s', e)
        except CheckpointError as e:
            raise CheckpointError(f'{e}\nMODEL_DIR={settings.MODEL_DIR!r} holds a run with other settings: '
                                  f'use another MODEL_DIR, or clean.sh to remove it') from None
    else:
        raise CorruptCheckpointError(f'{latest} is truncated or corrupt. No intact step_<N>.pth to fall back on: '
                                     f'remove it to start this experiment from scratch')
    for name, old in ckpt.get('settings', {}).items():
        if getattr(settings, name, None) != old:
            settings.logger.warning('resuming with %s = %r (the checkpoint ran with %r)',
                                    name, getattr(settings, name, None), old)
    settings.logger.info('resumed from %s at step %d', path, ckpt['step'])
    return ckpt['step']


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
    load_state(net.extractor, state, path)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


if __name__ == '__main__':
    net = EMANet()
    settings.logger.info('EMANet-%d OS%d: backbone %.2fM, head %.2fM, total %.2fM parameters',
                         settings.N_LAYERS, settings.STRIDE, count_parameters(net.extractor) / 1e6,
                         (count_parameters(net.fc0) + count_parameters(net.emau)) / 1e6,
                         count_parameters(net) / 1e6)
