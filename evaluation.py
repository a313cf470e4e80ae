"""The test-time protocol that eval.py, training's validation and export share: the prediction of one image
(EVAL_SCALES, EVAL_FLIP, EVAL_WINDOW at EVAL_STRIDE), the confusion matrix and its metrics, a split's
evaluation sharded over the torchrun processes, the protocol's name, and the results as eval.py and training
record them (a summary dict for JSON, TensorBoard scalars).

Single scale by default, the authors' protocol: the padded image (H' × W' = k·stride + 1, as ValDataset pads)
→ logits at that size → argmax. The paper's multi-scale + flip is EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5,
1.75) with EVAL_FLIP = True: softmax scores of every scale (and of the mirrored image) are averaged at full
resolution. EVAL_WINDOW (a size, or (h, w)) runs every scale that is larger than it as overlapping windows of
that size (a step of 2/3 of the window, the last one flush with the border) whose logits are averaged where
they overlap: memory stays that of one window, and the net sees crops as large as it was trained on.
Evaluation runs in float32, as the authors evaluated; EVAL_AMP = True evaluates in half precision
(`eval_dtype`): on CUDA under the training's autocast, on a CPU that computes bfloat16 natively in bfloat16
(PyTorch's frozen graph traced under autocast, or OpenVINO's bfloat16), and is refused on a CPU that would only
emulate it; the protocol's name says so ('bf16', 'fp16'). An export.py file runs through onnxruntime (float32)
or OpenVINO (`onnx_net`), each told its precision, OpenVINO too, whose CPU default is bfloat16 where the CPU has it.
"""
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import dataset
import runtime
import settings

HALF_NAMES = {torch.bfloat16: 'bf16', torch.float16: 'fp16'}  # EVAL_AMP's part of the protocol name
# the settings that change only how a trained network is evaluated (eval.py --set, grid.py run --eval)
EVAL_SETTINGS = ('EVAL_SCALES', 'EVAL_FLIP', 'EVAL_STRIDE', 'EVAL_WINDOW', 'EVAL_STAGE_NUM', 'EVAL_AMP')
VAL_LOG = 'val.jsonl'  # in LOG_DIR: a line per evaluation while training (a summary with step and seconds)
ENGINES = ('onnxruntime', 'openvino')  # what runs an export.py file on the CPU (eval.py --onnx FILE --engine)
ENGINE_SUFFIXES = {'pytorch': (), 'onnxruntime': ('onnx',), 'openvino': ('onnx', 'openvino')}  # of result names


def scaled_size(size, scale):
    """The k·stride + 1 nearest to scale·(size − 1) + 1 (stride: `dataset.output_stride`). For an input of
    k·stride + 1 pixels this keeps both the corner pixels (align_corners=True) and the output stride's grid
    aligned, as at scale 1."""
    stride = dataset.output_stride()
    return max(1, round(scale * (size - 1) / stride)) * stride + 1


def window_size():
    """EVAL_WINDOW as (h, w), or None: whole images."""
    window = settings.EVAL_WINDOW
    if window is None:
        return None
    window = (window, window) if isinstance(window, int) else tuple(window)
    if len(window) != 2 or not all(isinstance(n, int) and n > 0 for n in window):
        raise ValueError(f'EVAL_WINDOW={settings.EVAL_WINDOW!r}: must be None, a size in pixels or (height, width)')
    return window


def window_starts(size, window):
    """Offsets of the windows of `window` pixels that slide over `size` pixels: one at 0 when the window covers
    them; else a step of 2/3 of the window (the usual overlap), rounded down to a multiple of the output stride,
    the last window flush with the border. With size and window both k·stride + 1 (as ValDataset and
    scaled_size make the image) every offset is then a multiple of the stride: each window's output grid lies
    on the whole image's."""
    if size <= window:
        return [0]
    step, stride = max(1, round(2 * window / 3)), dataset.output_stride()
    if step >= stride:
        step -= step % stride
    n = math.ceil((size - window) / step) + 1
    return [min(i * step, size - window) for i in range(n)]


def windows(height, width):
    """(top, left, bottom, right) of each window that slides over a height × width image: EVAL_WINDOW clipped
    to the image, positions from `window_starts`; one, the whole image, when EVAL_WINDOW is None or covers it."""
    window_h, window_w = window_size() or (height, width)
    window_h, window_w = min(window_h, height), min(window_w, width)
    return [(top, left, top + window_h, left + window_w)
            for top in window_starts(height, window_h) for left in window_starts(width, window_w)]


def window_logits(net, img, size):
    """Logits of img (b × 3 × h × w) resized to size → b × classes × size float32: one pass over the whole
    image, or, where `windows` gives several, the windows' logits summed into an h × w map, divided by how many
    windows cover each pixel, then resized. Logits rather than softmax scores: the stitched map is the quantity
    one whole-image pass gives, resized as EMANet resizes its logits, so a net that looks at each pixel alone
    gives the whole-image result whatever the window; scales and flips are then averaged as softmax scores."""
    height, width = img.shape[-2:]
    boxes = windows(height, width)
    if len(boxes) == 1:
        return net(img, size=size).float()
    total, count = None, torch.zeros(height, width, device=img.device)  # count: h × w
    for top, left, bottom, right in boxes:
        logits = net(img[..., top:bottom, left:right]).float()  # b × classes × window_h × window_w
        if total is None:
            total = logits.new_zeros(*logits.shape[:2], height, width)  # b × classes × h × w
        total[..., top:bottom, left:right] += logits
        count[top:bottom, left:right] += 1
    total /= count
    return total if total.shape[-2:] == size else \
        F.interpolate(total, size=size, mode='bilinear', align_corners=True)


def eval_dtype(device):
    """The precision of evaluation on device: None (float32, the authors' protocol) unless EVAL_AMP asks for half
    precision: on CUDA the training's (`runtime.autocast_dtype`), on the CPU bfloat16 where it computes it natively
    (`runtime.native_bfloat16`); elsewhere a ValueError, as emulated bfloat16 is slower than float32."""
    if not settings.EVAL_AMP:
        return None
    if device.type != 'cpu':
        return runtime.autocast_dtype(device)
    if not runtime.native_bfloat16():
        raise ValueError('EVAL_AMP=True evaluates in bfloat16, but this CPU has no native bfloat16 (neither '
                         'AVX512-BF16 nor AMX): emulated bfloat16 is slower than float32 and no more accurate; set '
                         'EVAL_AMP = False')
    return torch.bfloat16


@torch.inference_mode()
def predict(net, img):
    """Class scores of img (b × 3 × H × W, normalised): softmax probabilities averaged over EVAL_SCALES and,
    with EVAL_FLIP, over the mirrored images too, all at H × W → b × classes × H × W float32. Each scale runs
    whole or, with EVAL_WINDOW, in windows (`window_logits`); in float32 unless EVAL_AMP (`eval_dtype`)."""
    height, width = img.shape[-2:]
    dtype = eval_dtype(img.device)
    total, count = 0, 0
    for scale in settings.EVAL_SCALES:
        size = (scaled_size(height, scale), scaled_size(width, scale))
        scaled = img if size == (height, width) else \
            F.interpolate(img, size=size, mode='bilinear', align_corners=True)  # b × 3 × h × w
        for flip in (False, True) if settings.EVAL_FLIP else (False,):
            with runtime.autocast(img.device, dtype):
                logits = window_logits(net, scaled.flip(-1) if flip else scaled, (height, width))
            scores = F.softmax(logits, dim=1)  # b × classes × H × W
            total = total + (scores.flip(-1) if flip else scores)  # mirrored scores back in place
            count += 1
    return total / count


def graph_settings():
    """(export.py's metadata key, the setting that gives it, this folder's value) of every setting that shapes the
    exported graph or what its input and output mean, N_CLASSES first. A generator: a check that stops at
    N_CLASSES never looks up the class names, which need N_CLASSES to fit DATASET."""
    yield 'n_classes', 'N_CLASSES', settings.N_CLASSES
    yield 'n_layers', 'N_LAYERS', settings.N_LAYERS
    yield 'stride', 'EVAL_STRIDE (None: STRIDE)', dataset.output_stride()
    yield 'eval_stage_num', 'EVAL_STAGE_NUM (None: STAGE_NUM)', settings.EVAL_STAGE_NUM or settings.STAGE_NUM
    yield 'n_bases', 'N_BASES', settings.N_BASES
    yield 'ema_channels', 'EMA_CHANNELS', settings.EMA_CHANNELS
    yield 'em_norm', 'EM_NORM', settings.EM_NORM
    yield 'mean', 'MEAN', [float(m) for m in settings.MEAN]
    yield 'std', 'STD', [float(s) for s in settings.STD]
    yield 'classes', 'DATASET', list(dataset.current()['classes'])


def onnx_metadata(path):
    """The metadata export.py wrote into the ONNX file, read from the file (whichever engine runs it), each of
    `graph_settings` checked against this folder's settings: a file of other settings is an error naming the
    setting, the file's value and the folder's."""
    import onnx  # here, not at the top: see runtime.export_onnx
    try:
        stored = onnx.load(path, load_external_data=False).metadata_props
    except Exception as error:  # protobuf's DecodeError and others: no ONNX model
        raise ValueError(f'{path} is not an ONNX file ({str(error).splitlines()[0]})') from None
    meta = {}
    for prop in stored:
        try:
            meta[prop.key] = json.loads(prop.value)
        except ValueError:  # another tool's metadata: not export.py's JSON
            pass
    for key, name, value in graph_settings():
        if key not in meta:
            raise ValueError(f'{path} has no export.py metadata for {key}: export the checkpoint with this '
                             f'folder\'s export.py')
        if meta[key] != value:
            raise ValueError(f'{path} was exported with {key} {meta[key]} but this folder\'s settings give {value} '
                             f'({name}); export it again from these settings or evaluate it from its own folder')
    return meta


def input_size_net(forward):
    """EMANet's eval forward, net(img, size=None) → b × classes × size logits (float32, on img's device), from
    forward(img) → logits at img's size, so that `predict` and everything that calls it run it unchanged. Logits
    for another size are resized from the input-size ones: for inputs of k·stride + 1 pixels (all that `predict`
    passes) that equals EMANet's one resize from the output stride, since align_corners=True keeps the stride
    grid's points and bilinear is linear between them."""
    def net(img, size=None):
        logits = forward(img)  # b × classes × h × w
        if size is not None and tuple(size) != tuple(img.shape[-2:]):
            logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=True)
        return logits
    return net


def inference_net(net, device):
    """What `predict` runs for net (an EMANet in eval mode on device): on the CPU its `runtime.freeze` graph in
    `eval_dtype`'s precision, traced anew at each call (training's validation passes weights that change), on
    CUDA net itself."""
    return input_size_net(runtime.freeze(net, eval_dtype(device))) if device.type == 'cpu' else net


def onnx_net(path, engine='onnxruntime'):
    """(net, metadata): an export.py file run on the CPU by engine, one of ENGINES, as EMANet's eval forward
    (`input_size_net`), its metadata checked (`onnx_metadata`) before the engine loads it. onnxruntime computes
    in float32; OpenVINO in `eval_dtype`'s precision (float32, or bfloat16 with EVAL_AMP)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'ONNX file {path} does not exist')
    meta = onnx_metadata(path)
    dtype = eval_dtype(torch.device('cpu')) if engine == 'openvino' else None
    try:
        if engine == 'openvino':
            model = runtime.openvino_model(path, dtype)
            run = lambda array: model(array)[0]  # noqa: E731
        else:
            session = runtime.onnx_session(path)
            run = lambda array: session.run(['logits'], {'img': array})[0]  # noqa: E731
    except Exception as error:  # the engine's own error types: a file it cannot parse or run
        lines = str(error).strip().splitlines() or [type(error).__name__]  # OpenVINO's: its reason last
        raise ValueError(f'{path} is not an ONNX file {engine} can run '
                         f'({lines[-1] if engine == "openvino" else lines[0]})') from None

    def forward(img):
        logits = run(img.detach().float().cpu().contiguous().numpy())
        return torch.from_numpy(logits).to(img.device)
    return input_size_net(forward), meta


def confusion_matrix(pred, label):
    """N_CLASSES × N_CLASSES int64 pixel counts, rows = ground truth, columns = prediction, over the pixels
    whose label is not IGNORE_LABEL. pred and label: class indices of the same shape."""
    n = settings.N_CLASSES
    valid = label != settings.IGNORE_LABEL
    return torch.bincount(label[valid] * n + pred[valid], minlength=n * n).view(n, n)


def mean_or_nan(values):
    return float(values.mean()) if values.size else math.nan


def metrics(confusion):
    """pAcc, mAcc, fIoU, mIoU (fractions) and per-class IoU (NaN where a class is neither in the ground truth
    nor predicted) of a confusion matrix with rows = ground truth, columns = prediction."""
    confusion = np.asarray(confusion, np.float64)
    hits = np.diag(confusion)
    truth, predicted, total = confusion.sum(1), confusion.sum(0), confusion.sum()
    union = truth + predicted - hits
    seen, defined = truth > 0, union > 0
    iou = np.full(len(hits), math.nan)
    iou[defined] = hits[defined] / union[defined]
    return {'pAcc': float(hits.sum() / total) if total else math.nan,
            'mAcc': mean_or_nan(hits[seen] / truth[seen]),
            'fIoU': float((truth[defined] / total * iou[defined]).sum()) if total else math.nan,
            'mIoU': mean_or_nan(iou[defined]),
            'IoU': iou.tolist()}


def evaluate(net, device, rank, world, n_images=None, each=None):
    """(confusion matrix of the first n_images of VAL_SPLIT (None: all) summed over all processes, the number
    of images) of net, what `predict` runs (`inference_net`, `onnx_net`). This process takes the images rank,
    rank + world, ...; each(index, image_id, img, pred), if given, is called for each of them (img: 1 × 3 × H' × W'
    on device, pred: H' × W' class indices)."""
    val_set = dataset.ValDataset()
    n_images = len(val_set) if n_images is None else min(n_images, len(val_set))
    shard = range(rank, n_images, world)
    confusion = torch.zeros(settings.N_CLASSES, settings.N_CLASSES, dtype=torch.int64, device=device)
    tic = time.time()
    for done, index in enumerate(shard, 1):
        img, label = val_set[index]  # 3 × H' × W', H' × W'
        img = runtime.to_device(img[None], device)
        pred = predict(net, img).argmax(dim=1)[0]  # H' × W'
        confusion += confusion_matrix(pred, label.to(device))
        if each is not None:
            each(index, val_set.ids[index], img, pred)
        if rank == 0:
            settings.log_progress('images', done, len(shard), tic)
    if dist.is_initialized():
        dist.all_reduce(confusion)
    return confusion.cpu().numpy(), n_images


def protocol():
    """The name of the protocol the EVAL_* settings give: '' for the authors' (single scale, whole image, at the
    training stride, the training's EM iterations), else its parts joined by '_': 'ms' (dataset.PAPER_SCALES) or
    'ms0.75-1-1.25' (other scales) or 'x0.5' (one other scale), 'flip', 'window769' or 'window513x1025',
    'os8' (EVAL_STRIDE other than STRIDE), 'stages5' (EVAL_STAGE_NUM), 'bf16' or 'fp16' (EVAL_AMP, on the device
    this process evaluates on, `runtime.process_device`: the GPU's half precision, or bfloat16 on a CPU that computes
    it natively; `eval_dtype` raises on one that would emulate it). It names the TensorBoard tags
    (`scalar_prefix`) and eval.py's files, so no protocol's results replace another's."""
    scales = tuple(float(s) for s in settings.EVAL_SCALES)
    parts = []
    if scales == dataset.PAPER_SCALES:
        parts.append('ms')
    elif len(scales) > 1:
        parts.append('ms' + '-'.join(f'{s:g}' for s in scales))
    elif scales != (1.0,):
        parts.append(f'x{scales[0]:g}')
    if settings.EVAL_FLIP:
        parts.append('flip')
    window = window_size()
    if window:
        parts.append(f'window{window[0]}' if window[0] == window[1] else f'window{window[0]}x{window[1]}')
    if dataset.output_stride() != settings.STRIDE:
        parts.append(f'os{dataset.output_stride()}')
    if settings.EVAL_STAGE_NUM not in (None, settings.STAGE_NUM):
        parts.append(f'stages{settings.EVAL_STAGE_NUM}')
    dtype = eval_dtype(runtime.process_device())
    if dtype is not None:
        parts.append(HALF_NAMES[dtype])
    return '_'.join(parts)


def result_name(stem, engine='pytorch'):
    """The name of eval.py's result file of the checkpoint (or ONNX file) stem under the current EVAL_* settings:
    eval_<stem>.json for the authors' protocol, eval_<stem>_<protocol>.json for another, then _onnx for an ONNX file
    (engine 'onnxruntime') and _onnx_openvino for one OpenVINO runs."""
    return 'eval_' + '_'.join(filter(None, (stem, protocol(), *ENGINE_SUFFIXES[engine]))) + '.json'


def scalar_prefix(first=None):
    """'val' for the authors' protocol, else 'val_<protocol>', with '_first<N>' after it for an evaluation of the
    split's first N images only (training's EVAL_IMAGES): TensorBoard tags <prefix>/mIoU, <prefix>_class/<name>.
    One tag, one measurement: a subset's numbers never share a curve with the whole split's."""
    return '_'.join(filter(None, ('val', protocol(), f'first{first}' if first else '')))


def finite_or_none(value):
    return value if math.isfinite(value) else None


def summary(confusion, n_images, engine='pytorch'):
    """What eval.py's JSON and training's val.jsonl record of an evaluation: mIoU, pAcc, mAcc, fIoU (fractions,
    None where undefined), per_class (class name → IoU), split, n_images and the protocol with its settings
    (stage_num: the EM iterations; precision: 'float32', or EVAL_AMP's 'bfloat16' / 'float16'), and the engine
    that computed it ('pytorch', or one of ENGINES)."""
    result = metrics(confusion)
    names = dataset.current()['classes']
    return {**{key: finite_or_none(result[key]) for key in ('mIoU', 'pAcc', 'mAcc', 'fIoU')},
            'per_class': {name: finite_or_none(iou) for name, iou in zip(names, result['IoU'])},
            'split': settings.VAL_SPLIT, 'n_images': n_images, 'protocol': protocol(),
            'scales': list(settings.EVAL_SCALES), 'flip': settings.EVAL_FLIP, 'window': settings.EVAL_WINDOW,
            'stride': dataset.output_stride(), 'stage_num': settings.EVAL_STAGE_NUM or settings.STAGE_NUM,
            'precision': str(eval_dtype(runtime.process_device()) or torch.float32).replace('torch.', ''),
            'engine': engine}


def write_scalars(writer, result, step, first=None):
    """A summary's metrics as TensorBoard scalars at step: <prefix>/mIoU, /pAcc, /mAcc, /images (how many were
    evaluated) and <prefix>_class/<name> for each class with an IoU; prefix from `scalar_prefix(first)`."""
    prefix = scalar_prefix(first)
    for key in ('mIoU', 'pAcc', 'mAcc'):
        if result[key] is not None:
            writer.add_scalar(f'{prefix}/{key}', result[key], step)
    writer.add_scalar(f'{prefix}/images', result['n_images'], step)
    for name, iou in result['per_class'].items():
        if iou is not None:
            writer.add_scalar(f'{prefix}_class/{name}', iou, step)
    writer.flush()  # visible in TensorBoard now, not when the run ends


def read_val_log(path):
    """The entries of a VAL_LOG file, in order; [] when there is none. A line that a kill cut short is left out."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if line.endswith('\n') and isinstance(entry, dict) and isinstance(entry.get('step'), int):
            entries.append(entry)
    return entries
