"""Trains EMANet with the authors' recipe, in this folder's experiment.

    python train.py                                    # one process: GPU if available, else CPU
    torchrun --nproc_per_node=4 train.py               # DDP: NCCL on GPUs, gloo on CPU
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 train.py

SGD with three parameter groups, poly learning rate every LR_DECAY steps, the
bases' moving average after every step. Checkpoints go to MODEL_DIR: latest.pth
every ITER_SAVE // 10 steps, step_<N>.pth every ITER_SAVE, final.pth at the end.
A run resumes from latest.pth when it exists and then ends with exactly the
weights of an uninterrupted run (on GPUs with DETERMINISTIC = True: runtime.set_determinism):
the data order, each sample's augmentation and the dropout masks derive from (SEED, step, rank),
so no RNG state is carried.
Every EVAL_EVERY steps and at the end the weights are evaluated on VAL_SPLIT as eval.py evaluates them
(EVAL_IMAGES first images; sharded over the processes): TensorBoard val/mIoU, val/pAcc, val/mAcc, val/images,
val_class/<name> (val_first<N>/... when EVAL_IMAGES = N leaves out part of the split: a subset's curve is not
eval.py's), a line in LOG_DIR/val.jsonl, and MODEL_DIR/best.pth, the checkpoint of this run's best val mIoU
(a best.pth that val.jsonl does not vouch for is another run's and is replaced); training goes on with exactly
the weights it would have without. A resumed run does not repeat an evaluation that val.jsonl holds. A
VAL_SPLIT without labels ('test') is not validated, which the run says once.
A run that reached ITER_MAX says so and exits; raising ITER_MAX continues it.
Before the first step rank 0 compares the run with its dataset's published recipe (dataset.RECIPES, the closest
or RECIPE) and logs one line naming it, or one per deviation: the run's value, the recipe's and what a source says
that costs (a stage of staged training: also what INIT_FROM's run was, from the record its checkpoint keeps; a
resumed run: also the values its steps before ran with, where settings.py changed since, 'CROP_SIZE 321 (steps
1-2000)'); LOG_DIR/settings.txt (its last '# recipe:' lines) and every checkpoint ('recipe') keep the comparison.
INIT_FROM starts a fresh folder from another run's whole network (staged training:
COCO, then trainaug, then trainval), with a fresh optimizer and schedule.
ACCUM_STEPS > 1 runs each process's share of the batch as that many micro-batches (network.train_step): the
same global batch and update in less GPU memory, BatchNorm statistics per micro-batch. Out of GPU memory, the
run stops with a message naming the batch, crop, precision and the settings of this run that need less
(memory_remedies); out of memory while validating, it saves latest.pth first and names the evaluation settings
that need less. COMPILE = True is refused under torchrun on GPUs (runtime.compiles says why).
SIGTERM or SIGINT saves latest.pth and exits. One run per MODEL_DIR at a time; a checkpoint in MODEL_DIR that
another folder's run wrote with other settings is refused (checkpoint.resume: INIT_FROM starts from one);
on several nodes MODEL_DIR must be a shared folder. TensorBoard: `bash tensorboard.sh`.
"""
import argparse
import json
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from tensorboardX import SummaryWriter
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import checkpoint
import dataset
import evaluation
import network
import runtime
import settings

logger = settings.logger


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
    """LR·(1 − it/ITER_MAX)^POLY_POWER with `it` the last multiple of LR_DECAY not after step.

    Always from the current ITER_MAX: a finished run whose ITER_MAX is raised resumes at step N (the old
    ITER_MAX) with the learning rate back up at LR·(1 − N/ITER_MAX)^POLY_POWER (30000 → 40000: 9e-3·0.25^0.9 ≈
    2.6e-3), decaying to 0 again at the new end. That is a warm restart, not the schedule of a run started with
    the larger ITER_MAX: to compare lengths fairly, train each from scratch in its own folder."""
    it = step - step % settings.LR_DECAY
    return settings.LR * max(0.0, 1 - it / settings.ITER_MAX) ** settings.POLY_POWER


def set_lr(optimizer, step):
    """poly_lr(step) for the weights, twice that for the biases (the third group)."""
    lr = poly_lr(step)
    for group, factor in zip(optimizer.param_groups, (1, 1, 2)):
        group['lr'] = lr * factor
    return lr


def train_batches(n_images, batch, rank, world, first_step):
    """Endless batches of (index, seed) for this process, from first_step on. Each epoch's order is
    DistributedSampler's (shuffled with SEED, split across processes); each sample's augmentation seed
    is (SEED, step, rank, slot), so a resumed run draws exactly what an uninterrupted one would."""
    sampler = DistributedSampler(range(n_images), world, rank, shuffle=True, seed=settings.SEED, drop_last=True)
    steps_per_epoch = n_images // world // batch
    step = first_step
    while True:
        epoch, position = divmod(step - 1, steps_per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        for position in range(position, steps_per_epoch):
            indices = order[position * batch:(position + 1) * batch]
            yield [(index, (settings.SEED, step, rank, slot)) for slot, index in enumerate(indices)]
            step += 1


def ignore_interrupts(worker_id):
    """Ctrl-C signals the data workers too; only the main process decides when to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def max_over_processes(values, group):
    """The elementwise max over all processes of a few host integers, through the gloo group: the GPU
    queue is not waited for."""
    values = torch.tensor(values, dtype=torch.int64)
    if group is not None:
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=group)
    return values.tolist()


def colour_panel(img, label, pred):
    """Input, ground truth and prediction side by side in the dataset's colours: 3 × h × 3w uint8."""
    image = dataset.denormalise(img.float().cpu())  # h × w × 3 uint8
    panel = torch.cat([image, *(torch.from_numpy(dataset.colorize(x.cpu().numpy())) for x in (label, pred))], 1)
    return panel.permute(2, 0, 1).numpy()


def validation_history(start):
    """(the last step LOG_DIR/val.jsonl holds an evaluation of, the best mIoU that MODEL_DIR/best.pth holds) for
    a run that resumes at step start; a fresh run (start 0) starts val.jsonl anew, and a line that a kill cut
    short is dropped. best.pth is this run's only if what it holds says so: val.jsonl lists an evaluation of its
    step with its mIoU. Any other (an earlier run's, kept by a run killed before its first evaluation) counts for
    nothing (best -inf): the first evaluation of this run replaces it."""
    path = os.path.join(settings.LOG_DIR, evaluation.VAL_LOG)
    entries = evaluation.read_val_log(path) if start else []
    if os.path.exists(path):
        with open(path) as f:
            intact = f.read().endswith('\n')
        if not (start and intact):
            with open(path, 'w') as f:
                f.writelines(json.dumps(entry) + '\n' for entry in entries)
    best, best_path = -math.inf, checkpoint.model_file('best.pth')
    if os.path.exists(best_path):
        try:
            held = checkpoint.read_weights(best_path, mmap=True)
        except checkpoint.CheckpointError as e:  # a damaged file is no run's best
            logger.warning('%s', e)
            held = {}
        held = held if isinstance(held, dict) else {}
        step, miou = held.get('step'), held.get('best_mIoU')
        if any(entry['step'] == step and entry.get('mIoU') == miou for entry in entries):
            best = miou
        else:
            logger.warning('%s is not this run\'s (val.jsonl lists no evaluation of its step %s with its mIoU %s): '
                           'the first evaluation of this run replaces it', best_path, step, miou)
    return max((entry['step'] for entry in entries), default=0), best


def saves_due(step):
    """(step_<N>.pth, latest.pth) due after step: step_<N>.pth every ITER_SAVE steps; latest.pth every
    ITER_SAVE // 10 steps (every step when that is 0) and at ITER_MAX."""
    return step % settings.ITER_SAVE == 0, \
        step % max(1, settings.ITER_SAVE // 10) == 0 or step == settings.ITER_MAX


def evaluation_due(step, validated):
    """Every EVAL_EVERY steps and at the end, but not a step up to `validated`, the last that val.jsonl holds,
    nor on a VAL_SPLIT without labels (main says so once)."""
    return settings.EVAL_EVERY > 0 and dataset.has_labels(settings.VAL_SPLIT) and step > validated and \
        (step % settings.EVAL_EVERY == 0 or step >= settings.ITER_MAX)


def memory_remedies(world):
    """What needs less GPU memory per training step in this run: the next ACCUM_STEPS that divides each of the
    world processes' share of the batch (none once a micro-batch is one image), AMP when it is off, a smaller
    CROP_SIZE, a smaller N_LAYERS when there is one, more GPUs while a process holds more than one image."""
    share = settings.BATCH_SIZE // world
    accum = next((n for n in range(settings.ACCUM_STEPS + 1, share + 1) if share % n == 0), None)
    remedies = [f'ACCUM_STEPS={accum} (micro-batches of {share // accum} images, the same global batch)'] \
        if accum else []
    remedies += ['AMP = True'] if not settings.AMP else []
    remedies.append('a smaller CROP_SIZE')
    smaller = [str(n) for n in (101, 50) if n < settings.N_LAYERS]
    remedies += [f'N_LAYERS = {" or ".join(smaller)}'] if smaller else []
    remedies += ['more GPUs (torchrun: each process takes its share of the batch)'] if share > 1 else []
    return remedies


def validation_memory_remedies():
    """What needs less GPU memory while validating: windows of the training crop's size (EVAL_WINDOW) unless the
    window is no larger already, fewer images (EVAL_IMAGES) unless it is set, or no validation while training."""
    window = evaluation.window_size()
    remedies = [f'EVAL_WINDOW = {settings.CROP_SIZE} (windows of the training crop slide over each image)'] \
        if window is None or window[0] * window[1] > settings.CROP_SIZE ** 2 else []
    remedies += ['EVAL_IMAGES = N (the first N images only)'] if settings.EVAL_IMAGES is None else []
    return remedies + ['EVAL_EVERY = 0 (no validation while training; eval.py evaluates the checkpoints after it)']


def validate(net, optimizer, scaler, device, rank, world, step, writer, best, recipe):
    """Evaluates net (not DDP's wrapper) on the first EVAL_IMAGES of VAL_SPLIT as eval.py does (one shard per
    process), BN and dropout in eval mode; no random number is drawn and the data loader is left alone, so the
    training goes on exactly as without it. Rank 0 writes the TensorBoard scalars, best.pth (with the run's recipe
    record) when the mIoU beats best, the val.jsonl line and a log line. Returns the best mIoU so far."""
    tic = time.time()
    if dist.is_initialized():  # each process's BN statistics are its own until DDP's next forward sends rank 0's:
        for buffer in net.buffers():  # evaluate rank 0's, those the checkpoints hold
            dist.broadcast(buffer, 0)
    evaluated = net
    if dataset.output_stride() != settings.STRIDE:  # the weights at EVAL_STRIDE, as eval.py runs them
        with torch.random.fork_rng(devices=[]):  # building a net draws its initial weights
            evaluated = network.EMANet(stride=settings.EVAL_STRIDE)
        evaluated.load_state_dict(net.state_dict())
        evaluated = runtime.to_device(evaluated, device)
    net.eval()
    benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False  # every image has its size
    forward = evaluation.inference_net(evaluated.eval(), device)
    try:
        confusion, n_images = evaluation.evaluate(forward, device, rank, world, settings.EVAL_IMAGES)
    except torch.OutOfMemoryError:
        if rank == 0:  # the training of this step is kept, whenever latest.pth was saved last
            checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, step, {'recipe': recipe})
        raise SystemExit(
            f'step {step}: the GPU ran out of memory validating on VAL_SPLIT={settings.VAL_SPLIT!r} '
            f'(EVAL_SCALES={settings.EVAL_SCALES}, EVAL_FLIP={settings.EVAL_FLIP}, EVAL_WINDOW={settings.EVAL_WINDOW}'
            f'). latest.pth holds this step: nothing of the training is lost. Less memory per image: '
            f'{"; ".join(validation_memory_remedies())}; then rerun to resume.') from None
    torch.backends.cudnn.benchmark = benchmark
    net.train()
    if rank == 0:
        result = dict(step=step, **evaluation.summary(confusion, n_images), seconds=round(time.time() - tic, 1))
        first = n_images if n_images < len(dataset.read_ids(settings.VAL_SPLIT)) else None  # a subset: tagged so
        evaluation.write_scalars(writer, result, step, first)
        if result['mIoU'] is not None and result['mIoU'] > best:  # before val.jsonl: a run killed in between
            best = result['mIoU']                                 # evaluates this step again
            checkpoint.save_checkpoint('best.pth', net, optimizer, scaler, step, {'best_mIoU': best, 'recipe': recipe})
        with open(os.path.join(settings.LOG_DIR, evaluation.VAL_LOG), 'a') as f:
            f.write(json.dumps(checkpoint.plain(result)) + '\n')  # settings such as numpy scales too
        miou = math.nan if result['mIoU'] is None else result['mIoU']
        logger.info('step %d: %s mIoU %.2f%% (best %.2f%%), %d %s images in %.1f s', step,
                    evaluation.scalar_prefix(first),
                    100 * miou, 100 * best, n_images, settings.VAL_SPLIT, result['seconds'])
    return best


def main():
    # ---------------------------------------------------------------- set-up
    rank, world, device = runtime.setup_runtime()
    host_group = dist.new_group(backend='gloo') if dist.is_initialized() else None
    misspelt = settings.warn_unread_settings()
    if misspelt:
        raise SystemExit('settings.py assigns names that no code reads: ' + ', '.join(
            f'{name} (did you mean {closest}?)' for name, closest in misspelt.items()) +
            '; correct them, or start a helper of your own with an underscore')
    if settings.BATCH_SIZE % world:
        raise SystemExit(f'BATCH_SIZE={settings.BATCH_SIZE} is not divisible by the {world} processes')
    if not (isinstance(settings.ACCUM_STEPS, int) and settings.ACCUM_STEPS > 0) or \
            settings.BATCH_SIZE // world % settings.ACCUM_STEPS:
        raise SystemExit(f'ACCUM_STEPS={settings.ACCUM_STEPS!r} must be a whole number of micro-batches that divides '
                         f'each process\'s {settings.BATCH_SIZE // world} images (BATCH_SIZE={settings.BATCH_SIZE}, '
                         f'{world} processes)')
    compiled = runtime.compiles(device, world)
    if settings.EVAL_EVERY > 0:
        evaluation.eval_dtype(device)  # EVAL_AMP where it is refused: an error now, not at the first validation
    if settings.CROP_SIZE < settings.STRIDE:
        raise SystemExit(f'CROP_SIZE={settings.CROP_SIZE} is smaller than the output stride STRIDE={settings.STRIDE}')
    dataset.compare_recipe(checkpoint.plain(settings.effective()))  # a RECIPE of no recipe of DATASET stops here
    if settings.INIT_FROM and settings.PRETRAINED:
        raise SystemExit(f'INIT_FROM={settings.INIT_FROM!r} starts the whole network, PRETRAINED='
                         f'{settings.PRETRAINED!r} only its backbone: set PRETRAINED = None to use INIT_FROM')
    torch.backends.cudnn.benchmark = runtime.cudnn_benchmark()
    refused = 0  # rank 0 makes this run the one of MODEL_DIR before any long check, or every process stops
    if rank == 0:
        for name in ('MODEL_DIR', 'LOG_DIR'):
            try:
                os.makedirs(getattr(settings, name), exist_ok=True)
            except OSError as e:
                raise SystemExit(f'{name}={getattr(settings, name)!r} cannot be created: {e.strerror or e}') from None
        try:
            checkpoint.lock_model_dir()
        except checkpoint.CheckpointError as e:
            logger.error('%s', e)
            refused = 1
    if max_over_processes([refused], host_group)[0]:
        raise SystemExit(1)

    # ---------------------------------------------------------------- data
    train_set = dataset.TrainDataset()
    if len(train_set) // world < settings.BATCH_SIZE // world:
        raise SystemExit(f'TRAIN_SPLIT={settings.TRAIN_SPLIT!r} has {len(train_set)} images, '
                         f'fewer than one batch (BATCH_SIZE={settings.BATCH_SIZE})')
    # rank 0 checks every image and label of both splits before any training; every process stops on a problem
    problems, = max_over_processes([len(dataset.check()) if rank == 0 else 0], host_group)
    if problems:
        raise SystemExit(f'the data in DATA_ROOT={settings.DATA_ROOT!r} has problems (listed above); '
                         f'fix the files, or N_CLASSES={settings.N_CLASSES} if the labels have more classes')
    if rank == 0 and settings.EVAL_EVERY > 0 and not dataset.has_labels(settings.VAL_SPLIT):
        logger.warning('VAL_SPLIT=%r has images only, no labels to score: validation while training is skipped '
                       '(set EVAL_EVERY = 0, or a labelled VAL_SPLIT to validate on)', settings.VAL_SPLIT)

    # ---------------------------------------------------------------- model and optimizer
    torch.manual_seed(settings.SEED)  # identical initial weights in every process
    net = network.EMANet()
    if settings.PRETRAINED:
        checkpoint.load_pretrained(net, settings.PRETRAINED)
    if device.type == 'cuda' and world > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = runtime.to_device(net, device)
    optimizer = torch.optim.SGD(param_groups(net), lr=settings.LR, momentum=settings.LR_MOM)
    dtype = runtime.autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    precision = f'{dtype} autocast'.replace('torch.', '') if dtype else 'float32'
    if settings.AMP and dtype is None and device.type == 'cpu':  # AMP's fallback, said: this run is no faster
        precision += ': AMP = True, but this CPU has no native bfloat16, which it would emulate slower than float32'

    # ---------------------------------------------------------------- resume
    start = checkpoint.resume(net, optimizer, scaler)
    if start == 0 and settings.INIT_FROM:  # a folder's own checkpoints always win: a resumed run ignores it
        checkpoint.init_from(net, settings.INIT_FROM)
    latest, negated_first = max_over_processes([start, -start], host_group)
    if latest != -negated_first:
        raise SystemExit(f'the processes resume from different steps ({-negated_first} to {latest}): '
                         f'MODEL_DIR={settings.MODEL_DIR!r} must be one folder that every node sees')
    validated, best = validation_history(start) if rank == 0 else (0, -math.inf)
    validated, = max_over_processes([validated], host_group)  # LOG_DIR may be rank 0's alone
    # the published recipe and every deviation from it (a resumed run's: of every step), before step 1: kept in every
    # checkpoint rank 0 writes
    recipe = checkpoint.recipe_record(net, start) if rank == 0 else None
    final = checkpoint.model_file('final.pth')
    if start >= settings.ITER_MAX:
        if rank == 0:
            try:
                checkpoint.read_weights(final, mmap=True)
            except checkpoint.CheckpointError:  # killed between the last latest.pth and final.pth, or cut short since
                checkpoint.save_checkpoint('final.pth', net, optimizer, scaler, start, {'recipe': recipe})
        if evaluation_due(start, validated):  # killed during its last evaluation
            validate(net, optimizer, scaler, device, rank, world, start,
                     SummaryWriter(settings.LOG_DIR) if rank == 0 else None, best, recipe)
        logger.info('this run is finished: step %d of ITER_MAX=%d, %s. Raise ITER_MAX to train on',
                    start, settings.ITER_MAX, final)
        if dist.is_initialized():
            dist.destroy_process_group()
        return
    model = net
    if world > 1:  # bases and BN statistics are kept in step by update_bases and DDP's buffer broadcast
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
    if compiled:
        model = torch.compile(model)
    workers = settings.NUM_WORKERS
    loader = iter(DataLoader(train_set, num_workers=workers, pin_memory=device.type == 'cuda',
                             batch_sampler=train_batches(len(train_set), settings.BATCH_SIZE // world, rank, world,
                                                         start + 1),
                             prefetch_factor=4 if workers else None, persistent_workers=workers > 0,
                             worker_init_fn=ignore_interrupts))
    writer = SummaryWriter(settings.LOG_DIR) if rank == 0 else None
    if rank == 0:
        with open(os.path.join(settings.LOG_DIR, 'settings.txt'), 'w') as f:
            f.writelines(f'{name} = {value!r}\n' for name, value in checkpoint.plain(settings.effective()).items())
            f.writelines(f'# {line}\n' for line in dataset.recipe_lines(recipe))  # kept with the results
        for line in dataset.recipe_lines(recipe):
            (logger.warning if recipe['deviations'] else logger.info)('%s', line)
        logger.info('training EMANet-%d OS%d on %s x%d (%s), steps %d..%d, %d images; batch %d: %d process(es) x '
                    '%d micro-batch(es) of %d images', settings.N_LAYERS, settings.STRIDE, device, world,
                    precision, start + 1, settings.ITER_MAX, len(train_set), settings.BATCH_SIZE, world,
                    settings.ACCUM_STEPS, settings.BATCH_SIZE // world // settings.ACCUM_STEPS)
    if evaluation_due(start, validated):  # stopped or killed after the latest.pth of this step, before evaluating it
        best = validate(net, optimizer, scaler, device, rank, world, start, writer, best, recipe)

    # ---------------------------------------------------------------- the loop
    signals = []  # SIGTERM / SIGINT: save latest.pth and exit at the end of the step
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    losses = []  # this process's losses since the last host sync, on the device
    tic, timed_steps = time.time(), 0
    net.train()
    for step in range(start + 1, settings.ITER_MAX + 1):
        img, label = next(loader)
        img, label = runtime.to_device(img, device), label.to(device, non_blocking=True)
        lr = set_lr(optimizer, step)
        try:
            losses.append(network.train_step(model, net, optimizer, scaler, img, label, dtype, step, rank))
        except torch.OutOfMemoryError:
            raise SystemExit(
                f'step {step}: the GPU ran out of memory with BATCH_SIZE={settings.BATCH_SIZE} ({world} process(es) '
                f'x {settings.ACCUM_STEPS} micro-batch(es) of {len(img) // settings.ACCUM_STEPS} images), '
                f'CROP_SIZE={settings.CROP_SIZE}, N_LAYERS={settings.N_LAYERS}, {dtype or torch.float32} '
                f'(AMP={settings.AMP}). Less memory per step: {"; ".join(memory_remedies(world))}. Nothing of this '
                f'step was saved; rerunning resumes from the last latest.pth.') from None
        stopping, = max_over_processes([len(signals)], host_group)  # every process stops at the same step
        save_step, save_latest = saves_due(step)
        save_latest = save_latest or stopping
        log_line = step % settings.LOG_EVERY == 0 or step == settings.ITER_MAX
        evaluate = evaluation_due(step, validated)
        timed_steps += 1
        if not (save_step or save_latest or log_line or evaluate):
            continue  # nothing to read back: the GPU queue keeps running ahead
        # the global mean loss of each step since the last sync; a non-finite one stops the run before
        # anything of it is written
        values = network.all_reduce_mean(torch.stack(losses)).tolist()
        first = step - len(values) + 1
        bad = next((first + i for i, value in enumerate(values) if not math.isfinite(value)), None)
        if bad is not None:
            raise SystemExit(
                f'step {bad}: the loss is {values[bad - first]}. Likely causes: a learning rate too high '
                f'(LR={settings.LR}), float16 overflow under AMP (AMP={settings.AMP}, {dtype}), or broken images '
                f'or labels. Nothing of this step was saved; rerunning resumes from the last latest.pth.')
        losses = []
        if rank == 0:
            for i, value in enumerate(values):
                writer.add_scalar('train/loss', value, first + i)
                writer.add_scalar('train/lr', poly_lr(first + i), first + i)
            seconds_per_step = (time.time() - tic) / timed_steps
            if log_line:
                logger.info('step %d/%d loss %.4f lr %.3e %.1f img/s ETA %s', step, settings.ITER_MAX, values[-1],
                            lr, settings.BATCH_SIZE / seconds_per_step,
                            settings.format_eta(seconds_per_step * (settings.ITER_MAX - step)))
            if step % settings.IMAGE_EVERY == 0:
                net.eval()
                with torch.no_grad(), runtime.autocast(device, dtype):
                    pred = net(img[:1]).argmax(dim=1)[0]
                net.train()
                writer.add_image('train/input_truth_prediction', colour_panel(img[0], label[0], pred), step)
            if save_step:
                checkpoint.save_checkpoint(f'step_{step}.pth', net, optimizer, scaler, step, {'recipe': recipe})
            if save_latest:
                checkpoint.save_checkpoint('latest.pth', net, optimizer, scaler, step, {'recipe': recipe})
        if stopping:
            logger.info('stopped by a signal: latest.pth holds step %d; rerun to resume', step)
            sys.exit(128 + (signals[0] if signals else signal.SIGTERM))  # a due evaluation is done on resuming
        if evaluate:
            best = validate(net, optimizer, scaler, device, rank, world, step, writer, best, recipe)
        if step == start + 1 or evaluate:  # restart the clock: warm-up and evaluations are not throughput
            tic, timed_steps = time.time(), 0

    # ---------------------------------------------------------------- the final save
    if rank == 0:  # latest.pth holds ITER_MAX (saves_due): final.pth is that file
        checkpoint.link_checkpoint('latest.pth', 'final.pth')
        writer.close()
        logger.info('done: %s', final)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    # every knob is in settings.py: --help prints the docstring, any argument is an error
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    runtime.run_script(main)
