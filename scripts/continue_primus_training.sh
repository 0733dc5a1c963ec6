#!/bin/sh
# Continue the existing run primus (written by `supersmm detect`).
# Works from any directory: SUPERSMM_HOME is the folder above this script. Options are passed on to
# `supersmm train`, e.g. --max-total-epochs 100 --batch-size 16.
cd "$(dirname "$0")/.." || exit 1
SUPERSMM_HOME=$(pwd)
export SUPERSMM_HOME
if [ ! -f model/primus_model/training_state.txt ]; then
    echo "no run primus to continue in $SUPERSMM_HOME: start it with scripts/train_primus.sh" >&2
    exit 1
fi
exec supersmm train primus "$@"
