"""No silent mix-ups: a resumed run has exactly the settings it started with, a refused command
leaves its folder byte-identical, the scripts' defaults are the published ones, and the random
streams are the published model initialisation plus independent spawned streams."""
import json
import math
import os

import numpy as np
import pytest
import torch

import importance_evaluation
import train
import train_subset
from conftest import assert_user_error, cli, folder_digest
from utils.errors import UserError

N = 160  # training samples of the cifar10 fixture
COMMON = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "1", "--batch-size", "32", "--ngpu", "0"]


@pytest.fixture(scope="module")
def subset_run(cifar10_dir, tmp_path_factory):
    """A finished one-epoch subset run (TDDS-like scores, published weighting) and its inputs."""
    d = tmp_path_factory.mktemp("trust")
    s = np.random.default_rng(0).random(N).astype(np.float32)
    np.save(d / "mask.npy", np.argsort(s, kind="stable"))
    np.save(d / "score.npy", np.sort(s))
    np.save(d / "other_score.npy", np.sort(s) * 1.5)    # same shape and order, other content
    other = s.copy()
    other[:10] = other[:10][::-1]                       # the same sorted scores, another order
    np.save(d / "other_mask.npy", np.argsort(other, kind="stable"))
    flags = ["--data_path", cifar10_dir, *COMMON, "--subset_rate", "0.5", "--mask_path", str(d / "mask.npy"),
             "--score_path", str(d / "score.npy"), "--save_path", str(d / "run")]
    cli("train_subset.py", *flags)
    return d, flags


def run_main(script, argv):
    """The script's main on `argv` through conftest.cli (global state restored): the run's metrics.json on
    success; a refusal raises its UserError, as main itself would."""
    argv = [str(a) for a in argv]
    r = cli(script, *argv, check=False)
    if r.code == 2:
        raise UserError(r.err.strip().removeprefix("error: "))
    assert r.code == 0, r
    save = argv[len(argv) - 1 - argv[::-1].index("--save_path") + 1]
    return json.loads(open(os.path.join(save, "metrics.json")).read())


def _replace(flags, flag, value):
    out = list(flags)
    out[out.index(flag) + 1] = value
    return out


CHANGES = {  # a changed setting -> what the refusal must name
    "weighting": (lambda d, f: f + ["--no_score_weighting"], "--no_score_weighting False (now True)"),
    "class balance": (lambda d, f: f + ["--class_balanced"], "--class_balanced"),
    "selection": (lambda d, f: f + ["--selection", "ccs"], "--selection 'top' (now 'ccs')"),
    "score content": (lambda d, f: _replace(f, "--score_path", str(d / "other_score.npy")), "content of --score_path"),
    "mask content": (lambda d, f: _replace(f, "--mask_path", str(d / "other_mask.npy")), "content of --mask_path"),
    "amp": (lambda d, f: f + ["--amp"], "--amp False (now True)"),
    "rate": (lambda d, f: _replace(f, "--subset_rate", "0.6"), "--subset_rate 0.5 (now 0.6)"),
    "arch": (lambda d, f: _replace(f, "--arch", "resnet32"), "--arch 'resnet20' (now 'resnet32')"),
    "weight decay": (lambda d, f: f + ["--decay", "0.0007"], "--decay 0.0005 (now 0.0007)"),
    "budget": (lambda d, f: f + ["--budget", "iterations"], "--budget 'epochs' (now 'iterations')"),
    "deterministic": (lambda d, f: f + ["--deterministic"], "--deterministic"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_resume_refuses_every_changed_setting(subset_run, change):
    d, flags = subset_run
    before = folder_digest(d / "run")
    edit, fragment = CHANGES[change]
    r = cli("train_subset.py", *edit(d, flags), "--resume", check=False)   # (through cli: --deterministic is global)
    assert r.code == 2, r
    msg = r.err.strip().removeprefix("error: ")
    assert fragment in msg and "--overwrite" in msg and "\n" not in msg, msg
    assert folder_digest(d / "run") == before


def test_refusal_is_one_line_and_harmless_flags_are_not_settings(subset_run):
    d, flags = subset_run
    before = folder_digest(d / "run")
    p = cli("train_subset.py", *flags, "--resume", "--subset_rate", "0.6", check=False)  # argparse: last wins
    assert_user_error(p, "--subset_rate 0.5 (now 0.6)", "same settings", "--overwrite")
    assert folder_digest(d / "run") == before
    # where the data and files live, how often it prints: not settings of the run
    moved = d / "moved"
    moved.mkdir(exist_ok=True)
    for f in ("mask.npy", "score.npy"):
        (moved / f).write_bytes((d / f).read_bytes())
    same = _replace(_replace(flags, "--mask_path", str(moved / "mask.npy")), "--score_path", str(moved / "score.npy"))
    result = run_main("train_subset.py", same + ["--resume", "--print_freq", "7", "--workers", "0"])
    assert result["finished"] and result["completed_epochs"] == 1
    # settings that act on nothing (noise type and seed without --label_noise, corruption details
    # without --corrupt_ratio, ccs's strata in a top selection) do not make another run; with their
    # rate set, they do
    idle = ["--noise_type", "asymmetric", "--noise_seed", "3", "--corruption", "jpeg", "--severity", "5",
            "--mis_ratio", "0.1", "--strata", "10"]
    assert run_main("train_subset.py", flags + idle + ["--resume"])["finished"]
    assert folder_digest(d / "run") == before      # none of these resumes rewrote anything
    with pytest.raises(UserError, match="--corrupt_ratio 0.0 \\(now 0.1\\)"):
        run_main("train_subset.py", flags + idle + ["--corrupt_ratio", "0.1", "--resume"])
    assert folder_digest(d / "run") == before


def test_train_resume_refuses_other_dynamics_settings(cifar10_dir, tmp_path):
    save = tmp_path / "full"
    flags = ["--data_path", cifar10_dir, *COMMON, "--dynamics", "--save_path", str(save)]
    run_main("train.py", flags)
    before = folder_digest(save)
    for extra, fragment in ((["--dynamics_dtype", "float16"], "--dynamics_dtype 'float32' (now 'float16')"),
                            (["--label_noise", "0.2"], "--label_noise 0.0 (now 0.2)"),
                            (["--manualSeed", "7"], "--manualSeed 42 (now 7)")):
        with pytest.raises(UserError, match=None) as e:
            run_main("train.py", flags + extra + ["--resume"])
        assert fragment in str(e.value), str(e.value)
    assert folder_digest(save) == before


def test_published_defaults_per_script():
    t = train.parse_args([])
    s = train_subset.parse_args([])
    i = importance_evaluation.parse_args([])
    assert t.batch_size == 100 and s.batch_size == 128
    assert s.subset_rate == 0.9
    assert (i.trajectory_len, i.window_size) in ((10, 10), ([10], [10]))
    assert i.dynamics_path == "./checkpoint/all-dataset/npy/"
    for a in (t, s):   # shared by both training scripts, defined once
        assert (a.epochs, a.learning_rate, a.momentum, a.decay, a.manualSeed) == (200, 0.1, 0.9, 0.0005, 42)
    assert t.save_path == "./checkpoint/all-dataset" and s.save_path == "./checkpoint/pruned-dataset"


class _PublishedBlock(torch.nn.Module):
    """The published BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut (a 1x1 conv +
    BN projection built by the caller, or the identity), then ReLU."""

    def __init__(self, c_in, planes, stride, downsample):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _PublishedResNet18(torch.nn.Module):
    """The CIFAR ResNet-18 that the published TDDS train.py builds (models/resnet.py of
    zhangxin-xd/Dataset-Pruning-TDDS, `resnet18(num_class)`), written again from its description:
    3x3 stride-1 'same' stem conv (no bias) + BN + ReLU, no max-pool; 4 stages of 2 BasicBlocks
    (64/128/256/512 channels, strides 1/2/2/2), a 1x1 conv + BN projection where the shape changes
    (created before the block it belongs to); global average pool; linear classifier. Then every
    conv is redrawn from N(0, 2 / (k*k*out_channels)) and every BN set to weight 1, bias 0, in
    module order; the linear layer keeps PyTorch's default init."""

    def __init__(self, num_classes):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        c_in = 64
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
            down = None
            if stride != 1 or c_in != planes:
                down = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            first = _PublishedBlock(c_in, planes, stride, down)
            setattr(self, f"layer{i + 1}", nn.Sequential(first, _PublishedBlock(planes, planes, 1, None)))
            c_in = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Our names for the published model's modules (deliberate: ours follows kuangliu/pytorch-cifar's
# naming): the published `downsample` is our `shortcut`, its `fc` our `linear`. Nothing else differs.
PUBLISHED_TO_OURS = {"downsample": "shortcut", "fc": "linear"}


def test_model_init_is_the_published_one_and_streams_are_independent():
    """Our resnet18, built with the published seeding, is the published CIFAR ResNet-18 bit for bit:
    the same parameters and buffers in the same order (modulo the two names above), the same initial
    values, and the same outputs."""
    from types import SimpleNamespace
    from utils.training.rng import AUGMENT, GLOBAL, ORDER, stream_seed
    from utils.training.setup import build_model
    args = SimpleNamespace(manualSeed=3, arch="resnet18", amp=False)
    model = build_model(args, SimpleNamespace(num_classes=100), torch.device("cpu"))
    assert torch.initial_seed() == stream_seed(3, GLOBAL, 0)   # then the rank's own global stream
    torch.manual_seed(3)                      # what the published train.py does before building the model
    published = _PublishedResNet18(100)
    ours, theirs = model.state_dict(), published.state_dict()
    renamed = [".".join(PUBLISHED_TO_OURS.get(part, part) for part in k.split(".")) for k in theirs]
    assert list(ours) == renamed and len(ours) == 122
    for (k, a), b in zip(ours.items(), theirs.values()):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), k
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.eval()
    published.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (4, 100) and torch.equal(out, published(x))
    # every stream of seeds 0..199 (3 streams, 4 ranks) is distinct, and none is a plain small seed
    seeds = [stream_seed(s, k, r) for s in range(200) for k in (AUGMENT, GLOBAL) for r in range(4)]
    seeds += [stream_seed(s, ORDER) for s in range(200)]
    assert len(set(seeds)) == len(seeds) and min(seeds) > 10_000
    # the global stream after the init is not the next seed's init stream (the old seed + k scheme)
    assert stream_seed(3, AUGMENT, 0) != 4


def test_missing_cifar_download_failure_says_where_to_unpack(tmp_path, monkeypatch):
    import torchvision
    from utils.training.data import read_cifar
    monkeypatch.delenv("TDDS_OFFLINE", raising=False)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(UserError) as e:
        read_cifar(str(tmp_path), "cifar10", train=True)
    msg = str(e.value)
    assert "download failed" in msg and "cifar-10-python.tar.gz" in msg and f"unpack it into {tmp_path}" in msg


# what legitimately differs between a run and the same run stopped and resumed: when and where it ran
TIMING = {"train_seconds", "seconds", "img_per_s"}


def _same(a, b, where):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            if k not in TIMING:
                _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, (where, a, b)


def assert_same_run(ref, other, epochs):
    """Bytes of every dynamics file; the final checkpoint's model, optimizer, scheduler, RNG streams and
    history equal (the run id, the paths and the seconds excepted)."""
    for e in range(epochs):
        for tag in ("Output", "Loss", "Index"):
            name = f"{e}_{tag}.npy"
            assert (ref / "npy" / name).read_bytes() == (other / "npy" / name).read_bytes(), name
    a, b = (torch.load(d / "checkpoint.pth.tar", weights_only=True) for d in (ref, other))
    for key in ("model", "optimizer", "scheduler", "rng", "recorder", "history", "epoch", "step", "best_acc",
                "global_step", "fingerprint"):
        _same(a[key], b[key], key)


def test_stop_epoch_gives_the_uninterrupted_dynamics_and_metrics(cifar10_dir, tmp_path):
    flags = ["--data_path", cifar10_dir, *_replace(COMMON, "--epochs", "3"), "--dynamics"]
    ref = run_main("train.py", flags + ["--save_path", str(tmp_path / "ref")])
    stopped = run_main("train.py", flags + ["--save_path", str(tmp_path / "cut"), "--stop_epoch", "2"])
    assert stopped["completed_epochs"] == 2 and stopped["stopped"] and not stopped["finished"]
    assert not (tmp_path / "cut" / "npy" / "2_Output.npy").exists()
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m["stopped"] and not m["finished"] and m["epochs"] == 3
    for e in (0, 1):
        for tag in ("Output", "Loss", "Index"):
            a = np.load(tmp_path / "ref" / "npy" / f"{e}_{tag}.npy")
            b = np.load(tmp_path / "cut" / "npy" / f"{e}_{tag}.npy")
            assert a.dtype == b.dtype and np.array_equal(a, b), (e, tag)
    before = folder_digest(tmp_path / "cut")
    # a smaller --stop_epoch (a sweep re-run with fewer rates): the folder holds what it asks, nothing rewritten
    again = run_main("train.py", flags + ["--save_path", str(tmp_path / "cut"), "--resume", "--stop_epoch", "1"])
    assert again["completed_epochs"] == 2 and folder_digest(tmp_path / "cut") == before
    # --resume PATH into a folder that holds another run would mix two runs' files: refused
    with pytest.raises(UserError, match="already holds another run"):
        run_main("train.py", flags + ["--save_path", str(tmp_path / "ref"), "--resume", str(tmp_path / "cut" / "checkpoint.pth.tar")])
    assert folder_digest(tmp_path / "cut") == before
    done = run_main("train.py", flags + ["--save_path", str(tmp_path / "cut"), "--resume"])
    assert done["finished"] and not done["stopped"] and done["final_acc"] == ref["final_acc"]
    # "the same final metrics": the stopped-and-resumed run IS the uninterrupted one: every dynamics file
    # byte for byte, and the final model, optimizer, scheduler and every random stream equal
    assert_same_run(tmp_path / "ref", tmp_path / "cut", epochs=3)
    # with --overwrite the other run's files go first (its log of another seed included)
    (tmp_path / "ref" / "log_seed_7.txt").write_text("another run's log")
    moved = run_main("train.py", flags + ["--save_path", str(tmp_path / "ref"), "--overwrite",
                                "--resume", str(tmp_path / "cut" / "checkpoint.pth.tar")])
    assert moved["finished"] and not (tmp_path / "ref" / "log_seed_7.txt").exists()
    assert not (tmp_path / "ref" / "npy" / "0_Output.npy").exists()   # no epoch of the replaced run is left


def test_imagefolder_workers_are_not_part_of_the_fingerprint():
    """ImageFolder augmentation is seeded per sample (tests/test_gpu_ready.py): the worker count changes
    no result, so a run may resume with another --workers (the default, auto, depends on the machine)."""
    from types import SimpleNamespace

    from utils.training.setup import run_facts
    data = SimpleNamespace(n_train=4, targets=np.arange(4))
    facts = run_facts(SimpleNamespace(dataset="imagefolder", workers=2), data, torch.device("cpu"))
    assert not any("workers" in k for k in facts)


def test_budget_iterations_takes_the_full_data_steps(cifar10_dir, tmp_path):
    mask = np.arange(N)
    np.save(tmp_path / "mask.npy", mask)
    flags = ["--data_path", cifar10_dir, *_replace(COMMON, "--epochs", "2"), "--subset_rate", "0.7",
             "--mask_path", str(tmp_path / "mask.npy"), "--no_score_weighting"]
    by_epochs = run_main("train_subset.py", flags + ["--save_path", str(tmp_path / "e")])
    by_iters = run_main("train_subset.py", flags + ["--save_path", str(tmp_path / "i"), "--budget", "iterations"])
    kept = N - int(0.7 * N)                                    # 48 samples: 2 steps of 32 per epoch
    assert by_epochs["steps"] == 2 * math.ceil(kept / 32) == sum(h["steps"] for h in by_epochs["history"])
    full_steps = 2 * math.ceil(N / 32)                         # 10: what the full data takes
    assert by_iters["steps"] == full_steps == sum(h["steps"] for h in by_iters["history"])
    assert by_iters["epochs"] == math.ceil(full_steps / math.ceil(kept / 32)) and by_iters["finished"]
    assert by_iters["budget"] == "iterations" and by_epochs["budget"] == "epochs"
    assert by_iters["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)   # the schedule spans the steps
