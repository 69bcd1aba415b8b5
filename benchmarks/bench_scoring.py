"""TDDS scoring: the published importance_evaluation.py approach against ours, time and peak memory.

    python benchmarks/bench_scoring.py                       # CIFAR-100 size: N=50,000, C=100, T=30, K=10
    python benchmarks/bench_scoring.py --n 2000 --classes 10 --trajectory_len 6 --window_size 3 --repeat 1

Writes float32 logits in the PUBLISHED layout (every epoch's rows in a different shuffled order,
<e>_Output.npy + <e>_Index.npy) into a temporary folder, then runs, each in a fresh process:
  published  the published approach, re-implemented below: load every epoch into a (T, N, C) array,
             and for every window recompute the softmax of its K epochs, reorder them with index_add
             and reduce (O(T x N x C) resident, (T-K+1) x K softmaxes);
  library    ours: utils.science.scores.compute_score (streamed over sample chunks and epochs);
  script     ours end to end: importance_evaluation.py --no_plot run as __main__ (argument checks,
             reading, scoring, argsort, writing the three .npy files).
Peak memory is the process's ru_maxrss read just before it exits (torch's interpreter shutdown
alone adds ~130 MB to a peak, which says nothing about scoring); "net" subtracts the same
process's ru_maxrss after its imports (torch alone is ~500 MB resident). The page cache cannot be
dropped without root, so every measurement runs --repeat times and the LAST (warm-cache) round is
reported; each round also prints the load average and the CPU time stolen by the hypervisor.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def write_published(folder, n, c, epochs, seed=0, shuffle=True, dtype=np.float32):
    """<e>_Output.npy (N, C) logits, <e>_Loss.npy, <e>_Index.npy (N,) int64 and targets.npy.
    Logits drift towards the label at a per-sample speed, so contributions differ between samples
    and epochs. shuffle=True: rows in a new random visiting order every epoch (published train.py);
    False: rows in dataset order (this project's train.py). Written in blocks of rows, so the
    parent never holds more than one block."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)                                 # (N,) labels
    learn = rng.uniform(0, 4, n).astype(np.float32)           # (N,) how fast each sample is learned
    spread = rng.uniform(0.5, 3, n).astype(np.float32)        # (N,) logit scale per sample
    block = max(1, (64 * MB) // (4 * c))                      # rows per block of float32 logits
    for e in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)   # (N,) dataset index of each row
        out = np.lib.format.open_memmap(os.path.join(folder, f'{e}_Output.npy'), 'w+', dtype, (n, c))
        for a in range(0, n, block):
            rows = order[a:a + block]
            z = rng.standard_normal((len(rows), c), dtype=np.float32) * spread[rows, None]
            z[np.arange(len(rows)), y[rows]] += learn[rows] * (e / max(1, epochs - 1))
            out[a:a + len(rows)] = z
        out.flush()
        del out
        np.save(os.path.join(folder, f'{e}_Index.npy'), order.astype(np.int64))
        np.save(os.path.join(folder, f'{e}_Loss.npy'), np.zeros(n, np.float32))
    np.save(os.path.join(folder, 'targets.npy'), y.astype(np.int64))


# --------------------------------------------------------------------------------------------------
# The two scorers, run inside worker processes
# --------------------------------------------------------------------------------------------------
def published_tdds(path, T, K, decay):
    """The published importance_evaluation.py, step for step: (N,) float32 scores, dataset order."""
    import torch
    import torch.nn.functional as F
    probs, indexes = [], []
    for i in range(T):
        probs.append(np.load(os.path.join(path, str(i) + '_Output.npy')))
        indexes.append(np.load(os.path.join(path, str(i) + '_Index.npy')))
    probs = np.stack(probs)                      # (T, N, C) logits, each epoch in its own row order
    indexes = np.stack(indexes)                  # (T, N)
    moving_averages = []
    for k in range(T - K + 1):
        probs_window_softmax = F.softmax(torch.from_numpy(probs[k:k + K, :]), -1)   # (K, N, C), per window
        indexes_window = indexes[k:k + K, :]
        rere = []                                # each (N, C) in dataset order
        for i in range(K):
            re = torch.zeros_like(probs_window_softmax[0, :, :])
            rere.append(re.index_add(0, torch.from_numpy(indexes_window[i]), probs_window_softmax[i, :]))
        kd = []
        for j in range(K - 1):
            log = torch.log(rere[j + 1] + 1e-8) - torch.log(rere[j] + 1e-8)
            kd.append(torch.abs(torch.multiply(rere[j + 1], log.nan_to_num(0))).sum(axis=1))
        kd = torch.stack(kd)                     # (K-1, N) c_k .. c_{k+K-2}
        average = kd.mean(0)
        diffs = [kd[ii] - average for ii in range(K - 1)]
        norm = torch.norm(torch.stack(diffs), dim=0)
        moving_averages.append(norm * decay * (1 - decay) ** (T - K - k))
    score = torch.sum(torch.stack(moving_averages), 0)
    score.argsort()                              # data_mask, as published
    torch.sort(score)                            # sorted scores, as published
    return score.numpy()


def ours_tdds(path, T, K, decay):
    from utils.science.scores import Dynamics, compute_score
    score = compute_score(Dynamics(path, T), 'tdds', T, K, decay, progress=False)   # (N,) dataset order
    np.argsort(score, kind='stable')             # data_mask, as importance_evaluation.py does
    return score


def run_script(path, T, K, decay, mask_path):
    """python importance_evaluation.py ... as __main__ in this process; its dataset-order score."""
    import runpy
    sys.argv = ['importance_evaluation.py', '--dynamics_path', path, '--mask_path', mask_path,
                '--trajectory_len', str(T), '--window_size', str(K), '--decay', str(decay),
                '--no_plot', '--device', 'cpu']
    try:
        runpy.run_path(os.path.join(ROOT, 'importance_evaluation.py'), run_name='__main__')
    except SystemExit as e:
        if e.code:
            raise
    return np.load(os.path.join(mask_path, f'dataset_score_win{K}_ep{T}.npy'))


def worker(mode, path, T, K, decay, score_out):
    """Fresh process: import, note the baseline, score, print one JSON line of figures.
    Peaks are read before the interpreter shuts down (torch's shutdown alone adds ~130 MB)."""
    sys.path.insert(0, ROOT)
    import torch  # noqa: F401  (every scorer needs it: part of the baseline)
    if mode != 'published':
        import tqdm  # noqa: F401

        import importance_evaluation  # noqa: F401  (the script's and the library's imports)
        import utils.science.features  # noqa: F401
    t_ready = time.time()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if mode == 'script':
        score = run_script(path, T, K, decay, os.path.join(os.path.dirname(score_out), 'mask'))
    else:
        score = {'published': published_tdds, 'library': ours_tdds}[mode](path, T, K, decay)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(score_out, score)
    print(json.dumps({'t_ready': t_ready, 'seconds': seconds, 'base': base, 'peak': peak}))


# --------------------------------------------------------------------------------------------------
# Measuring in fresh processes
# --------------------------------------------------------------------------------------------------
def run_worker(script, mode, *args):
    """`script --worker mode args...` (this file, or a benchmark reusing its workers) in a fresh
    process from the repository root: its figures plus the wall time and start-up seen from here."""
    cmd = [sys.executable, script, '--worker', mode, *map(str, args)]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed with exit code {p.returncode}:\n"
                 f"{(p.stdout + p.stderr)[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r.update(wall=wall, startup=r['t_ready'] - t0)
    return r


def measure(args, folder):
    """One round: published, library, script, each in a fresh process. Scores land in `folder`."""
    T, K, d = args.trajectory_len, args.window_size, args.decay
    pub = run_worker(__file__, 'published', folder, T, K, d, os.path.join(folder, 'bench_published.npy'))
    lib = run_worker(__file__, 'library', folder, T, K, d, os.path.join(folder, 'bench_library.npy'))
    script = run_worker(__file__, 'script', folder, T, K, d, os.path.join(folder, 'bench_script.npy'))
    return {'published': pub, 'library': lib, 'script': script}


def cpu_jiffies():
    """(total, steal) CPU time counters of /proc/stat, or None where there is none. Steal is time
    the hypervisor gave this VM's cores to others: a round with much of it is not to be trusted."""
    try:
        with open('/proc/stat') as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v), v[7]
    except (OSError, ValueError, IndexError):
        return None


def relative_error(a, b):
    """max_i |a_i - b_i| / |b_i| (0 where both are 0)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def compare(ours, ref, rate=0.9):
    """Relative error of the scores, identical ranking positions, overlap of the kept sets at `rate`."""
    ra, rb = np.argsort(ours, kind='stable'), np.argsort(ref, kind='stable')
    keep = len(ref) - int(rate * len(ref))
    overlap = len(np.intersect1d(ra[len(ra) - keep:], rb[len(rb) - keep:])) / max(1, keep)
    return relative_error(ours, ref), int((ra == rb).sum()), overlap


def fmt(x, width=12, digits=2):
    return f"{x:>{width}.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--n', type=int, default=50000, help='N samples')
    parser.add_argument('--classes', type=int, default=100, help='C classes')
    parser.add_argument('--trajectory_len', type=int, default=30, help='T epochs (all recorded, all used)')
    parser.add_argument('--window_size', type=int, default=10, help='K')
    parser.add_argument('--decay', type=float, default=0.9, help='beta')
    parser.add_argument('--repeat', type=int, default=2, help='rounds of measurements; the last is reported')
    parser.add_argument('--dir', type=str, default=None,
                        help='where the temporary dynamics folder is made (default: the system temp dir)')
    parser.add_argument('--keep', action='store_true', help='keep the dynamics folder afterwards')
    parser.add_argument('--worker', nargs=6, metavar='ARG', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, path, T, K, decay, out = args.worker
        return worker(mode, path, int(T), int(K), float(decay), out)
    if args.repeat < 1:
        parser.error('--repeat must be at least 1')

    N, C, T, K = args.n, args.classes, args.trajectory_len, args.window_size
    folder = tempfile.mkdtemp(prefix='bench_scoring_', dir=args.dir)
    try:
        t0 = time.time()
        write_published(folder, N, C, T)
        print(f"dynamics: N={N} C={C} T={T} float32 logits, published shuffled layout, "
              f"{N * C * 4 * T / MB:.0f} MB in {folder} (written in {time.time() - t0:.1f} s)")
        print(f"scoring: TDDS K={K} decay={args.decay}; {os.cpu_count()} CPU cores, torch's default threads")
        rounds = []
        for r in range(args.repeat):
            j0 = cpu_jiffies()
            rounds.append(measure(args, folder))
            j1 = cpu_jiffies()
            steal = f"{100 * (j1[1] - j0[1]) / max(1, j1[0] - j0[0]):.1f}%" if j0 and j1 else 'n/a'
            sec = {k: v['seconds'] for k, v in rounds[-1].items()}
            print(f"round {r + 1}/{args.repeat}: published {sec['published']:.2f} s, library {sec['library']:.2f} s, "
                  f"script {sec['script']:.2f} s (compute) | load average {os.getloadavg()[0]:.2f}, "
                  f"CPU steal {steal}")
        m = rounds[-1]
        print(f"the page cache cannot be dropped here: figures are from round {args.repeat} of {args.repeat} "
              f"(warm cache), each in a fresh process")
        print(f"{'':34}{'compute s':>12}{'end-to-end s':>14}{'startup s':>12}"
              f"{'peak MB':>12}{'base MB':>12}{'net MB':>12}")
        names = {'published': 'published approach (re-impl.)', 'library': 'ours: compute_score (library)',
                 'script': 'ours: importance_evaluation.py'}
        for key, name in names.items():
            x = m[key]
            print(f"{name:34}{fmt(x['seconds'])}{fmt(x['wall'], 14)}{fmt(x['startup'])}"
                  f"{fmt(x['peak'] / MB, digits=1)}{fmt(x['base'] / MB, digits=1)}"
                  f"{fmt((x['peak'] - x['base']) / MB, digits=1)}")
        pub, lib, scr = m['published'], m['library'], m['script']
        net = {k: max(m[k]['peak'] - m[k]['base'], 1) for k in m}
        print(f"speed-up vs published: compute library {pub['seconds'] / lib['seconds']:.1f}x, script "
              f"{pub['seconds'] / scr['seconds']:.1f}x (target >= 10x); end to end (whole processes) "
              f"library {pub['wall'] / lib['wall']:.1f}x, script {pub['wall'] / scr['wall']:.1f}x")
        print(f"memory vs published: net peak library {net['library'] / net['published']:.3f}x, script "
              f"{net['script'] / net['published']:.3f}x (target <= 0.25x); raw peak library "
              f"{lib['peak'] / pub['peak']:.3f}x, script {scr['peak'] / pub['peak']:.3f}x")
        ref = np.load(os.path.join(folder, 'bench_published.npy'))
        for name, path in (('library', os.path.join(folder, 'bench_library.npy')),
                           ('script', os.path.join(folder, 'bench_script.npy'))):
            err, same, overlap = compare(np.load(path), ref)
            print(f"agreement {name} vs published: max relative error of S {err:.2e} (tolerance 1e-4); "
                  f"ranking identical at {same}/{N} positions; kept set at pruning rate 0.9: "
                  f"{100 * overlap:.2f}% the same")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    main()
