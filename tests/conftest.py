"""pytest's hooks and the fixtures any test may ask for; what the tests share as code is in harness.py. Nothing
here imports torch until a fixture runs: the controller of `pytest -n` runs no test, and importing torch,
torch._dynamo, onnx and tensorboardX (harness.py) there would hold up the workers' start by 6 s on 2 cores."""
import os
import shlex
import sys

import pytest

pytest.register_assert_rewrite('harness')  # its asserts explain themselves as the tests' do


def pytest_configure(config):
    config.addinivalue_line('markers', 'long: a test of a minute or more, started first')


def pytest_collection_modifyitems(items):
    """The long tests first (a stable sort: the rest keep their order, each module's tests together), so that
    with a worker per core the short ones fill the gaps at the end rather than a long one running alone."""
    items.sort(key=lambda item: item.get_closest_marker('long') is None)


@pytest.fixture(autouse=True)
def _deterministic():
    import torch
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The generated demo dataset (`prepare.py demo`'s images, fewer of them: DEMO_TRAIN, DEMO_VAL), made once per
    test session (per worker)."""
    from harness import DEMO_TRAIN, DEMO_VAL  # (and python's path to the repository's modules)
    import prepare
    root = tmp_path_factory.mktemp('demo') / 'data'
    prepare.make_demo(str(root), n_train=DEMO_TRAIN, n_val=DEMO_VAL)
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


@pytest.fixture
def root(tmp_path):
    """Six 37 × 50 block samples, listed in every split."""
    import numpy as np
    from harness import SPLITS, block_sample, write_root
    rng = np.random.default_rng(0)
    samples = {f'{index:03d}': block_sample(rng, 37, 50) for index in range(6)}
    return write_root(tmp_path / 'root', samples, {split: list(samples) for split in SPLITS})
