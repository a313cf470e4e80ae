#!/usr/bin/env bash
# The whole research loop on a generated dataset, on CPU, in about 2.5 minutes on 2 cores: generate data, make an
# experiment folder (a copy of the code with a few settings appended), train (evaluating every 25 steps:
# TensorBoard's val_first12/mIoU curve, models/best.pth), evaluate, and show what the experiment changed.
#
#   bash demo.sh                       # writes demo_data/ and demo_exp/ in this folder
#   DEMO_ITER_MAX=3 bash demo.sh       # the same at a tiny budget (a smoke test; it learns nothing)
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

python prepare.py demo demo_data

rm -rf demo_exp
mkdir -p demo_exp/models
cp ./*.py ./*.sh demo_exp/
cat >> demo_exp/settings.py <<SETTINGS

# demo: ResNet-50 from scratch on CPU, on crops holding most of each generated 40-70 px image, for 100 steps;
# the paper's 256-channel EM unit (at these sizes its 512-channel fc0 costs more than the backbone), a faster
# BN running average and a higher learning rate than the paper's (whose 30k steps start from ImageNet weights)
DATASET = 'demo'   # VOC's layout and classes; no published recipe to compare with
DATA_ROOT = '$here/demo_data'
N_LAYERS = 50
PRETRAINED = None
EMA_CHANNELS = 256
BN_MOM = 0.1
CROP_SIZE = 49
SCALES = (0.75, 1.0, 1.25)
BATCH_SIZE = 8
LR = 0.06
ITER_MAX = ${DEMO_ITER_MAX:-100}
ITER_SAVE = 1000   # latest.pth (and final.pth) at the end only: a save is 230 MB
LOG_EVERY = 10
IMAGE_EVERY = 25
NUM_WORKERS = 1
EVAL_EVERY = 25    # TensorBoard's val_first12/mIoU curve, on the first 12 val images (eval.py's val/mIoU: all)
EVAL_IMAGES = 12
SETTINGS

echo "== the experiment differs from this folder by:"
diff settings.py demo_exp/settings.py || true

cd demo_exp
python train.py
python eval.py --save-pred logdir/predictions --attention logdir/attention
python - <<'SUMMARY'
import json
result = json.load(open('logdir/eval_final.json'))
curve = [json.loads(line) for line in open('logdir/val.jsonl')]
print('== validation while training (first 12 val images): ' +
      ', '.join(f"step {entry['step']} {100 * entry['mIoU']:.1f}%" for entry in curve))
truth = [sum(row) for row in result['confusion']]
present = sum(t > 0 for t in truth)
background_only = truth[0] / sum(truth) / present  # mIoU of predicting background everywhere
print(f"== demo mIoU {100 * result['mIoU']:.1f}% (predicting background everywhere scores "
      f"{100 * background_only:.1f}%); predictions and attention maps in demo_exp/logdir/, "
      f"TensorBoard: cd demo_exp && bash tensorboard.sh")
SUMMARY
