"""A small study on this machine: the sequential sweep (JOBS=1, every run using all cores) against
JOBS=2 (two runs at once, the cores split between them).

    python benchmarks/bench_sweep.py                  # digits, ResNet-20, 6 epochs, 6 subset runs
    python benchmarks/bench_sweep.py --epochs 2 --rates 0.8

The full-data run and the scores are made once (untimed) and copied into both study folders, so
both time the same stage 2 (the subset runs) and stage 3 (summary): the part JOBS parallelises.
Run it on an otherwise idle machine.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sweep(out, env, jobs):
    t = time.perf_counter()
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "sweep.sh")], env={**os.environ, **env, "OUT": out,
                   "JOBS": str(jobs)}, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rates", default="0.5 0.8")
    p.add_argument("--methods", default="tdds el2n random")
    a = p.parse_args()
    env = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": str(a.epochs), "TRAJ": str(a.epochs),
           "WIN": str(min(3, a.epochs)), "RATES": a.rates, "METHODS": a.methods, "NGPU": "0", "BATCH": "64",
           "FULL_BATCH": "64"}
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        sweep(base, {**env, "RATES": a.rates.split()[0], "METHODS": "tdds el2n"}, 1)   # dynamics + scores
        times = {}
        for jobs in (1, 2):
            out = os.path.join(tmp, f"jobs{jobs}")
            for part in ("full", "masks"):
                shutil.copytree(os.path.join(base, part), os.path.join(out, part))
            times[jobs] = sweep(out, env, jobs)
            runs = sum(1 for _, _, files in os.walk(out) for f in files if f == "metrics.json") - 1
            print(f"JOBS={jobs}: {runs} subset runs + summary in {times[jobs]:.1f} s "
                  f"(load average {os.getloadavg()[0]:.2f})")
    print(f"JOBS=2 / JOBS=1 wall time: {times[2] / times[1]:.2f} on {os.cpu_count()} cores "
          f"({'not slower' if times[2] <= times[1] else 'SLOWER'})")


if __name__ == "__main__":
    main()
