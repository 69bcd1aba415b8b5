"""Small data sets in the real on-disk formats, built once per test session."""
import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests never download a data set: a missing CIFAR folder is an error, not 170 MB of network traffic.
os.environ["TDDS_OFFLINE"] = "1"


def _images(rng, labels, num_classes, size=32):
    """uint8 (N, 3, size, size): a class-dependent colour block plus noise, so the classes are learnable."""
    n = len(labels)
    x = rng.integers(0, 80, size=(n, 3, size, size), dtype=np.uint8)
    for c in range(num_classes):
        sel = labels == c
        x[sel, c % 3, (c // 3) % size:(c // 3) % size + 12, :] += 150
    return x


def write_cifar(root, name, n_train, n_test, seed=0):
    """The python-version layout of CIFAR-10 (5 training batches) or CIFAR-100, latin1 pickles."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    folder = os.path.join(root, "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    key = "labels" if name == "cifar10" else "fine_labels"
    ytr = rng.integers(0, num_classes, n_train)
    yte = rng.integers(0, num_classes, n_test)
    xtr, xte = _images(rng, ytr, num_classes), _images(rng, yte, num_classes)
    if name == "cifar10":
        parts = np.array_split(np.arange(n_train), 5)
        files = [(f"data_batch_{i + 1}", p) for i, p in enumerate(parts)]
    else:
        files = [("train", np.arange(n_train))]
    for fname, rows in files:
        with open(os.path.join(folder, fname), "wb") as f:
            pickle.dump({"data": xtr[rows].reshape(len(rows), -1), key: ytr[rows].tolist()}, f)
    with open(os.path.join(folder, "test_batch" if name == "cifar10" else "test"), "wb") as f:
        pickle.dump({"data": xte.reshape(n_test, -1), key: yte.tolist()}, f)
    return root


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory):
    return write_cifar(str(tmp_path_factory.mktemp("c10")), "cifar10", 160, 80)


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory):
    return write_cifar(str(tmp_path_factory.mktemp("c100")), "cifar100", 200, 100, seed=1)


def run_script(*args, check=True, env=None, timeout=600):
    """Run a project script as a user would; returns the CompletedProcess."""
    cmd = [sys.executable, *args] if args[0].endswith(".py") else list(args)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def assert_user_error(p, *fragments):
    """One clear `error:` line on stderr, exit 2, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def folder_digest(path):
    """{relative file: sha256} of everything under `path` (a refused command must not change it)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out
