"""Every knob of an experiment, as a plain global.

An experiment is a copy of this folder whose settings.py differs by a few
assignments; append them at the end (a later assignment wins) and `diff` two
folders to see what differed. Other modules read `settings.X` when they build
an object or run a function, so a value changed before that takes effect.
Paths are relative to the folder the scripts run in.
"""
import ast
import contextlib
import difflib
import glob
import logging
import os
import runpy
import sys
import time

# data
DATASET = 'voc'                 # 'voc', 'cityscapes', 'ade20k', 'cocostuff', 'context', 'coco_voc', 'coco_panoptic';
                                # 'folder': your own images and masks (python prepare.py folder); 'demo': the
                                # generated images of prepare.py demo (VOC's layout and classes)
DATA_ROOT = './data/VOC2012'    # the dataset's folder, as prepare.py leaves it
MEAN = (0.485, 0.456, 0.406)    # ImageNet RGB mean, images scaled to [0, 1]
STD = (0.229, 0.224, 0.225)     # ImageNet RGB std
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # random rescaling factors for training
CROP_SIZE = 513                 # square training crop
IGNORE_LABEL = 255              # label value that no loss or metric counts
TRAIN_SPLIT = 'trainaug'        # split list to train on: VOC's trainaug; 'train' for the other datasets
VAL_SPLIT = 'val'               # list to evaluate on

# model
N_CLASSES = 21                  # the dataset's class count; VOC: background + 20 objects
N_LAYERS = 101                  # ResNet depth: 50, 101 or 152
STRIDE = 8                      # output stride of the backbone: 8 or 16
BN_MOM = 3e-4                   # BatchNorm momentum (tiny: fine-tuning keeps ImageNet statistics)
EMA_CHANNELS = 512              # width of the EM attention unit: 512 or 256 in the paper
N_BASES = 64                    # K, number of bases
STAGE_NUM = 3                   # EM iterations in training
EVAL_STAGE_NUM = None           # EM iterations in evaluation; None = STAGE_NUM
EM_MOM = 0.9                    # moving-average momentum of the bases; 1.0 never updates them
EM_NORM = 'l2'                  # 'l2' normalises bases after each iteration (published); 'none' for the ablation
EM_GRAD = False                 # True back-propagates through the last EM iteration (reported slightly worse)
PRETRAINED = './models/resnet101s.pth'  # deep-stem ImageNet backbone for N_LAYERS; None trains from scratch
INIT_FROM = None                # a whole-network checkpoint (e.g. '../exp_coco/models/final.pth') that starts a
                                # run whose MODEL_DIR has none of its own; fresh optimizer and schedule; needs
                                # PRETRAINED = None
RECIPE = None                   # the published recipe (dataset.RECIPES, DATASETS.md) train.py compares this run with,
                                # naming each deviation; None: the closest of DATASET's

# loss
LOSS = 'ce'                     # 'ce': the authors' per-image mean; 'ohem': hard pixels only (their Cityscapes result)
OHEM_THRESH = 0.7               # 'ohem' keeps the pixels whose probability of the true class is below this,
OHEM_MIN_KEPT = 100000          # or each image's this many hardest pixels when fewer are

# training
BATCH_SIZE = 16                 # global batch, split evenly across processes
ACCUM_STEPS = 1                 # micro-batches per step: each process runs BATCH_SIZE / processes / ACCUM_STEPS images
                                # at a time, the same update in less memory, but BatchNorm statistics per micro-batch
ITER_MAX = 30000                # training steps
ITER_SAVE = 2000                # step_<N>.pth every ITER_SAVE steps; latest.pth every ITER_SAVE // 10
LR = 9e-3                       # base learning rate (biases get 2x)
LR_DECAY = 10                   # steps between poly learning-rate updates
LR_MOM = 0.9                    # SGD momentum
POLY_POWER = 0.9                # exponent of the poly schedule
WEIGHT_DECAY = 1e-4             # on conv weights only
SEED = 66                       # seeds weights, data order and augmentation
NUM_WORKERS = 4                 # data-loading processes per training process
LOG_EVERY = 20                  # steps between log lines
IMAGE_EVERY = 500               # steps between TensorBoard image panels
LOG_DIR = './logdir'            # TensorBoard events, settings copy, eval results
MODEL_DIR = './models'          # checkpoints (and pretrained backbones)

# evaluation
EVAL_SCALES = (1.0,)            # (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) with EVAL_FLIP for the paper's MS+flip
EVAL_FLIP = False               # also average the horizontally flipped prediction
EVAL_STRIDE = None              # output stride at test time; None = STRIDE (the paper's ablations: 16 → 8)
EVAL_WINDOW = None              # None: whole image; a size (int or (h, w)) slides a window of it over larger images
EVAL_EVERY = 2000               # steps between evaluations while training (and one at the end); 0: none. VOC val's
                                # 1449 images take a few GPU minutes, shared by the processes: every ITER_SAVE steps
                                # costs a few percent of the recipe's run for a 15-point curve, best.pth a step_<N>.pth
EVAL_IMAGES = None              # evaluate only the first N images of VAL_SPLIT while training; None: all
EVAL_AMP = False                # True: evaluate in half precision (protocol 'bf16' / 'fp16'): the training's on CUDA,
                                # bfloat16 on a CPU with AVX512-BF16 or AMX (PyTorch, OpenVINO); refused on other CPUs

# runtime
DEVICE = None                   # None: 'cuda' when available, else 'cpu'
AMP = True                      # mixed precision: on CUDA bf16 on compute capability >= 8, else fp16 + scaler; on a CPU
                                # bf16 where it is native (AVX512-BF16, AMX), else float32 (emulated bf16 is slower)
CHANNELS_LAST = True            # channels-last memory format on CUDA (CPU training stays contiguous: no gain there)
COMPILE = False                 # torch.compile the network
CUDNN_BENCHMARK = True          # let cuDNN pick the fastest convolution algorithms
DETERMINISTIC = False           # True: deterministic GPU algorithms, bit-identical resume on GPUs (cost unmeasured)


def get_logger(name='emanet'):
    """The shared logger: time-stamped lines on stderr (level from $LOG_LEVEL)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S'))
        logger.addHandler(handler)
        logger.setLevel(os.environ.get('LOG_LEVEL', 'INFO'))
        logger.propagate = False
    return logger


logger = get_logger()


def effective():
    """Every UPPER_CASE setting, in file order: what an experiment ran with. A helper global of an experiment's
    own that is no setting starts with an underscore or is lower case."""
    return {name: value for name, value in globals().items() if name.isupper() and not name.startswith('_')}


def assign(values):
    """Sets each setting of values ({name: value}, as effective() gives them): a worker process takes its
    parent's settings with it."""
    globals().update(values)


@contextlib.contextmanager
def applied(values):
    """The settings hold values ({name: value}) inside the block, and what they held before after it (a name that
    was no setting is none again)."""
    saved = effective()
    assign(values)
    try:
        yield
    finally:
        for name in set(effective()) - set(saved):
            del globals()[name]
        assign(saved)


def check_name(name):
    """Raises ValueError unless name is a setting of this folder, naming the closest one."""
    names = effective()
    if name not in names:
        closest = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
        raise ValueError(f'{name} is not a setting' + (f'; did you mean {closest[0]}?' if closest else
                                                       ' (settings.py lists them)'))


def parse_values(text):
    """(NAME, (value, ...)) of 'NAME=V1,V2,...', as grid.py and eval.py --set take settings on the command line:
    the right side is read as the Python literals of a tuple, so tuples and strings hold commas of their own:
    'N_BASES=32,64' → (32, 64); "EM_NORM='l2','none'" → ('l2', 'none'); 'EVAL_SCALES=(0.5,1.0),(1.0,)' → two
    tuples. Raises ValueError for a name that is no setting or values that are no literals."""
    name, sep, values = text.partition('=')
    name = name.strip()
    if not sep or not name or not values.strip():
        raise ValueError(f'{text!r}: expected NAME=VALUE or NAME=VALUE1,VALUE2,...')
    check_name(name)
    try:
        return name, ast.literal_eval(f'({values},)')
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"{text!r}: the values must be Python literals separated by commas (32,64; None,16; "
                         f"(0.5,1.0),(1.0,)); strings need quotes, and the whole argument the shell's quotes "
                         f"around them: \"EM_NORM='l2','none'\"") from None


def folder_settings(folder):
    """{name: value} of every setting that folder's settings.py assigns, executed in a fresh namespace with the
    folder as the working directory (no other module of the folder is imported). Raises whatever the file raises."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # whatever it prints stays out of the caller's output
            namespace = runpy.run_path(os.path.abspath('settings.py'), run_name='experiment_settings')
    finally:
        os.chdir(cwd)
    return {name: value for name, value in namespace.items() if name.isupper() and not name.startswith('_')}


def format_eta(seconds):
    return time.strftime('%H:%M:%S', time.gmtime(seconds)) if seconds < 86400 else f'{seconds / 86400:.1f} days'


def log_progress(what, done, total, tic):
    """A line at every tenth of the work and at its end (count, seconds per item, ETA), once the work
    started at time tic has taken 5 seconds: quick work stays quiet."""
    elapsed = time.time() - tic
    if elapsed >= 5 and (done % max(1, total // 10) == 0 or done == total):
        seconds = elapsed / done
        logger.info('%s %d/%d, %.3f s each, ETA %s', what, done, total, seconds, format_eta(seconds * (total - done)))


def unread_settings():
    """{name: the closest setting or None} for each UPPER_CASE name here that no module of this folder reads:
    almost always a misspelling. What the code reads is found in the code itself: `settings.NAME`, and
    UPPER_CASE strings (names passed to getattr). A .py file that does not parse (a half-written scratch script,
    Python 2, not text) is skipped with a warning that names it: no module that reads settings is such a file."""
    read = set()
    for path in sorted(glob.glob(os.path.join(glob.escape(os.path.dirname(os.path.abspath(__file__))), '*.py'))):
        if os.path.basename(path) != 'settings.py':
            try:
                with open(path, 'rb') as f:  # bytes: the parser honours a coding declaration
                    tree = ast.parse(f.read(), path)
            except (SyntaxError, ValueError, OSError) as e:  # ValueError: null bytes, before Python 3.12
                reason = f'line {e.lineno}: {e.msg}' if isinstance(e, SyntaxError) else str(e) or type(e).__name__
                logger.warning('%s is not readable Python (%s): the misspelt-setting check skips it',
                               os.path.basename(path), reason)
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'settings':
                    read.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isupper():
                    read.add(node.value)
    names = effective()
    real = sorted(read & set(names))
    return {name: next(iter(difflib.get_close_matches(name, real, n=1, cutoff=0.7)), None) for name in names if name not in read}


def warn_unread_settings():
    """Logs every unread name with its closest setting; returns {name: its closest setting} of those that have one."""
    misspelt = {}
    for name, closest in unread_settings().items():
        if closest:
            logger.warning('%s is not a setting; did you mean %s?', name, closest)
            misspelt[name] = closest
        else:
            logger.warning('%s is not a setting that any code reads (a helper of your own?)', name)
    return misspelt
