#!/usr/bin/env bash
# Run one stage of a study plan (written by PLAN=FILE bash scripts/sweep.sh) under SLURM.
#
#   n=$(scripts/slurm_array.sh PLAN 2 --count)                # the number of stage-2 lines
#   sbatch scripts/slurm_array.sh PLAN 1                      # stage 1: every line, in order
#   sbatch --array=0-$((n - 1)) scripts/slurm_array.sh PLAN 2 # stage 2: array task i runs line i
#   sbatch scripts/slurm_array.sh PLAN 3                      # stage 3: every line, in order
#
# Stage 2's lines are independent subset runs: one array task each, numbered from 0 (task i runs
# the i-th command line of the stage, comments and blank lines not counted), so submit it with
# --array=0-(n-1); `%k` after the range (--array=0-49%8) caps how many run at once. Stages 1 (the
# dynamics run, then the scores) and 3 (summary, report) run their lines one after the other in one
# job, stopping at the first failure. Chain the three with --dependency=afterok (README, "Sweeps at
# cluster scale"). Every line resumes from its own checkpoint, so a preempted or failed task is
# simply run again: #SBATCH --requeue lets SLURM requeue a preempted task by itself,
# `scontrol requeue JOBID_TASK` does it by hand, and resubmitting a whole stage redoes only what is
# unfinished. The script exits with the status of the command it ran.
#
# Adapt these to your cluster (they are comments until you remove one '#'):
##SBATCH --job-name=tdds
##SBATCH --gres=gpu:1
##SBATCH --cpus-per-task=8
##SBATCH --mem=32G
##SBATCH --time=24:00:00
##SBATCH --output=slurm-%A_%a.out
##SBATCH --requeue
##SBATCH --open-mode=append
set -euo pipefail

die() { echo "slurm_array.sh: error: $*" >&2; exit 2; }
(($# == 2 || $# == 3)) || die "usage: slurm_array.sh PLAN STAGE [--count] (STAGE 1, 2 or 3)"
PLAN=$1 STAGE=$2
[[ -f $PLAN ]] || die "no plan file $PLAN (write one with PLAN=$PLAN bash scripts/sweep.sh)"
[[ $STAGE =~ ^[123]$ ]] || die "STAGE must be 1, 2 or 3, got '$STAGE'"

# the command lines of the stage: between "# stage STAGE" and the next "# stage" marker
mapfile -t lines < <(awk -v s="$STAGE" '/^# stage [0-9]+$/ { in_stage = ($3 == s); next }
                                        /^[[:space:]]*(#|$)/ { next }
                                        in_stage' "$PLAN")
if (($# == 3)); then
    [[ $3 == --count ]] || die "the third argument can only be --count, got '$3'"
    echo "${#lines[@]}"
    exit 0
fi
((${#lines[@]})) || die "$PLAN has no commands in stage $STAGE"

if [[ $STAGE == 2 ]]; then
    i=${SLURM_ARRAY_TASK_ID:-}
    [[ -n $i ]] || die "stage 2 runs one line per array task: sbatch --array=0-$((${#lines[@]} - 1)) $0 $PLAN 2"
    [[ $i =~ ^[0-9]+$ ]] || die "SLURM_ARRAY_TASK_ID '$i' is not a task number"
    ((i < ${#lines[@]})) || die "task $i: stage 2 of $PLAN has lines 0..$((${#lines[@]} - 1)) (--array=0-$((${#lines[@]} - 1)))"
    echo "task $i of stage 2 ($(hostname)):"
    echo "+ ${lines[$i]}"
    exec bash -c "${lines[$i]}"
fi
for cmd in "${lines[@]}"; do   # stages 1 and 3: in order, stop at the first failure
    echo "+ $cmd"
    status=0
    bash -c "$cmd" || status=$?
    ((status == 0)) || { echo "slurm_array.sh: stage $STAGE stopped: status $status from: $cmd" >&2; exit "$status"; }
done
