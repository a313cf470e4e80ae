import glob
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# an experiment small enough for a 2-core CPU: ResNet-50 from scratch on tiny crops
TINY = dict(N_LAYERS=50, PRETRAINED=None, CROP_SIZE=33, BATCH_SIZE=2, ITER_MAX=4, ITER_SAVE=2, LOG_EVERY=1,
            IMAGE_EVERY=2, NUM_WORKERS=0, BN_MOM=0.1, LR=1e-3)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The generated demo dataset, made once per test session."""
    root = tmp_path_factory.mktemp('demo') / 'data'
    subprocess.run([sys.executable, 'dataset.py', 'demo', str(root)], cwd=ROOT, check=True, capture_output=True)
    return root


def make_experiment(path, data_root, **overrides):
    """What a user does: copy the code into a folder and append assignments to its settings.py."""
    os.makedirs(path, exist_ok=True)
    for source in glob.glob(os.path.join(ROOT, '*.py')):
        shutil.copy(source, path)
    with open(os.path.join(path, 'settings.py'), 'a') as f:
        for name, value in {**TINY, 'DATA_ROOT': str(data_root), **overrides}.items():
            f.write(f'{name} = {value!r}\n')
    return path


def run_script(experiment, *args, timeout=300, env=None):
    """Runs `python args...` in the experiment folder like a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *args], cwd=experiment, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
