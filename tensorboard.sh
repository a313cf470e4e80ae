#!/usr/bin/env bash
# Serves this experiment's LOG_DIR with TensorBoard on a free port and prints the address.
# TensorBoard is a viewer, not a dependency of training: pip install tensorboard
#
#   bash tensorboard.sh            # then open the printed address
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v tensorboard >/dev/null; then
    echo "tensorboard is not installed: pip install tensorboard" >&2
    exit 1
fi
log_dir=$(python -c "import settings; print(settings.LOG_DIR)")
port=$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
echo "TensorBoard for $log_dir at http://$(hostname):$port/ (http://localhost:$port/ on this machine)"
exec tensorboard --logdir "$log_dir" --port "$port" --bind_all
