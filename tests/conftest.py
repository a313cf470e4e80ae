import glob
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# an experiment small enough for a 2-core CPU: ResNet-50 from scratch on tiny crops
TINY = dict(N_LAYERS=50, PRETRAINED=None, CROP_SIZE=33, BATCH_SIZE=2, ITER_MAX=4, ITER_SAVE=2, LOG_EVERY=1,
            IMAGE_EVERY=2, NUM_WORKERS=0, BN_MOM=0.1, LR=1e-3)
TORCHRUN = ('-m', 'torch.distributed.run')  # python's arguments that launch a script under torchrun
TWO_PROCESSES = (*TORCHRUN, '--standalone', '--nproc_per_node=2')  # DDP with 2 processes on this machine


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


def run_script(experiment, *args, timeout=300, env=None):
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
