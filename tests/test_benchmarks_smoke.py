"""The benchmark scripts still run and print their figures (tiny sizes: this times nothing). Their
drivers run in this process (conftest.cli), except bench_memory, which imports its sibling as a top-level
module; the workers they measure are their own fresh processes.

bench_scoring also checks its re-implementation of the published scorer against ours, so a drift
between the two (or in the published layout writer) fails here."""
import os
import re

from conftest import cli, run_script, write_published

NUM = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def lines_matching(out, pattern):
    found = [m for m in (re.search(pattern, line) for line in out.splitlines()) if m]
    assert found, f"no line matches {pattern!r} in:\n{out}"
    return found


def test_bench_scoring(tmp_path):
    p = cli("benchmarks/bench_scoring.py", "--n", "300", "--classes", "7", "--trajectory_len", "5",
            "--window_size", "3", "--repeat", "1", "--dir", str(tmp_path))
    for name in (r"published approach \(re-impl\.\)", r"ours: compute_score \(library\)",
                 r"ours: importance_evaluation\.py"):
        lines_matching(p.stdout, rf"^{name}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}$")
    lines_matching(p.stdout, rf"^speed-up vs published: compute library {NUM}x, script {NUM}x")
    lines_matching(p.stdout, rf"^memory vs published: net peak library {NUM}x, script {NUM}x")
    agree = lines_matching(p.stdout, rf"^agreement (library|script) vs published: max relative error of S ({NUM}) "
                                     rf"\(tolerance 1e-4\); "
                                     rf"ranking identical at (\d+)/300 positions")
    assert {m[1] for m in agree} == {"library", "script"}
    for m in agree:
        assert float(m[2]) < 1e-4, m[0]     # the tolerance on S
    assert os.listdir(tmp_path) == []       # the dynamics folder is removed


def test_bench_memory(tmp_path):
    p = run_script("benchmarks/bench_memory.py", "--sizes", "200", "600", "--classes", "5",
                   "--trajectory_len", "4", "--window_size", "3", "--only", "library", "--dir", str(tmp_path),
                   timeout=120)
    for n in (200, 600):
        lines_matching(p.stdout, rf"^N=\s*{n} library\s+peak RSS\s+{NUM} MB, base\s+{NUM} MB, net\s+{NUM} MB")
    lines_matching(p.stdout, rf"^library: peak RSS at N=600 minus N=200: {NUM} MB raw, {NUM} MB net")
    assert os.listdir(tmp_path) == []


def test_bench_training():
    p = cli("benchmarks/bench_training.py", "--n", "48", "--epochs", "1", "--batch-size", "32", "--threads", "1")
    lines_matching(p.stdout, rf"^epoch 1: bare {NUM} img/s, train_one_epoch {NUM} img/s, ratio {NUM}$")
    lines_matching(p.stdout, rf"^\(a\) bare loop:\s+{NUM} img/s")
    lines_matching(p.stdout, rf"^\(b\) train_one_epoch:\s+{NUM} img/s")
    lines_matching(p.stdout, rf"^ratio b/a: {NUM} \(target >= 0.85\)")


def test_bench_eval_every():
    """Digits at 99% pruned, batch 256: the budget is 6 steps, 6 epochs of one step; N = 4 evaluates 3 and 5."""
    p = cli("benchmarks/bench_eval_every.py", "--epochs", "1", "--batch-size", "256", "--rate", "0.99",
            "--every", "1", "4", "--threads", "1")
    for every, evaluated in ((1, 6), (4, 2)):
        lines_matching(p.stdout, rf"^--eval_every {every}: train {NUM} s, eval {NUM} s, total {NUM} s "
                                 rf"\({evaluated} of 6 epochs evaluated\); final {NUM}%, best {NUM}%$")
    lines_matching(p.stdout, r"^final accuracy the same for every N: yes$")


def test_bench_grid():
    p = cli("benchmarks/bench_grid.py", "--n", "300", "--classes", "7", "--repeat", "1")
    m = lines_matching(p.stdout, rf"1 combination .*: ({NUM}) s; 12 combinations .*: ({NUM}) s; ratio ({NUM})")[0]
    # the ratio of the unrounded times, printed to 2 decimals like each time: it lies where the printed
    # times (each within 0.005 of its value) allow, to within its own rounding
    one, grid, ratio, half = float(m[1]), float(m[2]), float(m[3]), 0.005
    assert (grid - half) / (one + half) - half <= ratio <= (grid + half) / (one - half) + half, m


def test_bench_amp_logits(tmp_path):
    import numpy as np
    Z = 3 * np.random.default_rng(0).standard_normal((4, 200, 5))
    write_published(tmp_path, Z, shuffle=False)   # float32 logits in dataset order, as train.py records them
    p = cli("benchmarks/bench_amp_logits.py", "--dynamics_path", str(tmp_path), "--trajectory_len", "4",
            "--window_size", "3")
    lines_matching(p.stdout, rf"relative change of the TDDS score from bf16 logits: median {NUM}%")
    assert len(lines_matching(p.stdout, rf"pruning rate {NUM}: \d+ of \d+ kept samples differ")) == 4
