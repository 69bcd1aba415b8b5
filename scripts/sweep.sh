#!/usr/bin/env bash
# A pruning study as a plan of commands, and the executor that runs it on this machine.
#
# The plan (every line one self-contained, idempotent command: absolute paths, --resume, its own
# save folder; no `cd` needed), in three stages that must run in order:
#   stage 1  the full-data run with --dynamics into $OUT/full (recording only the epochs the
#            largest T needs, via --stop_epoch, unless FULL_ACC=1 or moderate is scored), then one
#            importance_evaluation.py call per method into $OUT/masks (every (T, K) of the study in
#            one pass over the files)
#   stage 2  one subset run per (method, selection, pruning rate, architecture, seed), into
#            $OUT/<name>[/<arch>]/r<rate>/s<seed>; <name> is the method, "random" for random
#            selection, with -<selection> for ccs and beta, -iters for BUDGET=iterations and -kd
#            for KD=1; /<arch> only when SUBSET_ARCHS is not just ARCH
#   stage 3  scripts/summarize.py $OUT (tables, plots, cost ledger), scripts/report.py $OUT/masks
# Lines of stages 1 and 3 run one after the other; the lines of stage 2 are independent.
# Everything in the plan follows from the variables below (T per rate from the reported table or
# TRAJ), never from files already on disk, so the same plan comes out before and after a run.
#
# PLAN=FILE writes the plan to FILE (sections "# stage 1", "# stage 2", "# stage 3"; other lines
# starting with '#' are comments) and exits: run it with any executor, e.g.
# scripts/slurm_array.sh FILE STAGE (a SLURM job array: stage-2 task i runs line i, 0-based).
# Without PLAN the same plan is written to $OUT/plan.txt and run here by the local executor:
# stages 1 and 3 in order (stage 1 stops the sweep at its first failure); stage 2 with up to JOBS
# commands at once, each job's output appended to <save folder>.log. With JOBS > 1 each job gets
# cores/JOBS threads (OMP_NUM_THREADS, MKL_NUM_THREADS) and, on GPUs, one device
# (CUDA_VISIBLE_DEVICES, round-robin over GPUS).
# The sweep has no skip logic of its own: it runs every command, and each script decides from what
# its folder holds (docs/RUNS.md): work done with the same settings and inputs is reported
# ("already finished", "already scored") and nothing is rewritten; an interrupted run resumes; work
# of OTHER settings in a folder is refused (exit status 2) unless OVERWRITE=1. A failed or refused
# subset run does not stop the others; the summary still runs (naming the missing runs), and the
# sweep ends with status 1, listing each failed or refused command and how to go on.
#
# (T, K) per pruning rate for TDDS, as reported for CIFAR-100 / ResNet-18 (docs/METHODS.md):
#   0.3 -> (90, 10)   0.5 -> (70, 10)   0.7 -> (60, 20)   0.8 -> (20, 10)   0.9 -> (10, 5)
# with beta = 0.9; the dynamics baselines use the same T. Other rates need TRAJ and WIN.
#
# Environment variables [default]:
#   DATASET DATA_PATH ARCH EPOCHS   as for the scripts [cifar100 ./data resnet18 200]
#   FULL_BATCH   batch size of the full-data run (the published train.py's)              [100]
#   BATCH        batch size of the subset runs (the published train_subset.py's)          [128]
#   RATE_FLAGS   extra train_subset.py flags of one pruning rate, "RATE:FLAGS RATE:FLAGS ..."; the
#                default applies the authors' advice (a smaller batch at high rates) with DUAL's
#                numbers; RATE_FLAGS= (empty) trains every rate at BATCH
#                                             [0.8:--batch-size 64 0.9:--batch-size 32]
#   RATES        pruning rates (fraction removed)                                         [0.3 0.5 0.7 0.8 0.9]
#   METHODS      tdds el2n forgetting aum entropy dyn_unc dual moderate random    [all but dual, moderate]
#                (moderate scores the full-data model, so the full-data run then trains to the end)
#   SELECTIONS   top ccs beta random (ccs takes --mis_ratio/--strata from SUBSET_FLAGS;   [top]
#                beta is DUAL's Beta sampling: dual is then scored too, for its mean p_y)
#   KD           1: distillation: the full-data run trains to the end and its model_best.pth.tar
#                is the --teacher of every subset run (folders <name>-kd)                 [0]
#   KD_ALPHA     --kd_alpha with KD=1: one value, or one per rate "0.5:0.5 0.9:1.0"        []
#   SEEDS        subset-run seeds; the first also seeds the full-data run                 [42]
#   SUBSET_ARCHS architectures trained on the subsets (scores come from ARCH's dynamics)  [ARCH]
#   BUDGET       epochs (published) or iterations (as many steps as the full data)         [epochs]
#   FULL_ACC     1: train the full-data run to the end (its accuracy row), not only to T  [0]
#   DYNAMICS     an existing dynamics folder (npy/) to score instead of training one       []
#   TRAJ, WIN    override T and K for every rate                                           []
#   NGPU         --ngpu of every run (1: CUDA when present)   [with PLAN 1, else 1 if nvidia-smi works, else 0]
#   JOBS         stage-2 commands at once on this machine                                   [1]
#   GPUS         devices the jobs are pinned to, round-robin   [CUDA_VISIBLE_DEVICES, else every GPU]
#   TRAIN_FLAGS  extra flags for both training scripts (e.g. "--label_noise 0.3")           []
#   SUBSET_FLAGS extra flags for train_subset.py (e.g. "--no_score_weighting")              []
#   EVAL_FLAGS   extra flags for importance_evaluation.py (e.g. "--chunk_size 4096")        []
#   OUT          the study's folder                                          [./checkpoint/sweep]
#   OVERWRITE    1: --overwrite on every command: work of other settings in OUT is replaced (work of
#                the same settings is still never redone)                                  [0]
#   PYTHON       interpreter running the scripts                                             [python]
#   PLAN         write the plan to this file instead of running it                           []
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
#   # the same study as a plan for a cluster (see scripts/slurm_array.sh)
#   PLAN=$PWD/study.plan DATASET=cifar100 bash scripts/sweep.sh
set -euo pipefail

die() { echo "sweep.sh: error: $*" >&2; exit 2; }
words() { tr -s ' \t\n' '\n' <<< "$*" | awk 'NF && !seen[$0]++' | tr '\n' ' ' | sed 's/ $//'; }  # deduplicated

DATASET=${DATASET:-cifar100}
DATA_PATH=${DATA_PATH:-./data}
ARCH=${ARCH:-resnet18}
EPOCHS=${EPOCHS:-200}
FULL_BATCH=${FULL_BATCH:-100}
BATCH=${BATCH:-128}
RATES=${RATES:-"0.3 0.5 0.7 0.8 0.9"}
METHODS=$(words "${METHODS:-tdds el2n forgetting aum entropy dyn_unc random}")
SELECTIONS=$(words "${SELECTIONS:-top}")
SEEDS=$(words "${SEEDS:-42}")
SUBSET_ARCHS=$(words "${SUBSET_ARCHS:-$ARCH}")
BUDGET=${BUDGET:-epochs}
FULL_ACC=${FULL_ACC:-0}
OVERWRITE=${OVERWRITE:-0}
KD=${KD:-0}
KD_ALPHA=${KD_ALPHA:-}
RATE_FLAGS=${RATE_FLAGS-"0.8:--batch-size 64 0.9:--batch-size 32"}   # set but empty: none
DYNAMICS=${DYNAMICS:-}
OUT=${OUT:-./checkpoint/sweep}
if [[ -z ${NGPU:-} ]]; then   # a plan runs elsewhere: --ngpu 1 uses CUDA where it runs, if any, else the CPU
    if [[ -n ${PLAN:-} ]] || nvidia-smi >/dev/null 2>&1; then NGPU=1; else NGPU=0; fi
fi
TRAJ=${TRAJ:-}
WIN=${WIN:-}
JOBS=${JOBS:-1}
PYTHON=${PYTHON:-python}
PLAN=${PLAN:-}
read -r -a train_flags <<< "${TRAIN_FLAGS:-}"
read -r -a subset_flags <<< "${SUBSET_FLAGS:-}"
read -r -a eval_flags <<< "${EVAL_FLAGS:-}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "$OUT")                       # plan lines hold absolute paths
DATA_PATH=$(realpath -m "$DATA_PATH")
[[ -z $DYNAMICS ]] || DYNAMICS=$(realpath -m "$DYNAMICS")
MASKS=$OUT/masks

# ------------------------------------------------------------------------------ check the variables
# (all of them, before anything is written or trained)
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
for m in $METHODS; do
    [[ $m =~ ^(tdds|el2n|forgetting|aum|entropy|dyn_unc|dual|moderate|random)$ ]] || die "METHODS: unknown method '$m'"
done
[[ -n $METHODS ]] || die "METHODS is empty"
for s in $SELECTIONS; do
    [[ $s =~ ^(top|ccs|beta|random)$ ]] || die "SELECTIONS: unknown selection '$s' (top, ccs, beta, random)"
done
[[ -n $SELECTIONS ]] || die "SELECTIONS is empty"
for s in $SEEDS; do [[ $s =~ ^[0-9]+$ ]] || die "SEEDS: '$s' is not a non-negative integer"; done
[[ -n $SEEDS ]] || die "SEEDS is empty"
[[ -n $SUBSET_ARCHS ]] || die "SUBSET_ARCHS is empty"
[[ $BUDGET =~ ^(epochs|iterations)$ ]] || die "BUDGET: '$BUDGET' is not epochs or iterations"
[[ $FULL_ACC =~ ^[01]$ ]] || die "FULL_ACC: '$FULL_ACC' is not 0 or 1"
[[ $OVERWRITE =~ ^[01]$ ]] || die "OVERWRITE: '$OVERWRITE' is not 0 or 1"
[[ $KD =~ ^[01]$ ]] || die "KD: '$KD' is not 0 or 1"
[[ -z $KD_ALPHA || $KD == 1 ]] || die "KD_ALPHA is set but KD=0: set KD=1 to distil from the full-data model"
[[ -n $KD_ALPHA || $KD == 0 ]] || die "KD=1 needs KD_ALPHA (e.g. 1.0, or per rate \"0.5:0.5 0.9:1.0\"; untuned here)"
for v in EPOCHS FULL_BATCH BATCH JOBS; do is_count "${!v}" || die "$v: '${!v}' is not a positive integer"; done
[[ $NGPU =~ ^[0-9]+$ ]] || die "NGPU: '$NGPU' is not a non-negative integer"
[[ -z ${GPUS:-} ]] || ((NGPU > 0)) || die "GPUS is set but NGPU=0 (no nvidia-smi here): set NGPU=1 to train on GPUs"
for v in TRAJ WIN; do [[ -z ${!v} ]] || is_count "${!v}" || die "$v: '${!v}' is not a positive integer"; done
if [[ -n $PLAN ]]; then
    PLAN=$(realpath -m "$PLAN")
    [[ -d $(dirname "$PLAN") ]] || die "PLAN: no folder $(dirname "$PLAN") to write $PLAN into"
fi
first_seed=${SEEDS%% *}

# the methods scored in stage 1: METHODS, and dual when beta sampling needs its mean p_y for another score
SCORED=$METHODS
if [[ " $SELECTIONS " == *" beta "* ]] && [[ -n $(tr ' ' '\n' <<< "$METHODS" | grep -vxE 'random|dual') ]]; then
    SCORED=$(words "$METHODS dual")
fi
# does the study score anything from the dynamics / need the trained full-data model?
needs_dynamics=0 needs_model=$KD scores=0
for m in $SCORED; do
    case $m in random) ;; moderate) needs_model=1 scores=1 ;; *) needs_dynamics=1 scores=1 ;; esac
done

if [[ -n $DYNAMICS ]]; then   # an existing recording: epochs 0 .. recorded-1 are all there
    recorded=0
    while [[ -f $DYNAMICS/${recorded}_Output.npy || -f $DYNAMICS/${recorded}_Index.npy ]]; do recorded=$((recorded + 1)); done
    ((recorded > 0)) || die "DYNAMICS: no dynamics in $DYNAMICS: expected 0_Output.npy, 1_Output.npy, ..."
    limit=$recorded what="recorded epochs"
    moderate_checkpoint=$(dirname "$DYNAMICS")/checkpoint.pth.tar   # the run that recorded them
    teacher=$(dirname "$DYNAMICS")/model_best.pth.tar
    [[ " $METHODS " != *" moderate "* ]] || [[ -f $moderate_checkpoint ]] || \
        die "METHODS: moderate needs the model of the run that recorded DYNAMICS: no $moderate_checkpoint"
    ((KD == 0)) || [[ -f $teacher ]] || die "KD=1 needs the model of the run that recorded DYNAMICS: no $teacher"
else
    limit=$EPOCHS what="epochs of the full-data run"
    moderate_checkpoint=$OUT/full/checkpoint.pth.tar
    teacher=$OUT/full/model_best.pth.tar
fi

# RATE_FLAGS "0.8:--batch-size 64 0.9:--batch-size 32" -> rate_flags[0.8]="--batch-size 64", ...
declare -A rate_flags=()
key=""
for w in $RATE_FLAGS; do
    if [[ $w =~ ^([0-9.]+):(.*)$ ]]; then
        key=$(LC_ALL=C printf '%g' "${BASH_REMATCH[1]}" 2>/dev/null) || die "RATE_FLAGS: '${BASH_REMATCH[1]}' is not a rate"
        [[ -z ${rate_flags[$key]+x} ]] || die "RATE_FLAGS: rate $key is given twice"
        rate_flags[$key]=${BASH_REMATCH[2]:+ ${BASH_REMATCH[2]}}
    else
        [[ -n $key ]] || die "RATE_FLAGS: '$w' does not follow a RATE: (e.g. \"0.9:--batch-size 32\")"
        rate_flags[$key]+=" $w"
    fi
done
# KD_ALPHA "1.0" (every rate) or "0.5:0.5 0.9:1.0" (per rate)
declare -A kd_alpha=()
for w in $KD_ALPHA; do
    if [[ $w =~ ^([0-9.]+):([0-9.]+)$ ]]; then
        kd_alpha[$(LC_ALL=C printf '%g' "${BASH_REMATCH[1]}")]=${BASH_REMATCH[2]}
    elif [[ $w =~ ^[0-9.]+$ && $(wc -w <<< "$KD_ALPHA") == 1 ]]; then
        kd_alpha[all]=$w
    else
        die "KD_ALPHA: '$w' is neither one value nor RATE:ALPHA (e.g. \"0.5:0.5 0.9:1.0\")"
    fi
done

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
}
rates=() Ts=() Ks=()   # per rate, normalised (0.50 -> 0.5), T and K clamped to what can be recorded
for r in $(words "$RATES"); do
    r=$(LC_ALL=C printf '%g' "$r" 2>/dev/null) || die "RATES: '$r' is not a number"
    awk -v r="$r" 'BEGIN { exit !(r > 0 && r < 1) }' || die "RATES: pruning rate $r is not in (0, 1)"
    [[ " ${rates[*]} " == *" $r "* ]] && continue   # 0.5 and 0.50
    tk_for_rate "$r"
    if ((needs_dynamics)); then
        [[ -n $T && -n $K ]] || die "RATES: no reported (T, K) for pruning rate $r: set TRAJ and WIN"
        if ((T > limit)); then echo "note: rate $r: T=$T exceeds the $limit $what; using T=$limit"; T=$limit; fi
        if ((K > T)); then echo "note: rate $r: K=$K exceeds T=$T; using K=$T"; K=$T; fi
        if [[ " $METHODS " == *" tdds "* ]] && ((K < 3)); then
            die "WIN: rate $r: K=$K leaves at most one contribution per window (TDDS needs K >= 3)"
        fi
        if [[ " $SCORED " == *" dual "* ]] && ((K < 2)); then
            die "WIN: rate $r: K=$K: DUAL's windows need K >= 2 (a sample standard deviation)"
        fi
    fi
    if ((KD)) && [[ -z ${kd_alpha[all]:-} && -z ${kd_alpha[$r]:-} ]]; then
        die "KD_ALPHA: no distillation weight for pruning rate $r (KD_ALPHA='$KD_ALPHA')"
    fi
    rates+=("$r") Ts+=("${T:-0}") Ks+=("${K:-0}")
done
for r in "${rates[@]}"; do   # what each rate's subset runs add, said once
    [[ -z ${rate_flags[$r]+x} ]] || echo "rate $r: subset runs add${rate_flags[$r]} (RATE_FLAGS; BATCH=$BATCH elsewhere)"
done
((${#rates[@]})) || die "RATES is empty"
all_T=$(words "${Ts[*]}")
all_K=$(words "${Ks[*]}")
T_max=$(tr ' ' '\n' <<< "$all_T" | sort -n | tail -1)
n_K=$(wc -w <<< "$all_K")

# ------------------------------------------------------------------------------ the plan
# stage1/2/3: the plan's lines. save2[i]: the save folder of stage2[i] (for the local executor).
stage1=() stage2=() stage3=() save2=()
line() { printf '%q ' "$@" | sed 's/ $//'; }   # one shell-quoted command line
common=(--data_path "$DATA_PATH" --dataset "$DATASET" --epochs "$EPOCHS" --learning_rate 0.1 --ngpu "$NGPU")
overwrite=()
((OVERWRITE)) && overwrite=(--overwrite)

# the full-data run: recorded up to the largest T, or to the end when its accuracy or model is wanted
if [[ -z $DYNAMICS ]] && ((needs_dynamics || needs_model || FULL_ACC)); then
    stop=()
    if ((FULL_ACC)); then
        echo "dynamics: all $EPOCHS epochs (FULL_ACC=1: the full-data run trains to the end)"
    elif ((KD)); then
        echo "dynamics: all $EPOCHS epochs (KD=1: the trained full-data model is the teacher)"
    elif ((needs_model)); then
        echo "dynamics: all $EPOCHS epochs (moderate scores the trained full-data model)"
    elif ((T_max >= EPOCHS)); then
        echo "dynamics: all $EPOCHS epochs (the largest T is $T_max)"
    else
        stop=(--stop_epoch "$T_max")
        echo "dynamics: $T_max of $EPOCHS epochs ($(awk -v t="$T_max" -v e="$EPOCHS" 'BEGIN { printf "%.0f", 100 * (1 - t / e) }')%" \
             "of the full-data training saved; FULL_ACC=1 trains to the end)"
    fi
    stage1+=("$(line "$PYTHON" "$ROOT/train.py" "${common[@]}" --arch "$ARCH" --batch-size "$FULL_BATCH" --dynamics \
                 --save_path "$OUT/full" --resume --manualSeed "$first_seed" "${stop[@]}" "${overwrite[@]}" "${train_flags[@]}")")
    DYNAMICS=$OUT/full/npy
fi

# the <tag> of the files importance_evaluation.py writes for METHOD T K, from its own code (one call
# per method scores every (T, K); with several K, dyn_unc and dual add _win<K> to their names)
declare -A tags=()
tag_of() {
    local key="$1 $2 $3"
    if [[ -z ${tags[$key]:-} ]]; then
        tags[$key]=$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); from utils.scoring import output_tag
print(output_tag(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), name_window=sys.argv[5] == "1"))' \
                     "$ROOT" "$1" "$2" "$3" "$((n_K > 1))") || die "cannot name the score files with $PYTHON"
    fi
    tag=${tags[$key]}
}
read -r -a ts <<< "$all_T"
read -r -a ks <<< "$all_K"
for m in $SCORED; do
    [[ $m == random ]] && continue
    if [[ $m == moderate ]]; then
        cmd=$(line "$PYTHON" "$ROOT/importance_evaluation.py" --method moderate --checkpoint "$moderate_checkpoint" \
                   --data_path "$DATA_PATH" --dataset "$DATASET" --mask_path "$MASKS" "${overwrite[@]}" "${eval_flags[@]}")
    else
        shape=(--trajectory_len "${ts[@]}")                          # the methods with windows take K,
        [[ $m =~ ^(tdds|dyn_unc|dual)$ ]] && shape+=(--window_size "${ks[@]}")   # TDDS also beta
        [[ $m == tdds ]] && shape+=(--decay 0.9)
        cmd=$(line "$PYTHON" "$ROOT/importance_evaluation.py" --dynamics_path "$DYNAMICS" --mask_path "$MASKS" \
                   --method "$m" "${shape[@]}" "${overwrite[@]}" "${eval_flags[@]}")
    fi
    stage1+=("$cmd")
done

budget=()
[[ $BUDGET == iterations ]] && budget=(--budget iterations)
for i in "${!rates[@]}"; do
    rate=${rates[$i]} T=${Ts[$i]} K=${Ks[$i]}
    # this rate's RATE_FLAGS; a --batch-size among them replaces BATCH (one --batch-size per line)
    read -r -a words_r <<< "${rate_flags[$rate]:-}"
    bs=$BATCH extra=()
    for ((j = 0; j < ${#words_r[@]}; j++)); do
        if [[ ${words_r[$j]} == --batch-size ]]; then
            bs=${words_r[$((j + 1))]:-}; j=$((j + 1))
            is_count "$bs" || die "RATE_FLAGS: rate $rate: --batch-size '$bs' is not a positive integer"
        else extra+=("${words_r[$j]}"); fi
    done
    seen=""  # run names done at this rate
    for method in $METHODS; do
        for sel in $SELECTIONS; do
            if [[ $method == random || $sel == random ]]; then name=random
            elif [[ $sel == top ]]; then name=$method
            else name=$method-$sel; fi
            [[ $BUDGET == iterations ]] && name+=-iters
            ((KD)) && name+=-kd
            [[ " $seen " == *" $name "* ]] && continue  # e.g. "random" reached from several methods
            seen+=" $name"
            for arch in $SUBSET_ARCHS; do
                folder=$OUT/$name
                [[ $SUBSET_ARCHS != "$ARCH" ]] && folder+=/$arch   # keep architectures apart
                for seed in $SEEDS; do
                    save=$folder/r$rate/s$seed
                    run=("$PYTHON" "$ROOT/train_subset.py" "${common[@]}" --arch "$arch" --batch-size "$bs"
                         --save_path "$save" --resume --subset_rate "$rate" --manualSeed "$seed" "${budget[@]}")
                    if [[ $name == random* ]]; then
                        run+=(--selection random)
                    else
                        tag_of "$method" "$T" "$K"
                        run+=(--mask_path "$MASKS/data_mask_$tag.npy" --score_path "$MASKS/score_$tag.npy" --selection "$sel")
                        # beta reads mean_p_<tag>.npy beside a dual mask; another score takes dual's
                        if [[ $sel == beta && $method != dual ]]; then
                            tag_of dual "$T" "$K"
                            run+=(--mean_p_path "$MASKS/mean_p_$tag.npy")
                        fi
                    fi
                    ((KD)) && run+=(--teacher "$teacher" --kd_alpha "${kd_alpha[$rate]:-${kd_alpha[all]:-}}")
                    run+=("${overwrite[@]}")
                    stage2+=("$(line "${run[@]}" "${train_flags[@]}" "${subset_flags[@]}" "${extra[@]}")")
                    save2+=("$save")
                done
            done
        done
    done
done
stage3+=("$(line "$PYTHON" "$ROOT/scripts/summarize.py" "$OUT")")
if [[ -f $ROOT/scripts/report.py ]] && ((scores)); then
    stage3+=("$(line "$PYTHON" "$ROOT/scripts/report.py" "$MASKS")")
fi

write_plan() {
    { echo "# TDDS pruning study, written by scripts/sweep.sh: run the stages in order; the lines of"
      echo "# stage 2 are independent (scripts/slurm_array.sh PLAN 2: array task i runs line i, 0-based)."
      echo "# DATASET=$DATASET ARCH=$ARCH EPOCHS=$EPOCHS RATES='${rates[*]}' METHODS='$METHODS'" \
           "SELECTIONS='$SELECTIONS' SEEDS='$SEEDS' SUBSET_ARCHS='$SUBSET_ARCHS' BUDGET=$BUDGET" \
           "KD=$KD KD_ALPHA='$KD_ALPHA' RATE_FLAGS='$RATE_FLAGS' OVERWRITE=$OVERWRITE"
      echo "# OUT=$(printf '%q' "$OUT")"   # summarize.py finds the planned runs even if the folder moved
      echo "# stage 1"; ((${#stage1[@]} == 0)) || printf '%s\n' "${stage1[@]}"
      echo "# stage 2"; printf '%s\n' "${stage2[@]}"
      echo "# stage 3"; printf '%s\n' "${stage3[@]}"; } > "$1.tmp"
    mv "$1.tmp" "$1"
}
if [[ -n $PLAN ]]; then
    write_plan "$PLAN"
    echo "plan: $PLAN: stage 1 ${#stage1[@]} commands (in order), stage 2 ${#stage2[@]} (independent)," \
         "stage 3 ${#stage3[@]} (in order)"
    exit 0
fi
mkdir -p "$OUT"
write_plan "$OUT/plan.txt"

# ------------------------------------------------------------------------------ the local executor
# Every command runs; the scripts decide what is left to do (nothing, for work already done with the
# same settings). Exit status 2 is a refusal (e.g. a folder holding work of other settings, or
# another process writing it): the command's "error:" line says why.
# devices for the jobs: GPUS, else CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists
gpus=()
if ((NGPU > 0)); then
    if [[ -n ${GPUS:-} ]]; then read -r -a gpus <<< "$GPUS"
    elif [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
    else mapfile -t gpus < <(nvidia-smi -L 2>/dev/null | awk '/^GPU /{ print n++ }'); fi
    ((${#gpus[@]})) || gpus=(0)
fi
# cores this process may use (nproc alone would answer OMP_NUM_THREADS)
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)
threads=$((cores / JOBS)); ((threads > 0)) || threads=1

refused=() failed=()   # "command<TAB>why" of each refused or failed command
# why FILE OFFSET: the command's error line in what FILE received after OFFSET bytes
why() { tail -c +$(($2 + 1)) "$1" | grep -E '^(error|sweep.sh): ' | tail -1; }
# was_done FILE OFFSET: the command found its work already done
was_done() { tail -c +$(($2 + 1)) "$1" | grep -qE '^already (finished|stopped|scored)'; }
# settle CMD STATUS LOG OFFSET [SAVE]: record how the command ended
settle() {
    local where=${5:+, log: $5.log}
    if (($2 == 0)); then return 0; fi
    if (($2 == 2)); then refused+=("$1"$'\t'"$(why "$3" "$4")"); echo "REFUSED $1${5:+ (log: $5.log)}"
    else failed+=("$1"$'\t'"status $2$where"); echo "FAILED (status $2) $1${5:+ (log: $5.log)}"; fi
}
finish() {   # the end of every executor run: what did not go through, and how to go on
    local entry
    ((${#refused[@]} + ${#failed[@]})) || exit 0
    if ((${#refused[@]})); then
        echo "sweep.sh: ${#refused[@]} command(s) refused:" >&2
        for entry in "${refused[@]}"; do echo "  ${entry%%$'\t'*}"$'\n'"      ${entry#*$'\t'}" >&2; done
        echo "Folders holding work of other settings: OVERWRITE=1 replaces that work, another OUT keeps it." \
             "A folder another process writes: wait for it. Then run the same sweep again." >&2
    fi
    if ((${#failed[@]})); then
        echo "sweep.sh: ${#failed[@]} command(s) failed:" >&2
        for entry in "${failed[@]}"; do echo "  ${entry%%$'\t'*}   (${entry#*$'\t'})" >&2; done
        echo "Run the same sweep again to retry them: finished work is not redone, the rest resumes." >&2
    fi
    exit 1
}

# stages 1 and 3 run in the foreground, one command after the other
pinned=()
((${#gpus[@]} == 0)) || pinned=(CUDA_VISIBLE_DEVICES="${gpus[0]}")
tmp_out=$(mktemp)
trap 'rm -f "$tmp_out"' EXIT
run_line() {   # run_line CMD: in the foreground, its output also in $tmp_out; its status
    echo "+ $1"
    : > "$tmp_out"
    env "${pinned[@]}" bash -c "$1" 2>&1 | tee "$tmp_out"
    return "${PIPESTATUS[0]}"
}
for cmd in "${stage1[@]}"; do
    status=0; run_line "$cmd" || status=$?
    settle "$cmd" "$status" "$tmp_out" 0
    ((status == 0)) || { echo "sweep.sh: stage 1 did not go through: stage 2 needs it" >&2; finish; }
done

# stage 2: up to JOBS subset runs at once, each appending to <save folder>.log
declare -A running=() offset=()   # pid -> index into stage2; index -> size of its log before the run
launched=0 done_before=0
job_env() {   # the environment of job number $1
    local env=()
    ((${#gpus[@]} == 0)) || env+=(CUDA_VISIBLE_DEVICES="${gpus[$(($1 % ${#gpus[@]}))]}")
    ((JOBS == 1)) || env+=(OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads")
    echo "${env[@]}"
}
ended() {   # ended INDEX STATUS: a stage-2 command ended
    local i=$1 save=${save2[$1]}
    if (($2 == 0)); then
        if was_done "$save.log" "${offset[$i]}"; then done_before=$((done_before + 1)); echo "already done $save"
        else echo "done $save"; fi
    fi
    settle "${stage2[$i]}" "$2" "$save.log" "${offset[$i]}" "$save"
}
reap() {   # collect every job that has ended
    local pid status
    for pid in "${!running[@]}"; do
        kill -0 "$pid" 2>/dev/null && continue
        status=0; wait "$pid" || status=$?
        ended "${running[$pid]}" "$status"
        unset "running[$pid]"
    done
}
stop_jobs() {   # Ctrl-C / TERM: end the jobs this sweep started, then stop
    trap - INT TERM
    local pids=("${!running[@]}")
    if ((${#pids[@]})); then
        echo "sweep.sh: interrupted: stopping ${#pids[@]} running job(s) (each resumes with --resume)" >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    exit 130
}
trap stop_jobs INT TERM

for i in "${!stage2[@]}"; do
    cmd=${stage2[$i]} save=${save2[$i]}
    mkdir -p "$(dirname "$save")"
    offset[$i]=$(stat -c %s "$save.log" 2>/dev/null || echo 0)   # the log keeps every earlier attempt
    read -r -a env_job <<< "$(job_env "$launched")"
    launched=$((launched + 1))
    if ((JOBS == 1)); then   # in the foreground: the output on the terminal and in the log
        echo "+ $cmd"
        status=0; env "${env_job[@]}" bash -c "$cmd" 2>&1 | tee -a "$save.log" || status=${PIPESTATUS[0]}
        ended "$i" "$status"
        continue
    fi
    while ((${#running[@]} >= JOBS)); do sleep 0.5; reap; done
    echo "+ ${env_job[*]} $cmd >> $save.log 2>&1"
    env "${env_job[@]}" bash -c "exec $cmd" >> "$save.log" 2>&1 &
    running[$!]=$i
done
while ((${#running[@]})); do sleep 0.5; reap; done
trap - INT TERM
n_bad=$((${#refused[@]} + ${#failed[@]}))
echo "stage 2: ${#stage2[@]} subset runs: $((launched - n_bad - done_before)) trained, $done_before already done" \
     "(nothing rewritten), ${#refused[@]} refused, ${#failed[@]} failed"

# stage 3 runs whatever happened in stage 2: the summary names the runs that are missing
for cmd in "${stage3[@]}"; do
    status=0; run_line "$cmd" || status=$?
    settle "$cmd" "$status" "$tmp_out" 0
done
finish
