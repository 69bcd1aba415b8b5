"""The write protocol of utils/protocol/: decided under the lock, every refusal's way on followed,
locks that hold on shared file systems, every write failure one line. Deterministic: a second host, a
clock skew, a file system without flock, a failing torch.save are injected; a second writer runs at a
chosen point (inside the first one's call), never raced by sleeping."""
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import torch
from conftest import cli, folder_digest, one_error_line, write_published

import importance_evaluation
import train
from utils.errors import Preempted, UserError
from utils.protocol.fingerprint import file_sha256, fingerprint_diffs, run_fingerprint
from utils.protocol.holder import HOLDER, LOCK, _write_record, machine_identity, read_holder
from utils.protocol.lock import FolderLock, check_unlocked, unlock
from utils.protocol.outputs import CHECKPOINT
from utils.protocol.run import REFUSALS, RunFolder, open_run, write_state

DIGITS = ["--dataset", "digits", "--arch", "resnet20", "--ngpu", "0", "--batch-size", "256"]
BASE = DIGITS + ["--epochs", "3"]


pytestmark = pytest.mark.usefixtures("quick_lock_timings")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real run folders of BASE: `stopped` after 2 of 3 epochs (--stop_epoch 2), `finished`."""
    root = tmp_path_factory.mktemp("runs")
    stopped, finished = root / "stopped", root / "finished"
    assert cli("train.py", *BASE + ["--stop_epoch", "2", "--save_path", str(stopped)], check=False)[0] == 0
    shutil.copytree(stopped, finished)
    assert cli("train.py", *BASE + ["--resume", "--save_path", str(finished)], check=False)[0] == 0
    global FACTS_FROM
    FACTS_FROM = finished
    return {"stopped": stopped, "finished": finished}


def copy(runs, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(runs[name], dst)
    return dst


# ------------------------------------------------------------------ every refusal and its way on
FACTS_FROM = None   # a run folder of BASE (the `runs` fixture): its fingerprint's run facts


def _open(argv):
    """open_run for train.py's argv, with the run facts of the module's runs (same data, same device)."""
    args = train.parse_args(argv)
    facts = {k: v for k, v in json.load(open(FACTS_FROM / "folder.json"))["fingerprint"].items()
             if not k.startswith("--")}
    return open_run(args, run_fingerprint(args, **facts), stop_epoch=args.stop_epoch)


def _interrupted(runs, tmp_path):
    d = copy(runs, "stopped", tmp_path)
    write_state(str(d), state="running")          # its writer died: read as interrupted
    return d


def _unversioned(runs, tmp_path):
    d = _interrupted(runs, tmp_path)
    ck = torch.load(d / CHECKPOINT, weights_only=True)
    del ck["fingerprint"]
    torch.save(ck, d / CHECKPOINT)
    return d


def _lost(runs, tmp_path, *files):
    d = copy(runs, "finished", tmp_path)
    for f in files:
        os.remove(d / f)
    return d


def _stopped_without_ck(runs, tmp_path):
    d = copy(runs, "stopped", tmp_path)
    os.remove(d / CHECKPOINT)
    return d


def _files_only(runs, tmp_path):
    d = tmp_path / "files"
    (d / "npy").mkdir(parents=True)
    np.save(d / "npy" / "2_Output.npy", np.zeros((3, 3), np.float32))
    return d


# (refusal, make the folder, the refused command's extra flags, {way: (flags after following it, action)})
# A way "other_save_path" runs the refused flags into an empty folder; "resume_from" flags name the
# stopped run's checkpoint.
LR = ["--learning_rate", "0.05"]
TABLE = [
    ("ended_other_settings", lambda r, t: copy(r, "finished", t), LR + ["--resume"],
     {"same_settings": (["--resume"], "done"), "overwrite": (LR + ["--resume", "--overwrite"], "fresh"),
      "other_save_path": (LR + ["--resume"], "fresh")}),
    ("done_files_lost", lambda r, t: _lost(r, t, "metrics.json", CHECKPOINT), ["--resume"],
     {"overwrite": (["--resume", "--overwrite"], "fresh"), "other_save_path": (["--resume"], "fresh")}),
    ("stopped_no_resume", lambda r, t: copy(r, "stopped", t), [],
     {"resume": (["--resume"], "resume"), "overwrite": (["--overwrite"], "fresh")}),
    ("stopped_no_checkpoint", _stopped_without_ck, ["--resume"],
     {"overwrite": (["--resume", "--overwrite"], "fresh"), "other_save_path": (["--resume"], "fresh")}),
    ("run_no_resume", _interrupted, [],
     {"resume": (["--resume"], "resume"), "overwrite": (["--overwrite"], "fresh")}),
    ("files_no_checkpoint", lambda r, t: _files_only(r, t), ["--resume"],
     {"overwrite": (["--resume", "--overwrite"], "fresh"), "other_save_path": (["--resume"], "fresh")}),
    ("checkpoint_other_settings", _interrupted, LR + ["--resume"],
     {"same_settings": (["--resume"], "resume"), "overwrite": (LR + ["--resume", "--overwrite"], "fresh")}),
    ("checkpoint_unversioned", _unversioned, ["--resume"],
     {"overwrite": (["--resume", "--overwrite"], "fresh")}),
    ("resume_into_other_run", lambda r, t: copy(r, "finished", t), ["resume_from"],
     {"other_save_path": (["resume_from"], "resume"), "overwrite": (["resume_from", "--overwrite"], "resume")}),
    ("resume_from_other_settings", lambda r, t: t / "empty", LR + ["resume_from"],
     {"same_settings": (["resume_from"], "resume"), "drop_resume": (LR, "fresh")}),
]
WAY_WORDS = {"overwrite": "--overwrite", "resume": "--resume", "other_save_path": "--save_path",
             "same_settings": "settings", "drop_resume": "without --resume"}


def test_every_refusal_is_in_the_table():
    assert {key for key, *_ in TABLE} == set(REFUSALS)


@pytest.mark.parametrize("key,make,flags,ways", TABLE, ids=[t[0] for t in TABLE])
def test_each_refusal_and_following_its_advice(runs, tmp_path, key, make, flags, ways):
    resume_from = str(runs["stopped"] / CHECKPOINT)

    def argv(extra, save):
        extra = [x for f in extra for x in (["--resume", resume_from] if f == "resume_from" else [f])]
        return BASE + extra + ["--save_path", str(save)]

    folder = make(runs, tmp_path)
    before = folder_digest(folder) if os.path.isdir(folder) else None
    with pytest.raises(UserError) as refused:
        _open(argv(flags, folder))
    message, template = str(refused.value), REFUSALS[key][0]
    assert max(re.split(r"\{[^}]*\}", template), key=len) in message, (key, message)
    assert set(ways) == set(REFUSALS[key][1])
    for way in ways:
        assert WAY_WORDS[way] in message, (way, message)
    assert (folder_digest(folder) if os.path.isdir(folder) else None) == before   # refused: nothing written
    for way, (extra, action) in ways.items():
        target = tmp_path / f"elsewhere-{way}" if way == "other_save_path" else folder
        opened = _open(argv(extra, target))
        assert opened.decision["action"] == action, (key, way, opened.decision)
        opened.release()


# ----------------------------------------------------------------- the 8 points, end to end
def test_resume_overwrite_replaces_other_settings_and_lost_metrics_are_repaired(runs, tmp_path):
    # 1: --resume --overwrite (what every line of an OVERWRITE=1 sweep runs) on a finished run of other settings
    d = copy(runs, "finished", tmp_path)
    code, out, err = cli("train.py", *DIGITS, "--epochs", "1", "--resume", "--overwrite", "--save_path", d, check=False)
    assert code == 0, err
    st = json.load(open(d / "folder.json"))
    assert st["state"] == "finished" and st["fingerprint"]["--epochs"] == 1
    assert json.load(open(d / "metrics.json"))["epochs"] == 1
    # 2: a finished run whose metrics.json was lost is rebuilt from its checkpoint, with nothing trained
    d = copy(runs, "finished", tmp_path / "b")
    was = json.load(open(d / "metrics.json"))
    os.remove(d / "metrics.json")
    code, out, err = cli("train.py", *BASE + ["--resume", "--save_path", str(d)], check=False)
    assert code == 0 and "rebuilding it" in out, (out, err)
    now = json.load(open(d / "metrics.json"))
    assert {k: v for k, v in now.items() if k != "seconds"} == {k: v for k, v in was.items() if k != "seconds"}
    before = folder_digest(d)
    code, out, _ = cli("train.py", *BASE + ["--resume", "--save_path", str(d)], check=False)
    assert code == 0 and "already finished" in out and folder_digest(d) == before


def test_a_smaller_stop_epoch_is_done_a_larger_one_resumes(runs, tmp_path):
    # 6: stopped after 2 epochs; the sweep with fewer rates asks for T = 1
    d = copy(runs, "stopped", tmp_path)
    before = folder_digest(d)
    for stop in ("1", "2"):
        code, out, err = cli("train.py", *BASE, "--stop_epoch", stop, "--resume", "--save_path", d, check=False)
        assert code == 0 and "already stopped" in out, (out, err)
        assert folder_digest(d) == before
    assert _open(BASE + ["--stop_epoch", "3", "--resume", "--save_path", str(d)]).decision["action"] == "resume"


def test_a_second_trainer_while_the_first_decides_is_found_under_the_lock(tmp_path, monkeypatch):
    # 4: B (other settings) runs to the end while A has not yet taken the lock: A must refuse, not train over B
    save = tmp_path / "run"
    cmd = DIGITS + ["--epochs", "1", "--save_path", str(save)]
    acquire, calls = FolderLock.acquire, []

    def acquire_after_b(self, note=print):
        if not calls:
            calls.append(1)
            assert cli("train.py", *cmd + ["--learning_rate", "0.05"], check=False)[0] == 0
        return acquire(self, note)

    monkeypatch.setattr(FolderLock, "acquire", acquire_after_b)
    code, out, err = cli("train.py", *cmd, check=False)
    one_error_line(err, "holds a finished run", "--learning_rate 0.05 (now 0.1)")
    assert code == 2 and json.load(open(save / "folder.json"))["fingerprint"]["--learning_rate"] == 0.05


def _dynamics(tmp_path, name, seed):
    rng = np.random.default_rng(seed)
    return write_published(tmp_path / name, rng.standard_normal((4, 60, 5)), rng.integers(0, 5, 60), seed=seed)


def test_two_scorers_into_one_folder_the_later_commit_does_not_replace(tmp_path, monkeypatch):
    # 3: A starts first, B (other dynamics, same tag) commits while A computes; A then refuses
    a, b, masks = _dynamics(tmp_path, "a", 0), _dynamics(tmp_path, "b", 1), tmp_path / "masks"
    cmd = ["--mask_path", str(masks), "--trajectory_len", "4", "--window_size", "3", "--no_plot"]
    compute, calls = importance_evaluation.compute_scores, []

    def compute_after_b(*a_, **kw):
        if not calls:
            calls.append(1)
            assert cli("importance_evaluation.py", *["--dynamics_path", b] + cmd, check=False)[0] == 0
        return compute(*a_, **kw)

    monkeypatch.setattr(importance_evaluation, "compute_scores", compute_after_b)
    code, out, err = cli("importance_evaluation.py", *["--dynamics_path", a] + cmd, check=False)
    assert code == 2, (out, err)
    one_error_line(err, "records a scoring with dynamics", "--overwrite")
    info = json.load(open(masks / "info_win3_ep4.json"))
    assert info["dynamics_path"] == os.path.abspath(b)
    assert file_sha256(masks / "data_mask_win3_ep4.npy") == info["sha256"]["mask"]   # B's files, intact


def test_no_flock_falls_back_to_the_record(tmp_path, monkeypatch):
    # 5: Lustre -o noflock: flock fails with ENOSYS
    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    notes = []
    lock = FolderLock(str(tmp_path), "--mask_path").acquire(note=notes.append)
    assert len(notes) == 1 and "no flock" in notes[0]
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):     # the record alone keeps one writer
        FolderLock(str(tmp_path), "--mask_path").acquire(note=notes.append)
    lock.release()
    assert not (tmp_path / HOLDER).exists()
    d = _dynamics(tmp_path, "d", 0)
    code, out, err = cli("importance_evaluation.py", "--dynamics_path", d, "--mask_path", tmp_path / "m",
                         "--trajectory_len", "4", "--window_size", "3", "--no_plot", check=False)
    assert code == 0 and "no flock" in out and err.count("Traceback") == 0, err


def test_write_failures_are_one_line_naming_the_file_and_resume_finishes(tmp_path, monkeypatch):
    # 7: torch.save's own errno-less RuntimeError on the second epoch's checkpoint
    save = tmp_path / "run"
    cmd = DIGITS + ["--epochs", "2", "--save_path", str(save), "--resume"]
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 3:     # epoch 0: checkpoint and model_best; epoch 1: the checkpoint fails
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/3: file write failed")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    code, out, err = cli("train.py", *cmd, check=False)
    line = one_error_line(err, f"cannot write {save / CHECKPOINT}", "PytorchStreamWriter", "--resume")
    assert code == 1 and ".tmp" not in line
    assert torch.load(save / CHECKPOINT, weights_only=True)["epoch"] == 1        # the previous one, loadable
    assert json.load(open(save / "folder.json"))["state"] == "failed"
    monkeypatch.setattr(torch, "save", real_save)
    code, out, err = cli("train.py", *cmd, check=False)
    assert code == 0 and json.load(open(save / "metrics.json"))["finished"] is True, err
    # EDQUOT on a scoring's array, raised without a file name: the line names the file the user knows
    real_np_save = np.save

    def quota(f, *a, **kw):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    dynamics, masks = _dynamics(tmp_path, "q", 0), tmp_path / "masks"
    monkeypatch.setattr(np, "save", quota)
    code, out, err = cli("importance_evaluation.py", "--dynamics_path", dynamics, "--mask_path", masks,
                         "--trajectory_len", "4", "--window_size", "3", "--no_plot", check=False)
    monkeypatch.setattr(np, "save", real_np_save)
    line = one_error_line(err, f"cannot write {masks / 'data_mask_win3_ep4.npy'}", "quota")
    assert code == 1 and "BufferedWriter" not in line and ".tmp" not in line
    assert not (masks / "info_win3_ep4.json").exists()


# ------------------------------------------------------------------ the lock record and liveness
def _record(folder, **kw):
    rec = {"nonce": "theirs", "machine": "node-b/boot/pid:[1]", "host": "node-b", "pid": 4242, "pid_start": None,
           "slurm_job": None, "slurm_restart": 0, "started": time.time() - 86400 * 365, "heartbeat": 0,
           "command": "train.py"}
    rec.update(kw)
    with open(os.path.join(folder, HOLDER), "w") as f:
        json.dump(rec, f)
    return rec


def _beating(folder, rec):
    """A live holder elsewhere: its heartbeat advances (its timestamps are a year off: never compared)."""
    stop = threading.Event()

    def beat():
        while not stop.wait(0.05):
            rec["heartbeat"] += 1
            _write_record(str(folder), rec, exclusive=False)

    threading.Thread(target=beat, daemon=True).start()
    return stop


def test_a_half_written_record_is_held_and_the_manual_takeover_clears_it(tmp_path):
    (tmp_path / HOLDER).write_bytes(b'{"nonce": "x", "pid": 12')
    with pytest.raises(UserError, match="cannot be read.*unlock"):
        FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
    assert unlock(str(tmp_path), note=lambda m: None) == 0
    FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None).release()


@pytest.mark.parametrize("host", ["node-b", socket.gethostname()], ids=["other host", "container, same hostname"])
def test_liveness_is_a_moving_heartbeat_on_the_readers_clock(tmp_path, host):
    rec = _record(tmp_path, host=host, pid=os.getpid())     # a pid number that is alive here means nothing there
    stop = _beating(tmp_path, rec)
    try:
        with pytest.raises(UserError, match="being written by pid"):
            FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
        with pytest.raises(UserError, match="is alive"):
            unlock(str(tmp_path), note=lambda m: None)
    finally:
        stop.set()
    time.sleep(0.1)
    notes = []
    t0 = time.monotonic()
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)   # still: dead after the grace
    assert time.monotonic() - t0 >= 0.6 and "has not advanced its heartbeat" in notes[-1]
    lock.release()


def test_slurm_requeue_is_dead_at_once_another_task_is_alive(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    _record(tmp_path, slurm_job="777", slurm_restart=0)
    with pytest.raises(UserError, match="SLURM job 777"):           # the same life: another task of the job
        FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")                   # requeued: the record is its earlier life
    notes, t0 = [], time.monotonic()
    FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append).release()
    assert time.monotonic() - t0 < 0.5 and "requeued" in notes[-1]


def test_a_dead_holder_on_this_machine_is_dead_at_once(tmp_path):
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    _record(tmp_path, machine=machine_identity(), host=socket.gethostname(), pid=p.pid)
    notes = []
    FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append).release()
    assert "no longer running" in notes[-1]


def test_a_reader_lock_is_waited_for_and_a_dead_nodes_kernel_lock_is_passed(tmp_path):
    fd = os.open(tmp_path / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)                    # a reader (of an older kind) holds a shared lock briefly
    threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert any("waiting for a reader" in n for n in notes) and not lock.record_only
    lock.release()
    # a dead node keeps the cluster-wide kernel lock: its record (heartbeat still) decides
    fcntl.flock(fd, fcntl.LOCK_EX)
    _record(tmp_path)
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert lock.record_only and any("kernel lock is still held" in n for n in notes)
    lock.release()
    # ... and without a record, after the bounded wait
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert lock.record_only and any("wrote no lock record" in n for n in notes)
    lock.release()
    os.close(fd)


def test_readers_take_no_lock_and_a_taken_folder_commits_nothing(tmp_path):
    lock = FolderLock(str(tmp_path), "--mask_path").acquire(note=lambda m: None)
    with pytest.raises(UserError, match="being written"):
        check_unlocked(str(tmp_path), "--mask_path")
    assert read_holder(str(tmp_path))["nonce"] == lock.rec["nonce"]
    _record(tmp_path, nonce="usurper")                # taken over meanwhile (a misjudged takeover elsewhere)
    with pytest.raises(UserError, match="was taken over by pid 4242.*nothing more was committed"):
        lock.ensure_owned()
    lock.release()
    assert read_holder(str(tmp_path))["nonce"] == "usurper"        # not ours: left alone


def test_only_the_rank_that_opened_the_folder_writes_it_after_a_preemption(tmp_path):
    args = train.parse_args(BASE + ["--save_path", str(tmp_path)])
    folder = RunFolder(args, None, {"action": "resume", "remove": False, "resume_from": None}, None, {}, main=False)
    folder.run_id = "r"
    # the process group is gone after a preemption, so every rank would call itself rank 0 now
    with pytest.raises(Preempted):
        with folder:
            raise Preempted(143)
    folder.end({"finished": True})
    assert not (tmp_path / "folder.json").exists()


def test_a_flag_that_acts_on_nothing_is_not_identity():
    base = {"--selection": "random", "--no_score_weighting": False, "--mis_ratio": 0.0, "--strata": 50}
    assert fingerprint_diffs(base, {**base, "--no_score_weighting": True, "--strata": 10}) == []
    top = {**base, "--selection": "top"}
    assert fingerprint_diffs(top, {**top, "--no_score_weighting": True}) == \
        ["--no_score_weighting False (now True)"]
