"""Ablation grids: one experiment folder per combination of settings, each trained then evaluated, on every GPU
of this machine in turn or as Slurm jobs, and where each one stands.

    python grid.py make abl/t STAGE_NUM=1,2,3,4,5,6        # abl/t_STAGE_NUM1 ... abl/t_STAGE_NUM6
    python grid.py make abl/k EMA_CHANNELS=256,512 N_BASES=32,64  # each combination: abl/k_EMA_CHANNELS256_N_BASES32...
    python grid.py make abl/n "EM_NORM='l2','none'" "SCALES=(0.5,1.0,1.5),(0.5,0.75,1.0,1.25,1.5,1.75,2.0)"
    python grid.py make abl/seed --each seeds.txt          # a folder per block of settings lines in seeds.txt
    python grid.py run abl/t_*                             # train.py then eval.py in each, a run per GPU at a time
    python grid.py run abl/t_* --gpus 0,1,2,3 --gpus-per-run 2 --eval "EVAL_STAGE_NUM=1,2,3,4,5,6,7,8"
    python grid.py run abl/t_* --slurm gpu --gpus-per-run 8 --time 720 --account myproject
    python grid.py run abl/t_* --slurm local               # the same jobs through submitit, on this machine
    python grid.py status abl/t_*

make: a folder PREFIX_NAME1VALUE1_NAME2VALUE2 per combination, a clean copy of this folder's code and docs
(*.py, *.sh, *.md, requirements.txt, .gitignore, models/README.md: no checkpoints, logs, data or other
experiments) with the combination's settings appended to settings.py after a comment line that names the command.
NAME=V1,V2 gives a setting's values as Python literals separated by commas (settings.parse_values): strings need
quotes, and the whole argument the shell's quotes around them ("EM_NORM='l2','none'"); a tuple is one value
("SCALES=(0.5,1.0,1.5),(1.0,)": two). --each FILE takes blocks of `NAME = literal` lines separated by blank lines
(# comments allowed; a block of comments only is none), one folder per block (times the NAME=V1,V2 product, if
any). A name over 255 bytes is cut, with a hash of the whole name after it (settings.py holds the settings in
full). Everything is checked before anything is written, and nothing half-made is left: a name that is no setting,
an evaluation setting (EVAL_*: folders that differ in it would train identical networks; `run --eval` evaluates
each folder under its values), two folders that would share a MODEL_DIR or LOG_DIR (an absolute one in
settings.py), a folder that exists already (--skip-existing leaves those folders as they are).

run: in each folder, `python train.py` (torchrun with --gpus-per-run > 1), then `python eval.py` and one
`python eval.py --set ...` per --eval, each run's output appended to grid_train.log / grid_eval.log there and its
state to grid_status.json. A run per group of --gpus-per-run GPUs (CUDA_VISIBLE_DEVICES) until the queue is
empty; one at a time on a machine without GPUs. --gpus numbers the GPUs as this process sees them, within an
inherited CUDA_VISIBLE_DEVICES (a Slurm allocation of GPUs 2,3: --gpus 0 is GPU 2); without CUDA it is an error.
A folder is trained until final.pth holds ITER_MAX, and evaluated until each evaluation's result file
(LOG_DIR/eval_final[_<protocol>].json, the file eval.py writes) holds that step and is newer than final.pth: what
is done is skipped, a deleted result or one of an earlier final.pth is computed again, an interrupted run resumes
(train.py resumes from latest.pth), a failing one is recorded with the error itself (grid_status.json's reason,
also under torchrun) and the queue goes on. A folder is its settings': one whose checkpoints (the one a rerun
resumes from, and final.pth) ran with settings that its settings.py no longer gives (checkpoint.changed_settings)
is stale and refused, naming them, as is one whose settings.py does not run; each counts as failed, and the exit
code is non-zero when a folder failed, --slurm local included. Two folders with one MODEL_DIR or LOG_DIR stop the
command before anything runs.
A folder is held by one grid.py run at a time (FOLDER/grid.lock, naming it): another run on the same folders,
here or on another node of a shared filesystem, leaves it alone and comes back to it once it is let go.
Ctrl-C (or SIGTERM) is passed on to the runs, which save latest.pth and stop; rerunning the command continues.
The runs are in a process group of their own, and on Linux get SIGTERM when grid.py dies, however it dies
(kill -9, a closed terminal): none goes on unattended, and the folder stays held until the last of them ended.
--slurm PARTITION submits each folder as a job through submitit (logs in FOLDER/grid_submitit/), which runs
`grid.py run FOLDER` on its node; a job at its time limit or preempted stops train.py (latest.pth), is requeued
and resumes (submitit's default: up to 3 time limits, any number of preemptions). Folders and this checkout must
lie on a filesystem the nodes share. --slurm local runs the same jobs with submitit's local executor on this
machine, one after another: a grid tried before it goes to the cluster.

status: a line per folder: its state (waiting, training or evaluating on which GPUs or job and held by which
grid.py, interrupted, failed with the error, stale with the settings that changed, finished), the step a rerun
resumes from (the newest intact checkpoint; the last logged step after it when that differs)/ITER_MAX, the ETA
of the last log line of a running training, the best validation mIoU (LOG_DIR/val.jsonl), and the published recipe
its run was compared with ('paper VOC, 3 differ', as compare.py's recipe column).
"""
import argparse
import ast
import collections
import ctypes
import fcntl
import glob
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import torch

import checkpoint
import dataset
import evaluation
import runtime
import settings

logger = settings.logger
HERE = os.path.dirname(os.path.abspath(__file__))
COPIED = ('*.py', '*.sh', '*.md', 'requirements.txt', '.gitignore', os.path.join('models', 'README.md'))
STATUS = 'grid_status.json'
LOCK = 'grid.lock'  # in each folder: held by the grid.py run working on it and by the runs it started
UNNAMED = 'a grid.py run that has not written its name yet'  # the holder of a lock file that names none
TRAIN_LOG, EVAL_LOG = 'grid_train.log', 'grid_eval.log'
TAIL = 20  # log lines kept in grid_status.json of a failed run
RUNNING = ('training', 'evaluating')
POLL = 0.5  # seconds between looks at the running processes
NAME_MAX = 255  # bytes of a file name (ext4, XFS, NFS, Lustre)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
LOG_LINE = re.compile(r'step (\d+)/(\d+) loss .* ETA (.+)$')  # train.py's log line
RECORD = re.compile(r'\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ')  # a line of settings.logger
ERROR_RECORD = re.compile(r'\d\d:\d\d:\d\d (ERROR|CRITICAL) ')
TORCH_LOG = re.compile(r'\[?[IWEF]\d{4} \d\d:\d\d:\d\d')  # a line of torch's own logs: W1206 20:53:44.741000 ...
RANK = re.compile(r'\[(rank)?\d+\]: ?')  # torchrun's prefix of a worker's line: '[rank0]: Traceback ...'
# torchrun's line once a worker failed (the first failure: the root cause); its own report follows (a traceback of
# its own, then separators)
TORCHRUN_REPORT = re.compile(r'failed \(exitcode: (-?\d+)\) local_rank: (\d+)')


# ---------------------------------------------------------------- make

def value_name(value):
    """A value as a folder name shows it: 32, 0.5, none, None, 0.5-1.0 for a tuple; what a file name should
    not hold becomes '-'."""
    if isinstance(value, (tuple, list)):
        return '-'.join(map(value_name, value))
    return re.sub(r'[^\w.+-]', '-', value if isinstance(value, str) else repr(value))


def folder_name(prefix, values):
    """PREFIX_NAME1VALUE1_NAME2VALUE2...; a name over NAME_MAX bytes is cut to fit, with a hash of the whole name
    after it: unique, and the same each time."""
    folder = prefix + ''.join(f'_{name}{value_name(value)}' for name, value in values.items())
    name = os.path.basename(folder).encode()
    if len(name) <= NAME_MAX:
        return folder
    digest = hashlib.sha1(name).hexdigest()[:12]
    return os.path.join(os.path.dirname(folder), name[:NAME_MAX - 13].decode(errors='ignore') + '_' + digest)


def read_blocks(path):
    """[{NAME: value}] of a --each file: blocks of `NAME = literal` lines separated by blank lines; a block of
    comments and blank lines only is none."""
    with open(path, encoding='utf-8-sig') as f:  # a byte-order mark, as some editors write one
        text = f.read()
    blocks = []
    for block in re.split(r'\n\s*\n', text):
        try:
            tree = ast.parse(block)
        except SyntaxError as e:
            raise ValueError(f'{path}: {e.msg} in the block\n{block.strip()}') from None
        values = {}
        for node in tree.body:
            where = f'{path}: `{ast.get_source_segment(block, node)}`'
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                raise ValueError(f'{where}: expected NAME = VALUE')
            name = node.targets[0].id
            try:
                settings.check_name(name)
            except ValueError as e:
                raise ValueError(f'{where}: {e}') from None
            try:
                values[name] = ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(f'{where}: the value is no Python literal (strings need quotes)') from None
        if values:
            blocks.append(values)
    if not blocks:
        raise ValueError(f'{path} holds no settings lines')
    return blocks


def combinations(assignments, each):
    """[{NAME: value}]: each --each block (or none) with every combination of the NAME=V1,V2 values. An evaluation
    setting is refused: folders that differ in it alone would train identical networks."""
    product = {}
    for text in assignments:
        name, values = settings.parse_values(text)
        if name in product:
            raise ValueError(f'{name} is given twice: list all its values in one {name}=V1,V2')
        product[name] = values
    blocks = read_blocks(each) if each else [{}]
    for block in blocks:
        twice = sorted(set(block) & set(product))
        if twice:
            raise ValueError(f'{", ".join(twice)}: in {each} and on the command line')
    for name in [*product, *(name for block in blocks for name in block)]:
        if name.startswith('EVAL_'):
            how = (f'evaluate each folder under its values with grid.py run FOLDERS --eval "{name}=V1,V2"'
                   if name in evaluation.EVAL_SETTINGS else f'set {name} in settings.py before grid.py make')
            raise ValueError(f'{name} changes only evaluations, not the trained network: folders that differ in it '
                             f'would train identical networks; {how}')
    return [{**block, **dict(zip(product, values))}
            for block in blocks for values in itertools.product(*product.values())]


def shared_outputs(values_of):
    """Raises ValueError naming two folders of values_of ({folder: its settings}) whose MODEL_DIR or LOG_DIR is one
    folder: their runs would resume, replace and report each other's files."""
    seen = {}
    for folder, values in values_of.items():
        for name in ('MODEL_DIR', 'LOG_DIR'):
            path = os.path.realpath(os.path.join(folder, str(values[name])))
            if (name, path) in seen:
                raise ValueError(f'{seen[name, path]} and {folder} have one {name}, {path}: their runs would resume '
                                 f'and replace each other\'s files. Give each folder its own {name}: a relative one '
                                 f'(./models, ./logdir) lies inside its folder')
            seen[name, path] = folder


def make(prefix, assignments, each, skip_existing):
    """Makes a folder per combination; returns the folders made. Everything is checked before anything is written,
    and a folder is whole or not there (made under a temporary name, then renamed)."""
    folders = {}
    for values in combinations(assignments, each):
        folder = folder_name(prefix, values)
        if folder in folders:
            raise ValueError(f'{folder}: two combinations give this folder name ({folders[folder]} and {values})')
        folders[folder] = values
    shared_outputs({folder: {**settings.effective(), **values} for folder, values in folders.items()})
    existing = [folder for folder in folders if os.path.lexists(folder)]
    if existing and not skip_existing:
        raise ValueError(f'already there: {", ".join(existing)}; choose another PREFIX, remove them, or give '
                         f'--skip-existing to leave them as they are')
    comment = f'# made by grid.py: python {shlex.join(sys.argv)}\n'
    for folder, values in folders.items():
        if folder in existing:
            logger.info('%s exists: left as it is', folder)
            continue
        parent = os.path.dirname(os.path.abspath(folder))
        os.makedirs(parent, exist_ok=True)
        partial = tempfile.mkdtemp(prefix='.grid_', dir=parent)
        try:
            os.makedirs(os.path.join(partial, 'models'))
            for pattern in COPIED:
                for path in glob.glob(os.path.join(glob.escape(HERE), pattern)):
                    if os.path.isfile(path):
                        shutil.copy2(path, os.path.join(partial, os.path.relpath(path, HERE)))
            with open(os.path.join(partial, 'settings.py'), 'a') as f:
                f.write('\n' + comment + ''.join(f'{name} = {value!r}\n' for name, value in values.items()))
            os.rename(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # what is left of it after an error (a full disk, Ctrl-C)
        print(folder)
    return [folder for folder in folders if folder not in existing]


# ---------------------------------------------------------------- a folder's state

class Refused(Exception):
    """A folder that cannot run as it is: its settings.py does not run, it is stale, or it cannot be written into;
    the message says why."""


class Held(Exception):
    """A folder that another live grid.py run (or a run it started) holds; the message names that grid.py."""


def read_status(folder):
    try:
        with open(os.path.join(folder, STATUS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_status(folder, **fields):
    """Updates FOLDER/grid_status.json with fields (and the time), atomically."""
    status = {**read_status(folder), **fields, 'updated': time.strftime('%Y-%m-%d %H:%M:%S')}
    path = os.path.join(folder, STATUS)
    with open(path + '.tmp', 'w') as f:
        json.dump(status, f, indent=1)
    os.replace(path + '.tmp', path)


def record_failure(folder, reason, command=None, returncode=None, tail=()):
    """grid_status.json's record of a folder that failed (the reason: the error itself) and the log line saying so."""
    write_status(folder, state='failed', command=command, returncode=returncode, reason=reason,
                 tail=list(tail) or [reason])
    logger.error('%s: %s%s', folder, f'`{command}` failed (exit {returncode}): ' if command else '', reason)


def hold_folder(folder):
    """Makes this process the grid.py run of folder until release(): an exclusive flock on FOLDER/grid.lock, with
    this process named in it (checkpoint.this_process). A flock belongs to the open file, which the runs started
    for the folder inherit (start), so the folder stays held while any of them lives, even once this process is
    killed; the kernel (or the file server: NFS, Lustre mounted with flock) drops it when the last of them exits.
    Returns the open file; raises Held naming the holder, Refused where the file cannot be written. Where the
    filesystem has no locks it warns that nothing stops a second run, and goes on."""
    try:
        lock = open(os.path.join(folder, LOCK), 'a+')
    except OSError as e:
        raise Refused(f'cannot write {os.path.join(folder, LOCK)}: {e.strerror or e}') from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        name = lock.read().strip() or UNNAMED
        lock.close()
        raise Held(name) from None
    except OSError as e:  # ENOLCK, EOPNOTSUPP...
        logger.warning('cannot lock %s (%s): nothing stops a second grid.py run in this folder; start one at a time',
                       lock.name, e.strerror or e)
    lock.seek(0)
    lock.truncate()
    lock.write(checkpoint.this_process() + '\n')
    lock.flush()
    return lock


def release(lock):
    """Lets the folder of lock (hold_folder) go: its file names no holder any more."""
    lock.truncate(0)
    lock.close()


def holder(folder):
    """The name of the live grid.py run that holds folder (its lock, hold_folder), or None. It looks by taking the
    lock, shared, for an instant: a run that wants the folder then takes it for held, and comes back to it."""
    try:
        lock = open(os.path.join(folder, LOCK))
    except OSError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or UNNAMED
        except OSError:  # a filesystem without locks
            pass
    return None


def saved(path):
    """(step, settings) of the checkpoint at path, read without its weights; (None, {}) when it is missing or
    unreadable."""
    try:
        ckpt = checkpoint.read_weights(path, mmap=True)
        return ckpt['step'], ckpt.get('settings', {})
    except (checkpoint.CheckpointError, KeyError, TypeError):
        return None, {}


def resume_point(model_dir):
    """(step, settings) of the checkpoint a rerun resumes from: the first of checkpoint.resume_order that reads,
    without its weights; (None, {}) when there is none."""
    return next((ckpt for ckpt in map(saved, checkpoint.resume_order(model_dir)) if ckpt[0] is not None), (None, {}))


def stale(model_dir, values):
    """What makes a folder's checkpoints no run of its settings (values): 'NAME ran with SETTING=old (now new), ...'
    for the checkpoint a rerun resumes from, else for final.pth (which eval.py evaluates: replaced by another run's,
    it is no result of this folder's); None when both ran with them (checkpoint.changed_settings)."""
    for name, ran_with in (('its checkpoints', resume_point(model_dir)[1]),
                           ('final.pth', saved(os.path.join(model_dir, 'final.pth'))[1])):
        changed = checkpoint.changed_settings(ran_with, values)
        if changed:
            return f'{name} ran with {checkpoint.describe_changes(changed)}'
    return None


def folder_values(folder):
    """settings.folder_settings(folder); Refused, saying so, when its settings.py does not run."""
    try:
        return settings.folder_settings(folder)
    except Exception as e:
        raise Refused(f'settings.py does not run: {type(e).__name__}: {e}') from None


def spec_values(spec):
    """{NAME: (value, ...)} that an --eval spec ('NAME=V1,V2;NAME2=V') sets; {} for '' (eval.py alone)."""
    return dict(settings.parse_values(part) for part in spec.split(';') if part.strip())


def result_files(folder, values, spec):
    """The file that eval.py writes for each evaluation of final.pth that spec asks (`eval.py --set`: every
    combination of its values) in folder, whose settings are values: LOG_DIR/evaluation.result_name('final')
    under the spec's values, as eval.py names it."""
    sets = spec_values(spec)
    files = []
    for combination in itertools.product(*sets.values()):
        with settings.applied({**values, **dict(zip(sets, combination))}):
            files.append(os.path.normpath(os.path.join(folder, settings.LOG_DIR, evaluation.result_name('final'))))
    return files


def evaluated(path, final):
    """Whether the eval.py result file at path is an evaluation of the final.pth at final as that file is now: it
    holds its step and was written after it (a final.pth trained again in place, at the same step, leaves the
    results of the one before older than it)."""
    try:
        with open(path) as f:
            step = json.load(f).get('step')
        return step == saved(final)[0] and os.path.getmtime(path) >= os.path.getmtime(final)
    except (OSError, ValueError, AttributeError):
        return False


def plan(folder, evals, processes):
    """[(argv, log file)] that folder still needs: train.py until final.pth holds ITER_MAX; then each evaluation,
    eval.py alone then each --eval spec, whose result files do not all hold final.pth's step (a spec whose files an
    earlier one writes is not run again). On a node of a several-node job that is not the first, train.py alone
    (the first evaluates). Refused when its settings.py does not run, or when the checkpoint a rerun would resume
    from ran with settings that settings.py no longer gives: its results would not be its settings'."""
    values = folder_values(folder)
    model_dir = os.path.join(folder, str(values['MODEL_DIR']))
    changes = stale(model_dir, values)
    if changes:
        raise Refused(f'stale: {changes}. Put those settings back; or remove its checkpoints and logs to train it '
                      f'anew (cd {shlex.quote(folder)} && bash clean.sh); or make a folder of its own for the new '
                      f'settings')
    final = os.path.join(model_dir, 'final.pth')
    final_step = saved(final)[0]
    train = final_step is None or final_step < values['ITER_MAX']
    multi_node = int(os.environ.get('PET_NNODES', 1)) > 1
    steps = [(launch(processes, 'train.py', multi_node), TRAIN_LOG)] if train else []
    if multi_node and int(os.environ.get('PET_NODE_RANK', 0)):
        return steps
    planned = set()
    for spec in ['', *evals]:
        files = result_files(folder, values, spec)
        if planned.issuperset(files):
            continue
        planned.update(files)
        if train or not all(evaluated(path, final) for path in files):
            sets = [word for part in spec.split(';') if part.strip() for word in ('--set', part.strip())]
            steps.append((launch(processes, 'eval.py') + sets, EVAL_LOG))
    return steps


def planned_steps(folder, evals, processes, failed):
    """plan(folder, evals, processes); [] for a folder that is done (said so) or refused (recorded as failed, and
    added to failed)."""
    try:
        steps = plan(folder, evals, processes)
    except (Refused, ValueError) as e:  # ValueError: an EVAL_* value that names no protocol
        record_failure(folder, str(e))
        failed.append(folder)
        return []
    if not steps:
        logger.info('%s: finished and evaluated, skipped', folder)
    return steps


# ---------------------------------------------------------------- run on this machine

def launch(processes, script, multi_node=False):
    """python SCRIPT, or torchrun with that many processes on this node (several nodes: torchrun reads them from
    the PET_* variables that a Slurm job sets)."""
    if processes == 1 and not multi_node:
        return [sys.executable, script]
    return [sys.executable, '-m', 'torch.distributed.run', *([] if multi_node else ['--standalone']),
            f'--nproc_per_node={processes}', script]


def log_tail(path, lines=TAIL):
    """The last lines of the log at path (None: all of its last 64 kB)."""
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            return f.read().decode(errors='replace').splitlines()[-lines if lines else 0:]
    except OSError:
        return []


def command_output(path):
    """What the last command wrote into the log at path: its lines after the ==== line that start() wrote."""
    lines = log_tail(path, None)
    return lines[max((i + 1 for i, line in enumerate(lines) if line.startswith('==== ')), default=0):]


def failure_reason(lines, code):
    """The error that a failed command's output (lines) ends with: an exception's own line (the first after its
    last traceback), else the message it exited with (the first line after its last log record), else its last
    error log record; torchrun's report of a failed worker (a traceback of torchrun's, then separators) and torch's
    own log lines are passed over. A process killed by a signal (code: its exit code), or a worker of torchrun that
    was (the kernel's out-of-memory killer: SIGKILL), is that, whatever the others wrote as they lost it. Without
    any of them, how it ended."""
    end = next((i for i, line in enumerate(lines) if TORCHRUN_REPORT.search(line)), len(lines))
    worker = TORCHRUN_REPORT.search(lines[end]) if end < len(lines) else None
    if worker and int(worker.group(1)) < 0:
        return f'a worker of torchrun (local rank {worker.group(2)}) was killed by {signal_name(-int(worker.group(1)))}'
    if code < 0:
        return f'killed by {signal_name(-code)}'
    lines = [RANK.sub('', line, count=1).rstrip() for line in lines[:end]]
    lines = [line for line in lines if line.strip() and not TORCH_LOG.match(line)]
    records = [i for i, line in enumerate(lines) if RECORD.match(line)]
    text = lines[records[-1] + 1:] if records else lines  # what it printed after its last log record
    tracebacks = [i for i, line in enumerate(text) if line.startswith('Traceback (most recent call last)')]
    if tracebacks:
        return next((line for line in text[tracebacks[-1] + 1:] if not line[:1].isspace()), text[-1])
    if text:
        return text[0]
    errors = [line for line in lines if ERROR_RECORD.match(line)]
    if errors:
        return ERROR_RECORD.sub('', errors[-1], count=1)
    return f'exit {code} without an error message'


def signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal
        return f'signal {number}'


def runs_die_with_this_process():
    """A preexec_fn for the runs this process starts: on Linux, each gets SIGTERM when this process dies, however
    it dies (prctl PR_SET_PDEATHSIG), so that none goes on unattended (train.py saves latest.pth and stops);
    None elsewhere."""
    if sys.platform != 'linux':
        return None
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def die_with_parent():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return die_with_parent


def start(job, where, gpus):
    """Starts the next command of job ({'folder', 'lock', 'steps'}) in its folder, output appended to its log. The
    run inherits the folder's lock, has a process group of its own (a Ctrl-C or a closed terminal reaches grid.py,
    which passes signals on) and dies with this process (runs_die_with_this_process)."""
    argv, log_name = job['steps'][0]
    env = {name: value for name, value in os.environ.items()
           if not (log_name == EVAL_LOG and name.startswith('PET_'))}  # evaluation runs on the first node alone
    if gpus is not None:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(gpus)
    shown = shlex.join(['python' if argv[0] == sys.executable else argv[0], *argv[1:]])
    with open(os.path.join(job['folder'], log_name), 'a') as log:
        log.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} grid.py: {shown} on {where}\n')
        log.flush()
        job['process'] = subprocess.Popen(argv, cwd=job['folder'], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          pass_fds=[job['lock'].fileno()], process_group=0,
                                          preexec_fn=runs_die_with_this_process())
    job['shown'] = shown
    write_status(job['folder'], state='training' if log_name == TRAIN_LOG else 'evaluating', where=where,
                 command=shown)


def run_local(folders, evals, slots, processes, where_of):
    """Runs folders' commands, one folder per slot (a tuple of GPU ids, or None: leave CUDA_VISIBLE_DEVICES
    as it is) at a time, each while this process holds the folder (hold_folder). A folder that another run holds
    is come back to once the others are started, until that run lets it go (then it is finished, or resumes
    here). Returns (failed and refused folders, the signal that stopped the runs or None)."""
    queue, held = collections.deque(folders), {}  # held: folder → the grid.py that holds it, for those waited for
    running, failed, stopped = {}, [], []

    def stop(signum, frame):
        stopped.append(signum)
        for job in running.values():
            job['process'].send_signal(signum)  # train.py saves latest.pth and exits; eval.py stops

    def begin(slot, job):
        start(job, where_of(slot), slot)
        running[slot] = job
        if stopped:  # the signal came while it started, before stop() could pass it on
            job['process'].send_signal(stopped[0])
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while running or (queue or held) and not stopped:
            if not queue:
                queue.extend(held)
            for slot in slots:
                while slot not in running and queue and not stopped:
                    folder = queue.popleft()
                    try:
                        lock = hold_folder(folder)
                    except Held as e:
                        if folder not in held:
                            logger.info('%s is held by %s: waiting for it', folder, e)
                        held[folder] = str(e)
                        continue
                    except Refused as e:  # a folder this process cannot write into
                        logger.error('%s: %s', folder, e)
                        failed.append(folder)
                        continue
                    held.pop(folder, None)
                    steps = planned_steps(folder, evals, processes, failed)
                    if not steps:
                        release(lock)
                        continue
                    logger.info('%s: %s on %s', folder, steps[0][0][-1], where_of(slot))
                    begin(slot, {'folder': folder, 'lock': lock, 'steps': steps})
            time.sleep(POLL)
            for slot, job in list(running.items()):
                code = job['process'].poll()
                if code is None:
                    continue
                folder, (_, log_name) = job['folder'], job['steps'].pop(0)
                if code and stopped:
                    write_status(folder, state='interrupted')
                elif code:
                    lines = command_output(os.path.join(folder, log_name))
                    record_failure(folder, failure_reason(lines, code), job['shown'], code, lines[-TAIL:])
                    failed.append(folder)
                elif job['steps'] and not stopped:
                    begin(slot, job)
                    continue
                elif not job['steps']:
                    write_status(folder, state='finished', reason=None, tail=[], evals=evals)
                    logger.info('%s: finished', folder)
                else:
                    write_status(folder, state='interrupted')
                release(job['lock'])
                del running[slot]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failed, stopped[0] if stopped else None


def gpu_slots(gpus, per_run):
    """Groups of per_run GPUs as the runs' CUDA_VISIBLE_DEVICES, from gpus ('0,1,2,3': the GPUs this process sees,
    as torch numbers them: within an inherited CUDA_VISIBLE_DEVICES, so that of GPUs 2,3 --gpus 0 is GPU 2; None:
    every one it sees; '': none); [None] without GPUs: one run at a time on the CPU. An id that this process does
    not see, or any on a machine without CUDA, is a ValueError."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    inherited = os.environ.get('CUDA_VISIBLE_DEVICES')
    visible = [d.strip() for d in inherited.split(',')][:count] if inherited is not None else [
        str(i) for i in range(count)]
    asked = visible if gpus is None else [gpu.strip() for gpu in gpus.split(',') if gpu.strip()]
    if gpus is not None and asked:
        seen = f'{count} GPUs: 0..{count - 1}' + (f' of CUDA_VISIBLE_DEVICES={inherited}' if inherited else '')
        if not count:
            hidden = f' with CUDA_VISIBLE_DEVICES={inherited!r}' if inherited is not None else ''
            raise ValueError(f'--gpus {gpus}: this machine has no CUDA device that PyTorch sees{hidden} '
                             f'(torch.cuda.is_available() is False); leave --gpus out to run on the CPU')
        wrong = [gpu for gpu in asked if not (gpu.isdigit() and int(gpu) < count)] or \
            [gpu for i, gpu in enumerate(asked) if gpu in asked[:i]]
        if wrong:
            raise ValueError(f'--gpus {gpus}: {wrong[0]} is no GPU of this process, or given twice (it sees {seen})')
        asked = [visible[int(gpu)] for gpu in asked]
    if not asked:
        return [None]
    if len(asked) < per_run:
        raise ValueError(f'--gpus-per-run {per_run} but only {len(asked)} GPUs ({",".join(asked)})')
    if len(asked) % per_run:
        logger.warning('GPUs %s are left idle: %d are not a multiple of --gpus-per-run %d',
                       ','.join(asked[len(asked) - len(asked) % per_run:]), len(asked), per_run)
    return [tuple(asked[i:i + per_run]) for i in range(0, len(asked) - per_run + 1, per_run)]


# ---------------------------------------------------------------- Slurm through submitit

class FolderJob:
    """A submitit job: `grid.py run FOLDER` on the job's node(s). State (the folder, the options, the running
    process) is what submitit pickles and what its time-limit and preemption signal needs: checkpoint() stops
    the run (train.py saves latest.pth on SIGTERM) and returns the job to requeue, which resumes from it."""

    def __init__(self, folder, options):
        self.folder, self.options, self.process = folder, options, None

    def __call__(self):
        import submitit
        job = submitit.JobEnvironment()
        env = dict(os.environ)
        if job.num_nodes > 1:  # torchrun's options from the environment (PET_*): one process per node runs it
            env.update(PET_NNODES=str(job.num_nodes), PET_NODE_RANK=str(job.node),
                       PET_MASTER_ADDR=job.hostnames[0], PET_MASTER_PORT='29500')
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, 'grid.py'), 'run', self.folder,
                                         '--in-job', str(job.job_id), *self.options], env=env,
                                        preexec_fn=runs_die_with_this_process())
        code = self.process.wait()
        if code:
            raise RuntimeError(f'grid.py run {self.folder} failed (exit {code}): {os.path.join(self.folder, STATUS)}')

    def checkpoint(self, *args, **kwargs):
        """submitit's handler of the time-limit and preemption signal, which runs while __call__ is inside
        process.wait(): stops the run (grid.py passes SIGTERM on, train.py saves latest.pth) and waits here until
        it ended, before submitit requeues the job (on Slurm a requeue ends every process of the job). It waits
        with os.waitpid: Popen.wait would wait for the lock that the interrupted wait holds, forever. Returns the
        job to requeue; submitit then exits this one, out of __call__'s wait."""
        import submitit
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.returncode = os.waitstatus_to_exitcode(os.waitpid(self.process.pid, 0)[1])
            except ChildProcessError:  # __call__'s wait had it already
                pass
        return submitit.helpers.DelayedSubmission(FolderJob(self.folder, self.options))

    def __getstate__(self):
        return {**self.__dict__, 'process': None}  # a process is no state to pickle


def submit(folders, evals, args):
    """Submits a job per folder that has something left to do and that no live grid.py run holds; --slurm local
    runs them one after another here. Returns the folders refused here and, with --slurm local, those whose job
    failed."""
    import submitit  # here: only --slurm needs it
    options = ['--gpus-per-run', str(args.gpus_per_run), *(word for spec in evals for word in ('--eval', spec))]
    failed = []
    for folder in folders:
        held_by = holder(folder)
        if held_by:
            logger.info('%s is held by %s: not submitted', folder, held_by)
            continue
        try:
            steps = plan(folder, evals, args.gpus_per_run)
        except Refused as e:
            record_failure(folder, str(e))
            failed.append(folder)
            continue
        except ValueError:  # a result file named by a precision this machine cannot compute (EVAL_AMP = True on a
            steps = None    # login node without a GPU): the job's own grid.py run plans it on the node that evaluates
        if steps == []:
            logger.info('%s: finished and evaluated, skipped', folder)
            continue
        executor = submitit.AutoExecutor(os.path.join(folder, 'grid_submitit'),
                                         cluster='local' if args.slurm == 'local' else 'slurm')
        executor.update_parameters(name=os.path.basename(os.path.abspath(folder)), timeout_min=args.time,
                                   nodes=args.nodes, tasks_per_node=1, gpus_per_node=args.gpus_per_run,
                                   cpus_per_task=(settings.NUM_WORKERS + 1) * args.gpus_per_run,  # data workers
                                   slurm_partition=args.slurm, slurm_account=args.account)
        job = executor.submit(FolderJob(os.path.abspath(folder), options))
        write_status(folder, state='submitted', where=f'job {job.job_id}')
        print(f'{folder}: job {job.job_id}')
        if args.slurm == 'local' and job.exception() is not None:  # waits for the job
            failed.append(folder)
    return failed


# ---------------------------------------------------------------- status

def status_line(folder):
    """[folder, state, step/ITER_MAX, ETA, best val mIoU, recipe (dataset.recipe_label)] as text. The state: stale
    (the settings that changed since its checkpoints), what grid_status.json records while a grid.py run holds the
    folder (training or evaluating where, and that run), interrupted once none does, failed with the error, finished
    (or what a rerun runs, where a result went or final.pth changed since), trained (final.pth holds ITER_MAX, not
    evaluated by grid.py) or waiting. The step is that of the checkpoint a rerun resumes from, with the last logged
    step after it where that differs (a run stopped between two saves)."""
    status = read_status(folder)
    try:
        values = settings.folder_settings(folder)
    except Exception as e:
        return [folder, f'settings.py does not run: {type(e).__name__}: {e}', '-', '-', '-', '-']
    model_dir, log_dir = (os.path.join(folder, str(values[name])) for name in ('MODEL_DIR', 'LOG_DIR'))
    step = resume_point(model_dir)[0]
    changes = stale(model_dir, values)
    held_by = holder(folder)
    try:
        recipe = dataset.recipe_label(checkpoint.folder_recipe(model_dir, values))
    except ValueError as e:  # a RECIPE of no recipe of its DATASET
        recipe = str(e)
    state = status.get('state', 'waiting')
    logged, eta = None, '-'
    for line in reversed(log_tail(os.path.join(folder, TRAIN_LOG), 200)):
        match = LOG_LINE.search(line)
        if match:
            logged, eta = int(match.group(1)), match.group(3).strip()
            break
    if changes:
        state = f'stale: {changes}'
    elif state == 'submitted' or state in RUNNING and held_by:
        state = f'{state} on {status.get("where")}' if status.get('where') else state
    elif state in RUNNING:
        state = 'interrupted'  # no run holds it: the grid.py that wrote it is gone (killed)
    elif state == 'failed':
        state = f'failed ({": ".join(filter(None, (status.get("command"), status.get("reason", "")[:100])))})'
    elif state == 'finished':  # since then, a result may have gone, final.pth been trained again, ITER_MAX raised
        try:
            todo = [shlex.join(argv[1:]) for argv, _ in plan(folder, status.get('evals', []), 1)]
        except ValueError as e:
            todo = [str(e)]
        state = f'finished before; a rerun runs {", ".join(todo)}' if todo else state
    elif state == 'waiting' and (saved(os.path.join(model_dir, 'final.pth'))[0] or 0) >= values['ITER_MAX']:
        state = 'trained'
    if held_by:
        state += f' (held by {held_by})'
    entries = [e for e in evaluation.read_val_log(os.path.join(log_dir, evaluation.VAL_LOG))
               if isinstance(e.get('mIoU'), (int, float))]
    best = max(entries, key=lambda e: e['mIoU'], default=None)
    steps = f'{step or 0}/{values["ITER_MAX"]}' + (f' (logged {logged})' if logged not in (None, step or 0) else '')
    return [folder, state, steps, eta if state.startswith('training') and held_by else '-',
            '-' if best is None else f'{100 * best["mIoU"]:.2f} (step {best["step"]})', recipe]


def print_status(folders):
    rows = [['folder', 'state', 'step', 'ETA', 'best val mIoU', 'recipe']] + [status_line(folder) for folder in folders]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# ---------------------------------------------------------------- command line

def experiment_folders(folders):
    """The folders, each once, each an experiment (settings.py, train.py, eval.py); an error names one that is not."""
    unique = {}
    for folder in folders:
        missing = [name for name in ('settings.py', 'train.py', 'eval.py')
                   if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            raise FileNotFoundError(f'{folder} is no experiment folder: it has no {", ".join(missing)}')
        unique.setdefault(os.path.realpath(folder), folder)
    return list(unique.values())


def eval_specs(specs):
    """--eval texts checked: NAME=V1,V2 parts separated by ';', evaluation settings only, each once in a spec."""
    for spec in specs:
        names = list(spec_values(spec))
        parts = [part for part in spec.split(';') if part.strip()]
        if not parts:
            raise ValueError(f'--eval {spec!r} sets nothing: give NAME=V1,V2 parts separated by ";"')
        if len(names) < len(parts):
            raise ValueError(f'--eval {spec!r} sets a setting twice: list all its values in one NAME=V1,V2')
        for name in names:
            if name not in evaluation.EVAL_SETTINGS:
                raise ValueError(f'--eval {spec!r}: {name} is no evaluation setting '
                                 f'({", ".join(evaluation.EVAL_SETTINGS)}); a grid varies it with grid.py make')
    return specs


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    made = sub.add_parser('make', help='a folder per combination of settings',
                                description='Makes a clean experiment folder per combination of settings.')
    made.add_argument('prefix', metavar='PREFIX', help='path and start of the folders\' names (abl/t → abl/t_...)')
    made.add_argument('assignments', nargs='*', metavar='NAME=V1,V2',
                      help='a setting and its values, Python literals separated by commas; quote strings and the '
                           'whole argument: "EM_NORM=\'l2\',\'none\'"; a tuple is one value: "SCALES=(0.5,1.0),(1.0,)"')
    made.add_argument('--each', metavar='FILE',
                      help='blocks of `NAME = literal` lines separated by blank lines: a folder per block')
    made.add_argument('--skip-existing', action='store_true', help='leave folders that exist as they are')
    run = sub.add_parser('run', help='train and evaluate folders', description='Trains, then evaluates, '
                               'each folder: on this machine\'s GPUs in turn, or as Slurm jobs.')
    run.add_argument('folders', nargs='+', metavar='FOLDER')
    run.add_argument('--gpus', metavar='0,1,2,3', help='GPU ids to use (default: every GPU; none: the CPU)')
    run.add_argument('--gpus-per-run', type=int, default=1, metavar='N',
                     help='GPUs of one run; N > 1 runs train.py and eval.py under torchrun (default: 1)')
    run.add_argument('--eval', action='append', default=[], metavar='"NAME=V1,V2;NAME2=V"',
                     help='also `eval.py --set NAME=V1,V2 --set NAME2=V` (evaluation settings only); repeatable, '
                          'e.g. --eval "EVAL_SCALES=(0.5,0.75,1.0,1.25,1.5,1.75);EVAL_FLIP=True" for the paper\'s '
                          'multi-scale + flip')
    run.add_argument('--slurm', metavar='PARTITION',
                     help="submit a job per folder to this Slurm partition through submitit; 'local': submitit's "
                          "local executor on this machine, one job after another")
    run.add_argument('--nodes', type=int, default=1, help='nodes per job, with --slurm (default: 1)')
    run.add_argument('--time', type=int, default=1440, metavar='MINUTES',
                     help='time limit per job, with --slurm (default: 1440); a job that reaches it is requeued')
    run.add_argument('--account', help='Slurm account to charge, with --slurm')
    run.add_argument('--in-job', metavar='JOB_ID', help=argparse.SUPPRESS)  # FolderJob runs grid.py run with it
    status = sub.add_parser('status', help='where each folder stands', description='A line per folder: '
                                  'state, step/ITER_MAX, ETA, best validation mIoU.')
    status.add_argument('folders', nargs='+', metavar='FOLDER')
    args = parser.parse_args()
    if args.command == 'make' and not (args.assignments or args.each):
        parser.error('make: give NAME=V1,V2 settings or --each FILE')
    if args.command == 'run' and args.gpus_per_run < 1 or args.command == 'run' and args.nodes < 1:
        parser.error('--gpus-per-run and --nodes must be at least 1')
    if args.command == 'run' and args.nodes > 1 and not args.slurm and not args.in_job:
        parser.error('--nodes needs --slurm: on this machine a run has its node')
    return args


def main():
    args = parse_args()
    if args.command == 'make':
        make(args.prefix, args.assignments, args.each, args.skip_existing)
        return
    folders = experiment_folders(args.folders)
    if args.command == 'status':
        print_status(folders)
        return
    evals = eval_specs(args.eval)
    values_of = {}
    for folder in folders:
        try:
            values_of[folder] = settings.folder_settings(folder)
        except Exception:  # refused when its turn comes
            pass
    shared_outputs(values_of)  # before anything trains
    if args.slurm:
        failed = submit(folders, evals, args)
        print_status(folders)
    else:
        def where(slot):
            if args.in_job:
                return f'job {args.in_job} ({socket.gethostname()})'
            return 'CPU' if slot is None else 'GPU ' + ','.join(slot)
        slots = [None] if args.in_job else gpu_slots(args.gpus, args.gpus_per_run)  # a job runs on what it was given
        failed, stopped = run_local(folders, evals, slots, args.gpus_per_run, where)
        if stopped:
            print(f'stopped by {signal.Signals(stopped).name}: each run saved latest.pth. To continue: '
                  f'python {shlex.join(sys.argv)}', file=sys.stderr)
            raise SystemExit(128 + stopped)
    if failed:
        raise SystemExit(f'{len(failed)} of {len(folders)} folders failed or were refused (their grid_status.json '
                         f'and logs say why): {" ".join(failed)}')

if __name__ == '__main__':
    runtime.run_script(main)
