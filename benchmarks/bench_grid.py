"""Every (T, K, beta) from one pass: 12 TDDS combinations in one importance_evaluation.py call
against one combination, on CIFAR-100-sized dynamics (target: 12 combinations <= 2x one).

    python benchmarks/bench_grid.py                  # N=50,000, C=100, 30 epochs, published shuffled layout
    python benchmarks/bench_grid.py --n 2000 --repeat 1
    python benchmarks/bench_grid.py --plot            # histograms drawn, as a user runs it by default

Each measurement is a whole process (`python importance_evaluation.py ... --no_plot`, or with the
histograms under --plot: one figure per single call, one figure of 12 panels for the grid; as a user
runs it: Python start, `import torch`, reading, scoring, writing), run `--repeat` times; the last
(warm page cache) round is reported. The compute-only time of the same calls is the process time minus
that of `--trajectory_len 1` style start-up, printed as "start-up".
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.bench_scoring import write_published  # noqa: E402

ONE = ["--trajectory_len", "30", "--window_size", "10", "--decay", "0.9"]
GRID = ["--trajectory_len", "10", "20", "30", "--window_size", "5", "10", "--decay", "0.9", "0.8"]   # 12


def timed(args, dyn, out, plot=False):
    t = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "importance_evaluation.py"), "--dynamics_path", dyn,
                    "--mask_path", out, *([] if plot else ["--no_plot"]), *args], check=True, capture_output=True,
                   cwd=ROOT)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--plot", action="store_true", help="draw the histograms (the default of importance_evaluation.py)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dyn = os.path.join(tmp, "npy")
        write_published(dyn, a.n, a.classes, 30)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, numpy, matplotlib"], check=True)
        startup = time.perf_counter() - t0
        for r in range(a.repeat):
            one = timed(ONE, dyn, os.path.join(tmp, f"one{r}"), a.plot)
            grid = timed(GRID, dyn, os.path.join(tmp, f"grid{r}"), a.plot)
            print(f"round {r + 1}: 1 combination {one:.2f} s, 12 combinations {grid:.2f} s, ratio {grid / one:.2f}"
                  f" | load average {os.getloadavg()[0]:.2f}")
    print(f"N={a.n}, C={a.classes}, T up to 30, shuffled published layout; whole processes, warm round, "
          f"{'histograms drawn' if a.plot else '--no_plot'}:")
    print(f"  1 combination (T=30, K=10, beta=0.9): {one:.2f} s; 12 combinations (T 10 20 30 x K 5 10 x beta "
          f"0.9 0.8): {grid:.2f} s; ratio {grid / one:.2f} (target <= 2)")
    print(f"  of which Python + import torch/numpy/matplotlib alone: {startup:.2f} s")


if __name__ == "__main__":
    main()
