#!/usr/bin/env bash
# Serves this experiment's LOG_DIR with TensorBoard on a free port and prints the address; given experiment
# folders, serves their LOG_DIRs side by side, each run named by its folder.
# TensorBoard is in requirements.txt: pip install -r requirements.txt (or pip install tensorboard==2.21.0)
#
#   bash tensorboard.sh                        # this folder; then open the printed address
#   bash tensorboard.sh ../exp_a ../exp_b      # several experiments in one TensorBoard
set -euo pipefail
specs=()
for folder in "$@"; do  # before the cd below: the folders are relative to where the command runs
    if [[ ! -f "$folder/settings.py" ]]; then
        echo "$folder is not an experiment folder (no settings.py)" >&2
        exit 1
    fi
    name=$(basename "$(cd "$folder" && pwd -P)")
    log_dir=$(cd "$folder" && python -c "import os, settings; print(os.path.abspath(settings.LOG_DIR))")
    if [[ "$name" == *[,:]* || "$log_dir" == *,* ]]; then
        echo "$folder: TensorBoard cannot take '$name' at $log_dir (no ',' or ':' in a name, no ',' in a path)" >&2
        exit 1
    fi
    specs+=("$name:$log_dir")
done
cd "$(dirname "$0")"
if ! command -v tensorboard >/dev/null; then
    echo "tensorboard is not installed: pip install -r requirements.txt (or pip install tensorboard==2.21.0)" >&2
    exit 1
fi
port=$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
if (( ${#specs[@]} )); then
    spec=$(IFS=,; echo "${specs[*]}")
    echo "TensorBoard for ${specs[*]} at http://$(hostname):$port/ (http://localhost:$port/ on this machine)"
    exec tensorboard --logdir_spec "$spec" --port "$port" --bind_all
fi
log_dir=$(python -c "import settings; print(settings.LOG_DIR)")
echo "TensorBoard for $log_dir at http://$(hostname):$port/ (http://localhost:$port/ on this machine)"
exec tensorboard --logdir "$log_dir" --port "$port" --bind_all
