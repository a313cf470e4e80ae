"""What every script shares to run: the entry point that turns a bad setting or file into its message, the
device and torchrun set-up, determinism, mixed precision (and whether this CPU computes bfloat16 natively),
whether to compile, the memory layout, the network frozen for CPU inference, and the network as an ONNX file for
onnxruntime and OpenVINO.

The all-reduce mean lives in network.py (`network.all_reduce_mean`): the bases' moving average is a mean over
the whole global batch, and network.py imports nothing of the runtime.
"""
import copy
import io
import os
import warnings

import torch
import torch.distributed as dist

import checkpoint
import settings


PATH_SETTINGS = ('DATA_ROOT', 'PRETRAINED', 'INIT_FROM', 'MODEL_DIR', 'LOG_DIR')


def run_script(main):
    """Runs an entry script's main(): a bad setting, data file or checkpoint ends it with the message that names
    it, not a traceback. A path setting that starts with '~' is refused first: Python does not expand it, so
    MODEL_DIR = '~/runs' would make a folder named '~' here (and `rm -rf ~` of it, the home folder)."""
    for name in PATH_SETTINGS:
        value = getattr(settings, name, None)
        if isinstance(value, str) and value.startswith('~'):
            raise SystemExit(f"{name}={value!r}: Python does not expand '~', so this would be a folder named '~' "
                             f"in {os.getcwd()}; write the full path, or os.path.expanduser({value!r}) (settings.py "
                             f"imports os)")
    try:
        main()
    except (FileNotFoundError, ValueError, checkpoint.CheckpointError) as error:
        raise SystemExit(str(error)) from None


def choose_device(name, local_rank, world, cuda_available, cuda_count):
    """The device of one process, from DEVICE (name), torchrun's LOCAL_RANK and WORLD_SIZE (world) and the
    machine's CUDA devices. None: 'cuda' when there is one, else 'cpu'. 'cuda' without an index: cuda:LOCAL_RANK.
    An explicit index ('cuda:1') is honoured in a single process; under torchrun it is an error, as each process
    takes cuda:LOCAL_RANK (CUDA_VISIBLE_DEVICES chooses the GPUs). Raises ValueError naming DEVICE."""
    try:
        device = torch.device(name or ('cuda' if cuda_available else 'cpu'))
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"DEVICE={name!r} is no device ({str(e).splitlines()[0]}); use None, 'cpu', 'cuda' "
                         f"or 'cuda:1'") from None
    if device.type != 'cuda':
        return device
    if not cuda_available:
        raise ValueError(f"DEVICE={name!r}, but this machine has no CUDA device that PyTorch can use "
                         f"(torch.cuda.is_available() is False); set DEVICE = None or 'cpu'")
    if device.index is not None and world > 1:
        raise ValueError(f"DEVICE={name!r} names one GPU, but under torchrun each of the {world} processes takes "
                         f"cuda:LOCAL_RANK; set DEVICE = 'cuda' (or None) and choose the GPUs with "
                         f"CUDA_VISIBLE_DEVICES, e.g. CUDA_VISIBLE_DEVICES=2,3 torchrun --nproc_per_node=2 ...")
    index = local_rank if device.index is None else device.index
    if index >= cuda_count:
        which = f'cuda:{index}' if device.index is not None else f'cuda:{index} (LOCAL_RANK={local_rank})'
        raise ValueError(f'DEVICE={name!r} asks for {which}, but this process sees {cuda_count} CUDA device(s)')
    return torch.device('cuda', index)


def process_device():
    """This process's device: `choose_device` on DEVICE, torchrun's LOCAL_RANK and WORLD_SIZE and the machine's
    CUDA devices."""
    cuda = torch.cuda.is_available()
    return choose_device(settings.DEVICE, int(os.environ.get('LOCAL_RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)),
                         cuda, torch.cuda.device_count() if cuda else 0)


def setup_runtime():
    """(rank, world_size, device) from torchrun's environment, or a single process (choose_device says which
    device). Under torchrun the process group is NCCL on GPUs, gloo on CPU; rank 0 alone logs. The
    DETERMINISTIC settings (`set_determinism`) come first, before any CUDA work."""
    set_determinism()
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    device = process_device()
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if rank:
        settings.logger.setLevel('ERROR')
    return rank, world, device


def set_determinism():
    """DETERMINISTIC: torch's deterministic algorithms (an op that has none stops with torch's error naming it;
    bilinear interpolation then runs as a decomposition whose backward is deterministic), cuDNN's deterministic
    convolutions without the algorithm search (`cudnn_benchmark` keeps it off), and the cuBLAS workspace that
    deterministic matrix products need (read when cuBLAS starts: set before any CUDA work). Without it a GPU
    run is not bit-reproducible: CUDA's bilinear interpolation backward adds in an order that varies, and the
    search may choose other algorithms in a resumed process. The CPU's results are reproducible either way."""
    if settings.DETERMINISTIC:
        os.environ['CUBLAS_WORKSPACE_CONFIG'] = ':4096:8'
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def cudnn_benchmark():
    """Whether training lets cuDNN search for the fastest algorithms: CUDNN_BENCHMARK, never with DETERMINISTIC."""
    return settings.CUDNN_BENCHMARK and not settings.DETERMINISTIC


def native_bfloat16():
    """Whether this CPU computes bfloat16 in hardware: AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake) or AMX
    (Intel Sapphire Rapids and later). Elsewhere (AVX512 without BF16, AVX2) oneDNN emulates bfloat16 through
    float32, slower than float32 itself: no setting ever chooses it there."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast_dtype(device):
    """The training's mixed precision on device: None (float32) with AMP = False; on the CPU bfloat16 where it
    computes bfloat16 natively (`native_bfloat16`), else None; on CUDA bfloat16 where the GPU computes it in
    hardware (compute capability 8 and later: A100, H100, RTX 30xx), float16 with a gradient scaler elsewhere
    (V100, T4, RTX 20xx). Not torch.cuda.is_bf16_supported(): it counts emulated bfloat16, slower there than
    float32."""
    if not settings.AMP or device.type not in ('cpu', 'cuda'):
        return None
    if device.type == 'cpu':
        return torch.bfloat16 if native_bfloat16() else None
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def compiles(device, world):
    """Whether train.py compiles the network: COMPILE, except under torchrun on GPUs, which it refuses
    (ValueError): there the network holds SyncBatchNorm, at each of whose layers (109 in EMANet-101) torch.compile
    breaks its graph (an autograd Function with a collective), for a long compile and little or no speed-up, and
    torch lists compile + DDP + SyncBatchNorm errors as open. On the CPU torchrun keeps plain BatchNorm."""
    if settings.COMPILE and device.type == 'cuda' and world > 1:
        raise ValueError(f'COMPILE=True under torchrun on GPUs ({world} processes): the network holds '
                         f'SyncBatchNorm, where torch.compile breaks its graph at every layer (a long compile for '
                         f'little or no speed-up, or an error mid-run). Set COMPILE = False for DDP, or train on '
                         f'one GPU with COMPILE = True (ACCUM_STEPS keeps the global batch)')
    return settings.COMPILE


def autocast(device, dtype):
    """torch.autocast to dtype on device; dtype None leaves it off."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def to_device(x, device):
    """A module or a b × 3 × h × w batch on device, channels-last when CHANNELS_LAST on CUDA."""
    x = x.to(device, non_blocking=True)
    return x.to(memory_format=torch.channels_last) if settings.CHANNELS_LAST and device.type == 'cuda' else x


def freeze(net, dtype=None):
    """net (an EMANet, eval, on the CPU) as a frozen TorchScript graph of img → logits at img's size: BN folded
    into the convs, ReLUs fused into them, the convs run by oneDNN in its blocked layout on weights reordered once
    rather than at every call. benchmark.py --device cpu: 1.2× eager at 513 × 513 on 2 cores (channels-last
    alone: 1.0–1.1×), the same predictions. Traced once on a small image: batch, height and width follow the
    input. TorchScript is deprecated in favour of torch.compile, but on the CPU torch.compile spends 25–75 s on
    each new image size, and every val image has its own.
    dtype torch.bfloat16 (a CPU with native bfloat16: evaluation.eval_dtype) traces it under autocast, channels-last:
    the casts autocast makes go into the graph, the EM iterations' float32 region (network.EMAU.forward) with them,
    and it runs so without autocast. On a 2-core AMD EPYC (AVX512-BF16), EMANet-50 at 257 × 257: 2.2× eager
    float32, where eager autocast gives 1.55× (1.75× channels-last); benchmark.py at 513 × 513: 2.14× against
    1.56×.
    The trace sees a copy of net without gradients, called from a bare module: its weights go into the graph as
    constants (what freezing makes of them anyway), and TorchScript does not first script each of its ~470
    submodules (0.5 s of 0.95 s for an EMANet-50 on one thread; the graph is the same)."""
    weights = copy.deepcopy(net).requires_grad_(False)
    caller = torch.nn.Module().eval()
    if dtype is not None:
        weights.to(memory_format=torch.channels_last)
    # a function attribute: weights is no submodule of caller; the trace records the branch dtype takes
    caller.forward = lambda img: weights(img if dtype is None else img.contiguous(memory_format=torch.channels_last))
    with torch.no_grad(), autocast(torch.device('cpu'), dtype), warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # see above
        traced = torch.jit.trace(caller, torch.zeros(1, 3, 33, 33), check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def export_onnx(net, path, metadata=None):
    """Writes net (an EMANet, eval, float32 on the CPU) to path as ONNX: input `img` N × 3 × H × W, output
    `logits` N × classes × H × W, N, H and W dynamic, the EM iterations unrolled; metadata (name → str) as the
    file's metadata_props. torch.onnx's TorchScript exporter, deprecated as TorchScript is (see freeze): for an
    EMANet-50 it takes 3.6 s where the torch.export one (dynamo=True) takes 23 s on 2 cores, most of them in
    symbolic reasoning about H and W, for a file of the same logits (within 2e-5 of PyTorch's at any size) that
    onnxruntime runs as fast."""
    import onnx  # here, not at the top: training and evaluation need neither package, and they cost a second
    img = torch.randn(2, 3, 65, 65)  # batch 2: a size of 1 would be traced as a constant
    dims = {0: 'batch', 2: 'height', 3: 'width'}
    file = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # see above
        torch.onnx.export(net, (img,), file, dynamo=False, input_names=['img'], output_names=['logits'],
                          dynamic_axes={'img': dims, 'logits': dims})
    model = onnx.load_from_string(file.getvalue())
    onnx.helper.set_model_props(model, metadata or {})
    onnx.save(model, path)


def onnx_session(path):
    """An onnxruntime CPU session of the ONNX file at path, with PyTorch's thread count (OMP_NUM_THREADS, one
    per torchrun process) so that both use the same cores, and threads that sleep rather than spin between runs:
    spinning ones take the cores from PyTorch's work between images (benchmark.py: 1.08× eager → 1.33×)."""
    import onnxruntime  # here, not at the top: see export_onnx
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def openvino_model(path, dtype=None):
    """The ONNX file at path compiled by OpenVINO's CPU plugin (its ONNX frontend reads the file: no converter),
    with PyTorch's thread count, as onnx_session, and its threads left where the system schedules them (the
    plugin's default pins them to the first cores: under torchrun every process's to the same ones), computing in
    float32 (dtype None: told so explicitly, as the plugin's default on a CPU with native bfloat16 is bfloat16) or
    in bfloat16 (dtype torch.bfloat16, where the CPU computes it: evaluation.eval_dtype decides); its outputs are
    float32 either way. Called with an input array, it returns the outputs in order."""
    import openvino  # here, not at the top: see export_onnx
    precision = {None: 'f32', torch.bfloat16: 'bf16'}[dtype]
    return openvino.Core().compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': precision,
                                                       'INFERENCE_NUM_THREADS': torch.get_num_threads(),
                                                       'ENABLE_CPU_PINNING': False, 'PERFORMANCE_HINT': 'LATENCY'})
