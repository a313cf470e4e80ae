#!/usr/bin/env bash
# Removes this experiment's checkpoints (latest.pth, step_<N>.pth, final.pth, best.pth and partial saves;
# pretrained backbones and files of other names, such as a kept step_20000_best.pth, stay), its LOG_DIR
# and Python caches. Nothing outside this folder is touched:
# a MODEL_DIR or LOG_DIR that lies elsewhere is reported and left alone.
#
#   bash clean.sh
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd -P)

# MODEL_DIR, LOG_DIR, then the step_<N>.pth files as checkpoint.py names them, a line each
mapfile -t lines < <(python -c "import checkpoint, settings
print(settings.MODEL_DIR, settings.LOG_DIR, *checkpoint.step_files(settings.MODEL_DIR).values(), sep='\n')")
model_dir=${lines[0]} log_dir=${lines[1]} step_files=("${lines[@]:2}")

inside() {  # is $1 this folder or below it?
    local path
    path=$(realpath -m "$1")
    [[ "$path" == "$here" || "$path" == "$here"/* ]]
}

if inside "$model_dir"; then
    rm -fv "$model_dir"/latest.pth "$model_dir"/final.pth "$model_dir"/best.pth "${step_files[@]}" \
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
