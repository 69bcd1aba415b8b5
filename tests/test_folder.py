"""A folder knows what it holds (utils/protocol/): one writer, idempotent commands, dynamics of one run."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, assert_user_error, cli, folder_digest, run_script
from utils.errors import UserError
from utils.protocol.lock import FolderLock, check_unlocked
from utils.protocol.manifest import check_trajectory, record_epoch
from utils.science.scores import Dynamics, compute_score

DIGITS = ("--dataset", "digits", "--arch", "resnet20", "--ngpu", "0", "--batch-size", "256")


def hold_lock(folder):
    """A process that holds `folder`'s lock until killed."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from utils.protocol.lock import FolderLock; "
            "FolderLock(sys.argv[1], '--save_path').acquire(); print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder), ROOT], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_one_writer_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(UserError, match=f"being written by pid {holder.pid}"):
            check_unlocked(str(tmp_path), "--save_path")
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            FolderLock(str(tmp_path), "--save_path").acquire()
        before = folder_digest(tmp_path)
        p = cli("train.py", *DIGITS, "--epochs", "1", "--save_path", str(tmp_path), "--overwrite", check=False)
        assert_user_error(p, f"pid {holder.pid}", "one writer per folder", "python -m utils.protocol.unlock")
        nonce = json.load(open(tmp_path / ".holder.json"))["nonce"]      # (its staging folder: fence.py)
        assert folder_digest(tmp_path) == before
        assert sorted(os.listdir(tmp_path)) == [".holder.json", ".lock", f".stage.{nonce}"]
        # the manual takeover refuses while the holder lives
        p = run_script(sys.executable, "-m", "utils.protocol.unlock", str(tmp_path), check=False)
        assert_user_error(p, "is alive")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    check_unlocked(str(tmp_path), "--save_path")           # a dead pid on this machine: dead at once
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "no longer running" in notes[0]
    lock.release()
    assert os.listdir(tmp_path) == [".lock"]               # released: no record


def _epoch(folder, e, run_id, z):
    files = {f"{e}_Output.npy": z, f"{e}_Index.npy": np.arange(len(z))}
    for name, a in files.items():
        np.save(os.path.join(folder, name), a)
    record_epoch(str(folder), e, run_id, files)


def test_scorer_refuses_two_runs_and_changed_files(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 50, 5)).astype(np.float32)
    for e in range(4):
        _epoch(tmp_path, e, "a" if e != 2 else "b", z[e])
    with pytest.raises(UserError, match=r"mixes runs: epochs 0-1, 3 by run a; epochs 2 by run b"):
        Dynamics(str(tmp_path), 4)
    assert Dynamics(str(tmp_path), 2).run_id == "a"
    with pytest.raises(UserError, match="epochs 2-3 are not in"):
        check_trajectory({"epochs": {"0": {"run_id": "a", "files": {}}, "1": {"run_id": "a", "files": {}}}},
                         range(4), "x")
    # a file replaced behind the manifest's back is found on the bytes the scorer streams
    _epoch(tmp_path, 2, "a", z[2])
    good = compute_score(Dynamics(str(tmp_path), 4), "tdds", 4, 3, 0.9, progress=False)
    np.save(tmp_path / "1_Output.npy", z[1] + 1e-3)
    with pytest.raises(UserError, match="1_Output.npy is not the file its run recorded"):
        compute_score(Dynamics(str(tmp_path), 4), "tdds", 4, 3, 0.9, progress=False)
    for chunk in (7, 50):   # chunked reads verify too
        np.save(tmp_path / "1_Output.npy", z[1])
        np.testing.assert_array_equal(good, compute_score(Dynamics(str(tmp_path), 4), "tdds", 4, 3, 0.9,
                                                          chunk_size=chunk, progress=False))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    save = tmp_path_factory.mktemp("run") / "full"
    cli("train.py", *DIGITS, "--epochs", "3", "--dynamics", "--save_path", str(save))
    return save


def test_deleted_checkpoint_same_command_is_done_other_command_refused(finished, tmp_path):
    os.remove(finished / "checkpoint.pth.tar")                 # to save disk
    before = folder_digest(finished)
    p = cli("train.py", *DIGITS, "--epochs", "3", "--dynamics", "--save_path", str(finished), "--resume")
    assert "already finished" in p.stdout and "nothing rewritten" in p.stdout
    assert folder_digest(finished) == before
    # --overwrite replaces runs of other settings only: this one is still done
    p = cli("train.py", *DIGITS, "--epochs", "3", "--dynamics", "--save_path", str(finished), "--overwrite")
    assert "already finished" in p.stdout and folder_digest(finished) == before
    p = cli("train.py", *DIGITS, "--epochs", "2", "--dynamics", "--save_path", str(finished), "--resume",
                   check=False)
    assert_user_error(p, "finished run", "--epochs 3 (now 2)", "--overwrite")
    assert folder_digest(finished) == before
    # scoring the run twice: the second call rewrites nothing; other settings into its files are refused
    masks = tmp_path / "masks"
    cmd = ("importance_evaluation.py", "--dynamics_path", str(finished / "npy"), "--mask_path", str(masks),
           "--trajectory_len", "3", "--window_size", "3")
    cli(*cmd)
    scored = folder_digest(masks)
    assert "already scored" in cli(*cmd).stdout and folder_digest(masks) == scored
    assert_user_error(cli(*cmd, "--decay", "0.5", check=False), "decay 0.9 (now 0.5)", "--overwrite")
    assert folder_digest(masks) == scored
    # --no_plot with --overwrite leaves no histogram of the older scoring
    cli(*cmd, "--decay", "0.5", "--overwrite", "--no_plot")
    assert not (masks / "score_hist_win3_ep3.png").exists()


def test_run_files_without_checkpoint_are_refused(tmp_path):
    save = tmp_path / "run"
    (save / "npy").mkdir(parents=True)
    np.save(save / "npy" / "2_Output.npy", np.zeros((3, 3), np.float32))
    before = folder_digest(save)
    p = cli("train.py", *DIGITS, "--epochs", "2", "--dynamics", "--save_path", str(save), "--resume",
                   check=False)
    assert_user_error(p, "no checkpoint.pth.tar to resume it from", "--overwrite")
    assert folder_digest(save) == before


def test_full_disk_is_one_line_and_resume_finishes(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here (test_protocol.py injects the same failures everywhere)")
    try:
        save = mnt / "run"
        cmd = ("train.py", *DIGITS, "--epochs", "2", "--save_path", str(save), "--resume")
        p = cli(*cmd, check=False)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert p.stderr.strip().startswith("error:") and "the disk is full" in p.stderr, p.stderr
        assert f"cannot write {save}" in p.stderr and ".tmp" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        import torch
        ck = torch.load(save / "checkpoint.pth.tar", weights_only=True)   # the last checkpoint is intact
        assert 1 <= ck["epoch"] < 2
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        cli(*cmd)
        import json
        assert json.load(open(save / "metrics.json"))["finished"] is True
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
