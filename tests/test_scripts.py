"""demo.sh, clean.sh and tensorboard.sh, run from a copy of the repository as a user would; and ForkedScript, which
runs the tests' python commands."""
import json
import os
import subprocess
import textwrap

import pytest

from harness import HANG_GUARD, copy_code, make_experiment, run_script


def bash(python_first, folder, *args, env=None, timeout=HANG_GUARD):
    """`bash args...` in folder; the scripts' `python` is the interpreter running the tests (see python_first)."""
    env = {**os.environ, **(env or {})}
    return subprocess.run(['bash', *args], cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env={**env, 'PATH': python_first(env['PATH'])})


@pytest.mark.long
def test_demo_runs_the_whole_loop_at_a_tiny_budget(tmp_path, python_first):
    repo = copy_code(tmp_path / 'repo')
    result = bash(python_first, repo, 'demo.sh', env={'DEMO_ITER_MAX': '2'})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "> DATA_ROOT = '" in result.stdout and '> ITER_MAX = 2' in result.stdout  # the diff is shown
    assert '== demo mIoU' in result.stdout and 'predicting background everywhere scores' in result.stdout
    assert '== validation while training (first 12 val images): step 2 ' in result.stdout  # the end of the run
    assert "INFO recipe: DATASET='demo' has no published recipe to compare with" in result.stderr  # one line
    assert result.stderr.count('recipe:') == 1
    experiment = repo / 'demo_exp'
    assert json.load(open(experiment / 'logdir' / 'eval_final.json'))['mIoU'] >= 0
    assert len(os.listdir(experiment / 'logdir' / 'predictions')) == len(
        open(repo / 'demo_data' / 'ImageSets' / 'SegmentationAug' / 'val.txt').read().split())
    assert os.listdir(experiment / 'logdir' / 'attention')
    assert (experiment / 'models' / 'final.pth').exists() and (experiment / 'models' / 'best.pth').exists()


def test_clean_removes_checkpoints_logs_and_caches_only(tmp_path, demo_data, python_first):
    outside = tmp_path / 'shared logs'
    outside.mkdir()
    (outside / 'keep').write_text('')
    experiment = make_experiment(tmp_path / 'exp', demo_data)
    models, logdir = experiment / 'models', experiment / 'logdir'
    for folder in (models, logdir, experiment / '__pycache__'):
        folder.mkdir()
    for name in ('latest.pth', 'final.pth', 'best.pth', 'step_2.pth', 'latest.pth.tmp77', 'resnet50s.pth', 'README.md'):
        (models / name).write_text('x')
    (logdir / 'events.out.tfevents.1').write_text('x')
    result = bash(python_first, experiment, 'clean.sh')
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(models)) == ['README.md', 'resnet50s.pth']
    assert not logdir.exists() and not (experiment / '__pycache__').exists()
    assert (experiment / 'settings.py').exists()

    with open(experiment / 'settings.py', 'a') as f:
        f.write(f"LOG_DIR = {str(outside)!r}\nMODEL_DIR = '..'\n")
    result = bash(python_first, experiment, 'clean.sh')
    assert result.returncode == 0, result.stderr
    assert 'left alone' in result.stdout and (outside / 'keep').exists()


def test_tensorboard_serves_log_dir_on_a_free_port(tmp_path, demo_data, python_first):
    experiment = copy_code(tmp_path / 'exp')
    with open(experiment / 'settings.py', 'a') as f:
        f.write("LOG_DIR = './runs'\n")
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    (fake_bin / 'tensorboard').write_text('#!/bin/sh\necho "tensorboard $@"\n')
    (fake_bin / 'tensorboard').chmod(0o755)
    result = bash(python_first, experiment, 'tensorboard.sh', env={'PATH': f"{fake_bin}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    address, call = result.stdout.splitlines()
    port = address.split('localhost:')[1].split('/')[0]
    assert call == f'tensorboard --logdir ./runs --port {port} --bind_all' and int(port) > 0
    missing = bash(python_first, experiment, 'tensorboard.sh', env={'PATH': '/usr/bin:/bin'})
    assert missing.returncode == 1 and 'pip install tensorboard' in missing.stderr


def test_tensorboard_serves_several_experiments_side_by_side_named_by_folder(tmp_path, python_first):
    here = tmp_path.resolve()
    for name in ('exp_a', 'exp_b'):
        copy_code(here / name)
    with open(here / 'exp_b' / 'settings.py', 'a') as f:
        f.write("LOG_DIR = './runs'\n")
    (here / 'notes').mkdir()
    fake_bin = here / 'bin'
    fake_bin.mkdir()
    (fake_bin / 'tensorboard').write_text('#!/bin/sh\necho "tensorboard $@"\n')
    (fake_bin / 'tensorboard').chmod(0o755)
    env = {'PATH': f"{fake_bin}:{os.environ['PATH']}"}
    # run from the folder that holds the experiments, with paths relative to it, as `bash exp_a/tensorboard.sh ...`
    result = bash(python_first, here, 'exp_a/tensorboard.sh', 'exp_a', './exp_b/', env=env)
    assert result.returncode == 0, result.stderr
    address, call = result.stdout.splitlines()
    port = address.split('localhost:')[1].split('/')[0]
    spec = f"exp_a:{here / 'exp_a' / 'logdir'},exp_b:{here / 'exp_b' / 'runs'}"
    assert call == f'tensorboard --logdir_spec {spec} --port {port} --bind_all'
    not_an_experiment = bash(python_first, here, 'exp_a/tensorboard.sh', 'exp_a', 'notes', env=env)
    assert not_an_experiment.returncode == 1 and 'tensorboard --logdir' not in not_an_experiment.stdout
    assert 'notes is not an experiment folder (no settings.py)' in not_an_experiment.stderr


def test_a_forked_script_and_the_python_it_starts_see_their_folder_arguments_environment_and_streams(tmp_path):
    """What the tests rely on when a script runs as a fork of the test process: the folder's settings.py, not the
    one the tests imported; the arguments, environment, exit code and separate output streams a fresh interpreter
    gets; and a python that the script starts is a fork too (torch already imported)."""
    (tmp_path / 'settings.py').write_text("WHERE = 'this folder'\n")
    (tmp_path / 'script.py').write_text(textwrap.dedent("""
        import os, subprocess, sys
        import settings
        print(settings.WHERE, sys.argv, os.environ['ANSWER'], os.getcwd(), 'torch' in sys.modules)
        code = 'import sys, settings; print(sys.argv, settings.WHERE, "torch" in sys.modules); sys.exit(5)'
        inner = subprocess.run([sys.executable, '-c', code, 'x'], capture_output=True, text=True)
        print(inner.returncode, inner.stdout.strip(), inner.stderr, file=sys.stderr)
        sys.exit(3)
    """))
    done = run_script(tmp_path, 'script.py', 'a', env={'ANSWER': '42'})
    assert done.returncode == 3
    assert done.stdout == f"this folder ['script.py', 'a'] 42 {tmp_path} True\n"
    assert done.stderr == "5 ['-c', 'x'] this folder True \n"


@pytest.mark.parametrize('script, name', [('train.py', 'MODEL_DIR'), ('eval.py', 'LOG_DIR'),
                                          ('export.py', 'PRETRAINED')])
def test_a_path_setting_with_a_tilde_is_refused_before_a_folder_named_tilde_is_made(tmp_path, demo_data, script,
                                                                                     name):
    """MODEL_DIR = '~/runs/a' (what a shell would expand) made a folder named '~' in the experiment, where the
    checkpoints went unseen, and which `rm -rf ~` removes with the home folder."""
    experiment = make_experiment(tmp_path / 'exp', demo_data, **{name: '~/runs/a'})
    result = run_script(experiment, script)
    assert result.returncode != 0 and f"{name}='~/runs/a': Python does not expand '~'" in result.stderr, \
        result.stderr
    assert "os.path.expanduser('~/runs/a')" in result.stderr and 'Traceback' not in result.stderr
    assert not (experiment / '~').exists()
    with open(experiment / 'settings.py', 'a') as f:  # what the message says to write
        f.write(f"{name} = os.path.expanduser('~/runs/a')\n")
    assert "Python does not expand" not in run_script(experiment, script, env={'HOME': str(tmp_path)}).stderr
