"""Promises of docs/FILES.md, docs/METHODS.md, docs/USAGE.md, docs/ROBUSTNESS.md and
docs/AGGRESSIVE_PRUNING.md that no other test checked: the keys of a run folder's files, a subset
run's files and its mean loss weight, finite float flags, digits never mirrored, the summary's batch
size per rate."""
import json
import math
import os
from argparse import Namespace

import numpy as np
import pytest
import torch

from conftest import assert_user_error, cli


# ----------------------------------------------------------------------------- docs/FILES.md: run folders

CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "epoch", "best_acc", "history", "rng", "recorder", "run_info",
                   "args", "arch", "train_seconds", "seconds", "fingerprint", "step", "global_step", "partial",
                   "scaler"}
METRICS_KEYS = {"best_acc", "final_acc", "epochs", "steps", "completed_epochs", "finished", "stopped",
                "num_train_samples", "train_seconds", "seconds", "history", "dataset", "arch", "seed", "method",
                "subset_rate", "selection", "class_balanced", "budget"}
HISTORY_KEYS = {"epoch", "lr", "steps", "train_loss", "train_acc", "train_seconds", "samples", "test_loss", "test_acc"}


def test_a_run_folder_holds_the_files_and_keys_files_md_lists(full_run):
    ck = torch.load(os.path.join(full_run, "checkpoint.pth.tar"), weights_only=True)
    assert set(ck) == CHECKPOINT_KEYS, set(ck) ^ CHECKPOINT_KEYS
    m = json.load(open(os.path.join(full_run, "metrics.json")))
    assert METRICS_KEYS <= set(m), METRICS_KEYS - set(m)
    assert all(set(h) == HISTORY_KEYS for h in m["history"])
    assert ck["epoch"] == m["completed_epochs"] == m["epochs"] == len(m["history"]) == 5   # epochs completed
    assert [h["epoch"] for h in m["history"]] == list(range(5))                             # numbered from 0
    assert m["finished"] and not m["stopped"] and m["num_train_samples"] == 160
    assert m["steps"] == sum(h["steps"] for h in m["history"]) == 25
    # model_best: the epoch with the best test accuracy (the first one, where two tie)
    best = torch.load(os.path.join(full_run, "model_best.pth.tar"), weights_only=True)
    assert set(best) == {"model", "epoch", "best_acc", "arch"}
    accs = [h["test_acc"] for h in m["history"]]
    assert best["best_acc"] == max(accs) == m["best_acc"] and best["epoch"] == accs.index(max(accs)) + 1
    assert m["final_acc"] == accs[-1]
    # METHODS.md "Training": SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.1, cosine stepped per iteration
    group = ck["optimizer"]["param_groups"][0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"], group["initial_lr"]) == (True, 0.9, 5e-4, 0.1)
    assert (ck["scheduler"]["T_max"], ck["scheduler"]["last_epoch"]) == (25, 25)
    for h in m["history"]:                 # the lr after the epoch's last step: 5 steps an epoch, 25 in all
        assert h["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * 5 * (h["epoch"] + 1) / 25)), abs=1e-12)
    args = json.load(open(os.path.join(full_run, "args.json")))
    assert set(args) == {"args", "command", "cwd", "git_commit"} and args["args"]["epochs"] == 5
    folder = json.load(open(os.path.join(full_run, "folder.json")))
    assert {"kind", "run_id", "fingerprint", "state", "completed_epochs"} <= set(folder)
    assert (folder["fingerprint"], folder["state"], folder["completed_epochs"]) == (ck["fingerprint"], "finished", 5)
    log = open(os.path.join(full_run, "log_seed_42.txt")).read()
    assert "epoch   0/5" in log and "epoch   4/5" in log
    assert open(os.path.join(full_run, "curve.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the dynamics: shapes, dtypes, dataset order
    npy = os.path.join(full_run, "npy")
    targets = np.load(os.path.join(npy, "targets.npy"))
    assert targets.dtype == np.int64 and targets.shape == (160,)
    for e in range(5):
        out, loss, index = (np.load(os.path.join(npy, f"{e}_{k}.npy")) for k in ("Output", "Loss", "Index"))
        assert (out.dtype, out.shape, loss.dtype, loss.shape) == (np.float32, (160, 10), np.float32, (160,))
        assert index.dtype == np.int64 and np.array_equal(index, np.arange(160))
        # Loss is the per-sample cross-entropy of the same forward pass as Output
        ce = torch.nn.functional.cross_entropy(torch.from_numpy(out), torch.from_numpy(targets), reduction="none")
        np.testing.assert_allclose(loss, ce.numpy(), rtol=1e-4, atol=1e-5)


def test_a_subset_run_writes_its_kept_indices_and_records_its_scores(full_run, cifar10_dir, tmp_path):
    """FILES.md's train_subset.py files; METHODS.md: mean_weight is the kept set's mean u."""
    from utils.science.selection import loss_weights
    masks = tmp_path / "masks"
    cli("importance_evaluation.py", "--dynamics_path", os.path.join(full_run, "npy"), "--mask_path", str(masks),
        "--trajectory_len", "5", "--window_size", "3", "--no_plot")
    info = json.load(open(masks / "info_win3_ep5.json"))
    assert {"method", "trajectory_len", "window_size", "decay", "seed", "files", "num_samples", "num_classes",
            "epochs_recorded", "combinations", "device", "seconds", "scoring", "sha256"} <= set(info)
    assert (info["num_samples"], info["num_classes"], info["epochs_recorded"]) == (160, 10, 5)
    assert (info["dataset"], info["arch"]) == ("cifar10", "resnet20")                # from the run's args.json
    save = tmp_path / "sub"
    cli("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet32",
        "--epochs", "1", "--batch-size", "40", "--ngpu", "0", "--subset_rate", "0.5",
        "--mask_path", str(masks / "data_mask_win3_ep5.npy"), "--score_path", str(masks / "score_win3_ep5.npy"),
        "--print_freq", "1", "--save_path", str(save))
    mask = np.load(masks / "data_mask_win3_ep5.npy")
    kept = np.load(save / "subset_indices.npy")
    assert kept.dtype == np.int64 and np.array_equal(kept, np.sort(mask[80:]))     # the published slice, sorted
    m = json.load(open(save / "metrics.json"))
    assert m["score_weighting"] is True and m["full_train_samples"] == 160 and m["num_train_samples"] == 80
    assert m["scored_arch"] == "resnet20" and m["arch"] == "resnet32"               # [resnet20→resnet32]
    assert m["score_info"] == info
    assert m["mask_path"].endswith("data_mask_win3_ep5.npy") and m["score_path"].endswith("score_win3_ep5.npy")
    u = loss_weights(np.load(masks / "dataset_score_win3_ep5.npy"))
    assert m["mean_weight"] == pytest.approx(float(u[kept].mean()), rel=1e-6)
    assert set(os.listdir(save)) >= {"checkpoint.pth.tar", "model_best.pth.tar", "metrics.json", "args.json",
                                     "log_seed_42.txt", "curve.png", "subset_indices.npy"}
    # random selection never uses the weights, even with a score at hand (METHODS.md); a checkpoint.pth.tar
    # of train.py is a teacher as model_best.pth.tar is (AGGRESSIVE_PRUNING.md), τ = 4 by default
    teacher = os.path.join(full_run, "checkpoint.pth.tar")
    cli("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet20",
        "--epochs", "1", "--batch-size", "80", "--ngpu", "0", "--subset_rate", "0.5", "--selection", "random",
        "--mask_path", str(masks / "data_mask_win3_ep5.npy"), "--score_path", str(masks / "score_win3_ep5.npy"),
        "--teacher", teacher, "--kd_alpha", "0.5", "--save_path", str(tmp_path / "random"))
    m = json.load(open(tmp_path / "random" / "metrics.json"))
    assert m["score_weighting"] is False and m["mean_weight"] is None and m["num_train_samples"] == 80
    from utils.protocol.fingerprint import file_sha256
    assert m["teacher_sha256"] == file_sha256(teacher) and m["kd_temperature"] == 4.0
    assert 0 < m["history"][0]["teacher_seconds"] < m["history"][0]["train_seconds"]
    # USAGE.md --print_freq: a progress line in the log every N iterations (default 200: none in 1 step)
    steps = [l.split("]")[0].strip() for l in open(save / "log_seed_42.txt") if " [" in l and "] loss" in l]
    assert steps == ["epoch 0 [1/2", "epoch 0 [2/2"], steps
    assert "] loss" not in open(tmp_path / "random" / "log_seed_42.txt").read()


@pytest.mark.parametrize("method", ["dual", "dyn_unc"])
def test_dual_and_dyn_unc_refuse_a_window_of_one_epoch(full_run, tmp_path, method):
    """METHODS.md: DUAL's sample standard deviation divides by J - 1, so J >= 2; USAGE.md: dyn_unc K >= 2."""
    out = tmp_path / "masks"
    p = cli("importance_evaluation.py", "--dynamics_path", os.path.join(full_run, "npy"), "--method", method,
            "--trajectory_len", "5", "--window_size", "1", "--mask_path", str(out), "--no_plot", check=False)
    assert_user_error(p, "--window_size 1", f"--method {method}")
    assert not out.exists()


def _md_cell(md, title, row, col):
    """The cell (row, col) of the markdown table under the heading `title` of a sensitivity file."""
    lines = md.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = {r[0]: r for r in ([c.strip() for c in l.strip("|").split("|")] for l in lines[2:])}
    return float(cells[row][header.index(col)])


def test_a_grid_call_compares_its_scores_by_spearman_and_jaccard(full_run, tmp_path):
    """FILES.md: sensitivity_<method>.md holds the Spearman correlation of every pair of scores and the
    Jaccard overlap of their kept sets at each --sensitivity_rates, recomputed here from the files."""
    out = tmp_path / "grid"
    cli("importance_evaluation.py", "--dynamics_path", os.path.join(full_run, "npy"), "--mask_path", str(out),
        "--trajectory_len", "5", "--window_size", "3", "4", "--sensitivity_rates", "0.5", "0.9", "--no_plot")
    a, b = (np.load(out / f"dataset_score_{t}.npy").astype(np.float64) for t in ("win3_ep5", "win4_ep5"))
    ranks = [(x[None, :] < x[:, None]).sum(1) + ((x[None, :] == x[:, None]).sum(1) - 1) / 2 for x in (a, b)]
    md = open(out / "sensitivity_tdds.md").read()
    assert _md_cell(md, "Spearman correlation of the scores", "win3_ep5", "win4_ep5") == \
        pytest.approx(np.corrcoef(*ranks)[0, 1], abs=5e-4)
    for rate in (0.5, 0.9):
        kept = [set(np.load(out / f"data_mask_{t}.npy")[int(rate * 160):].tolist()) for t in ("win3_ep5", "win4_ep5")]
        title = f"Jaccard overlap of the kept sets at pruning rate {rate:g}"
        assert _md_cell(md, title, "win4_ep5", "win3_ep5") == \
            pytest.approx(len(kept[0] & kept[1]) / len(kept[0] | kept[1]), abs=5e-4)
    assert "pruning rate 0.3" not in md


def test_the_score_weight_multiplies_the_whole_distillation_loss():
    """METHODS.md, distillation: with the published weighting on, a batch's mean u multiplies
    (1 - a) CE + a t^2 KL, not the cross-entropy alone. One SGD step of train_one_epoch against a hand step."""
    from types import SimpleNamespace
    from utils.training.data import DeviceImages
    from utils.training.distill import Distiller, kd_loss
    from utils.training.loop import train_one_epoch
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 4, 4), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (12,), generator=g)
    train = DeviceImages(images, labels, ([0.5] * 3, [0.25] * 3), torch.device("cpu"), augment=False)
    student, teacher = (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)) for _ in range(2))
    u = torch.rand(12, generator=g)
    batch = torch.tensor([1, 4, 5, 9, 11])
    by_hand = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    by_hand.load_state_dict(student.state_dict())
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    train_one_epoch(student, SimpleNamespace(train=train), [batch], opt,
                    torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), None, weights=u,
                    distill=Distiller(teacher, 0.7, 4.0))
    x, y, _ = next(train.batches([batch]))
    z = by_hand(x)
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    loss = kd_loss(z, teacher(x).detach(), ce, 0.7, 4.0) * u[batch].mean()
    loss.backward()
    with torch.no_grad():
        for p_hand, p in zip(by_hand.parameters(), student.parameters()):
            torch.testing.assert_close(p, p_hand - 0.5 * p_hand.grad, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- docs/ROBUSTNESS.md: Moderate

def test_moderate_reads_the_training_set_as_trained_and_data_path_overrides_the_recorded_one(cifar10_dir, tmp_path,
                                                                                              monkeypatch):
    """Moderate takes the data set, architecture and robustness settings from the checkpoint (noisy labels,
    corrupted images), and --data_path replaces the folder the run recorded (FILES.md). The same training
    run shows FILES.md's curve.png: drawn after the first and the last epoch, in between at most every
    30 s (a short run: never in between)."""
    import shutil
    import train
    import utils.training.curve
    drawn = []
    monkeypatch.setattr(utils.training.curve, "plot_curves", lambda history, path, title="": drawn.append(len(history)))
    from models import create_model
    from utils.training.data import CIFAR_STATS, DeviceImages, load_data
    from utils.science.moderate import moderate_score
    from utils.training.checkpoint_features import penultimate_features
    data_copy = tmp_path / "data"
    shutil.copytree(cifar10_dir, data_copy)
    flags = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "3", "--batch-size", "160", "--ngpu", "0",
             "--label_noise", "0.5", "--corrupt_ratio", "0.5", "--corruption", "contrast", "--severity", "5"]
    cli("train.py", "--data_path", str(data_copy), *flags, "--save_path", str(tmp_path / "run"))
    assert drawn == [1, 3]
    data_copy.rename(tmp_path / "moved")                     # the recorded folder is gone
    ck = str(tmp_path / "run" / "checkpoint.pth.tar")
    moderate = ("importance_evaluation.py", "--method", "moderate", "--checkpoint", ck, "--no_plot", "--mask_path")
    assert_user_error(cli(*moderate, str(tmp_path / "m0"), check=False), "not found")
    cli(*moderate, str(tmp_path / "m"), "--data_path", str(tmp_path / "moved"))
    score = np.load(tmp_path / "m" / "dataset_score_moderate.npy")
    data = load_data(train.parse_args(["--data_path", cifar10_dir, *flags]), torch.device("cpu"))
    model = create_model("resnet20", 10)
    model.load_state_dict(torch.load(ck, weights_only=True)["model"])
    feats = penultimate_features(model, DeviceImages(data.train.images, data.train.labels, CIFAR_STATS["cifar10"],
                                                     torch.device("cpu"), False), 160)
    np.testing.assert_array_equal(score, moderate_score(feats, data.train.labels.numpy())[1])
    assert data.flipped.sum() == 80 and data.corrupted.sum() == 80     # the settings did change something


# ----------------------------------------------------------------------------- docs/USAGE.md

@pytest.mark.parametrize("flag,value", [("--decay", "inf"), ("--learning_rate", "nan")])
def test_float_flags_of_train_subset_must_be_finite(cifar10_dir, tmp_path, flag, value):
    """train.py's side: test_gpu_ready.py::test_float_flags_must_be_finite."""
    save = tmp_path / "run"
    p = cli("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet20", "--ngpu", "0",
            "--subset_rate", "0.5", "--selection", "random", flag, value, "--save_path", str(save), check=False)
    assert_user_error(p, flag, "finite")
    assert not save.exists()


@pytest.mark.parametrize("script", ["train.py", "train_subset.py"])
def test_corruption_of_an_image_folder_is_refused(image_folder, tmp_path, script):
    """USAGE.md / METHODS.md: image corruption is for CIFAR and digits (held in memory) only."""
    save = tmp_path / "run"
    extra = ("--subset_rate", "0.5", "--selection", "random") if script == "train_subset.py" else ()
    p = cli(script, "--data_path", image_folder, "--dataset", "imagefolder", "--arch", "resnet20", "--ngpu", "0",
            *extra, "--corrupt_ratio", "0.3", "--save_path", str(save), check=False)
    assert_user_error(p, "--corrupt_ratio", "cifar10, cifar100, digits")
    assert not save.exists()


def test_corruption_levels_are_the_documented_ones():
    """METHODS.md's severity table, level by level, against torchvision / Pillow / the noise's spread."""
    import io
    import math as m
    import torchvision.transforms.functional as TF
    from PIL import Image
    from utils.training.robustness import apply_corruption
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8))
    for severity, (noise, blur, contrast, quality) in enumerate(zip((0.04, 0.06, 0.08, 0.09, 0.10),
                                                                    (0.4, 0.6, 0.7, 0.8, 1.0),
                                                                    (0.75, 0.5, 0.4, 0.3, 0.15),
                                                                    (80, 65, 58, 50, 40)), 1):
        assert torch.equal(apply_corruption(img, 1.0, "contrast", severity, seed=0)[0], TF.adjust_contrast(img, contrast))
        k = 2 * m.ceil(3 * blur) + 1
        assert torch.equal(apply_corruption(img, 1.0, "gaussian_blur", severity, seed=0)[0],
                           TF.gaussian_blur(img, [k, k], [blur, blur]))
        buf = io.BytesIO()
        Image.fromarray(img[0].numpy().transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
        jpeg = apply_corruption(img, 1.0, "jpeg", severity, seed=0)[0]
        assert np.array_equal(jpeg[0].numpy().transpose(1, 2, 0), np.array(Image.open(buf)))
        grey = np.full((8, 3, 32, 32), 128, np.uint8)          # far from 0 and 255: nothing clipped
        diff = apply_corruption(grey, 1.0, "gaussian_noise", severity, seed=0)[0].astype(np.float64) - 128
        assert np.array_equal(diff, np.round(diff)) and abs(diff.mean()) < 0.5
        assert diff.std() == pytest.approx(noise * 255, rel=0.05)


# ----------------------------------------------------------------------------- docs/METHODS.md: augmentation

def _mirrored_only(data, n=48):
    """How many of n augmented training images are a mirrored padded crop of the original and no plain one."""
    train = data.train
    x, _, idx = next(train.batches([torch.arange(n)], torch.Generator().manual_seed(0)))
    img = ((x + train.shift) / train.scale).round().to(torch.uint8).numpy()
    p, count = train.pad, 0
    for i in range(n):
        orig = train.images[idx[i]].numpy()
        h, w = orig.shape[1:]
        padded = np.pad(orig, ((0, 0), (p, p), (p, p)))
        windows = [padded[:, a:a + h, b:b + w] for a in range(2 * p + 1) for b in range(2 * p + 1)]
        plain = any(np.array_equal(img[i], win) for win in windows)
        mirrored = any(np.array_equal(img[i], win[:, :, ::-1]) for win in windows)
        assert plain or mirrored
        count += mirrored and not plain
    return count


def test_digits_are_cropped_never_mirrored_cifar_is_flipped(cifar10_dir):
    """METHODS.md: digits are cropped only (a mirrored digit is another symbol); USAGE.md: 32x32, 1,437 / 360."""
    from utils.training.data import load_data
    args = dict(label_noise=0, corrupt_ratio=0, data_path=cifar10_dir)
    digits = load_data(Namespace(dataset="digits", **args), torch.device("cpu"))
    assert (len(digits.train), len(digits.test), tuple(digits.train.images.shape[1:])) == (1437, 360, (3, 32, 32))
    assert _mirrored_only(digits) == 0
    assert _mirrored_only(load_data(Namespace(dataset="cifar10", **args), torch.device("cpu"))) > 5


# ----------------------------------------------------------------------------- docs/AGGRESSIVE_PRUNING.md

def test_the_summary_names_each_rows_batch_size_per_rate(tmp_path):
    """RATE_FLAGS gives a smaller batch at high rates: each row says its batch size per rate."""
    from test_summarize import load_summarize, write_metrics
    out = str(tmp_path / "sweep")
    for rate, batch, acc in ((0.5, 128, 90.0), (0.9, 32, 70.0)):
        write_metrics(out, f"random/r{rate}/s1", method="random", selection="random", subset_rate=rate,
                      final_acc=acc, batch_size=batch)
        write_metrics(out, f"tdds/r{rate}/s1", method="tdds", subset_rate=rate, final_acc=acc + 1, batch_size=batch)
    md = load_summarize().summarize(out)
    assert "random (batch 50%: 128, 90%: 32)" in md and "tdds (batch 50%: 128, 90%: 32)" in md
    one = str(tmp_path / "one")           # one batch size everywhere: the labels stay plain
    write_metrics(one, "random/r0.5/s1", method="random", selection="random", subset_rate=0.5, final_acc=90.0,
                  batch_size=128)
    write_metrics(one, "tdds/r0.9/s1", method="tdds", subset_rate=0.9, final_acc=70.0, batch_size=128)
    assert "(batch " not in load_summarize().summarize(one)


def test_beta_kd_and_iterations_rows_stand_apart():
    """AGGRESSIVE_PRUNING.md / STUDIES.md: -beta, -kd and -iters rows are labelled apart."""
    from test_summarize import load_summarize
    label = load_summarize().run_label
    base = dict(subset_rate=0.9, method="dual", selection="top", class_balanced=False, score_weighting=False)
    assert label({**base, "selection": "beta"}) == "dual-beta-unweighted"
    assert label({**base, "selection": "random", "teacher": "/r/full/model_best.pth.tar"}) == "random-kd"
    assert label({**base, "budget": "iterations", "score_weighting": True}) == "dual-iters"


# ----------------------------------------------------------------------------- docs/STUDIES.md: the report

def test_the_report_never_downloads_a_data_set(tmp_path, monkeypatch):
    """Even where downloads are allowed (no TDDS_OFFLINE), a missing CIFAR folder is one error line."""
    import utils.training.data

    def download(*args):
        raise AssertionError("report.py tried to download a data set")
    monkeypatch.delenv("TDDS_OFFLINE", raising=False)
    monkeypatch.setattr(utils.training.data, "_download_cifar", download)
    masks = tmp_path / "masks"
    masks.mkdir()
    np.save(masks / "dataset_score_win3_ep5.npy", np.arange(20, dtype=np.float32))
    json.dump({"method": "tdds"}, open(masks / "info_win3_ep5.json", "w"))
    p = cli("scripts/report.py", str(masks), "--dataset", "cifar10", "--data_path", str(tmp_path / "none"),
            check=False)
    assert_user_error(p, "cifar10 not found", "--data_path")
    assert not (masks / "report").exists() and not (tmp_path / "none").exists()
