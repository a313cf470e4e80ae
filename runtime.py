"""What every script shares to run: the entry point that turns a bad setting or file into its message, the
device and torchrun set-up, mixed precision, the memory layout, the network frozen for CPU inference, and the
network as an ONNX file for onnxruntime.

The all-reduce mean lives in network.py (`network.all_reduce_mean`): the bases' moving average is a mean over
the whole global batch, and network.py imports nothing of the runtime.
"""
import os
import warnings

import torch
import torch.distributed as dist

import checkpoint
import settings


def run_script(main):
    """Runs an entry script's main(): a bad setting, data file or checkpoint ends it with the message that names
    it, not a traceback."""
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


def setup_runtime():
    """(rank, world_size, device) from torchrun's environment, or a single process (choose_device says which
    device). Under torchrun the process group is NCCL on GPUs, gloo on CPU; rank 0 alone logs."""
    world = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    cuda = torch.cuda.is_available()
    device = choose_device(settings.DEVICE, int(os.environ.get('LOCAL_RANK', 0)), world, cuda,
                           torch.cuda.device_count() if cuda else 0)
    if device.type == 'cuda':
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
    """A module or a b × 3 × h × w batch on device, channels-last when CHANNELS_LAST on CUDA."""
    x = x.to(device, non_blocking=True)
    return x.to(memory_format=torch.channels_last) if settings.CHANNELS_LAST and device.type == 'cuda' else x


def freeze(net):
    """net (an EMANet, eval, on the CPU) as a frozen TorchScript graph of img → logits at img's size: BN folded
    into the convs, ReLUs fused into them, the convs run by oneDNN in its blocked layout on weights reordered once
    rather than at every call. benchmark.py --device cpu: 1.2× eager at 513 × 513 on 2 cores (channels-last
    alone: 1.0–1.1×), the same predictions. Traced once on a small image: batch, height and width follow the
    input. TorchScript is deprecated in favour of torch.compile, but on the CPU torch.compile spends 25–75 s on
    each new image size, and every val image has its own."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # see above
        traced = torch.jit.trace(net, torch.zeros(1, 3, 33, 33), check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def export_onnx(net, path, metadata=None):
    """Writes net (an EMANet, eval, float32 on the CPU) to path as ONNX: input `img` N × 3 × H × W, output
    `logits` N × classes × H × W, N, H and W dynamic, the EM iterations unrolled; metadata (name → str) as the
    file's metadata_props."""
    import onnx  # here, not at the top: training and evaluation need neither package, and they cost a second
    img = torch.randn(2, 3, 65, 65)  # batch 2: a size of 1 would be traced as a constant
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    program = torch.onnx.export(net, (img,), dynamo=True, input_names=['img'], output_names=['logits'],
                                dynamic_shapes=(dims,), verbose=False)
    model = program.model_proto
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
