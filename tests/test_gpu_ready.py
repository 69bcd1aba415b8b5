"""What a GPU run relies on, checked on the CPU through the same code: float16 autocast with a gradient
scaler (resumed exactly), a NaN loss ending the run in one line, finite float flags, ImageFolder
loaders built once per run (augmentation independent of the worker count), epoch-end writes on the
background writer (order kept, failures reported), torchrun's process group with one process, and
scripts/gpu_check.sh skipping cleanly without CUDA."""
import errno
import json
import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

import train
from conftest import ROOT, cli
from test_imagefolder import write_image_folder
from utils import dist
from utils.protocol import epoch_end
from utils.training import loop as engine
from utils.training.background import BackgroundWriter

FAST = ["--dataset", "cifar10", "--arch", "resnet20", "--batch-size", "32", "--ngpu", "0", "--print_freq", "1000"]


def train_argv(data, save, *extra):
    return ["--data_path", data, *FAST, "--save_path", str(save), *extra]


def run_main(argv, capsys=None):
    """train.py as the command line runs it, in this process (conftest.cli): (exit status, stderr lines)."""
    r = cli("train.py", *argv, check=False)
    return r.code, [line for line in r.err.splitlines() if line.strip()]


def run_train(argv):
    """train.py through conftest.cli (a crash raises its exception); the run's metrics.json."""
    cli("train.py", *argv)
    return json.loads(open(os.path.join(argv[argv.index("--save_path") + 1], "metrics.json")).read())


def state(save):
    with open(os.path.join(save, "folder.json")) as f:
        return json.load(f)


def checkpoint(save):
    return torch.load(os.path.join(save, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("flag, value", [("--learning_rate", "nan"), ("--decay", "inf"), ("--momentum", "-inf")])
def test_float_flags_must_be_finite(cifar10_dir, tmp_path, capsys, flag, value):
    status, err = run_main(train_argv(cifar10_dir, tmp_path / "run", "--epochs", "1", f"{flag}={value}"), capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {flag} must be a finite number"), err
    assert not (tmp_path / "run").exists()


def test_runs_recorded_before_amp_dtype_and_tf32_still_match():
    """A fingerprint written before --amp_dtype/--tf32 existed equals today's defaults (bf16 amp, TF32 on)."""
    from utils.protocol.fingerprint import fingerprint_diffs
    now = {"--amp": True, "--amp_dtype": "bfloat16", "--tf32": "on", "--epochs": 3}
    assert fingerprint_diffs({"--amp": True, "--epochs": 3}, now) == []
    assert fingerprint_diffs({"--amp": True, "--epochs": 3}, {**now, "--amp_dtype": "float16"}) == [
        "--amp_dtype 'bfloat16' (now 'float16')"]
    assert fingerprint_diffs({"--amp": False, "--amp_dtype": "float16"}, {"--amp": False, "--amp_dtype": "bfloat16"}) == []


def test_tf32_is_set_and_recorded(cifar10_dir, tmp_path, capsys):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        train.main(train_argv(cifar10_dir, tmp_path / "run", "--epochs", "1", "--tf32", "off"))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert state(tmp_path / "run")["fingerprint"]["--tf32"] == "off"


# ------------------------------------------------------------------------------------------ float16
def small_net(arch, num_classes):
    """float16 convolutions on a CPU without float16 instructions are very slow: a small net instead."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, num_classes))


def test_float16_amp_trains_and_resumes_exactly(cifar10_dir, tmp_path, monkeypatch):
    import models
    monkeypatch.setattr(models, "create_model", small_net)
    amp = ["--epochs", "3", "--amp", "--amp_dtype", "float16", "--dynamics"]
    whole = run_train(train_argv(cifar10_dir, tmp_path / "whole", *amp))
    run_train(train_argv(cifar10_dir, tmp_path / "cut", *amp, "--stop_epoch", "1"))
    resumed = run_train(train_argv(cifar10_dir, tmp_path / "cut", *amp, "--resume"))
    a, b = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "cut")
    assert a["scaler"]["scale"] > 0 and a["scaler"] == b["scaler"]     # the scaler's state travels
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed["history"][-1]["train_loss"] == whole["history"][-1]["train_loss"]
    assert np.array_equal(np.load(tmp_path / "whole" / "npy" / "2_Output.npy"),
                          np.load(tmp_path / "cut" / "npy" / "2_Output.npy"))
    assert whole["history"][-1]["train_loss"] < whole["history"][0]["train_loss"]   # it learns


def test_a_nan_loss_ends_the_run_in_one_line(cifar10_dir, tmp_path, capsys, monkeypatch):
    """Epoch 1, step 2 (160 images, batch 32: 5 steps per epoch) gets a NaN loss; the run stops with one
    line naming that step, is marked failed, and the checkpoint of epoch 0's end is what remains."""
    real, calls = torch.nn.functional.cross_entropy, []

    def poisoned(logits, y, *a, reduction="mean", **kw):
        out = real(logits, y, *a, reduction=reduction, **kw)
        if reduction == "none":
            calls.append(1)
            if len(calls) == 7:
                out = out * float("nan")
        return out

    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    status, err = run_main(train_argv(cifar10_dir, tmp_path / "run", "--epochs", "3"), capsys)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: the training loss became NaN or infinite at epoch 1, step 2") and \
        "--learning_rate" in err[0] and "--resume" in err[0], err
    assert state(tmp_path / "run")["state"] == "failed"
    ck = checkpoint(tmp_path / "run")
    assert ck["epoch"] == 1 and ck["step"] == 0
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ loaders
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("imgs")), size=16)


def test_imagefolder_augmentation_does_not_depend_on_the_workers(images):
    """Each sample's transform is seeded by (epoch seed, index): 0 or 2 workers, the same batches."""
    from utils.training.data import FolderImages, _image_folder, make_batches
    folder = _image_folder(images, "train")
    batches = make_batches(torch.arange(len(folder)), 16, torch.Generator().manual_seed(0))
    got = []
    for workers in (0, 2):
        loader = FolderImages(folder, True, 16, torch.device("cpu"), workers)
        got.append([x for x, _, _ in loader.batches(batches, torch.Generator().manual_seed(5))])
        loader.close()
    assert all(torch.equal(a, b) for a, b in zip(*got)) and len(got[0]) == len(batches)


def test_an_imagefolder_run_starts_its_workers_once(images, tmp_path, monkeypatch):
    from torch.utils.data import dataloader
    started, real = [], dataloader._MultiProcessingDataLoaderIter.__init__

    def counting(self, loader):
        started.append(loader.num_workers)
        real(self, loader)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "__init__", counting)
    result = run_train(["--dataset", "imagefolder", "--data_path", images, "--image_size", "16", "--arch",
                         "resnet20", "--epochs", "3", "--batch-size", "16", "--workers", "2", "--ngpu", "0",
                         "--save_path", str(tmp_path / "run")])
    assert result["completed_epochs"] == 3
    assert started == [2, 2]     # the training loader and the evaluation loader, once each for 3 epochs


def test_imagefolder_resumed_mid_epoch_with_other_workers_equals_the_uninterrupted_run(images, tmp_path, monkeypatch):
    """60 images, batch 16: 4 steps per epoch. A checkpoint at global step 6 (epoch 1, step 2), a crash
    at step 7, a resume with --workers 0 instead of 2: the final weights are the uninterrupted run's."""
    def argv(save, workers, *extra):
        return ["--dataset", "imagefolder", "--data_path", images, "--image_size", "16", "--arch", "resnet20",
                "--epochs", "3", "--batch-size", "16", "--ngpu", "0", "--workers", str(workers),
                "--save_path", str(tmp_path / save), *extra]

    run_train(argv("whole", 2))
    real, steps = engine.note_nonfinite, []

    def crash_at_step_7(*a):
        steps.append(1)
        if len(steps) == 7:
            raise RuntimeError("a crash")
        real(*a)

    monkeypatch.setattr(engine, "note_nonfinite", crash_at_step_7)
    with pytest.raises(RuntimeError, match="a crash"):
        run_train(argv("cut", 2, "--save_every_steps", "6"))
    assert checkpoint(tmp_path / "cut")["step"] == 2
    monkeypatch.setattr(engine, "note_nonfinite", real)
    run_train(argv("cut", 0, "--resume"))
    a, b = checkpoint(tmp_path / "whole")["model"], checkpoint(tmp_path / "cut")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ epoch ends
def test_background_writer_runs_in_order_and_stops_at_a_failure():
    w, done = BackgroundWriter(), []
    w.submit(lambda: (time.sleep(0.05), done.append(1)))
    w.submit(lambda: done.append(2))
    w.submit(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device", "x")))
    w.submit(lambda: done.append(4))     # after a failure: skipped
    with pytest.raises(OSError):
        w.wait()
    assert done == [1, 2]
    with pytest.raises(OSError):
        w.check()


def test_a_crash_between_epochs_leaves_the_last_committed_epoch(cifar10_dir, tmp_path, monkeypatch):
    """Slow writes still under way when the run crashes (in epoch 2's evaluation) are finished first:
    the folder then holds epochs 0 and 1, complete and consistent, and says failed."""
    real_save, real_eval = epoch_end.save_torch, engine.evaluate
    slow = lambda *a: (time.sleep(0.3), real_save(*a))   # noqa: E731
    evals = []

    def crashing(*a, **kw):
        evals.append(1)
        if len(evals) == 3:
            raise RuntimeError("a crash")
        return real_eval(*a, **kw)

    monkeypatch.setattr(epoch_end, "save_torch", slow)
    monkeypatch.setattr(engine, "evaluate", crashing)
    save = tmp_path / "run"
    with pytest.raises(RuntimeError, match="a crash"):
        run_train(train_argv(cifar10_dir, save, "--epochs", "4", "--dynamics"))
    ck = checkpoint(save)
    with open(save / "metrics.json") as f:
        metrics = json.load(f)
    assert ck["epoch"] == 2 and metrics["completed_epochs"] == 2 and len(metrics["history"]) == 2
    assert state(save)["state"] == "failed"
    with open(save / "npy" / "manifest.json") as f:
        assert {"0", "1"} <= set(json.load(f)["epochs"])
    assert (save / "npy" / "1_Output.npy").exists()


def test_a_failed_background_write_ends_the_run_in_one_line(cifar10_dir, tmp_path, capsys, monkeypatch):
    real = epoch_end.save_json

    def full_disk(path, obj):
        if threading.current_thread() is not threading.main_thread():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

    monkeypatch.setattr(epoch_end, "save_json", full_disk)
    status, err = run_main(train_argv(cifar10_dir, tmp_path / "run", "--epochs", "3"), capsys)
    assert status == 1 and len(err) == 1 and "metrics.json: the disk is full" in err[0], err
    assert state(tmp_path / "run")["state"] == "failed"
    assert checkpoint(tmp_path / "run")["epoch"] == 1   # written before the metrics that failed


# ------------------------------------------------------------------------------------------ torchrun, gpu_check
def test_torchrun_with_one_process_joins_a_process_group(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    device = dist.setup(0)
    try:
        assert device.type == "cpu" and dist.is_distributed() and dist.world_size() == 1
        assert dist.all_reduce_max(torch.tensor(3)).item() == 3
    finally:
        dist.cleanup()
    assert not dist.is_distributed()


def test_gpu_check_without_cuda_skips_cleanly():
    p = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert lines[0].startswith("SKIP cuda ") and "no CUDA device" in lines[0], lines
    assert lines[-1].startswith("gpu_check: 0 passed, 0 failed, ") and "skipped" in lines[-1], lines
    assert all(line.split()[0] in ("PASS", "FAIL", "SKIP") for line in lines[:-1]), lines


# ------------------------------------------------------------------------------------------ units
def test_evaluate_sums_on_the_device_match_a_direct_computation():
    """1,200 test images: batches of 500, 500 and 200; loss and accuracy as one pass computes them."""
    from utils.training.data import Data, DeviceImages
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (1200, 3, 8, 8), dtype=np.uint8), rng.integers(0, 3, 1200)
    images = DeviceImages(x, y, ([100.0] * 3, [50.0] * 3), torch.device("cpu"), augment=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    got = engine.evaluate(model, Data("t", images, images, 3))
    with torch.no_grad():
        logits = model((torch.from_numpy(x).float() - 100) / 50)
    target = torch.from_numpy(y)
    assert got["test_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-5)
    assert got["test_acc"] == pytest.approx(100 * (logits.argmax(1) == target).double().mean().item())


def test_host_copy_is_taken_when_made():
    from utils.training.background import HostCopy
    t = torch.zeros(3)
    copy = HostCopy({"a": [t], "b": (1, "x")})
    t += 1
    got = copy.get()
    assert torch.equal(got["a"][0], torch.zeros(3)) and got["b"] == (1, "x")
