"""Distillation from the full-data model (train_subset.py --teacher): the loss is the formula, --kd_alpha 0
is exactly the run without a teacher, with --kd_alpha 1 the student follows the teacher (its
predictions, mistakes included), a teacher of another training set is refused before anything is
written, and the cost ledger charges the teacher."""
import json
import os

import numpy as np
import pytest
import torch

import train
from conftest import assert_user_error, cli
from utils.training.distill import kd_loss

COMMON = ["--dataset", "digits", "--arch", "resnet20", "--ngpu", "0"]


def test_loss_is_the_formula():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 5, generator=g, dtype=torch.float64), 3 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    s, t, yy = zs.numpy(), zt.numpy(), y.numpy()
    for alpha, tau in ((0.0, 4.0), (0.5, 4.0), (1.0, 2.0)):
        def softmax(a):
            e = np.exp(a - a.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)
        ce = -np.log(softmax(s)[np.arange(6), yy]).mean()
        ps, pt = softmax(s / tau), softmax(t / tau)
        kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()   # KL(teacher || student), batch mean
        losses = torch.nn.functional.cross_entropy(zs, y, reduction="none")
        got = kd_loss(zs, zt, losses, alpha, tau).item()
        assert got == pytest.approx((1 - alpha) * ce + alpha * tau ** 2 * kl, rel=1e-12)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A teacher with mistakes to follow, by construction: a full-data digits run of one epoch, whose
    model_best.pth.tar's output classes are then shifted by one (the last layer's rows rolled: class c's
    logit becomes class c + 1 mod 10's). It predicts (its source's prediction + 1) mod 10 on every image,
    so it errs on every test image that the one-epoch model gets right, and on most of the others,
    whatever accuracy one epoch reaches on this CPU's kernels (they round differently on AMD and Intel).
    Saved beside the run's files, whose fingerprint and metrics it keeps."""
    save = str(tmp_path_factory.mktemp("kd") / "full")
    cli("train.py", *COMMON, "--epochs", "1", "--batch-size", "32", "--save_path", save)
    ck = torch.load(os.path.join(save, "model_best.pth.tar"), weights_only=True)
    for name in ("linear.weight", "linear.bias"):
        ck["model"][name] = ck["model"][name].roll(1, dims=0)
    torch.save(ck, os.path.join(save, "shifted.pth.tar"))
    return os.path.join(save, "shifted.pth.tar")


def subset(save, *extra, epochs=8):
    """A random 10% of the digits (144 images), 8 epochs of 5 steps; its metrics."""
    cli("train_subset.py", *COMMON, "--epochs", epochs, "--batch-size", "32", "--subset_rate", "0.9",
        "--selection", "random", "--save_path", save, *extra)
    with open(os.path.join(save, "metrics.json")) as f:
        return json.load(f)


def logits_on_test_set(checkpoint):
    """The logits of a checkpoint's model on the digits test set (360 images)."""
    from models import create_model
    from utils.training.data import load_data
    data = load_data(train.parse_args(COMMON), torch.device("cpu"))
    model = create_model("resnet20", 10).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        return torch.cat([model(x) for x, _, _ in data.test.batches([torch.arange(len(data.test))])]), data.test.labels


def test_alpha_zero_is_the_run_without_teacher_and_alpha_one_follows_the_teacher(teacher, tmp_path):
    plain = subset(tmp_path / "plain")
    zero = subset(tmp_path / "zero", "--teacher", teacher, "--kd_alpha", "0")
    key = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [[h[k] for k in key] for h in plain["history"]] == [[h[k] for k in key] for h in zero["history"]]
    a, b = (torch.load(tmp_path / d / "checkpoint.pth.tar", weights_only=True)["model"] for d in ("plain", "zero"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... and the teacher is used: with alpha 1 the student learns the teacher's function. On the test
    # set it is closer to the teacher (KL at the temperature, what distillation minimises), agrees with
    # its predictions more, and repeats its mistakes more, than the same run without it: comparisons of
    # two runs, each against the other, never against an accuracy a CPU happens to give. (Measured on
    # an Intel CPU, the teacher wrong on 98% of the test set: KL 0.016 vs 0.16, agreement 0.58 vs 0.03,
    # mistakes repeated 0.59 vs 0.03.)
    one = subset(tmp_path / "one", "--teacher", teacher, "--kd_alpha", "1")
    zt, y = logits_on_test_set(teacher)
    source, _ = logits_on_test_set(os.path.join(os.path.dirname(teacher), "model_best.pth.tar"))
    assert torch.equal(zt.argmax(1), (source.argmax(1) + 1) % 10)     # the construction: shifted everywhere
    wrong = zt.argmax(1) != y
    assert (wrong | (source.argmax(1) != y)).all()     # its mistakes include every image its source got right
    follow = {}
    for run in ("plain", "one"):
        z, _ = logits_on_test_set(tmp_path / run / "checkpoint.pth.tar")
        kl = torch.nn.functional.kl_div(torch.log_softmax(z / 4, 1), torch.log_softmax(zt / 4, 1), log_target=True,
                                        reduction="batchmean").item()
        agree = z.argmax(1) == zt.argmax(1)
        follow[run] = (kl, agree.float().mean().item(), agree[wrong].float().mean().item())
    assert follow["one"][0] < follow["plain"][0] / 2, follow
    assert follow["one"][1] > follow["plain"][1] + 0.1 and follow["one"][2] > follow["plain"][2] + 0.1, follow
    # metrics.json records the teacher's costs
    m = json.load(open(tmp_path / "one" / "metrics.json"))
    full = json.load(open(os.path.join(os.path.dirname(teacher), "metrics.json")))
    assert m["teacher_train_seconds"] == full["train_seconds"] > 0 and m["kd_alpha"] == 1.0 == one["kd_alpha"]
    assert all(0 < h["teacher_seconds"] < h["train_seconds"] for h in m["history"])
    ck = torch.load(tmp_path / "one" / "checkpoint.pth.tar", weights_only=True)
    assert ck["fingerprint"]["content of --teacher"] == m["teacher_sha256"]
    assert "--teacher" not in ck["fingerprint"]                              # the path may move, its content may not


def refused(save, *extra, fragment):
    """train_subset.py with these flags ends with one error line naming `fragment`, writing nothing."""
    p = cli("train_subset.py", *COMMON, "--epochs", "1", "--subset_rate", "0.9", "--selection", "random",
            "--save_path", save, *extra, check=False)
    assert_user_error(p, fragment)
    assert not os.path.exists(save)


def test_foreign_teacher_refused(teacher, tmp_path):
    ck = torch.load(teacher, weights_only=True)
    ck["fingerprint"] = dict(json.load(open(os.path.join(os.path.dirname(teacher), "folder.json")))["fingerprint"])
    cases = {"labels": ({"training labels": "0" * 64}, "other training labels"),
             "dataset": ({"--dataset": "cifar10"}, "cifar10"), "noise": ({"--label_noise": 0.2}, "--label_noise 0.2")}
    for what, (change, fragment) in cases.items():
        path = tmp_path / f"{what}.pth.tar"
        torch.save({**ck, "fingerprint": {**ck["fingerprint"], **change}}, path)
        refused(tmp_path / what, "--teacher", path, "--kd_alpha", "1", fragment=fragment)
    from models import create_model   # the right fingerprint, the wrong number of classes
    torch.save({**ck, "model": create_model("resnet20", 7).state_dict()}, tmp_path / "classes.pth.tar")
    refused(tmp_path / "classes", "--teacher", tmp_path / "classes.pth.tar", "--kd_alpha", "1",
            fragment="do not fit 10 classes")
    for extra, message in ((["--teacher", teacher], "needs --kd_alpha"), (["--kd_alpha", "0.5"], "needs --teacher"),
                           (["--teacher", teacher, "--kd_alpha", "1.5"], "[0, 1]"),
                           (["--teacher", str(tmp_path), "--kd_alpha", "1"], "no such file")):
        refused(tmp_path / "flags", *extra, fragment=message)


def test_ledger_charges_the_teacher(tmp_path):
    """summarize: the teacher's own training is charged (unless it is the run whose dynamics were scored
    and already charged); its forward passes are inside the subset's train_seconds."""
    from scripts.summarize import add_costs, run_label
    full = {"label": "full", "path": "/r/full", "train_seconds": 100.0, "completed_epochs": 10, "epochs": 10,
            "dataset": "digits", "arch": "resnet20"}
    kd = {"selection": "random", "method": "random", "subset_rate": 0.9, "teacher": "/r/full/model_best.pth.tar",
          "teacher_run": "/r/full", "teacher_train_seconds": 100.0, "train_seconds": 30.0, "path": "/r/kd",
          "dataset": "digits", "arch": "resnet20", "history": [{"teacher_seconds": 4.0}, {"teacher_seconds": 6.0}]}
    tdds_kd = {**kd, "selection": "top", "method": "tdds", "path": "/r/tk", "score_info": {"dynamics_run": "/r/full"}}
    for m in (full, kd, tdds_kd):
        m["label"] = run_label(m) if m is not full else "full"
        m["is_full"] = m is full
    add_costs([full, kd, tdds_kd])
    assert kd["label"] == "random-kd" and tdds_kd["label"] == "tdds-kd"
    assert kd["cost_teacher"] == pytest.approx(1.0) and kd["cost_total"] == pytest.approx(1.3)
    assert kd["teacher_forward_seconds"] == pytest.approx(10.0)
    assert tdds_kd["cost_teacher"] == 0.0 and tdds_kd["cost_total"] == pytest.approx(1.0 + 0.3)
