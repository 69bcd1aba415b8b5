#!/usr/bin/env bash
# The whole TDDS pipeline on scikit-learn's bundled handwritten digits, on CPU, in a few minutes:
# record dynamics on the full data, score, train on half the data (TDDS vs random), summarise.
#   bash scripts/demo.sh                 # results in ./checkpoint/demo
#   OUT=/tmp/demo EPOCHS=20 bash scripts/demo.sh
# Re-running it continues where it stopped (every step uses --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./checkpoint/demo}
EPOCHS=${EPOCHS:-10}
RATE=${RATE:-0.5}
COMMON="--dataset digits --arch resnet20 --epochs $EPOCHS --batch-size 64 --ngpu 0 --resume"
set -x
python train.py $COMMON --dynamics --save_path "$OUT/full"
python importance_evaluation.py --dynamics_path "$OUT/full/npy" --mask_path "$OUT/masks" \
    --trajectory_len "$EPOCHS" --window_size 5 --decay 0.9
python train_subset.py $COMMON --subset_rate "$RATE" --save_path "$OUT/tdds/r$RATE" \
    --mask_path "$OUT/masks/data_mask_win5_ep$EPOCHS.npy" --score_path "$OUT/masks/score_win5_ep$EPOCHS.npy"
python train_subset.py $COMMON --subset_rate "$RATE" --save_path "$OUT/tdds-unweighted/r$RATE" --no_score_weighting \
    --mask_path "$OUT/masks/data_mask_win5_ep$EPOCHS.npy" --score_path "$OUT/masks/score_win5_ep$EPOCHS.npy"
python train_subset.py $COMMON --subset_rate "$RATE" --save_path "$OUT/random/r$RATE" --selection random
python scripts/summarize.py "$OUT"
set +x
echo
echo "demo done. Look at:"
echo "  $OUT/full/curve.png                   training curves of the full-data run"
echo "  $OUT/masks/                           TDDS mask, scores and score histogram"
echo "  $OUT/results.md, accuracy_vs_pruning.png   TDDS vs random at pruning rate $RATE"
