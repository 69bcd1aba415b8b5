"""What recording and the training engine cost: the bare training loop against train_one_epoch.

    python benchmarks/bench_training.py                      # ResNet-20, N=5,000, 3 timed epochs each
    python benchmarks/bench_training.py --amp                # bf16 autocast + channels_last
    python benchmarks/bench_training.py --n 512 --epochs 1 --batch-size 64
    python benchmarks/bench_training.py --device cuda --n 20000   # what scripts/gpu_check.sh runs
    python benchmarks/bench_training.py --mode epoch_end           # train.py --dynamics: the epoch end's seconds
    python benchmarks/bench_training.py --mode imagefolder         # train.py on an ImageFolder tree, --workers 2

Random CIFAR-sized uint8 images (32x32, 10 classes) resident on the CPU, as train.py keeps them.
  (a) bare: the same model, the same index batches, images already normalised float tensors sliced
      per batch beforehand; forward, mean cross-entropy, backward, SGD step; nothing else.
  (b) engine: utils.training.loop.train_one_epoch exactly as train.py calls it (DeviceImages crop/flip/
      normalisation, per-sample loss, cosine scheduler, a DynamicsRecorder in the logits format),
      plus recorder.start_epoch / end_epoch / wait, i.e. the epoch's .npy files on disk.
Each has its own copy of the same initial model and optimizer. One warm-up epoch of each is not
timed; then the timed epochs alternate a, b, a, b ... so that drift in machine load hits both alike.

--mode epoch_end and --mode imagefolder run train.py's main() on synthetic data (CIFAR-10's layout,
ResNet-18, --dynamics; or a PNG tree with --workers 2) and time each epoch from the start of one
epoch's training to the start of the next, split into training, evaluation and the rest (the epoch
end: dynamics, checkpoint, model_best, metrics.json, curve.png). The first epoch and the last are left
out (start-up, the run's end).
"""
import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import create_model  # noqa: E402
from utils.training.data import CIFAR_STATS, Data, DeviceImages, make_batches  # noqa: E402
from utils.training.loop import train_one_epoch  # noqa: E402
from utils.training.recorder import DynamicsRecorder  # noqa: E402


def sgd(model, iters):
    """train.py's optimizer and per-iteration cosine schedule."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters)


def bare_epoch(model, opt, xs, ys, amp):
    """(a): forward, backward, step on prepared (B, 3, 32, 32) float batches."""
    model.train()
    for x, y in zip(xs, ys):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--n', type=int, default=5000, help='training images')
    parser.add_argument('--epochs', type=int, default=3, help='timed epochs of each loop (after 1 warm-up)')
    parser.add_argument('--batch-size', type=int, default=128, help='batch size')
    parser.add_argument('--arch', type=str, default='resnet20', help='model, as for train.py')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast + channels_last, as train.py --amp')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (loop mode)')
    parser.add_argument('--mode', choices=('loop', 'epoch_end', 'imagefolder'), default='loop',
                        help='loop: (a) against (b); epoch_end / imagefolder: epoch times of train.py')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.mode != 'loop':
        return time_train_py(args)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 3, 32, 32), dtype=np.uint8)   # (N, 3, 32, 32) uint8
    labels = rng.integers(0, 10, args.n)                                 # (N,)
    stats = CIFAR_STATS['cifar10']
    train = DeviceImages(images, labels, stats, device, augment=True, channels_last=args.amp)
    test = DeviceImages(images[:1], labels[:1], stats, device, augment=False, channels_last=args.amp)
    data = Data('random', train, test, 10)
    fmt = torch.channels_last if args.amp else torch.contiguous_format
    X = (train.images.float() * train.scale - train.shift).contiguous(memory_format=fmt)   # (N, 3, 32, 32)

    model_a = create_model(args.arch, 10).to(device, memory_format=fmt)
    model_b = copy.deepcopy(model_a)
    order_gen = torch.Generator().manual_seed(0)
    aug_gen = torch.Generator(device=device).manual_seed(1)
    schedule = [make_batches(torch.arange(args.n), args.batch_size, order_gen) for _ in range(args.epochs + 1)]
    iters = (args.epochs + 1) * len(schedule[0])
    opt_a, _ = sgd(model_a, iters)
    opt_b, sched_b = sgd(model_b, iters)
    folder = tempfile.TemporaryDirectory(prefix='bench_training_')
    recorder = DynamicsRecorder(folder.name, torch.from_numpy(labels), 10, device, 'logits')
    precision = 'bf16 autocast + channels_last' if args.amp else 'fp32'
    print(f"{args.arch}, N={args.n} random 32x32 uint8 images, 10 classes, batch {args.batch_size}, "
          f"{args.device}, {torch.get_num_threads()} torch threads, {precision}")
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def run_a(batches):
        xs = [X[b] for b in batches]            # (B, 3, 32, 32) float, prepared outside the timing
        ys = [train.labels[b] for b in batches]
        sync()
        t = time.perf_counter()
        bare_epoch(model_a, opt_a, xs, ys, args.amp)
        sync()
        return time.perf_counter() - t

    def run_b(batches, epoch):
        sync()
        t = time.perf_counter()
        recorder.start_epoch()
        train_one_epoch(model_b, data, batches, opt_b, sched_b, aug_gen, amp=args.amp, recorder=recorder,
                        epoch=epoch)
        recorder.end_epoch(epoch, torch.cat(batches))
        recorder.wait()
        sync()
        return time.perf_counter() - t

    ta, tb = run_a(schedule[0]), run_b(schedule[0], 0)
    print(f"warm-up (not counted): bare {args.n / ta:.0f} img/s, train_one_epoch {args.n / tb:.0f} img/s")
    sa = sb = 0.0
    for e in range(1, args.epochs + 1):
        ta, tb = run_a(schedule[e]), run_b(schedule[e], e)
        sa, sb = sa + ta, sb + tb
        print(f"epoch {e}: bare {args.n / ta:.0f} img/s, train_one_epoch {args.n / tb:.0f} img/s, "
              f"ratio {ta / tb:.3f}")
    a, b = args.n * args.epochs / sa, args.n * args.epochs / sb
    print(f"(a) bare loop:        {a:8.1f} img/s")
    print(f"(b) train_one_epoch:  {b:8.1f} img/s (augmentation, per-sample loss, recorder, .npy written)")
    print(f"ratio b/a: {b / a:.3f} (target >= 0.85) -> {'PASS' if b / a >= 0.85 else 'MISS'}")
    assert os.path.exists(os.path.join(folder.name, f'{args.epochs}_Output.npy'))
    folder.cleanup()


def write_data(root, mode, n):
    """CIFAR-10's layout with n training images, or an ImageFolder tree of n 64x64 PNGs in 4 classes."""
    rng = np.random.default_rng(0)
    if mode == 'epoch_end':
        import pickle
        os.makedirs(os.path.join(root, 'cifar-10-batches-py'))
        for name, rows in [(f'data_batch_{k}', n // 5) for k in range(1, 6)] + [('test_batch', 100)]:
            with open(os.path.join(root, 'cifar-10-batches-py', name), 'wb') as f:
                pickle.dump({'data': rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                             'labels': rng.integers(0, 10, rows).tolist()}, f)
        return
    from PIL import Image
    for split, count in (('train', n // 4), ('val', n // 16)):
        for c in range(4):
            os.makedirs(os.path.join(root, split, f'c{c}'))
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                    os.path.join(root, split, f'c{c}', f'{k}.png'))


def time_train_py(args):
    """Seconds per epoch of train.py (see the module docstring), from marks set around the engine's
    train_one_epoch and evaluate."""
    import train
    import utils.training.loop as engine
    n = 500 if args.n == 5000 else args.n   # (the loop mode's default is too long here)
    arch = 'resnet18' if args.mode == 'epoch_end' else args.arch
    marks = {'start': [], 'end': [], 'eval': []}
    real_train, real_eval = engine.train_one_epoch, engine.evaluate

    def timed_train(*a, **kw):
        marks['start'].append(time.perf_counter())
        out = real_train(*a, **kw)
        marks['end'].append(time.perf_counter())
        return out

    def timed_eval(*a, **kw):
        t = time.perf_counter()
        out = real_eval(*a, **kw)
        marks['eval'].append(time.perf_counter() - t)
        return out

    engine.train_one_epoch, engine.evaluate = timed_train, timed_eval
    with tempfile.TemporaryDirectory(prefix='bench_training_') as tmp:
        write_data(os.path.join(tmp, 'data'), args.mode, n)
        argv = ['--data_path', os.path.join(tmp, 'data'), '--arch', arch, '--epochs', str(args.epochs + 2),
                '--batch-size', str(args.batch_size), '--ngpu', '0', '--save_path', os.path.join(tmp, 'run')]
        argv += (['--dataset', 'cifar10', '--dynamics'] if args.mode == 'epoch_end' else
                 ['--dataset', 'imagefolder', '--image_size', '32', '--workers', '2'])
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            train.main(argv)
        total = time.perf_counter() - t0
    s, e, ev = marks['start'], marks['end'], marks['eval']
    rows = [(s[i + 1] - s[i], e[i] - s[i], ev[i], s[i + 1] - e[i] - ev[i]) for i in range(1, len(s) - 1)]
    what = 'ResNet-18, CIFAR-10 layout, --dynamics' if args.mode == 'epoch_end' else \
        f'{args.arch}, ImageFolder {n} 64x64 PNGs cropped to 32, --workers 2'
    print(f"train.py: {what}, N={n}, batch {args.batch_size}, {args.epochs + 2} epochs, CPU, "
          f"{torch.get_num_threads()} torch threads; whole run {total:.1f} s")
    for i, r in enumerate(rows, 1):
        print(f"epoch {i}: {r[0]:.2f} s = training {r[1]:.2f} + evaluation {r[2]:.2f} + epoch end {r[3]:.3f}")
    mean = np.mean(rows, axis=0)
    print(f"mean of epochs 1..{len(rows)}: epoch {mean[0]:.2f} s, training {mean[1]:.2f} s, evaluation "
          f"{mean[2]:.2f} s, epoch end {mean[3]:.3f} s")


if __name__ == '__main__':
    main()
