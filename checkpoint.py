"""What every script shares to persist: the checkpoint path rule and format, atomic saves, loads with errors that
name the file, resume, the pretrained backbone, and the one-run-per-folder lock.

A checkpoint is `{'net': state_dict, 'step': N}` (the authors' released files are exactly that) plus, in ours,
`optimizer`, `scaler`, `settings` (as plain values, see `plain`), `folder` (the experiment folder whose run wrote
it), `recipe` (the run against its published recipe, `recipe_record`), and `classes` and `palette`, the names and the
[r, g, b] colours of the classes, in label order, of the dataset it was trained on (what a model needs away from its
folder: hubconf.py). A bare state_dict loads too, and one whose keys all carry the prefix of a wrapper (DDP's
`module.`, torch.compile's `_orig_mod.`) without it. Every load uses `torch.load(weights_only=True)`. A run's
checkpoints are its folder's as long as the settings that shape a trained network are those it ran with
(`changed_settings`; `RUN_SETTINGS` do not count).

Two path rules. The files a run writes and resumes from (latest.pth, final.pth, step_<N>.pth, best.pth, train.lock,
temporary files) are always `model_file(name)` = MODEL_DIR/name: a file of the same name in the working folder is
never read nor written. A checkpoint named on the command line goes through `checkpoint_path`.
"""
import atexit
import errno
import fcntl
import glob
import numbers
import os
import pickle
import re
import shutil
import socket
import time
import zipfile

import torch
import torch.distributed as dist

import dataset
import settings


class CheckpointError(RuntimeError):
    """A checkpoint or weight file that cannot be used; the message says which and why."""


class CorruptCheckpointError(CheckpointError):
    """A file that is truncated or damaged, as opposed to one for other settings."""


class MismatchError(CheckpointError):
    """Weights for another network: a key missing, unexpected or of another shape."""


WRAPPER_PREFIXES = ('module.', '_orig_mod.')  # what DDP and torch.compile put before every key of the net they wrap


# step_<N>.pth as train.py names it (f'step_{step}.pth', steps from 1): a kept copy such as step_20000_best.pth,
# step_final.pth or step_0010.pth is no file of the run's
STEP_FILE = re.compile(r'step_([1-9][0-9]*)\.pth')
# the settings that do not shape a trained network (nor do the EVAL_* ones, which change only how it is evaluated
# and validated, each result named by its protocol): a change of them leaves a run's checkpoints its own
RUN_SETTINGS = (
    'NUM_WORKERS',               # a sample's augmentation derives from (SEED, step, rank, slot), whatever the workers
    'LOG_EVERY', 'IMAGE_EVERY',  # what is logged and drawn: the panel's prediction runs in eval mode, no grad
    'ITER_SAVE',                 # when checkpoints are written: a resumed run ends with the uninterrupted weights
    'DEVICE',                    # which device computes it (the precision, AMP, is a setting of its own)
    'MODEL_DIR', 'LOG_DIR',      # where its files go: a folder moved with its outputs is the same run
    'CHANNELS_LAST', 'COMPILE', 'CUDNN_BENCHMARK',  # how fast the same computation runs: equal to float rounding
    'RECIPE',                    # which published recipe the run is compared with, not what it trains
)


def model_file(name):
    """MODEL_DIR/name: where a run writes and resumes from its own files."""
    return os.path.join(settings.MODEL_DIR, name)


def step_files(folder):
    """{N: path} of folder's step_<N>.pth files, by N; files of other names are left out."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    steps = {int(m.group(1)): os.path.join(folder, m.group(0)) for m in map(STEP_FILE.fullmatch, names) if m}
    return dict(sorted(steps.items()))


def checkpoint_path(name):
    """A checkpoint named on the command line: a name with a folder part (models/x.pth, ./x.pth) is that path; a bare
    name is MODEL_DIR/name when that exists, else the file of that name in the working folder when that exists, else
    MODEL_DIR/name (which read_weights then reports missing)."""
    name = os.fspath(name)
    if os.path.dirname(name) or (not os.path.exists(model_file(name)) and os.path.exists(name)):
        return name
    return model_file(name)


def experiment_folder():
    """The experiment folder of this process: the one holding its settings.py, as a real path."""
    return os.path.dirname(os.path.realpath(settings.__file__))


def changed_settings(ran_with, now):
    """[(name, the value ran_with holds, the value now holds)] of each setting that shapes a trained network (not
    RUN_SETTINGS nor EVAL_*) whose plain value differs between ran_with (a checkpoint's 'settings') and now
    ({name: value}, as settings.effective() gives them): the checkpoint is no run of these settings. ITER_MAX counts
    only lowered: raised, the run is unfinished. A name that only one of them has (a checkpoint of older code, an
    authors' file) is not compared."""
    changed = []
    for name, old in ran_with.items():
        if name in RUN_SETTINGS or name.startswith('EVAL_') or name not in now:
            continue
        new = plain(now[name])
        raised = name == 'ITER_MAX' and isinstance(old, int) and isinstance(new, int) and new > old
        if not dataset.same(new, old) and not raised:  # a tuple edited into the list it was is no change
            changed.append((name, old, new))
    return changed


def describe_changes(changed):
    """changed_settings as text: 'LR=0.001 (now 0.01), SEED=66 (now 1)'."""
    return ', '.join(f'{name}={old!r} (now {new!r})' for name, old, new in changed)


def plain(value):
    """value as what torch.load(weights_only=True) reads, `==` compares and a text file shows: None, bool, int, float,
    str (numpy scalars and subclasses such as IntEnum become these), tuples, lists and dicts of plain values (numpy
    arrays become lists), a path (pathlib.Path) its text, anything else its repr text. Settings are stored so: a
    setting such as LR = 9e-3 * np.sqrt(2) or DATA_ROOT = Path(...) must not make a run's checkpoints unloadable."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if hasattr(value, 'tolist') and hasattr(value, 'dtype'):  # a numpy (or torch) scalar or array
        return plain(value.tolist())
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def read_weights(path, what='checkpoint', mmap=False):
    """torch.load with weights_only=True, turning every failure into a CheckpointError that names the file.
    mmap: tensors stay in the file until read (torch.save's zip files only), for a quick look at a checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{what} {path} does not exist')
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # an intact torch.save file whose pickle holds code, not only weights
            raise CheckpointError(f'{what} {path} is not a plain weights file: it needs arbitrary unpickling, '
                                  f'which is refused so that nothing in it runs') from None
        raise CorruptCheckpointError(f'{what} {path} is truncated or corrupt (it does not unpickle)') from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]  # an empty file's EOFError says nothing
        raise CorruptCheckpointError(f'{what} {path} is truncated or corrupt ({reason})') from None


def load_state(module, state, path, file_key=str):
    """module.load_state_dict(state) with errors that name the file and the first mis-shaped, missing or
    unexpected key, as file_key names it in the file. BN num_batches_tracked counters are optional: older files
    lack them, and a fixed BN momentum never reads them."""
    own = module.state_dict()
    if state and not own.keys() & state.keys():
        raise MismatchError(f'{path} holds the weights of another network: none of its {len(state)} keys '
                            f'({", ".join(file_key(k) for k in list(state)[:3])}, ...) is one of this '
                            f'{type(module).__name__}\'s ({", ".join(file_key(k) for k in list(own)[:3])}, ...)')
    for k, v in state.items():
        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise MismatchError(f'{path}: key {file_key(k)} has shape {shape} in the file but '
                                f'{tuple(own[k].shape)} in the model (N_CLASSES={settings.N_CLASSES}, '
                                f'N_LAYERS={settings.N_LAYERS}, EMA_CHANNELS={settings.EMA_CHANNELS}, '
                                f'N_BASES={settings.N_BASES})')
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing:
        raise MismatchError(f'{path}: missing key {file_key(missing[0])} ({len(missing)} missing in all); '
                            f'is it for another N_LAYERS or EMA_CHANNELS?')
    if unexpected:
        raise MismatchError(f'{path}: unexpected key {file_key(unexpected[0])} ({len(unexpected)} unexpected in all); '
                            f'is it for another N_LAYERS?')


def read_checkpoint(path):
    """The checkpoint dict `{'net': state_dict, 'step': N, ...}` at path (the authors' files included), unloaded; a
    bare state_dict (a file of tensors only) as {'net': it}; the prefixes of wrappers (WRAPPER_PREFIXES) that every
    key of the state_dict carries taken off, in whichever order they were put on. Anything else is a
    CheckpointError naming the file."""
    ckpt = read_weights(path)
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {'net': ckpt}  # torch.save(net.state_dict(), path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('net'), dict):
        raise CheckpointError(f'{path} is not an EMANet checkpoint: expected a dict with a "net" state_dict, or a '
                              f'state_dict')
    state = ckpt['net']
    # the wrappers in either order: torch.compile(DDP(net)) has _orig_mod.module. keys, DDP(torch.compile(net))
    # module._orig_mod.
    while state and (prefix := next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return {**ckpt, 'net': state}


def load_checkpoint(net, path, optimizer=None, scaler=None):
    """Loads a checkpoint (`read_checkpoint`) of the current dataset's classes (`check_classes`) into net, and into
    optimizer and scaler when given; returns the whole checkpoint dict."""
    ckpt = read_checkpoint(path)
    load_state(net, ckpt['net'], path)
    check_classes(ckpt, path)
    if optimizer is not None:
        if 'optimizer' not in ckpt or 'scaler' not in ckpt:
            raise CheckpointError(f'{path} holds weights but no optimizer state (as the authors\' released files): '
                                  f'a run cannot resume from it; evaluate it with eval.py')
        optimizer.load_state_dict(ckpt['optimizer'])
        load_scaler(scaler, ckpt['scaler'], path)
    return ckpt


def check_classes(ckpt, path):
    """A CheckpointError where the checkpoint's classes (`classes`, `palette`: its dataset's when it was saved) have
    other colours than the current dataset's, class by class: its class k would be scored (eval.py), exported or
    trained on (a resumed run) as another, as when `prepare.py folder` ran again with a colour gone and one new.
    Names alone that differ (a class renamed in classes.txt) are the same classes: logged. A file without classes
    (the authors', ours before they held them) is not checked."""
    if 'classes' not in ckpt:
        return
    now = list(zip(dataset.current()['classes'], dataset.class_colours()))  # as save_checkpoint's
    then = list(zip(ckpt['classes'], map(tuple, ckpt['palette'])))
    moved = [f'its class {k} {name!r} {rgb} is {now[k][0]!r} {now[k][1]} there'
             for k, (name, rgb) in enumerate(then) if k < len(now) and rgb != now[k][1]]
    if moved:
        where = settings.DATA_ROOT if settings.DATASET == 'folder' else f'DATASET={settings.DATASET!r}'
        raise CheckpointError(f'{path} was trained on classes that {where} has no more: {"; ".join(moved)}. Use it '
                              f'with the data it was trained on, or train anew on these (INIT_FROM starts from it)')
    for k, ((name, _), (new_name, _)) in enumerate(zip(then, now)):
        if name != new_name:
            settings.logger.warning('%s: its class %d %r is named %r now', path, k, name, new_name)


def load_scaler(scaler, state, path):
    """The gradient scaler's state, across a change of precision: a run saved without float16 (CPU, AMP = False,
    a bfloat16 GPU) holds an empty state, which an enabled float16 scaler cannot load, so its scale starts fresh;
    a disabled scaler ignores a float16 run's state (float32 or bfloat16 need no scale)."""
    if scaler.is_enabled() and not state:
        settings.logger.info('%s was saved without float16 mixed precision: the gradient scale starts fresh', path)
        return
    scaler.load_state_dict(state)


def replace_file(path, write, remedy):
    """Writes path atomically: write(tmp) fills a temporary file beside it, synced, which then replaces path, so a
    kill at any moment leaves the old file or the new one. An OSError removes the temporary file and stops with a
    CheckpointError naming path, then remedy."""
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointError(f'could not write {path}: {e.strerror or e}{remedy}') from None


def recipe_record(net, start=0):
    """This run against its recipe (dataset.compare_recipe, plain values): the effective settings, torchrun's
    processes, whether net's BatchNorm is synchronised across them (SyncBatchNorm: torchrun on GPUs), and the record
    of the run whose network INIT_FROM holds (`held_recipe`: a stage whose first stage trained from scratch says so).
    A run resumed at step start keeps what the record of the checkpoint holding that step says of the steps before
    (dataset.resumed_record); a finished one (start >= ITER_MAX), which trains no step more, is that record."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    synced = any(isinstance(module, torch.nn.SyncBatchNorm) for module in net.modules())
    values, started, earlier = plain(settings.effective()), None, None
    if settings.INIT_FROM:
        try:
            started = held_recipe(read_weights(settings.INIT_FROM, 'INIT_FROM', mmap=True), {})
        except CheckpointError:  # gone since this run started from it: what it was is unknown
            pass
    for name in ('latest.pth', 'final.pth', f'step_{start}.pth') if start else ():  # those `resume` reads
        try:
            held = read_weights(model_file(name), mmap=True)
        except CheckpointError:
            continue
        if isinstance(held, dict) and held.get('step') == start:
            earlier = held_recipe(held, values)
            break
    if earlier is not None and start >= settings.ITER_MAX:
        return earlier
    record = plain(dataset.compare_recipe(values, world, synced, started))
    return plain(dataset.resumed_record(record, earlier, start))


def held_recipe(held, values):
    """A checkpoint's record of its run against its recipe: its 'recipe', as the run compared itself, else (a run from
    before the records) dataset.compare_recipe of the 'settings' it trained with, as one process runs them, values
    (the folder's, plain) for any it lacks; None for a file without either (the authors' releases)."""
    if not isinstance(held, dict):
        return None
    if isinstance(held.get('recipe'), dict):
        return held['recipe']
    trained = {**values, **held['settings']} if isinstance(held.get('settings'), dict) else {}
    return plain(dataset.compare_recipe(trained)) if 'BATCH_SIZE' in trained else None


def folder_recipe(model_dir, values):
    """The recipe record of an experiment folder's run: that of the newer of MODEL_DIR's final.pth and latest.pth
    (`held_recipe`: what trained, whatever settings.py says since), else (no run yet, the authors' file)
    dataset.compare_recipe of its settings' values as one process runs them; None without either. Raises ValueError
    for a RECIPE of no recipe of its DATASET."""
    paths = [os.path.join(model_dir, name) for name in ('final.pth', 'latest.pth')]
    for path in sorted((p for p in paths if os.path.isfile(p)), key=os.path.getmtime, reverse=True):
        try:
            record = held_recipe(read_weights(path, mmap=True), plain(values))
        except CheckpointError:
            continue
        if record is not None:
            return record
    return dataset.compare_recipe(plain(values)) if values else None


def save_checkpoint(name, net, optimizer, scaler, step, extra=None):
    """Writes MODEL_DIR/name = {'net', 'step', 'optimizer', 'scaler', 'settings', 'classes', 'palette', 'recipe'}
    and the entries of extra (e.g. best.pth's 'best_mIoU'; train.py's 'recipe', compared once before its first step,
    else `recipe_record`) atomically (`replace_file`). Refuses non-finite weights."""
    state = net.state_dict()
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f'step {step}: {bad} is not finite; {name} was not written')
    optimizer_state = optimizer.state_dict()  # its hyper-parameters come from settings: LR may be a numpy float
    optimizer_state['param_groups'] = plain(optimizer_state['param_groups'])
    ckpt = {'net': state, 'step': step, 'optimizer': optimizer_state, 'scaler': plain(scaler.state_dict()),
            'settings': plain(settings.effective()), 'folder': experiment_folder(),
            'classes': list(dataset.current()['classes']),  # what a model needs away from its folder (hubconf.py)
            'palette': [list(rgb) for rgb in dataset.class_colours()], **(extra or {})}
    if 'recipe' not in ckpt:
        ckpt['recipe'] = recipe_record(net)

    def write(tmp):
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
    replace_file(model_file(name), write, '. The previous checkpoint is intact; free space or fix '
                                          f'MODEL_DIR={settings.MODEL_DIR!r}, then rerun to resume')


def link_checkpoint(source, name):
    """MODEL_DIR/name becomes the file MODEL_DIR/source is (final.pth at ITER_MAX: latest.pth, just written),
    atomically and without writing its hundreds of MB again: a hard link, or a synced copy on a filesystem
    without them. A later save of source replaces that file with a new one and leaves name as it is."""
    source = model_file(source)

    def write(tmp):
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links (what else failed fails the copy too)
            shutil.copyfile(source, tmp)
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
    replace_file(model_file(name), write, f'; {source} holds the same checkpoint')


def this_process():
    """'pid N on HOST, started TIME': this process, as a lock file names its holder."""
    return f'pid {os.getpid()} on {socket.gethostname()}, started {time.strftime("%Y-%m-%d %H:%M:%S")}'


def lock_model_dir():
    """Makes this process the one training run of MODEL_DIR until it exits. The lock is a POSIX lock on
    MODEL_DIR/train.lock, which the kernel (or the file server) drops when its process dies, however it dies;
    the file names the holder for the next run's messages. Once it holds the lock it removes the temporary files
    of saves that a kill interrupted. Raises CheckpointError naming a run that holds it.

    Under torchrun the lock belongs to rank 0, the process that writes checkpoints. A run that ends normally, by
    an error or by a signal empties the file; a run killed with -9 leaves its name in it, and the next run takes
    the lock over with a warning that names it. On a shared filesystem the lock holds across machines only
    where the filesystem supports POSIX locks: NFS does (NFSv3 through its lock manager, NFSv4 natively; not
    with the `nolock` mount option, which keeps locks local to each machine; when a whole client machine dies,
    the server frees its locks only when its lease expires or it reboots), and Lustre does when mounted with
    `flock` (`localflock`: within one node only). Where the filesystem refuses locks altogether (ENOLCK,
    ENOSYS, EOPNOTSUPP, e.g. Lustre with `noflock`) it warns that nothing stops a second run and goes on."""
    path = model_file('train.lock')
    try:
        lock = open(path, 'a+')
    except OSError as e:
        raise CheckpointError(f'cannot write {path}: {e.strerror or e}') from None
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):  # held
            lock.seek(0)
            holder = lock.read().strip() or 'a process that has not written its name yet'
            lock.close()
            raise CheckpointError(f'MODEL_DIR={os.path.abspath(settings.MODEL_DIR)!r} belongs to a training run '
                                  f'that is still going ({holder}); stop it first, or train this experiment '
                                  f'elsewhere') from None
        lock.close()  # no lock to be had here (ENOLCK, EOPNOTSUPP, ENOSYS...)
        settings.logger.warning('cannot lock %s (%s): the filesystem of MODEL_DIR does not support POSIX locks, '
                                'so nothing stops a second run in this folder; start one at a time',
                                path, e.strerror or e)
    else:
        lock.seek(0)
        previous = lock.read().strip()
        if previous:
            settings.logger.warning('taking over %s from a run that ended without releasing it (%s)', path, previous)
        lock.truncate(0)
        lock.write(this_process() + '\n')
        lock.flush()

        def release():  # a run that ends, even by an error or a signal, leaves an empty file: nothing to take over
            lock.truncate(0)
            lock.close()
        atexit.register(release)
    # saves that a kill interrupted: no run owns them now
    for partial in glob.glob(os.path.join(glob.escape(os.fspath(settings.MODEL_DIR)), '*.pth.tmp*')):
        os.remove(partial)


def resume_order(model_dir):
    """The checkpoints of model_dir that a run there resumes from, in the order `resume` tries them: latest.pth,
    final.pth, then step_<N>.pth from the newest; those that exist."""
    names = [os.path.join(model_dir, 'latest.pth'), os.path.join(model_dir, 'final.pth')]
    return [path for path in names + list(step_files(model_dir).values())[::-1] if os.path.exists(path)]


def resume(net, optimizer, scaler):
    """Loads MODEL_DIR/latest.pth into net, optimizer and scaler, or, if it is missing or corrupt, final.pth or
    the newest intact step_<N>.pth; returns the step it holds, 0 for a fresh run. A checkpoint that another
    folder's run wrote with other settings (changed_settings) is refused: a folder resumes its own run, and starts
    from another's network through INIT_FROM; one of the same settings (a folder moved or copied) resumes."""
    latest = model_file('latest.pth')
    candidates = resume_order(settings.MODEL_DIR)
    if not candidates:
        return 0
    if candidates[0] != latest:
        settings.logger.warning('%s is missing: resuming from the newest other checkpoint', latest)
    for path in candidates:
        try:
            ckpt = load_checkpoint(net, path, optimizer, scaler)
            break
        except CorruptCheckpointError as e:
            settings.logger.warning('%s', e)
        except MismatchError as e:  # only weights that do not fit: a file we cannot read is no reason to delete a run
            raise CheckpointError(f'{e}\nMODEL_DIR={settings.MODEL_DIR!r} holds a run with other settings: '
                                  f'use another MODEL_DIR, or clean.sh to remove it') from None
    else:
        raise CorruptCheckpointError(f'{latest} is truncated or corrupt. No intact step_<N>.pth to fall back on: '
                                     f'remove it to start this experiment from scratch')
    written_in = ckpt.get('folder', experiment_folder())  # older checkpoints do not say: as before, resumed
    if written_in != experiment_folder():
        changed = changed_settings(ckpt.get('settings', {}), settings.effective())
        if changed:
            raise CheckpointError(f'{path} was written by the run of {written_in}, with other settings '
                                  f'({describe_changes(changed)}): a folder resumes its own run only. Give this '
                                  f'folder a MODEL_DIR of its own; to start from that network, INIT_FROM = {path!r}')
        settings.logger.info('%s was written in %s with these settings (a moved or copied folder): resuming it',
                             path, written_in)
    for name, old in ckpt.get('settings', {}).items():
        now = plain(getattr(settings, name, None))  # as save_checkpoint stored it
        if not dataset.same(now, old):  # as changed_settings compares them
            settings.logger.warning('resuming with %s = %r (the checkpoint ran with %r)', name, now, old)
    settings.logger.info('resumed from %s at step %d', path, ckpt['step'])
    return ckpt['step']


def init_from(net, path):
    """Starts net from the whole network of another run's checkpoint, or the authors' `{'net', 'step'}` file:
    weights, BatchNorm statistics and the bases emau.mu; every key and shape must match. Nothing else of it
    (optimizer, step) is used: the run's schedule starts fresh at step 1."""
    if not os.path.isfile(path):
        raise CheckpointError(f'INIT_FROM={path!r} does not exist')
    ckpt = read_checkpoint(path)  # of any classes: fine-tuning on others is what it is for
    load_state(net, ckpt['net'], path)
    settings.logger.info('started from the network of %s (its step %s); optimizer and schedule fresh',
                         path, ckpt.get('step'))


# the modules of a PyTorch-Encoding / timm deep-stem ResNet file → their index in our extractor
BACKBONE_MODULES = {'conv1': '0', 'bn1': '1', 'layer1': '4', 'layer2': '5', 'layer3': '6', 'layer4': '7'}


def backbone_key(key):
    """PyTorch-Encoding / timm deep-stem ResNet name → our extractor name."""
    head, rest = key.split('.', 1)
    return f'{BACKBONE_MODULES[head]}.{rest}' if head in BACKBONE_MODULES else key


def backbone_file_key(key):
    """Our extractor name → the deep-stem file's (backbone_key's inverse), for errors that name the file's key."""
    head, rest = key.split('.', 1)
    names = {index: name for name, index in BACKBONE_MODULES.items()}
    return f'{names[head]}.{rest}' if head in names else key


def load_pretrained(net, path):
    """Strictly loads an ImageNet deep-stem ResNet (`conv1.0/.1/.3/.4/.6`, `bn1`, `layer1..4`,
    `fc`) into net.extractor; the ImageNet classifier `fc` is dropped."""
    if not os.path.isfile(path):
        raise CheckpointError(
            f'PRETRAINED={path!r} does not exist. Put a deep-stem ImageNet ResNet-{net.n_layers} there '
            f"(timm's Gluon resnet{net.n_layers}s weights or PyTorch-Encoding's resnet{net.n_layers} "
            f'file, see README "Pretrained backbones"), or set PRETRAINED = None to train from scratch')
    state = read_weights(path, 'PRETRAINED file')
    if not isinstance(state, dict) or 'net' in state:
        raise CheckpointError(f'PRETRAINED file {path} is not an ImageNet ResNet state_dict '
                              f'(an EMANet checkpoint goes to eval.py or MODEL_DIR/latest.pth instead)')
    state = {backbone_key(k): v for k, v in state.items() if not k.startswith('fc.')}
    load_state(net.extractor, state, path, backbone_file_key)
