"""Nothing lost: a run killed with SIGKILL and resumed gives the same dynamics and metrics as an
uninterrupted one; an interrupted write leaves the old file or none."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_script
from utils.io import save_npy


def _train_cmd(script, data_dir, save, epochs, *extra):
    return [sys.executable, script, "--data_path", data_dir, "--dataset", "cifar10", "--arch", "resnet20",
            "--epochs", str(epochs), "--batch-size", "32", "--ngpu", "0", "--save_path", str(save), *extra]


def _kill_after_epochs(cmd, save, k, timeout=300):
    """Start cmd, SIGKILL it as soon as metrics.json reports >= k completed epochs."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


@pytest.mark.parametrize("fmt", ["logits", "contrib"])
def test_train_killed_and_resumed_equals_uninterrupted(cifar10_dir, tmp_path, fmt):
    epochs = 5
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    extra = ("--dynamics", "--dynamics_format", fmt)
    subprocess.run(_train_cmd("train.py", cifar10_dir, ref, epochs, *extra), cwd=ROOT, check=True,
                   capture_output=True)
    rc = _kill_after_epochs(_train_cmd("train.py", cifar10_dir, cut, epochs, *extra), cut, 2)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    assert json.loads((cut / "metrics.json").read_text())["finished"] is False
    # without --resume the half-done run is not overwritten
    p = run_script(*_train_cmd("train.py", cifar10_dir, cut, epochs, *extra)[1:], check=False)
    assert p.returncode == 2 and "already holds a run" in p.stderr
    (cut / "npy" / ".3_Output.npy.tmp12345").write_bytes(b"half a file")  # what a kill mid-write leaves
    run_script(*_train_cmd("train.py", cifar10_dir, cut, epochs, *extra, "--resume")[1:])
    assert not (cut / "npy" / ".3_Output.npy.tmp12345").exists()
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert b["finished"] and b["completed_epochs"] == epochs
    assert (a["final_acc"], a["best_acc"]) == (b["final_acc"], b["best_acc"])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):   # exactly, as the README says
        assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]], key
    files = sorted(f for f in os.listdir(ref / "npy") if f.endswith(".npy"))
    assert files == sorted(f for f in os.listdir(cut / "npy") if f.endswith(".npy")) and len(files) > epochs
    # bit-identical: on CPU the resumed run does the same float operations in the same order
    assert [f for f in files if (cut / "npy" / f).read_bytes() != (ref / "npy" / f).read_bytes()] == []
    assert not [f for f in os.listdir(cut) if ".tmp" in f]


def test_train_subset_killed_and_resumed(cifar10_dir, tmp_path):
    n = 160
    order = np.random.default_rng(0).permutation(n)
    np.save(tmp_path / "mask.npy", order)
    np.save(tmp_path / "score.npy", np.sort(np.random.default_rng(1).random(n)).astype(np.float32))
    flags = ("--subset_rate", "0.25", "--mask_path", str(tmp_path / "mask.npy"), "--score_path",
             str(tmp_path / "score.npy"))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_script(*_train_cmd("train_subset.py", cifar10_dir, ref, 6, *flags)[1:])
    rc = _kill_after_epochs(_train_cmd("train_subset.py", cifar10_dir, cut, 6, *flags), cut, 2)
    assert rc == -signal.SIGKILL
    run_script(*_train_cmd("train_subset.py", cifar10_dir, cut, 6, *flags, "--resume")[1:])
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert b["finished"] and b["completed_epochs"] == 6
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]], key


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
                "from utils.io import save_npy\n"
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
