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
    python eval.py --all                        # every MODEL_DIR/step_<N>.pth not yet evaluated with this
                                                # protocol, in step order: the validation curve after a run

Single scale by default, the authors' protocol; EVAL_SCALES, EVAL_FLIP and EVAL_WINDOW give multi-scale + flip
and sliding windows (evaluation.py says how). Prints pAcc, mAcc, fIoU, mIoU and per-class IoU; writes
LOG_DIR/eval_<checkpoint stem>.json for the authors' protocol, eval_<checkpoint stem>_<protocol>.json for
another (eval_final_ms_flip.json, eval_final_window769.json: evaluation.protocol names it), and the metrics as
TensorBoard scalars at the checkpoint's step in LOG_DIR: val/mIoU, val/pAcc, val/mAcc, val/images,
val_class/<name>, or val_<protocol>/... (the curve that training's EVAL_EVERY draws, and eval.py --all fills).
A missing checkpoint or one for other settings is an error: random weights are never scored.
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tensorboardX import SummaryWriter

import checkpoint
import dataset
import evaluation
import network
import runtime
import settings

logger = settings.logger
ATTENTION_BASES = 8    # responsibility maps shown per image: the bases this image uses most
ATTENTION_COLUMNS = 3  # the image and 8 maps make a 3 × 3 grid


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
    """evaluation.evaluate over VAL_SPLIT, writing this process's masks and attention grids as args ask."""
    def save_outputs(index, image_id, img, pred):
        if args.save_pred:
            with Image.open(dataset.image_path(image_id)) as image:  # reads the header only
                width, height = image.size
            save_prediction(pred, width, height, os.path.join(args.save_pred, image_id + '.png'))
        if args.attention and index < args.attention_images:
            image = dataset.read_image(dataset.image_path(image_id))
            save_attention(net, img, image, os.path.join(args.attention, image_id + '_attention.png'))
    return evaluation.evaluate(net, device, rank, world, each=save_outputs)


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
        img = runtime.to_device(image_tensor(image), device)
        pred = evaluation.predict(net, img).argmax(dim=1)[0]  # H' × W'
        stem = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(out_dir, stem + '.png')
        save_prediction(pred, *image.size, out)
        if args.attention and index < args.attention_images:
            save_attention(net, img, image, os.path.join(args.attention, stem + '_attention.png'))
        logger.info('%s -> %s', path, out)


def result_path(path):
    """LOG_DIR/eval_<checkpoint stem>.json, or eval_<checkpoint stem>_<protocol>.json for another protocol than
    the authors' (evaluation.protocol): each protocol keeps its own file."""
    name = '_'.join(filter(None, (os.path.splitext(os.path.basename(path))[0], evaluation.protocol())))
    return os.path.join(settings.LOG_DIR, f'eval_{name}.json')


def report(confusion, path, step, n_images, writer=None):
    """Prints the metrics and the per-class IoU table; writes `result_path(path)` and, given a writer and a
    step, the TensorBoard scalars at that step."""
    result = evaluation.summary(confusion, n_images)
    print(f'{path} (step {step}), {settings.VAL_SPLIT}: {n_images} images, '
          f'scales {tuple(settings.EVAL_SCALES)}, flip {settings.EVAL_FLIP}, '
          f'window {settings.EVAL_WINDOW}, stride {dataset.output_stride()}')
    print('  '.join(f'{key} {100 * (math.nan if result[key] is None else result[key]):.2f}'
                    for key in ('pAcc', 'mAcc', 'fIoU', 'mIoU')))
    width = max(map(len, result['per_class']))
    for name, iou in result['per_class'].items():
        print(f'  {name:<{width}}  {100 * (math.nan if iou is None else iou):6.2f}')
    result.update(checkpoint=path, step=step, confusion=np.asarray(confusion).tolist())
    os.makedirs(settings.LOG_DIR, exist_ok=True)
    out = result_path(path)
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    logger.info('wrote %s', out)
    if writer is not None and step is not None:
        evaluation.write_scalars(writer, result, step)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint file; a bare name is looked up in MODEL_DIR (default: final.pth)')
    parser.add_argument('--all', action='store_true',
                        help="evaluate every MODEL_DIR/step_<N>.pth in step order, but those this protocol's "
                             "JSON already exists for: the validation curve in TensorBoard after a run")
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
    args = parser.parse_args()
    if args.all and (args.checkpoint or args.image or args.save_pred or args.attention):
        parser.error('--all evaluates the step_<N>.pth files (metrics, JSON, TensorBoard): no CHECKPOINT, '
                     '--image, --save-pred or --attention with it')
    return args


def main():
    args = parse_args()
    settings.warn_unread_settings()
    rank, world, device = runtime.setup_runtime()  # cudnn.benchmark stays off: every image has its own size
    if args.all:  # decided before any file is written, so every process has the same list
        paths = [p for p in checkpoint.step_checkpoints() if not os.path.exists(result_path(p))]
        logger.info('%d step_<N>.pth in %s to evaluate', len(paths), settings.MODEL_DIR)
    else:
        paths = [checkpoint.checkpoint_path(args.checkpoint or 'final.pth')]
    # the weights trained at STRIDE run at EVAL_STRIDE: the same convolutions with other strides and dilations
    net = network.EMANet(stride=settings.EVAL_STRIDE)
    writer = None  # TensorBoard, opened by the first report
    for folder in (args.save_pred, args.attention):
        if folder:
            os.makedirs(folder, exist_ok=True)
    for path in paths:
        step = checkpoint.load_checkpoint(net, path).get('step')
        net = runtime.to_device(net.eval(), device)
        if args.image:
            segment_images(net, device, rank, world, args)
        else:
            confusion, n_images = evaluate(net, device, rank, world, args)
            if rank == 0:
                writer = writer or SummaryWriter(settings.LOG_DIR)
                report(confusion, path, step, n_images, writer)
    if writer is not None:
        writer.close()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    runtime.run_script(main)
