#!/usr/bin/env bash
# Removes this experiment's checkpoints (latest.pth, step_<N>.pth, final.pth, best.pth and partial saves;
# pretrained backbones stay), its LOG_DIR and Python caches. Nothing outside this folder is touched:
# a MODEL_DIR or LOG_DIR that lies elsewhere is reported and left alone.
#
#   bash clean.sh
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd -P)

mapfile -t dirs < <(python -c "import settings; print(settings.MODEL_DIR); print(settings.LOG_DIR)")
model_dir=${dirs[0]} log_dir=${dirs[1]}

inside() {  # is $1 this folder or below it?
    local path
    path=$(realpath -m "$1")
    [[ "$path" == "$here" || "$path" == "$here"/* ]]
}

if inside "$model_dir"; then
    rm -fv "$model_dir"/latest.pth "$model_dir"/final.pth "$model_dir"/best.pth "$model_dir"/step_*.pth \
        "$model_dir"/*.pth.tmp* "$model_dir"/*.corrupt
else
    echo "MODEL_DIR=$model_dir is outside $here: left alone"
fi
if inside "$log_dir" && [[ "$(realpath -m "$log_dir")" != "$here" ]]; then
    rm -rf "$log_dir" && echo "removed $log_dir"
else
    echo "LOG_DIR=$log_dir is not a folder inside $here: left alone"
fi
rm -rf __pycache__ tests/__pycache__ .pytest_cache
