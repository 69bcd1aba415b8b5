"""Dynamic pruning in train.py (--dynamic infobatch|rs2): the selections against the definitions of
docs/METHODS.md on hand-made scores, the weighted loss on a model whose gradient is known in closed
form, a small InfoBatch run checked epoch by epoch from its records, exact resume after a SIGTERM in
the middle of a pruned epoch, torchrun, and the refusals."""
import json
import math
import os
import signal
import sys

import numpy as np
import pytest
import torch

import train
import train_subset
from conftest import run_script, write_cifar
from utils.protocol import epoch_end
from utils.args import without_unused
from utils.training.dynamic_pruning import (DynamicSampler, EpochCosine, infobatch_select, is_pruned, keep_fraction, rs2_permutation, rs2_select)
from utils.training.loop import train_one_epoch
from utils.errors import Preempted, UserError
from utils.protocol.fingerprint import fingerprint_diffs
from utils.science.scores import Dynamics

N, EPOCHS, BATCH = 160, 4, 32    # cifar10_dir's training set; delta 0.875: epochs 0..2 pruned, 3 not


def train_argv(data_dir, save, *extra):
    return ["--data_path", data_dir, "--dataset", "cifar10", "--arch", "resnet20", "--epochs", str(EPOCHS),
            "--batch-size", str(BATCH), "--ngpu", "0", "--save_path", str(save), *extra]


def records(save, e):
    folder = os.path.join(save, "selection")
    out = {t: np.load(os.path.join(folder, f"{e}_{t}.npy")) for t in ("Index", "Weight")}
    score = os.path.join(folder, f"{e}_Score.npy")
    if os.path.exists(score):
        out["Score"] = np.load(score)
    return out


def metrics(save):
    with open(os.path.join(save, "metrics.json")) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- the selections

def test_infobatch_hand_computed_selection():
    scores = torch.tensor([0.1, 0.2, 5.0, 6.0, 0.3, 0.4, 4.0, 0.0])    # mean 2: W = {0, 1, 4, 5, 7}
    idx, w = infobatch_select(scores, epoch=1, epochs=4, ratio=0.5, delta=0.875, seed=3)
    kept_w = sorted(set(idx.tolist()) & {0, 1, 4, 5, 7})
    assert len(kept_w) == 2                                              # floor(0.5 * 5)
    assert sorted(idx.tolist()) == idx.tolist() == sorted([2, 3, 6] + kept_w)
    assert dict(zip(idx.tolist(), w.tolist())) == {**{i: 1.0 for i in (2, 3, 6)}, **{i: 2.0 for i in kept_w}}
    again = infobatch_select(scores, epoch=1, epochs=4, ratio=0.5, delta=0.875, seed=3)
    assert torch.equal(again[0], idx) and torch.equal(again[1], w)      # a pure function
    draws = {tuple(infobatch_select(scores, e, 4, 0.5, 0.875, s)[0].tolist()) for e in (0, 1, 2) for s in range(4)}
    assert len(draws) > 1                                               # the draw depends on (seed, epoch)
    idx, w = infobatch_select(scores, epoch=3, epochs=4, ratio=0.5, delta=0.875, seed=3)   # 3 + 1 > 3.5
    assert idx.tolist() == list(range(8)) and w.tolist() == [1.0] * 8
    idx, w = infobatch_select(torch.full((8,), 3.0), epoch=0, epochs=4, ratio=0.5, delta=0.875, seed=3)
    assert idx.tolist() == list(range(8)) and w.tolist() == [1.0] * 8  # equal scores: nothing below the mean


def test_infobatch_keep_fraction_floor_and_pruned_epochs():
    assert keep_fraction(0.5) == 0.5 and keep_fraction(0.95) == 0.1 and keep_fraction(0.0) == 1.0
    scores = torch.cat([torch.zeros(20), torch.full((5,), 9.0)])        # W = the 20 zeros
    idx, w = infobatch_select(scores, 0, 10, 0.95, 0.875, seed=0)
    assert len(idx) == 5 + 2 and sorted(w.tolist()) == [1.0] * 5 + [10.0] * 2   # floor(0.1 * 20) at 1/0.1
    assert [e for e in range(200) if is_pruned(e, 200, 0.875)] == list(range(175))
    assert [e for e in range(10) if is_pruned(e, 10, 0.875)] == list(range(8))


@pytest.mark.parametrize("n,ratio", [(10, 0.3), (10, 0.05), (11, 0.5), (12, 0.5)])
def test_rs2_sizes_each_sample_once_per_pass_new_order(n, ratio):
    per = n - int(ratio * n)
    epochs = [rs2_select(n, per, e, seed=5) for e in range(3 * n)]
    assert all(len(e) == per and len(set(e.tolist())) == per for e in epochs)   # never twice in one epoch
    stream = torch.cat(epochs)
    passes = [stream[p * n:(p + 1) * n] for p in range(len(stream) // n)]
    assert all(sorted(p.tolist()) == list(range(n)) for p in passes)    # once before any twice
    assert len({tuple(p.tolist()) for p in passes}) == len(passes)       # a new order every pass
    cache = {}
    assert all(torch.equal(rs2_select(n, per, e, seed=5, cache=cache), epochs[e]) for e in range(3 * n))
    assert torch.equal(rs2_select(n, per, 17, seed=5), epochs[17])       # a pure function of (seed, epoch)
    assert not torch.equal(rs2_select(n, per, 0, seed=6), epochs[0])
    assert torch.equal(passes[0], rs2_permutation(n, 0, seed=5))         # pass 0: its permutation as drawn


def test_sampler_two_epochs_by_hand(tmp_path):
    """Epoch 0 trains all at the initial score 3; the losses it observes select epoch 1."""
    s = DynamicSampler("infobatch", 8, 4, 0.5, 0.875, seed=1, device=torch.device("cpu"),
                       folder=str(tmp_path / "selection"))
    assert s.begin_epoch(0).tolist() == list(range(8)) and s.weights.tolist() == [1.0] * 8
    losses = torch.tensor([0.1, 0.2, 5.0, 6.0, 0.3, 0.4, 4.0, 0.0])
    s.observe(torch.tensor([3, 1, 0, 2]), losses[[3, 1, 0, 2]])         # two batches, in any order
    s.observe(torch.tensor([7, 5, 6, 4]), losses[[7, 5, 6, 4]])
    s.sync()
    idx = s.begin_epoch(1)
    assert torch.equal(idx, infobatch_select(losses, 1, 4, 0.5, 0.875, seed=1)[0])
    assert len(idx) == 3 + 2 and s.weights[idx].sum().item() == 3 * 1.0 + 2 * 2.0
    assert s.weights[[i for i in range(8) if i not in idx.tolist()]].tolist() == [1.0] * 3   # untrained: 1
    r0, r1 = records(tmp_path, 0), records(tmp_path, 1)
    assert r0["Score"].tolist() == [3.0] * 8 and r0["Index"].tolist() == list(range(8))
    assert np.array_equal(r1["Score"], losses.numpy()) and np.array_equal(r1["Index"], idx.numpy())
    assert r1["Weight"].dtype == np.float32 and sorted(r1["Weight"].tolist()) == [1.0] * 3 + [2.0] * 2


def test_weighted_loss_gradient_by_hand():
    """loss = mean_i w_i * CE_i. A zero-initialised linear model has p = 1/C for every sample, so
    dL/dW = mean_i w_i (1/C - onehot(y_i)) x_i^T; one SGD step of lr 1 moves W by minus that.
    observe gets the unweighted losses, log C each."""
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0], [2.0, 2.0]])
    y, w = torch.tensor([0, 1, 1, 2]), torch.tensor([1.0, 2.0, 1.0, 10.0])

    class Train:
        def batches(self, batches, gen):
            for b in batches:
                yield x[b], y[b], b

    class Data:
        train = Train()

    model = torch.nn.Linear(2, 3, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    seen = []
    train_one_epoch(model, Data(), [torch.arange(4)], opt, sched, None, sample_weights=w,
                    observe=lambda idx, losses: seen.append(losses.detach().clone()))
    expected = sum(w[i] * torch.outer(torch.full((3,), 1 / 3) - torch.eye(3)[y[i]], x[i]) for i in range(4)) / 4
    assert torch.allclose(model.weight.detach(), -expected, atol=1e-6)
    assert torch.allclose(seen[0], torch.full((4,), math.log(3)))


def test_epoch_cosine_follows_epoch_progress():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    s = EpochCosine(opt, epochs=4)
    got = []
    for e, steps in enumerate([5, 2, 7, 3]):   # epochs of any length
        s.begin_epoch(e, steps)
        for j in range(steps):
            got.append((e + j / steps, opt.param_groups[0]["lr"]))
            opt.step()
            s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    for t, lr in got:
        assert lr == pytest.approx(0.05 * (1 + math.cos(math.pi * t / 4)), abs=1e-12)


def test_fingerprint_ignores_unused_dynamic_flags():
    plain = {"--epochs": 3, "--dynamic": None, "--dynamic_ratio": 0.5, "--dynamic_delta": 0.875}
    assert without_unused(plain, "--") == {"--epochs": 3}                 # as a run from before the flags
    assert fingerprint_diffs({"--epochs": 3}, {**plain, "--dynamic_ratio": 0.3}) == []
    rs2 = {**plain, "--dynamic": "rs2"}
    assert fingerprint_diffs(rs2, {**rs2, "--dynamic_delta": 0.5}) == []  # RS2 has no delta
    ib = {**plain, "--dynamic": "infobatch"}
    assert fingerprint_diffs(ib, {**ib, "--dynamic_delta": 0.5}) == ["--dynamic_delta 0.875 (now 0.5)"]
    assert fingerprint_diffs(ib, {**ib, "--dynamic_ratio": 0.3}) == ["--dynamic_ratio 0.5 (now 0.3)"]


# ----------------------------------------------------------------------------- a small InfoBatch run

@pytest.fixture(scope="module")
def infobatch_run(cifar10_dir, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("ib") / "run")
    train.main(train_argv(cifar10_dir, save, "--dynamic", "infobatch", "--dynamics"))
    return save


def test_infobatch_run_epoch_by_epoch(infobatch_run):
    save = infobatch_run
    k = keep_fraction(0.5)
    r = [records(save, e) for e in range(EPOCHS)]
    assert sorted(os.listdir(os.path.join(save, "selection"))) == sorted(
        f"{e}_{t}.npy" for e in range(EPOCHS) for t in ("Index", "Weight", "Score"))
    assert r[0]["Index"].tolist() == list(range(N)) and (r[0]["Weight"] == 1).all() and (r[0]["Score"] == 3).all()
    for e in (1, 2):                                                     # the pruned epochs
        score, idx, w = r[e]["Score"], r[e]["Index"], r[e]["Weight"]
        well = score.astype(np.float64) < score.astype(np.float64).mean()
        assert set(np.flatnonzero(~well)) <= set(idx)                    # every sample at or above the mean
        assert (w[~well[idx]] == 1).all()
        assert well[idx].sum() == int(k * well.sum()) > 0                # floor(k |W|) of W...
        assert (w[well[idx]] == np.float32(1 / k)).all()                 # ...at weight 1/k
        assert len(idx) < N
    assert r[3]["Index"].tolist() == list(range(N)) and (r[3]["Weight"] == 1).all()   # the unpruned tail
    for e in range(EPOCHS - 1):   # trained samples take their epoch-e loss, the others keep their score
        trained = r[e]["Index"]
        rest = np.setdiff1d(np.arange(N), trained)
        assert np.array_equal(r[e + 1]["Score"][rest], r[e]["Score"][rest])
        assert np.array_equal(np.load(f"{save}/npy/{e}_Index.npy"), np.sort(trained))   # --dynamics: what was trained
        assert np.array_equal(r[e + 1]["Score"][np.sort(trained)], np.load(f"{save}/npy/{e}_Loss.npy"))
    m = metrics(save)
    assert m["finished"] and (m["method"], m["dynamic_ratio"], m["subset_rate"], m["dynamic_delta"]) == \
        ("infobatch", 0.5, 0.5, 0.875)
    assert [h["samples"] for h in m["history"]] == [len(x["Index"]) for x in r]
    assert [h["steps"] for h in m["history"]] == [math.ceil(len(x["Index"]) / BATCH) for x in r]
    assert m["steps"] == sum(h["steps"] for h in m["history"])
    for h in m["history"]:    # after epoch e the schedule is at e + 1 of E, whatever the epochs' lengths
        assert h["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * (h["epoch"] + 1) / EPOCHS)), abs=1e-9)


def test_scorer_refuses_dynamics_with_missing_samples(infobatch_run):
    with pytest.raises(UserError, match=r"epoch 1 holds \d+ of the 160 samples .*--dynamic"):
        Dynamics(os.path.join(infobatch_run, "npy"), 3)
    Dynamics(os.path.join(infobatch_run, "npy"), 1)                      # epoch 0 holds every sample


# ----------------------------------------------------------------------------- exact resume

@pytest.fixture
def keep_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("method", ["infobatch", "rs2"])
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(method, infobatch_run, cifar10_dir, tmp_path,
                                                            monkeypatch, keep_signal_handlers):
    """A SIGTERM right after a --save_every_steps checkpoint in epoch 1 (InfoBatch: a pruned epoch,
    weights 2) stops the run at the next step; --resume then gives the uninterrupted run's records,
    dynamics, curves and model, byte for byte."""
    extra = ("--dynamic", method, "--dynamic_ratio", "0.5", "--dynamics")
    if method == "infobatch":
        ref = infobatch_run
    else:
        ref = str(tmp_path / "ref")
        train.main(train_argv(cifar10_dir, ref, *extra))
        m = metrics(ref)
        assert [h["samples"] for h in m["history"]] == [N // 2] * EPOCHS and m["steps"] == EPOCHS * 3
        assert m["history"][-1]["lr"] == pytest.approx(0, abs=1e-12) and (m["method"], m["num_train_samples"]) == ("rs2", N // 2)
        stream = np.concatenate([records(ref, e)["Index"] for e in range(EPOCHS)])
        assert all(sorted(stream[p * N:(p + 1) * N]) == list(range(N)) for p in range(2))
        assert all((records(ref, e)["Weight"] == 1).all() for e in range(EPOCHS))
        with pytest.raises(UserError, match=r"epoch 0 holds 80 of the 160 samples"):
            Dynamics(os.path.join(ref, "npy"), 1)                        # every epoch a subset
    cut = str(tmp_path / "cut")
    save_torch = epoch_end.save_torch

    def save_then_signal(path, obj):
        save_torch(path, obj)
        if obj["epoch"] == 1 and obj.get("step") == 1:        # the periodic checkpoint after step 1 of epoch 1
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(epoch_end, "save_torch", save_then_signal)
    argv = train_argv(cifar10_dir, cut, *extra, "--save_every_steps", "1")
    with pytest.raises(Preempted):
        train.main(argv)
    ck = torch.load(os.path.join(cut, "checkpoint.pth.tar"), weights_only=True)
    assert (ck["epoch"], ck["step"]) == (1, 2) and ck["sampler"]["epoch"] == 1
    assert np.array_equal(ck["sampler"]["indices"].numpy(), records(ref, 1)["Index"])
    monkeypatch.setattr(epoch_end, "save_torch", save_torch)
    train.main(argv + ["--resume"])

    a, b = metrics(ref), metrics(cut)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "samples", "steps"):
        assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]], key
    for sub in ("selection", "npy"):
        files = sorted(f for f in os.listdir(os.path.join(ref, sub)) if f.endswith(".npy"))
        assert files == sorted(f for f in os.listdir(os.path.join(cut, sub)) if f.endswith(".npy"))
        for f in files:
            with open(os.path.join(ref, sub, f), "rb") as x, open(os.path.join(cut, sub, f), "rb") as y:
                assert x.read() == y.read(), f
    ck_a, ck_b = (torch.load(os.path.join(s, "checkpoint.pth.tar"), weights_only=True) for s in (ref, cut))
    assert all(torch.equal(ck_a["model"][k], ck_b["model"][k]) for k in ck_a["model"])
    if method == "infobatch":
        assert torch.equal(ck_a["sampler"]["scores"], ck_b["sampler"]["scores"])


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("extra,fragment", [
    (("--dynamic", "rs2", "--dynamic_ratio", "1.0"), "--dynamic_ratio"),
    (("--dynamic", "rs2", "--dynamic_ratio", "-0.1"), "--dynamic_ratio"),
    (("--dynamic", "infobatch", "--dynamic_delta", "0"), "--dynamic_delta"),
    (("--dynamic", "infobatch", "--dynamic_delta", "1.5"), "--dynamic_delta"),
    (("--dynamic", "rs2", "--evaluate"), "--evaluate"),
    (("--dynamic", "rs2", "--dynamics", "--dynamics_format", "contrib"), "contrib"),
])
def test_bad_dynamic_flags_refused_before_anything_is_written(extra, fragment, tmp_path):
    save = tmp_path / "run"
    with pytest.raises(UserError, match=fragment):
        train.main(train_argv("./nowhere", save, *extra))
    assert not save.exists()


def test_unknown_method_and_train_subset_refuse_in_one_line(capsys):
    for main, argv in ((train.main, ["--dynamic", "infobath"]), (train_subset.main, ["--dynamic", "rs2"])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and "--dynamic" in err[0]


# ----------------------------------------------------------------------------- torchrun

@pytest.mark.slow
@pytest.mark.parametrize("method", ["infobatch"])   # (rs2 passes too; left out for the suite's time)
def test_torchrun_gathers_scores_and_selects_alike(method, tmp_path):
    """Two processes: each trains its share of one selection (the dynamics, merged over ranks, hold each
    selected sample once and no other), and InfoBatch's next scores hold every rank's losses."""
    n = 65
    data = write_cifar(str(tmp_path / "data"), "cifar10", n, 40)
    save = str(tmp_path / "two")
    run_script(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "train.py", *train_argv(data, save, "--dynamic", method, "--dynamics"),
               env={"OMP_NUM_THREADS": "1"}, timeout=300)
    m = metrics(save)
    assert m["finished"] and "x2" in open(os.path.join(save, "log_seed_42.txt")).read()
    for e in range(EPOCHS):
        idx = records(save, e)["Index"]
        assert m["history"][e]["samples"] == len(idx)
        assert np.array_equal(np.load(f"{save}/npy/{e}_Index.npy"), np.sort(idx))
        if method == "infobatch" and e + 1 < EPOCHS:
            assert np.array_equal(records(save, e + 1)["Score"][np.sort(idx)], np.load(f"{save}/npy/{e}_Loss.npy"))
    assert len(records(save, 1)["Index"]) < n
