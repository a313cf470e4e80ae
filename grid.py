"""Ablation grids: one experiment folder per combination of settings, each trained then evaluated, on every GPU
of this machine in turn or as Slurm jobs, and where each one stands.

    python grid.py make abl/t STAGE_NUM=1,2,3,4,5,6        # abl/t_STAGE_NUM1 ... abl/t_STAGE_NUM6
    python grid.py make abl/k EMA_CHANNELS=256,512 N_BASES=32,64  # each combination: abl/k_EMA_CHANNELS256_N_BASES32...
    python grid.py make abl/n "EM_NORM='l2','none'" "EVAL_SCALES=(1.0,),(0.5,1.0,1.5)"
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
("EVAL_SCALES=(1.0,),(0.5,1.0,1.5)": two). --each FILE takes blocks of `NAME = literal` lines separated by blank
lines (# comments allowed), one folder per block (times the NAME=V1,V2 product, if any). A name that is no setting
or a folder that exists already stops the command before anything is written (--skip-existing leaves those
folders as they are).

run: in each folder, `python train.py` (torchrun with --gpus-per-run > 1), then `python eval.py` and one
`python eval.py --set ...` per --eval, each run's output appended to grid_train.log / grid_eval.log there and its
state to grid_status.json. A run per group of --gpus-per-run GPUs (CUDA_VISIBLE_DEVICES) until the queue is
empty; one at a time on a machine without GPUs. A finished and evaluated folder is skipped, an interrupted one
resumes (train.py resumes from latest.pth), a failing one is recorded with its log's tail and the queue goes on.
Ctrl-C (or SIGTERM) is passed on to the runs, which save latest.pth and stop; rerunning the command continues.
--slurm PARTITION submits each folder as a job through submitit (logs in FOLDER/grid_submitit/), which runs
`grid.py run FOLDER` on its node; a job at its time limit or preempted stops train.py (latest.pth), is requeued
and resumes (submitit's default: up to 3 time limits, any number of preemptions). Folders and this checkout must
lie on a filesystem the nodes share. --slurm local runs the same jobs with submitit's local executor on this
machine, one after another: a grid tried before it goes to the cluster.

status: a line per folder: its state (waiting, training or evaluating on which GPUs or job, finished, failed,
interrupted), step/ITER_MAX, the ETA of the last log line of a running training, the best validation mIoU
(LOG_DIR/val.jsonl), and the published recipe its run was compared with ('paper VOC, 3 differ', as compare.py's
recipe column).
"""
import argparse
import ast
import collections
import glob
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

import checkpoint
import dataset
import evaluation
import runtime
import settings

logger = settings.logger
HERE = os.path.dirname(os.path.abspath(__file__))
COPIED = ('*.py', '*.sh', '*.md', 'requirements.txt', '.gitignore', os.path.join('models', 'README.md'))
STATUS = 'grid_status.json'
TRAIN_LOG, EVAL_LOG = 'grid_train.log', 'grid_eval.log'
TAIL = 20  # log lines kept in grid_status.json of a failed run
RUNNING = ('training', 'evaluating')
POLL = 0.5  # seconds between looks at the running processes
LOG_LINE = re.compile(r'step (\d+)/(\d+) loss .* ETA (.+)$')  # train.py's log line


# ---------------------------------------------------------------- make

def value_name(value):
    """A value as a folder name shows it: 32, 0.5, none, None, 0.5-1.0 for a tuple; what a file name should
    not hold becomes '-'."""
    if isinstance(value, (tuple, list)):
        return '-'.join(map(value_name, value))
    return re.sub(r'[^\w.+-]', '-', value if isinstance(value, str) else repr(value))


def read_blocks(path):
    """[{NAME: value}] of a --each file: blocks of `NAME = literal` lines separated by blank lines."""
    with open(path) as f:
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
    """[{NAME: value}]: each --each block (or none) with every combination of the NAME=V1,V2 values."""
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
    return [{**block, **dict(zip(product, values))}
            for block in blocks for values in itertools.product(*product.values())]


def make(prefix, assignments, each, skip_existing):
    """Makes a folder per combination; returns the folders made. Everything is checked before anything is written."""
    folders = {}
    for values in combinations(assignments, each):
        folder = prefix + ''.join(f'_{name}{value_name(value)}' for name, value in values.items())
        if folder in folders:
            raise ValueError(f'{folder}: two combinations give this folder name ({folders[folder]} and {values})')
        folders[folder] = values
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
        partial = tempfile.mkdtemp(prefix='.grid_', dir=parent)  # renamed when whole: no half-made folder
        os.makedirs(os.path.join(partial, 'models'))
        for pattern in COPIED:
            for path in glob.glob(os.path.join(glob.escape(HERE), pattern)):
                if os.path.isfile(path):
                    shutil.copy2(path, os.path.join(partial, os.path.relpath(path, HERE)))
        with open(os.path.join(partial, 'settings.py'), 'a') as f:
            f.write('\n' + comment + ''.join(f'{name} = {value!r}\n' for name, value in values.items()))
        os.rename(partial, folder)
        print(folder)
    return [folder for folder in folders if folder not in existing]


# ---------------------------------------------------------------- a folder's state

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


def saved_step(model_dir, name):
    """The step of MODEL_DIR/name, read without its weights; None when it is missing or unreadable."""
    try:
        return checkpoint.read_weights(os.path.join(model_dir, name), mmap=True)['step']
    except (checkpoint.CheckpointError, KeyError, TypeError):
        return None


def eval_key(spec):
    return spec or 'eval.py'  # grid_status.json's name of an evaluation: eval.py alone, or its --eval text


def progress(folder):
    """(settings, MODEL_DIR, LOG_DIR, the step of final.pth or None) of an experiment folder."""
    values = settings.folder_settings(folder)
    model_dir, log_dir = (os.path.join(folder, str(values[name])) for name in ('MODEL_DIR', 'LOG_DIR'))
    return values, model_dir, log_dir, saved_step(model_dir, 'final.pth')


def remaining(folder, evals):
    """(train?, the --eval specs still to run ('' for plain eval.py)) of folder: nothing left when final.pth holds
    ITER_MAX and grid_status.json records each evaluation of that step."""
    values, _, _, final = progress(folder)
    if final is None or final < values['ITER_MAX']:
        return True, ['', *evals]
    evaluated = read_status(folder).get('evaluated', {})
    return False, [spec for spec in ['', *evals] if evaluated.get(eval_key(spec)) != final]


# ---------------------------------------------------------------- run on this machine

def launch(processes, script, multi_node=False):
    """python SCRIPT, or torchrun with that many processes on this node (several nodes: torchrun reads them from
    the PET_* variables that a Slurm job sets)."""
    if processes == 1 and not multi_node:
        return [sys.executable, script]
    return [sys.executable, '-m', 'torch.distributed.run', *([] if multi_node else ['--standalone']),
            f'--nproc_per_node={processes}', script]


def commands(folder, evals, processes):
    """[(argv, log file, eval key or None)] that folder still needs: train.py, then each evaluation. On a node of
    a several-node job that is not the first, train.py alone (the first evaluates)."""
    train, todo = remaining(folder, evals)
    multi_node = int(os.environ.get('PET_NNODES', 1)) > 1
    steps = [(launch(processes, 'train.py', multi_node), TRAIN_LOG, None)] if train else []
    if multi_node and int(os.environ.get('PET_NODE_RANK', 0)):
        return steps
    for spec in todo:
        sets = [word for part in spec.split(';') if part.strip() for word in ('--set', part.strip())]
        steps.append((launch(processes, 'eval.py') + sets, EVAL_LOG, eval_key(spec)))
    return steps


def log_tail(path, lines=TAIL):
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - 65536))
            return f.read().decode(errors='replace').splitlines()[-lines:]
    except OSError:
        return []


def start(job, where, gpus):
    """Starts the next command of job ({'folder', 'steps'}) in its folder, output appended to its log."""
    argv, log_name, _ = job['steps'][0]
    env = {name: value for name, value in os.environ.items()
           if not (log_name == EVAL_LOG and name.startswith('PET_'))}  # evaluation runs on the first node alone
    if gpus is not None:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(gpus)
    shown = shlex.join(['python' if argv[0] == sys.executable else argv[0], *argv[1:]])
    with open(os.path.join(job['folder'], log_name), 'a') as log:
        log.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} grid.py: {shown} on {where}\n')
        log.flush()
        job['process'] = subprocess.Popen(argv, cwd=job['folder'], env=env, stdout=log, stderr=subprocess.STDOUT)
    job['shown'] = shown
    write_status(job['folder'], state='training' if log_name == TRAIN_LOG else 'evaluating', where=where,
                 host=socket.gethostname(), pid=job['process'].pid, command=shown)


def run_local(folders, evals, slots, processes, where_of):
    """Runs folders' commands, one folder per slot (a tuple of GPU ids, or None: leave CUDA_VISIBLE_DEVICES
    as it is) at a time. Returns (failed folders, the signal that stopped the runs or None)."""
    queue = collections.deque()
    for folder in folders:
        try:
            steps = commands(folder, evals, processes)
        except Exception as e:  # a settings.py that does not run: recorded, the queue goes on
            message = f'settings.py does not run: {type(e).__name__}: {e}'
            write_status(folder, state='failed', command='settings.py', returncode=None, tail=[message])
            logger.error('%s: %s', folder, message)
            continue
        if steps:
            write_status(folder, state='waiting', where='', host=socket.gethostname(), pid=os.getpid())
            queue.append({'folder': folder, 'steps': steps})
        else:
            logger.info('%s: finished and evaluated, skipped', folder)
    running, failed, stopped = {}, [], []

    def stop(signum, frame):
        stopped.append(signum)
        for job in running.values():
            job['process'].send_signal(signum)  # train.py saves latest.pth and exits; eval.py stops
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while running or queue and not stopped:
            for slot in slots:
                if slot not in running and queue and not stopped:
                    running[slot] = queue.popleft()
                    logger.info('%s: %s on %s', running[slot]['folder'], running[slot]['steps'][0][0][-1],
                                where_of(slot))
                    start(running[slot], where_of(slot), slot)
            time.sleep(POLL)
            for slot, job in list(running.items()):
                code = job['process'].poll()
                if code is None:
                    continue
                folder, (_, log_name, key) = job['folder'], job['steps'].pop(0)
                if code == 0 and key:
                    _, _, _, final = progress(folder)
                    write_status(folder, evaluated={**read_status(folder).get('evaluated', {}), key: final})
                if code and stopped:
                    write_status(folder, state='interrupted', pid=None)
                elif code:
                    tail = log_tail(os.path.join(folder, log_name))
                    write_status(folder, state='failed', pid=None, returncode=code, tail=tail)
                    logger.error('%s: `%s` failed (exit %d), see %s:\n    %s', folder, job['shown'], code,
                                 os.path.join(folder, log_name), '\n    '.join(tail[-5:]))
                    failed.append(folder)
                elif job['steps'] and not stopped:
                    start(job, where_of(slot), slot)
                    continue
                elif not job['steps']:
                    write_status(folder, state='finished', pid=None, tail=[])
                    logger.info('%s: finished', folder)
                else:
                    write_status(folder, state='interrupted', pid=None)
                del running[slot]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for job in queue:  # not started after a stop
        write_status(job['folder'], pid=None)
    return failed, stopped[0] if stopped else None


def gpu_slots(gpus, per_run):
    """Groups of per_run GPU ids from gpus ('0,1,2,3'; None: every GPU this process sees); [None] without GPUs."""
    if gpus is None:
        visible = os.environ.get('CUDA_VISIBLE_DEVICES')
        if visible is not None:
            gpus = visible
        else:
            import torch  # here: status and make need no CUDA
            gpus = ','.join(map(str, range(torch.cuda.device_count())))
    ids = [gpu.strip() for gpu in gpus.split(',') if gpu.strip()]
    if not ids:
        return [None]
    if len(ids) < per_run:
        raise ValueError(f'--gpus-per-run {per_run} but only {len(ids)} GPUs ({",".join(ids)})')
    if len(ids) % per_run:
        logger.warning('GPUs %s are left idle: %d are not a multiple of --gpus-per-run %d',
                       ','.join(ids[len(ids) - len(ids) % per_run:]), len(ids), per_run)
    return [tuple(ids[i:i + per_run]) for i in range(0, len(ids) - per_run + 1, per_run)]


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
                                         '--in-job', str(job.job_id), *self.options], env=env)
        code = self.process.wait()
        if code:
            raise RuntimeError(f'grid.py run {self.folder} failed (exit {code}): {os.path.join(self.folder, STATUS)}')

    def checkpoint(self, *args, **kwargs):
        import submitit
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait()
        return submitit.helpers.DelayedSubmission(FolderJob(self.folder, self.options))

    def __getstate__(self):
        return {**self.__dict__, 'process': None}  # a process is no state to pickle


def submit(folders, evals, args):
    """Submits a job per folder that has something left to do; --slurm local runs them one after another here."""
    import submitit  # here: only --slurm needs it
    options = ['--gpus-per-run', str(args.gpus_per_run), *(word for spec in evals for word in ('--eval', spec))]
    for folder in folders:
        try:
            done = remaining(folder, evals) == (False, [])
        except Exception:  # a settings.py that does not run: the job records why
            done = False
        if done:
            logger.info('%s: finished and evaluated, skipped', folder)
            continue
        executor = submitit.AutoExecutor(os.path.join(folder, 'grid_submitit'),
                                         cluster='local' if args.slurm == 'local' else 'slurm')
        executor.update_parameters(name=os.path.basename(os.path.abspath(folder)), timeout_min=args.time,
                                   nodes=args.nodes, tasks_per_node=1, gpus_per_node=args.gpus_per_run,
                                   cpus_per_task=(settings.NUM_WORKERS + 1) * args.gpus_per_run,  # data workers
                                   slurm_partition=args.slurm, slurm_account=args.account)
        job = executor.submit(FolderJob(os.path.abspath(folder), options))
        write_status(folder, state='submitted', where=f'job {job.job_id}', host=None, pid=None)
        print(f'{folder}: job {job.job_id}')
        if args.slurm == 'local':
            job.wait()


# ---------------------------------------------------------------- status

def alive(status):
    """Whether the process grid_status.json names runs; True where that cannot be told (another machine)."""
    if status.get('host') != socket.gethostname() or not status.get('pid'):
        return True
    try:
        os.kill(status['pid'], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def status_line(folder):
    """[folder, state, step/ITER_MAX, ETA, best val mIoU, recipe (dataset.recipe_label)] as text."""
    status = read_status(folder)
    try:
        values, model_dir, log_dir, final = progress(folder)
    except Exception as e:
        return [folder, f'settings.py does not run: {type(e).__name__}: {e}', '-', '-', '-', '-']
    try:
        recipe = dataset.recipe_label(checkpoint.folder_recipe(model_dir, values))
    except ValueError as e:  # a RECIPE of no recipe of its DATASET
        recipe = str(e)
    state = status.get('state', 'waiting')
    if state in RUNNING + ('waiting',) and status.get('pid') and not alive(status):
        state = 'interrupted'  # the grid.py or the run that wrote it is gone (killed)
    steps = [s for s in (final, saved_step(model_dir, 'latest.pth')) if s is not None]
    eta = '-'
    for line in reversed(log_tail(os.path.join(folder, TRAIN_LOG), 200)):
        match = LOG_LINE.search(line)
        if match:
            steps.append(int(match.group(1)))
            eta = match.group(3).strip() if state == 'training' else '-'
            break
    if state in RUNNING + ('submitted',):
        state = f'{state} on {status.get("where")}' if status.get('where') else state
    elif state == 'failed':
        tail = status.get('tail') or ['']
        state = f'failed ({status.get("command", "")}: {tail[-1].strip()[:100]})'
    elif state == 'waiting' and final is not None and final >= values['ITER_MAX']:
        state = 'trained'
    entries = [e for e in evaluation.read_val_log(os.path.join(log_dir, evaluation.VAL_LOG))
               if isinstance(e.get('mIoU'), (int, float))]
    best = max(entries, key=lambda e: e['mIoU'], default=None)
    return [folder, state, f'{max(steps, default=0)}/{values["ITER_MAX"]}', eta,
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
    """--eval texts checked: NAME=V1,V2 parts separated by ';', evaluation settings only."""
    for spec in specs:
        for part in filter(str.strip, spec.split(';')):
            name, _ = settings.parse_values(part)
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
    if args.slurm:
        submit(folders, evals, args)
        print_status(folders)
        return
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
        raise SystemExit(f'{len(failed)} of {len(folders)} folders failed (their grid_status.json and logs say why): '
                         f'{" ".join(failed)}')


if __name__ == '__main__':
    runtime.run_script(main)
