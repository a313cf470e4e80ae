"""The published recipes (dataset.RECIPES) and every deviation from them, named before the first step and kept with
the results: the data against DATASETS.md's tables entry by entry and the README's numbers; the comparison with the
runtime train.py passes it (the paper's settings in one line; from scratch; one process with ACCUM_STEPS 4; torchrun
on CPU; a batch of 12; crop, LR, steps, stride at train and at test); one real train.py + eval.py run whose lines
reach the log, settings.txt, a checkpoint and the eval JSONs; compare.py's column and --recipe against hand-written
tables."""
import ast
import csv
import io
import json
import os
import re

import numpy as np
import pytest
import torch

from harness import ONE_THREAD, ROOT, copy_code, make_experiment, run_script

import checkpoint
import compare
import dataset
import settings

pytestmark = pytest.mark.xdist_group(__name__)  # one worker trains the module fixture once

PAPER_VOC = "recipe: compared with 'paper VOC' (80.05 mIoU val; XiaLiPKU/EMANet settings.py and README Tab. 1)"


def defaults(**changes):
    """The repository's settings.py, as a folder's settings are read (plain values), with changes."""
    return {**{name: checkpoint.plain(value) for name, value in settings.folder_settings(ROOT).items()}, **changes}


def cell_value(text):
    """A table cell as the value it writes: a Python literal, else the text itself (ce, ImageNet, unknown)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def recipe_tables(path):
    """[(line number, {recipe: {row: cell}})] of the Markdown tables whose first header cell is 'recipe'."""
    lines = open(path, encoding='utf-8').read().splitlines()
    tables = []
    for number, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if line.startswith('| recipe |') and cells[0] == 'recipe':
            rows = {}
            for row in lines[number + 2:]:
                if not row.startswith('|'):
                    break
                key, *values = [cell.strip() for cell in row.strip().strip('|').split(' | ')]
                rows[key] = values
            tables.append((number + 1, rows, {name: {key: rows[key][i] for key in rows}
                                              for i, name in enumerate(cells[1:])}))
    return tables


def test_datasets_md_tables_are_the_recipes_entry_by_entry():
    shown = []
    for number, rows, table in recipe_tables(os.path.join(ROOT, 'DATASETS.md')):
        assert tuple(rows) == ('dataset', *dataset.RECIPE_KEYS, 'mIoU (%)', 'source'), f'DATASETS.md:{number}'
        for name, cells in table.items():
            where = f'DATASETS.md:{number} {name!r}'
            assert name in dataset.RECIPES, f'{where} is no recipe of dataset.RECIPES'
            recipe = dataset.RECIPES[name]
            assert cells['dataset'] == recipe['dataset'] and cells['source'] == recipe['source'], where
            for key in dataset.RECIPE_KEYS:
                assert cell_value(cells[key]) == recipe['settings'][key], f'{where} {key}: {cells[key]}'
            results = [] if cells['mIoU (%)'] == 'none published' else [
                re.fullmatch(r'([\d.]+) (\w+)(?:, (.+))?', text).groups() for text in cells['mIoU (%)'].split(' · ')]
            assert [(float(miou), split, protocol) for miou, split, protocol in results] == \
                [(r['mIoU'], r['split'], r.get('protocol')) for r in recipe['results']], where
            shown.append(name)
    assert sorted(shown) == sorted(dataset.RECIPES)  # every recipe once, in some table


def test_readme_numbers_are_the_recipes_results():
    text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read().split('## Results to reproduce')[1]
    rows = re.findall(r'^\| `([^`]+)`[^|]*\|([^|]*)\|([^|]*)\|', text, re.M)
    assert len(rows) == 8
    for name, *cells in rows:
        numbers = [float(n) for cell in cells for n in re.findall(r'\d+\.\d+', cell)]
        assert numbers and set(numbers) <= {r['mIoU'] for r in dataset.RECIPES[name]['results']}, name


def test_the_papers_settings_follow_the_paper_voc_recipe_in_one_line():
    for world, synced in ((1, False), (4, True), (2, True)):  # one GPU; 4 GPUs × 4 with SyncBN, as the authors
        record = dataset.compare_recipe(defaults(), world, synced)
        assert (record['name'], record['deviations']) == ('paper VOC', [])
        assert dataset.recipe_lines(record) == [PAPER_VOC.replace('compared with', 'follows')]
        assert dataset.recipe_label(record) == 'paper VOC'


SCRATCH, BATCH, BN = 'XiaLiPKU/EMANet#52', 'XiaLiPKU/EMANet#23', 'XiaLiPKU/EMANet#37'
NOTE = 'images per BatchNorm'


@pytest.mark.parametrize('changes, world, synced, expected', [
    # (setting, the run's value, the recipe's, the note on how the run's value arises, the source of its cost)
    ({'PRETRAINED': None}, 1, False, [('PRETRAINED', None, 'ImageNet', None, SCRATCH)]),
    ({'ACCUM_STEPS': 4}, 1, False, [(NOTE, 4, 16, 'BATCH_SIZE 16 / ACCUM_STEPS 4, one process', BN)]),
    ({}, 2, False, [(NOTE, 8, 16, 'BATCH_SIZE 16 / 2 processes, BatchNorm per process', BN)]),  # torchrun on CPU
    ({'BATCH_SIZE': 12}, 1, False, [('BATCH_SIZE', 12, 16, None, BATCH),
                                    (NOTE, 12, 16, 'BATCH_SIZE 12, one process', BN)]),
    ({'BATCH_SIZE': 8}, 4, True, [('BATCH_SIZE', 8, 16, None, BATCH),
                                  (NOTE, 8, 16, 'BATCH_SIZE 8, SyncBatchNorm over 4 processes', BN)]),
    ({'CROP_SIZE': 321}, 1, False, [('CROP_SIZE', 321, 513, None, None)]),
    ({'LR': 0.01}, 1, False, [('LR', 0.01, 0.009, None, None)]),
    ({'ITER_MAX': 20000}, 1, False, [('ITER_MAX', 20000, 30000, None, None)]),
    ({'STRIDE': 16}, 1, False, [('STRIDE', 16, 8, None, None), ('EVAL_STRIDE', 16, 8, None, None)]),
    ({'EVAL_STRIDE': 16}, 1, False, [('EVAL_STRIDE', 16, 8, None, None)]),
    ({'EVAL_WINDOW': 513}, 1, False, [('EVAL_WINDOW', 513, None, None, None)]),
], ids=['from scratch', 'one process, ACCUM_STEPS 4', 'torchrun on CPU', 'batch 12', '4 GPUs, batch 8', 'crop', 'LR',
        'steps', 'stride', 'test stride', 'window'])
def test_each_deviation_from_paper_voc_is_named_with_its_cost(changes, world, synced, expected):
    record = dataset.compare_recipe(defaults(**changes), world, synced)
    assert record['name'] == 'paper VOC'
    assert [(d['setting'], d['run'], d['recipe'], d['note']) for d in record['deviations']] == [e[:4] for e in expected]
    for deviation, (*_, source) in zip(record['deviations'], expected):
        assert deviation['cost'] is None if source is None else source in deviation['cost']
    lines = dataset.recipe_lines(record)
    count = f'{len(expected)} setting' + (' differs' if len(expected) == 1 else 's differ')
    assert lines[0] == f'{PAPER_VOC}: {count}' and len(lines) == 1 + len(expected)
    for line, (setting, ours, theirs, note, _) in zip(lines[1:], expected):
        note = f' ({note})' if note else ''
        assert line.startswith(f"recipe:   {setting} {ours}{note}, the recipe's {theirs}")
    assert dataset.recipe_label(record) == f'paper VOC, {len(expected)} differ' + ('s' if len(expected) == 1 else '')


def test_every_setting_of_the_authors_settings_py_is_compared():
    # the augmentation, BatchNorm's and the bases' momentum, the bases' normalisation and gradient, SGD's momentum and
    # the LR update interval are the authors' recipe too (their settings.py, network.py): none goes unnamed
    for key, value, theirs in (('SCALES', (1.0,), (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)), ('BN_MOM', 0.1, 3e-4),
                               ('LR_MOM', 0.0, 0.9), ('LR_DECAY', 1, 10), ('EM_MOM', 1.0, 0.9),
                               ('EM_NORM', 'none', 'l2'), ('EM_GRAD', True, False)):
        record = dataset.compare_recipe(defaults(**{key: value}))
        assert [(d['setting'], d['run'], d['recipe']) for d in record['deviations']] == [(key, value, theirs)], key


def test_a_value_that_rounds_to_the_recipes_is_the_recipes():
    float32 = [float(np.float32(value)) for value in (9e-3, 0.9, *dataset.PAPER_SCALES)]  # a numpy float32 setting
    record = dataset.compare_recipe(defaults(LR=0.003 * 3, POLY_POWER=float32[1], EVAL_SCALES=float32[2:],
                                             EVAL_FLIP=True, WEIGHT_DECAY=1e-4 + 1e-12))
    assert record['deviations'] == []
    assert [d['setting'] for d in dataset.compare_recipe(defaults(LR=9.1e-3))['deviations']] == ['LR']


def test_the_closest_recipe_or_the_one_named():
    assert dataset.compare_recipe(defaults(EMA_CHANNELS=256))['name'] == 'paper VOC 256'
    ablation = dataset.compare_recipe(defaults(N_LAYERS=50, STRIDE=16, EVAL_STRIDE=8))
    assert (ablation['name'], ablation['deviations']) == ('paper ablation', [])
    # a stage starts from another run's network: the stage it is, and no training from scratch
    stage = dataset.compare_recipe(defaults(PRETRAINED=None, INIT_FROM='../exp_trainaug/models/final.pth',
                                            TRAIN_SPLIT='trainval'))
    assert (stage['name'], stage['deviations']) == ('staged trainval', [])
    assert dataset.recipe_lines(stage)[0].startswith("recipe: follows 'staged trainval' (87.7 mIoU test; ")
    named = dataset.compare_recipe(defaults(RECIPE='paper ablation'))
    assert [(d['setting'], d['run'], d['recipe']) for d in named['deviations']] == [('N_LAYERS', 101, 50),
                                                                                    ('STRIDE', 8, 16)]
    with pytest.raises(ValueError, match="RECIPE='mmseg R-101 769' is no recipe of DATASET='voc': its recipes are "
                                         "'paper VOC', 'paper VOC 256', 'paper ablation', "):
        dataset.compare_recipe(defaults(RECIPE='mmseg R-101 769'))
    for name in ('folder', 'demo'):
        record = dataset.compare_recipe(defaults(DATASET=name))
        assert dataset.recipe_lines(record) == [f"recipe: DATASET={name!r} has no published recipe to compare with"]
        assert dataset.recipe_label(record) == 'no published recipe'
    # the multi-scale + flip protocol the paper reports is no deviation
    assert dataset.compare_recipe(defaults(EVAL_SCALES=dataset.PAPER_SCALES, EVAL_FLIP=True))['deviations'] == []


def test_what_a_source_does_not_publish_is_listed_and_from_scratch_still_named():
    # DATASETS.md's Cityscapes settings (mmsegmentation's 769 recipe with the authors' OHEM loss)
    cityscapes = dict(DATASET='cityscapes', N_CLASSES=19, TRAIN_SPLIT='train', CROP_SIZE=769, BATCH_SIZE=8,
                      ITER_MAX=80000, LR=1e-2, LOSS='ohem', EVAL_WINDOW=769)
    record = dataset.compare_recipe(defaults(**cityscapes))
    assert (record['name'], record['deviations']) == ('authors Cityscapes', [])
    line, = dataset.recipe_lines(record)
    assert line.startswith("recipe: follows 'authors Cityscapes' (81.14 mIoU val; ") and line.endswith(
        'in every setting it publishes; not published: PRETRAINED ImageNet, INIT_FROM None, STRIDE 8, EVAL_STRIDE 8, '
        'CROP_SIZE 769, SCALES (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), BATCH_SIZE 8, images per BatchNorm 8, '
        'BN_MOM 0.0003, LR 0.01, LR_MOM 0.9, LR_DECAY 10, POLY_POWER 0.9, WEIGHT_DECAY 0.0001, ITER_MAX 80000, '
        'OHEM_THRESH 0.7, OHEM_MIN_KEPT 100000, STAGE_NUM 3, EM_MOM 0.9, EM_NORM l2, EM_GRAD False, EMA_CHANNELS 512, '
        'N_BASES 64, TRAIN_SPLIT train, EVAL_WINDOW 769')
    scratch = dataset.compare_recipe(defaults(**cityscapes, PRETRAINED=None))
    assert [(d['setting'], d['run'], d['recipe']) for d in scratch['deviations']] == [('PRETRAINED', None, 'unknown')]
    assert SCRATCH in scratch['deviations'][0]['cost']
    mmseg = dataset.compare_recipe(defaults(**cityscapes, RECIPE='mmseg R-101 769'))
    assert [(d['setting'], d['run'], d['recipe']) for d in mmseg['deviations']] == [
        ('SCALES', (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), 'random 0.5 to 2.0'), ('BN_MOM', 3e-4, 0.1),
        ('LR_DECAY', 10, 1), ('WEIGHT_DECAY', 1e-4, 5e-4), ('LOSS', 'ohem', 'ce')]


def evaluated(**changes):
    """An eval record as evaluation.summary writes it: the authors' protocol on VOC val."""
    return {'scales': [1.0], 'flip': False, 'window': None, 'stride': 8, 'stage_num': 3, 'precision': 'float32',
            'split': 'val', **changes}


def test_an_evaluation_is_matched_with_the_recipes_protocols():
    results = dataset.RECIPES['paper VOC']['results']
    assert dataset.recipe_result('paper VOC', evaluated(), 'voc') == (True, results[0])  # 80.05
    assert dataset.recipe_result('paper VOC', evaluated(scales=[0.5, 0.75, 1, 1.25, 1.5, 1.75], flip=True), 'voc') == \
        (True, results[1])  # 81.32
    for other in (dict(window=513), dict(flip=True), dict(stride=16), dict(stage_num=4), dict(precision='bfloat16')):
        assert dataset.recipe_result('paper VOC', evaluated(**other), 'voc') == (False, None), other
    assert dataset.recipe_result('paper VOC', evaluated(split='test'), 'voc') == (True, None)  # its protocol, no number
    for other in ('coco_voc', 'demo'):  # a VOC run's checkpoint evaluated on other images: no VOC number beside it
        assert dataset.recipe_result('paper VOC', evaluated(), other) == (False, None), other
    # a value its source does not publish (the authors' Cityscapes window) matches any
    assert dataset.recipe_result('authors Cityscapes', evaluated(window=[769, 769]), 'cityscapes')[1]['mIoU'] == 81.14


def test_train_py_passes_its_processes_and_whether_batchnorm_is_synchronised(monkeypatch):
    monkeypatch.setattr(checkpoint.dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(checkpoint.dist, 'get_world_size', lambda: 2)
    for name, value in defaults().items():
        monkeypatch.setattr(settings, name, value)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))  # torchrun on CPU
    assert [(d['setting'], d['run'], d['note']) for d in checkpoint.recipe_record(plain)['deviations']] == \
        [(NOTE, 8, 'BATCH_SIZE 16 / 2 processes, BatchNorm per process')]
    assert checkpoint.recipe_record(torch.nn.SyncBatchNorm.convert_sync_batchnorm(plain))['deviations'] == []


# ---------------------------------------------------------------- a real run: the log, settings.txt, checkpoint, eval

RUN = dict(BATCH_SIZE=4, ACCUM_STEPS=4, ITER_MAX=2)  # from scratch, one process, 4 micro-batches of one image
EXPECTED_LOG = [  # the lines train.py logs for TINY + RUN, written out: against 'paper VOC' (and 'paper ablation',
    # which differs in as many: STRIDE for N_LAYERS), as the first of equals
    f'{PAPER_VOC}: 9 settings differ',
    'recipe:   N_LAYERS 50, the recipe\'s 101',
    'recipe:   PRETRAINED None, the recipe\'s ImageNet: the authors fine-tune an ImageNet backbone (their '
    'network.py always loads one); a user who "trained myself from scratch" (not saying from which start) got '
    '40.x mIoU on VOC val where the released weights give 80.x (XiaLiPKU/EMANet#52)',
    'recipe:   CROP_SIZE 33, the recipe\'s 513',
    'recipe:   BATCH_SIZE 4, the recipe\'s 16: the authors: "Batch size is one of the most factor of '
    'segmentation\'s performance. In my experiment, the batch size is 16" (XiaLiPKU/EMANet#23)',
    'recipe:   images per BatchNorm 1 (BATCH_SIZE 4 / ACCUM_STEPS 4, one process), the recipe\'s 16: single-GPU '
    'runs of the authors\' code, BatchNorm over fewer images: BATCH_SIZE 12 in the ablation setting reached 76.04 '
    'mIoU on VOC val where the paper\'s Fig. 4 has 78.52 (XiaLiPKU/EMANet#37); batch 3 on COCO-Stuff 34.55 where '
    'the paper has 39.9 (XiaLiPKU/EMANet#23)',
    'recipe:   BN_MOM 0.1, the recipe\'s 0.0003',
    'recipe:   LR 0.001, the recipe\'s 0.009',
    'recipe:   ITER_MAX 2, the recipe\'s 30000',
    'recipe:   EMA_CHANNELS 64, the recipe\'s 512',
]


@pytest.fixture(scope='module')
def ran(tmp_path_factory, demo_data):
    """(folder, train.py's result, eval.py's result): RUN trained, then evaluated single scale and with flip."""
    experiment = make_experiment(tmp_path_factory.mktemp('recipe') / 'exp', demo_data, **RUN)
    trained = run_script(experiment, 'train.py', env=ONE_THREAD)
    assert trained.returncode == 0, trained.stderr
    evaluated = run_script(experiment, 'eval.py', '--set', 'EVAL_FLIP=False,True', env=ONE_THREAD)
    assert evaluated.returncode == 0, evaluated.stderr
    return experiment, trained, evaluated


def test_the_deviations_are_logged_before_the_first_step_and_kept_with_the_results(ran):
    experiment, trained, _ = ran
    log = [line.split(' ', 2)[2] for line in trained.stderr.splitlines() if ' recipe:' in line]
    assert log == EXPECTED_LOG
    assert trained.stderr.index(EXPECTED_LOG[-1]) < trained.stderr.index('step 1/2 loss')
    assert all(f'WARNING {line}' in trained.stderr for line in EXPECTED_LOG)
    text = (experiment / 'logdir' / 'settings.txt').read_text()
    assert text.endswith(''.join(f'# {line}\n' for line in EXPECTED_LOG))
    kept = compare.read_settings_txt(experiment / 'logdir' / 'settings.txt')  # still the settings, nothing else
    assert kept['ACCUM_STEPS'] == 4 and set(kept) == set(settings.effective())
    record = torch.load(experiment / 'models' / 'final.pth', weights_only=True)['recipe']
    assert record['name'] == 'paper VOC' and dataset.recipe_lines(record) == EXPECTED_LOG
    assert record['run']['images per BatchNorm'] == 1
    for name, (protocol, reported) in {'eval_final.json': (True, {'mIoU': 80.05, 'split': 'val'}),
                                       'eval_final_flip.json': (False, None)}.items():
        result = json.loads((experiment / 'logdir' / name).read_text())
        assert result['recipe'] == json.loads(json.dumps(dict(record, protocol=protocol, reported=reported))), name


def markdown_rows(text):
    return [[cell.strip() for cell in line.strip().strip('|').split(' | ')] for line in text.splitlines()
            if line.startswith('|') and not line.startswith('| ---')]


def test_compare_recipe_sets_the_runs_beside_their_recipes(ran, tmp_path):
    experiment, *_ = ran
    other = copy_code(tmp_path / 'exp_256')  # no run: its settings as one process runs them
    with open(other / 'settings.py', 'a') as f:
        f.write('EMA_CHANNELS = 256\nN_BASES = 32\n')
    miou = 100 * json.loads((experiment / 'logdir' / 'eval_final.json').read_text())['mIoU']
    named = run_script(tmp_path, str(experiment / 'compare.py'), '--recipe', 'paper VOC', str(experiment), str(other),
                       '--markdown')
    assert named.returncode == 0, named.stderr
    rows = markdown_rows(named.stdout)
    assert rows[0] == ['setting', 'recipe: paper VOC', 'exp', 'exp_256']
    lines = named.stdout.splitlines()  # GitHub's table goes on to the first blank line: the note is after one
    assert lines[max(i for i, line in enumerate(lines) if line.startswith('|')) + 1] == ''
    expected = {'N_LAYERS': ['101', '50 *', '101'], 'PRETRAINED': ['ImageNet', 'None *', 'ImageNet'],
                'STRIDE': ['8', '8', '8'], 'EVAL_STRIDE': ['8', '8', '8'], 'CROP_SIZE': ['513', '33 *', '513'],
                'BATCH_SIZE': ['16', '4 *', '16'], 'images per BatchNorm': ['16', '1 *', '16'],
                'LR': ['0.009', '0.001 *', '0.009'], 'ITER_MAX': ['30000', '2 *', '30000'],
                'EMA_CHANNELS': ['512', '64 *', '256 *'], 'N_BASES': ['64', '64', '32 *'],
                'OHEM_THRESH': ['None', 'None', 'None'], 'EVAL_SCALES': ['(1.0,)', '(1.0,)', '(1.0,)'],
                'mIoU val': ['80.05', f'{miou:.2f} (final)', '-'], 'mIoU val, MS + flip': ['81.32', '-', '-']}
    assert {row[0]: row[1:] for row in rows[1:] if row[0] in expected} == expected
    assert [row[0] for row in rows[1:]] == [*dataset.RECIPE_KEYS, 'mIoU val', 'mIoU val, MS + flip']
    own = run_script(tmp_path, str(experiment / 'compare.py'), '--recipe', str(experiment), str(other))
    assert own.returncode == 0, own.stderr
    headers = [line.split() for line in own.stdout.splitlines() if line.startswith('setting')]
    assert headers == [['setting', 'recipe:', 'paper', 'VOC', 'exp'], ['setting', 'recipe:', 'paper', 'VOC', '256',
                                                                       'exp_256']]
    assert [line.split() for line in own.stdout.splitlines() if line.startswith('N_BASES')] == [
        ['N_BASES', '64', '64'], ['N_BASES', '64', '32', '*']]
    column = run_script(tmp_path, str(experiment / 'compare.py'), str(experiment), str(other), '--csv')
    assert [row[:2] for row in csv.reader(io.StringIO(column.stdout))] == [
        ['experiment', 'recipe'], ['exp', 'paper VOC, 9 differ'], ['exp_256', 'paper VOC 256, 1 differs']]
    wrong = run_script(tmp_path, str(experiment / 'compare.py'), '--recipe', 'paper VCO', str(experiment))
    assert wrong.returncode == 2 and "--recipe 'paper VCO' is no published recipe; they are 'paper VOC'" in wrong.stderr


# ---------------------------------------------------------------- what was trained, whatever the files say since

def test_a_run_from_before_the_records_is_compared_as_its_checkpoint_trained(tmp_path):
    # trained from scratch at batch 2 before checkpoints kept a record; settings.py edited back to the paper's since
    trained = {key: value for key, value in defaults(PRETRAINED=None, BATCH_SIZE=2).items() if key != 'RECIPE'}
    torch.save({'net': {}, 'step': 2, 'settings': trained}, tmp_path / 'final.pth')
    record = checkpoint.folder_recipe(str(tmp_path), defaults())
    assert [(d['setting'], d['run']) for d in record['deviations']] == [('PRETRAINED', None), ('BATCH_SIZE', 2),
                                                                        (NOTE, 2)]
    assert checkpoint.held_recipe(torch.load(tmp_path / 'final.pth', weights_only=True), defaults()) == record
    torch.save({'net': {}, 'step': 2, 'settings': {}}, tmp_path / 'final.pth')  # what it lacks is the folder's
    assert checkpoint.folder_recipe(str(tmp_path), defaults(ITER_MAX=2))['deviations'][0]['setting'] == 'ITER_MAX'
    torch.save({'net': {}, 'step': 2}, tmp_path / 'final.pth')  # the authors' file: only the folder's settings tell
    assert checkpoint.folder_recipe(str(tmp_path), defaults())['deviations'] == []


def test_a_stage_names_what_its_init_from_network_was(tmp_path, monkeypatch):
    # the COCO stage trained from scratch: the trainaug stage, and the trainval stage after it, still say so
    coco = dataset.compare_recipe(defaults(DATASET='coco_voc', PRETRAINED=None))
    assert dataset.recipe_label(coco) == 'staged COCO, 1 differs'
    torch.save({'net': {}, 'step': 30000, 'recipe': checkpoint.plain(coco)}, tmp_path / 'coco.pth')
    for name, value in defaults(PRETRAINED=None, INIT_FROM=str(tmp_path / 'coco.pth')).items():
        monkeypatch.setattr(settings, name, value)
    trainaug = checkpoint.recipe_record(torch.nn.BatchNorm2d(3))  # train.py's, which reads INIT_FROM's record
    assert trainaug['name'] == 'staged trainaug'
    (deviation,) = trainaug['deviations']
    assert (deviation['setting'], deviation['run'], deviation['recipe']) == ('INIT_FROM', str(tmp_path / 'coco.pth'),
                                                                             'staged COCO')
    assert deviation['note'] == "a run of 'staged COCO, 1 differs', itself from random weights"
    assert SCRATCH in deviation['cost']
    trainval = dataset.compare_recipe(defaults(PRETRAINED=None, INIT_FROM='trainaug.pth', TRAIN_SPLIT='trainval'),
                                      started=trainaug)
    assert [(d['setting'], d['note']) for d in trainval['deviations']] == [
        ('INIT_FROM', "a run of 'staged trainaug, 1 differs', itself from random weights")]
    # from a COCO stage that followed its recipe: nothing differs; from the authors' file (no record): unknown
    coco = dataset.compare_recipe(defaults(DATASET='coco_voc'))
    for started in (coco, None):
        stage = dataset.compare_recipe(defaults(PRETRAINED=None, INIT_FROM='coco.pth'), started=started)
        assert (stage['name'], stage['deviations']) == ('staged trainaug', [])


def test_a_run_resumed_with_other_settings_keeps_every_value_it_trained_with(tmp_path, monkeypatch):
    def resume(start, **changes):  # train.py's comparison after resuming at step start, with settings.py changed
        for name, value in defaults(MODEL_DIR=str(tmp_path), **changes).items():
            monkeypatch.setattr(settings, name, value)
        return checkpoint.recipe_record(torch.nn.BatchNorm2d(3), start)

    first = resume(0, CROP_SIZE=321, LR=1e-3, BATCH_SIZE=8)
    torch.save({'net': {}, 'step': 2000, 'recipe': first}, tmp_path / 'latest.pth')
    second = resume(2000, CROP_SIZE=385, BATCH_SIZE=8)  # LR back to the recipe's
    expected = [("CROP_SIZE 385 (from step 2001), the recipe's 513", 'CROP_SIZE'),
                ("BATCH_SIZE 8, the recipe's 16: ", 'BATCH_SIZE'),
                ("images per BatchNorm 8 (BATCH_SIZE 8, one process), the recipe's 16: ", NOTE),
                ("CROP_SIZE 321 (steps 1-2000), the recipe's 513", 'CROP_SIZE'), ("LR 0.001 (steps 1-2000), ", 'LR')]
    lines = dataset.recipe_lines(second)
    assert lines[0] == f'{PAPER_VOC}: 4 settings differ' and dataset.recipe_label(second) == 'paper VOC, 4 differ'
    assert [(line.startswith(f'recipe:   {text}'), d['setting']) for line, d, (text, _) in
            zip(lines[1:], second['deviations'], expected)] == [(True, setting) for _, setting in expected]
    assert compare.recipe_cell(second['run'], second['deviations'], 'CROP_SIZE') == '385 * (321: steps 1-2000)'
    torch.save({'net': {}, 'step': 4000, 'recipe': second}, tmp_path / 'final.pth')  # latest.pth cut short:
    (tmp_path / 'latest.pth').write_bytes(b'')                                       # resumed from final.pth
    third = resume(4000, CROP_SIZE=385, BATCH_SIZE=16, ACCUM_STEPS=2)  # the batch back, its BatchNorm still 8
    assert [(d['setting'], d['run'], dataset.steps_text(d['steps'])) for d in third['deviations']] == [
        ('CROP_SIZE', 385, 'from step 2001'), (NOTE, 8, ''), ('BATCH_SIZE', 8, 'steps 1-4000'),
        ('CROP_SIZE', 321, 'steps 1-2000'), ('LR', 0.001, 'steps 1-2000')]
    assert resume(4000, ITER_MAX=4000) == second  # finished: no step trains with what settings.py says now
    assert dataset.steps_text([1, 1]) == 'step 1'
    assert resume(0, CROP_SIZE=321)['deviations'][0]['steps'] is None  # a fresh run reads no earlier file


def test_an_eval_json_pairs_no_number_of_another_dataset_or_a_renamed_recipe(tmp_path, monkeypatch, caplog, capsys):
    import eval as eval_script
    record = dict(dataset.compare_recipe(defaults()), name='paper VOC 2019')  # another version's name
    monkeypatch.setattr(settings, 'LOG_DIR', str(tmp_path))
    monkeypatch.setattr(settings, 'MODEL_DIR', str(tmp_path))
    confusion = torch.eye(21, dtype=torch.int64)  # every class right once
    eval_script.report(confusion, os.path.join(str(tmp_path), 'final.pth'), 2, 21, recipe=record)
    kept = json.loads((tmp_path / 'eval_final.json').read_text())['recipe']
    assert kept == json.loads(json.dumps(record))  # as the checkpoint had it: no protocol or number matched
    monkeypatch.setattr(settings, 'DATASET', 'coco_voc')  # a VOC run's checkpoint evaluated on COCO's val
    eval_script.report(confusion, os.path.join(str(tmp_path), 'final.pth'), 2, 21, recipe=dict(record, name='paper VOC'))
    kept = json.loads((tmp_path / 'eval_final.json').read_text())['recipe']
    assert (kept['name'], kept['protocol'], kept['reported']) == ('paper VOC', False, None)
    monkeypatch.setattr(settings.logger, 'handlers', [*settings.logger.handlers, caplog.handler])  # it propagates not
    compare.print_recipes('', ['exp'], [{'recipe': record, 'evals': {}}], compare.print_plain)
    assert "exp: its run was compared with 'paper VOC 2019', which dataset.RECIPES no longer holds" in caplog.text
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith('setting')]  # no table
    # a record from before SCALES was a recipe setting: compared in what it holds, beside any recipe
    older = dict(record, name='paper VOC', run={k: v for k, v in record['run'].items() if k != 'SCALES'})
    header, rows = compare.recipe_table('paper ablation', ['exp'], [{'recipe': older, 'evals': {}, 'settings': {}}])
    assert dict((row[0], row[2]) for row in rows)['SCALES'] == 'None' and dataset.recipe_lines(older)
