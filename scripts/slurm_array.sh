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
# job, stopping at the first failure. Chain the three with --dependency=afterok (docs/STUDIES.md, "Plans and
# executors"). Every line resumes from its own checkpoint, so a preempted or failed task is
# simply run again, and resubmitting a whole stage redoes only what is unfinished.
#
# Preemption and time limits (docs/PREEMPTION.md): 120 s before the time limit SLURM sends SIGUSR1
# to this script (--signal=B:USR1@120); it forwards the signal to the running command, whose
# training run finishes its optimizer step, writes a checkpoint of that step and exits (138), and
# then requeues its own task (scontrol requeue JOBID_TASK), which resumes at that step (every plan
# line has --resume). SIGTERM (scancel, or a preemption that SLURM requeues by itself thanks to
# --requeue) is forwarded the same way, without a requeue by this script. The script exits with the
# status of the command it ran.
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#
# Adapt these to your cluster (they are comments until you remove one '#'):
##SBATCH --job-name=tdds
##SBATCH --gres=gpu:1
##SBATCH --cpus-per-task=8
##SBATCH --mem=32G
##SBATCH --time=24:00:00
##SBATCH --output=slurm-%A_%a.out
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

# Signals: bash runs a trap only between commands, so each line runs in the background, in its own
# process group (set -m), and the script waits for it. The signal goes to the whole group: python,
# or torchrun and every worker (torchrun relays SIGUSR1 too when it handles it, see below).
signalled="" child=""
forward() {
    signalled=$1
    [[ -z $child ]] || kill -s "$1" -- "-$child" 2>/dev/null || true
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
export TORCHELASTIC_SIGNALS_TO_HANDLE=${TORCHELASTIC_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}

run_line() {   # run_line CMD: sets status; returns when every process of CMD has ended
    set -m
    bash -c "$1" &
    child=$!
    set +m
    status=0
    while :; do   # a trapped signal interrupts wait: wait again until CMD itself has ended
        wait "$child" && status=0 || status=$?
        kill -0 "$child" 2>/dev/null || break
    done
    while kill -0 -- "-$child" 2>/dev/null; do sleep 1; done   # workers still writing their checkpoint
    child=""
}

requeue() {   # after SIGUSR1: put this task back in the queue; it resumes from the checkpoint
    local id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}
    id=${id:-${SLURM_JOB_ID:-}}
    [[ -n $id ]] || { echo "slurm_array.sh: SIGUSR1 outside a SLURM job: not requeued" >&2; return; }
    echo "slurm_array.sh: SIGUSR1: requeueing $id, which resumes from its checkpoint" >&2
    scontrol requeue "$id" || echo "slurm_array.sh: scontrol requeue $id failed: resubmit the task" >&2
}

if [[ $STAGE == 2 ]]; then
    i=${SLURM_ARRAY_TASK_ID:-}
    [[ -n $i ]] || die "stage 2 runs one line per array task: sbatch --array=0-$((${#lines[@]} - 1)) $0 $PLAN 2"
    [[ $i =~ ^[0-9]+$ ]] || die "SLURM_ARRAY_TASK_ID '$i' is not a task number"
    ((i < ${#lines[@]})) || die "task $i: stage 2 of $PLAN has lines 0..$((${#lines[@]} - 1)) (--array=0-$((${#lines[@]} - 1)))"
    echo "task $i of stage 2 ($(hostname)):"
    lines=("${lines[$i]}")
fi
n=0
for cmd in "${lines[@]}"; do   # stages 1 and 3: in order, stop at the first failure or signal
    echo "+ $cmd"
    run_line "$cmd"
    n=$((n + 1))
    if [[ -n $signalled ]]; then
        # requeue unless the stage's work is done (the last line finished before the signal reached it)
        [[ $signalled == USR1 ]] && ((status != 0 || n < ${#lines[@]})) && requeue
        echo "slurm_array.sh: SIG$signalled: stage $STAGE stopped after: $cmd (status $status)" >&2
        exit "$status"
    fi
    ((status == 0)) || { echo "slurm_array.sh: stage $STAGE stopped: status $status from: $cmd" >&2; exit "$status"; }
done
