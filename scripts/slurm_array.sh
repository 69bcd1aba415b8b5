#!/usr/bin/env bash
# Run one stage of a study plan (written by PLAN=FILE bash scripts/sweep.sh) under SLURM.
#
#   sbatch --array=0-(N-1) scripts/slurm_array.sh PLAN 2     # stage 2: task i runs line i (0-based)
#   sbatch scripts/slurm_array.sh PLAN 1                     # stages 1 and 3: every line, in order
#
# Stage 2's lines are independent subset runs: one array task each. Stages 1 (the dynamics run,
# then the scores) and 3 (summary, report) run their lines one after the other in one job, stopping
# at the first failure. Every line resumes from its own
# checkpoint, so a preempted or failed task is simply requeued (scontrol requeue JOBID_TASK, or
# resubmit the same array). The README shows the three sbatch calls chained with
# --dependency=afterok.
#
# Adapt these to your cluster (they are comments until you remove one '#'):
##SBATCH --job-name=tdds
##SBATCH --gres=gpu:1
##SBATCH --cpus-per-task=8
##SBATCH --mem=32G
##SBATCH --time=24:00:00
##SBATCH --output=slurm-%A_%a.out
##SBATCH --requeue
set -euo pipefail

die() { echo "slurm_array.sh: error: $*" >&2; exit 2; }
(($# == 2)) || die "usage: slurm_array.sh PLAN STAGE (STAGE 1, 2 or 3)"
PLAN=$1 STAGE=$2
[[ -f $PLAN ]] || die "no plan file $PLAN (write one with PLAN=$PLAN bash scripts/sweep.sh)"
[[ $STAGE =~ ^[123]$ ]] || die "STAGE must be 1, 2 or 3, got '$STAGE'"

mapfile -t lines < <(awk -v s="$STAGE" '/^# stage [0-9]+$/ { in_stage = ($3 == s); next } in_stage && NF' "$PLAN")
((${#lines[@]})) || die "$PLAN has no commands in stage $STAGE"

if [[ $STAGE == 2 ]]; then
    i=${SLURM_ARRAY_TASK_ID:-}
    [[ -n $i ]] || die "stage 2 runs one line per array task: sbatch --array=0-$((${#lines[@]} - 1)) $0 $PLAN 2"
    ((i >= 0 && i < ${#lines[@]})) || die "task $i: stage $STAGE of $PLAN has lines 0..$((${#lines[@]} - 1))"
    echo "+ ${lines[$i]}"
    exec bash -c "${lines[$i]}"
fi
for cmd in "${lines[@]}"; do   # stages 1 and 3: in order, stop at the first failure
    echo "+ $cmd"
    bash -c "$cmd"
done
