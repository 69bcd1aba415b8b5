"""What `--amp` does to the scores through the recorded logits: bf16 rounding alone.

    python benchmarks/bench_amp_logits.py --dynamics_path ./checkpoint/demo/full/npy --trajectory_len 10 --window_size 5

Under bf16 autocast the model's final layer returns bf16 logits (8 significant bits), and those are
what train.py --amp records. This script takes float32 dynamics recorded WITHOUT --amp, rounds every
<e>_Output.npy to bf16 (a temp copy), scores both with TDDS, and prints how far the scores and the
kept sets move. It isolates the recording's rounding; training in bf16 also changes the trajectory
itself, as any change of seed or hardware does.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.science.scores import Dynamics, compute_score  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dynamics_path", default="./checkpoint/demo/full/npy")
    p.add_argument("--trajectory_len", type=int, default=10)
    p.add_argument("--window_size", type=int, default=5)
    p.add_argument("--decay", type=float, default=0.9)
    p.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    a = p.parse_args()
    T, K = a.trajectory_len, a.window_size
    with tempfile.TemporaryDirectory() as tmp:
        for e in range(T):
            z = np.load(os.path.join(a.dynamics_path, f"{e}_Output.npy"))
            if z.dtype != np.float32:
                sys.exit(f"{e}_Output.npy is {z.dtype}: record float32 dynamics without --amp first")
            np.save(os.path.join(tmp, f"{e}_Output.npy"), torch.from_numpy(z).bfloat16().float().numpy())
            shutil.copy(os.path.join(a.dynamics_path, f"{e}_Index.npy"), tmp)
        ref = compute_score(Dynamics(a.dynamics_path, T), "tdds", T, K, a.decay, progress=False)
        bf16 = compute_score(Dynamics(tmp, T), "tdds", T, K, a.decay, progress=False)
    rel = np.abs(bf16 - ref) / np.maximum(np.abs(ref), 1e-12)
    n = len(ref)
    print(f"{a.dynamics_path}: N={n}, T={T}, K={K}, beta={a.decay}")
    print(f"relative change of the TDDS score from bf16 logits: median {100 * np.median(rel):.2f}%, "
          f"90th percentile {100 * np.percentile(rel, 90):.2f}%, max {100 * rel.max():.1f}%")
    for r in a.rates:
        keep = n - int(r * n)
        k_ref = set(np.argsort(ref, kind="stable")[n - keep:].tolist())
        k_bf = set(np.argsort(bf16, kind="stable")[n - keep:].tolist())
        print(f"pruning rate {r}: {len(k_ref - k_bf)} of {keep} kept samples differ "
              f"({100 * len(k_ref - k_bf) / keep:.2f}%)")


if __name__ == "__main__":
    main()
