"""Deployment: export.py to ONNX, eval.py --onnx through onnxruntime and OpenVINO, bfloat16 inference where the CPU
computes it (PyTorch, OpenVINO, the hub model) against float32, and your own images as a viewer shows them."""
import json
import os
import re
import threading

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import checkpoint
import dataset
import eval
import evaluation
import export
import hubconf
import network
import runtime
import settings
from harness import DEMO_VAL_IDS, ONE_THREAD, TINY, TWO_PROCESSES, make_experiment, run_script
from test_gpu_paths import log_records, messages

pytestmark = pytest.mark.xdist_group(__name__)  # one worker of pytest -n builds the module fixture once

VAL_IDS = DEMO_VAL_IDS[:2]
NATIVE = runtime.native_bfloat16()  # this machine's CPU: the bfloat16 paths give results, or are refused
NO_NATIVE_BFLOAT16 = 'EVAL_AMP=True evaluates in bfloat16, but this CPU has no native bfloat16'


@pytest.fixture(scope='module')
def trained(tmp_path_factory, demo_data):
    """A tiny experiment trained for 2 steps (models/final.pth) and exported by export.py (models/final.onnx),
    evaluating the demo data's first 2 val images."""
    with open(dataset.list_path('val_deploy', str(demo_data)), 'w') as f:
        f.write(''.join(image_id + '\n' for image_id in VAL_IDS))
    folder = tmp_path_factory.mktemp('deploy') / 'exp'
    make_experiment(folder, demo_data, VAL_SPLIT='val_deploy', ITER_MAX=2, MODEL_DIR='models', LOG_DIR='logdir')
    for script in (('train.py',), ('export.py',)):
        done = run_script(folder, *script)
        assert done.returncode == 0, done.stderr
    assert 'max logit difference' in done.stdout
    return folder


@pytest.fixture
def tiny_settings(monkeypatch, trained):
    """This process's settings as the trained experiment's."""
    for name, value in TINY.items():
        monkeypatch.setattr(settings, name, value)


def trained_net(trained):
    net = network.EMANet()
    checkpoint.load_checkpoint(net, trained / 'models' / 'final.pth')
    return net.eval()


# ---------------------------------------------------------------- export.py

def test_export_matches_pytorch_at_other_sizes_and_batches(trained, tiny_settings):
    net = trained_net(trained)
    path = str(trained / 'models' / 'final.onnx')
    for batch, height, width in ((1, 49, 81), (3, 33, 57)):  # traced: 2 × 65 × 65
        assert export.max_difference(net, path, batch, height, width) < 1e-4


def test_export_metadata(trained):
    model = onnx.load(str(trained / 'models' / 'final.onnx'))
    meta = {prop.key: json.loads(prop.value) for prop in model.metadata_props}
    assert meta['classes'] == list(dataset.VOC_CLASSES) and meta['n_classes'] == 21 and meta['dataset'] == 'voc'
    assert meta['mean'] == [0.485, 0.456, 0.406] and meta['std'] == [0.229, 0.224, 0.225]
    assert meta['stride'] == 8 and 'k*8+1' in meta['padding'] and meta['step'] == 2 and meta['eval_stage_num'] == 3
    assert meta['n_layers'] == 50 and meta['n_bases'] == 64 and meta['em_norm'] == 'l2'
    assert meta['ema_channels'] == TINY['EMA_CHANNELS']
    assert [i.name for i in model.graph.input] == ['img']
    assert [o.name for o in model.graph.output] == ['logits']
    assert [d.dim_param != '' for d in model.graph.input[0].type.tensor_type.shape.dim] == [True, False, True, True]


# ---------------------------------------------------------------- eval.py --onnx

def predictions(folder):
    return np.concatenate([np.array(Image.open(folder / f'{image_id}.png')).ravel() for image_id in VAL_IDS])


def test_eval_onnx_equals_eval_through_each_engine(trained):
    """PyTorch, onnxruntime and OpenVINO (float32, under torchrun: two processes, a thread each) give one result,
    each in its own file that names its engine; OpenVINO in bfloat16, where the CPU computes it, in a file named so
    (elsewhere refused before anything is written), with masks that are float32's within bfloat16's rounding
    (test_bfloat16_inference_is_float32_within_its_rounding_where_the_cpu_computes_it says how far)."""
    runs = {'eval_final.json': ('final.pth',), 'eval_final_onnx.json': ('--onnx', 'models/final.onnx'),
            'eval_final_onnx_openvino.json': (*TWO_PROCESSES, '--onnx', 'models/final.onnx', '--engine', 'openvino')}
    results = {}
    for name, args in runs.items():
        launcher = args[:len(TWO_PROCESSES)] if args[0] == TWO_PROCESSES[0] else ()
        done = run_script(trained, *launcher, 'eval.py', *args[len(launcher):], '--save-pred', name, env=ONE_THREAD)
        assert done.returncode == 0, done.stderr
        with open(trained / 'logdir' / name) as f:
            results[name] = json.load(f)
    pytorch = results['eval_final.json']
    for name, result in results.items():
        assert abs(pytorch['mIoU'] - result['mIoU']) <= 1e-4 and result['step'] == 2 and result['n_images'] == 2
        assert np.abs(np.subtract(pytorch['confusion'], result['confusion'])).sum() <= 10, name
        assert (predictions(trained / name) == predictions(trained / 'eval_final.json')).mean() > 0.999
    assert [(r['engine'], r['precision'], r['protocol']) for r in results.values()] == \
        [('pytorch', 'float32', ''), ('onnxruntime', 'float32', ''), ('openvino', 'float32', '')]
    done = run_script(trained, 'eval.py', '--onnx', 'models/final.onnx', '--engine', 'openvino', '--set',
                      'EVAL_AMP=True', '--save-pred', 'bf16', env=ONE_THREAD)
    bf16 = trained / 'logdir' / 'eval_final_bf16_onnx_openvino.json'
    if not NATIVE:
        assert done.returncode != 0 and NO_NATIVE_BFLOAT16 in done.stderr and 'Traceback' not in done.stderr
        assert not bf16.exists() and not (trained / 'bf16').exists()
        return
    assert done.returncode == 0, done.stderr
    result = json.loads(bf16.read_text())
    assert (result['engine'], result['precision'], result['protocol']) == ('openvino', 'bfloat16', 'bf16')
    assert abs(result['mIoU'] - pytorch['mIoU']) <= 0.003
    assert (predictions(trained / 'bf16') == predictions(trained / 'eval_final.json')).mean() >= 0.95  # see below


@pytest.mark.parametrize('deployed', ['frozen', 'onnxruntime', 'openvino'])
def test_deployed_nets_predict_as_pytorch_with_scales_flip_and_windows(deployed, trained, tiny_settings, monkeypatch):
    """What eval.py runs on the CPU (the frozen TorchScript graph) and with --onnx (either engine, in float32:
    OpenVINO told so), against the eager EMANet."""
    net = trained_net(trained)
    if deployed != 'frozen':
        other, meta = evaluation.onnx_net(str(trained / 'models' / 'final.onnx'), deployed)
        assert meta['step'] == 2
    else:
        other = evaluation.inference_net(net, torch.device('cpu'))
    img = torch.randn(1, 3, 57, 73, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(settings, 'EVAL_SCALES', (0.5, 1.0))
    monkeypatch.setattr(settings, 'EVAL_FLIP', True)
    monkeypatch.setattr(settings, 'EVAL_WINDOW', 49)  # scale 1 in 4 windows; 0.5 (33 × 33) whole, resized
    expected, scores = evaluation.predict(net, img), evaluation.predict(other, img)
    assert scores.shape == expected.shape == (1, 21, 57, 73)
    assert (scores - expected).abs().max() < 1e-5


def test_openvino_leaves_its_threads_where_the_system_puts_them(trained):
    """OpenVINO's CPU plugin pins the threads that infer to the first cores unless told not to: under torchrun
    every process computed on the same ones (two processes of a thread each: both on CPU 0, the other core idle).
    While it infers, no thread of this process may be held to fewer CPUs than the process may use."""
    model = runtime.openvino_model(str(trained / 'models' / 'final.onnx'))
    thread = threading.Thread(target=lambda: [model(np.zeros((1, 3, 65, 65), np.float32)) for _ in range(5)])
    allowed, seen = os.sched_getaffinity(0), []
    thread.start()
    while thread.is_alive():
        for task in os.listdir('/proc/self/task'):
            try:
                seen.append(os.sched_getaffinity(int(task)))
            except OSError:  # a thread that has ended
                pass
    thread.join()
    assert all(cpus == allowed for cpus in seen), [sorted(cpus) for cpus in seen if cpus != allowed][:3]


def val_images(demo_data):
    """The fixture's val images as eval.py feeds them: 1 × 3 × H' × W' each."""
    return [img[None] for img, _ in dataset.ValDataset(data_root=str(demo_data), split='val_deploy')]


@pytest.mark.parametrize('deployed', ['frozen', 'openvino'])
def test_bfloat16_inference_is_float32_within_its_rounding_where_the_cpu_computes_it(deployed, trained, tiny_settings,
                                                                                     monkeypatch, demo_data):
    """EVAL_AMP = True: PyTorch's frozen graph traced under autocast and OpenVINO's bfloat16 on the demo's val
    images, against the eager float32 EMANet. bfloat16 keeps 8 bits of mantissa, a relative rounding of 2^-9 per
    operation; through ResNet-50's 50-odd layers it comes to about 1% of the logits' range at worst and 0.15% on
    average (measured here on both paths): within 2% and 0.3%. The class of a pixel changes only where float32's
    two best lie closer than that; this fixture's net, trained for 2 steps, has a quarter of its pixels within 1%
    of the range, and 97-98% of them keep their class: at least 95%. (The demo's trained checkpoint: README.)
    Without native bfloat16 both paths are refused."""
    net = trained_net(trained)
    monkeypatch.setattr(settings, 'EVAL_AMP', True)
    if not NATIVE:
        with pytest.raises(ValueError, match=NO_NATIVE_BFLOAT16):
            evaluation.inference_net(net, torch.device('cpu'))
        with pytest.raises(ValueError, match=NO_NATIVE_BFLOAT16):
            evaluation.onnx_net(str(trained / 'models' / 'final.onnx'), 'openvino')
        return
    if deployed == 'openvino':
        bf16, _ = evaluation.onnx_net(str(trained / 'models' / 'final.onnx'), 'openvino')
    else:
        bf16 = evaluation.inference_net(net, torch.device('cpu'))
    agree = []
    for img in val_images(demo_data):
        with torch.inference_mode():
            expected, logits = net(img), bf16(img)
        assert logits.dtype == torch.float32 and logits.shape == expected.shape
        error = (logits - expected).abs() / (expected.max() - expected.min())  # 1 × classes × H' × W'
        assert error.max() <= 0.02 and error.mean() <= 0.003, (error.max(), error.mean())
        agree.append((logits.argmax(dim=1) == expected.argmax(dim=1)).float().mean())
    assert min(agree) >= 0.95, agree


def test_the_hub_model_says_its_precision_and_refuses_bfloat16_where_the_cpu_lacks_it(trained, monkeypatch,
                                                                                      demo_data):
    path = str(trained / 'models' / 'final.pth')
    image = dataset.read_photo(dataset.image_path(VAL_IDS[0], str(demo_data)))
    float32 = hubconf.emanet(path)
    assert float32.precision == 'float32' and not settings.EVAL_AMP
    with pytest.raises(ValueError, match="precision='half': must be one of 'float32', 'bfloat16'"):
        hubconf.emanet(path, precision='half')
    if NATIVE:
        with log_records() as records:
            bf16 = hubconf.emanet(path, precision='bfloat16')
        assert bf16.precision == 'bfloat16' and f'EMANet of {path} on cpu in bfloat16' in messages(records)
        assert (bf16(image) == float32(image)).mean() >= 0.95 and not settings.EVAL_AMP  # see above
    for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):  # as on a CPU without native bfloat16
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    with pytest.raises(ValueError, match=f"precision='bfloat16' \\(eval.py's EVAL_AMP\\): {NO_NATIVE_BFLOAT16}.*"
                                         f"or precision='float32'"):
        hubconf.emanet(path, precision='bfloat16')
    assert not settings.EVAL_AMP  # the caller's settings as they were


def test_frozen_graph_follows_batch_and_size_and_leaves_the_net_alone(trained, tiny_settings):
    net = trained_net(trained)
    weights = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    frozen = runtime.freeze(net)  # traced on 1 × 3 × 33 × 33
    for batch, height, width in ((1, 49, 81), (3, 41, 57)):
        img = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected, logits = net(img), frozen(img)
        assert logits.shape == expected.shape == (batch, 21, height, width)
        assert (logits - expected).abs().max() < 1e-4 * expected.abs().max()
        assert torch.equal(logits.argmax(dim=1), expected.argmax(dim=1))
    for name, tensor in net.state_dict().items():  # BN folded into the frozen graph's copy, not into net
        assert torch.equal(tensor, weights[name]), name


# each setting that shapes the exported graph, changed alone in the folder: (setting, value, metadata key, the
# file's value, the folder's value)
OTHER_GRAPHS = [('N_CLASSES', 5, 'n_classes', 21, 5), ('N_LAYERS', 101, 'n_layers', 50, 101),
                ('EVAL_STRIDE', 16, 'stride', 8, 16), ('STRIDE', 16, 'stride', 8, 16),
                ('EVAL_STAGE_NUM', 1, 'eval_stage_num', 3, 1), ('STAGE_NUM', 2, 'eval_stage_num', 3, 2),
                ('N_BASES', 32, 'n_bases', 64, 32),
                ('EMA_CHANNELS', 256, 'ema_channels', TINY['EMA_CHANNELS'], 256),
                ('EM_NORM', 'none', 'em_norm', 'l2', 'none'), ('MEAN', (0.5, 0.5, 0.5), 'mean', [0.485], [0.5]),
                ('STD', [0.25] * 3, 'std', [0.229], [0.25]),
                ('DATASET', None, 'classes', ['background'], ['sky'])]


@pytest.mark.parametrize('setting, value, key, in_file, in_folder', OTHER_GRAPHS, ids=[g[0] for g in OTHER_GRAPHS])
def test_onnx_file_for_other_settings_is_an_error_naming_the_setting(trained, tiny_settings, monkeypatch, setting,
                                                                     value, key, in_file, in_folder):
    if setting == 'DATASET':  # a dataset of as many classes with other names
        monkeypatch.setitem(dataset.DATASETS, 'voc', dict(dataset.DATASETS['voc'], classes=('sky',) * 21))
    else:
        monkeypatch.setattr(settings, setting, value)
    shown = lambda v: re.escape(str(v)[:-1] if isinstance(v, list) else str(v))  # noqa: E731 (lists: their start)
    with pytest.raises(ValueError, match=f'final.onnx was exported with {key} {shown(in_file)}.* but this folder\'s '
                                         f'settings give {shown(in_folder)}.*{setting}'):
        evaluation.onnx_net(str(trained / 'models' / 'final.onnx'))


def test_onnx_file_without_metadata_is_an_error(trained, tiny_settings):
    model = onnx.load(str(trained / 'models' / 'final.onnx'))
    kept = [prop for prop in model.metadata_props if prop.key != 'n_bases']  # an export.py before n_bases
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(trained / 'older.onnx'))
    with pytest.raises(ValueError, match='older.onnx has no export.py metadata for n_bases'):
        evaluation.onnx_net(str(trained / 'older.onnx'))
    del model.metadata_props[:]
    onnx.save(model, str(trained / 'plain.onnx'))
    with pytest.raises(ValueError, match='plain.onnx has no export.py metadata for n_classes'):
        evaluation.onnx_net(str(trained / 'plain.onnx'))


@pytest.mark.parametrize('engine', evaluation.ENGINES)
def test_an_onnx_file_the_engine_cannot_run_is_an_error_saying_why(trained, tiny_settings, engine):
    """export.py's metadata, but a graph missing a weight: each engine's reason, not where in its sources it was
    raised (OpenVINO's first lines: 'Exception from src/inference/src/cpp/core.cpp:132:')."""
    model = onnx.load(str(trained / 'models' / 'final.onnx'))
    model.graph.initializer.remove(next(w for w in model.graph.initializer if w.name == 'emau.mu'))
    onnx.save(model, str(trained / f'broken_{engine}.onnx'))
    with pytest.raises(ValueError, match=f'broken_{engine}.onnx is not an ONNX file {engine} can run \\(.*emau.mu'):
        evaluation.onnx_net(str(trained / f'broken_{engine}.onnx'), engine)


def test_eval_onnx_on_a_gpu_machine_computes_and_names_the_cpus_precision(trained, monkeypatch):
    """Both engines compute on the CPU, whatever the machine has: on one with a GPU (faked: a V100, whose training
    precision is float16, or float32 with the experiment's AMP = False), eval.py --onnx --engine openvino with
    EVAL_AMP = True computes in OpenVINO's bfloat16 and must name the result so, not by the GPU's precision (before:
    eval_final_onnx_openvino.json or _fp16_, and a GPU set up for nothing). Where the CPU has no native bfloat16,
    float32 under its name. The script runs in a fork of this process, which keeps the fakes."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (7, 0))
    name, precision, protocol = ('eval_final_bf16_onnx_openvino.json', 'bfloat16', 'bf16') if NATIVE else \
        ('eval_final_onnx_openvino.json', 'float32', '')
    (trained / 'logdir' / name).unlink(missing_ok=True)
    done = run_script(trained, 'eval.py', '--onnx', 'models/final.onnx', '--engine', 'openvino', '--set',
                      f'EVAL_AMP={NATIVE}', env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    result = json.loads((trained / 'logdir' / name).read_text())
    assert (result['engine'], result['precision'], result['protocol']) == ('openvino', precision, protocol)


@pytest.mark.parametrize('engine', evaluation.ENGINES)
def test_eval_onnx_refuses_a_file_of_other_em_iterations(trained, engine):
    """The issue's case through eval.py: a file exported at 3 EM iterations, evaluated in a folder set to 1, by
    either engine (the check reads the file's metadata, before the engine loads it)."""
    original = (trained / 'settings.py').read_text()
    try:
        (trained / 'settings.py').write_text(original + 'EVAL_STAGE_NUM = 1\n')
        done = run_script(trained, 'eval.py', '--onnx', 'models/final.onnx', '--engine', engine, env=ONE_THREAD)
    finally:
        (trained / 'settings.py').write_text(original)
    assert done.returncode != 0 and 'Traceback' not in done.stderr
    assert "models/final.onnx was exported with eval_stage_num 3 but this folder's settings give 1 " \
           "(EVAL_STAGE_NUM (None: STAGE_NUM))" in done.stderr
    assert not list((trained / 'logdir').glob('eval_*stages1*'))


# ---------------------------------------------------------------- your own images

MEAN_COLOUR = np.round(255 * np.array(settings.MEAN))
RED, BLUE = np.array([220, 30, 30]), np.array([30, 30, 220])


def upright_photo(height=48, width=64):
    """H × W × 3 uint8: the left half red, the right half blue, as a person should see it."""
    photo = np.empty((height, width, 3), np.uint8)
    photo[:, :width // 2], photo[:, width // 2:] = RED, BLUE
    return photo


def exif_rotated_jpeg(path, photo):
    """A JPEG storing photo turned 90° clockwise, with the EXIF orientation 8 (rotate 90° anticlockwise to show)
    that a phone writes for it."""
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.rot90(photo, -1).copy()).save(path, quality=100, subsampling=0, exif=exif)


def own_images(folder):
    """{file name: the RGB a viewer shows, H × W × 3} of one file of each kind, written into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = upright_photo()
    exif_rotated_jpeg(folder / 'phone.jpg', photo)
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))  # transparent → opaque
    Image.fromarray(np.dstack([photo, alpha])).save(folder / 'rgba.png')
    gray = np.tile(np.arange(48, dtype=np.uint8)[:, None] * 5, (1, 64))
    Image.fromarray(np.dstack([gray, alpha]), 'LA').save(folder / 'la.png')
    palette = Image.fromarray((np.arange(48 * 64) % 3).reshape(48, 64).astype(np.uint8), 'P')
    palette.putpalette([*RED, *BLUE, 0, 200, 0])
    palette.save(folder / 'palette.png')
    palette.save(folder / 'palette_transparent.png', transparency=2)  # green is see-through
    Image.fromarray(gray, 'L').save(folder / 'gray.png')
    gray16 = np.tile(np.arange(64, dtype=np.uint16) * 1000, (48, 1))  # 0 .. 63000 of 65535
    Image.fromarray(gray16).save(folder / 'gray16.png')
    Image.new('CMYK', (64, 48), (0, 255, 255, 64)).save(folder / 'cmyk.jpg', quality=100)
    # every mode by its values, transparency kept through every conversion
    Image.fromarray(gray16).save(folder / 'gray16_transparent.png', transparency=5000)  # column 5 see-through
    Image.fromarray(photo).save(folder / 'rgb_transparent.png', transparency=tuple(int(c) for c in RED))
    Image.fromarray(gray).save(folder / 'gray_transparent.png', transparency=50)  # row 10 see-through
    steps = np.tile(np.arange(64), (48, 1))
    Image.fromarray((steps * 4).astype(np.int32)).save(folder / 'int32_8bit.tif')  # 32-bit integers, 0..252
    Image.fromarray(gray16.astype(np.int32)).save(folder / 'int32_16bit.tif')  # 32-bit integers, 0..63000
    Image.fromarray((steps * 3.9).astype(np.float32)).save(folder / 'float_255.tif')  # floats 0..245.7
    Image.fromarray((steps / 63).astype(np.float32)).save(folder / 'float_1.tif')  # floats 0..1
    blend = alpha[..., None] / 255
    rgb_of = lambda grey: np.repeat(grey[..., None], 3, axis=2)  # noqa: E731
    colours = np.array([RED, BLUE, (0, 200, 0)])[(np.arange(48 * 64) % 3).reshape(48, 64)]
    see_through = lambda shown, where: np.where(where[..., None], MEAN_COLOUR, shown)  # noqa: E731
    return {'gray16_transparent.png': see_through(rgb_of(np.round(gray16 / 257)), gray16 == 5000),
            'rgb_transparent.png': see_through(photo, (photo == RED).all(axis=2)),
            'gray_transparent.png': see_through(rgb_of(gray), gray == 50),
            'int32_8bit.tif': rgb_of(steps * 4),
            'int32_16bit.tif': rgb_of(np.round(gray16 / 257)),
            'float_255.tif': rgb_of(np.round((steps * 3.9).astype(np.float32))),
            'float_1.tif': rgb_of(np.round((steps / 63).astype(np.float32).astype(np.float64) * 255)),
            'phone.jpg': photo,
            'rgba.png': blend * photo + (1 - blend) * MEAN_COLOUR,
            'la.png': blend * rgb_of(gray) + (1 - blend) * MEAN_COLOUR,
            'palette.png': colours,
            'palette_transparent.png': np.where(colours == (0, 200, 0), MEAN_COLOUR, colours),
            'gray.png': rgb_of(gray),
            'gray16.png': rgb_of(np.round(gray16 / 257)),
            'cmyk.jpg': np.broadcast_to(np.array([255, 0, 0]) * 191 / 255, (48, 64, 3))}


def test_read_photo_gives_what_a_viewer_shows(tmp_path, monkeypatch):
    for name, shown in own_images(tmp_path).items():
        read = np.asarray(dataset.read_photo(tmp_path / name), np.float64)
        assert read.shape == (48, 64, 3), name  # the EXIF-rotated JPEG is stored 64 × 48
        tolerance = 4 if name.endswith('.jpg') else 0.5  # JPEG's rounding; PNGs exact
        assert np.abs(read - shown).max() <= tolerance, name


@pytest.mark.parametrize('values, why', [(np.arange(48 * 64, dtype=np.float32).reshape(48, 64) / 3, '0..1023.67'),
                                         (np.full((48, 64), np.nan, np.float32), 'nan..nan'),
                                         (np.arange(48 * 64, dtype=np.int32).reshape(48, 64) * 30, '0..92130'),
                                         (np.arange(48 * 64, dtype=np.int32).reshape(48, 64) - 1, '-1..3070')])
def test_read_photo_refuses_values_of_no_known_range(tmp_path, values, why):
    """Floats beyond 0..255, NaN, integers beyond 16 bits or below 0: how such a file looks is unknown."""
    Image.fromarray(values).save(tmp_path / 'odd.tif')
    with pytest.raises(ValueError, match=f'image {tmp_path / "odd.tif"} has [IF] values {why}: neither'):
        dataset.read_photo(tmp_path / 'odd.tif')


def test_read_photo_reads_a_pil_image_and_an_array_as_their_file(tmp_path):
    """One reading for every form: the PIL image of a file (any mode: EXIF orientation, 16-bit, 32-bit integers
    and floats, RGBA, LA, CMYK, palettes with transparency, 1 bit) gives exactly what its path gives, and so do its
    pixels as a numpy array, where an array holds all a file says (no EXIF, no transparency entry, no palette)."""
    shown = own_images(tmp_path)
    Image.fromarray(np.tile(np.arange(64) % 3 == 0, (48, 1))).save(tmp_path / 'bits.png')  # mode 1
    arrays = ('gray.png', 'gray16.png', 'int32_8bit.tif', 'int32_16bit.tif', 'float_255.tif', 'float_1.tif',
              'rgba.png', 'bits.png')
    for name in [*shown, 'bits.png']:
        by_path = np.asarray(dataset.read_photo(tmp_path / name))
        with Image.open(tmp_path / name) as image:
            mode = image.mode
            np.testing.assert_array_equal(np.asarray(dataset.read_photo(image)), by_path, err_msg=f'{name} ({mode})')
            if name in arrays:
                array = np.asarray(image)
                np.testing.assert_array_equal(np.asarray(dataset.read_photo(array)), by_path,
                                              err_msg=f'{name} as {array.dtype}')
    assert np.asarray(dataset.read_photo(tmp_path / 'bits.png')).max() == 255
    rgb16 = np.stack([np.full((4, 5), 65535), np.full((4, 5), 257), np.zeros((4, 5))], -1).astype(np.uint16)
    assert (np.asarray(dataset.read_photo(rgb16)) == (255, 1, 0)).all()  # 16-bit colour: ÷ 257, as 16-bit grey
    floats = np.stack([np.full((4, 5), 1.0), np.full((4, 5), 0.5), np.zeros((4, 5))], -1)
    assert (np.asarray(dataset.read_photo(floats)) == (255, 128, 0)).all()  # floats in [0, 1]: × 255


@pytest.mark.parametrize('values, expected', [
    (np.array([[0, 255]], np.int32), (0, 255)),                 # 32-bit integers up to 255: 8-bit
    (np.array([[0, 256]], np.int32), (0, 1)),                   # one past: 16-bit, ÷ 257
    (np.array([[0, 65535]], np.int32), (0, 255)),               # the 16-bit end
    (np.array([[0, 65536]], np.int32), 'I values 0..65536'),    # one past: refused
    (np.array([[-1, 5]], np.int32), 'I values -1..5'),          # below 0: refused
    (np.array([[0, 1]], np.float32), (0, 255)),                 # floats up to 1: × 255
    (np.array([[0, np.nextafter(np.float32(1), np.float32(2))]], np.float32), (0, 1)),  # one float past: 0..255
    (np.array([[0, 255]], np.float32), (0, 255)),               # the 0..255 end
    (np.array([[0, np.nextafter(np.float32(255), np.float32(256))]], np.float32), 'F values 0..255'),  # refused
    (np.array([[np.nextafter(np.float32(0), np.float32(-1)), 1]], np.float32), 'F values -1.4013e-45..1'),
])
def test_read_photo_ranges_at_their_bounds(tmp_path, values, expected):
    """Each range of read_photo's, at its end and one past, as a file (TIFF) and as an array."""
    Image.fromarray(values).save(tmp_path / 'bound.tif')
    for source, name in ((tmp_path / 'bound.tif', f'image {tmp_path / "bound.tif"}'),
                         (values, f'the {values.dtype} array')):
        if isinstance(expected, str):
            with pytest.raises(ValueError, match=re.escape(f'{name} has {expected}') + ': neither'):
                dataset.read_photo(source)
        else:
            assert tuple(np.asarray(dataset.read_photo(source))[0, :, 0]) == expected


@pytest.mark.parametrize('array', [np.zeros((4, 5, 2), np.uint8), np.zeros((4, 5, 3, 1), np.uint8),
                                   np.zeros(5, np.uint8), np.zeros((0, 5), np.uint8), np.zeros((4, 5), np.complex64),
                                   np.zeros((4, 5), object)])
def test_arrays_of_no_image_layout_are_refused_saying_what_is_accepted(array):
    with pytest.raises(ValueError, match=re.escape(f'an array of shape {array.shape} and dtype {array.dtype} is no '
                                                   f'image: give H × W × 3 (RGB), H × W × 4 (RGBA) or H × W '
                                                   f'(grey)')):
        dataset.read_photo(array)


@pytest.mark.parametrize('source, named', [
    (torch.zeros(3, 4, 5), 'a torch.Tensor of shape (3, 4, 5)'),
    (torch.zeros(4, 5, 3, dtype=torch.uint8), 'a torch.Tensor of shape (4, 5, 3)'),
    (None, 'None'), ([[0, 1], [2, 3]], 'a list')])
def test_sources_of_no_image_form_are_refused_saying_what_is_accepted(source, named):
    """A tensor (what a PyTorch user has at hand) read as a file: 'Tensor' object has no attribute 'read'."""
    with pytest.raises(TypeError, match=rf'{re.escape(named)} is no image: give a path, a PIL image or a numpy '
                                        rf'array.*tensor\.permute\(1, 2, 0\)\.numpy\(\)'):
        dataset.read_photo(source)


def test_segment_folder_of_own_images(trained, tmp_path):
    """Through OpenVINO (onnxruntime's --image: the same code, engine aside; test_eval.py segments with PyTorch)."""
    photos = tmp_path / 'photos'
    own_images(photos)
    (photos / 'notes.txt').write_text('not an image')
    (photos / 'sub').mkdir()
    upright = tmp_path / 'upright' / 'phone.png'  # the pixels read_photo shows for phone.jpg, stored plainly
    upright.parent.mkdir()
    dataset.read_photo(photos / 'phone.jpg').save(upright)
    done = run_script(trained, 'eval.py', '--onnx', 'models/final.onnx', '--engine', 'openvino', '--image', str(photos),
                      '--image', str(upright), '--save-pred', str(tmp_path / 'masks'), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert 'notes.txt: not an image' in done.stderr and 'sub: not an image' in done.stderr
    masks = tmp_path / 'masks'
    # phone.jpg and upright/phone.png share the stem: their folders tell them apart
    names = sorted(os.listdir(masks / 'photos')) + sorted(os.listdir(masks / 'upright'))
    assert names == sorted(f.split('.')[0] + '.png' for f in own_images(tmp_path / 'again')) + ['phone.png']
    for name in names[:-1]:
        assert Image.open(masks / 'photos' / name).size == (64, 48), name
    assert np.array_equal(np.array(Image.open(masks / 'photos' / 'phone.png')),
                          np.array(Image.open(masks / 'upright' / 'phone.png')))


# ---------------------------------------------------------------- mask names (issue 21, item 3)

def test_mask_names_tell_inputs_apart(tmp_path):
    assert eval.mask_names(['a/x.jpg', 'b/y.png']) == ['x', 'y']
    assert eval.mask_names(['cam1/0001.jpg', 'cam2/0001.jpg', 'cam2/0002.jpg']) == \
        ['cam1/0001', 'cam2/0001', 'cam2/0002']
    assert eval.mask_names(['s/cam/0001.jpg', 't/cam/0001.jpg']) == ['s/cam/0001', 't/cam/0001']
    assert eval.mask_names(['a/0001.jpg', 'a/0001.tif']) == ['0001.jpg', '0001.tif']


def test_masks_never_replace_inputs(trained, tmp_path):
    """(Two inputs with one stem get two masks: test_segment_folder_of_own_images.)"""
    photo = upright_photo()
    (tmp_path / 'cam1').mkdir()
    Image.fromarray(photo).save(tmp_path / 'cam1' / '0001.jpg')
    Image.fromarray(photo).save(tmp_path / 'cam1' / '0002.png')
    before = {name: (tmp_path / 'cam1' / name).read_bytes() for name in os.listdir(tmp_path / 'cam1')}
    for inputs in ([str(tmp_path / 'cam1')], [str(tmp_path / 'cam1' / '0002.png')]):
        clash = run_script(trained, 'eval.py', *sum((['--image', i] for i in inputs), []),
                           '--save-pred', str(tmp_path / 'cam1'), env=ONE_THREAD)
        assert clash.returncode != 0 and 'Traceback' not in clash.stderr
        assert f'would replace the input image {tmp_path / "cam1" / "0002.png"}' in clash.stderr
        assert {name: (tmp_path / 'cam1' / name).read_bytes() for name in os.listdir(tmp_path / 'cam1')} == before


def test_cpu_batches_and_modules_stay_contiguous():
    """CHANNELS_LAST is a CUDA layout: CPU inference runs runtime.freeze's oneDNN layout, and CPU training stays
    contiguous (its tests compare sums bit for bit)."""
    cpu = torch.device('cpu')
    assert runtime.to_device(torch.zeros(1, 3, 9, 9), cpu).is_contiguous()
    assert runtime.to_device(torch.nn.Conv2d(3, 4, 3), cpu).weight.is_contiguous()


def test_exported_file_takes_a_batch_of_3(tmp_path, monkeypatch):
    """runtime.export_onnx's file (traced at batch 2) run on a batch of 3 gives PyTorch's logits: asserted here,
    on a file no fixture checked, so a batch dimension fixed at export fails this test's own assertion. The
    EMANet's backbone is one strided conv: the head, the EM unit and the upsampling export as in the whole net
    (the fixture's export.py checks ResNet-50's), in a few seconds rather than a minute."""
    for name, value in TINY.items():
        monkeypatch.setattr(settings, name, value)
    net = network.EMANet(5).eval()
    net.extractor = torch.nn.Conv2d(3, 2048, 3, stride=8, padding=1)  # b × 2048 × h/8 × w/8, as ResNet-50's
    path = str(tmp_path / 'net.onnx')
    runtime.export_onnx(net, path)
    img = torch.randn(3, 3, 41, 57, generator=torch.Generator().manual_seed(0))
    logits = runtime.onnx_session(path).run(['logits'], {'img': img.numpy()})[0]
    with torch.inference_mode():
        expected = net(img).numpy()
    assert logits.shape == expected.shape == (3, 5, 41, 57)
    assert np.abs(logits - expected).max() < 1e-4 * np.abs(expected).max()
