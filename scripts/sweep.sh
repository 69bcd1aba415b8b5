#!/usr/bin/env bash
# A pruning study: the full-data run with its dynamics, the scores, one subset run per (method,
# selection, pruning rate, architecture, seed), then the summary and the report, as a plan of
# commands in three stages, written to a file (PLAN=FILE) or run on this machine (JOBS at once).
# Everything is set by environment variables, each checked (a near miss such as EPOCH=8 is refused;
# every planned command is parsed by its script before anything runs); their reference, the plan's
# format and the executor are in docs/SWEEP.md. A finished study run again starts no process per run.
# The work is done by scripts/sweep.py (utils/study/plan.py: the plan, utils/study/executor.py: the
# local executor), run with PYTHON.
#
# Examples (from the repository root):
#   # the paper's CIFAR-100 / ResNet-18 study on one GPU (dynamics: 90 of 200 epochs)
#   DATASET=cifar100 ARCH=resnet18 EPOCHS=200 bash scripts/sweep.sh
#   # four subset runs at once on a 4-GPU machine
#   JOBS=4 GPUS="0 1 2 3" DATASET=cifar100 bash scripts/sweep.sh
#   # a CPU-sized version (minutes), two jobs at once
#   DATASET=digits ARCH=resnet20 EPOCHS=6 TRAJ=6 WIN=3 RATES="0.5 0.8" JOBS=2 \
#       METHODS="tdds el2n random" OUT=./checkpoint/sweep_digits bash scripts/sweep.sh
#   # aggressive pruning: DUAL + Beta sampling, and random subsets distilled from the full-data model
#   METHODS="tdds dual random" SELECTIONS="top beta" RATES="0.5 0.9" bash scripts/sweep.sh
#   KD=1 KD_ALPHA="0.5:0.5 0.9:1.0" METHODS=random RATES="0.5 0.9" bash scripts/sweep.sh
#   # static against dynamic pruning on one compute axis (InfoBatch, RS2: full-data runs that prune as they go)
#   METHODS="tdds random" DYNAMIC="infobatch rs2" RATES="0.3 0.5 0.7" bash scripts/sweep.sh
#   # dynamic pruning alone, InfoBatch's delta set, with the full-data reference run
#   METHODS=none DYNAMIC="infobatch rs2" DYNAMIC_RATIOS="0.3 0.5" DYNAMIC_DELTA=0.5 FULL_ACC=1 bash scripts/sweep.sh
#   # a variant beside the study in the same OUT (folders <name>-unweighted; only the runs the flag changes)
#   TAG=unweighted SUBSET_FLAGS=--no_score_weighting bash scripts/sweep.sh
#   # the same study as a plan for a cluster (see scripts/slurm_array.sh)
#   PLAN=$PWD/study.plan DATASET=cifar100 bash scripts/sweep.sh
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/sweep.py" "$@"
