"""A trained EMANet from Python, as torch.hub loads research models (README "From Python"):

    import torch
    model = torch.hub.load('path/to/this/checkout', 'emanet', checkpoint='models/final.pth', source='local')
    mask = model('photo.jpg')                              # H × W int64 class indices, the image's own size
    mask, probabilities = model(image, probabilities=True)  # and classes × H × W float32 softmax scores

The checkpoint decides the network: ours hold the settings they were trained with (architecture, classes, MEAN,
STD, the EVAL_* protocol); the authors' files ({'net', 'step'}) do not, so their class count, EMA_CHANNELS,
N_BASES and N_LAYERS are read from the weights' shapes (the stride is the caller's, 8 by default). An image is a
path (read as a viewer shows it, as `eval.py --image` does), a PIL image or an H × W × 3 uint8 array, and is
segmented with eval.py's protocol: EVAL_SCALES, EVAL_FLIP and EVAL_WINDOW of the checkpoint, or the caller's
scales=, flip=, window=.

Settings are module globals (settings.py): the checkpoint's are applied while the network is built and while
an image is segmented, and the previous values are put back afterwards, so a caller's own use of settings (an
experiment of this checkout in the same process) sees no change. Two models in one process each run under their
own settings; calls from several threads at once would mix them.
"""
import os

import numpy as np
import torch
from PIL import Image

import dataset
import evaluation
import network
import runtime
import settings
from checkpoint import load_state, read_checkpoint

dependencies = ['torch', 'numpy', 'PIL', 'scipy']

HERE = os.path.dirname(os.path.abspath(__file__))
for _module in (dataset, evaluation, network, runtime, settings):
    if os.path.dirname(os.path.abspath(_module.__file__)) != HERE:  # the caller's own module of the same name
        raise ImportError(f'hubconf.py of {HERE} imported {_module.__name__} from {_module.__file__}: a module of '
                          f'that name was imported first in this process; load the model in a fresh one')


def authors_settings(state, stride):
    """The settings an authors' state dict (no settings stored) was trained with, from its shapes."""
    blocks = {key.split('.')[2] for key in state if key.startswith('extractor.6.')}  # layer3's blocks
    return {'N_CLASSES': state['fc2.weight'].shape[0], 'EMA_CHANNELS': state['fc0.conv.weight'].shape[0],
            'N_BASES': state['emau.mu'].shape[-1], 'N_LAYERS': {6: 50, 23: 101, 36: 152}[len(blocks)],
            'STRIDE': stride or 8, 'EVAL_STRIDE': None}


def stored_settings(ckpt, stride):
    """The settings a checkpoint runs under: its own (lists back to tuples), or authors_settings."""
    if 'settings' not in ckpt:
        return authors_settings(ckpt['net'], stride)
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in ckpt['settings'].items()
              if hasattr(settings, name)}
    return {**values, **({'EVAL_STRIDE': stride} if stride else {})}


class Model:
    """A trained EMANet (`net`, in eval mode on `device`), what `evaluation.predict` runs of it (`forward`: on the
    CPU its frozen graph, made once) and the settings it runs under (`settings`)."""

    def __init__(self, net, forward, values, device):
        self.net, self.forward, self.settings, self.device = net, forward, values, device

    def __call__(self, image, probabilities=False):
        """H × W int64 class indices of image (a path, a PIL image or an H × W × 3 uint8 array) at its own size;
        with probabilities, (indices, classes × H × W float32 scores)."""
        with settings.applied(self.settings):
            if isinstance(image, (str, os.PathLike)):
                image = dataset.read_photo(image)
            elif isinstance(image, np.ndarray):
                image = Image.fromarray(image)
            image = image if image.mode == 'RGB' else image.convert('RGB')
            img = runtime.to_device(dataset.image_tensor(image), self.device)
            scores = evaluation.predict(self.forward, img)[0]
            scores = scores[:, :image.height, :image.width].cpu()  # classes × H × W
        mask = scores.argmax(dim=0).numpy()
        return (mask, scores.numpy()) if probabilities else mask


def emanet(checkpoint, stride=None, scales=None, flip=None, window=None, device=None):
    """The Model of a checkpoint file: stride (8 or 16) the output stride
    at test time (the authors' files: also the one they were trained at, 8 by default); scales, flip, window
    replace the checkpoint's EVAL_SCALES, EVAL_FLIP, EVAL_WINDOW; device: 'cuda' when there is one, else 'cpu'."""
    path = checkpoint
    ckpt = read_checkpoint(path)
    values = stored_settings(ckpt, stride)
    for name, value in (('EVAL_SCALES', scales), ('EVAL_FLIP', flip), ('EVAL_WINDOW', window)):
        if value is not None:
            values[name] = tuple(value) if name == 'EVAL_SCALES' else value
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    with settings.applied(values):
        net = network.EMANet(stride=dataset.output_stride())
        load_state(net, ckpt['net'], path)
        net = net.eval().to(device)
        return Model(net, evaluation.inference_net(net, device), values, device)
