"""A trained EMANet from Python, as torch.hub loads research models (README "From Python"):

    import torch
    model = torch.hub.load('path/to/this/checkout', 'emanet', checkpoint='models/final.pth', source='local')
    mask = model('photo.jpg')                              # H × W int64 class indices, the image's own size
    mask, probabilities = model(image, probabilities=True)  # and classes × H × W float32 softmax scores
    model.classes, model.palette                            # the class names and their (r, g, b), in label order
    Image.fromarray(model.colorize(mask)).save('mask.png')  # H × W × 3 uint8: each class in its colour
    model = torch.hub.load(..., precision='bfloat16')      # bfloat16 on a CPU with AVX512-BF16 or AMX, or a GPU

The checkpoint decides the network: ours hold the settings they were trained with (architecture, classes, MEAN,
STD, the EVAL_* protocol) and their dataset's class names and colours; the authors' files ({'net', 'step'}) do
not, so their class count, EMA_CHANNELS, N_BASES and N_LAYERS are read from the weights' shapes (the stride is
the caller's, 8 by default) and their DATASET is VOC, which the authors trained on. A file without class names
(the authors', ours before they held them) takes those of its DATASET where that has them for its class count,
and says so; else they are class_0, class_1, ... in the VOC colour map, with a warning. A state_dict saved from
DDP (`module.` keys) loads; another network's weights are an error naming the file.

An image is a path (read as a viewer shows it, as `eval.py --image` does), a PIL image of any mode or a numpy
array (H × W × 3 uint8 RGB, H × W grey; uint16 and floats by their range): every form goes through
dataset.read_photo, so a PIL image opened from a file gives the mask that its path gives. It is segmented with
eval.py's protocol: EVAL_SCALES, EVAL_FLIP and EVAL_WINDOW of the checkpoint, or the caller's scales=, flip=
(False turns the checkpoint's flip off), window= (0: whole images). It computes in float32 (precision='float32',
the default, as eval.py's protocol) or in bfloat16 (precision='bfloat16': eval.py's EVAL_AMP = True, refused where
the device has no native bfloat16); `model.precision` and a log line say which.

Settings are module globals (settings.py): the checkpoint's are applied while the network is built and while
an image is segmented, and the previous values are put back afterwards, so a caller's own use of settings (an
experiment of this checkout in the same process) sees no change. Two models in one process each run under their
own settings; calls from several threads at once would mix them.

A caller's own module named like one of this checkout's (an experiment's settings.py, a dataset.py of its own),
imported before or after torch.hub.load, stays the caller's: `project_modules` imports this checkout's in their
place and then gives sys.modules back as it was. The project's modules import one another at their top only, so
each keeps the others it imported whatever sys.modules holds later.
"""
import importlib
import os
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT_MODULES = ('settings', 'dataset', 'network', 'runtime', 'checkpoint', 'evaluation')  # what hubconf runs


def project_modules(keep_new):
    """This checkout's PROJECT_MODULES, in that order: those the caller imported from here, else imported anew
    from here, while a module of the same name that the caller has from elsewhere is out of sys.modules; then
    sys.modules holds the caller's modules of these names again, and of the others this checkout's only where
    keep_new (where the caller's own import of them would find the same files; else a later one must find its
    own)."""
    callers = {name: sys.modules.get(name) for name in PROJECT_MODULES}
    for name, module in callers.items():
        if module is not None and os.path.dirname(os.path.abspath(getattr(module, '__file__', None) or '')) != HERE:
            del sys.modules[name]
    sys.path.insert(0, HERE)
    try:
        return tuple(importlib.import_module(name) for name in PROJECT_MODULES)
    finally:
        sys.path.remove(HERE)
        for name, module in callers.items():
            if module is not None:
                sys.modules[name] = module
            elif not keep_new:
                sys.modules.pop(name, None)


# `import hubconf` from a folder on the caller's path (this checkout's scripts, its tests) keeps the modules it
# imports, as the caller's own imports would give the same files: one `checkpoint`, one CheckpointError. Loaded
# by torch.hub.load (no sys.modules entry of its own) it keeps none: the caller's folder may have its own.
settings, dataset, network, runtime, _checkpoint, evaluation = project_modules(
    keep_new=vars(sys.modules.get(__name__, sys)) is globals())
CheckpointError, load_state, read_checkpoint = (_checkpoint.CheckpointError, _checkpoint.load_state,
                                                _checkpoint.read_checkpoint)  # emanet's argument is `checkpoint`

dependencies = ['torch', 'numpy', 'PIL', 'scipy']

AUTHORS_DEPTHS = {6: 50, 23: 101, 36: 152}  # blocks of layer3 (extractor.6) → N_LAYERS of the authors' ResNets


def authors_settings(state, stride, path):
    """The settings an authors' state dict (no settings stored) was trained with, from its shapes; a state dict
    without their keys, or of a depth they did not release, is a CheckpointError naming path."""
    missing = [key for key in ('fc2.weight', 'fc0.conv.weight', 'emau.mu') if key not in state]
    if missing:
        raise CheckpointError(f'{path} holds no settings and is no EMANet state_dict (it has no key '
                              f'{missing[0]}): expected a checkpoint of this code, or the authors\' '
                              f'{{"net": state_dict, "step": N}} files')
    blocks = {key.split('.')[2] for key in state if key.startswith('extractor.6.')}  # layer3's blocks
    if len(blocks) not in AUTHORS_DEPTHS:
        raise CheckpointError(
            f'{path}: its layer3 (extractor.6) has {len(blocks)} blocks, but the ResNets the authors released have '
            f'{", ".join(f"{count} (ResNet-{depth})" for count, depth in AUTHORS_DEPTHS.items())}')
    return {'N_CLASSES': state['fc2.weight'].shape[0], 'EMA_CHANNELS': state['fc0.conv.weight'].shape[0],
            'N_BASES': state['emau.mu'].shape[-1], 'N_LAYERS': AUTHORS_DEPTHS[len(blocks)], 'DATASET': 'voc',
            'STRIDE': stride or 8, 'EVAL_STRIDE': None}


def stored_settings(ckpt, stride, path):
    """The settings a checkpoint runs under: its own (lists back to tuples), or authors_settings."""
    if 'settings' not in ckpt:
        return authors_settings(ckpt['net'], stride, path)
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in ckpt['settings'].items()
              if hasattr(settings, name)}
    return {**values, **({'EVAL_STRIDE': stride} if stride else {})}


PRECISIONS = ('float32', 'bfloat16')  # emanet(precision=...)


def checkpoint_classes(ckpt, path):
    """(names, [(r, g, b)]) of a checkpoint's classes, run under its settings: its own; in a file without them,
    those of its DATASET where that has them for N_CLASSES, said in the log (not for 'folder': its DATA_ROOT's
    files may have changed since); else class_<k> in the VOC colour map, with a warning."""
    if 'classes' in ckpt:
        return list(ckpt['classes']), [tuple(rgb) for rgb in ckpt['palette']]
    names = None
    if dataset.DATASETS.get(settings.DATASET, {}).get('classes') is not None:
        try:
            names = list(dataset.current()['classes'])
        except ValueError:  # N_CLASSES is not the dataset's class count
            pass
    if names is None:
        names = [f'class_{k}' for k in range(settings.N_CLASSES)]
        warnings.warn(f'{path} holds no class names, and DATASET={settings.DATASET!r} none for its '
                      f'{settings.N_CLASSES} classes: they are named class_0 .. class_{settings.N_CLASSES - 1}',
                      stacklevel=3)
        return names, dataset.class_colours(dataset.voc_palette())
    settings.logger.info('%s holds no class names: those of DATASET=%r', path, settings.DATASET)
    return names, dataset.class_colours()


class Model:
    """A trained EMANet (`net`, in eval mode on `device`), what `evaluation.predict` runs of it (`forward`: on the
    CPU its frozen graph, made once), the settings it runs under (`settings`), the precision it computes in
    (`precision`: 'float32' or 'bfloat16'), and its classes: `classes` (names in label order) and `palette`
    ((r, g, b) of each)."""

    def __init__(self, net, forward, values, device, precision, classes, palette):
        self.net, self.forward, self.settings, self.device = net, forward, values, device
        self.precision, self.classes, self.palette = precision, classes, palette

    def __call__(self, image, probabilities=False):
        """H × W int64 class indices of image (a path, a PIL image or a numpy array: dataset.read_photo) at its
        own size; with probabilities, (indices, classes × H × W float32 scores)."""
        with settings.applied(self.settings):
            image = dataset.read_photo(image)
            img = runtime.to_device(dataset.image_tensor(image), self.device)
            scores = evaluation.predict(self.forward, img)[0]
            scores = scores[:, :image.height, :image.width].cpu()  # classes × H × W
        mask = scores.argmax(dim=0).numpy()
        return (mask, scores.numpy()) if probabilities else mask

    def colorize(self, mask):
        """H × W × 3 uint8 of a mask of this model's classes (H × W indices): each class in its `palette` colour."""
        return np.asarray(self.palette, np.uint8)[mask]


def emanet(checkpoint, stride=None, scales=None, flip=None, window=None, device=None, precision='float32'):
    """The Model of a checkpoint file: stride (8 or 16) the output stride at test time (the authors' files: also
    the one they were trained at, 8 by default); scales, flip, window replace the checkpoint's EVAL_SCALES,
    EVAL_FLIP, EVAL_WINDOW (window 0: whole images); device: 'cuda' when there is one, else 'cpu'; precision:
    'float32' or 'bfloat16' (a CPU with native bfloat16, or a GPU that computes it: a ValueError elsewhere)."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision={precision!r}: must be one of {", ".join(map(repr, PRECISIONS))}')
    path = checkpoint
    if stride not in (None, 8, 16):
        raise ValueError(f'stride={stride!r}: the output stride is 8 or 16')
    ckpt = read_checkpoint(path)
    values = stored_settings(ckpt, stride, path)
    if scales is not None:
        values['EVAL_SCALES'] = tuple(scales)
    if flip is not None:
        values['EVAL_FLIP'] = flip
    if window is not None:
        values['EVAL_WINDOW'] = window or None
    values.update(EVAL_AMP=precision == 'bfloat16', AMP=True)  # on CUDA EVAL_AMP takes what AMP = True trains in
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    with settings.applied(values):
        try:
            dtype = evaluation.eval_dtype(device)
        except ValueError as error:  # a CPU without native bfloat16
            raise ValueError(f"precision='bfloat16' (eval.py's EVAL_AMP): {error}; or precision='float32'") from None
        if dtype not in (None, torch.bfloat16):  # a GPU below compute capability 8
            raise ValueError(f"precision='bfloat16': {device} has no bfloat16 in hardware (it would take {dtype}); "
                             f"use precision='float32'")
        classes, palette = checkpoint_classes(ckpt, path)
        net = network.EMANet(stride=dataset.output_stride())
        load_state(net, ckpt['net'], path)
        net = net.eval().to(device)
        settings.logger.info('EMANet of %s on %s in %s', path, device, precision)
        return Model(net, evaluation.inference_net(net, device), values, device, precision, classes, palette)
