"""Nothing lost: a run killed with SIGKILL and resumed gives the same dynamics and metrics as an
uninterrupted one; an interrupted write leaves the old file or none."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (FULL_RUN, ROOT, assert_same_checkpoint, assert_same_state, assert_user_error, cli,
                      folder_digest)
from utils.protocol.files import save_npy


def _kill_after_epochs(script, flags, save, k, timeout=300):
    """Start `python script flags` as a process, SIGKILL it as soon as metrics.json reports >= k
    completed epochs; its exit status."""
    proc = subprocess.Popen([sys.executable, script, *flags], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if json.loads((save / "metrics.json").read_text())["completed_epochs"] >= k:
                    proc.send_signal(signal.SIGKILL)
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.01)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


def assert_same_metrics(ref, cut):
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert b["finished"] and b["completed_epochs"] == a["completed_epochs"]
    assert_same_state(a, b, skip=("seconds", "train_seconds", "run_id"), where="metrics.json")


@pytest.mark.parametrize("fmt", ["logits", "contrib"])
def test_train_killed_and_resumed_equals_uninterrupted(request, cifar10_dir, tmp_path, fmt):
    """The shared full_run (or its contrib twin), and the same command SIGKILLed after 2 of its 5
    epochs, refused without --resume, then resumed: every .npy byte, metrics.json and the final
    checkpoint's state (model, optimizer, scheduler, random streams) are the uninterrupted run's."""
    ref = Path(request.getfixturevalue("full_run" if fmt == "logits" else "full_run_contrib"))
    cut = tmp_path / "cut"
    flags = ["--data_path", cifar10_dir, *FULL_RUN, "--dynamics_format", fmt, "--save_path", str(cut)]
    rc = _kill_after_epochs("train.py", flags, cut, 2)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    assert json.loads((cut / "metrics.json").read_text())["finished"] is False
    # without --resume the half-done run is not overwritten
    before = folder_digest(cut)
    assert_user_error(cli("train.py", *flags, check=False), "already holds a run")
    assert folder_digest(cut) == before
    (cut / "npy" / ".3_Output.npy.tmp12345").write_bytes(b"half a file")  # what a kill mid-write leaves
    cli("train.py", *flags, "--resume")
    assert not (cut / "npy" / ".3_Output.npy.tmp12345").exists()
    assert_same_metrics(ref, cut)
    files = sorted(f for f in os.listdir(ref / "npy") if f.endswith(".npy"))
    assert files == sorted(f for f in os.listdir(cut / "npy") if f.endswith(".npy")) and len(files) > 5
    # bit-identical: on CPU the resumed run does the same float operations in the same order
    assert [f for f in files if (cut / "npy" / f).read_bytes() != (ref / "npy" / f).read_bytes()] == []
    assert_same_checkpoint(ref, cut)
    assert not [f for f in os.listdir(cut) if ".tmp" in f]


def test_train_subset_killed_and_resumed(cifar10_dir, tmp_path):
    n = 160
    order = np.random.default_rng(0).permutation(n)
    np.save(tmp_path / "mask.npy", order)
    np.save(tmp_path / "score.npy", np.sort(np.random.default_rng(1).random(n)).astype(np.float32))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    flags = ["--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet20", "--epochs", "6",
             "--batch-size", "32", "--ngpu", "0", "--subset_rate", "0.25", "--mask_path", str(tmp_path / "mask.npy"),
             "--score_path", str(tmp_path / "score.npy")]
    cli("train_subset.py", *flags, "--save_path", str(ref))
    rc = _kill_after_epochs("train_subset.py", [*flags, "--save_path", str(cut)], cut, 2)
    assert rc == -signal.SIGKILL
    cli("train_subset.py", *flags, "--save_path", str(cut), "--resume")
    assert_same_metrics(ref, cut)
    assert_same_checkpoint(ref, cut)


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "3_Output.npy"
    save_npy(path, np.arange(10))

    def broken_save(f, arr):
        f.write(b"\x93NUMPY partial")  # half a file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_npy(path, np.zeros(1000))
    monkeypatch.undo()
    assert np.array_equal(np.load(path), np.arange(10))
    assert os.listdir(tmp_path) == ["3_Output.npy"]


def test_sigkill_during_writes_leaves_complete_files(tmp_path):
    """A writer killed at a random moment: every file present loads completely (and one at least is
    present: the kill comes after the first file is complete, so the check cannot pass vacuously)."""
    for k, delay in enumerate((0.0, 0.05, 0.13)):
        folder = tmp_path / str(k)   # a fresh folder each time: no file of an earlier writer counts
        folder.mkdir()
        code = ("import numpy as np, sys; sys.path.insert(0, %r)\n"
                "from utils.protocol.files import save_npy\n"
                "i = 0\n"
                "while True:\n"
                "    save_npy(%r + f'/{i %% 3}_Output.npy', np.full((500, 1000), i, dtype=np.float32)); i += 1\n"
                % (ROOT, str(folder)))
        proc = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.time() + 60   # the first file complete (the interpreter may start slowly) ...
        while not (folder / "0_Output.npy").exists() and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(delay)             # ... then a kill at some point of a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        complete = [f for f in os.listdir(folder) if f.endswith("_Output.npy") and not f.startswith(".")]
        assert complete, "nothing was written before the kill: the test would check nothing"
        for f in complete:
            a = np.load(folder / f)
            assert a.shape == (500, 1000) and (a == a.flat[0]).all(), f
