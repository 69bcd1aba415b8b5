"""--eval_every N (docs/METHODS.md, "Evaluation schedule"): the evaluated epochs are every N-th and the
last; evaluation draws from no random stream, so the training, the final model and the final accuracy
are the N = 1 run's bit for bit; a run resumed in the middle of the schedule gives the uninterrupted
run's files. And an interrupted run's records (docs/FILES.md): folder.json says the epochs completed
that metrics.json says, and the interruption line reaches the process's own output."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import (CHECKPOINT_VARIES, FULL_RUN, ROOT, assert_same_checkpoint, assert_same_state,
                      assert_user_error, cli, folder_digest)

EVERY = ["--eval_every", "2"]       # FULL_RUN's 5 epochs: 1 and 3 by the schedule, 4 as the last
EVALUATED = [1, 3, 4]
TRAINING_KEYS = ("epoch", "lr", "steps", "samples", "train_loss", "train_acc")


def metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def folder_state(folder):
    with open(os.path.join(folder, "folder.json")) as f:
        return json.load(f)


def npy_bytes(folder):
    npy = os.path.join(folder, "npy")
    return {f: open(os.path.join(npy, f), "rb").read() for f in sorted(os.listdir(npy)) if f.endswith(".npy")}


def best_model(folder):
    return torch.load(os.path.join(folder, "model_best.pth.tar"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def every2(cifar10_dir, tmp_path_factory):
    """full_run's command with --eval_every 2 (this module's, read-only)."""
    save = str(tmp_path_factory.mktemp("eval_every") / "run")
    cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, *EVERY, "--save_path", save)
    return save


def test_the_evaluated_epochs_are_the_schedule_and_the_last_and_training_is_the_same(full_run, every2):
    """Against full_run (N = 1, the same seed): the rows of the epochs not evaluated say so and hold no
    test values; every training value, every recorded .npy byte, the final checkpoint's model, optimizer,
    scheduler and random streams, and the final accuracy are equal exactly; the test values of the
    evaluated epochs are full_run's; best_acc and model_best.pth.tar are those of the best evaluated epoch."""
    a, b = metrics(full_run), metrics(every2)
    assert [h["epoch"] for h in b["history"] if "test_acc" in h] == EVALUATED
    skipped = [h for h in b["history"] if h["epoch"] not in EVALUATED]
    assert len(skipped) == 2 and all(h["evaluated"] is False and "test_loss" not in h for h in skipped)
    assert not any("evaluated" in h for h in a["history"])          # N = 1: the rows as they always were
    for key in TRAINING_KEYS:
        assert [h[key] for h in b["history"]] == [h[key] for h in a["history"]], key
    for e in EVALUATED:
        assert (b["history"][e]["test_acc"], b["history"][e]["test_loss"]) == \
            (a["history"][e]["test_acc"], a["history"][e]["test_loss"])
    assert b["final_acc"] == a["final_acc"] == a["history"][-1]["test_acc"]     # bit for bit
    best_epoch = max(EVALUATED, key=lambda e: (a["history"][e]["test_acc"], -e))   # the first of equal bests
    assert b["best_acc"] == a["history"][best_epoch]["test_acc"]
    assert (best_model(every2)["epoch"], best_model(every2)["best_acc"]) == (best_epoch + 1, b["best_acc"])
    assert npy_bytes(every2) == npy_bytes(full_run)
    # evaluation touches no training randomness: every stream, and the weights, end where N = 1's end
    assert_same_checkpoint(full_run, every2, skip=CHECKPOINT_VARIES + ("history", "best_acc"))


def test_resumed_mid_schedule_gives_the_uninterrupted_files_and_folder_json_agrees_at_each_stop(
        cifar10_dir, every2, tmp_path, signal_at_step):
    """The every2 command stopped three times: SIGTERM at global step 7 (epoch 1, step 2); resumed and
    SIGTERM again at its first step (before any epoch end of the resumed run); resumed with --stop_epoch 3
    (ends after epoch 2, not evaluated); resumed to the end. At each stop folder.json's completed_epochs
    is metrics.json's (it was null before); at the end every file is every2's."""
    cut = tmp_path / "cut"
    flags = ["--data_path", cifar10_dir, *FULL_RUN, *EVERY, "--save_path", str(cut)]

    def agree(epochs):
        assert metrics(cut)["completed_epochs"] == folder_state(cut)["completed_epochs"] == epochs
    signal_at_step(7, signal.SIGTERM)
    p = cli("train.py", *flags, check=False)
    assert p.code == 143 and "SIGTERM: checkpoint at step 2 of epoch 1 (global step 7)" in p.out, p
    assert folder_state(cut)["state"] == "interrupted"
    agree(1)
    signal_at_step(1, signal.SIGTERM)
    p = cli("train.py", *flags, "--resume", check=False)
    assert p.code == 143 and "SIGTERM: checkpoint at step 3 of epoch 1 (global step 8)" in p.out, p
    agree(1)
    signal_at_step(0)
    cli("train.py", *flags, "--stop_epoch", "3", "--resume")
    stopped = metrics(cut)
    assert stopped["stopped"] and stopped["final_acc"] == stopped["history"][1]["test_acc"]   # the latest evaluated
    assert "test_acc" not in stopped["history"][2]
    agree(3)
    cli("train.py", *flags, "--resume")
    agree(5)
    assert_same_state(metrics(every2), metrics(cut), skip=("seconds", "train_seconds", "run_id"), where="metrics.json")
    assert npy_bytes(cut) == npy_bytes(every2)
    assert_same_checkpoint(every2, cut)
    assert_same_state(best_model(every2), best_model(cut), where="model_best.pth.tar")


def test_eval_every_is_not_part_of_the_run_and_must_be_positive(cifar10_dir, every2, tmp_path):
    """Another N on a finished run: already done (N is not fingerprinted), nothing rewritten; 0 is refused."""
    before = folder_digest(every2)
    p = cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, "--eval_every", "3", "--save_path", every2)
    assert "already finished" in p.out and folder_digest(every2) == before
    p = cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, "--eval_every", "0", "--save_path",
            str(tmp_path / "zero"), check=False)
    assert_user_error(p, "--eval_every must be at least 1")
    assert not (tmp_path / "zero").exists()


def test_train_subset_with_the_iteration_budget_evaluates_on_the_schedule(cifar10_dir, tmp_path):
    """A 75%-pruned random subset (40 of 160), batch 32, 3 epochs of the full data's steps: 15 steps of
    2 a epoch, 8 epochs (the last of one step); --eval_every 3 evaluates epochs 2, 5 and the last, 7."""
    save = tmp_path / "sub"
    cli("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet20", "--epochs", "3",
        "--batch-size", "32", "--ngpu", "0", "--subset_rate", "0.75", "--selection", "random",
        "--budget", "iterations", "--eval_every", "3", "--save_path", str(save))
    m = metrics(save)
    assert m["finished"] and [h["steps"] for h in m["history"]] == [2] * 7 + [1]
    assert [h["epoch"] for h in m["history"] if "test_acc" in h] == [2, 5, 7]
    assert m["final_acc"] == m["history"][-1]["test_acc"]
    assert m["best_acc"] == max(m["history"][e]["test_acc"] for e in (2, 5, 7))


def test_curve_draws_test_points_at_the_evaluated_epochs_only(tmp_path, monkeypatch):
    import utils.training.curve as curve
    drawn = []
    monkeypatch.setattr(curve, "save_figure", lambda path, fig: drawn.append(fig))
    rows = [{"epoch": e, "train_acc": 10.0 + e, "train_loss": 2.0 - e / 10,
             **({"test_acc": 20.0 + e, "test_loss": 1.0} if e in (2, 4) else {"evaluated": False})} for e in range(5)]
    curve.plot_curves(rows, str(tmp_path / "curve.png"))
    acc = drawn[0].axes[0]
    train, test = acc.get_lines()
    assert list(train.get_xdata()) == [0, 1, 2, 3, 4] and list(test.get_xdata()) == [2, 4]
    assert list(test.get_ydata()) == [22.0, 24.0] and acc.get_title() == "best test 24.00%"
    curve.plot_curves(rows[:2], str(tmp_path / "curve.png"))         # nothing evaluated yet: drawn all the same
    assert len(drawn[1].axes[0].get_lines()[1].get_xdata()) == 0


def test_a_preempted_process_prints_where_it_stopped_and_its_records_agree(cifar10_dir, tmp_path):
    """A real process whose output goes to a file (as a sweep's job log), SIGTERMed to its process group
    once an epoch is done: the interruption line is in that file, and folder.json's completed_epochs is
    metrics.json's."""
    save, log = tmp_path / "run", tmp_path / "job.log"
    flags = ["--data_path", cifar10_dir, *FULL_RUN[:FULL_RUN.index("--epochs")], "--epochs", "40",
             "--batch-size", "32", "--ngpu", "0", "--save_path", str(save)]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "train.py", *flags], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                if metrics(save)["completed_epochs"] >= 1:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [l for l in log.read_text().splitlines() if l.startswith("SIGTERM: checkpoint at ")]
    assert len(lines) == 1 and lines[0].endswith("run the same command with --resume to continue (exit status 143)")
    epochs = metrics(save)["completed_epochs"]
    assert 1 <= epochs < 40 and folder_state(save)["completed_epochs"] == epochs
    assert folder_state(save)["state"] == "interrupted"
    assert np.isfinite(metrics(save)["final_acc"])
