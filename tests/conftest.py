import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dataset  # noqa: E402
import prepare  # noqa: E402
import settings  # noqa: E402

# an experiment small enough for a 2-core CPU: ResNet-50 from scratch on tiny crops
TINY = dict(N_LAYERS=50, PRETRAINED=None, CROP_SIZE=33, BATCH_SIZE=2, ITER_MAX=4, ITER_SAVE=2, LOG_EVERY=1,
            IMAGE_EVERY=2, NUM_WORKERS=0, BN_MOM=0.1, LR=1e-3, EVAL_EVERY=0)
HANG_GUARD = 900  # seconds: only a hung run takes this long, however loaded the machine is
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # processes that must compute the same numbers bit for bit
TORCHRUN = ('-m', 'torch.distributed.run')  # python's arguments that launch a script under torchrun
TWO_PROCESSES = (*TORCHRUN, '--standalone', '--nproc_per_node=2')  # DDP with 2 processes on this machine


if os.environ.get('PYTEST_XDIST_WORKER'):  # pytest -n: a core per worker, for its own and its subprocesses' torch
    os.environ['OMP_NUM_THREADS'] = '1'    # (more threads than cores spin against each other)
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line('markers', 'long: a test of a minute or more, started first')


def pytest_collection_modifyitems(items):
    """The long tests first (a stable sort: the rest keep their order, each module's tests together), so that
    with a worker per core the short ones fill the gaps at the end rather than a long one running alone."""
    items.sort(key=lambda item: item.get_closest_marker('long') is None)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The generated demo dataset (`prepare.py demo`'s 300 training images), made once per test session (per
    worker), with 20 val images rather than 60: every evaluation of it takes a third of the time."""
    root = tmp_path_factory.mktemp('demo') / 'data'
    prepare.make_demo(str(root), n_val=20)
    return root


@pytest.fixture(scope='session')
def python_first(tmp_path_factory):
    """PATH → PATH for shell scripts: a folder holding only `python`, which runs the interpreter running the tests
    (whatever its environment, activated or not), goes first; no other program of the interpreter's folder comes
    with it, so a test that hides one (tensorboard) still can."""
    folder = tmp_path_factory.mktemp('python_bin')
    (folder / 'python').write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (folder / 'python').chmod(0o755)
    return lambda path: f'{folder}{os.pathsep}{path}'


def copy_code(path):
    """The repository's scripts, copied into a folder."""
    os.makedirs(path, exist_ok=True)
    for source in glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, '*.sh')):
        shutil.copy(source, path)
    return path


def make_experiment(path, data_root, **overrides):
    """What a user does: copy the code into a folder and append assignments to its settings.py."""
    copy_code(path)
    with open(os.path.join(path, 'settings.py'), 'a') as f:
        for name, value in {**TINY, 'DATA_ROOT': str(data_root), **overrides}.items():
            f.write(f'{name} = {value!r}\n')
    return path


def run_script(experiment, *args, timeout=HANG_GUARD, env=None):
    """Runs `python args...` in the experiment folder like a user would; returns the CompletedProcess.
    On a timeout the whole process group goes (torchrun and its workers too)."""
    command = [sys.executable, *args]
    with subprocess.Popen(command, cwd=experiment, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


class Payload:
    """Pickles as a call: a checkpoint holding one would run code when loaded without weights_only."""
    ran = False

    def __reduce__(self):
        return (Payload.run, ())

    @staticmethod
    def run():
        Payload.ran = True


# ---------------------------------------------------------------- small VOC-layout data roots

# colours far apart, one per class, so a pixel's colour tells its class even after JPEG and resampling
CLASS_COLOURS = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], np.float32)
SPLITS = ('train', 'val', 'trainval', 'trainaug')


def write_jpeg(array, path):
    Image.fromarray(array).save(path, quality=100, subsampling=0)  # 4:4:4 keeps colours sharp


def write_root(root, samples, splits):
    """A DATA_ROOT holding samples (id -> (H × W × 3 uint8 image, H × W label)) and lists (split -> ids)."""
    for folder in ('JPEGImages', 'SegmentationClassAug'):
        os.makedirs(os.path.join(root, folder))
    for image_id, (image, label) in samples.items():
        write_jpeg(image, dataset.image_path(image_id, root))
        dataset.save_label_png(label, dataset.label_path(image_id, root))
    dataset.write_lists(splits, root)
    return str(root)


def block_sample(rng, height, width, block=12):
    """(image, label): blocks of classes 0-4 of block × block px, each painted in its CLASS_COLOURS colour."""
    grid = rng.integers(0, len(CLASS_COLOURS), (-(-height // block), -(-width // block)))
    label = np.kron(grid, np.ones((block, block), int))[:height, :width].astype(np.uint8)
    return CLASS_COLOURS[label].astype(np.uint8), label


@pytest.fixture
def root(tmp_path):
    """Six 37 × 50 block samples, listed in every split."""
    rng = np.random.default_rng(0)
    samples = {f'{index:03d}': block_sample(rng, 37, 50) for index in range(6)}
    return write_root(tmp_path / 'root', samples, {split: list(samples) for split in SPLITS})


def break_sample(root, image_id, how):
    """Breaks the image or the label of image_id as `how` says; returns the broken file's path."""
    path = (dataset.image_path if how.endswith('image') else dataset.label_path)(image_id, root)
    if how.startswith('missing'):
        os.remove(path)
    elif how == 'corrupt image':
        with open(path, 'wb') as f:
            f.write(b'not a jpeg')
    elif how == 'truncated image':
        data = open(path, 'rb').read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
    elif how == 'corrupt label':
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n broken')
    elif how == 'RGB label':
        Image.new('RGB', (50, 37)).save(path)
    elif how == 'size mismatch':
        dataset.save_label_png(np.zeros((36, 50), np.uint8), path)
    else:  # out-of-range value: N_CLASSES itself is one too many
        values = dataset.read_label(path)
        values[5, 5] = settings.N_CLASSES
        dataset.save_label_png(values, path)
    return path


