"""Trains EMANet with the authors' recipe, in this folder's experiment.

    python train.py                                    # one process: GPU if available, else CPU
    torchrun --nproc_per_node=4 train.py               # DDP: NCCL on GPUs, gloo on CPU
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 train.py

SGD with three parameter groups, poly learning rate every LR_DECAY steps, the
bases' moving average after every step. Checkpoints go to MODEL_DIR: latest.pth
every ITER_SAVE // 10 steps, step_<N>.pth every ITER_SAVE, final.pth at the end.
A run resumes from latest.pth when it exists and then ends with exactly the
weights of an uninterrupted run: the data order, each sample's augmentation and
the dropout masks derive from (SEED, step, rank), so no RNG state is carried.
SIGTERM or SIGINT saves latest.pth and exits. On several nodes MODEL_DIR must be a shared
folder. TensorBoard: `bash tensorboard.sh`.
"""
import glob
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tensorboardX import SummaryWriter
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

import dataset
import network
import settings

logger = settings.logger


def init_distributed():
    """(rank, world_size, device) from torchrun's environment, or a single process."""
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    device = torch.device(settings.DEVICE or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda':
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if rank:
        logger.setLevel('ERROR')  # rank 0 alone logs
    return rank, world, device


def autocast_dtype(device):
    """bfloat16 where the GPU supports it, else float16 (with a gradient scaler); None: no AMP."""
    if device.type != 'cuda' or not settings.AMP:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def mixed_precision(device, dtype):
    """autocast to dtype on device; dtype None leaves it off."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def to_device(x, device):
    """A module or a b × 3 × h × w batch on device, channels-last on CUDA when CHANNELS_LAST."""
    x = x.to(device, non_blocking=True)
    return x.to(memory_format=torch.channels_last) if device.type == 'cuda' and settings.CHANNELS_LAST else x


def effective_settings():
    """Every UPPER_CASE setting, in file order: what an experiment ran with."""
    return {k: v for k, v in vars(settings).items() if k.isupper()}


def param_groups(net):
    """The authors' three groups: conv weights (LR, weight decay), BN weights (LR, no decay),
    conv and BN biases (2·LR, no decay)."""
    conv_weights, bn_weights, biases = [], [], []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            conv_weights.append(m.weight)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn_weights.append(m.weight)
        else:
            continue
        if m.bias is not None:
            biases.append(m.bias)
    return [{'params': conv_weights, 'weight_decay': settings.WEIGHT_DECAY},
            {'params': bn_weights, 'weight_decay': 0.0},
            {'params': biases, 'weight_decay': 0.0}]


def poly_lr(step):
    """LR·(1 − it/ITER_MAX)^POLY_POWER with `it` the last multiple of LR_DECAY not after step."""
    it = step - step % settings.LR_DECAY
    return settings.LR * max(0.0, 1 - it / settings.ITER_MAX) ** settings.POLY_POWER


def set_lr(optimizer, step):
    lr = poly_lr(step)
    for group, factor in zip(optimizer.param_groups, (1, 1, 2)):
        group['lr'] = lr * factor
    return lr


def make_optimizer(net):
    return torch.optim.SGD(param_groups(net), lr=settings.LR, momentum=settings.LR_MOM)


def step_seed(step, rank):
    """A seed for everything random at this step on this process."""
    return (settings.SEED, step, rank)


class TrainBatches(Sampler):
    """Endless batches of (index, seed) for this process, from `first_step` on. Each epoch's
    order is DistributedSampler's (shuffled with SEED, split across processes); each sample's
    augmentation seed derives from (SEED, step, rank, slot)."""

    def __init__(self, n_images, batch, rank, world, first_step):
        self.n_images, self.batch, self.rank, self.world = n_images, batch, rank, world
        self.first_step = first_step
        self.steps_per_epoch = n_images // world // batch

    def __iter__(self):
        sampler = DistributedSampler(range(self.n_images), self.world, self.rank, shuffle=True,
                                     seed=settings.SEED, drop_last=True)
        step = self.first_step
        while True:
            epoch, offset = divmod(step - 1, self.steps_per_epoch)
            sampler.set_epoch(epoch)
            order = list(sampler)
            for position in range(offset, self.steps_per_epoch):
                indices = order[position * self.batch:(position + 1) * self.batch]
                yield [(index, step_seed(step, self.rank) + (slot,)) for slot, index in enumerate(indices)]
                step += 1


def ignore_interrupts(worker_id):
    """Ctrl-C signals the data workers too; only the main process decides when to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(train_set, rank, world, first_step, device):
    batches = TrainBatches(len(train_set), settings.BATCH_SIZE // world, rank, world, first_step)
    workers = settings.NUM_WORKERS
    return DataLoader(train_set, batch_sampler=batches, num_workers=workers, pin_memory=device.type == 'cuda',
                      prefetch_factor=4 if workers else None, persistent_workers=workers > 0,
                      worker_init_fn=ignore_interrupts)


def checkpoint_path(name):
    return os.path.join(settings.MODEL_DIR, name)


def save_checkpoint(name, net, optimizer, scaler, step):
    """Atomic: written to a temporary file, synced, then renamed over the old one, so a kill at
    any moment leaves the previous complete file or the new one. Refuses non-finite weights."""
    state = net.state_dict()
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise SystemExit(f'step {step}: {bad} is not finite; {name} was not written')
    path = checkpoint_path(name)
    tmp = f'{path}.tmp{os.getpid()}'
    ckpt = {'net': state, 'step': step, 'optimizer': optimizer.state_dict(),
            'scaler': scaler.state_dict(), 'settings': effective_settings()}
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise SystemExit(f'could not write {path}: {e.strerror or e}. The previous checkpoint is intact; '
                         f'free space or fix MODEL_DIR={settings.MODEL_DIR!r}, then rerun to resume') from None


def newest_intact_step_checkpoint(net):
    """(path, checkpoint) of the highest step_<N>.pth that loads, or (None, None)."""
    paths = glob.glob(checkpoint_path('step_*.pth'))
    for path in sorted(paths, key=lambda p: int(os.path.basename(p)[5:-4]), reverse=True):
        try:
            return path, network.load_checkpoint(net, path)
        except network.CorruptCheckpointError as e:
            logger.warning('%s', e)
    return None, None


def resume(net, optimizer, scaler):
    """Loads latest.pth if there is one, or, if it is corrupt, the newest intact step_<N>.pth;
    returns the step it holds, 0 for a fresh run."""
    path = checkpoint_path('latest.pth')
    if not os.path.exists(path):
        return 0
    try:
        ckpt = network.load_checkpoint(net, path)
    except network.CorruptCheckpointError as e:
        path, ckpt = newest_intact_step_checkpoint(net)
        if ckpt is None:
            raise SystemExit(f'{e}. No intact step_<N>.pth to fall back on: remove it to start '
                             f'this experiment from scratch') from None
        logger.warning('%s; resuming from %s instead (latest.pth is replaced at the next save)', e, path)
    except network.CheckpointError as e:
        raise SystemExit(f'{e}\nMODEL_DIR={settings.MODEL_DIR!r} holds a run with other settings: '
                         f'use another MODEL_DIR, or clean.sh to remove it') from None
    optimizer.load_state_dict(ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    for name, old in ckpt.get('settings', {}).items():
        if getattr(settings, name, None) != old:
            logger.warning('resuming with %s = %r (the checkpoint ran with %r)', name, getattr(settings, name, None), old)
    logger.info('resumed from %s at step %d', path, ckpt['step'])
    return ckpt['step']


def check_same_start(start):
    """Every process must resume from the same step: on several nodes MODEL_DIR has to be one
    folder that all of them see, or nodes without rank 0's checkpoints would start over."""
    if not dist.is_initialized():
        return
    extremes = torch.tensor([start, -start], device=dist_device())
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    latest, first = extremes[0].item(), -extremes[1].item()
    if latest != first:
        raise SystemExit(f'the processes resume from different steps ({first} to {latest}): '
                         f'MODEL_DIR={settings.MODEL_DIR!r} must be one folder that every node sees')


def check_settings(world):
    if settings.BATCH_SIZE % world:
        raise SystemExit(f'BATCH_SIZE={settings.BATCH_SIZE} is not divisible by the {world} processes')
    if settings.CROP_SIZE < settings.STRIDE:
        raise SystemExit(f'CROP_SIZE={settings.CROP_SIZE} is smaller than the output stride STRIDE={settings.STRIDE}')


def build(device, world):
    """EMANet on device with pretrained backbone, SyncBN across GPUs, channels-last."""
    torch.manual_seed(settings.SEED)  # identical initial weights in every process
    try:
        net = network.EMANet()
        if settings.PRETRAINED:
            network.load_pretrained(net, settings.PRETRAINED)
    except (ValueError, network.CheckpointError) as e:
        raise SystemExit(str(e)) from None
    if device.type == 'cuda' and world > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return to_device(net, device)


class StopFlag:
    """Set by SIGTERM / SIGINT; the loop saves latest.pth and exits at the end of the step."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.set)

    def set(self, signum, frame):
        self.signal = signum


def colour_panel(img, label, pred):
    """Input, ground truth and prediction side by side in VOC colours: 3 × h × 3w uint8."""
    mean = torch.tensor(settings.MEAN).view(3, 1, 1)
    std = torch.tensor(settings.STD).view(3, 1, 1)
    image = ((img.float().cpu() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    panel = np.concatenate([image, dataset.colorize(label.cpu().numpy()), dataset.colorize(pred.cpu().numpy())], 1)
    return panel.transpose(2, 0, 1)


def log_images(writer, net, img, label, step, dtype):
    net.eval()
    with torch.no_grad(), mixed_precision(img.device, dtype):
        pred = net(img[:1]).argmax(dim=1)[0]
    net.train()
    writer.add_image('train/input_truth_prediction', colour_panel(img[0], label[0], pred), step)


def train_step(model, net, optimizer, scaler, img, label, dtype, rank, step):
    """One SGD step and the bases' moving average; returns this process's mean loss."""
    torch.manual_seed(hash(step_seed(step, rank)) % 2 ** 63)  # dropout masks follow the step
    with mixed_precision(img.device, dtype):
        loss, mu = model(img, label)
    loss = loss.mean()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    network.update_bases(net.emau, mu)
    return loss.detach()


def dist_device():
    """Where collectives' tensors live: NCCL needs them on the GPU."""
    return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def all_reduce_mean(values):
    if dist.is_initialized():
        values = values.to(dist_device())
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def wrap(net, device, world):
    """DDP across processes (bases and BN statistics are kept in step by update_bases and
    DDP's buffer broadcast), torch.compile when COMPILE."""
    model = net
    if world > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
    return torch.compile(model) if settings.COMPILE else model


def make_dirs():
    """MODEL_DIR and LOG_DIR, without the partial files of saves that a kill interrupted."""
    for name in ('MODEL_DIR', 'LOG_DIR'):
        try:
            os.makedirs(getattr(settings, name), exist_ok=True)
        except OSError as e:
            raise SystemExit(f'{name}={getattr(settings, name)!r} cannot be created: {e.strerror or e}') from None
    for partial in glob.glob(checkpoint_path('*.pth.tmp*')):
        os.remove(partial)


def check_data(rank):
    """Rank 0 checks every image and label of both splits (sizes, label values against N_CLASSES)
    before any training; every process stops if it found a problem."""
    problems = torch.tensor([float(len(dataset.check())) if rank == 0 else 0.0])
    if dist.is_initialized():
        problems = problems.to(dist_device())
        dist.broadcast(problems, 0)
    if problems.item():
        raise SystemExit(f'the data in DATA_ROOT={settings.DATA_ROOT!r} has problems (listed above); '
                         f'fix the files, or N_CLASSES={settings.N_CLASSES} if the labels have more classes')


def log_step(writer, step, loss, lr, seconds_per_step):
    writer.add_scalar('train/loss', loss, step)
    writer.add_scalar('train/lr', lr, step)
    if step % settings.LOG_EVERY == 0 or step == settings.ITER_MAX:
        logger.info('step %d/%d loss %.4f lr %.3e %.1f img/s ETA %s', step, settings.ITER_MAX, loss, lr,
                    settings.BATCH_SIZE / seconds_per_step, settings.format_eta(seconds_per_step * (settings.ITER_MAX - step)))


def save_due(step, stopping, net, optimizer, scaler):
    if step % settings.ITER_SAVE == 0:
        save_checkpoint(f'step_{step}.pth', net, optimizer, scaler, step)
    if step % max(1, settings.ITER_SAVE // 10) == 0 or stopping or step == settings.ITER_MAX:
        save_checkpoint('latest.pth', net, optimizer, scaler, step)


def main():
    rank, world, device = init_distributed()
    check_settings(world)
    torch.backends.cudnn.benchmark = settings.CUDNN_BENCHMARK
    try:
        train_set = dataset.TrainDataset()
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    if len(train_set) // world < settings.BATCH_SIZE // world:
        raise SystemExit(f'TRAIN_SPLIT={settings.TRAIN_SPLIT!r} has {len(train_set)} images, '
                         f'fewer than one batch (BATCH_SIZE={settings.BATCH_SIZE})')
    check_data(rank)
    net = build(device, world)
    optimizer = make_optimizer(net)
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if rank == 0:
        make_dirs()
    start = resume(net, optimizer, scaler)
    check_same_start(start)
    model = wrap(net, device, world)
    loader = iter(make_loader(train_set, rank, world, start + 1, device))
    if rank == 0:
        writer = SummaryWriter(settings.LOG_DIR)
        write_settings_copy()
        logger.info('training EMANet-%d OS%d on %s x%d (%s), steps %d..%d, %d images',
                    settings.N_LAYERS, settings.STRIDE, device, world, dtype or torch.float32,
                    start + 1, settings.ITER_MAX, len(train_set))
    stop = StopFlag()
    tic, timed_steps = time.time(), 0
    net.train()
    for step in range(start + 1, settings.ITER_MAX + 1):
        img, label = next(loader)
        img, label = to_device(img, device), label.to(device, non_blocking=True)
        lr = set_lr(optimizer, step)
        loss = train_step(model, net, optimizer, scaler, img, label, dtype, rank, step)
        # every process sees the global loss and any process's signal, so all stop at the same step;
        # a non-finite loss stops the run before this step's weights are written anywhere
        loss, stopping = all_reduce_mean(torch.stack([loss, torch.tensor(
            float(stop.signal is not None), device=loss.device)])).tolist()
        if not math.isfinite(loss):
            raise SystemExit(
                f'step {step}: the loss is {loss}. Likely causes: a learning rate too high (LR={settings.LR}), '
                f'float16 overflow under AMP (AMP={settings.AMP}, {dtype}), or broken images or labels. '
                f'Nothing of this step was saved; rerunning resumes from the last latest.pth.')
        timed_steps += 1
        if rank == 0:
            log_step(writer, step, loss, lr, (time.time() - tic) / timed_steps)
            if step % settings.IMAGE_EVERY == 0:
                log_images(writer, net, img, label, step, dtype)
            save_due(step, stopping, net, optimizer, scaler)
        if stopping:
            if rank == 0:
                logger.info('stopped by a signal: latest.pth holds step %d; rerun to resume', step)
            sys.exit(128 + (stop.signal or signal.SIGTERM))
        if step == start + 1:  # restart the clock: the first step's warm-up is not throughput
            tic, timed_steps = time.time(), 0
    if rank == 0:
        save_checkpoint('final.pth', net, optimizer, scaler, settings.ITER_MAX)
        writer.close()
        logger.info('done: %s', checkpoint_path('final.pth'))
    if dist.is_initialized():
        dist.destroy_process_group()


def write_settings_copy():
    """LOG_DIR/settings.txt: the effective settings of this run, one `NAME = value` a line."""
    with open(os.path.join(settings.LOG_DIR, 'settings.txt'), 'w') as f:
        f.writelines(f'{k} = {v!r}\n' for k, v in effective_settings().items())


if __name__ == '__main__':
    main()
