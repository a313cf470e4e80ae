"""Evaluates an EMANet checkpoint on VAL_SPLIT, or segments your own images.

    python eval.py                              # MODEL_DIR/final.pth on VAL_SPLIT
    python eval.py step_10000.pth               # a bare name: MODEL_DIR/step_10000.pth, else ./step_10000.pth
    python eval.py path/to/EMANet101.pth        # any file (the authors' released checkpoints load unchanged)
    python eval.py ./final.pth                  # a name with a folder part is always that path
    torchrun --nproc_per_node=4 eval.py         # each process takes every 4th image; rank 0 reports
    python eval.py --save-pred preds            # also preds/<id>.png, masks in the dataset's colours
    python eval.py --attention attn --attention-images 4
                                                # also attn/<id>_attention.png for the first 4 images
    python eval.py final.pth --image a.jpg --image b.jpg [--save-pred out]
                                                # masks <stem>.png of your images, in out or LOG_DIR/predictions
    echo 'EVAL_WINDOW = 769' >> settings.py && python eval.py
                                                # sliding 769 × 769 windows (Cityscapes' 1024 × 2048 images)
    echo "VAL_SPLIT = 'test'" >> settings.py && python eval.py --submit submit [--comp 5]
                                                # the benchmark server's files of VAL_SPLIT in submit/:
                                                # VOC submit/results.tgz (comp6, or comp5: VOC data only),
                                                # Cityscapes and ADE20K one PNG per image (zip them)

Single scale by default, the authors' protocol; EVAL_SCALES, EVAL_FLIP and EVAL_WINDOW give multi-scale + flip
and sliding windows (evaluation.py says how). Prints pAcc, mAcc, fIoU, mIoU and
per-class IoU; writes LOG_DIR/eval_<checkpoint stem>.json. A missing checkpoint or one for other settings is
an error: random weights are never scored.
"""
import argparse
import json
import math
import os
import tarfile

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

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

# the datasets whose benchmark servers take results, and their formats (submission_file, save_submission)
SERVERS = ('voc', 'cityscapes', 'ade20k')


def submission_file(image_id, out_dir, comp):
    """Where a server wants the result of image_id, below out_dir."""
    name = os.path.basename(image_id)
    if settings.DATASET == 'voc':  # the VOC devkit's layout; comp6 may train on outside data (COCO), comp5 not
        return os.path.join(out_dir, 'results', 'VOC2012', 'Segmentation', f'comp{comp}_test_cls', name + '.png')
    if settings.DATASET == 'cityscapes':  # cityscapesScripts finds <city>_<seq>_<frame>*.png anywhere below
        return os.path.join(out_dir, name + '_leftImg8bit.png')
    return os.path.join(out_dir, name + '.png')  # ADE20K: ADE_test_00000001.png


def save_submission(pred, path):
    """Writes H × W class indices (at the image's size) as the server reads them: VOC palette PNGs of 0..20,
    Cityscapes 8-bit regular labelIds (trainId → labelId), ADE20K 8-bit 1..150 (0 is 'other' there)."""
    if settings.DATASET == 'voc':
        dataset.save_label_png(pred, path)
    elif settings.DATASET == 'cityscapes':
        dataset.save_label_png(np.array(dataset.CITYSCAPES_LABEL_IDS, np.uint8)[pred], path, grey=True)
    else:
        dataset.save_label_png(pred + 1, path, grey=True)


def write_archive(out_dir, comp):
    """out_dir/results.tgz holding results/VOC2012/Segmentation/comp<comp>_test_cls/, as the VOC server takes it;
    written atomically."""
    folder = os.path.join('results', 'VOC2012', 'Segmentation', f'comp{comp}_test_cls')
    path = os.path.join(out_dir, 'results.tgz')
    with tarfile.open(path + '.tmp', 'w:gz') as archive:
        for parent in ('results', os.path.join('results', 'VOC2012'), os.path.dirname(folder)):
            archive.add(os.path.join(out_dir, parent), parent, recursive=False)
        archive.add(os.path.join(out_dir, folder), folder)
    os.replace(path + '.tmp', path)
    return path


def evaluate(net, device, rank, world, args):
    """evaluation.evaluate over VAL_SPLIT, writing this process's masks, attention grids and server files as args
    ask."""
    def save_outputs(index, image_id, img, pred):
        if args.save_pred or args.submit:
            with Image.open(dataset.image_path(image_id)) as image:  # reads the header only
                width, height = image.size
        if args.save_pred:
            save_prediction(pred, width, height, os.path.join(args.save_pred, image_id + '.png'))
        if args.submit:
            save_submission(pred[:height, :width].cpu().numpy().astype(np.uint8),
                            submission_file(image_id, args.submit, args.comp))
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


def finite_or_none(value):
    return value if math.isfinite(value) else None


def report(confusion, path, step, n_images):
    """Prints the metrics and the per-class IoU table; writes LOG_DIR/eval_<checkpoint stem>.json."""
    result = evaluation.metrics(confusion)
    names = list(dataset.current()['classes'])
    print(f'{path} (step {step}), {settings.VAL_SPLIT}: {n_images} images, '
          f'scales {tuple(settings.EVAL_SCALES)}, flip {settings.EVAL_FLIP}, '
          f'window {settings.EVAL_WINDOW}, stride {dataset.output_stride()}')
    if not np.asarray(confusion).sum():
        print(f'no labelled pixel in VAL_SPLIT={settings.VAL_SPLIT!r}: the images were predicted, nothing scored')
        return
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
        json.dump(checkpoint.plain(summary), f, indent=1)  # settings such as EVAL_FLIP = np.bool_(True) too
    logger.info('wrote %s', out)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', nargs='?', default='final.pth',
                        help='checkpoint file; a bare name is MODEL_DIR/name when that exists, else the file in '
                             'this folder; a name with a folder part is a path (default: final.pth)')
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
    parser.add_argument('--submit', metavar='DIR',
                        help=f'write the benchmark server\'s result files of VAL_SPLIT into DIR '
                             f'({", ".join(SERVERS)}); on a labelled split the metrics are printed as well')
    parser.add_argument('--comp', type=int, choices=(5, 6), default=6,
                        help='VOC competition of --submit: 6 (outside data such as COCO; default) or 5 (VOC only)')
    return parser.parse_args()


def main():
    args = parse_args()
    settings.warn_unread_settings()
    if args.submit and settings.DATASET not in SERVERS:
        raise ValueError(f'--submit: DATASET={settings.DATASET!r} has no benchmark server; those that have one: '
                         f'{", ".join(SERVERS)}')
    rank, world, device = runtime.setup_runtime()  # cudnn.benchmark stays off: every image has its own size
    path = checkpoint.checkpoint_path(args.checkpoint)
    # the weights trained at STRIDE run at EVAL_STRIDE: the same convolutions with other strides and dilations
    net = network.EMANet(stride=settings.EVAL_STRIDE)
    step = checkpoint.load_checkpoint(net, path).get('step')
    net = runtime.to_device(net.eval(), device)
    for folder in (args.save_pred, args.attention, args.submit):
        if folder:
            os.makedirs(folder, exist_ok=True)
    if args.image:
        segment_images(net, device, rank, world, args)
    else:
        confusion, n_images = evaluate(net, device, rank, world, args)
        if args.submit and dist.is_initialized():
            dist.barrier()  # every process's files are written
        if rank == 0:
            report(confusion, path, step, n_images)
            if args.submit and settings.DATASET == 'voc':
                logger.info('wrote %s: upload it to the VOC server', write_archive(args.submit, args.comp))
            elif args.submit:
                logger.info('wrote %d files into %s: zip them for the server', n_images, args.submit)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    runtime.run_script(main)
