"""What agreeing on a signal costs under torchrun: the step time of a DDP training step alone, with a
blocking all-reduce of the stop flag after every step, and with the background one that
utils/training/preemption.py uses (its answer is one step old; it runs while the next step computes).

    torchrun --standalone --nproc_per_node=2 benchmarks/bench_signal_agreement.py          # CPU, gloo
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_signal_agreement.py --rounds 4 --steps 2

The three variants alternate in rounds of --steps steps, so that a change in machine load hits all
alike; printed: the median step time of each and its difference from the plain step.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as tdist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import create_model  # noqa: E402
from utils.training.preemption import StopSignals  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--arch", default="resnet20", help="model, as for train.py")
    parser.add_argument("--batch-size", type=int, default=8, help="images per process and step")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the three variants")
    parser.add_argument("--steps", type=int, default=5, help="steps per variant and round")
    args = parser.parse_args()
    tdist.init_process_group("gloo")
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(create_model(args.arch, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))
    signals = StopSignals()

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    agree = {"plain step": lambda: None, "blocking all-reduce": lambda: signals.agreed(now=True),
             "background (ours)": signals.agreed}
    times = {name: [] for name in agree}
    for _ in range(3):
        step()
    for _ in range(args.rounds):
        for name, after in agree.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
                after()
            times[name].append((time.perf_counter() - t) / args.steps)
    signals.close()
    if tdist.get_rank() == 0:
        base = statistics.median(times["plain step"])
        print(f"{args.arch}, batch {args.batch_size} per process, {tdist.get_world_size()} processes (gloo), "
              f"median of {args.rounds} rounds of {args.steps} steps")
        for name, v in times.items():
            m = statistics.median(v)
            print(f"{name:20s} {m * 1e3:8.2f} ms/step  {(m - base) * 1e3:+6.2f} ms ({100 * (m / base - 1):+.1f}%)")
    tdist.destroy_process_group()


if __name__ == "__main__":
    main()
