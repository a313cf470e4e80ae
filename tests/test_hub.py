"""The model from Python (hubconf.py): the classes and colours a checkpoint carries, every input form read as its
file is, other layouts of state dicts, the authors' depths, the caller's overrides, and a caller's own modules of
the same names around torch.hub.load. The checkpoint is an untrained EMANet-50 whose class count, EMA_CHANNELS
and N_BASES differ from each other (a wrong axis shows), saved by checkpoint.save_checkpoint for a 'folder'
dataset; its scores differ wherever its input does, which is what these tests compare."""
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoint
import dataset
import hubconf
import network
import settings
from harness import ROOT, run_script

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module's checkpoint and model once

CLASSES = ['sky', 'road', 'car', 'tree', 'sign']
COLOURS = [(70, 130, 180), (128, 64, 128), (0, 0, 142), (107, 142, 35), (220, 220, 0)]
SHAPE = {'N_LAYERS': 50, 'EMA_CHANNELS': 48, 'N_BASES': 24}  # with 5 classes: no two dimensions alike


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """MODEL_DIR/final.pth of a 'folder' dataset of CLASSES in COLOURS, of SHAPE."""
    folder = tmp_path_factory.mktemp('hub')
    (folder / 'data').mkdir()
    (folder / 'data' / 'classes.txt').write_text(''.join(name + '\n' for name in CLASSES))
    (folder / 'data' / 'palette.txt').write_text(''.join(' '.join(map(str, rgb)) + '\n' for rgb in COLOURS))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SHAPE, 'DATASET': 'folder', 'DATA_ROOT': str(folder / 'data'), 'N_CLASSES': 5,
                            'MODEL_DIR': str(folder), 'PRETRAINED': None}.items():
            patch.setattr(settings, name, value)
        torch.manual_seed(0)
        net = network.EMANet()
        checkpoint.save_checkpoint('final.pth', net, torch.optim.SGD(net.parameters(), lr=0.1),
                                   torch.amp.GradScaler('cpu', enabled=False), 7)
    return folder / 'final.pth'


@pytest.fixture(scope='module')
def model(saved):
    return hubconf.emanet(str(saved))


def photos(folder):
    """{file name: whether its pixels as an array hold all it shows} of one photo of each mode a user may have."""
    folder.mkdir(exist_ok=True)
    y, x = np.mgrid[:30, :40]
    rgb = np.stack([x * 6, y * 8, (x + y) * 3], -1).astype(np.uint8)  # 30 × 40, every pixel its own
    exif = Image.Exif()
    exif[dataset.EXIF_ORIENTATION] = 6
    Image.fromarray(np.rot90(rgb).copy()).save(folder / 'phone.jpg', quality=95, exif=exif)  # shown 40 × 30
    Image.fromarray(rgb).save(folder / 'rgb.png')
    Image.fromarray((x * 1600 + y).astype(np.uint16)).save(folder / 'deep.png')  # I;16
    Image.fromarray((x * 1600 + y).astype(np.int32)).save(folder / 'int.tif')  # I, 16-bit range
    Image.fromarray((x / 39).astype(np.float32)).save(folder / 'float.tif')  # F in [0, 1]
    Image.fromarray(np.dstack([rgb, (y * 8).astype(np.uint8)])).save(folder / 'rgba.png')
    Image.fromarray(rgb).convert('CMYK').save(folder / 'cmyk.jpg', quality=95)
    Image.fromarray(rgb).quantize(16).save(folder / 'palette.png', transparency=3)
    Image.fromarray((x + y) % 3 == 0).save(folder / 'bits.png')  # mode 1
    return {'phone.jpg': False, 'rgb.png': True, 'deep.png': True, 'int.tif': True, 'float.tif': True,
            'rgba.png': True, 'cmyk.jpg': False, 'palette.png': False, 'bits.png': True}


def test_the_model_knows_its_classes_and_their_colours(saved, model):
    assert torch.load(saved, weights_only=True)['classes'] == CLASSES
    assert torch.load(saved, weights_only=True)['palette'] == [list(rgb) for rgb in COLOURS]
    assert model.classes == CLASSES and model.palette == COLOURS
    mask = np.array([[0, 1, 2], [3, 4, 0]])
    np.testing.assert_array_equal(model.colorize(mask), np.array(COLOURS, np.uint8)[mask])
    assert {name: model.settings[name] for name in SHAPE} == SHAPE and model.settings['N_CLASSES'] == 5


def test_files_without_class_names_take_their_datasets_or_say_so(tmp_path, caplog, monkeypatch):
    """The authors' 21-class files are VOC's; an older file of ours names its DATASET; 'folder' (its names in
    DATA_ROOT's files, which may have changed since) and a class count of no dataset get class_<k>, warned."""
    monkeypatch.setattr(settings.logger, 'handlers', [*settings.logger.handlers, caplog.handler])
    cases = [({'N_CLASSES': 21, 'DATASET': 'voc'}, list(dataset.VOC_CLASSES), dataset.voc_palette()),
             ({'N_CLASSES': 59, 'DATASET': 'context'}, list(dataset.CONTEXT_CLASSES[1:]), dataset.voc_palette()[3:]),
             ({'N_CLASSES': 19, 'DATASET': 'cityscapes'}, list(dataset.CITYSCAPES_CLASSES),
              [c for rgb in dataset.CITYSCAPES_PALETTE for c in rgb])]
    for values, names, colours in cases:
        with hubconf.settings.applied(values):
            assert hubconf.checkpoint_classes({'net': {}}, 'old.pth') == \
                (names, [tuple(colours[3 * k:3 * k + 3]) for k in range(values['N_CLASSES'])])
        assert f"old.pth holds no class names: those of DATASET={values['DATASET']!r}" in caplog.text
    for values in ({'N_CLASSES': 5, 'DATASET': 'voc'}, {'N_CLASSES': 3, 'DATASET': 'folder'}):
        with hubconf.settings.applied(values), pytest.warns(UserWarning, match=rf"old\.pth holds no class names, and DATASET="
                                                                       rf"'{values['DATASET']}' none for its "
                                                                       rf"{values['N_CLASSES']} classes"):
            names, palette = hubconf.checkpoint_classes({'net': {}}, 'old.pth')
        assert names == [f'class_{k}' for k in range(values['N_CLASSES'])]
        assert palette == [tuple(dataset.voc_palette()[3 * k:3 * k + 3]) for k in range(values['N_CLASSES'])]


def test_every_input_form_gives_the_mask_its_file_gives(model, tmp_path):
    """A path, the PIL image opened from it (EXIF orientation, 16-bit, 32-bit integers and floats, RGBA, CMYK, a
    palette with transparency, 1 bit) and its pixels as an array: the same scores."""
    for name, as_array in photos(tmp_path).items():
        mask, scores = model(str(tmp_path / name), probabilities=True)
        assert mask.shape == (30, 40), name
        with Image.open(tmp_path / name) as image:
            np.testing.assert_array_equal(model(image, probabilities=True)[1], scores, err_msg=f'{name}: PIL')
            if as_array:
                np.testing.assert_array_equal(model(np.asarray(image), probabilities=True)[1], scores,
                                              err_msg=f'{name}: {np.asarray(image).dtype} array')
    with pytest.raises(ValueError, match=r'the float64 array has F values -0\.5\.\.1: neither .* nor 0\.\.1 or '
                                         r'0\.\.255 \(floats\)'):
        model(np.full((30, 40), -0.5).clip(-0.5, 1) + np.eye(30, 40) * 1.5)
    with pytest.raises(ValueError, match=r'an array of shape \(30, 40, 2\) and dtype uint8 is no image: give H × W × '
                                         r'3'):
        model(np.zeros((30, 40, 2), np.uint8))


def test_a_ddp_state_dict_loads_and_another_networks_is_refused_naming_the_file(saved, model, tmp_path):
    state = torch.load(saved, weights_only=True)['net']
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    expected = model(image, probabilities=True)[1]
    wrapped = {f'module.{key}': value for key, value in state.items()}  # torch.save(ddp_net.state_dict(), ...)
    torch.save(wrapped, tmp_path / 'ddp.pth')
    hub = hubconf.emanet(str(tmp_path / 'ddp.pth'))  # no settings: the shapes say them
    assert {name: hub.settings[name] for name in SHAPE} == SHAPE and hub.settings['N_CLASSES'] == 5
    np.testing.assert_array_equal(hub(image, probabilities=True)[1], expected)
    torch.save({'net': wrapped, 'step': 7}, tmp_path / 'ddp_net.pth')
    with hubconf.settings.applied({**SHAPE, 'N_CLASSES': 5}):  # eval.py's load
        net = network.EMANet()
        assert checkpoint.load_checkpoint(net, tmp_path / 'ddp_net.pth')['step'] == 7
    assert all(torch.equal(value, state[key]) for key, value in net.state_dict().items())
    other = tmp_path / 'other.pth'  # another project's {'net': ...}
    torch.save({'net': {'backbone.conv1.weight': torch.zeros(8, 3, 3, 3), 'head.weight': torch.zeros(2, 8)}}, other)
    with hubconf.settings.applied({**SHAPE, 'N_CLASSES': 5}), pytest.raises(
            checkpoint.MismatchError, match=rf'{other} holds the weights of another network: none of its 2 keys '
                                            rf'\(backbone\.conv1\.weight, head\.weight, \.\.\.\) is one of this '
                                            rf'EMANet\'s \(extractor\.0\.0\.weight, '):
        checkpoint.load_checkpoint(network.EMANet(), other)
    with pytest.raises(checkpoint.CheckpointError, match=rf'{other} holds no settings and is no EMANet state_dict '
                                                         rf'\(it has no key fc2\.weight\): expected a checkpoint of '
                                                         rf'this code'):
        hubconf.emanet(str(other))


@pytest.mark.parametrize('prefix', ['_orig_mod.module.', 'module._orig_mod.', 'module.', '_orig_mod.'])
def test_wrappers_prefixes_in_either_order_come_off(tmp_path, prefix):
    """torch.compile(DDP(net)).state_dict() has _orig_mod.module. keys (the order PyTorch's docs recommend),
    DDP(torch.compile(net)) module._orig_mod.: both are this network's, whichever wrapper came last."""
    state = {'fc2.weight': torch.ones(3, 2, 1, 1), 'fc2.bias': torch.zeros(3)}
    torch.save({'net': {prefix + key: value for key, value in state.items()}, 'step': 1}, tmp_path / 'wrapped.pth')
    assert list(checkpoint.read_checkpoint(tmp_path / 'wrapped.pth')['net']) == list(state)


def test_a_compiled_ddp_state_dict_loads(saved, model, tmp_path):
    state = torch.load(saved, weights_only=True)
    state['net'] = {f'_orig_mod.module.{key}': value for key, value in state['net'].items()}
    torch.save(state, tmp_path / 'compiled_ddp.pth')
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(hubconf.emanet(str(tmp_path / 'compiled_ddp.pth'))(image), model(image))


@pytest.mark.parametrize('depth', [50, 101, 152])
def test_the_authors_depths_entry_by_entry(monkeypatch, depth):
    for name, value in {**SHAPE, 'N_LAYERS': depth}.items():
        monkeypatch.setattr(settings, name, value)
    with torch.device('meta'):  # shapes only: no memory, no time
        state = network.EMANet(5, depth).state_dict()
    assert hubconf.authors_settings(state, None, 'x.pth') == {
        'N_CLASSES': 5, 'EMA_CHANNELS': 48, 'N_BASES': 24, 'N_LAYERS': depth, 'DATASET': 'voc', 'STRIDE': 8,
        'EVAL_STRIDE': None}
    assert hubconf.authors_settings(state, 16, 'x.pth')['STRIDE'] == 16
    if depth == 50:  # a block count of no released depth: an error, not a KeyError
        fewer = {key: value for key, value in state.items() if not key.startswith('extractor.6.5.')}
        with pytest.raises(checkpoint.CheckpointError, match=r'x\.pth: its layer3 \(extractor\.6\) has 5 blocks, but '
                                                             r'the ResNets the authors released have 6 \(ResNet-50\), '
                                                             r'23 \(ResNet-101\), 36 \(ResNet-152\)'):
            hubconf.authors_settings(fewer, None, 'x.pth')


def test_the_callers_overrides_falsy_ones_too(saved, model, tmp_path):
    """A checkpoint evaluated with flip, two scales and a window: flip=False, scales=(1.0,) and window=0 give the
    whole-image single-scale protocol, whose scores are the plain checkpoint's; the truthy ones give the other."""
    ckpt = torch.load(saved, weights_only=True)
    protocol = {'EVAL_FLIP': True, 'EVAL_SCALES': [0.75, 1.0], 'EVAL_WINDOW': 33}
    torch.save({**ckpt, 'settings': {**ckpt['settings'], **protocol}}, tmp_path / 'flipped.pth')
    assert {name: hubconf.stored_settings({**ckpt, 'settings': {**ckpt['settings'], **protocol}}, None, 'x')[name]
            for name in protocol} == {**protocol, 'EVAL_SCALES': (0.75, 1.0)}
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    plain = hubconf.emanet(str(tmp_path / 'flipped.pth'), flip=False, scales=(1.0,), window=0)
    assert {name: plain.settings[name] for name in protocol} == {'EVAL_FLIP': False, 'EVAL_SCALES': (1.0,),
                                                                 'EVAL_WINDOW': None}
    np.testing.assert_array_equal(plain(image, probabilities=True)[1], model(image, probabilities=True)[1])
    flipped = hubconf.emanet(str(saved), flip=True, scales=(0.75, 1.0), window=33)
    assert {name: flipped.settings[name] for name in protocol} == {**protocol, 'EVAL_SCALES': (0.75, 1.0)}
    assert not np.allclose(flipped(image, probabilities=True)[1], model(image, probabilities=True)[1])
    for stride in (0, 12):
        with pytest.raises(ValueError, match=rf'stride={stride}: the output stride is 8 or 16'):
            hubconf.emanet(str(saved), stride=stride)


CALLER = '''
import json, sys
import numpy as np, torch
import settings, dataset                          # the caller's own, imported first
model = torch.hub.load({root!r}, 'emanet', checkpoint={checkpoint!r}, source='local')
scores = model(np.load({image!r}), probabilities=True)[1]
import network                                    # the caller's own, imported after
np.save({scores!r}, scores)
print(json.dumps({{'mine': [settings.MINE, dataset.MINE, network.MINE], 'classes': model.classes,
                  'left': sorted(set(sys.modules) & {{'runtime', 'checkpoint', 'evaluation'}})}}))
'''


def test_torch_hub_load_leaves_the_callers_own_modules_alone(saved, model, tmp_path):
    """A folder with the user's own settings.py, dataset.py and network.py, imported before torch.hub.load (and
    network after): each stays the user's, none of this checkout's modules is left in sys.modules, and the model
    gives the scores it gives here."""
    for name in ('settings', 'dataset', 'network'):
        (tmp_path / f'{name}.py').write_text(f'MINE = "my {name}"\n')
    image = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    np.save(tmp_path / 'image.npy', image)
    code = CALLER.format(root=ROOT, checkpoint=str(saved), image=str(tmp_path / 'image.npy'),
                         scores=str(tmp_path / 'scores.npy'))
    done = run_script(tmp_path, '-c', textwrap.dedent(code))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {'mine': ['my settings', 'my dataset', 'my network'], 'classes': CLASSES, 'left': []}
    np.testing.assert_array_equal(np.load(tmp_path / 'scores.npy'), model(image, probabilities=True)[1])
    # imported as a module of this checkout, hubconf's modules are the ones the caller's own imports give
    done = run_script(ROOT, '-c', 'import hubconf, checkpoint; assert hubconf.CheckpointError is '
                                  'checkpoint.CheckpointError and hubconf.settings is __import__("settings")')
    assert done.returncode == 0, done.stderr
