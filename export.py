"""Exports an EMANet checkpoint to ONNX and checks the file with onnxruntime against PyTorch.

    python export.py                              # MODEL_DIR/final.pth → MODEL_DIR/final.onnx
    python export.py step_10000.pth               # a bare name is looked up in MODEL_DIR, as eval.py does
    python export.py path/to/EMANet101.pth --out emanet101.onnx
    python eval.py --onnx models/final.onnx       # evaluate (or --image ...) with onnxruntime
    python eval.py --onnx models/final.onnx --engine openvino    # or with OpenVINO (bfloat16: --set EVAL_AMP=True)

The network is this folder's settings' (N_CLASSES, N_LAYERS, EMA_CHANNELS, N_BASES) at EVAL_STRIDE with the
EVAL_STAGE_NUM EM iterations unrolled, in float32. Input `img`: N × 3 × H × W float32, RGB scaled to [0, 1] and
normalised with MEAN and STD; H and W should be k·stride + 1 (pad bottom/right with 0, as eval.py does) so that
the features align with the output stride. Output `logits`: N × N_CLASSES × H × W. N, H and W are dynamic.
The file's metadata (metadata_props, JSON values) carries `padding`, `step`, `dataset`, `checkpoint` and every
setting that shapes the graph or what its input and output mean: `n_classes`, `n_layers`, `stride`,
`eval_stage_num`, `n_bases`, `ema_channels`, `em_norm`, `mean`, `std`, `classes`. eval.py --onnx checks each
against its folder's settings and refuses a file that disagrees, naming the setting.

After writing, the file runs with onnxruntime on a random input of another size and batch than the traced
one; a maximum logit difference to PyTorch above MAX_DIFFERENCE is an error and no file is left behind.
"""
import argparse
import json
import os

import numpy as np
import torch

import checkpoint
import dataset
import evaluation
import network
import runtime
import settings

logger = settings.logger
MAX_DIFFERENCE = 1e-3  # largest logit difference to PyTorch accepted (measured: ~2e-5 at 513 × 513)


def check_size(k):
    """A test-time input size, k·stride + 1."""
    return k * dataset.output_stride() + 1


def metadata(step, source):
    """What a consumer needs to feed the file and read its output, and every setting that shapes the graph
    (evaluation.graph_settings, which eval.py --onnx checks against its folder's), as JSON strings."""
    stride = dataset.output_stride()
    values = {key: value for key, _, value in evaluation.graph_settings()}
    values.update(padding=f'pad H and W bottom/right with 0 (after normalising) to k*{stride}+1', step=step,
                  dataset=settings.DATASET, checkpoint=source)
    return {key: json.dumps(value) for key, value in values.items()}


def max_difference(net, path, batch, height, width):
    """Largest |onnxruntime − PyTorch| logit on a random batch × 3 × height × width input."""
    img = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = net(img).numpy()
    logits = runtime.onnx_session(path).run(['logits'], {'img': img.numpy()})[0]
    return float(np.abs(logits - expected).max())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', nargs='?', default='final.pth',
                        help='checkpoint file; a bare name is looked up in MODEL_DIR (default: final.pth)')
    parser.add_argument('--out', metavar='FILE.onnx',
                        help='the ONNX file (default: the checkpoint\'s path with .onnx for .pth)')
    return parser.parse_args()


def main():
    args = parse_args()
    settings.warn_unread_settings()
    path = checkpoint.checkpoint_path(args.checkpoint)
    net = network.EMANet(stride=settings.EVAL_STRIDE)
    step = checkpoint.load_checkpoint(net, path).get('step')
    net.eval()
    out = args.out or os.path.splitext(path)[0] + '.onnx'
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    tmp = f'{out}.tmp{os.getpid()}'
    try:
        runtime.export_onnx(net, tmp, metadata(step, path))
        difference = max_difference(net, tmp, 1, check_size(6), check_size(10))
        print(f'onnxruntime against PyTorch on 1 x 3 x {check_size(6)} x {check_size(10)}: '
              f'max logit difference {difference:.2e}')
        if not difference <= MAX_DIFFERENCE:
            raise ValueError(f'{out}: onnxruntime differs from PyTorch by {difference:.2e} > {MAX_DIFFERENCE} '
                             f'in the logits; the file was not written')
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info('wrote %s (step %s, stride %d)', out, step, dataset.output_stride())


if __name__ == '__main__':
    runtime.run_script(main)
