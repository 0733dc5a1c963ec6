#!/bin/sh
# Train (or continue) the run primus on the dataset primus (written by `supersmm detect`).
# Works from any directory: SUPERSMM_HOME is the folder above this script. Options are passed on to
# `supersmm train`, e.g. --max-total-epochs 100 --batch-size 16.
cd "$(dirname "$0")/.." || exit 1
SUPERSMM_HOME=$(pwd)
export SUPERSMM_HOME
exec supersmm train primus "$@"
