"""Fencing and the heartbeat (utils/protocol/fence.py, lock.py, holder.py): a writer that lost its
folder writes nothing more; the heartbeat never goes quiet silently; a released record never comes
back; real second holders on another machine identity (a heartbeat that moves, one that stops, the same
host name with another boot id or pid namespace); zombies; flock and link() missing. Deterministic: a
second writer runs at a chosen point (a real process stopped with SIGSTOP, or inside the first one's
call), failures are injected; nothing is raced by sleeping."""
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, cli, one_error_line, run_script

import utils.protocol.holder as holder
from utils.errors import UserError, WriteFailed
from utils.protocol.files import save_text
from utils.protocol.holder import HOLDER, LOCK, _clear_record, machine_identity, read_holder, retire_stages
from utils.protocol.lock import FolderLock, check_unlocked, unlock

DIGITS = ["--dataset", "digits", "--arch", "resnet20", "--ngpu", "0", "--batch-size", "256"]
pytestmark = pytest.mark.usefixtures("quick_lock_timings")


def wait_for(condition, timeout=20.0):
    """Poll `condition` until true (a bound, not a race: the outcome does not depend on the timing)."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.01)
    return True


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# A real second holder: acquires FOLDER's lock, then writes theirs.txt through the protocol every 20 ms.
# PATCH (python source) runs first: it may give the process another machine identity.
HOLDER_CODE = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
exec(sys.argv[3])
from utils.errors import run
from utils.protocol.files import save_text
from utils.protocol.lock import FolderLock

def main():
    lock = FolderLock(sys.argv[1], "--save_path").acquire()
    print("held", flush=True)
    i = 0
    while True:
        i += 1
        save_text(os.path.join(sys.argv[1], "theirs.txt"), f"write {i}")
        time.sleep(0.02)

run(main)
"""


def second_holder(folder, patch="", **env):
    env = {**os.environ, "TDDS_LOCK_HEARTBEAT_S": "0.05", **env}
    p = subprocess.Popen([sys.executable, "-c", HOLDER_CODE, str(folder), ROOT, patch], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def test_a_second_holder_on_another_machine_whose_heartbeat_moves_is_alive(tmp_path):
    p = second_holder(tmp_path, TDDS_MACHINE_ID="node-b")
    try:
        with pytest.raises(UserError, match=f"being written by pid {p.pid} on"):
            FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
        with pytest.raises(UserError, match="being written"):
            check_unlocked(str(tmp_path), "--save_path")
        with pytest.raises(UserError, match="is alive"):
            unlock(str(tmp_path), note=lambda m: None)
    finally:
        p.kill()
        p.wait()


def test_a_second_holder_whose_heartbeat_stops_is_taken_over_and_then_writes_nothing(tmp_path):
    """SLURM's suspend is SIGSTOP: the holder is frozen wherever it was (between a check and its rename,
    perhaps). Taken over after the grace; woken up, it stops with one line and commits nothing."""
    p = second_holder(tmp_path, TDDS_MACHINE_ID="node-b")
    try:
        p.send_signal(signal.SIGSTOP)
        assert wait_for(lambda: proc_state(p.pid) == "T")
        notes = []
        lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
        assert any("has not advanced its heartbeat" in n for n in notes), notes
        save_text(tmp_path / "theirs.txt", "ours")
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2, err
        one_error_line(err, str(tmp_path), "was taken over by pid", "nothing more was committed")
        assert (tmp_path / "theirs.txt").read_text() == "ours"           # nothing of theirs landed after
        assert read_holder(str(tmp_path))["nonce"] == lock.rec["nonce"]
        lock.release()
        assert sorted(os.listdir(tmp_path)) == [LOCK, "theirs.txt"]      # no staging folder is left behind
    finally:
        p.kill()
        p.wait()


DEAD_PID_CODE = "import os; os.getpid = lambda: {pid}\nimport utils.protocol.holder as h; h.{probe} = lambda: 'another'"


@pytest.mark.parametrize("probe", ["_boot_id", "_pid_namespace"], ids=["another boot", "another pid namespace"])
def test_the_same_host_name_with_another_machine_id_is_watched_not_judged_by_pid(tmp_path, probe):
    """A container of the same host name (or the same host after a reboot): its pid means nothing here.
    Its record names a pid that is dead here while its heartbeat moves: it must be alive."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    p = second_holder(tmp_path, DEAD_PID_CODE.format(pid=dead.pid, probe=probe))
    try:
        h = read_holder(str(tmp_path))
        assert h["host"] == socket.gethostname() and h["pid"] == dead.pid and h["machine"] != machine_identity()
        with pytest.raises(UserError, match=f"being written by pid {dead.pid}"):
            FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
    finally:
        p.kill()
        p.wait()


def test_a_zombie_holder_is_dead(tmp_path):
    """Killed but not yet reaped by its parent: it writes nothing more, and cannot be stopped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert wait_for(lambda: proc_state(child.pid) == "Z")
        rec = {"nonce": "zombie", "machine": machine_identity(), "host": socket.gethostname(), "pid": child.pid,
               "pid_start": holder._pid_start(child.pid), "slurm_job": None, "slurm_restart": 0, "heartbeat": 0,
               "started": 0, "command": "train.py"}
        (tmp_path / HOLDER).write_text(json.dumps(rec))
        check_unlocked(str(tmp_path), "--save_path")
        notes = []
        FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append).release()
        assert "no longer running" in notes[-1]
        (tmp_path / HOLDER).write_text(json.dumps(rec))
        assert unlock(str(tmp_path), note=notes.append) == 0 and not (tmp_path / HOLDER).exists()
    finally:
        child.wait()


def test_a_dead_nodes_kernel_lock_watches_the_heartbeat_once(tmp_path, monkeypatch):
    fd = os.open(tmp_path / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)        # the dead node's cluster-wide lock
    (tmp_path / HOLDER).write_text(json.dumps({"nonce": "dead", "machine": "node-b", "host": "node-b", "pid": 1,
                                               "heartbeat": 7}))
    watches, real = [], holder._watch
    monkeypatch.setattr(holder, "_watch", lambda *a: watches.append(1) or real(*a))
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert lock.record_only and len(watches) == 1, notes
    assert any("took over the lock" in n for n in notes)
    lock.release()
    os.close(fd)


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK], ids=["ENOSYS", "EOPNOTSUPP", "ENOLCK"])
def test_every_kind_of_missing_flock_falls_back_to_the_record(tmp_path, monkeypatch, err):
    def no_flock(fd, op):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert lock.record_only and len(notes) == 1 and "no flock" in notes[0]
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):       # the record alone keeps one writer
        FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    lock.release()


def test_a_file_system_without_hard_links_creates_the_record_exclusively(tmp_path, monkeypatch):
    """FUSE and SMB mounts refuse link() with EPERM: one note, never a traceback; one writer still."""
    def no_link(src, dst, *a, **kw):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_link)
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    assert any("refuses hard links" in n for n in notes)
    assert read_holder(str(tmp_path))["nonce"] == lock.rec["nonce"]
    with pytest.raises(UserError, match="being written"):
        FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    lock.release()
    assert not (tmp_path / HOLDER).exists()


# ------------------------------------------------------------------------------------ the heartbeat
def failing_open(monkeypatch, when, err):
    """holder.py's open() raises OSError(err) while when(path, mode) holds (an EIO read, a full disk)."""
    real, calls = open, []

    def fake(path, mode="r", *a, **kw):
        if when(str(path), mode):
            calls.append(path)
            raise OSError(err, os.strerror(err))
        return real(path, mode, *a, **kw)

    monkeypatch.setattr(holder, "open", fake, raising=False)
    return calls


def test_one_failed_read_of_its_own_record_does_not_lose_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("TDDS_LOCK_HEARTBEAT_S", "0.02")
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
    failed = []
    reads = failing_open(monkeypatch, lambda p, m: p.endswith(HOLDER) and "r" in m and len(failed) < 5
                         and not failed.append(1), errno.EIO)
    beat = lock.rec["heartbeat"]
    assert wait_for(lambda: reads and lock.rec is not None and lock.rec["heartbeat"] >= beat + 3, timeout=10), \
        "the heartbeat stopped after one failed read"
    assert not lock.lost and read_holder(str(tmp_path))["nonce"] == lock.rec["nonce"]
    save_text(tmp_path / "x.txt", "still ours")
    lock.release()


def test_a_heartbeat_that_cannot_be_written_is_one_note_then_the_run_stops_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("TDDS_LOCK_HEARTBEAT_S", "0.02")
    notes = []
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=notes.append)
    failing_open(monkeypatch, lambda p, m: ".holder." in os.path.basename(p) and "w" in m, errno.ENOSPC)
    assert wait_for(lambda: lock.lost, timeout=10), "the heartbeat failed silently"
    assert [n for n in notes if "cannot write the lock record" in n] == notes and len(notes) == 1, notes
    with pytest.raises(WriteFailed) as e:
        save_text(tmp_path / "x.txt", "after the grace")
    assert e.value.path == str(tmp_path / HOLDER) and "disk is full" in e.value.reason
    assert not (tmp_path / "x.txt").exists()
    lock.release()
    assert not (tmp_path / HOLDER).exists()


def test_a_released_record_never_comes_back(tmp_path, monkeypatch):
    """The heartbeat's write in flight (its fsync takes long, as on a busy NFS server) while release()
    runs: the record must be gone afterwards, not rewritten by the heartbeat."""
    monkeypatch.setenv("TDDS_LOCK_HEARTBEAT_S", "0.02")
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
    entered, go, beater, real = threading.Event(), threading.Event(), [], os.fsync

    def slow_fsync(fd):
        if threading.current_thread() is not threading.main_thread() and not entered.is_set():
            beater.append(threading.current_thread())
            entered.set()
            go.wait(10)
        return real(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    assert entered.wait(10)
    releasing = threading.Thread(target=lock.release)
    releasing.start()
    releasing.join(0.3)             # a release that does not wait for the beat in flight is over by now
    go.set()
    releasing.join(10)
    beater[0].join(10)
    assert not releasing.is_alive() and not beater[0].is_alive()
    assert not (tmp_path / HOLDER).exists()


# ------------------------------------------------------------------------------------------ fencing
def test_a_writer_frozen_between_its_check_and_its_rename_commits_nothing(tmp_path, monkeypatch):
    """The takeover happens after the writer's last look at the record: its rename must still fail."""
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)
    real = FolderLock.ensure_owned

    def check_then_taken_over(self):
        real(self)                             # ours at the check...
        retire_stages(str(tmp_path), self.rec)   # ...then another machine takes the folder (its order)
        _clear_record(str(tmp_path), self.rec)
        (tmp_path / HOLDER).write_text(json.dumps({"nonce": "b", "machine": "node-b", "host": "node-b", "pid": 7}))

    monkeypatch.setattr(FolderLock, "ensure_owned", check_then_taken_over)
    with pytest.raises(UserError, match="was taken over by pid 7 on node-b.*nothing more was committed"):
        save_text(tmp_path / "late.txt", "a late write")
    monkeypatch.setattr(FolderLock, "ensure_owned", real)
    assert not (tmp_path / "late.txt").exists()
    with pytest.raises(UserError, match="was taken over"):     # and nothing after it either
        save_text(tmp_path / "later.txt", "x")
    lock.release()
    assert read_holder(str(tmp_path))["nonce"] == "b"


def test_each_rename_is_preceded_by_a_look_at_the_record(tmp_path):
    """A takeover that does not retire the staging folder (a process of an older version, a record
    replaced by hand) while a file is being written: the look before the rename stops it."""
    from utils.protocol.files import atomic_write
    lock = FolderLock(str(tmp_path), "--save_path").acquire(note=lambda m: None)

    def written_while_taken(f):
        f.write(b"half")
        (tmp_path / HOLDER).write_text(json.dumps({"nonce": "c", "machine": "node-c", "host": "node-c", "pid": 9}))
        f.write(b" and the rest")

    with pytest.raises(UserError, match="was taken over by pid 9 on node-c"):
        atomic_write(tmp_path / "f.bin", written_while_taken)
    assert not (tmp_path / "f.bin").exists() and os.listdir(lock.stage) == []
    lock.release()


def test_a_training_run_taken_over_writes_nothing_more(tmp_path, monkeypatch):
    """Issue 31, hole 1: run A is paused past the grace (its heartbeat still); run B of other settings,
    on another machine, takes the folder over with --overwrite and commits. A then goes on: it must stop
    with one line, and the folder holds B's run only (folder.json, metrics.json, the checkpoint)."""
    import utils.training.loop as loop
    save = tmp_path / "run"
    a_cmd = DIGITS + ["--epochs", "2", "--save_path", str(save)]
    b_cmd = DIGITS + ["--epochs", "1", "--learning_rate", "0.05", "--save_path", str(save)]
    monkeypatch.setenv("TDDS_LOCK_HEARTBEAT_S", "1000")             # A's heartbeat stands still
    evaluate, ran = loop.evaluate, []

    def b_takes_over(*a, **kw):
        if not ran:
            ran.append(run_script("train.py", *b_cmd, "--overwrite",
                                  env={"TDDS_MACHINE_ID": "node-b", "TDDS_LOCK_HEARTBEAT_S": "10"}, check=False))
        return evaluate(*a, **kw)

    monkeypatch.setattr(loop, "evaluate", b_takes_over)
    code, out, err = cli("train.py", *a_cmd, check=False)
    assert ran[0].returncode == 0, ran[0].stderr[-2000:]
    assert code == 2, (out, err[-2000:])
    one_error_line(err, str(save), "nothing more was committed")
    import torch
    state = json.load(open(save / "folder.json"))
    metrics = json.load(open(save / "metrics.json"))
    ck = torch.load(save / "checkpoint.pth.tar", weights_only=True)
    assert state["state"] == "finished" and state["fingerprint"]["--learning_rate"] == 0.05
    assert metrics["run_id"] == state["run_id"] and metrics["epochs"] == 1
    assert ck["fingerprint"]["--learning_rate"] == 0.05 and ck["run_info"]["run_id"] == state["run_id"]
    monkeypatch.setattr(loop, "evaluate", evaluate)
    code, out, err = cli("train.py", *b_cmd, check=False)
    assert code == 0 and "already finished" in out and f"final {metrics['final_acc']:.2f}%" in out, (out, err)
