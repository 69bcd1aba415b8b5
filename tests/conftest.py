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


# ---------------------------------------------------------------- dynamics files and the TDDS reference
def write_published(folder, Z, y=None, seed=0, dtype=np.float32, shuffle=True):
    """Dynamics as the published train.py writes them: for every epoch e of the (T, N, C) logits Z
    (dataset order), <e>_Output.npy holds the rows in a new random visiting order (from
    np.random.default_rng(seed); shuffle=False: dataset order), <e>_Index.npy the dataset index of
    each row (int64), <e>_Loss.npy zeros; targets.npy (int64) when labels y are given. Returns the
    folder as a str."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    T, N, _ = np.shape(Z)
    for e in range(T):
        rows = rng.permutation(N) if shuffle else np.arange(N)
        np.save(os.path.join(folder, f"{e}_Output.npy"), np.asarray(Z[e])[rows].astype(dtype))
        np.save(os.path.join(folder, f"{e}_Loss.npy"), np.zeros(N, np.float32))
        np.save(os.path.join(folder, f"{e}_Index.npy"), rows.astype(np.int64))
    if y is not None:
        np.save(os.path.join(folder, "targets.npy"), np.asarray(y).astype(np.int64))
    return str(folder)


def read_published(folder, T):
    """(T, N, C) float64 logits in dataset order from epochs 0..T-1 of a published-layout folder:
    row r of <e>_Output.npy belongs to sample <e>_Index.npy[r]."""
    epochs = []
    for e in range(T):
        out = np.load(os.path.join(folder, f"{e}_Output.npy")).astype(np.float64)
        z = np.full_like(out, np.nan)
        z[np.load(os.path.join(folder, f"{e}_Index.npy"))] = out
        epochs.append(z)
    return np.stack(epochs)


def ref_contributions(Z):
    """docs/METHODS.md, TDDS step 1, in float64 from (T, N, C) logits: the (T-1, N) contributions
        c_t[i] = sum_c | p_{t+1}[i,c] (log(p_{t+1}[i,c] + 1e-8) - log(p_t[i,c] + 1e-8)) |,
    p_e[i] = softmax(z_e[i]). Plain loops over epochs and classes, elementwise over the samples."""
    Z = np.asarray(Z, np.float64)
    T, N, C = Z.shape
    P = np.zeros_like(Z)
    for e in range(T):
        top = Z[e, :, 0].copy()
        for c in range(1, C):
            top = np.maximum(top, Z[e, :, c])
        total = np.zeros(N)
        for c in range(C):
            P[e, :, c] = np.exp(Z[e, :, c] - top)
            total += P[e, :, c]
        for c in range(C):
            P[e, :, c] /= total
    contrib = np.zeros((T - 1, N))
    for t in range(T - 1):
        for c in range(C):
            q, p = P[t + 1, :, c], P[t, :, c]
            contrib[t] += np.abs(q * (np.log(q + 1e-8) - np.log(p + 1e-8)))
    return contrib


def ref_tdds_from_contributions(contrib, K, beta):
    """docs/METHODS.md, TDDS steps 2 and 3, in float64 from the contributions c_0..c_{T-2} (first
    axis; any further axes are samples): for each window k = 0..T-K, s_k = sqrt(sum_j (c_j - m_k)^2)
    over its K-1 contributions c_k..c_{k+K-2} with m_k their mean, and S = sum_k s_k beta (1-beta)^(T-K-k)."""
    contrib = np.asarray(contrib, np.float64)
    T = contrib.shape[0] + 1
    S = np.zeros(contrib.shape[1:])
    for k in range(T - K + 1):
        window = range(k, k + K - 1)
        m = sum(contrib[j] for j in window) / (K - 1)
        s = np.sqrt(sum((contrib[j] - m) ** 2 for j in window))
        S = S + s * beta * (1 - beta) ** (T - K - k)
    return S


def ref_tdds(Z, T, K, beta):
    """The TDDS score S of docs/METHODS.md from (>= T, N, C) logits in dataset order, float64:
    only epochs 0..T-1 are used."""
    return ref_tdds_from_contributions(ref_contributions(np.asarray(Z)[:T]), K, beta)
