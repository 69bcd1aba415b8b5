"""Several processes (torchrun, gloo on CPU) give the same files as one, every sample recorded exactly
once per epoch, and a killed torchrun run resumes exactly (byte-identical files, the same checkpoint
state); plus make_batches, the per-rank split."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import (ROOT, assert_same_checkpoint, assert_user_error, cli, folder_digest, label_prior, run_script,
                      write_cifar)
from utils.training.data import make_batches
from utils.errors import UserError

N_TRAIN, N_TEST, BATCH, EPOCHS = 65, 40, 32, 4    # 65 = 2 * 32 + 1: the last global batch (1 < 2) is merged
ENV = {"OMP_NUM_THREADS": "1"}                    # torchrun sets it too; the same for the 1-process run


# ----------------------------------------------------------------------------- helpers

def write_easy_cifar10(root, n_train, n_test):
    """write_cifar's layout, with images a few training steps learn: 4 classes, each a flat colour plus
    noise (crop- and flip-invariant), so one- and two-process training accuracies are both near 100%."""
    write_cifar(root, "cifar10", n_train, n_test)
    rng = np.random.default_rng(0)
    palette = np.array([[215, 40, 40], [40, 215, 40], [40, 40, 215], [215, 215, 40]])
    folder = os.path.join(root, "cifar-10-batches-py")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            d = pickle.load(f, encoding="latin1")
        y = np.asarray(d["labels"]) % 4
        x = palette[y][:, :, None, None] + rng.integers(-25, 26, (len(y), 3, 32, 32))
        d["data"], d["labels"] = np.clip(x, 0, 255).astype(np.uint8).reshape(len(y), -1), y.tolist()
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(d, f)
    return root


def train_cmd(data_dir, save, nproc, *extra):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    return [*launch, "train.py", "--dataset", "cifar10", "--data_path", data_dir, "--arch", "resnet20",
            "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--learning_rate", "0.02", "--ngpu", "0",
            "--dynamics", "--save_path", str(save), *extra]


def run(cmd):
    return run_script(*cmd, env=ENV, timeout=300)


def metrics(save):
    with open(os.path.join(save, "metrics.json")) as f:
        return json.load(f)


def cross_entropy(z, y):
    """Plain numpy reference: -log softmax(z)[y] per row, in float64."""
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return lse - z[np.arange(len(y)), y]


def descendants(pid):
    """The pids of every process below `pid` (torchrun's workers, their helpers), from /proc."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            kids = open(f"/proc/{pid}/task/{task}/children").read().split()
        except FileNotFoundError:
            continue
        for kid in map(int, kids):
            out += [kid, *descendants(kid)]
    return out


def kill_after_epochs(cmd, save, k, timeout=300):
    """Start a torchrun command and SIGKILL it, launcher and workers, as soon as metrics.json reports
    >= k completed epochs. True if it was killed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **ENV}, start_new_session=True)
    deadline, killed = time.time() + timeout, False
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if metrics(save)["completed_epochs"] >= k:
                    # the workers first (they would go on writing the folder), found before any dies
                    for pid in [*descendants(proc.pid), proc.pid]:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    killed = True
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return killed


# ----------------------------------------------------------------------------- make_batches

def expected_batches(n, bs, world):
    """Reference count: ceil(n / bs) global batches, one fewer if a last partial batch of fewer than
    `world` samples is merged into the one before."""
    full, rest = divmod(n, bs)
    count = full + (rest > 0)
    return count - 1 if count > 1 and 0 < rest < world else count


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n,bs", [(4, 4), (5, 4), (97, 32), (129, 32), (130, 32), (131, 32), (100, 7),
                                  (64, 64), (65, 64), (1000, 128), (33, 8)])
def test_make_batches_split_over_ranks(n, bs, world):   # every batch size here >= world (smaller: refused, below)
    for seed in (None, 3):
        parts = []
        for r in range(world):   # every rank seeds the order stream identically (engine.fit)
            gen = None if seed is None else torch.Generator().manual_seed(seed)
            parts.append(make_batches(torch.arange(n), bs, gen, r, world))
        counts = {len(p) for p in parts}
        assert counts == {expected_batches(n, bs, world)}, counts          # same number on every rank
        assert all(len(b) > 0 for p in parts for b in p)                   # no empty rank batch
        visited = torch.cat([b for p in parts for b in p])
        assert torch.equal(visited.sort().values, torch.arange(n))         # each index exactly once
        for b in range(len(parts[0])):   # a rank's share: sizes differ by at most one
            sizes = [len(p[b]) for p in parts]
            assert max(sizes) - min(sizes) <= 1
        if seed is None:                 # no generator: global batches in order, item j to rank j % world
            glob = []
            for b in range(len(parts[0])):
                g = torch.empty(sum(len(p[b]) for p in parts), dtype=torch.int64)
                for r, p in enumerate(parts):
                    g[r::world] = p[b]
                glob.append(g)
            assert torch.equal(torch.cat(glob), torch.arange(n))


def test_make_batches_same_permutation_on_every_rank_and_new_one_next_epoch():
    gen = torch.Generator().manual_seed(0)
    epoch0 = torch.cat(make_batches(torch.arange(50), 10, gen, 0, 1))
    epoch1 = torch.cat(make_batches(torch.arange(50), 10, gen, 0, 1))
    assert not torch.equal(epoch0, epoch1) and torch.equal(epoch0.sort().values, torch.arange(50))
    ranks = [make_batches(torch.arange(50), 10, torch.Generator().manual_seed(0), r, 2) for r in (0, 1)]
    for b0, b1, g in zip(ranks[0], ranks[1], epoch0.split(10)):
        assert torch.equal(b0, g[0::2]) and torch.equal(b1, g[1::2])


def test_make_batches_rejects_batch_smaller_than_world():
    with pytest.raises(UserError, match="--batch-size 2 .* processes \\(4\\)"):
        make_batches(torch.arange(10), 2, None, 0, 4)


# ----------------------------------------------------------------------------- torchrun runs

@pytest.fixture(scope="module")
def easy_dir(tmp_path_factory):
    return write_easy_cifar10(str(tmp_path_factory.mktemp("easy")), N_TRAIN, N_TEST)


@pytest.fixture(scope="module")
def one_proc(easy_dir, tmp_path_factory):
    save = tmp_path_factory.mktemp("one") / "run"
    p = cli(*train_cmd(easy_dir, save, 1)[1:])       # one process: this one
    return str(save), p


@pytest.fixture(scope="module")
def two_proc(easy_dir, tmp_path_factory):
    save = tmp_path_factory.mktemp("two") / "run"
    p = run(train_cmd(easy_dir, save, 2))
    return str(save), p


@pytest.mark.slow
def test_torchrun_layout_and_every_sample_once(one_proc, two_proc):
    (one, _), (two, p) = one_proc, two_proc
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))                    # same files as 1 process
    assert sorted(os.listdir(f"{two}/npy")) == sorted(os.listdir(f"{one}/npy"))
    assert sorted(os.listdir(f"{two}/npy")) == sorted(
        [f"{e}_{t}.npy" for e in range(EPOCHS) for t in ("Output", "Loss", "Index")] + ["targets.npy", "manifest.json"])

    # only rank 0 printed and wrote: each epoch line once on stdout and once in the one log
    with open(f"{two}/log_seed_42.txt") as f:
        log = f.read()
    assert "on cpu x2" in log
    for e in range(EPOCHS):
        assert log.count(f"epoch {e:3d}/{EPOCHS}") == 1 and p.stdout.count(f"epoch {e:3d}/{EPOCHS}") == 1
    m = metrics(two)
    assert m["finished"] and m["completed_epochs"] == EPOCHS and m["num_train_samples"] == N_TRAIN
    assert [h["samples"] for h in m["history"]] == [N_TRAIN] * EPOCHS            # summed over ranks

    y = np.load(f"{two}/npy/targets.npy")
    assert y.dtype == np.int64 and y.shape == (N_TRAIN,)
    for e in range(EPOCHS):
        out, loss, idx = (np.load(f"{two}/npy/{e}_{t}.npy") for t in ("Output", "Loss", "Index"))
        assert out.shape == (N_TRAIN, 10) and out.dtype == np.float32
        assert np.array_equal(idx, np.arange(N_TRAIN))
        assert (out != 0).any(1).all() and (loss > 0).all()          # every row written (buffers start at 0)
        # each row holds one sample's logits and loss, with its own label: rows merged from the two
        # ranks are not summed twice or misplaced
        np.testing.assert_allclose(cross_entropy(out, y), loss, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torchrun_learns_as_one_process_does(one_proc, two_proc):
    """Both runs learn the easy training set (flat colours plus noise): their last epoch's training accuracy
    and loss beat the label frequencies alone (label_prior), which the data fix. Not the test accuracy:
    on 40 test images after 12 steps, BatchNorm's running statistics leave it anywhere from 60% to 100%
    with the seed alone (one process, one Intel CPU), and a CPU's rounding moves it as a seed does."""
    prior_acc, prior_loss = label_prior(np.load(f"{one_proc[0]}/npy/targets.npy"))
    for run in (one_proc[0], two_proc[0]):
        last = metrics(run)["history"][-1]
        assert last["train_acc"] > prior_acc and last["train_loss"] < prior_loss, (run, last, prior_acc, prior_loss)


@pytest.mark.slow
def test_torchrun_killed_and_resumed_equals_uninterrupted(easy_dir, two_proc, tmp_path):
    """The uninterrupted two-process run, and the same command SIGKILLed (launcher and workers) after
    2 of its 4 epochs, then resumed: every .npy byte, metrics.json and the final checkpoint (model,
    optimizer, scheduler, both ranks' random streams) are the uninterrupted run's. (The contrib
    format's recorder state across an interruption under torchrun: test_preemption.)"""
    ref = two_proc[0]
    cut = str(tmp_path / "cut")
    cmd = train_cmd(easy_dir, cut, 2)
    assert kill_after_epochs(cmd, cut, 2), "the run finished before it could be killed: make it longer"
    assert not metrics(cut)["finished"] and 2 <= metrics(cut)["completed_epochs"] < EPOCHS
    run(cmd + ["--resume"])

    m_ref, m_cut = metrics(ref), metrics(cut)
    assert m_cut["finished"] and m_cut["completed_epochs"] == EPOCHS
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "samples", "steps"):
        assert [h[key] for h in m_cut["history"]] == [h[key] for h in m_ref["history"]], key
    assert (m_cut["final_acc"], m_cut["best_acc"]) == (m_ref["final_acc"], m_ref["best_acc"])
    with open(f"{cut}/log_seed_42.txt") as f:
        assert "resumed from" in f.read()
    files = sorted(f for f in os.listdir(f"{ref}/npy") if f.endswith(".npy"))
    assert files == sorted(f for f in os.listdir(f"{cut}/npy") if f.endswith(".npy")) and len(files) == 3 * EPOCHS + 1
    differ = [f for f in files if open(f"{ref}/npy/{f}", "rb").read() != open(f"{cut}/npy/{f}", "rb").read()]
    assert differ == []
    assert_same_checkpoint(ref, cut)


@pytest.mark.slow
def test_resume_with_another_number_of_processes_is_refused(easy_dir, two_proc):
    """docs/SCALE.md: resume with the same number of processes. One process on the two-process run's
    folder: one error line naming the processes, nothing changed."""
    save = two_proc[0]
    before = folder_digest(save)
    p = cli(*train_cmd(easy_dir, save, 1)[1:], "--resume", check=False)
    assert_user_error(p, "processes")
    assert folder_digest(save) == before
