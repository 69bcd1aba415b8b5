#!/usr/bin/env bash
# A pruning study as a plan of commands, and the executor that runs it on this machine.
#
# The plan (every line one self-contained, idempotent command: absolute paths, --resume, its own
# save folder), in three stages that must run in order:
#   stage 1  the full-data run with --dynamics into $OUT/full (recording only the epochs the
#            largest T needs, via --stop_epoch, unless FULL_ACC=1), then one importance_evaluation.py
#            call per method into $OUT/masks (every (T, K) of the study in one pass over the files)
#   stage 2  one subset run per (method, selection, pruning rate, seed, architecture), into
#            $OUT/<name>[/<arch>]/r<rate>/s<seed>; <name> is the method, "random" for random
#            selection, with -<selection> for ccs and -iters for BUDGET=iterations
#   stage 3  scripts/summarize.py $OUT (tables, plots, cost ledger), scripts/report.py $OUT/masks
# Lines of stage 1 and 3 run one after the other; the lines of stage 2 are independent.
#
# PLAN=FILE writes the plan to FILE (sections "# stage 1", "# stage 2", "# stage 3") and exits:
# run it with any executor, e.g. scripts/slurm_array.sh FILE STAGE (a SLURM job array, see README).
# Without PLAN the plan is written to $OUT/plan.txt and run here: stage 2 with up to JOBS commands
# at once (GPUs round-robin over GPUS; on CPU each job gets cores/JOBS threads), skipping finished
# runs. A failed subset run does not stop the others: the sweep ends non-zero and lists them.
#
# (T, K) per pruning rate for TDDS, as reported for CIFAR-100 / ResNet-18 (docs/METHODS.md):
#   0.3 -> (90, 10)   0.5 -> (70, 10)   0.7 -> (60, 20)   0.8 -> (20, 10)   0.9 -> (10, 5)
# with beta = 0.9; baselines use the same T. Other rates need TRAJ and WIN.
#
# Environment variables [default]:
#   DATASET DATA_PATH ARCH EPOCHS   as for the scripts [cifar100 ./data resnet18 200]
#   FULL_BATCH   batch size of the full-data run (the published train.py's)              [100]
#   BATCH        batch size of the subset runs (the published train_subset.py's)          [128]
#   RATES        pruning rates (fraction removed)                                         [0.3 0.5 0.7 0.8 0.9]
#   METHODS      tdds el2n forgetting aum entropy dyn_unc moderate random                 [all but moderate]
#   SELECTIONS   top ccs random (ccs takes --mis_ratio/--strata from SUBSET_FLAGS)        [top]
#   SEEDS        subset-run seeds; the first also seeds the full-data run                 [42]
#   SUBSET_ARCHS architectures trained on the subsets (scores come from ARCH's dynamics)  [ARCH]
#   BUDGET       epochs (published) or iterations (as many steps as the full data)         [epochs]
#   FULL_ACC     1: train the full-data run to the end (its accuracy row), not only to T  []
#   DYNAMICS     an existing dynamics folder (npy/) to score instead of training one       []
#   TRAJ, WIN    override T and K for every rate                                           []
#   NGPU         --ngpu of every run                                        [1 if nvidia-smi works, else 0]
#   JOBS         stage-2 commands at once on this machine                                   [1]
#   GPUS         devices the jobs are pinned to, round-robin                                [0 .. NGPU-1]
#   TRAIN_FLAGS  extra flags for both training scripts (e.g. "--label_noise 0.3")           []
#   SUBSET_FLAGS extra flags for train_subset.py (e.g. "--no_score_weighting")              []
#   EVAL_FLAGS   extra flags for importance_evaluation.py (e.g. "--decay 0.8")              []
#   OUT          the study's folder                                          [./checkpoint/sweep]
#   PYTHON       interpreter running the scripts                                             [python]
#
# Examples (from the repository root):
#   # the paper's CIFAR-100 / ResNet-18 study on one GPU (dynamics: 90 of 200 epochs)
#   DATASET=cifar100 ARCH=resnet18 EPOCHS=200 bash scripts/sweep.sh
#   # a CPU-sized version (minutes), two jobs at once
#   DATASET=digits ARCH=resnet20 EPOCHS=6 TRAJ=6 WIN=3 RATES="0.5 0.8" JOBS=2 \
#       METHODS="tdds el2n random" OUT=./checkpoint/sweep_digits bash scripts/sweep.sh
#   # the same study as a plan for a cluster
#   PLAN=study.plan DATASET=cifar100 bash scripts/sweep.sh
set -euo pipefail

DATASET=${DATASET:-cifar100}
DATA_PATH=${DATA_PATH:-./data}
ARCH=${ARCH:-resnet18}
EPOCHS=${EPOCHS:-200}
FULL_BATCH=${FULL_BATCH:-100}
BATCH=${BATCH:-128}
RATES=${RATES:-"0.3 0.5 0.7 0.8 0.9"}
METHODS=${METHODS:-"tdds el2n forgetting aum entropy dyn_unc random"}
SELECTIONS=${SELECTIONS:-top}
SEEDS=${SEEDS:-42}
SUBSET_ARCHS=${SUBSET_ARCHS:-$ARCH}
BUDGET=${BUDGET:-epochs}
FULL_ACC=${FULL_ACC:-}
DYNAMICS=${DYNAMICS:-}
OUT=${OUT:-./checkpoint/sweep}
if [[ -z ${NGPU:-} ]]; then
    if nvidia-smi >/dev/null 2>&1; then NGPU=1; else NGPU=0; fi
fi
TRAJ=${TRAJ:-}
WIN=${WIN:-}
JOBS=${JOBS:-1}
PYTHON=${PYTHON:-python}
PLAN=${PLAN:-}
read -r -a train_flags <<< "${TRAIN_FLAGS:-}"
read -r -a subset_flags <<< "${SUBSET_FLAGS:-}"
read -r -a eval_flags <<< "${EVAL_FLAGS:-}"

die() { echo "sweep.sh: error: $*" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "$OUT")                       # plan lines hold absolute paths
[[ $DATA_PATH == /* ]] || DATA_PATH=$(realpath -m "$DATA_PATH")
[[ -z $DYNAMICS ]] || DYNAMICS=$(realpath -m "$DYNAMICS")
MASKS=$OUT/masks

# ------------------------------------------------------------------------------ check the variables
# set T, K to the reported (T, K) of pruning rate $1; TRAJ / WIN override
tk_for_rate() {
    case $1 in
        0.3) T=90 K=10 ;;
        0.5) T=70 K=10 ;;
        0.7) T=60 K=20 ;;
        0.8) T=20 K=10 ;;
        0.9) T=10 K=5 ;;
        *) T= K= ;;
    esac
    T=${TRAJ:-$T}
    K=${WIN:-$K}
    [[ -n $T && -n $K ]] || die "no reported (T, K) for pruning rate $1: set TRAJ and WIN"
}
for m in $METHODS; do
    [[ $m =~ ^(tdds|el2n|forgetting|aum|entropy|dyn_unc|moderate|random)$ ]] || die "METHODS: unknown method '$m'"
done
for s in $SELECTIONS; do
    [[ $s =~ ^(top|ccs|random)$ ]] || die "SELECTIONS: unknown selection '$s' (top, ccs, random)"
done
[[ $BUDGET =~ ^(epochs|iterations)$ ]] || die "BUDGET: '$BUDGET' is not epochs or iterations"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "JOBS: '$JOBS' is not a positive integer"
[[ $EPOCHS =~ ^[1-9][0-9]*$ ]] || die "EPOCHS: '$EPOCHS' is not a positive integer"
for s in $SEEDS; do first_seed=$s; break; done
[[ -n ${first_seed:-} ]] || die "SEEDS is empty"
[[ -n $SUBSET_ARCHS ]] || die "SUBSET_ARCHS is empty"
if [[ -n $DYNAMICS ]]; then   # epochs 0 .. recorded-1 are all there
    recorded=0
    while [[ -f $DYNAMICS/${recorded}_Output.npy || -f $DYNAMICS/${recorded}_Index.npy ]]; do recorded=$((recorded + 1)); done
    ((recorded > 0)) || die "no dynamics in $DYNAMICS: expected 0_Output.npy, 1_Output.npy, ..."
    limit=$recorded what="recorded epochs"
else
    limit=$EPOCHS what="epochs of the full-data run"
fi
rates=() Ts=() Ks=()   # per rate, normalised (0.50 -> 0.5), T and K clamped to what can be recorded
for r in $RATES; do
    r=$(LC_ALL=C printf '%g' "$r" 2>/dev/null) || die "RATES: '$r' is not a number"
    awk -v r="$r" 'BEGIN { exit !(r > 0 && r < 1) }' || die "RATES: pruning rate $r is not in (0, 1)"
    tk_for_rate "$r"
    if ((T > limit)); then echo "note: rate $r: T=$T exceeds the $limit $what; using T=$limit"; T=$limit; fi
    if ((K > T)); then echo "note: rate $r: K=$K exceeds T=$T; using K=$T"; K=$T; fi
    if [[ " $METHODS " == *" tdds "* ]] && ((K < 3)); then
        die "rate $r: K=$K leaves at most one contribution per window (TDDS needs K >= 3): set WIN"
    fi
    rates+=("$r") Ts+=("$T") Ks+=("$K")
done
uniq_words() { tr ' ' '\n' <<< "$*" | awk 'NF && !seen[$0]++' | tr '\n' ' '; }
all_T=$(uniq_words "${Ts[@]}")
all_K=$(uniq_words "${Ks[@]}")
T_max=$(tr ' ' '\n' <<< "$all_T" | sort -n | tail -1)
n_K=$(wc -w <<< "$all_K")

# ------------------------------------------------------------------------------ the plan
stage1=() stage2=() stage3=()
line() { printf '%q ' "$@" | sed 's/ $//'; }   # one shell-quoted command line
common=(--data_path "$DATA_PATH" --dataset "$DATASET" --epochs "$EPOCHS" --learning_rate 0.1 --ngpu "$NGPU")

if [[ -z $DYNAMICS ]]; then
    stop=(--stop_epoch "$T_max")
    if [[ -n $FULL_ACC ]] || ((T_max >= EPOCHS)); then stop=(); fi
    stage1+=("$(line "$PYTHON" "$ROOT/train.py" "${common[@]}" --arch "$ARCH" --batch-size "$FULL_BATCH" --dynamics \
                 --save_path "$OUT/full" --resume --manualSeed "$first_seed" "${stop[@]}" "${train_flags[@]}")")
    DYNAMICS=$OUT/full/npy
    if ((${#stop[@]})); then
        echo "dynamics: $T_max of $EPOCHS epochs ($(awk -v t="$T_max" -v e="$EPOCHS" 'BEGIN { printf "%.0f", 100 * (1 - t / e) }')% of the full-data training saved; FULL_ACC=1 trains to the end)"
    fi
fi

# the files importance_evaluation.py writes for METHOD T K (one call per method scores every (T, K))
tag_of() {
    case $1 in
        tdds) echo "win${3}_ep${2}" ;;
        moderate) echo "moderate" ;;
        dyn_unc) if ((n_K > 1)); then echo "dyn_unc_ep${2}_win${3}"; else echo "dyn_unc_ep${2}"; fi ;;
        *) echo "${1}_ep${2}" ;;
    esac
}
for m in $METHODS; do
    [[ $m == random ]] && continue
    needs=()   # every info file this call writes: the line is skipped when they all exist
    for i in "${!rates[@]}"; do needs+=("$MASKS/info_$(tag_of "$m" "${Ts[$i]}" "${Ks[$i]}").json"); done
    guard=$(for f in $(uniq_words "${needs[@]}"); do printf '[ -f %q ] && ' "$f"; done)
    if [[ $m == moderate ]]; then
        cmd=$(line "$PYTHON" "$ROOT/importance_evaluation.py" --method moderate --checkpoint "$OUT/full/checkpoint.pth.tar" \
                   --data_path "$DATA_PATH" --mask_path "$MASKS" "${eval_flags[@]}")
    else
        read -r -a ts <<< "$all_T"
        read -r -a ks <<< "$all_K"
        cmd=$(line "$PYTHON" "$ROOT/importance_evaluation.py" --dynamics_path "$DYNAMICS" --mask_path "$MASKS" \
                   --method "$m" --trajectory_len "${ts[@]}" --window_size "${ks[@]}" --decay 0.9 "${eval_flags[@]}")
    fi
    stage1+=("${guard}true || $cmd")
done

budget=()
[[ $BUDGET == iterations ]] && budget=(--budget iterations)
for i in "${!rates[@]}"; do
    rate=${rates[$i]} T=${Ts[$i]} K=${Ks[$i]}
    seen=""  # run names done at this rate
    for method in $METHODS; do
        for sel in $SELECTIONS; do
            if [[ $method == random || $sel == random ]]; then name=random
            elif [[ $sel == top ]]; then name=$method
            else name=$method-$sel; fi
            [[ $BUDGET == iterations ]] && name+=-iters
            [[ " $seen " == *" $name "* ]] && continue  # e.g. "random" reached from several methods
            seen+=" $name"
            for arch in $SUBSET_ARCHS; do
                folder=$OUT/$name
                [[ $SUBSET_ARCHS != "$ARCH" ]] && folder+=/$arch   # keep architectures apart
                for seed in $SEEDS; do
                    run=("$PYTHON" "$ROOT/train_subset.py" "${common[@]}" --arch "$arch" --batch-size "$BATCH"
                         --save_path "$folder/r$rate/s$seed" --resume --subset_rate "$rate" --manualSeed "$seed"
                         "${budget[@]}")
                    if [[ $name == random* ]]; then
                        run+=(--selection random)
                    else
                        tag=$(tag_of "$method" "$T" "$K")
                        run+=(--mask_path "$MASKS/data_mask_$tag.npy" --score_path "$MASKS/score_$tag.npy" --selection "$sel")
                    fi
                    stage2+=("$(line "${run[@]}" "${train_flags[@]}" "${subset_flags[@]}")")
                done
            done
        done
    done
done
stage3+=("$(line "$PYTHON" "$ROOT/scripts/summarize.py" "$OUT")")
[[ -f $ROOT/scripts/report.py && " $METHODS " != " random " ]] && \
    stage3+=("$(line "$PYTHON" "$ROOT/scripts/report.py" "$MASKS")")

write_plan() {
    { echo "# TDDS study plan: run the stages in order; the lines of stage 2 are independent."
      echo "# stage 1"; printf '%s\n' "${stage1[@]}"
      echo "# stage 2"; printf '%s\n' "${stage2[@]}"
      echo "# stage 3"; printf '%s\n' "${stage3[@]}"; } > "$1"
}
if [[ -n $PLAN ]]; then
    write_plan "$PLAN"
    echo "plan: $PLAN: stage 1 ${#stage1[@]} commands (in order), stage 2 ${#stage2[@]} (independent), stage 3 ${#stage3[@]}"
    exit 0
fi
mkdir -p "$OUT"
write_plan "$OUT/plan.txt"

# ------------------------------------------------------------------------------ the executor
save_of() { sed -nE 's/.*--save_path ([^ ]+).*/\1/p' <<< "$1"; }
stop_of() { sed -nE 's/.*--stop_epoch ([0-9]+).*/\1/p' <<< "$1"; }
is_done() {   # the run of command $1 is finished (or, stopped by --stop_epoch, has its epochs)
    local save stop done_epochs
    save=$(save_of "$1") stop=$(stop_of "$1")
    [[ -n $save && -f $save/metrics.json ]] || return 1
    grep -q '"finished": true' "$save/metrics.json" && return 0
    [[ -n $stop ]] || return 1
    done_epochs=$(sed -nE 's/.*"completed_epochs": ([0-9]+).*/\1/p' "$save/metrics.json")
    ((${done_epochs:-0} >= stop))
}
run_line() { echo "+ $1"; bash -c "$1"; }

for cmd in "${stage1[@]}"; do
    if is_done "$cmd"; then echo "skip $(save_of "$cmd"): done"; continue; fi
    if [[ $cmd == *importance_evaluation.py* && $cmd == "[ -f"* ]] && bash -c "${cmd%% || *}"; then
        echo "skip scoring: $(sed -nE 's/.*--method ([a-z_]+).*/\1/p' <<< "$cmd") files exist"; continue
    fi
    run_line "$cmd" || { echo "sweep.sh: stage 1 failed: $cmd" >&2; exit 1; }
done

cores=$(nproc 2>/dev/null || echo 1)
threads=$((cores / JOBS)); ((threads > 0)) || threads=1
read -r -a gpus <<< "${GPUS:-$(seq -s ' ' 0 $((NGPU > 0 ? NGPU - 1 : 0)))}"
failed=()
declare -A running=()
job=0
finish_one() {   # wait for one job; remember it if it failed
    local pid status=0
    wait -n -p pid "${!running[@]}" || status=$?
    ((status == 0)) || failed+=("${running[$pid]}")
    unset "running[$pid]"
}
for cmd in "${stage2[@]}"; do
    if is_done "$cmd"; then echo "skip $(save_of "$cmd"): metrics.json says finished"; continue; fi
    if ((JOBS == 1)); then
        run_line "$cmd" || failed+=("$cmd")
        continue
    fi
    while ((${#running[@]} >= JOBS)); do finish_one; done
    save=$(save_of "$cmd")
    log=$save.log
    mkdir -p "$(dirname "$log")"
    echo "+ $cmd > $log"
    if ((NGPU > 0)); then env_job=(CUDA_VISIBLE_DEVICES="${gpus[$((job % ${#gpus[@]}))]}")
    else env_job=(OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"); fi
    env "${env_job[@]}" bash -c "$cmd" > "$log" 2>&1 &
    running[$!]="$cmd (log: $log)"
    job=$((job + 1))
done
while ((${#running[@]})); do finish_one; done

for cmd in "${stage3[@]}"; do run_line "$cmd" || failed+=("$cmd"); done
if ((${#failed[@]})); then
    echo "sweep.sh: ${#failed[@]} command(s) failed:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
