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
    python eval.py --image photos/ --image cam1/0001.jpg --image cam2/0001.jpg
                                                # every image in photos/; cam1/0001.png and cam2/0001.png
    python eval.py --onnx models/final.onnx [--image ...] [--save-pred preds]
                                                # the same with onnxruntime on an export.py file
    python eval.py --onnx models/final.onnx --engine openvino
                                                # with OpenVINO's CPU plugin, float32: eval_final_onnx_openvino.json
    python eval.py --onnx models/final.onnx --engine openvino --set EVAL_AMP=True
                                                # OpenVINO in bfloat16 (a CPU with AVX512-BF16 or AMX):
                                                # eval_final_bf16_onnx_openvino.json
    python eval.py --set EVAL_AMP=True          # PyTorch in bfloat16 on such a CPU: eval_final_bf16.json
    echo 'EVAL_WINDOW = 769' >> settings.py && python eval.py
                                                # sliding 769 × 769 windows (Cityscapes' 1024 × 2048 images)
    echo "VAL_SPLIT = 'test'" >> settings.py && python eval.py --submit submit [--comp 5]
                                                # the benchmark server's files of VAL_SPLIT in submit/ (new or
                                                # empty: a folder holding files is refused, so nothing stale is
                                                # uploaded): VOC submit/results.tgz (comp6, or comp5: VOC data
                                                # only), Cityscapes and ADE20K one PNG per image (zip them)
    python eval.py ../exp_a/models/final.pth    # another folder's checkpoint: its results are kept apart
    python eval.py --all                        # every MODEL_DIR/step_<N>.pth not yet evaluated with this
                                                # protocol, in step order: the validation curve after a run
    python eval.py --set EVAL_STAGE_NUM=1,2,3,4,5,6,7,8
                                                # under each value of an evaluation setting in turn, without
                                                # editing settings.py: eval_final_stages1.json, ...
    python eval.py --set "EVAL_SCALES=(1.0,),(0.5,0.75,1.0,1.25,1.5,1.75)" --set EVAL_FLIP=False,True
                                                # several --set: every combination (4 protocols here)

Single scale by default, the authors' protocol; EVAL_SCALES, EVAL_FLIP and EVAL_WINDOW give multi-scale + flip
and sliding windows (evaluation.py says how). Prints pAcc, mAcc, fIoU, mIoU and per-class IoU; writes
LOG_DIR/eval_<checkpoint stem>.json for the authors' protocol, eval_<checkpoint stem>_<protocol>.json for
another (eval_final_ms_flip.json, eval_final_window769.json: evaluation.protocol names it; _bf16 or _fp16 when
EVAL_AMP evaluates in half precision rather than in float32: bfloat16 on a CPU that computes it natively, refused
on one that would emulate it, the training's on CUDA; _onnx is added for an ONNX file, _onnx_openvino when OpenVINO
runs it; the JSON records the engine and the precision, and as 'recipe' the checkpoint's record of the run against
its published recipe, with whether this protocol, on this DATASET, is one the recipe reports and the recipe's
number for it), and the metrics as TensorBoard scalars at the checkpoint's step in LOG_DIR: val/mIoU, val/pAcc,
val/mAcc, val/images, val_class/<name>, or val_<protocol>/... (the whole split's curve, which eval.py --all fills;
training's EVAL_EVERY draws it too, or val_first<N>/... when it evaluates only EVAL_IMAGES = N). That is for the
checkpoints of this folder's MODEL_DIR: one from elsewhere is no result of this experiment, and its JSON goes to
LOG_DIR/other_checkpoints/ named by its path (eval_up_exp_a_models_final.json), out of the TensorBoard curve and
of compare.py. --onnx refuses a file exported with other settings than this folder's (each setting that shapes
the graph, named), whichever engine runs it; both engines run on the CPU with PyTorch's thread count, and so
does the whole evaluation of an ONNX file, on a machine with a GPU too (the precision its result is named by is
the CPU's). A missing checkpoint or one for other settings is an error: random weights are never scored.

Your own images are segmented as a viewer shows them (dataset.read_photo): camera orientation (EXIF) applied,
transparency composited on the MEAN colour, every Pillow mode read by its values (16-bit, 32-bit integer and
float grayscale; values of no known range are an error naming the file), CMYK and palettes converted; each
mask has the size of the upright image. Masks are named by the input's stem, or by as much of its path as tells
inputs apart; a mask that would replace an input image is an error before anything is written.
"""
import argparse
import itertools
import json
import math
import os
import tarfile

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
OTHER_CHECKPOINTS = 'other_checkpoints'  # in LOG_DIR: the results of checkpoints from outside MODEL_DIR


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


def evaluate(forward, net, device, rank, world, args):
    """evaluation.evaluate of forward (what `evaluation.predict` runs) over VAL_SPLIT, writing this process's
    masks, attention grids (of net, the EMANet) and server files as args ask."""
    def save_outputs(index, image_id, img, pred):
        if args.save_pred or args.submit:
            width, height = dataset.sample_size(image_id)  # from the header alone
        if args.save_pred:
            save_prediction(pred, width, height, os.path.join(args.save_pred, image_id + '.png'))
        if args.submit:
            save_submission(pred[:height, :width].cpu().numpy().astype(np.uint8),
                            submission_file(image_id, args.submit, args.comp))
        if args.attention and index < args.attention_images:
            image = dataset.sample_image(image_id)
            save_attention(net, img, image, os.path.join(args.attention, image_id + '_attention.png'))
    return evaluation.evaluate(forward, device, rank, world, each=save_outputs)


def image_files(paths):
    """The files to segment: each FILE as given, each DIR's image files (sorted; other files skipped with a
    note; not recursive). The same file given twice is segmented once."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        for name in sorted(os.listdir(path)):
            file = os.path.join(path, name)
            try:
                with Image.open(file):  # reads the header only
                    files.append(file)
            except (OSError, SyntaxError, ValueError):  # a folder, or not a format PIL reads
                logger.info('skipping %s: not an image file', file)
    if not files:
        raise FileNotFoundError(f'no image files in {", ".join(paths)}')
    unique = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)
    return list(unique.values())


def mask_names(files):
    """A name for each input's mask (relative, without .png) such that no two inputs share one: the file's stem
    where the stems differ; else the shortest tail of the folders that tells them apart, the same depth for all
    ('cam1/0001', 'cam2/0001'); files that differ only by their extension keep it ('0001.jpg', '0001.tif')."""
    parts = [os.path.abspath(file).split(os.sep)[1:] for file in files]  # a link keeps its own name
    for keep_extension in (False, True):
        for depth in range(1, max(map(len, parts)) + 1):
            names = ['/'.join(p[-depth:]) if keep_extension else os.path.splitext('/'.join(p[-depth:]))[0]
                     for p in parts]
            if len(set(names)) == len(names):
                return names
    raise AssertionError('image_files gives each path once')


def own_images(args):
    """(input file, mask name, mask path) of each image --image names, masks in --save-pred or
    LOG_DIR/predictions; an error, before anything is loaded or written, if a mask would replace an input."""
    files = image_files(args.image)
    names = mask_names(files)
    out_dir = args.save_pred or os.path.join(settings.LOG_DIR, 'predictions')
    outs = [os.path.join(out_dir, name + '.png') for name in names]
    inputs = {os.path.realpath(file): file for file in files}
    for out in outs:
        if os.path.realpath(out) in inputs:
            raise ValueError(f'the mask {out} would replace the input image {inputs[os.path.realpath(out)]}: '
                             f'give another --save-pred folder')
    return list(zip(files, names, outs))


def segment_images(forward, net, device, rank, world, args, images):
    """Writes the mask of each of `own_images` (this process's share: rank, rank + world, ...) at the size a
    viewer shows the image: forward's prediction, the attention grids of net (the EMANet)."""
    for index in range(rank, len(images), world):
        file, name, out = images[index]
        image = dataset.read_photo(file)
        img = runtime.to_device(dataset.image_tensor(image), device)
        pred = evaluation.predict(forward, img).argmax(dim=1)[0]  # H' × W'
        save_prediction(pred, *image.size, out)
        if args.attention and index < args.attention_images:
            save_attention(net, img, image, os.path.join(args.attention, name + '_attention.png'))
        logger.info('%s -> %s', file, out)


def own_checkpoint(path):
    """Whether path is a file of this folder's MODEL_DIR, whose results are this experiment's."""
    return os.path.realpath(os.path.dirname(os.path.abspath(path))) == os.path.realpath(settings.MODEL_DIR)


def result_path(path, engine=None):
    """LOG_DIR/eval_<checkpoint stem>.json for a file of MODEL_DIR, eval_<checkpoint stem>_<protocol>.json for
    another protocol than the authors' (evaluation.protocol), and _onnx after it for an ONNX file (_onnx_openvino
    when engine is 'openvino'): each keeps its own file. A file from elsewhere (another folder's run, a released
    checkpoint) is no result of this folder's: LOG_DIR/OTHER_CHECKPOINTS/eval_<its path from here, without
    extension, '/' as '_' and '..' as 'up'>... (e.g. eval_up_exp_a_models_final.json for ../exp_a/models/final.pth),
    which compare.py and --all do not read."""
    stem, extension = os.path.splitext(path)
    if own_checkpoint(path):
        folder, tag = settings.LOG_DIR, os.path.basename(stem)
    else:
        folder = os.path.join(settings.LOG_DIR, OTHER_CHECKPOINTS)
        tag = '_'.join('up' if part == '..' else part for part in os.path.relpath(stem).split(os.sep))
    engine = engine or ('onnxruntime' if extension == '.onnx' else 'pytorch')  # an ONNX file's default engine
    return os.path.join(folder, evaluation.result_name(tag, engine))


def report(confusion, path, step, n_images, writer=None, recipe=None, engine='pytorch'):
    """Prints the metrics and the per-class IoU table; writes `result_path(path, engine)` and, given a writer and a
    step, the TensorBoard scalars at that step. An images-only split (VAL_SPLIT = 'test') is predicted, not scored.
    recipe: the checkpoint's record of its run against its recipe (checkpoint.held_recipe; None: it holds none, as
    the authors' files and ONNX files), kept in the JSON with whether this evaluation is under one of the recipe's
    protocols ('protocol') and the recipe's result of it ('reported', dataset.recipe_result)."""
    print(f'{path} (step {step}), {settings.VAL_SPLIT}: {n_images} images, '
          f'scales {tuple(settings.EVAL_SCALES)}, flip {settings.EVAL_FLIP}, '
          f'window {settings.EVAL_WINDOW}, stride {dataset.output_stride()}')
    if not np.asarray(confusion).sum():
        print(f'no labelled pixel in VAL_SPLIT={settings.VAL_SPLIT!r}: the images were predicted, nothing scored')
        return
    result = evaluation.summary(confusion, n_images, engine)
    print('  '.join(f'{key} {100 * (math.nan if result[key] is None else result[key]):.2f}'
                    for key in ('pAcc', 'mAcc', 'fIoU', 'mIoU')))
    width = max(map(len, result['per_class']))
    for name, iou in result['per_class'].items():
        print(f'  {name:<{width}}  {100 * (math.nan if iou is None else iou):6.2f}')
    result.update(checkpoint=path, step=step, confusion=np.asarray(confusion).tolist())
    if recipe is not None and recipe['name'] in dataset.RECIPES:  # not None, nor a recipe renamed since the run
        matched = dataset.recipe_result(recipe['name'], result, settings.DATASET)
        recipe = dict(recipe, **dict(zip(('protocol', 'reported'), matched)))
    result['recipe'] = recipe
    out = result_path(path, engine)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(checkpoint.plain(result), f, indent=1)  # settings such as EVAL_FLIP = np.bool_(True) too
    logger.info('wrote %s', out)
    if writer is not None and step is not None:
        evaluation.write_scalars(writer, result, step)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint file; a bare name is MODEL_DIR/name when that exists, else the file in '
                             'this folder; a name with a folder part is a path (default: final.pth)')
    parser.add_argument('--onnx', metavar='FILE.onnx',
                        help='run this export.py file with onnxruntime (or --engine) instead of a checkpoint with '
                             'PyTorch')
    parser.add_argument('--engine', choices=evaluation.ENGINES,
                        help='what runs the --onnx file on the CPU: onnxruntime (default; float32) or openvino '
                             '(float32; bfloat16 with EVAL_AMP = True on a CPU with AVX512-BF16 or AMX)')
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
    parser.add_argument('--image', action='append', metavar='FILE|DIR',
                        help='segment this image, or every image in this folder, instead of evaluating '
                             '(repeatable); masks <stem>.png (more of the path where stems repeat) go to the '
                             '--save-pred DIR, else LOG_DIR/predictions')
    parser.add_argument('--submit', metavar='DIR',
                        help=f'write the benchmark server\'s result files of VAL_SPLIT into DIR '
                             f'({", ".join(SERVERS)}); on a labelled split the metrics are printed as well')
    parser.add_argument('--comp', type=int, choices=(5, 6), default=6,
                        help='VOC competition of --submit: 6 (outside data such as COCO; default) or 5 (VOC only)')
    parser.add_argument('--set', action='append', default=[], metavar='NAME=V1,V2',
                        help=f'evaluate under each of these values of an evaluation setting '
                             f'({", ".join(evaluation.EVAL_SETTINGS)}) in turn, as if settings.py assigned it; '
                             f'values are Python literals ("EVAL_SCALES=(1.0,),(0.5,1.0,1.5)", EVAL_WINDOW=None,769); '
                             f'repeatable: every combination of the values; each result is named by its protocol')
    args = parser.parse_args()
    assigned = {}
    for text in args.set:
        try:
            name, values = settings.parse_values(text)
        except ValueError as e:
            parser.error(f'--set {e}')
        if name not in evaluation.EVAL_SETTINGS:
            parser.error(f'--set {name}: {name} shapes training, not only evaluation: append it to settings.py and '
                         f'train; --set takes {", ".join(evaluation.EVAL_SETTINGS)}')
        if name in assigned:
            parser.error(f'--set {name} is given twice: list all its values in one --set {name}=V1,V2')
        assigned[name] = values
    args.set = [dict(zip(assigned, combination)) for combination in itertools.product(*assigned.values())]
    if args.onnx and args.checkpoint:
        parser.error('give a checkpoint or --onnx FILE, not both')
    if args.engine and not args.onnx:
        parser.error(f'--engine {args.engine} runs an ONNX file: give --onnx FILE (a checkpoint runs in PyTorch)')
    args.engine = args.engine or ('onnxruntime' if args.onnx else 'pytorch')
    if args.onnx and args.attention:
        parser.error('--attention needs the PyTorch network (the EM unit\'s responsibilities): not with --onnx')
    if args.all and (args.checkpoint or args.onnx or args.image or args.save_pred or args.attention or args.submit):
        parser.error('--all evaluates the step_<N>.pth files (metrics, JSON, TensorBoard): no CHECKPOINT, '
                     '--onnx, --image, --save-pred, --attention or --submit with it')
    if args.image and args.submit:
        parser.error('--submit writes the server\'s files of VAL_SPLIT: not with --image (your images\' masks go to '
                     '--save-pred DIR)')
    if len(args.set) > 1 and (args.image or args.save_pred or args.attention or args.submit):
        parser.error('--set gives several evaluations, whose masks and server files would write over each other: '
                     '--image, --save-pred, --attention and --submit take one (one value per --set)')
    return args


def main():
    args = parse_args()
    settings.warn_unread_settings()
    if args.onnx:  # both engines compute on the CPU: this process's device, which names the protocol's precision
        settings.assign({'DEVICE': 'cpu'})
    if args.submit and os.path.isdir(args.submit) and os.listdir(args.submit):  # before any process writes
        raise ValueError(f'--submit {args.submit} is not empty: a submission holds the files of one evaluation, '
                         f'no others; give a new folder, or empty this one')
    for values in args.set:  # what each combination refuses, before the first is evaluated
        settings.assign(values)
        refuse_before_any_work(args)
    for values in args.set:  # each combination of --set values ({} without --set)
        if values:
            logger.info('evaluating with %s', ', '.join(f'{name} = {value!r}' for name, value in values.items()))
        settings.assign(values)
        evaluate_checkpoints(args)
    if dist.is_initialized():
        dist.destroy_process_group()


def refuse_before_any_work(args):
    """A ValueError for what args cannot do under the current settings: EVAL_AMP with onnxruntime or where this
    process's device has no native half precision (`evaluation.eval_dtype`), --submit of a dataset without a
    server."""
    if args.engine == 'onnxruntime' and settings.EVAL_AMP:
        raise ValueError(f'EVAL_AMP={settings.EVAL_AMP!r} with --onnx: onnxruntime computes in float32, which '
                         f'results named for half precision would misreport; set EVAL_AMP = False, or run the file '
                         f'with --engine openvino (bfloat16 on a CPU with AVX512-BF16 or AMX)')
    if args.submit and settings.DATASET not in SERVERS:
        raise ValueError(f'--submit: DATASET={settings.DATASET!r} has no benchmark server; those that have one: '
                         f'{", ".join(SERVERS)}')
    evaluation.eval_dtype(runtime.process_device())


def evaluate_checkpoints(args):
    """What args ask of the checkpoints under the current settings: metrics, masks, server files."""
    rank, world, device = runtime.setup_runtime()  # cudnn.benchmark stays off: every image has its own size
    images = own_images(args) if args.image else None  # a mask over an input stops the run before anything
    if args.all:  # decided before any file is written, so every process has the same list
        paths = [p for p in checkpoint.step_files(settings.MODEL_DIR).values()
                 if not os.path.exists(result_path(p, args.engine))]
        logger.info('%d step_<N>.pth in %s to evaluate', len(paths), settings.MODEL_DIR)
    else:
        paths = [args.onnx or checkpoint.checkpoint_path(args.checkpoint or 'final.pth')]
    # the weights trained at STRIDE run at EVAL_STRIDE: the same convolutions with other strides and dilations
    net = None if args.onnx else network.EMANet(stride=settings.EVAL_STRIDE)
    writer = None  # TensorBoard, opened by the first report
    for folder in (args.save_pred, args.attention, args.submit):
        if folder:
            os.makedirs(folder, exist_ok=True)
    for path in paths:
        if args.onnx:
            forward, meta = evaluation.onnx_net(path, args.engine)
            step, recipe = meta.get('step'), None
        else:
            held = checkpoint.load_checkpoint(net, path)
            step, recipe = held.get('step'), checkpoint.held_recipe(held, checkpoint.plain(settings.effective()))
            del held  # its weights are in net now
            net = runtime.to_device(net.eval(), device)
            forward = evaluation.inference_net(net, device)
        if images:
            segment_images(forward, net, device, rank, world, args, images)
            continue
        confusion, n_images = evaluate(forward, net, device, rank, world, args)
        if args.submit and dist.is_initialized():
            dist.barrier()  # every process's files are written
        if rank == 0:
            # the folder's own curve; an ONNX file's scalars would overlay its checkpoint's
            curve = own_checkpoint(path) and not args.onnx
            if curve and writer is None:
                writer = SummaryWriter(settings.LOG_DIR)
            elif not own_checkpoint(path):
                logger.info('%s is not in MODEL_DIR=%r: its results are kept apart from this folder\'s own, out '
                            'of its TensorBoard curve', path, settings.MODEL_DIR)
            report(confusion, path, step, n_images, writer if curve else None, recipe, args.engine)
            if args.submit and settings.DATASET == 'voc':
                logger.info('wrote %s: upload it to the VOC server', write_archive(args.submit, args.comp))
            elif args.submit:
                logger.info('wrote %d files into %s: zip them for the server', n_images, args.submit)
    if writer is not None:
        writer.close()


if __name__ == '__main__':
    runtime.run_script(main)
