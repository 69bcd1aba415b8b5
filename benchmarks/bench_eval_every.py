"""What --eval_every saves where epochs are short: a 90%-pruned subset run on digits with the iteration
budget (as many optimizer steps as the full data), evaluated after every epoch against every N-th.

    python benchmarks/bench_eval_every.py                       # digits, 20 epochs' steps, batch 32, N = 1 and 10
    python benchmarks/bench_eval_every.py --amp --every 1 5 20  # bf16 autocast (as docs/AGGRESSIVE_PRUNING.md)
    python benchmarks/bench_eval_every.py --epochs 1 --batch-size 256 --every 1 4   # a smoke test (seconds)

Each N runs train_subset.py's main() in this process, into a fresh temporary folder: --dataset digits
--arch resnet20 --subset_rate 0.9 --selection random --budget iterations --batch-size 32 (the default
RATE_FLAGS batch at 90%) --ngpu 0. At 90% pruned an epoch is 144 images (5 steps), and the test set is
360 images: evaluating after each of the ~180 epochs costs about as much as training. Printed per N:
the training loops' seconds (metrics.json's train_seconds), the evaluations' seconds (utils.training.loop.
evaluate, timed around each call), the whole run's seconds, the epochs evaluated, and the final accuracy,
which must be the same for every N (evaluation changes no training). A short run of the first N goes
first, untimed (imports, the data set's first load). Time on an idle machine: the numbers are
wall-clock seconds.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_subset  # noqa: E402
import utils.training.loop as loop  # noqa: E402


def run_once(every, args, folder):
    """(train seconds, eval seconds, total seconds, metrics) of one run at --eval_every `every`."""
    spent, real = [], loop.evaluate

    def timed(*a, **kw):
        t = time.perf_counter()
        out = real(*a, **kw)
        spent.append(time.perf_counter() - t)
        return out
    argv = ["--dataset", "digits", "--arch", "resnet20", "--epochs", str(args.epochs), "--batch-size",
            str(args.batch_size), "--subset_rate", str(args.rate), "--selection", "random", "--budget", "iterations",
            "--ngpu", "0", "--eval_every", str(every), "--save_path", os.path.join(folder, f"every{every}")]
    argv += ["--amp"] if args.amp else []
    loop.evaluate = timed
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            train_subset.main(argv)
        total = time.perf_counter() - t0
    finally:
        loop.evaluate = real
    with open(os.path.join(folder, f"every{every}", "metrics.json")) as f:
        m = json.load(f)
    return m["train_seconds"], sum(spent), total, m


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="--epochs: the full data's epochs whose steps are the budget")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.9, help="--subset_rate (fraction pruned)")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10], help="the values of --eval_every compared")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"train_subset.py: digits, resnet20, {args.rate:.0%} pruned, random subset, --budget iterations "
          f"({args.epochs} epochs of the full data), batch {args.batch_size}{', amp' if args.amp else ''}, CPU, "
          f"{torch.get_num_threads()} torch threads")
    finals = {}
    with tempfile.TemporaryDirectory(prefix="bench_eval_every_") as tmp:
        run_once(args.every[0], argparse.Namespace(**{**vars(args), "epochs": 1}), os.path.join(tmp, "warm-up"))
        for every in args.every:
            train_s, eval_s, total_s, m = run_once(every, args, tmp)
            evaluated = sum("test_acc" in h for h in m["history"])
            finals[every] = m["final_acc"]
            print(f"--eval_every {every}: train {train_s:.1f} s, eval {eval_s:.1f} s, total {total_s:.1f} s "
                  f"({evaluated} of {m['completed_epochs']} epochs evaluated); final {m['final_acc']:.2f}%, "
                  f"best {m['best_acc']:.2f}%")
    same = len(set(finals.values())) == 1
    print(f"final accuracy the same for every N: {'yes' if same else 'NO (a bug: evaluation changed training)'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
