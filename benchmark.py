"""Sizes, speed and memory of EMANet with the current settings on the current device.

    python benchmark.py                           # every section; defaults sized to the device
    python benchmark.py --json bench.json         # the same numbers, also written as JSON
    python benchmark.py --only train infer        # some sections (or --skip data ...)
    python benchmark.py --only train --compile    # adds the torch.compile'd AMP training step
    python benchmark.py --only infer --layers 50  # EMANet-50 inference (513x513, 512x1024, 1024x2048 on CUDA)
    OMP_NUM_THREADS=2 python benchmark.py --only infer --device cpu --layers 50 --infer-sizes 513x513 --repeats 5
                                                  # every CPU path at 513x513 against the CPU's limits
    OMP_NUM_THREADS=2 python benchmark.py --only train --device cpu --crop 129 --batch 4
                                                  # CPU training, float32 against bfloat16 (where native)
    python benchmark.py --only infer --device cpu --layers 101 --infer-sizes 1024x2048 --repeats 1 --warmup 0
                                                  # a Cityscapes image, whole, on CPU: time and peak RSS
    python benchmark.py --device cpu --layers 50 --crop 33 --batch 1 --iters 1 --warmup 0 --repeats 1 \\
        --infer-sizes 33x33 --sizes 17,33 --data-images 2    # the smallest run (what the tests do)

Sections:
  table1     paper Table 1: parameters and multiply-adds at 513x513 of the ResNet-101 OS8 backbone and of the
             head (fc0 + EMA unit) for EMA_CHANNELS 512 and 256, counted on the meta device (no compute)
  train      training images/s and peak memory of network.train_step: float32 against AMP (what train.py trains
             in: on a CPU bfloat16 autocast where it computes it natively, float32 elsewhere, said in the row), AMP +
             channels-last, and with --compile torch.compile'd; the variants taking turns within each repeat
  infer      inference (eval, inference_mode) in seconds per image, GFLOP/s, the fraction of its precision's limit
             and the ratios to onnxruntime float32 and to eager: on CUDA the settings' AMP + channels-last; on CPU
             eager float32, its runtime.freeze graph (what eval.py runs), onnxruntime and OpenVINO float32 on an
             export_onnx file, and in bfloat16 (EVAL_AMP) eager autocast, the frozen graph traced under autocast
             (what eval.py runs then) and OpenVINO bfloat16 (rows that say so on a CPU without native bfloat16),
             against the CPU's limits: a 2048x2048 matrix product in float32 and, where native, bfloat16; the
             variants and the limits take turns within each repeat
  attention  the EM unit against a non-local block of the same width as the feature map grows
  data       training samples/s of one data worker: dataset.TrainDataset against the authors' whole-image
             pipeline, on generated 500x375 JPEGs at CROP_SIZE

On CUDA the defaults are the paper's sizes (settings' N_LAYERS, CROP_SIZE, batch 8); on CPU they shrink
(ResNet-50, crop 129, batch 2, one iteration) so that a default run takes a few minutes on two cores.
Timings are the median over --repeats of the mean over --iters calls, after --warmup calls. Peak memory on CUDA
is torch.cuda.max_memory_allocated above what was allocated when the measurement started (training and the EM
unit: weights, optimizer state, activations; inference: one forward's activations and workspace), counted from
a peak reset after the warm-up calls, whose cuDNN algorithm search can allocate several times a model's own
memory; what an earlier measurement left is freed first. On CPU it is how far the process's peak RSS rose above
its RSS at the start of the measurement, warm-up included (Linux; n/a elsewhere), which misses memory the
allocator kept from an earlier measurement. DETERMINISTIC = True in settings.py times deterministic algorithms.
"""
import argparse
import ctypes
import gc
import itertools
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import dataset
import network
import runtime
import settings

SECTIONS = ('table1', 'train', 'infer', 'attention', 'data')
MATMUL = 2048  # the CPU's limits: a MATMUL × MATMUL matrix product in float32 and in bfloat16 (limit_calls)
# paper Table 1 (ResNet-101 OS8 at 513x513): (parameters in millions, multiply-adds in G)
PAPER_TABLE1 = {'backbone': (42.6, 190.6), 'head_512': (10.0, 43.1), 'head_256': (4.87, 21.1)}
DEFAULTS = {  # per device type; None: from settings
    'cuda': dict(layers=None, crop=None, batch=8, eval_batch=4, iters=10, warmup=5, repeats=5,
                 infer_sizes=[(513, 513), (512, 1024), (1024, 2048)], sizes=[33, 65, 97, 129], data_images=30),
    'cpu': dict(layers=50, crop=129, batch=2, eval_batch=1, iters=1, warmup=1, repeats=3,
                infer_sizes=[(129, 129), (129, 257)], sizes=[33, 65, 97], data_images=20),
}


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_seconds(call, device, args):
    """Median over args.repeats of the mean seconds per call() over args.iters calls, after args.warmup calls
    (and `restart_peak`)."""
    for _ in range(args.warmup):
        call()
    restart_peak(device)
    times = []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        for _ in range(args.iters):
            call()
        synchronize(device)
        times.append((time.perf_counter() - tic) / args.iters)
    return statistics.median(times)


def proc_status_kib(field):
    """A 'VmRSS' / 'VmHWM' line of /proc/self/status in KiB."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))


def start_peak_memory(device):
    """Opens a peak-memory window; returns the baseline that peak_mib subtracts (None: cannot measure)."""
    gc.collect()  # frees what the previous measurement left in reference cycles
    if device.type == 'cuda':
        torch.cuda.empty_cache()  # and the blocks the allocator cached for it
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc: hands freed heap back, so the RSS starts from what is live
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # Linux: resets the process's peak RSS (VmHWM) to its current RSS
        return proc_status_kib('VmRSS') * 1024
    except (OSError, AttributeError):  # not Linux with glibc
        return None


def restart_peak(device):
    """After the warm-up calls of a peak-memory window: on CUDA the peak starts again from what is allocated
    now (the baseline stays), so cuDNN's algorithm search in them is not counted. On the CPU nothing."""
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device, baseline):
    if device.type == 'cuda':
        return (torch.cuda.max_memory_allocated(device) - baseline) / 2 ** 20
    return None if baseline is None else (proc_status_kib('VmHWM') * 1024 - baseline) / 2 ** 20


def count_macs(call, *inputs):
    counter = FlopCounterMode(display=False)
    with counter:
        call(*inputs)
    return counter.get_total_flops() / 2  # FlopCounterMode counts a multiply-add as two FLOPs


def table1_sizes(channels, size=513):
    """(backbone parameters, backbone MACs, head parameters, head MACs) of EMANet-101 OS8 with EMA_CHANNELS =
    channels on a size × size image; the head is fc0 + the EM unit, as in the paper. Built on the meta device."""
    with settings.applied({'EMA_CHANNELS': channels, 'STRIDE': 8}), torch.device('meta'):
        net = network.EMANet(21, 101).eval()
        img = torch.empty(1, 3, size, size)
    features = net.extractor(img)  # 1 × 2048 × 65 × 65
    head_macs = count_macs(lambda x: net.emau(net.fc0(x)), features)
    head_params = network.count_parameters(net.fc0) + network.count_parameters(net.emau)
    return network.count_parameters(net.extractor), count_macs(net.extractor, img), head_params, head_macs


def run_table1(device, args):
    sizes = {}  # PAPER_TABLE1's names → (parameters, MACs)
    for channels in (512, 256):
        backbone_params, backbone_macs, head_params, head_macs = table1_sizes(channels)
        sizes['backbone'] = backbone_params, backbone_macs  # the same for both widths
        sizes[f'head_{channels}'] = head_params, head_macs
    results, rows = {}, []
    for name, (params, macs) in sizes.items():
        paper_params, paper_gmacs = PAPER_TABLE1[name]
        results[name] = {'params_m': params / 1e6, 'gmacs': macs / 1e9,
                         'paper_params_m': paper_params, 'paper_gmacs': paper_gmacs}
        label = 'ResNet-101 OS8 backbone' if name == 'backbone' else f'+ fc0 + EMAU, EMA_CHANNELS={name[5:]}'
        rows.append([label, f'{params / 1e6:.2f}', f'{paper_params}', f'{macs / 1e9:.1f}', f'{paper_gmacs}'])
    print_table('Paper Table 1 at 513x513 (meta device)',
                ['part', 'params M', 'paper', 'MACs G', 'paper'], rows)
    return results


def build_net(device, channels_last):
    """The settings' EMANet on device, same initial weights every time."""
    torch.manual_seed(settings.SEED)
    net = network.EMANet().to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def random_images(batch, height, width, device, channels_last):
    img = torch.randn(batch, 3, height, width, device=device)
    return img.contiguous(memory_format=torch.channels_last) if channels_last else img


def training_step(device, args, amp, channels_last, compiled):
    """(a call of network.train_step: SGD with momentum, as train.py, on random images and labels at CROP_SIZE;
    dtype; peak MiB of a step after the warm-up ones) for one variant, with a network of its own."""
    baseline = start_peak_memory(device)
    net = build_net(device, channels_last).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=settings.LR, momentum=settings.LR_MOM)
    with settings.applied({'AMP': amp}):
        dtype = runtime.autocast_dtype(device)  # None on CPU: autocast stays off there
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model = torch.compile(net) if compiled else net
    crop = settings.CROP_SIZE
    img = random_images(args.batch, crop, crop, device, channels_last)
    label = torch.randint(settings.N_CLASSES, (args.batch, crop, crop), device=device)
    steps = itertools.count(1)

    def step():
        network.train_step(model, net, optimizer, scaler, img, label, dtype, next(steps), 0)
    for _ in range(max(1, args.warmup)):
        step()
    restart_peak(device)
    step()
    return step, dtype, peak_mib(device, baseline)


def run_train(device, args):
    """Each variant's images/s, from steps that take turns within each repeat (`interleaved_seconds`): the
    ratios hold on a machine whose load comes and goes. AMP is what train.py trains in (runtime.autocast_dtype):
    on a CPU bfloat16 where it computes it natively, float32 elsewhere (the rows say so); `speedup` is the
    variant train.py runs: AMP + channels-last on CUDA, AMP alone on the CPU (whose training stays contiguous)."""
    with settings.applied({'AMP': True}):
        amp_dtype = runtime.autocast_dtype(device)
    amp_label = f'AMP ({dtype_name(amp_dtype)})' if amp_dtype or device.type == 'cuda' else \
        'AMP: float32, this CPU has no native bfloat16'
    variants = {'float32': ('float32', dict(amp=False, channels_last=False, compiled=False)),
                'amp': (amp_label, dict(amp=True, channels_last=False, compiled=False)),
                'amp_channels_last': (amp_label + ' + channels-last',
                                      dict(amp=True, channels_last=True, compiled=False)),
                'amp_channels_last_compiled': (amp_label + ' + channels-last + torch.compile',
                                               dict(amp=True, channels_last=True, compiled=True))}
    steps = {name: training_step(device, args, **options) for name, (_, options) in variants.items()
             if args.compile or not options['compiled']}
    seconds = interleaved_seconds({name: step for name, (step, _, _) in steps.items()}, device, args)
    results, rows = {}, []
    for name, (label, _) in variants.items():
        if name not in steps:
            results[name] = None
            rows.append([label, 'not run (--compile)', '', ''])
            continue
        _, dtype, memory = steps[name]
        results[name] = {'dtype': dtype_name(dtype), 'channels_last': variants[name][1]['channels_last'],
                         'compiled': variants[name][1]['compiled'], 'images_per_s': args.batch / seconds[name],
                         'peak_mib': memory, 'vs_float32': seconds['float32'] / seconds[name]}
        rows.append([label, results[name]['dtype'], f"{results[name]['images_per_s']:.2f}",
                     format_mib(memory), f"{results[name]['vs_float32']:.2f}x"])
    del steps
    if args.compile:
        torch.compiler.reset()  # the compiled graphs hold the weights: free them for what is measured next
    results['speedup'] = results['amp_channels_last' if device.type == 'cuda' else 'amp']['vs_float32']
    results['config'] = model_config(args.batch, settings.CROP_SIZE)
    print_table(f'Training, {describe_model()}, batch {args.batch}, crop {settings.CROP_SIZE}',
                ['variant', 'dtype', 'images/s', 'peak MiB', 'vs float32'], rows)
    return results


def interleaved_seconds(calls, device, args):
    """{name: median over args.repeats of the mean seconds per call over args.iters calls}, the calls warmed up
    already. The calls take turns within each repeat, so a load that comes and goes on a shared machine slows
    each of them alike and their ratios hold."""
    synchronize(device)
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            tic = time.perf_counter()
            for _ in range(args.iters):
                call()
            synchronize(device)
            times[name].append((time.perf_counter() - tic) / args.iters)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def limit_calls():
    """{precision: a call of a MATMUL × MATMUL matrix product in it} for float32 and, where the CPU computes it
    natively, bfloat16, each called once already (oneDNN's first call sets its kernel up): the most the CPU's cores
    compute in each precision, the limits that `measure_inference` times among the variants it reads against
    them, so that the machine's load is the same for both."""
    calls = {}
    for name, dtype in (('float32', torch.float32), ('bfloat16', torch.bfloat16)):
        if dtype == torch.float32 or runtime.native_bfloat16():
            a, b = (torch.randn(MATMUL, MATMUL, dtype=dtype) for _ in range(2))
            calls[name] = lambda a=a, b=b: torch.mm(a, b)
            calls[name]()
    return calls


def inference_variants(device, args, onnx_path):
    """{name: (label, net(img), channels_last, precision)} of the eval-mode forwards to time; a name whose value
    is None cannot run natively here (bfloat16 on a CPU without it). On CUDA: the settings' AMP and channels-last,
    and torch.compile with --compile. On CPU: eager float32, its runtime.freeze graph (what eval.py runs),
    onnxruntime and OpenVINO (told float32) on the export_onnx file, and in bfloat16 (EVAL_AMP, where the CPU
    computes it) eager autocast, the frozen graph traced under autocast (what eval.py runs then) and OpenVINO;
    torch.compile with --compile. One network: the variants share its weights."""
    layout = settings.CHANNELS_LAST and device.type == 'cuda'
    net = build_net(device, layout).eval()

    def eager(net, dtype=None):
        def forward(img):
            with torch.inference_mode(), runtime.autocast(device, dtype):
                return net(img)
        return forward
    if device.type == 'cuda':
        dtype = runtime.autocast_dtype(device)
        variants = {'eager': (dtype_name(dtype) + (' + channels-last' if layout else ''), eager(net, dtype), layout,
                              dtype_name(dtype))}
    else:
        session = runtime.onnx_session(onnx_path)
        native = runtime.native_bfloat16()
        openvino = {dtype: runtime.openvino_model(onnx_path, dtype) for dtype in (None, torch.bfloat16)
                    if dtype is None or native}
        variants = {'eager': ('float32 eager', eager(net), False, 'float32'),
                    'frozen': ('float32 frozen TorchScript (eval.py)', eager(runtime.freeze(net)), False, 'float32'),
                    'onnxruntime': ('onnxruntime float32', lambda img: session.run(['logits'], {'img': img.numpy()}),
                                    False, 'float32'),
                    'openvino': ('OpenVINO float32', lambda img: openvino[None](img.numpy()), False, 'float32')}
        variants.update({'eager_bf16': ('bfloat16 eager autocast', eager(net, torch.bfloat16), False, 'bfloat16'),
                         'frozen_bf16': ('bfloat16 frozen TorchScript (eval.py EVAL_AMP)',
                                         eager(runtime.freeze(net, torch.bfloat16)), False, 'bfloat16'),
                         'openvino_bf16': ('OpenVINO bfloat16', lambda img: openvino[torch.bfloat16](img.numpy()),
                                           False, 'bfloat16')}
                        if native else dict.fromkeys(('eager_bf16', 'frozen_bf16', 'openvino_bf16')))
    if args.compile:  # a static graph per input size, as a deployment compiles it, not one dynamic-shape graph
        variants['compiled'] = (variants['eager'][0] + ' + torch.compile',
                                eager(torch.compile(net, dynamic=False), runtime.autocast_dtype(device)
                                      if device.type == 'cuda' else None), layout, variants['eager'][3])
    return variants


def inference_gflop(batch, height, width):
    """GFLOP (a multiply-add is two) of one eval forward of the settings' EMANet on batch × 3 × height × width,
    counted on the meta device."""
    with torch.device('meta'):
        net = network.EMANet().eval()
        img = torch.empty(batch, 3, height, width)
    return 2 * count_macs(net, img) / 1e9


def measure_inference(device, args, variants, height, width, limits=None):
    """({variant: seconds per image, images/s, GFLOP/s, the fraction of its precision's limit, peak MiB and the
    ratios to eager and to onnxruntime (CPU)} of each eval-mode forward on a random eval_batch × 3 × height × width
    input, None for a variant that cannot run here; {precision: GFLOP/s of limits' call, None where the CPU has no
    native bfloat16}, or None without limits (CUDA)). The limits' calls take turns with the variants'
    (`interleaved_seconds`). A variant's peak is that of one forward after its warm-up calls (at least one:
    cuDNN's search and torch.compile's compilation for this size), above what was allocated before."""
    runs = {name: variant for name, variant in variants.items() if variant is not None}
    inputs, peaks = {}, {}
    for name, (_, forward, channels_last, _) in runs.items():
        inputs[name] = random_images(args.eval_batch, height, width, device, channels_last)
        baseline = start_peak_memory(device)
        for _ in range(max(1, args.warmup)):
            forward(inputs[name])
        restart_peak(device)
        forward(inputs[name])
        peaks[name] = peak_mib(device, baseline)
    calls = {name: lambda name=name: runs[name][1](inputs[name]) for name in runs}
    seconds = interleaved_seconds({**calls, **{('limit', p): call for p, call in (limits or {}).items()}}, device,
                                  args)
    gflops = None if limits is None else \
        {p: 2 * MATMUL ** 3 / seconds[('limit', p)] / 1e9 if p in limits else None for p in ('float32', 'bfloat16')}
    gflop = inference_gflop(args.eval_batch, height, width)
    results = {}
    for name, (_, _, _, precision) in runs.items():
        limit = (gflops or {}).get(precision)
        results[name] = {'seconds_per_image': seconds[name] / args.eval_batch,
                         'images_per_s': args.eval_batch / seconds[name], 'gflops': gflop / seconds[name],
                         'precision': precision, 'of_limit': gflop / seconds[name] / limit if limit else None,
                         'peak_mib': peaks[name], 'vs_eager': seconds['eager'] / seconds[name],
                         'vs_onnxruntime': seconds['onnxruntime'] / seconds[name] if 'onnxruntime' in runs else None}
    return {name: results.get(name) for name in variants}, gflops


def run_infer(device, args):
    """Each inference variant at each of args.infer_sizes (`measure_inference`), on the CPU against its limits
    (`limit_calls`) measured among them."""
    results, rows, limit_rows = {'config': model_config(args.eval_batch)}, [], []
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = None
        if device.type == 'cpu':  # onnxruntime's and OpenVINO's packages run on the CPU
            onnx_path = os.path.join(folder, 'emanet.onnx')
            torch.manual_seed(settings.SEED)  # build_net's weights
            runtime.export_onnx(network.EMANet().eval(), onnx_path)
        variants = inference_variants(device, args, onnx_path)
        limits = limit_calls() if device.type == 'cpu' else None
        for height, width in args.infer_sizes:
            measured, gflops = measure_inference(device, args, variants, height, width, limits)
            # the eager forward's numbers stay where they were; the other variants beside them
            results[f'{height}x{width}'] = {**measured['eager'], **{k: v for k, v in measured.items() if k != 'eager'},
                                            'gflop_per_image': inference_gflop(1, height, width), 'limits': gflops}
            limit_rows += [[f'{height}x{width}', name, f'{value:.0f}' if value else 'n/a: no native bfloat16']
                           for name, value in (gflops or {}).items()]
            for name, result in measured.items():
                if result is None:
                    rows.append([f'{height}x{width}', name, 'n/a: this CPU has no native bfloat16'])
                    continue
                rows.append([f'{height}x{width}', variants[name][0], f"{result['seconds_per_image']:.3f}",
                             f"{result['gflops']:.1f}", format_fraction(result['of_limit']),
                             format_ratio(result['vs_onnxruntime']), f"{result['vs_eager']:.2f}x",
                             format_mib(result['peak_mib'])])
    if limit_rows:
        print_table(f'CPU limits: a {MATMUL}x{MATMUL} matrix product, {torch.get_num_threads()} threads, taking turns '
                    f'with the inference variants', ['input', 'precision', 'GFLOP/s'], limit_rows)
    print_table(f'Inference, {describe_model()}, batch {args.eval_batch}',
                ['input', 'variant', 's/image', 'GFLOP/s', 'of limit', 'vs onnxruntime', 'vs eager', 'peak MiB'],
                rows)
    return results


class NonLocal(nn.Module):
    """A minimal dot-product non-local block (Wang et al., CVPR 2018) of width c: every pixel attends to all n
    pixels through an explicit n × n softmax(QᵀK) map, so time and memory grow with n², where the EM unit's
    n × K responsibilities grow with n. (No fused attention kernel: it would hide the n × n map.)"""

    def __init__(self, channels):
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        query, key, value = (conv(x).flatten(2) for conv in (self.query, self.key, self.value))  # b × c × n each
        attention = F.softmax(torch.bmm(query.transpose(1, 2), key), dim=2)  # b × n × n, rows sum to 1
        return x + self.out(torch.bmm(value, attention.transpose(1, 2)).view(b, c, h, w))


def attention_blocks():
    """name → a function building the block at the settings' width c = EMA_CHANNELS."""
    return {'emau': lambda: network.EMAU(settings.EMA_CHANNELS, settings.N_BASES, settings.STAGE_NUM,
                                         settings.EVAL_STAGE_NUM),
            'nonlocal': lambda: NonLocal(settings.EMA_CHANNELS)}


def attention_macs(make_block, size, batch=1):
    """Multiply-adds of one forward on a batch × c × size × size feature map, counted on the meta device."""
    with torch.device('meta'):
        block = make_block().eval()
        features = torch.empty(batch, settings.EMA_CHANNELS, size, size)
    return count_macs(block, features)


def measure_attention(device, args, make_block, size):
    """(ms per forward, peak MiB) of an eval-mode block in float32 on a random eval_batch × c × size² map."""
    baseline = start_peak_memory(device)
    block = make_block().to(device).eval()
    features = torch.randn(args.eval_batch, settings.EMA_CHANNELS, size, size, device=device)

    def forward():
        with torch.no_grad():
            block(features)

    return median_seconds(forward, device, args) * 1e3, peak_mib(device, baseline)


def run_attention(device, args):
    results, rows = {'channels': settings.EMA_CHANNELS, 'bases': settings.N_BASES, 'batch': args.eval_batch,
                     'sizes': []}, []
    for size in args.sizes:
        result = {'size': size, 'pixels': size * size}
        for name, make_block in attention_blocks().items():
            result[f'{name}_gmacs'] = attention_macs(make_block, size, args.eval_batch) / 1e9
            result[f'{name}_ms'], result[f'{name}_peak_mib'] = measure_attention(device, args, make_block, size)
        result['time_ratio'] = result['nonlocal_ms'] / result['emau_ms']
        results['sizes'].append(result)
        rows.append([f'{size}x{size}', f'{result["emau_gmacs"]:.2f}', f'{result["nonlocal_gmacs"]:.2f}',
                     f'{result["emau_ms"]:.2f}', f'{result["nonlocal_ms"]:.2f}', f'{result["time_ratio"]:.1f}x',
                     format_mib(result['emau_peak_mib']), format_mib(result['nonlocal_peak_mib'])])
    print_table(f'EM unit (K={settings.N_BASES}, {settings.STAGE_NUM} stages) against a non-local block, '
                f'c={settings.EMA_CHANNELS}, batch {args.eval_batch}, eval, float32',
                ['features', 'EMAU GMACs', 'NL GMACs', 'EMAU ms', 'NL ms', 'NL/EMAU', 'EMAU MiB', 'NL MiB'], rows)
    return results


def write_jpeg_dataset(root, n_images, split='train', height=375, width=500):
    """n_images generated samples at VOC's typical 500x375 in the DATA_ROOT layout, as JPEG and palette PNG:
    smooth colour blotches (a coarse random grid enlarged bicubic) under 1-3 plain rectangles of random classes,
    labelled to match (background 0 elsewhere)."""
    rng = np.random.default_rng(0)
    ids = [f'{index:06d}' for index in range(n_images)]
    for path in (dataset.image_path(ids[0], root), dataset.label_path(ids[0], root)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    for image_id in ids:
        coarse = rng.integers(0, 256, (height // 25, width // 25, 3), dtype=np.uint8)
        image = np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))  # H × W × 3
        label = np.zeros((height, width), np.uint8)
        for class_index in rng.integers(1, settings.N_CLASSES, rng.integers(1, 4)):
            top, left = rng.integers(0, (height - 30, width - 30))
            bottom, right = rng.integers((top + 30, left + 30), (height + 1, width + 1))
            image[top:bottom, left:right] = rng.integers(0, 256, 3)
            label[top:bottom, left:right] = class_index
        Image.fromarray(image).save(dataset.image_path(image_id, root), quality=90)
        dataset.save_label_png(label, dataset.label_path(image_id, root))
    dataset.write_lists({split: ids}, root)
    return ids


def authors_augment(image, label, rng):
    """The authors' training augmentation, step by step on the whole image: the specification that
    dataset.augment must equal sample for sample (tests/test_dataset.py) and the baseline it is timed against.
    (PIL RGB image, H × W uint8 label) → (3 × CROP × CROP float32, CROP × CROP int64), drawing from rng in
    dataset.augment's order: scale, top, left, flip."""
    crop = settings.CROP_SIZE
    mean = torch.tensor(settings.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(settings.STD).view(1, 3, 1, 1)
    image = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].contiguous()  # 1 × 3 × H × W uint8
    image = (image / 255 - mean) / std
    label = torch.from_numpy(label)[None, None].float()  # 1 × 1 × H × W
    scale = settings.SCALES[rng.integers(len(settings.SCALES))]
    image = F.interpolate(image, scale_factor=scale, mode='bilinear', align_corners=True)  # 1 × 3 × Hs × Ws
    label = F.interpolate(label, scale_factor=scale, mode='nearest')  # 1 × 1 × Hs × Ws
    height, width = label.shape[2:]
    pad = (0, max(crop - width, 0), 0, max(crop - height, 0))  # left, right, top, bottom
    image = F.pad(image, pad)
    label = F.pad(label, pad, value=settings.IGNORE_LABEL)
    top = int(rng.integers(max(height - crop, 0) + 1))
    left = int(rng.integers(max(width - crop, 0) + 1))
    image, label = image[0, :, top:top + crop, left:left + crop], label[0, 0, top:top + crop, left:left + crop]
    if rng.random() < 0.5:
        image, label = image.flip(2), label.flip(1)
    return image.contiguous(), label.long().contiguous()


def run_data(device, args):
    """Samples per second of one worker: one process, one thread, as a DataLoader worker runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as root:
            ids = write_jpeg_dataset(root, args.data_images)
            train_set = dataset.TrainDataset(data_root=root, split='train')
            pipelines = {'train_dataset': lambda index, seed: train_set[(index, seed)],
                         'reference': lambda index, seed: authors_augment(
                             dataset.read_image(dataset.image_path(ids[index], root)),
                             dataset.read_label(dataset.label_path(ids[index], root)), np.random.default_rng(seed))}
            # as median_seconds, but the pipelines take turns at every repeat, so that a change in the machine's
            # load hits both alike; a call is one pass over every image (its samples held, as a batch's are), with
            # fresh augmentation seeds
            seeds = itertools.count()
            seconds = {name: [] for name in pipelines}
            for _ in range(args.warmup + args.repeats):
                for name, pipeline in pipelines.items():
                    tic = time.perf_counter()
                    for _ in range(args.iters):
                        [pipeline(index, next(seeds)) for index in range(len(ids))]
                    seconds[name].append((time.perf_counter() - tic) / args.iters)
            per_s = {name: len(ids) / statistics.median(times[args.warmup:]) for name, times in seconds.items()}
    finally:
        torch.set_num_threads(threads)
    results = {'images': len(ids), 'crop': settings.CROP_SIZE, 'train_dataset_per_s': per_s['train_dataset'],
               'reference_per_s': per_s['reference'], 'speedup': per_s['train_dataset'] / per_s['reference']}
    print_table(f'Data loading, one worker (1 thread), {len(ids)} generated 500x375 JPEGs, '
                f'crop {settings.CROP_SIZE}',
                ['pipeline', 'samples/s', 'vs reference'],
                [['dataset.TrainDataset (crop window only)', f'{per_s["train_dataset"]:.1f}',
                  f'{results["speedup"]:.2f}x'],
                 ['authors: normalise and rescale the whole image, pad, crop', f'{per_s["reference"]:.1f}',
                  '1.00x']])
    return results


def describe_model():
    return f'EMANet-{settings.N_LAYERS} OS{settings.STRIDE}, EMA_CHANNELS {settings.EMA_CHANNELS}'


def model_config(batch, crop=None):
    config = {'n_layers': settings.N_LAYERS, 'stride': settings.STRIDE, 'ema_channels': settings.EMA_CHANNELS,
              'n_bases': settings.N_BASES, 'stage_num': settings.STAGE_NUM, 'batch': batch}
    return config if crop is None else {**config, 'crop': crop}


def dtype_name(autocast_dtype):
    return str(autocast_dtype or torch.float32).replace('torch.', '')


def format_mib(value):
    return 'n/a' if value is None else f'{value:.0f}'


def format_fraction(value):
    return '' if value is None else f'{100 * value:.0f}%'


def format_ratio(value):
    return '' if value is None else f'{value:.2f}x'


def print_table(title, header, rows):
    widths = [max(len(str(row[i])) if i < len(row) else 0 for row in [header] + rows) for i in range(len(header))]
    print(f'\n{title}')
    for row in [header] + rows:
        print('  '.join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--device', help="'cuda', 'cuda:1' or 'cpu' (default: settings.DEVICE, else cuda if there)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument('--only', nargs='+', choices=SECTIONS, metavar='SECTION',
                        help=f'run only these sections, of {", ".join(SECTIONS)}')
    chosen.add_argument('--skip', nargs='+', choices=SECTIONS, metavar='SECTION', default=[],
                        help='run all but these sections')
    parser.add_argument('--layers', type=int, choices=sorted(network.LAYERS),
                        help='N_LAYERS for train and infer (default: settings on CUDA, 50 on CPU)')
    parser.add_argument('--crop', type=int, help='training crop (default: CROP_SIZE on CUDA, 129 on CPU)')
    parser.add_argument('--batch', type=int, help='training batch (default: 8 on CUDA, 2 on CPU)')
    parser.add_argument('--eval-batch', type=int, help='inference and attention batch (default: 4 on CUDA, 1 on CPU)')
    parser.add_argument('--iters', type=int, help='calls per timed repeat (default: 10 on CUDA, 1 on CPU)')
    parser.add_argument('--warmup', type=int, help='untimed calls first (default: 5 on CUDA, 1 on CPU)')
    parser.add_argument('--repeats', type=int, help='timed repeats, the median is reported (default: 5 / 3)')
    parser.add_argument('--infer-sizes', type=lambda s: [tuple(int(v) for v in hw.split('x')) for hw in s.split(',')],
                        help='HxW,... inference inputs, whole images (default: 513x513,512x1024,1024x2048 on CUDA, '
                             '129x129,129x257 on CPU; 1024x2048 is a Cityscapes image, as mmseg times it)')
    parser.add_argument('--sizes', type=lambda s: [int(v) for v in s.split(',')],
                        help='feature sizes for the attention section (default: 33,65,97,129 on CUDA, 33,65,97 on CPU)')
    parser.add_argument('--data-images', type=int, help='generated JPEGs for the data section (default: 30 / 20)')
    parser.add_argument('--compile', action='store_true', default=None,
                        help='also time the torch.compile\'d AMP training step (default: settings.COMPILE)')
    parser.add_argument('--json', help='also write the numbers to this file')
    return parser.parse_args()


def main():
    args = parse_args()
    runtime.set_determinism()  # before any CUDA work
    device = torch.device(args.device or settings.DEVICE or ('cuda' if torch.cuda.is_available() else 'cpu'))
    for name, value in DEFAULTS['cuda' if device.type == 'cuda' else 'cpu'].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.compile = settings.COMPILE if args.compile is None else args.compile
    sections = [s for s in SECTIONS if s in (args.only or SECTIONS) and s not in args.skip]
    if device.type == 'cuda':
        device = torch.device('cuda', torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = runtime.cudnn_benchmark()
    results = {'device': device_name(device), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
               'peak_memory': 'max_memory_allocated after warm-up' if device.type == 'cuda' else 'peak RSS growth',
               'deterministic': settings.DETERMINISTIC}
    if device.type == 'cuda':  # float32 convolutions may run in TF32 on Ampere and later: say which
        results['cudnn_allow_tf32'] = torch.backends.cudnn.allow_tf32
    print(f"{results['device']}, torch {results['torch']}, {results['threads']} threads; peak memory: "
          f"{results['peak_memory']}; median of {args.repeats} x {args.iters} calls after {args.warmup} warm-up")
    runners = {'table1': run_table1, 'train': run_train, 'infer': run_infer, 'attention': run_attention,
               'data': run_data}
    model_settings = {'N_LAYERS': args.layers or settings.N_LAYERS, 'CROP_SIZE': args.crop or settings.CROP_SIZE}
    for section in sections:
        tic = time.perf_counter()
        # the data section keeps the settings' CROP_SIZE: it measures the real pipeline, not a shrunken model
        with settings.applied(model_settings if section in ('train', 'infer') else {}):
            results[section] = runners[section](device, args)
        print(f'({section}: {time.perf_counter() - tic:.0f} s)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
