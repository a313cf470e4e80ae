"""What the test modules share: tiny experiments (TINY, `make_experiment`), scripts run as a user would
(`run_script`, `ForkedScript`: forks of this process), and small VOC-layout data roots. Importing it readies a
pytest worker: a thread per process, and the modules scripts import on first use loaded once."""
import atexit
import contextlib
import faulthandler
import gc
import glob
import importlib
import inspect
import io
import logging
import logging.handlers
import os
import random
import runpy
import site
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dataset  # noqa: E402
import network  # noqa: E402
import settings  # noqa: E402

# an experiment small enough for a 2-core CPU: ResNet-50 from scratch on tiny crops, a 64-channel EM unit (at 512,
# its fc0 alone holds 9.4M of 34M weights: a third of every step's optimizer update and every checkpoint), saving
# latest.pth and final.pth at the end only (each save is 200 MB written and synced; tests of the cadence set
# ITER_SAVE), in float32 (AMP = False): the same numbers on every CPU, with native bfloat16 (where AMP would train
# in it) or without, as the tests that compare a run's weights with float32 computations of their own need; the
# bfloat16 training has tests of its own (test_cpu_bfloat16.py)
TINY = dict(N_LAYERS=50, PRETRAINED=None, CROP_SIZE=33, BATCH_SIZE=2, ITER_MAX=4, ITER_SAVE=1000, LOG_EVERY=1,
            IMAGE_EVERY=2, NUM_WORKERS=0, BN_MOM=0.1, LR=1e-3, EVAL_EVERY=0, EMA_CHANNELS=64, AMP=False)
HANG_GUARD = 900  # seconds: only a hung run takes this long, however loaded the machine is
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # processes that must compute the same numbers bit for bit
# where python's own modules and installed packages live: what a forked script keeps of this process's imports
PYTHON_FOLDERS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, site.getusersitepackages()})
TORCHRUN = ('-m', 'torch.distributed.run')  # python's arguments that launch a script under torchrun
TWO_PROCESSES = (*TORCHRUN, '--standalone', '--nproc_per_node=2')  # DDP with 2 processes on this machine
# a ForkedScript whose environment holds this variable stops itself (SIGSTOP) right after writing its value to stderr
# (a log line): a test acts on a process held at a known point of its work (signals it, starts another run), then
# lets it go on (SIGCONT), whatever the speed of the machine. The scripts it starts inherit it.
PAUSE_AT = 'TESTS_PAUSE_AT'


if os.environ.get('PYTEST_XDIST_WORKER'):  # pytest -n: a core per worker, for its subprocesses' torch too
    os.environ['OMP_NUM_THREADS'] = '1'    # (more threads than cores spin against each other)
torch.set_num_threads(1)  # a ForkedScript would wait forever for OpenMP threads that this process had started
# what scripts import on first use, once per worker rather than in every script: torch._dynamo (torch.optim's first
# call, 2 s on 2 cores), onnx (export.py, eval.py --onnx: 1.3 s), tensorboardX (train.py, eval.py: 0.2 s)
for module in ('torch._dynamo', 'onnx', 'tensorboardX'):
    importlib.import_module(module)

DEMO_TRAIN, DEMO_VAL = 40, 8  # demo_data's images: 40 train (no tiny run sees more), 8 val (`prepare.py demo`: 300, 60)
DEMO_VAL_IDS = [f'{index:06d}' for index in range(DEMO_TRAIN, DEMO_TRAIN + DEMO_VAL)]  # make_demo's numbering


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


def tiny_net(n_classes=21):
    """An EMANet of TINY's shape (what a TINY experiment's checkpoints hold), whatever this process's settings."""
    with settings.applied({'EMA_CHANNELS': TINY['EMA_CHANNELS']}):
        return network.EMANet(n_classes, TINY['N_LAYERS'])


def run_script(experiment, *args, timeout=HANG_GUARD, env=None):
    """Runs `python args...` in the experiment folder like a user would, in a session of its own; returns the
    CompletedProcess. It runs as a `ForkedScript`: a process of its own, with its own exit code, output and modules,
    without paying torch's import again. Its output goes to files, not pipes, so that a process it leaves behind
    cannot hold the test up. On a timeout the whole session goes (torchrun and its workers too)."""
    outputs = [tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')]
    process = ForkedScript([sys.executable, *args], cwd=experiment, env={**os.environ, **(env or {})},
                           stdin=subprocess.DEVNULL, stdout=outputs[0], stderr=outputs[1], start_new_session=True)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    out, err = (output.seek(0) or output.read() for output in outputs)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def start_training(experiment, log_path, *launcher):
    """train.py (under launcher: python's arguments before the script, e.g. TWO_PROCESSES for torchrun) in the
    background, in a session of its own, one thread per process: tiny steps gain nothing from more, and lose much
    to a busy machine."""
    with open(log_path, 'a') as log:
        return ForkedScript([sys.executable, *launcher, 'train.py'], cwd=experiment, env={**os.environ, **ONE_THREAD},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def wait_for(log_path, text, process, since=0):
    """Waits until text appears in the log after its first `since` characters."""
    deadline = time.time() + HANG_GUARD
    while time.time() < deadline:
        if text in open(log_path).read()[since:]:
            return
        assert process.poll() is None, open(log_path).read()
        time.sleep(0.05)
    raise AssertionError(f'{text!r} not in {log_path}')


@contextlib.contextmanager
def log_records():
    """The records that reach the shared logger's handlers (it does not propagate to pytest's)."""
    seen = logging.handlers.BufferingHandler(capacity=1000)
    level = settings.logger.level
    settings.logger.addHandler(seen)
    settings.logger.setLevel(logging.INFO)
    try:
        yield seen.buffer
    finally:
        settings.logger.removeHandler(seen)
        settings.logger.setLevel(level)


def messages(records):
    return '\n'.join(record.getMessage() for record in records)


def processes_in(folder):
    """Pids of the processes whose working directory is folder."""
    pids = []
    for cwd in glob.glob('/proc/[0-9]*/cwd'):
        try:
            if os.readlink(cwd) == str(folder):
                pids.append(cwd.split('/')[2])
        except OSError:
            pass
    return pids


def process_state(pid):
    """(state letter, parent pid) of /proc/PID/stat: 'T' for a stopped process; None once it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            state, parent = f.read().rsplit(')', 1)[1].split()[:2]
    except OSError:
        return None
    return state, int(parent)


def paused_in(folder, process):
    """The pid of the process working in folder that stopped itself at its PAUSE_AT text, once there is one (process:
    the command that started it, which must not end first)."""
    deadline = time.time() + HANG_GUARD
    while True:
        stopped = [pid for pid in processes_in(folder) if (process_state(pid) or '-')[0] == 'T']
        if stopped:
            return int(stopped[0])
        assert time.time() < deadline and process.poll() is None, process.args
        time.sleep(0.05)


def wait_pending(pid, signum):
    """Waits until signum was sent to the stopped process pid (pending: it handles it once it is let go)."""
    deadline = time.time() + HANG_GUARD
    while True:
        with open(f'/proc/{pid}/status') as f:
            masks = dict(line.split(':', 1) for line in f if line.startswith(('SigPnd', 'ShdPnd')))
        if any(int(mask, 16) >> (signum - 1) & 1 for mask in masks.values()):
            return
        assert time.time() < deadline, f'{signal.Signals(signum).name} never reached {pid}'
        time.sleep(0.05)


def stop(process):
    """SIGKILL for a process group a failed test leaves behind."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


EXECUTE_CHILD = subprocess.Popen._execute_child  # how a Popen starts a program: fork and exec


class ForkedScript(subprocess.Popen):
    """A Popen for which `python [-u] args...` (a script, -c code or -m module) runs as a fork of this process: what
    a fresh interpreter would do, minus importing torch and the libraries again (2 s each time, 4 s where a script
    builds an optimizer, on 2 cores). Other commands start as usual. The child forgets every module this process
    imported from outside python's folders, so the scripts in cwd (or the script's folder) are the ones that run;
    it takes the environment, stdio, session and process group a Popen gives (and runs its preexec_fn), python's
    signal handlers, no logging handlers and no exit handlers of its parent's. Every Popen in the child forks the
    same way, so the interpreters that a script starts (torchrun's workers, grid.py's runs, submitit's jobs) skip
    the imports too. With PAUSE_AT in its environment, its stderr is a PausingStream."""

    def _execute_child(self, *params):
        call = types.SimpleNamespace(**inspect.signature(EXECUTE_CHILD).bind(self, *params).arguments)
        command = [call.args] if isinstance(call.args, (str, bytes, os.PathLike)) else [*map(os.fsdecode, call.args)]
        python_args = command[1:][command[1:2] == ['-u']:]
        if (call.shell or call.executable not in (None, sys.executable) or command[0] != sys.executable
                or not python_args or python_args[0].startswith('-') and python_args[0] not in ('-c', '-m')
                or call.umask >= 0 or (call.uid, call.gid, call.gids) != (None,) * 3):
            return EXECUTE_CHILD(self, *params)
        sys.stdout.flush()  # nothing of this process's buffers written twice
        sys.stderr.flush()
        gc.freeze()  # the child's collections skip this process's objects rather than copy every page they are on
        # signals wait in the child until it has python's handlers back (as an exec gives them): one sent to it as
        # soon as Popen returns would otherwise run this process's handler there, and be lost
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        pid = os.fork()
        if pid == 0:  # the child never returns into its parent's code
            code = 1
            try:
                code = ForkedScript.child(call, python_args, unbuffered=command[1] == '-u', mask=mask)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        gc.unfreeze()
        self.pid, self._child_created = pid, True
        self._close_pipe_fds(call.p2cread, call.p2cwrite, call.c2pread, call.c2pwrite, call.errread, call.errwrite)

    @staticmethod
    def child(call, args, unbuffered, mask):
        """The child's exit code, as the interpreter would give it."""
        code = 1
        try:
            if call.start_new_session:
                os.setsid()
            elif call.process_group >= 0:
                os.setpgid(0, call.process_group)
            for source, target in ((call.p2cread, 0), (call.c2pwrite, 1), (call.errwrite, 2)):
                if source != -1:
                    os.dup2(source, target)
            pipe_ends = {call.p2cread, call.p2cwrite, call.c2pread, call.c2pwrite, call.errread, call.errwrite}
            for fd in pipe_ends - {-1, 0, 1, 2}:  # the parent's ends, and the child's now that they are 0, 1, 2
                os.close(fd)
            if call.cwd is not None:
                os.chdir(call.cwd)
            if call.env is not None:
                os.environ.clear()
                os.environ.update(call.env)
            if call.preexec_fn is not None:  # where a Popen calls it: in the child, before the program starts
                call.preexec_fn()
            if 'OMP_NUM_THREADS' in os.environ:
                torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
            unbuffered = unbuffered or bool(os.environ.get('PYTHONUNBUFFERED'))
            sys.stdin = open(0, closefd=False)
            sys.stdout = (io.TextIOWrapper(open(1, 'wb', buffering=0, closefd=False), write_through=True)
                          if unbuffered else open(1, 'w', closefd=False))
            sys.stderr = open(2, 'w', buffering=1, closefd=False, errors='backslashreplace')
            if os.environ.get(PAUSE_AT):
                sys.stderr = PausingStream(sys.stderr, os.environ[PAUSE_AT])
            for number in signal.valid_signals():
                if callable(signal.getsignal(number)):
                    signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            signal.set_wakeup_fd(-1)
            faulthandler.disable()
            atexit._clear()
            subprocess.Popen._execute_child = ForkedScript._execute_child
            # generators seeded from the OS as a new interpreter's (torch's too, which a new one seeds with a
            # constant: stricter), so a script that forgot to seed one is caught rather than given this state
            random.seed()
            np.random.seed()
            torch.seed()
            for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
                if isinstance(logger, logging.Logger):
                    logger.handlers.clear()
            for name, module in list(sys.modules.items()):
                path = getattr(module, '__file__', None)
                if path and not path.startswith(PYTHON_FOLDERS) or args[0] == '-m' and name == args[1]:
                    del sys.modules[name]
            folder = '' if args[0] in ('-c', '-m') else os.path.dirname(os.path.abspath(args[0]))
            sys.path[:] = [folder] + [p for p in sys.path if p not in ('', ROOT, os.path.join(ROOT, 'tests'))]
            if args[0] == '-c':  # a __main__ without a file, as python -c has
                sys.argv = ['-c', *args[2:]]
                sys.modules['__main__'] = main = types.ModuleType('__main__')
                exec(compile(args[1], '<string>', 'exec'), main.__dict__)
            elif args[0] == '-m':  # sys.argv[0] becomes the module's file, as python -m has it
                sys.argv = [args[1], *args[2:]]
                runpy.run_module(args[1], run_name='__main__', alter_sys=True)
            else:
                sys.argv = list(args)
                runpy.run_path(args[0], run_name='__main__')
            code = 0
        except SystemExit as e:  # sys.exit(n) or sys.exit(message), as the interpreter takes them
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()
        threading._shutdown()  # the interpreter waits for its threads before it exits
        sys.stdout.flush()
        sys.stderr.flush()
        return code


class PausingStream:
    """A stream that stops its process (SIGSTOP) once a write holds text, after writing it (PAUSE_AT). While it is
    stopped it ignores SIGHUP: the kernel hangs up a stopped process whose parent dies (its process group orphaned),
    which it does not do to one that runs; SIGCONT, which the kernel sends with it, lets it go on."""

    def __init__(self, stream, text):
        self.stream, self.text = stream, text

    def write(self, data):
        written = self.stream.write(data)
        if self.text in data:
            self.stream.flush()
            hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.kill(os.getpid(), signal.SIGSTOP)
            signal.signal(signal.SIGHUP, hangup)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


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
