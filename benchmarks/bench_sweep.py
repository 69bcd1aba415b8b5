"""A small study on this machine: the sequential sweep (JOBS=1, every run using all cores) against
JOBS=2 (two runs at once, the cores split between them).

    python benchmarks/bench_sweep.py                  # digits, ResNet-20, 6 epochs, 6 subset runs
    python benchmarks/bench_sweep.py --epochs 2 --rates 0.8 --methods "tdds random"
    python benchmarks/bench_sweep.py --rerun          # a finished 16-run study run again (docs/SWEEP.md)

The full-data run and the scores are made once (untimed) and copied into both study folders, so
both sweeps do the same work: stage 2 (the subset runs, what JOBS parallelises) and stage 3
(summary and report, the same in both). Prints each sweep's wall time, its stage-2 part and the
ratios, and the load average (other processes on the machine distort both). OMP_NUM_THREADS and
MKL_NUM_THREADS are removed from the environment so that JOBS=1 uses every core, as a user's sweep
would; run it on an otherwise idle machine.

--rerun builds a finished study (digits, 3 epochs, METHODS="tdds el2n forgetting random", RATES="0.5
0.8", SEEDS="1 2": 16 subset runs; untimed) and then times the same sweep run again: its wall time, the
CPU seconds of every process it started, and how many Python processes it started (PYTHON is a
wrapper that counts them; the sweep itself is one).
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def sweep(out, env, jobs):
    """Run scripts/sweep.sh; returns (whole wall seconds, stage-2 wall seconds)."""
    full_env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    full_env.update(env, OUT=out, JOBS=str(jobs))
    t0 = time.perf_counter()
    stage2_start = stage2_end = None
    with subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "sweep.sh")], env=full_env, cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as p:
        lines = []
        for line in p.stdout:
            lines.append(line)
            if stage2_start is None and line.startswith("+ ") and "train_subset.py" in line:
                stage2_start = time.perf_counter()   # the first subset run is launched
            if re.match(r"stage 2: [0-9]+ runs:", line):   # the summary line, not the progress bar
                stage2_end = time.perf_counter()
    if p.returncode:
        raise SystemExit(f"sweep.sh failed ({p.returncode}):\n{''.join(lines[-40:])}")
    return time.perf_counter() - t0, (stage2_end or time.perf_counter()) - (stage2_start or t0)


def rerun(a):
    """Time a finished study's sweep run again (see the module docstring)."""
    env = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": str(a.epochs), "TRAJ": str(a.epochs),
           "WIN": str(min(3, a.epochs)), "RATES": a.rates, "METHODS": a.methods, "SEEDS": a.seeds, "NGPU": "0",
           "BATCH": "64", "FULL_BATCH": "64"}
    with tempfile.TemporaryDirectory() as tmp:
        calls = os.path.join(tmp, "calls.txt")
        python = os.path.join(tmp, "python")
        with open(python, "w") as f:   # counts every Python process the sweep starts (itself included)
            f.write(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
        os.chmod(python, 0o755)
        out = os.path.join(tmp, "study")
        env["PYTHON"] = python
        t0 = time.perf_counter()
        sweep(out, env, 1)
        first = time.perf_counter() - t0
        first_calls = sum(1 for _ in open(calls))
        os.remove(calls)
        runs = sum("metrics.json" in files for _, _, files in os.walk(out))
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, _ = sweep(out, env, 1)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        processes = sum(1 for _ in open(calls)) if os.path.exists(calls) else 0
    print(f"a study of {runs - 1} subset runs and its full-data run, built in {first:.0f} s with {first_calls} "
          f"Python processes; run again: {wall:.1f} s wall, {cpu:.1f} s CPU, {processes} Python process(es); "
          f"load average now {os.getloadavg()[0]:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rates", default="0.5 0.8")
    p.add_argument("--methods", default="tdds el2n random")
    p.add_argument("--seeds", default="1 2", help="--rerun: the subset runs' seeds")
    p.add_argument("--rerun", action="store_true", help="time a finished study's sweep run again (16 runs by default)")
    a = p.parse_args()
    if a.rerun:
        if a.methods == p.get_default("methods"):
            a.methods = "tdds el2n forgetting random"
        if a.epochs == p.get_default("epochs"):
            a.epochs = 3
        return rerun(a)
    env = {"DATASET": "digits", "ARCH": "resnet20", "EPOCHS": str(a.epochs), "TRAJ": str(a.epochs),
           "WIN": str(min(3, a.epochs)), "RATES": a.rates, "METHODS": a.methods, "NGPU": "0", "BATCH": "64",
           "FULL_BATCH": "64"}
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        scored = " ".join(m for m in a.methods.split() if m != "random") or "tdds"
        sweep(base, {**env, "RATES": a.rates.split()[0], "METHODS": scored}, 1)   # dynamics + scores, untimed
        times, accs = {}, {}
        for jobs in (1, 2):
            out = os.path.join(tmp, f"jobs{jobs}")
            for part in ("full", "masks"):
                shutil.copytree(os.path.join(base, part), os.path.join(out, part))
            times[jobs] = sweep(out, env, jobs)
            runs = {}
            for folder, _, files in os.walk(out):
                if "metrics.json" in files and os.path.basename(folder) != "full":
                    with open(os.path.join(folder, "metrics.json")) as f:
                        runs[os.path.relpath(folder, out)] = json.load(f)["final_acc"]
            accs[jobs] = runs
            print(f"JOBS={jobs}: {len(runs)} subset runs + summary in {times[jobs][0]:.1f} s "
                  f"(stage 2: {times[jobs][1]:.1f} s); load average now {os.getloadavg()[0]:.2f}")
    whole, stage2 = times[2][0] / times[1][0], times[2][1] / times[1][1]
    print(f"JOBS=2 / JOBS=1 wall time: {whole:.2f} for the sweep, {stage2:.2f} for stage 2, on {cores} cores "
          f"({'not slower' if whole <= 1 else 'SLOWER'})")
    diff = max(abs(accs[1][r] - accs[2][r]) for r in accs[1])
    print(f"final accuracies: the same {len(accs[1])} runs, largest difference {diff:.2f} points (each run "
          f"of JOBS=1 used {cores} threads, of JOBS=2 {max(1, cores // 2)}: CPU results depend on the thread count)")


if __name__ == "__main__":
    main()
