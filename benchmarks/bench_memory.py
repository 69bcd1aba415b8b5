"""Peak memory of our TDDS scoring does not grow with N: N=100,000 against N=400,000.

    python benchmarks/bench_memory.py                        # C=100, T=10, K=5, float16 logits
    python benchmarks/bench_memory.py --sizes 2000 8000 --classes 10 --only library

For every N, float16 logits are written as this project's train.py writes them (rows in dataset
order, <e>_Index.npy = arange(N), --dynamics_dtype float16), then scored in fresh processes by
  library  utils.science.scores.compute_score + argsort,
  script   importance_evaluation.py --no_plot run as __main__ (also writes its three .npy files),
and the folder is deleted before the next N (400k x 100 x 2 B x 10 epochs = 800 MB on disk).
Peak RSS is ru_maxrss read just before the process exits, "net" is that minus the same process
after its imports (see bench_scoring.py, whose workers run here). The O(N) arrays that remain
(score, mask, the Index check) cost ~30-40 B per sample: ~10-15 MB more at 400k than at 100k.
"""
import argparse
import os
import shutil
import tempfile
import time

import bench_scoring as bs  # the data writer and the measuring workers

MB = bs.MB


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[100000, 400000], help='values of N, in order')
    parser.add_argument('--classes', type=int, default=100, help='C classes')
    parser.add_argument('--trajectory_len', type=int, default=10, help='T epochs')
    parser.add_argument('--window_size', type=int, default=5, help='K')
    parser.add_argument('--decay', type=float, default=0.9, help='beta')
    parser.add_argument('--only', choices=('library', 'script'), default=None, help='measure one of the two')
    parser.add_argument('--dir', type=str, default=None, help='where the temporary folders are made')
    args = parser.parse_args()
    if len(args.sizes) < 2:
        parser.error('--sizes needs at least two values of N')
    C, T, K = args.classes, args.trajectory_len, args.window_size
    modes = [args.only] if args.only else ['library', 'script']
    print(f"TDDS scoring memory: C={C} T={T} K={K} float16 logits in dataset order (train.py's layout), "
          f"each measurement in a fresh process, peak read before exit")
    results = {}   # (mode, N) -> worker figures
    for n in args.sizes:
        folder = tempfile.mkdtemp(prefix=f'bench_memory_{n}_', dir=args.dir)
        try:
            t0 = time.time()
            bs.write_published(folder, n, C, T, shuffle=False, dtype='float16')
            written = time.time() - t0
            for mode in modes:
                r = results[mode, n] = bs.run_worker(bs.__file__, mode, folder, T, K, args.decay,
                                                     os.path.join(folder, f'bench_{mode}.npy'))
                print(f"N={n:>8} {mode:8} peak RSS {r['peak'] / MB:8.1f} MB, base {r['base'] / MB:7.1f} MB, "
                      f"net {(r['peak'] - r['base']) / MB:7.1f} MB | scoring {r['seconds']:6.2f} s "
                      f"({n * C * 2 * T / MB:.0f} MB of logits, written in {written:.1f} s)")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    lo, hi = args.sizes[0], args.sizes[-1]
    for mode in modes:
        a, b = results[mode, lo], results[mode, hi]
        d_raw = (b['peak'] - a['peak']) / MB
        d_net = ((b['peak'] - b['base']) - (a['peak'] - a['base'])) / MB
        print(f"{mode}: peak RSS at N={hi} minus N={lo}: {d_raw:+.1f} MB raw, {d_net:+.1f} MB net "
              f"(target < 100 MB) -> {'PASS' if max(d_raw, d_net) < 100 else 'MISS'}")


if __name__ == '__main__':
    main()
