"""Evaluates an EMANet checkpoint on VAL_SPLIT, or segments your own images.

    python eval.py                              # MODEL_DIR/final.pth on VAL_SPLIT
    python eval.py step_10000.pth               # a bare name is looked up in MODEL_DIR
    python eval.py path/to/EMANet101.pth        # any file (the authors' released checkpoints load unchanged)
    torchrun --nproc_per_node=4 eval.py         # each process takes every 4th image; rank 0 reports
    python eval.py --save-pred preds            # also preds/<id>.png, masks in the dataset's colours
    python eval.py --attention attn --attention-images 4
                                                # also attn/<id>_attention.png for the first 4 images
    python eval.py final.pth --image a.jpg --image b.jpg [--save-pred out]
                                                # masks <stem>.png of your images, in out or LOG_DIR/predictions
    echo 'EVAL_WINDOW = 769' >> settings.py && python eval.py
                                                # sliding 769 × 769 windows (Cityscapes' 1024 × 2048 images)

Single scale by default, the authors' protocol: the padded image (H' × W' = k·stride + 1, as ValDataset pads)
→ logits at that size → argmax. The paper's multi-scale + flip is EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5,
1.75) with EVAL_FLIP = True in settings.py: softmax scores of every scale (and of the mirrored image) are
averaged at full resolution. EVAL_WINDOW (a size, or (h, w)) runs every scale that is larger than it as
overlapping windows of that size (a step of 2/3 of the window, the last one flush with the border) whose logits
are averaged where they overlap: memory stays that of one window, and the net sees crops as large as it was
trained on. EVAL_WINDOW = None (the default) runs the whole image at once. Prints pAcc, mAcc, fIoU, mIoU and
per-class IoU; writes LOG_DIR/eval_<checkpoint stem>.json. A missing checkpoint or one for other settings is
an error: random weights are never scored.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

import dataset
import network
import settings

logger = settings.logger
ATTENTION_BASES = 8    # responsibility maps shown per image: the bases this image uses most
ATTENTION_COLUMNS = 3  # the image and 8 maps make a 3 × 3 grid


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


@torch.inference_mode()
def predict(net, img):
    """Class scores of img (b × 3 × H × W, normalised): softmax probabilities averaged over EVAL_SCALES and,
    with EVAL_FLIP, over the mirrored images too, all at H × W → b × classes × H × W float32. Each scale runs
    whole or, with EVAL_WINDOW, in windows (`window_logits`)."""
    height, width = img.shape[-2:]
    total, count = 0, 0
    for scale in settings.EVAL_SCALES:
        size = (scaled_size(height, scale), scaled_size(width, scale))
        scaled = img if size == (height, width) else \
            F.interpolate(img, size=size, mode='bilinear', align_corners=True)  # b × 3 × h × w
        for flip in (False, True) if settings.EVAL_FLIP else (False,):
            with network.autocast(img.device, network.autocast_dtype(img.device)):
                logits = window_logits(net, scaled.flip(-1) if flip else scaled, (height, width))
            scores = F.softmax(logits, dim=1)  # b × classes × H × W
            total = total + (scores.flip(-1) if flip else scores)  # mirrored scores back in place
            count += 1
    return total / count


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


def save_prediction(pred, width, height, path):
    """Writes the H' × W' class map, cropped to the image's width × height, as a PNG in the dataset's colours."""
    dataset.save_label_png(pred[:height, :width].cpu().numpy().astype(np.uint8), path)


@torch.inference_mode()
def attention_maps(net, img):
    """Responsibilities of the EM unit's ATTENTION_BASES most used bases for img (1 × 3 × H × W), each
    normalised to [0, 1] and upsampled to H × W → m × H × W. In float32: a few images, for looking at."""
    features = net.features(img)  # 1 × c × h × w
    _, responsibilities = net.emau.em(features)  # 1 × n × k, n = h·w
    h, w = features.shape[-2:]
    maps = responsibilities[0].T.reshape(-1, h, w)  # k × h × w
    most_used = maps.sum(dim=(1, 2)).topk(min(ATTENTION_BASES, len(maps))).indices
    maps = maps[most_used]  # m × h × w
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = (maps - low) / (maps.amax(dim=(1, 2), keepdim=True) - low + 1e-12)
    return F.interpolate(maps[None], size=img.shape[-2:], mode='bilinear', align_corners=True)[0]


def save_attention(net, img, image, path):
    """A grid PNG: the image (PIL RGB, un-padded), then its most used bases' responsibility maps in grey."""
    width, height = image.size
    maps = (attention_maps(net, img)[:, :height, :width] * 255).byte().cpu().numpy()  # m × height × width
    panels = [np.asarray(image)] + [np.repeat(m[..., None], 3, axis=2) for m in maps]
    panels += [np.zeros_like(panels[0])] * (-len(panels) % ATTENTION_COLUMNS)  # fill the last row
    rows = [np.concatenate(panels[i:i + ATTENTION_COLUMNS], axis=1) for i in range(0, len(panels), ATTENTION_COLUMNS)]
    os.makedirs(os.path.dirname(path), exist_ok=True)  # ids may hold sub-folders (Cityscapes' city)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def evaluate(net, device, rank, world, args):
    """(confusion matrix of VAL_SPLIT summed over all processes, number of images). This process takes the
    images rank, rank + world, ...; it writes masks and attention grids of its own images."""
    val_set = dataset.ValDataset()
    shard = range(rank, len(val_set), world)
    confusion = torch.zeros(settings.N_CLASSES, settings.N_CLASSES, dtype=torch.int64, device=device)
    tic = time.time()
    for done, index in enumerate(shard, 1):
        image_id = val_set.ids[index]
        img, label = val_set[index]  # 3 × H' × W', H' × W'
        img = network.to_device(img[None], device)
        pred = predict(net, img).argmax(dim=1)[0]  # H' × W'
        confusion += confusion_matrix(pred, label.to(device))
        if args.save_pred:
            with Image.open(dataset.image_path(image_id, val_set.data_root)) as image:  # reads the header only
                width, height = image.size
            save_prediction(pred, width, height, os.path.join(args.save_pred, image_id + '.png'))
        if args.attention and index < args.attention_images:
            image = dataset.read_image(dataset.image_path(image_id, val_set.data_root))
            save_attention(net, img, image, os.path.join(args.attention, image_id + '_attention.png'))
        if rank == 0:
            settings.log_progress('images', done, len(shard), tic)
    if dist.is_initialized():
        dist.all_reduce(confusion)
    return confusion.cpu().numpy(), len(val_set)


def image_tensor(image):
    """1 × 3 × H' × W' of a PIL RGB image, normalised and padded as ValDataset pads."""
    width, height = image.size
    no_label = np.zeros((height, width), np.uint8)  # to_tensors pads a label as well; there is none
    img, _ = dataset.to_tensors(image, no_label, dataset.stride_size(height), dataset.stride_size(width))
    return img[None]


def segment_images(net, device, rank, world, args):
    """Writes <stem>.png masks of the user's images (this process's share: rank, rank + world, ...)."""
    out_dir = args.save_pred or os.path.join(settings.LOG_DIR, 'predictions')
    os.makedirs(out_dir, exist_ok=True)
    for index in range(rank, len(args.image), world):
        path = args.image[index]
        image = dataset.read_image(path)
        img = network.to_device(image_tensor(image), device)
        pred = predict(net, img).argmax(dim=1)[0]  # H' × W'
        stem = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(out_dir, stem + '.png')
        save_prediction(pred, *image.size, out)
        if args.attention and index < args.attention_images:
            save_attention(net, img, image, os.path.join(args.attention, stem + '_attention.png'))
        logger.info('%s -> %s', path, out)


def finite_or_none(value):
    return value if math.isfinite(value) else None


def report(confusion, path, step, n_images):
    """Prints the metrics and the per-class IoU table; writes LOG_DIR/eval_<checkpoint stem>.json."""
    result = metrics(confusion)
    names = list(dataset.current()['classes'])
    print(f'{path} (step {step}), {settings.VAL_SPLIT}: {n_images} images, '
          f'scales {tuple(settings.EVAL_SCALES)}, flip {settings.EVAL_FLIP}, '
          f'window {settings.EVAL_WINDOW}, stride {dataset.output_stride()}')
    print('  '.join(f'{key} {100 * result[key]:.2f}' for key in ('pAcc', 'mAcc', 'fIoU', 'mIoU')))
    width = max(map(len, names))
    for name, iou in zip(names, result['IoU']):
        print(f'  {name:<{width}}  {100 * iou:6.2f}')
    summary = {key: finite_or_none(result[key]) for key in ('mIoU', 'pAcc', 'mAcc', 'fIoU')}
    summary['per_class'] = {name: finite_or_none(iou) for name, iou in zip(names, result['IoU'])}
    summary.update(checkpoint=path, step=step, split=settings.VAL_SPLIT, n_images=n_images,
                   scales=list(settings.EVAL_SCALES), flip=settings.EVAL_FLIP,
                   window=settings.EVAL_WINDOW, stride=dataset.output_stride(),
                   confusion=np.asarray(confusion).tolist())
    os.makedirs(settings.LOG_DIR, exist_ok=True)
    out = os.path.join(settings.LOG_DIR, f'eval_{os.path.splitext(os.path.basename(path))[0]}.json')
    with open(out, 'w') as f:
        json.dump(summary, f, indent=1)
    logger.info('wrote %s', out)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', nargs='?', default='final.pth',
                        help='checkpoint file; a bare name is looked up in MODEL_DIR (default: final.pth)')
    parser.add_argument('--save-pred', metavar='DIR',
                        help="write a mask <id>.png of each image in the dataset's colours, at the image size, into DIR")
    parser.add_argument('--attention', metavar='DIR',
                        help=f'write <id>_attention.png into DIR: the image and the responsibility maps of the '
                             f'{ATTENTION_BASES} bases it uses most')
    parser.add_argument('--attention-images', type=int, default=4, metavar='N',
                        help='how many images, the first ones, get --attention grids (default: 4)')
    parser.add_argument('--image', action='append', metavar='FILE',
                        help='segment this image instead of evaluating (repeatable); masks <stem>.png go to the '
                             '--save-pred DIR, else LOG_DIR/predictions')
    return parser.parse_args()


def main():
    args = parse_args()
    settings.warn_unread_settings()
    rank, world, device = network.setup_runtime()  # cudnn.benchmark stays off: every image has its own size
    path = network.checkpoint_path(args.checkpoint)
    # the weights trained at STRIDE run at EVAL_STRIDE: the same convolutions with other strides and dilations
    net = network.EMANet(stride=settings.EVAL_STRIDE)
    step = network.load_checkpoint(net, path).get('step')
    net = network.to_device(net.eval(), device)
    for folder in (args.save_pred, args.attention):
        if folder:
            os.makedirs(folder, exist_ok=True)
    if args.image:
        segment_images(net, device, rank, world, args)
    else:
        confusion, n_images = evaluate(net, device, rank, world, args)
        if rank == 0:
            report(confusion, path, step, n_images)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    network.run_script(main)
