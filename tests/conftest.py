"""Shared test tools: small data sets in the real on-disk formats (built once per session), `cli` (a
script's main in this process, as a user's command would end), `run_script` (a separate process),
the TDDS reference in plain loops, and a guard that no test leaves global state behind."""
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import io
import os
import pickle
import random
import signal
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
import torch
# first imports that set environment variables ($TORCHINDUCTOR_CACHE_DIR, $KMP_DUPLICATE_LIB_OK, ...): here,
# before the guard below compares the environment around each test
import sklearn  # noqa: F401,E402
import torchvision  # noqa: F401,E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("PYTEST_XDIST_WORKER"):     # pytest -n 2: one thread per worker, one worker per core
    torch.set_num_threads(1)
# the processes a test starts compute with as many threads as this one: runs are compared byte for byte
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(torch.get_num_threads())
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
    """CIFAR-10's layout: 160 training and 80 test images (shared, read-only)."""
    with built_once(tmp_path_factory, "c10") as (folder, needed):
        return write_cifar(str(folder), "cifar10", 160, 80) if needed else str(folder)


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory):
    """CIFAR-100's layout: 100 training and 20 test images (shared, read-only)."""
    with built_once(tmp_path_factory, "c100") as (folder, needed):
        return write_cifar(str(folder), "cifar100", 100, 20, seed=1) if needed else str(folder)


# ---------------------------------------------------------------- shared runs (read-only: copy before writing)
# the small full-data dynamics run: train.py on cifar10_dir (160 images), resnet20, 5 epochs of 5 steps
FULL_RUN = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "5", "--batch-size", "32", "--ngpu", "0",
            "--dynamics"]


@contextlib.contextmanager
def built_once(tmp_path_factory, name):
    """(folder, needed): a folder for `name` shared by every process of this pytest session (the
    workers of pytest -n), `needed` true in the one that must build it; the others wait until it is
    built (an exclusive lock) and then find it ready."""
    import fcntl
    base = tmp_path_factory.getbasetemp()
    base = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base   # the session's, not the worker's
    folder, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder, not done.exists()
        done.touch()


def _shared_run(cifar10_dir, tmp_path_factory, name, *extra):
    with built_once(tmp_path_factory, name) as (folder, needed):
        save = str(folder / "run")
        if needed:
            cli("train.py", "--data_path", cifar10_dir, *FULL_RUN, *extra, "--save_path", save)
        digest = folder_digest(save)
    yield save
    assert folder_digest(save) == digest, f"a test wrote into the shared run {save}: copy it first"


@pytest.fixture(scope="session")
def full_run(cifar10_dir, tmp_path_factory):
    """train.py --data_path cifar10_dir FULL_RUN (--dynamics_format logits): its save_path, shared by
    the session; the session ends with a check that no test changed a byte of it."""
    yield from _shared_run(cifar10_dir, tmp_path_factory, "full_run")


@pytest.fixture(scope="session")
def full_run_contrib(cifar10_dir, tmp_path_factory):
    """full_run's training recorded with --dynamics_format contrib (shared, read-only)."""
    yield from _shared_run(cifar10_dir, tmp_path_factory, "full_run_contrib", "--dynamics_format", "contrib")


CLASSES = ("cat", "dog", "eel")                      # ImageFolder sorts class folders: 0, 1, 2
COLOURS = ((220, 40, 40), (40, 220, 40), (40, 40, 220))
N_PER_CLASS = {"train": 20, "val": 6}


def write_image_folder(root, splits=("train", "val"), size=32, seed=0):
    """root/<split>/<class>/<k>.png: flat class colour plus noise, RGB PNGs written with PIL."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split in splits:
        for name, colour in zip(CLASSES, COLOURS):
            os.makedirs(os.path.join(root, split, name))
            for k in range(N_PER_CLASS[split]):
                img = np.clip(np.array(colour) + rng.integers(-30, 31, (size, size, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(os.path.join(root, split, name, f"{k:03d}.png"))
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """An ImageFolder tree (train/ and val/, 3 classes of 20 and 6 PNGs), shared read-only."""
    with built_once(tmp_path_factory, "imgs") as (folder, needed):
        return write_image_folder(str(folder)) if needed else str(folder)


def run_script(*args, check=True, env=None, timeout=600):
    """Run a project script as a user would; returns the CompletedProcess."""
    cmd = [sys.executable, *args] if args[0].endswith(".py") else list(args)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


# ---------------------------------------------------------------- commands in this process, global state
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def global_state():
    """The process-wide settings a test or a script's main may change for every test after it."""
    dist = torch.distributed
    return {
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "cudnn flags": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                        torch.backends.cudnn.enabled),
        "default dtype": torch.get_default_dtype(),
        "torch threads": torch.get_num_threads(),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "grad mode": torch.is_grad_enabled(),
        "process group": dist.is_available() and dist.is_initialized(),
        "environment": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},   # pytest's own
        "cwd": os.getcwd(),
        "signal handlers": {s: signal.getsignal(s) for s in SIGNALS},
    }


def changed_state(before, after):
    """Names of what differs between two global_state()s (environment variables by name)."""
    out = [k for k in before if k != "environment" and before[k] != after[k]]
    env_a, env_b = before["environment"], after["environment"]
    out += [f"${k}" for k in sorted(set(env_a) | set(env_b)) if env_a.get(k) != env_b.get(k)]
    return out


def set_global_state(state):
    """Put back a global_state() snapshot."""
    mode, warn_only = state["deterministic algorithms"]
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.enabled) = state["cudnn flags"]
    torch.set_default_dtype(state["default dtype"])
    if torch.get_num_threads() != state["torch threads"]:
        torch.set_num_threads(state["torch threads"])
    torch.set_float32_matmul_precision(state["float32 matmul precision"])
    torch.set_grad_enabled(state["grad mode"])
    if not state["process group"] and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    env = state["environment"]
    for k in set(os.environ) - set(env) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[k]
    os.environ.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    os.chdir(state["cwd"])
    for sig, handler in state["signal handlers"].items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def no_global_state_leak():
    """Every test leaves the process as it found it (a script's main switches deterministic mode on,
    installs signal handlers, ...): a test that does not is failed, and the state is put back so that
    the tests after it are unaffected."""
    before = global_state()
    yield
    leaked = changed_state(before, global_state())
    if leaked:
        set_global_state(before)
        pytest.fail(f"the test changed global state for the tests after it: {', '.join(leaked)} "
                    f"(run scripts through conftest.cli, or restore it)", pytrace=False)


@pytest.fixture
def signal_at_step(monkeypatch, request):
    """signal_at_step(k, *sigs): the next training run in this process gets the signals `sigs`, sent to
    this process by kill(2) in that order, right after its k-th optimizer step (fit asks StopSignals
    after every step), so cli(...) ends as a preempted command (143 / 138; SIGINT: Ctrl-C, 130). A run
    whose handler is not installed fails the test instead of ending pytest. Arming again replaces the
    previous one; no signals: disarmed. Where pytest itself ignores SIGINT (started in the background of
    a shell without job control, which ignores it for its background jobs), Python's Ctrl-C handler is
    put in place for the test, as a foreground process has it."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    from utils.training.preemption import StopSignals
    agreed = StopSignals.agreed

    def arm(k, *sigs):
        calls = []

        def counting(self, now=False):
            if not now:
                calls.append(1)
                for sig in sigs if len(calls) == k else ():
                    handler = signal.getsignal(sig)
                    assert (handler is signal.default_int_handler if sig == signal.SIGINT else
                            getattr(handler, "__self__", None) is self), f"no handler for {sig.name}"
                    os.kill(os.getpid(), sig)
            return agreed(self, now)
        monkeypatch.setattr(StopSignals, "agreed", counting)
    return arm


class Result(NamedTuple):
    """How a command ended: its exit status and what it printed (also under CompletedProcess's names)."""
    code: int
    out: str
    err: str

    @property
    def returncode(self):
        return self.code

    @property
    def stdout(self):
        return self.out

    @property
    def stderr(self):
        return self.err


def cli(script, *argv, check=True, env=None, cwd=ROOT):
    """`python SCRIPT ARGV...` in this process: SCRIPT is a path from the repository root (train.py,
    train_subset.py, importance_evaluation.py, scripts/summarize.py, scripts/report.py, a benchmark).
    Its main runs as under `if __name__ == "__main__"`: through utils.errors.run (a UserError prints one
    `error: ...` line and ends with 2, a full disk with 1, a preemption with 143/138), argparse's exits,
    sys.argv, cwd (the repository root, as run_script) and the environment (updated with `env`) as a
    process would see them. Returns Result(code, out, err); check=True raises unless code is 0. A bug
    raises its exception (a process would print its traceback). Afterwards every global state is put
    back: deterministic mode, cudnn flags, default dtype, threads, random streams, environment, cwd,
    signal handlers."""
    from utils.errors import run
    script = os.path.relpath(script, ROOT) if os.path.isabs(script) else script
    module = importlib.import_module(os.path.splitext(script)[0].replace(os.sep, "."))
    argv = [str(a) for a in argv]
    state, streams, saved_argv = global_state(), (random.getstate(), np.random.get_state(), torch.get_rng_state()), sys.argv
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        os.environ.update(env or {})
        os.chdir(cwd)
        sys.argv = [script, *argv]
        takes_argv = bool(inspect.signature(module.main).parameters)   # the benchmarks read sys.argv
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run(lambda: module.main(argv) if takes_argv else module.main())
            except SystemExit as e:      # sys.exit(message) prints it and ends with 1, as Python does
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        sys.argv = saved_argv
        set_global_state(state)
        random.setstate(streams[0])
        np.random.set_state(streams[1])
        torch.set_rng_state(streams[2])
    result = Result(code, out.getvalue(), err.getvalue())
    if check and result.code:
        raise AssertionError(f"{script} {' '.join(argv)} ended with {result.code}:\n{result.out[-3000:]}\n{result.err[-3000:]}")
    return result


def assert_user_error(p, *fragments):
    """One clear `error:` line on stderr, exit 2, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def assert_same_state(a, b, skip=(), where=""):
    """a and b equal exactly, recursively: tensors and arrays in dtype, shape and every value, dicts
    with the same keys, lists, tuples and scalars by ==; keys named in `skip` are left out at any depth."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        ka, kb = set(a) - set(skip), set(b) - set(skip)
        assert ka == kb, f"{where}: keys {sorted(map(str, ka ^ kb))} in one only"
        for k in ka:
            assert_same_state(a[k], b[k], skip, f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, skip, f"{where}[{i}]")
    elif torch.is_tensor(a) or isinstance(a, np.ndarray):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, where
        assert (torch.equal(a, b) if torch.is_tensor(a) else np.array_equal(a, b)), f"{where}: values differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# what legitimately differs between the checkpoints of two runs of the same training: clocks, the run's
# id, and args (--save_path, --resume; the settings themselves are compared through the fingerprint)
CHECKPOINT_VARIES = ("seconds", "train_seconds", "teacher_seconds", "run_id", "args")


def assert_same_checkpoint(a, b, skip=CHECKPOINT_VARIES):
    """The checkpoint.pth.tar files of two runs (their folders) hold the same training state: model,
    optimizer, scheduler, every random stream, recorder, position, curves and fingerprint."""
    load = lambda d: torch.load(os.path.join(d, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    assert_same_state(load(a), load(b), skip, "checkpoint")


def label_prior(labels):
    """(accuracy in %, mean cross-entropy) of the best prediction that ignores the input: always the most
    frequent class, and the label frequencies as the probabilities. A model that learned nothing from
    the inputs does no better in expectation, on any CPU: "it learns" is checked against these, which
    the data fix, never against an accuracy a run happened to reach (AMD and Intel kernels round
    differently, and a few steps of SGD carry that difference far)."""
    counts = np.bincount(np.asarray(labels))
    p = counts[counts > 0] / counts.sum()
    return 100.0 * p.max(), float(-(p * np.log(p)).sum())


LOCK_FILES = {".lock", ".holder.json"}   # the write protocol's (utils/protocol/): a dead writer's record may go


SCRATCH = (".stage.", ".retired.")          # a writer's staging folder; a dead writer's may go with its record


def folder_digest(path):
    """{relative file: sha256} of everything under `path` but the lock files and the writers' staging
    folders (a refused command must not change it; it may clear the lock record and the staging folder
    of a writer that died)."""
    out = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(SCRATCH)]
        for f in files:
            if f in LOCK_FILES:
                continue
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


# ---------------------------------------------------------------- the write protocol's tests
LOCK_GRACE = 0.6   # seconds a dead holder's heartbeat may stand still in the protocol tests (quick_lock_timings)


@pytest.fixture
def quick_lock_timings(monkeypatch):
    """The lock's grace and wait in tenths of seconds instead of minutes (TDDS_LOCK_GRACE_S, TDDS_LOCK_WAIT_S);
    every lock of the process released afterwards."""
    from utils.protocol.lock import release_all
    monkeypatch.setenv("TDDS_LOCK_GRACE_S", str(LOCK_GRACE))
    monkeypatch.setenv("TDDS_LOCK_WAIT_S", "0.4")
    yield
    release_all()


def one_error_line(err, *fragments):
    """The one "error:" line of a refused command (no traceback), which holds every fragment."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    return lines[0]


# ---------------------------------------------------------------- the sweep's planner, in-process
def load_sweep():
    """scripts/sweep.py as a module (its main(environ=, cwd=, argv=) and parsers())."""
    spec = importlib.util.spec_from_file_location("sweep_entry", os.path.join(ROOT, "scripts", "sweep.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sweep_plan(tmp_path, capsys):
    """sweep_plan(**env) -> (status, stdout, stderr, {stage: [argv]}, plan file text) of a plan written
    in-process (PLAN=tmp_path/study.plan, NGPU=0, OUT=tmp_path/out unless env says otherwise)."""
    import shlex
    sweep = load_sweep()

    def run(**env):
        path = tmp_path / "study.plan"
        path.unlink(missing_ok=True)
        full = {"PLAN": str(path), "NGPU": "0", "OUT": str(tmp_path / "out"), **env}
        capsys.readouterr()
        status = sweep.main(environ=full, cwd=str(tmp_path))
        o = capsys.readouterr()
        text = path.read_text() if path.exists() else ""
        stages, cur = {}, None
        for line in text.splitlines():
            if line.startswith("# stage "):
                cur = int(line.split()[2])
            elif line and not line.startswith("#"):
                stages.setdefault(cur, []).append(shlex.split(line))
        return status, o.out, o.err, stages, text
    return run


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


def pytest_collection_modifyitems(items):
    """Files with slow tests first (a stable sort): under pytest -n their long runs start at once
    instead of ending the session on one worker while the other waits."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
