#!/usr/bin/env bash
# Pruning-rate x method sweep: full-data run with dynamics -> scores -> subset training -> summary.
#
# 1. Unless DYNAMICS names a recorded npy folder, trains on the full data with --dynamics into
#    $OUT/full (skipped when $OUT/full/metrics.json exists) and uses $OUT/full/npy.
# 2. For every rate, method, selection and seed, trains on the kept subset into
#    $OUT/<method>[-<selection>]/r<rate>/s<seed> (no suffix for "top"); a run whose metrics.json
#    exists is skipped and every run gets --resume, so re-running the same command resumes an
#    interrupted sweep (an interrupted run continues from its checkpoint).
#    Scores are computed once per (method, T, K) into $OUT/masks (skipped when the files exist).
#    The "random" method, and any method with selection "random", is one run: $OUT/random/...
# 3. Runs scripts/summarize.py $OUT: results.csv, results.md, accuracy_vs_pruning.png.
#
# (T, K) per pruning rate for TDDS, as reported for CIFAR-100 / ResNet-18 (see TDDS_SPEC.md):
#   0.3: (90, 10)  0.5: (70, 10)  0.7: (60, 20)  0.8: (20, 10)  0.9: (10, 5)
# Baselines use the same T (K matters for dyn_unc only). T larger than the number of recorded
# epochs is clamped to it (and K to T), with a note.
#
# Variables (environment, default in brackets):
#   DATASET     cifar10 | cifar100 | digits | imagefolder                     [cifar100]
#   DATA_PATH   dataset folder                                               [./data]
#   ARCH        architecture name for models.create_model                   [resnet18]
#   EPOCHS      training epochs of every run (full and subset)              [200]
#   BATCH       batch size of every run                                     [128]
#   RATES       pruning rates (fraction removed)                            ["0.3 0.5 0.7 0.8 0.9"]
#   METHODS     scores: tdds el2n forgetting aum entropy dyn_unc random    [all seven]
#   SELECTIONS  top | ccs | random (space separated)                        [top]
#   SEEDS       --manualSeed of the subset runs; the first also seeds the full run  [42]
#   DYNAMICS    recorded npy folder to score; empty = record it in $OUT/full        []
#   OUT         sweep folder                                                [./checkpoint/sweep]
#   NGPU        --ngpu of the training scripts                              [1 if nvidia-smi works, else 0]
#   TRAJ, WIN   override T and K for every rate (needed for short runs, rates outside the table) []
#   TRAIN_FLAGS extra flags for train.py and train_subset.py, e.g. --amp     []
#   SUBSET_FLAGS extra flags for train_subset.py, e.g. "--mis_ratio 0.1 --class_balanced"  []
#               (the save path does not show them: use another OUT when you change them)
#   EVAL_FLAGS  extra flags for importance_evaluation.py, e.g. "--decay 0.8"  []
#   PYTHON      interpreter running the scripts                             [python]
#
# Examples (from the repository root):
#   # the paper's CIFAR-100 / ResNet-18 sweep on one GPU
#   DATASET=cifar100 ARCH=resnet18 EPOCHS=200 TRAIN_FLAGS=--amp bash scripts/sweep.sh
#   # a small CPU version (minutes): 6 epochs of dynamics, so T and K are set by hand
#   DATASET=digits ARCH=resnet20 EPOCHS=6 TRAJ=6 WIN=3 RATES="0.5 0.8" \
#       METHODS="tdds el2n random" OUT=./checkpoint/sweep_digits bash scripts/sweep.sh
set -euo pipefail

DATASET=${DATASET:-cifar100}
DATA_PATH=${DATA_PATH:-./data}
ARCH=${ARCH:-resnet18}
EPOCHS=${EPOCHS:-200}
BATCH=${BATCH:-128}
RATES=${RATES:-"0.3 0.5 0.7 0.8 0.9"}
METHODS=${METHODS:-"tdds el2n forgetting aum entropy dyn_unc random"}
SELECTIONS=${SELECTIONS:-top}
SEEDS=${SEEDS:-42}
DYNAMICS=${DYNAMICS:-}
OUT=${OUT:-./checkpoint/sweep}
if [[ -z ${NGPU:-} ]]; then
    if nvidia-smi >/dev/null 2>&1; then NGPU=1; else NGPU=0; fi
fi
TRAJ=${TRAJ:-}
WIN=${WIN:-}
PYTHON=${PYTHON:-python}
read -r -a train_flags <<< "${TRAIN_FLAGS:-}"
read -r -a subset_flags <<< "${SUBSET_FLAGS:-}"
read -r -a eval_flags <<< "${EVAL_FLAGS:-}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # the scripts live here; paths stay relative to $PWD
MASKS=$OUT/masks
common=(--data_path "$DATA_PATH" --dataset "$DATASET" --arch "$ARCH" --epochs "$EPOCHS"
        --learning_rate 0.1 --batch-size "$BATCH" --ngpu "$NGPU")

die() { echo "sweep.sh: error: $*" >&2; exit 2; }
run() { echo "+ $*"; "$@"; }  # print each command, then run it

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
    [[ $m =~ ^(tdds|el2n|forgetting|aum|entropy|dyn_unc|random)$ ]] || die "METHODS: unknown method '$m'"
done
for s in $SELECTIONS; do
    [[ $s =~ ^(top|ccs|random)$ ]] || die "SELECTIONS: unknown selection '$s' (top, ccs, random)"
done
rates=()  # normalised (0.50 -> 0.5), checked before any training starts
for r in $RATES; do
    r=$(LC_ALL=C printf '%g' "$r" 2>/dev/null) || die "RATES: '$r' is not a number"
    awk -v r="$r" 'BEGIN { exit !(r > 0 && r < 1) }' || die "RATES: pruning rate $r is not in (0, 1)"
    tk_for_rate "$r"
    rates+=("$r")
done

# ---- 1. dynamics of the full-data run
for s in $SEEDS; do first_seed=$s; break; done
[[ -n ${first_seed:-} ]] || die "SEEDS is empty"
if [[ -z $DYNAMICS ]]; then
    if [[ -f $OUT/full/metrics.json ]]; then
        echo "skip full-data run: $OUT/full/metrics.json exists"
    else
        run "$PYTHON" "$ROOT/train.py" "${common[@]}" --dynamics --save_path "$OUT/full" --resume \
            --manualSeed "$first_seed" "${train_flags[@]}"
    fi
    DYNAMICS=$OUT/full/npy
fi
recorded=0  # epochs 0 .. recorded-1 are all present
while [[ -f $DYNAMICS/${recorded}_Output.npy ]]; do recorded=$((recorded + 1)); done
((recorded > 0)) || die "no dynamics in $DYNAMICS: expected 0_Output.npy, 1_Output.npy, ..."
echo "dynamics: $recorded recorded epochs in $DYNAMICS"

# ---- 2. scores (once per method, T, K) and subset runs
# set mask, score to the files importance_evaluation.py writes for METHOD T K
# (dyn_unc's file names do not carry K, so each K gets its own folder)
score_files() {
    local dir=$MASKS
    case $1 in
        tdds) mask=$dir/data_mask_win${3}_ep${2}.npy score=$dir/score_win${3}_ep${2}.npy; return ;;
        dyn_unc) dir=$MASKS/dyn_unc_win${3} ;;
    esac
    mask=$dir/data_mask_${1}_ep${2}.npy score=$dir/score_${1}_ep${2}.npy
}

for rate in "${rates[@]}"; do
    tk_for_rate "$rate"
    if ((T > recorded)); then
        echo "note: rate $rate: T=$T exceeds the $recorded recorded epochs; using T=$recorded"
        T=$recorded
    fi
    if ((K > T)); then
        echo "note: rate $rate: K=$K exceeds T=$T; using K=$T"
        K=$T
    fi
    if [[ " $METHODS " == *" tdds "* ]] && ((K < 3)); then
        echo "note: rate $rate: K=$K leaves one contribution per window: TDDS scores are all 0 (use K >= 3)"
    fi
    seen=""  # run names done at this rate
    for method in $METHODS; do
        for sel in $SELECTIONS; do
            if [[ $method == random || $sel == random ]]; then
                name=random
            elif [[ $sel == top ]]; then
                name=$method
            else
                name=$method-$sel
            fi
            [[ " $seen " == *" $name "* ]] && continue  # e.g. "random" reached from several methods
            seen+=" $name"
            for seed in $SEEDS; do
                save=$OUT/$name/r$rate/s$seed
                if [[ -f $save/metrics.json ]]; then
                    echo "skip $save: metrics.json exists"
                    continue
                fi
                if [[ $name == random ]]; then
                    run "$PYTHON" "$ROOT/train_subset.py" "${common[@]}" --save_path "$save" --resume \
                        --subset_rate "$rate" --selection random --manualSeed "$seed" \
                        "${train_flags[@]}" "${subset_flags[@]}"
                    continue
                fi
                score_files "$method" "$T" "$K"
                if [[ ! -f $mask || ! -f $score ]]; then
                    run "$PYTHON" "$ROOT/importance_evaluation.py" --dynamics_path "$DYNAMICS" \
                        --mask_path "$(dirname "$mask")" --trajectory_len "$T" --window_size "$K" \
                        --decay 0.9 --method "$method" "${eval_flags[@]}"
                fi
                run "$PYTHON" "$ROOT/train_subset.py" "${common[@]}" --save_path "$save" --resume \
                    --subset_rate "$rate" --mask_path "$mask" --score_path "$score" \
                    --selection "$sel" --manualSeed "$seed" "${train_flags[@]}" "${subset_flags[@]}"
            done
        done
    done
done

# ---- 3. summary
run "$PYTHON" "$ROOT/scripts/summarize.py" "$OUT"
