"""Experiment folders side by side: the settings that differ between them, the step each reached, and the
metrics of each of its evaluations.

    python compare.py ../exp_*                            # an aligned table
    python compare.py ../emanet ../exp_k32 --markdown     # a GitHub table to paste into notes
    python compare.py ../exp_* --csv > results.csv        # for a spreadsheet
    python compare.py abl/t_* --plot fig4.png             # and a figure: curves, mIoU against the settings
    python compare.py --recipe ../exp_*                   # each folder's run beside its published recipe
    python compare.py --recipe 'paper VOC' ../exp_a --markdown   # beside a recipe named (DATASETS.md's tables)

One row per folder; its 'recipe' column names the published recipe (dataset.RECIPES) its run was compared with and
how many settings differ ('paper VOC', 'paper VOC, 3 differ': train.py's record in the newer of final.pth and
latest.pth, else the folder's settings as one process runs them), and --markdown lists each row's deviations under
the table. --recipe [NAME] prints instead, per recipe, its settings beside each folder's run, deviations marked
'*', and its reported numbers beside the folders' results of the same protocol and split. A folder's settings are
what its settings.py assigns, run on its own with the folder
as working directory (no other module of the folder is imported); when settings.py does not run, the
LOG_DIR/settings.txt its last training wrote. Only the settings whose values differ between the folders
are columns. The step is that of the newer of MODEL_DIR/final.pth and MODEL_DIR/latest.pth, read without
loading the weights. Each LOG_DIR/eval_<name>.json gives two columns, '<name> mIoU' and '<name> pAcc', in
percent: eval.py names them by checkpoint and protocol ('final', 'final_ms_flip', 'step_2000_window769', see
evaluation.protocol); eval.py keeps the results of other folders' checkpoints in LOG_DIR/other_checkpoints/,
which is not read: a row holds its own folder's results only. 'best val mIoU' and 'best val step' are the best
evaluation while training (EVAL_EVERY), from LOG_DIR/val.jsonl, else MODEL_DIR/best.pth. Missing results are '-' (empty cells in --csv) and the last
column says why; it also marks a folder stale whose checkpoint ran with settings that its settings.py no longer
gives (those that shape the trained network: checkpoint.changed_settings), naming them: its results are not its
settings'. A folder without settings.py is no experiment: it is named on stderr and skipped.

--plot FILE.png (matplotlib) draws the folders' validation curves (LOG_DIR/val.jsonl) and, where the folders
differ in one or two settings, the final checkpoint's mIoU against them, a line per value of the second: PyTorch's
results (an export.py file's, through onnxruntime or OpenVINO, have the same evaluation settings: they are in the
table only); results of one folder under several evaluation settings (eval.py --set EVAL_STAGE_NUM=1,2,...) count
as settings too, so a STAGE_NUM grid evaluated at every EVAL_STAGE_NUM gives the paper's Fig. 4 (mIoU against
T_eval, a line per T_train). An evaluation setting that follows a folder setting in every result (EVAL_STAGE_NUM
None: STAGE_NUM, EVAL_STRIDE None: STRIDE) is no axis of its own: a STAGE_NUM grid evaluated as trained is one line
of mIoU against STAGE_NUM. Missing results are gaps, never zeros.
"""
import argparse
import ast
import csv
import glob
import json
import math
import os
import re
import sys

import checkpoint
import dataset
import evaluation
import settings

logger = settings.logger
DEFAULT_DIRS = {'MODEL_DIR': './models', 'LOG_DIR': './logdir'}  # when a folder's settings do not say


def is_setting(name):
    return name.isupper() and not name.startswith('_')  # as settings.effective() sees them


def run_settings(folder):
    """settings.folder_settings of folder, each value as the checkpoints and settings.txt hold it:
    np.float64(0.5) is 0.5, Path('data') is 'data'. Raises whatever the file raises."""
    return {name: checkpoint.plain(value) for name, value in settings.folder_settings(folder).items()}


def assigned_log_dir(folder):
    """LOG_DIR as settings.py's last plain assignment of it writes it, for a settings.py that does not run."""
    log_dir = DEFAULT_DIRS['LOG_DIR']
    try:
        with open(os.path.join(folder, 'settings.py')) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return log_dir
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == 'LOG_DIR' for t in node.targets):
            try:
                log_dir = ast.literal_eval(node.value)
            except ValueError:
                pass
    return log_dir


def read_settings_txt(path):
    """LOG_DIR/settings.txt, `NAME = repr(value)` a line: {name: value}, a value that is no literal as its text."""
    values = {}
    with open(path) as f:
        for line in f:
            name, sep, text = line.rstrip('\n').partition(' = ')
            if sep and is_setting(name.strip()):
                try:
                    values[name.strip()] = ast.literal_eval(text)
                except Exception:  # e.g. a value whose repr is not a literal
                    values[name.strip()] = text
    return values


def read_folder_settings(folder, notes):
    """settings.py's values, else settings.txt's (noted), else {} (noted)."""
    try:
        return run_settings(folder)
    except BaseException as e:  # a settings.py that raises, exits or reads what only a run has (os.environ['RANK'])
        if isinstance(e, KeyboardInterrupt):
            raise
        error = f'{type(e).__name__}: {e}'.splitlines()[0]
    txt = os.path.join(assigned_log_dir(folder), 'settings.txt')
    logger.warning('%s: settings.py does not run (%s)', folder, error)
    try:
        values = read_settings_txt(os.path.join(folder, txt))
    except (OSError, UnicodeDecodeError):
        notes.append(f'settings unknown (settings.py fails: {error}; no {txt})')
        return {}
    notes.append(f'settings from {txt} (settings.py fails: {error})')
    return values


def checkpoint_step(path):
    """The step a checkpoint holds, read without reading its weights (memory-mapped). Raises
    checkpoint.CheckpointError saying what is wrong with the file."""
    ckpt = checkpoint.read_weights(path, mmap=True)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('step'), int):
        raise checkpoint.CheckpointError(f'{path} holds no step')
    return ckpt['step']


def step_reached(model_dir, values, notes):
    """The step of the newest readable of final.pth and latest.pth, or None; notes say what else is so: not
    finished, or stale when either checkpoint ran with settings that values (the folder's) no longer give
    (checkpoint.changed_settings), its results not those of the folder's settings."""
    paths = [os.path.join(model_dir, name) for name in ('final.pth', 'latest.pth')]
    paths = sorted((p for p in paths if os.path.isfile(p)), key=os.path.getmtime, reverse=True)
    if not paths:
        notes.append('no checkpoint yet')
    step = None
    for path in paths:
        try:
            ckpt = checkpoint.read_weights(path, mmap=True)
            saved = checkpoint_step(path)
        except checkpoint.CheckpointError as e:
            notes.append(str(e))
            continue
        changed = checkpoint.changed_settings(ckpt.get('settings', {}), values)
        if changed and not any(note.startswith('stale: ') for note in notes):
            notes.append(f'stale: {os.path.basename(path)} ran with {checkpoint.describe_changes(changed)}')
        if step is None:
            step = saved
            iter_max = values.get('ITER_MAX')
            if os.path.basename(path) == 'latest.pth' and not (isinstance(iter_max, int) and step >= iter_max):
                notes.append('not finished')
    return step


def read_evals(log_dir, notes):
    """{column label: the result eval.py wrote (a dict: mIoU, pAcc as fractions or None, ...)} from
    LOG_DIR/eval_*.json, each labelled by its file:
    eval_final.json → 'final', eval_final_ms_flip.json → 'final_ms_flip' (eval.py names files by checkpoint
    and protocol)."""
    evals = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(log_dir), 'eval_*.json'))):
        label = os.path.basename(path)[len('eval_'):-len('.json')]
        try:
            with open(path) as f:
                result = json.load(f)
            if not isinstance(result, dict):
                raise TypeError
            evals[label] = result
        except (OSError, ValueError, TypeError):
            notes.append(f'{os.path.basename(path)} is unreadable')
    if not evals:
        notes.append('no eval yet')
    return evals


def best_validation(log_dir, model_dir, notes):
    """(the best validation mIoU while training, its step) from LOG_DIR/val.jsonl, else from MODEL_DIR/best.pth
    (read without its weights); None when the run evaluated nothing while training."""
    entries = [e for e in evaluation.read_val_log(os.path.join(log_dir, evaluation.VAL_LOG))
               if isinstance(e.get('mIoU'), (int, float))]
    if entries:
        best = max(entries, key=lambda e: e['mIoU'])  # the first of equals: the earliest step
        return best['mIoU'], best['step']
    path = os.path.join(model_dir, 'best.pth')
    if os.path.isfile(path):
        try:
            ckpt = checkpoint.read_weights(path, mmap=True)
            return ckpt['best_mIoU'], ckpt['step']
        except (checkpoint.CheckpointError, KeyError, TypeError) as e:
            notes.append(f'best.pth is unreadable ({e})')
    return None


def read_experiment(folder):
    """{'settings', 'recipe' (checkpoint.folder_recipe), 'step', 'evals', 'best', 'curve' (val.jsonl's (step, mIoU)),
    'notes'} of an experiment folder."""
    notes = []
    values = read_folder_settings(folder, notes)
    model_dir, log_dir = (os.path.join(folder, str(values.get(name, DEFAULT_DIRS[name])))
                          for name in ('MODEL_DIR', 'LOG_DIR'))
    try:
        recipe = checkpoint.folder_recipe(model_dir, values)
    except ValueError as e:  # a RECIPE of no recipe of its DATASET
        recipe = None
        notes.append(str(e))
    step = step_reached(model_dir, values, notes)
    evals = read_evals(log_dir, notes)
    final = os.path.join(model_dir, 'final.pth')
    older = [f'eval_{label}.json' for label in evals if eval_order(label)[0][0] == 0 and os.path.isfile(final) and
             os.path.getmtime(os.path.join(log_dir, f'eval_{label}.json')) < os.path.getmtime(final)]
    if older:
        notes.append(f'{", ".join(older)} older than final.pth: results of an earlier one; evaluate it again')
    best = best_validation(log_dir, model_dir, notes)
    curve = [(e['step'], e['mIoU']) for e in evaluation.read_val_log(os.path.join(log_dir, evaluation.VAL_LOG))
             if isinstance(e.get('mIoU'), (int, float))]
    return {'settings': values, 'recipe': recipe, 'step': step, 'evals': evals, 'best': best, 'curve': curve,
            'notes': notes}


MISSING = object()  # a setting that a folder does not have


def same(a, b):
    try:
        return bool(a == b)
    except Exception:
        return repr(a) == repr(b)


def differing(experiments):
    """The setting names whose values are not the same in every folder, in the order the files have them."""
    names = []
    for experiment in experiments:
        names += [name for name in experiment['settings'] if name not in names]
    columns = []
    for name in names:
        values = [experiment['settings'].get(name, MISSING) for experiment in experiments]
        if any(v is MISSING for v in values) and not all(v is MISSING for v in values):
            columns.append(name)
        elif not all(same(values[0], v) for v in values[1:]):
            columns.append(name)
    return columns


# an eval_*.json label: a checkpoint's stem (step_<N> by checkpoint.STEP_FILE's rule), then _<protocol> if any
EVAL_LABEL = re.compile(r'(final|latest|%s)(?:_(.+))?' % checkpoint.STEP_FILE.pattern.removesuffix(r'\.pth'))


def eval_order(label):
    """final first, then latest, then step_<N> by N, then the rest; each checkpoint's authors' protocol first."""
    known = EVAL_LABEL.fullmatch(label)
    if not known:
        return (3, 0, label), ''
    stem, number, protocol = known.groups()
    return ((0, 0, '') if stem == 'final' else (1, 0, '') if stem == 'latest' else (2, int(number), '')), \
        protocol or ''


def table(folders, experiments):
    """(header, rows of cells or None for missing, which columns are numbers)."""
    setting_names = differing(experiments)
    labels = sorted({label for e in experiments for label in e['evals']}, key=eval_order)
    header = ['experiment', 'recipe', *setting_names, 'step']
    header += [f'{label} {metric}' for label in labels for metric in ('mIoU', 'pAcc')]
    header += ['best val mIoU', 'best val step', 'notes']
    rows = []
    for name, experiment in zip(folders, experiments):
        row = [name, dataset.recipe_label(experiment['recipe'])]
        for setting in setting_names:
            value = experiment['settings'].get(setting, MISSING)
            row.append(None if value is MISSING else value if isinstance(value, str) else repr(value))
        row.append(None if experiment['step'] is None else str(experiment['step']))
        for label in labels:
            result = experiment['evals'].get(label, {})
            metrics = result.get('mIoU'), result.get('pAcc')
            row += [None if m is None else f'{100 * m:.2f}' for m in metrics]
        best = experiment['best']
        row += [None, None] if best is None else [f'{100 * best[0]:.2f}', str(best[1])]
        row.append('; '.join(experiment['notes']))
        rows.append(row)
    numeric = [False] * (2 + len(setting_names)) + [True] * (3 + 2 * len(labels)) + [False]
    return header, rows, numeric


def evaluated_with(result, values):
    """{EVAL_* setting (evaluation.EVAL_SETTINGS): its effective value} that an eval.py result was measured with:
    scales, flip, window, stride and precision as its JSON records them, the EM iterations (stage_num; a result of
    before it was recorded: as the folder's settings values give them)."""
    recorded = {'EVAL_SCALES': result.get('scales'), 'EVAL_FLIP': result.get('flip'),
                'EVAL_WINDOW': result.get('window'), 'EVAL_STRIDE': result.get('stride'),
                'EVAL_STAGE_NUM': result.get('stage_num', values.get('EVAL_STAGE_NUM') or values.get('STAGE_NUM')),
                'EVAL_AMP': result.get('precision', 'float32') != 'float32'}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in recorded.items()}


# an evaluation setting that takes a training setting's value when None (dataset.output_stride, network.EMAU): while
# it does so in every result, it is the same axis as that setting, not one of its own
FOLLOWS = {'EVAL_STAGE_NUM': 'STAGE_NUM', 'EVAL_STRIDE': 'STRIDE'}


def distinct(values):
    """values without repeats: sorted where they are all numbers, else in their order."""
    unique = list({repr(value): value for value in values}.values())
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique)
    return sorted(unique) if numbers else unique


def series(points, x_name, line_name):
    """[(line label, xs, ys)]: points ((coordinates {setting: value}, y or None)) as a line per value of
    line_name (one line when None), each over every value of x_name; NaN where no point has a result."""
    xs = distinct(c[x_name] for c, _ in points)
    lines = distinct(c[line_name] for c, _ in points) if line_name else [None]
    found = {(repr(c[x_name]), repr(c[line_name]) if line_name else ''): y for c, y in points if y is not None}
    return [(f'{line_name} = {line!r}' if line_name else '', xs,
             [100 * found.get((repr(x), repr(line) if line_name else ''), math.nan) for x in xs]) for line in lines]


def plot_data(names, experiments):
    """The panels --plot draws, [{'title', 'xlabel', 'ylabel', 'lines': [(label, xs, ys in percent)]}]:
    the validation curves (val.jsonl); and where the folders differ in one or two settings, their final
    checkpoint's mIoU (PyTorch's evaluations: the JSON's engine) against them: a panel over the folders' settings
    and the evaluation settings their results differ in when those are two at most (the paper's Fig. 4:
    EVAL_STAGE_NUM on x, a line per STAGE_NUM; an evaluation setting that follows a folder setting in every result,
    FOLLOWS, is that setting's axis), else a
    panel per protocol over the folders' settings; then the best validation mIoU against them. The first
    setting is the x axis, a line per value of the second; a missing result is NaN (a gap), never zero."""
    panels = []
    curves = [(name, [s for s, _ in e['curve']], [100 * m for _, m in e['curve']])
              for name, e in zip(names, experiments) if e['curve']]
    if curves:
        panels.append({'title': 'validation while training', 'xlabel': 'step', 'ylabel': 'val mIoU (%)',
                       'lines': curves})
    varying = differing(experiments)
    if not 1 <= len(varying) <= 2:
        return panels
    folder_points = [{name: e['settings'].get(name) for name in varying} for e in experiments]
    results = [(coordinates, label, result, e['settings']) for coordinates, e in zip(folder_points, experiments)
               for label, result in e['evals'].items()  # final.pth's own results: PyTorch's, not its ONNX file's
               if eval_order(label)[0][0] == 0 and result.get('engine', 'pytorch') == 'pytorch']
    points = [({**coordinates, **evaluated_with(result, values)}, result.get('mIoU'))
              for coordinates, _, result, values in results]
    eval_varying = [name for name in evaluation.EVAL_SETTINGS if len(distinct(c[name] for c, _ in points)) > 1 and
                    not (FOLLOWS.get(name) in varying and all(same(c[name], c[FOLLOWS[name]]) for c, _ in points))]
    axes = eval_varying + varying
    if len(axes) <= 2 and points:
        shown = points + ([] if eval_varying else [(c, None) for c in folder_points])  # a folder without a result too
        panels.append({'title': 'final', 'xlabel': axes[0], 'ylabel': 'mIoU (%)',
                       'lines': series(shown, axes[0], axes[1] if len(axes) > 1 else None)})
    elif points:
        for label in sorted({label for _, label, _, _ in results}, key=eval_order):
            shown = [(c, r.get('mIoU')) for c, l, r, _ in results if l == label]
            shown += [(c, None) for c in folder_points]  # every folder, with a result or without
            panels.append({'title': label, 'xlabel': varying[0], 'ylabel': 'mIoU (%)',
                           'lines': series(shown, varying[0], varying[1] if len(varying) > 1 else None)})
    best = [(c, e['best'][0] if e['best'] else None) for c, e in zip(folder_points, experiments)]
    if any(y is not None for _, y in best):
        panels.append({'title': 'best while training', 'xlabel': varying[0], 'ylabel': 'best val mIoU (%)',
                       'lines': series(best, varying[0], varying[1] if len(varying) > 1 else None)})
    return panels


def plot(panels, path):
    """Draws panels side by side into path (a matplotlib Figure, no display needed) and returns the figure, whose
    axes' lines hold the data drawn; non-numeric x values are categories."""
    import matplotlib.figure  # here: only --plot needs it
    import matplotlib.ticker
    figure = matplotlib.figure.Figure(figsize=(5 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, xs, ys in panel['lines']:
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
            ax.plot(xs if numeric else range(len(xs)), ys, marker='o', label=label or None)
            if not numeric:
                ax.set_xticks(range(len(xs)), [x if isinstance(x, str) else repr(x) for x in xs])
            elif panel['xlabel'] != 'step':  # a setting's values: a tick at each, none between (256, 512)
                ax.set_xticks(xs)
            elif all(isinstance(x, int) for x in xs):  # steps: no tick between two
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set(title=panel['title'], xlabel=panel['xlabel'], ylabel=panel['ylabel'])
        ax.grid(alpha=0.3)
        if any(label for label, _, _ in panel['lines']):
            ax.legend(fontsize='small')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return figure


def print_plain(header, rows, numeric):
    cells = [header] + [[('-' if c is None else c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [[c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric)] for row in cells]
    lines.insert(1, ['-' * w for w in widths])
    for line in lines:
        print('  '.join(line).rstrip())


def print_markdown(header, rows, numeric):
    def line(cells):
        return '| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |'
    print(line(header))
    print('|' + '|'.join(' ---: ' if right else ' --- ' for right in numeric) + '|')
    for row in rows:
        print(line([('-' if c is None else c) for c in row]))


def print_csv(header, rows, numeric):
    writer = csv.writer(sys.stdout, lineterminator='\n')
    writer.writerow(header)
    writer.writerows([('' if c is None else c) for c in row] for row in rows)


def print_deviations(names, experiments):
    """Under a --markdown table: each row's deviations from its published recipe, as its train.py logged them."""
    shown = [(name, e['recipe']) for name, e in zip(names, experiments) if e['recipe'] and e['recipe']['deviations']]
    if shown:
        print('\nDeviations from the published recipe (DATASETS.md) of each row:')
    for name, record in shown:
        print(f'- {name}: {dataset.recipe_label(record)}')
        for deviation in record['deviations']:
            print(f'  - {dataset.deviation_text(deviation)}')


def recipe_measured(name, result, experiment):
    """'mIoU (label)' of the first of a folder's evaluations (eval_order) under the protocol and on the split of one
    of the recipe's reported results, on its dataset (dataset.recipe_result, the folder's DATASET), or None."""
    evals, evaluated_on = experiment['evals'], experiment['settings'].get('DATASET')
    for label in sorted(evals, key=eval_order):
        evaluated = evals[label]
        recorded = all(key in evaluated for key in ('scales', 'flip', 'window', 'stride', 'split', 'mIoU'))
        if recorded and evaluated['mIoU'] is not None and \
                dataset.recipe_result(name, evaluated, evaluated_on)[1] is result:
            return f'{100 * evaluated["mIoU"]:.2f} ({label})'
    return None


def recipe_cell(run, found, key):
    """A run's value of key, ' *' where it deviates, and the deviating values of its steps before a resume: '49 *
    (33: steps 1-2000)'."""
    earlier = [f'{dataset.value_text(d["run"])}: {dataset.steps_text(d["steps"])}' for d in found
               if d['setting'] == key and d.get('steps') and d['steps'][1] is not None]
    return (dataset.value_text(run.get(key)) + ' *' * any(d['setting'] == key for d in found)
            + (f' ({", ".join(earlier)})' if earlier else ''))


def recipe_table(name, names, experiments):
    """(header, rows): the recipe's value of each of dataset.RECIPE_KEYS beside each folder's run (as its record
    keeps them), marked ' *' where the run deviates from this recipe (the record's deviations, with the values of the
    steps before a resume, for the recipe it was compared with; dataset.deviations for another), then a row per
    result the recipe reports, beside the folders' results of its protocol and split."""
    recipe = dataset.RECIPES[name]
    records = [e['recipe'] for e in experiments]
    found = [r['deviations'] if r['name'] == name else dataset.deviations(r['run'], name) for r in records]
    rows = [[key, dataset.value_text(recipe['settings'][key])]
            + [recipe_cell(record['run'], deviations, key) for record, deviations in zip(records, found)]
            for key in dataset.RECIPE_KEYS]
    rows += [[f'mIoU {result["split"]}' + (f', {result["protocol"]}' if 'protocol' in result else ''),
              f'{result["mIoU"]:.2f}'] + [recipe_measured(name, result, e) for e in experiments]
             for result in recipe['results']]
    return ['setting', f'recipe: {name}', *names], rows


def print_recipes(name, names, experiments, printer):
    """--recipe [NAME]: a `recipe_table` of NAME and every folder, or without NAME one per recipe the folders' runs
    were compared with, each followed by the recipe's source."""
    groups = {}
    for folder, experiment in zip(names, experiments):
        record = experiment['recipe']
        if record is None or not (name or record['name']):
            logger.warning('%s: %s', folder, 'settings unknown' if record is None else dataset.recipe_lines(record)[0])
        elif not name and record['name'] not in dataset.RECIPES:  # a record of another version of this code
            logger.warning('%s: its run was compared with %r, which dataset.RECIPES no longer holds: name a recipe '
                           '(--recipe NAME)', folder, record['name'])
        else:
            groups.setdefault(name or record['name'], []).append((folder, experiment))
    for index, (recipe, members) in enumerate(groups.items()):
        header, rows = recipe_table(recipe, *zip(*members))
        print('\n' * bool(index), end='')
        printer(header, rows, [False] * len(header))
        if printer is not print_csv:  # after a blank line: GitHub's table would take the line as one more row
            print(f'\n{recipe}: {dataset.RECIPES[recipe]["source"]}. *: the run differs from the recipe there; '
                  f'{dataset.UNKNOWN}: its source does not say')


def folder_names(folders):
    """Each folder's own name, or the path as given where two share a name."""
    names = [os.path.basename(os.path.abspath(folder)) for folder in folders]
    return [name if names.count(name) == 1 else os.path.normpath(folder) for name, folder in zip(names, folders)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folders', nargs='*', metavar='DIR', help='experiment folders (copies of this one)')
    parser.add_argument('--recipe', nargs='?', const='', metavar='NAME',
                        help='instead of the table: the published recipe NAME (dataset.RECIPES; without NAME, each '
                             'folder\'s own) setting by setting beside each folder\'s run, deviations marked, and its '
                             'reported numbers beside the folders\' results of the same protocol')
    style = parser.add_mutually_exclusive_group()
    style.add_argument('--markdown', action='store_true', help='a GitHub table')
    style.add_argument('--csv', action='store_true', help='comma-separated values')
    parser.add_argument('--plot', metavar='FILE.png',
                        help='also draw the validation curves and, where the folders differ in one or two settings, '
                             'the final mIoU against them (a line per value of the second) into FILE.png')
    args = parser.parse_args()
    if args.recipe and args.recipe not in dataset.RECIPES:  # `--recipe DIR ...`: the folders' own recipes
        if not os.path.isdir(args.recipe):
            parser.error(f'--recipe {args.recipe!r} is no published recipe; they are '
                         f'{", ".join(map(repr, dataset.RECIPES))}')
        args.folders.insert(0, args.recipe)
        args.recipe = ''
    folders = []
    for folder in args.folders:
        if os.path.isfile(os.path.join(folder, 'settings.py')):
            folders.append(folder)
        else:
            logger.warning('%s is not an experiment folder (no settings.py): skipped', folder)
    if not folders:
        raise SystemExit('no experiment folder to compare')
    experiments = [read_experiment(folder) for folder in folders]
    printer = print_markdown if args.markdown else print_csv if args.csv else print_plain
    if args.recipe is not None:
        print_recipes(args.recipe, folder_names(folders), experiments, printer)
    else:
        printer(*table(folder_names(folders), experiments))
    if args.markdown and args.recipe is None:
        print_deviations(folder_names(folders), experiments)
    if args.plot:
        panels = plot_data(folder_names(folders), experiments)
        if not panels:
            raise SystemExit('--plot: nothing to draw: no folder has a val.jsonl, and they do not differ in one or '
                             'two settings with results')
        plot(panels, args.plot)
        logger.info('wrote %s', args.plot)


if __name__ == '__main__':
    main()
