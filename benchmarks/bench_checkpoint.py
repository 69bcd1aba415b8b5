"""What a checkpoint costs: the time of one mid-epoch checkpoint (what SIGTERM/SIGUSR1 and
--save_every_steps write) against the time of one training step, hence the cost of --save_every_steps N.

    python benchmarks/bench_checkpoint.py                          # resnet20 and resnet18, CIFAR-100 size
    python benchmarks/bench_checkpoint.py --archs resnet18 --dir /scratch/me   # on the file system you train on
    python benchmarks/bench_checkpoint.py --n 2000 --steps 2 --repeat 2        # tiny (the smoke test)

For each architecture, in this one process: the model, SGD (with its momentum buffers filled by the
timed steps), the cosine scheduler and a DynamicsRecorder of N samples x C classes (logits format,
--dynamics) half-filled as in the middle of an epoch; then
  step:       the mean seconds of one train_one_epoch step on a batch of random 32x32 images;
  checkpoint: the mean seconds of writing checkpoint.pth.tar as utils/engine.fit does mid-epoch
              (state dicts, every random stream, the recorder's partial buffers copied to the host,
              torch.save to a temporary file, fsync, rename), and its size.
The cost of --save_every_steps N is checkpoint / (N * step).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import create_model  # noqa: E402
from utils.protocol.files import save_torch  # noqa: E402
from utils.training.data import CIFAR_STATS, Data, DeviceImages, make_batches  # noqa: E402
from utils.training.loop import epoch_sums, train_one_epoch  # noqa: E402
from utils.training.rng import rng_state  # noqa: E402
from utils.training.recorder import DynamicsRecorder  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet18"], help="models, as for train.py")
    parser.add_argument("--n", type=int, default=50000, help="training samples (rows of the recorder)")
    parser.add_argument("--classes", type=int, default=100, help="classes (columns of the recorder)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size of the timed steps")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up)")
    parser.add_argument("--repeat", type=int, default=5, help="timed checkpoints")
    parser.add_argument("--dir", type=str, default="", help="folder to write into (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size * (args.steps + 1), 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, args.classes, len(images))
    train = DeviceImages(images, labels, CIFAR_STATS["cifar100"], cpu, augment=True)
    data = Data("random", train, train, args.classes)
    folder = tempfile.TemporaryDirectory(prefix="bench_checkpoint_", dir=args.dir or None)
    print(f"CPU, {torch.get_num_threads()} torch threads; recorder {args.n} x {args.classes} float32; "
          f"batch {args.batch_size}; writing to {folder.name}")
    for arch in args.archs:
        torch.manual_seed(0)
        model = create_model(arch, args.classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
        recorder = DynamicsRecorder(os.path.join(folder.name, "npy"), torch.from_numpy(rng.integers(
            0, args.classes, args.n)), args.classes, cpu)
        recorder.start_epoch()
        half = torch.arange(args.n // 2)                     # the first half of an epoch recorded
        recorder.record(half, torch.randn(len(half), args.classes), torch.rand(len(half)))
        order, aug = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
        batches = make_batches(torch.arange(len(images)), args.batch_size)
        times = []
        sums = epoch_sums(cpu)
        last = [time.perf_counter()]

        def after_step(step, s):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        train_one_epoch(model, data, batches, opt, sched, aug, sums=sums, after_step=after_step)
        step = float(np.mean(times[1:]))                     # the first step warms up
        path = os.path.join(folder.name, "checkpoint.pth.tar")
        ck_times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            save_torch(path, {"epoch": 0, "step": len(batches), "model": model.state_dict(),
                              "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                              "rng": rng_state(order, aug, (order.get_state(), aug.get_state())), "partial": [{k: v.cpu() if torch.is_tensor(v) else v
                                                                  for k, v in sums.items()}],
                              "recorder": recorder.state_dict(mid_epoch=True)})
            ck_times.append(time.perf_counter() - t)
        ck = float(np.median(ck_times))
        size = os.path.getsize(path) / 2**20
        params = sum(p.numel() for p in model.parameters()) / 1e6
        costs = ", ".join(f"N={k}: {100 * ck / (k * step):.2g}%" for k in (100, 500, 1000))
        print(f"{arch} ({params:.2f} M parameters): step {step * 1e3:.0f} ms | checkpoint {ck * 1e3:.0f} ms "
              f"(median of {args.repeat}, min {min(ck_times) * 1e3:.0f}), {size:.1f} MiB | "
              f"--save_every_steps costs {costs}")
    folder.cleanup()


if __name__ == "__main__":
    main()
