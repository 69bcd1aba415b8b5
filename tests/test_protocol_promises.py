"""Promises of the write protocol that had no test (issue 31): a requeued job always restarts, --overwrite
retracts the old record before it removes files, every write failure names the file the user knows, a
read-only finished scoring is "already scored", the commit's last look at the lock as the scripts make
it, the scorer's notes and refusals, readers that take no lock, and four promises of the docs (the
order in which an epoch's files, its manifest entry and its checkpoint land; a re-scoring's order;
the teacher in eval mode)."""
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from conftest import ROOT, cli, one_error_line, write_published

import importance_evaluation
import train
import train_subset
import utils.protocol.epoch_end as epoch_end
import utils.protocol.holder as holder
import utils.protocol.manifest as manifest
import utils.protocol.outputs as outputs
import utils.training.loop as loop
from utils.protocol.holder import HOLDER, machine_identity
from utils.protocol.lock import FolderLock
from utils.protocol.outputs import CHECKPOINT
from utils.protocol.run import write_state

DIGITS = ["--dataset", "digits", "--arch", "resnet20", "--ngpu", "0", "--batch-size", "256"]
N = 1437   # digits' training samples


pytestmark = pytest.mark.usefixtures("quick_lock_timings")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch digits run with --dynamics (copy it before writing into it)."""
    save = tmp_path_factory.mktemp("finished") / "run"
    cli("train.py", *DIGITS, "--epochs", "1", "--dynamics", "--save_path", str(save))
    return save


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------- a requeued job always restarts
@pytest.mark.parametrize("how", ["running", "interrupted", "failed"])
def test_resume_after_a_death_before_the_first_checkpoint_restarts(tmp_path, monkeypatch, how):
    """SIGKILL in epoch 0 (running: nothing recorded its end, its lock record and staging folder stay),
    Ctrl-C, or a crash: the requeued job's same command with --resume starts the run afresh."""
    save = tmp_path / "run"
    cmd = DIGITS + ["--epochs", "1", "--dynamics", "--save_path", str(save), "--resume"]
    real = loop.train_one_epoch

    def dies(*a, **kw):
        raise RuntimeError("CUDA out of memory") if how == "failed" else KeyboardInterrupt()

    monkeypatch.setattr(loop, "train_one_epoch", dies)
    if how == "failed":
        with pytest.raises(RuntimeError):
            cli("train.py", *cmd)
    else:
        assert cli("train.py", *cmd, check=False).code == 130
    monkeypatch.setattr(loop, "train_one_epoch", real)
    if how == "running":
        write_state(str(save), state="running")
        nonce = uuid.uuid4().hex
        (save / HOLDER).write_text(json.dumps({"nonce": nonce, "machine": machine_identity(), "pid": dead_pid(),
                                               "host": socket.gethostname(), "heartbeat": 3}))
        (save / f".stage.{nonce}").mkdir()
        (save / f".stage.{nonce}" / ".checkpoint.pth.tar.tmp1").write_bytes(b"half a checkpoint")
    np.save(save / "npy" / "0_Output.npy", np.zeros((3, 10), np.float32))    # whatever the attempt left
    assert json.load(open(save / "folder.json"))["state"] == how and not (save / CHECKPOINT).exists()
    code, out, err = cli("train.py", *cmd, check=False)
    assert code == 0, err
    assert "never reached a checkpoint" in out and "from scratch" in out
    state, metrics = json.load(open(save / "folder.json")), json.load(open(save / "metrics.json"))
    assert state["state"] == "finished" and metrics["finished"] and metrics["run_id"] == state["run_id"]
    assert np.load(save / "npy" / "0_Output.npy").shape == (N, 10)
    assert json.load(open(save / "npy" / "manifest.json"))["epochs"]["0"]["run_id"] == state["run_id"]
    assert not [f for f in os.listdir(save) if f.startswith((".stage.", ".retired."))]


def test_train_subset_requeued_before_its_first_checkpoint_restarts(tmp_path, monkeypatch):
    mask = tmp_path / "mask.npy"
    np.save(mask, np.random.default_rng(0).permutation(N))
    cmd = DIGITS + ["--epochs", "1", "--subset_rate", "0.5", "--mask_path", str(mask), "--no_score_weighting",
                    "--save_path", str(tmp_path / "sub"), "--resume"]
    real = loop.train_one_epoch
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("oom")))
    with pytest.raises(RuntimeError):
        cli("train_subset.py", *cmd)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    code, out, err = cli("train_subset.py", *cmd, check=False)
    assert code == 0 and "never reached a checkpoint" in out, err
    # a run of other settings that died the same way is not this run: refused, as before
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("oom")))
    other = cmd[:cmd.index("--save_path")] + ["--save_path", str(tmp_path / "other"), "--resume"]
    with pytest.raises(RuntimeError):
        cli("train_subset.py", *other)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    p = cli("train_subset.py", *[x if x != "0.5" else "0.6" for x in other], check=False)
    one_error_line(p.err, "holds files of a run", "--overwrite")


# ---------------------------------------------------------------- --overwrite: commit-last in reverse
def test_overwrite_cut_short_while_removing_never_leaves_a_finished_record(finished, tmp_path, monkeypatch):
    save = tmp_path / "run"
    shutil.copytree(finished, save)
    original = DIGITS + ["--epochs", "1", "--dynamics", "--save_path", str(save), "--resume"]
    new = DIGITS + ["--epochs", "1", "--dynamics", "--learning_rate", "0.05", "--save_path", str(save), "--resume"]
    removals, real_remove, real_rename = [], os.remove, os.rename

    def killed_at_the_second(path, *rest):
        name = os.path.basename(str(path))
        if str(path).startswith(str(save)) and not name.startswith("."):
            removals.append(name)
            if len(removals) == 2:
                raise KeyboardInterrupt      # the job is killed while it removes the old run's files
        return (real_rename if rest else real_remove)(path, *rest)

    monkeypatch.setattr(os, "remove", killed_at_the_second)
    monkeypatch.setattr(os, "rename", killed_at_the_second)
    assert cli("train.py", *new, "--overwrite", check=False).code == 130
    monkeypatch.setattr(os, "remove", real_remove)
    monkeypatch.setattr(os, "rename", real_rename)
    assert json.load(open(save / "folder.json"))["state"] != "finished"
    code, out, err = cli("train.py", *original, check=False)
    assert "already finished" not in out, out          # the old command does not vouch for half a folder
    code, out, err = cli("train.py", *new, check=False)  # the interrupted command, requeued, finishes
    assert code == 0, err
    state = json.load(open(save / "folder.json"))
    assert state["state"] == "finished" and state["fingerprint"]["--learning_rate"] == 0.05


# ------------------------------------------------------------- write failures name the file the user knows
def _fsync_enospc(monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)


def _record_erofs(monkeypatch):
    real = open

    def read_only(path, mode="r", *a, **kw):
        if "w" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, mode, *a, **kw)
    monkeypatch.setattr(holder, "open", read_only, raising=False)


class _FullDisk:
    """A log file whose flush() fails as a full disk's does: ENOSPC, no file name."""

    def __init__(self, f):
        self.f = f

    def write(self, text):
        return self.f.write(text)

    def flush(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _log_enospc(monkeypatch):
    real = open
    monkeypatch.setattr(outputs, "open", lambda *a, **kw: _FullDisk(real(*a, **kw)), raising=False)


@pytest.mark.parametrize("inject,file,why", [(_fsync_enospc, HOLDER, "the disk is full"),
                                             (_record_erofs, HOLDER, "read-only"),
                                             (_log_enospc, "log_seed_42.txt", "the disk is full")],
                         ids=["lock record, full disk", "lock record, read-only", "log flush, full disk"])
def test_a_write_failure_names_the_file_the_user_knows(tmp_path, monkeypatch, inject, file, why):
    save = tmp_path / "run"
    inject(monkeypatch)
    code, out, err = cli("train.py", *DIGITS, "--epochs", "1", "--save_path", str(save), "--resume", check=False)
    line = one_error_line(err, f"cannot write {save / file}", why)
    assert code == 1 and ".tmp" not in line and "a file" not in line
    if file == HOLDER:       # refused at the lock: nothing was created
        assert not save.exists()
        return
    monkeypatch.undo()       # room again: the same command finishes the run
    quick = {"TDDS_LOCK_GRACE_S": "0.6", "TDDS_LOCK_WAIT_S": "0.4"}
    assert cli("train.py", *DIGITS, "--epochs", "1", "--save_path", str(save), "--resume", env=quick).code == 0


def test_a_finished_scoring_on_a_read_only_folder_is_already_scored(tmp_path, monkeypatch):
    d = write_published(tmp_path / "d", np.random.default_rng(0).standard_normal((4, 60, 5)), seed=0)
    cmd = ["--dynamics_path", d, "--mask_path", str(tmp_path / "m"), "--trajectory_len", "4", "--window_size", "3",
           "--no_plot"]
    cli("importance_evaluation.py", *cmd)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(str(tmp_path / "m")) and
                        mode & os.W_OK else real(p, mode, **kw))
    assert "already scored" in cli("importance_evaluation.py", *cmd).out
    p = cli("importance_evaluation.py", *cmd, "--decay", "0.5", "--overwrite", check=False)
    one_error_line(p.err, "not writable")                  # with something to write: refused before the work


# ------------------------------------------------- the last look before the commit, as the scripts make it
def _usurp(folder):
    (folder / HOLDER).write_text(json.dumps({"nonce": "usurper", "machine": "node-b", "host": "node-b", "pid": 7}))


def test_the_training_commit_rereads_the_record(tmp_path, monkeypatch):
    save = tmp_path / "run"
    real = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **kw: (real(*a, **kw), _usurp(save))[0])
    code, out, err = cli("train.py", *DIGITS, "--epochs", "1", "--save_path", str(save), check=False)
    assert code == 2
    one_error_line(err, "was taken over by pid 7 on node-b", "nothing more was committed")
    assert json.load(open(save / "folder.json"))["state"] == "running"      # not committed, not "failed" either
    assert json.load(open(save / HOLDER))["nonce"] == "usurper"


def test_the_scorer_commit_rereads_the_record(tmp_path, monkeypatch):
    d = write_published(tmp_path / "d", np.random.default_rng(0).standard_normal((4, 60, 5)), seed=0)
    masks = tmp_path / "m"
    real = importance_evaluation.write_score
    monkeypatch.setattr(importance_evaluation, "write_score", lambda *a, **kw: (real(*a, **kw), _usurp(masks))[0])
    p = cli("importance_evaluation.py", "--dynamics_path", d, "--mask_path", masks, "--trajectory_len", "4",
            "--window_size", "3", "--no_plot", check=False)
    one_error_line(p.err, "was taken over by pid 7")
    assert p.code == 2 and not (masks / "info_win3_ep4.json").exists()


# ----------------------------------------------------------------------- the scorer's notes and refusals
def test_scorings_without_manifest_or_info_are_noted_and_a_replaced_score_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    d = write_published(tmp_path / "d", rng.standard_normal((3, N, 10)), rng.integers(0, 10, N), seed=0)
    masks = tmp_path / "m"
    cmd = ["--dynamics_path", d, "--mask_path", masks, "--trajectory_len", "3", "--window_size", "3", "--no_plot"]
    out = cli("importance_evaluation.py", *cmd).out
    assert "has no manifest.json" in out                      # published files: scored, with a note
    os.remove(masks / "info_win3_ep3.json")                   # a scoring cut short before its commit
    out = cli("importance_evaluation.py", *cmd).out
    assert "has no info_win3_ep3.json" in out and "replacing it" in out and (masks / "info_win3_ep3.json").exists()
    for name in ("score_win3_ep3.npy", "dataset_score_win3_ep3.npy"):      # rescaled behind the info's back
        np.save(masks / name, np.load(masks / name) * 2)
    p = cli("train_subset.py", *DIGITS, "--epochs", "1", "--subset_rate", "0.5", "--mask_path",
            masks / "data_mask_win3_ep3.npy", "--score_path", masks / "score_win3_ep3.npy", "--save_path",
            tmp_path / "sub", check=False)
    one_error_line(p.err, "--score_path", "is not the file its info_win3_ep3.json describes")
    flipped = -np.load(masks / "dataset_score_win3_ep3.npy")      # another order: a mask of another scoring
    mask = np.argsort(flipped, kind="stable")
    for name, a in (("data_mask", mask), ("score", flipped[mask]), ("dataset_score", flipped)):
        np.save(masks / f"{name}_win3_ep3.npy", a)
    p = cli("train_subset.py", *DIGITS, "--epochs", "1", "--subset_rate", "0.5", "--mask_path",
            masks / "data_mask_win3_ep3.npy", "--score_path", masks / "score_win3_ep3.npy", "--save_path",
            tmp_path / "sub", check=False)
    one_error_line(p.err, "--mask_path", "is not the file its info_win3_ep3.json describes")
    assert not (tmp_path / "sub").exists()


HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from utils.protocol.lock import FolderLock; "
        "FolderLock(sys.argv[1], '--save_path').acquire(); print('held', flush=True); time.sleep(300)")


def test_readers_take_no_lock(finished, tmp_path, monkeypatch):
    """summarize.py and report.py read committed files only: no lock taken, not a byte written into
    the folders they read (their lock files included), even while a writer holds one of them."""
    import fcntl
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep / "full")
    d = write_published(tmp_path / "d", np.random.default_rng(0).standard_normal((3, N, 10)),
                        np.random.default_rng(1).integers(0, 10, N), seed=0)
    masks = tmp_path / "m"
    cli("importance_evaluation.py", "--dynamics_path", d, "--mask_path", masks, "--trajectory_len", "3",
        "--window_size", "3", "--no_plot")
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep / "full"), ROOT], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "TDDS_LOCK_HEARTBEAT_S": "1000"})   # a writer in it now
    assert writer.stdout.readline().strip() == "held"

    def every_file(root):
        return {os.path.relpath(os.path.join(r, f), root): open(os.path.join(r, f), "rb").read()
                for r, _, fs in os.walk(root) for f in fs}

    try:
        before = every_file(sweep / "full"), every_file(masks)
        monkeypatch.setattr(fcntl, "flock", lambda *a: pytest.fail("a reader took a lock"))
        monkeypatch.setattr(FolderLock, "acquire", lambda *a, **kw: pytest.fail("a reader took a lock"))
        cli("scripts/summarize.py", sweep)
        cli("scripts/report.py", masks, "--dataset", "digits", "--out", tmp_path / "report", "--rates", "0.5")
        assert (every_file(sweep / "full"), every_file(masks)) == before
    finally:
        writer.kill()
        writer.wait()


# --------------------------------------------------------------------------- four promises of the docs
def test_an_epochs_files_are_on_disk_before_its_manifest_entry_and_before_its_checkpoint(tmp_path, monkeypatch):
    """docs/RUNS.md: the manifest records an epoch only after its files; the epoch end's checkpoint
    is written after that epoch's dynamics are on disk (a checkpoint never vouches for missing files)."""
    save = tmp_path / "run"
    real_json, real_torch, checked = manifest.save_json, epoch_end.save_torch, []

    def manifest_after_files(path, m):
        for e, entry in m["epochs"].items():
            for name, f in entry["files"].items():
                on_disk = os.path.join(os.path.dirname(path), name)
                assert os.path.exists(on_disk) and manifest.data_crc32(on_disk) == f["crc32"], (e, name)
        checked.append("manifest")
        return real_json(path, m)

    def checkpoint_after_dynamics(path, state):
        if str(path).endswith(CHECKPOINT) and not state.get("step"):
            done = state["epoch"] - 1                       # the epoch this checkpoint ends
            assert (save / "npy" / f"{done}_Output.npy").exists(), done
            assert str(done) in json.load(open(save / "npy" / "manifest.json"))["epochs"]
            checked.append("checkpoint")
        return real_torch(path, state)

    monkeypatch.setattr(manifest, "save_json", manifest_after_files)
    monkeypatch.setattr(epoch_end, "save_torch", checkpoint_after_dynamics)
    cli("train.py", *DIGITS, "--epochs", "2", "--dynamics", "--save_path", str(save))
    assert checked.count("manifest") == 2 and checked.count("checkpoint") == 2


def test_a_rescoring_removes_the_old_info_before_it_writes_new_arrays(tmp_path, monkeypatch):
    d = write_published(tmp_path / "d", np.random.default_rng(0).standard_normal((4, 60, 5)), seed=0)
    masks = tmp_path / "m"
    cmd = ["--dynamics_path", d, "--mask_path", masks, "--trajectory_len", "4", "--window_size", "3", "--no_plot"]
    cli("importance_evaluation.py", *cmd)
    real, saved = importance_evaluation.save_npy, []

    def after_the_info_went(path, array):
        assert not (masks / "info_win3_ep4.json").exists(), f"{path} written while the old info still vouches"
        saved.append(path)
        return real(path, array)

    monkeypatch.setattr(importance_evaluation, "save_npy", after_the_info_went)
    cli("importance_evaluation.py", *cmd, "--decay", "0.5", "--overwrite")
    assert len(saved) == 3 and json.load(open(masks / "info_win3_ep4.json"))["decay"] == 0.5


def test_the_distillation_teacher_runs_in_eval_mode(finished, tmp_path, monkeypatch):
    teacher = finished / "model_best.pth.tar"
    real, distillers, modes = train_subset.load_teacher, [], []

    def spied(*a, **kw):
        distill, facts = real(*a, **kw)
        distillers.append(distill)
        distill.model.register_forward_pre_hook(lambda m, x: modes.extend(sub.training for sub in m.modules()))
        return distill, facts

    monkeypatch.setattr(train_subset, "load_teacher", spied)
    cli("train_subset.py", *DIGITS, "--epochs", "1", "--subset_rate", "0.5", "--selection", "random",
        "--teacher", teacher, "--kd_alpha", "0.5", "--save_path", tmp_path / "kd")
    assert modes and not any(modes)
    now, was = distillers[0].model.state_dict(), torch.load(teacher, weights_only=True)["model"]
    moving = [k for k in was if "running" in k]
    assert moving and all(torch.equal(now[k].cpu(), was[k]) for k in was)    # batch-norm statistics never moved
