"""The pipeline end to end: the README's CPU commands run as written (read from README.md; on the small
test data), --evaluate on what they trained, --amp end to end, and the published command lines on
small files in the real CIFAR layouts. (ResNet-20 learning the real digits: test_preemption.)"""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, assert_user_error, cli, folder_digest, write_cifar
from test_docs import script_commands


def readme_commands(after):
    """(script, argv) of every script command in the first code block after the README line that
    starts with `after`."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    tail = text[text.index(after):]
    start = tail.index("```")
    block = tail[start:tail.index("```", start + 3)].splitlines()[1:]
    return [(script, argv) for script, argv, _ in script_commands(block)]


def on_test_data(argv, data):
    """argv with `--dataset digits` swapped for the CIFAR-10 layout's 160 images in `data`."""
    out = [str(a) for a in argv]
    if "--dataset" in out:
        i = out.index("--dataset")
        assert out[i + 1] == "digits", out
        out[i + 1:i + 2] = ["cifar10", "--data_path", data]
    return out


@pytest.fixture(scope="module")
def readme_cpu(cifar10_dir, tmp_path_factory):
    """The README's "CPU-sized version of the same three steps", run in an empty folder as given, on the
    small test data (cifar10_dir for the digits: the same flags, a tenth of the images)."""
    cwd = tmp_path_factory.mktemp("readme")
    commands = readme_commands("A CPU-sized version of the same three steps")
    assert [script for script, _ in commands] == ["train.py", "importance_evaluation.py", "train_subset.py"]
    commands = [(script, on_test_data(argv, cifar10_dir)) for script, argv in commands]
    outputs = [cli(script, *argv, cwd=cwd) for script, argv in commands]
    return cwd / "checkpoint" / "digits", commands, outputs


def test_readme_cpu_pipeline(readme_cpu):
    d, _, outputs = readme_cpu
    full = json.loads((d / "full" / "metrics.json").read_text())
    assert full["finished"] and full["num_train_samples"] == 160 and len(full["history"]) == 10
    assert sorted(os.listdir(d / "full" / "npy")) == sorted(
        [f"{e}_{t}.npy" for e in range(10) for t in ("Output", "Loss", "Index")] + ["targets.npy", "manifest.json"])
    assert "next: python importance_evaluation.py --dynamics_path ./checkpoint/digits/full/npy/" in outputs[0].out
    mask = np.load(d / "masks" / "data_mask_win5_ep10.npy")
    score = np.load(d / "masks" / "score_win5_ep10.npy")
    assert np.array_equal(np.sort(mask), np.arange(160)) and np.all(np.diff(score) >= 0)
    sub = json.loads((d / "tdds-r0.5" / "metrics.json").read_text())
    kept = np.load(d / "tdds-r0.5" / "subset_indices.npy")
    assert np.array_equal(kept, np.sort(mask[80:]))                       # the highest scores are kept
    assert sub["finished"] and sub["num_train_samples"] == 80 == len(kept) and sub["method"] == "tdds"
    assert sub["score_weighting"] is True and len(sub["history"]) == 10


def test_evaluate_prints_the_test_metrics_and_writes_nothing(readme_cpu):
    """--evaluate --resume: the checkpoint's model on the test set, printed as one JSON line: the last
    epoch's test loss and accuracy; nothing in the run folder changes. Without a checkpoint: refused."""
    d, commands, _ = readme_cpu
    for (script, argv), run in ((commands[0], "full"), (commands[2], "tdds-r0.5")):
        before = folder_digest(d / run)
        p = cli(script, *argv, "--evaluate", "--resume", cwd=d.parent.parent)
        last = json.loads((d / run / "metrics.json").read_text())["history"][-1]
        ev = json.loads(p.out.strip().splitlines()[-1])
        assert (ev["test_acc"], ev["test_loss"]) == (last["test_acc"], last["test_loss"]), (script, ev, last)
        assert folder_digest(d / run) == before, script
    p = cli(commands[0][0], *commands[0][1], "--evaluate", "--resume", "/nonexistent/checkpoint.pth.tar",
            cwd=d.parent.parent, check=False)
    assert_user_error(p, "--evaluate: no checkpoint at /nonexistent/checkpoint.pth.tar")


@pytest.mark.slow
def test_published_commands_cifar100(cifar100_dir, tmp_path):
    """The published README's lines, with --epochs, the paths and (for CPU time) the arch changed."""
    full, masks, pruned = tmp_path / "all-dataset", tmp_path / "generated_mask", tmp_path / "pruned-dataset"
    p = cli("train.py", "--data_path", cifar100_dir, "--dataset", "cifar100", "--arch", "resnet20",
            "--epochs", "30", "--learning_rate", "0.1", "--batch-size", "100", "--dynamics",
            "--save_path", f"{full}/")
    assert "no CUDA device" in p.stdout  # the published default --ngpu 1 falls back to the CPU
    npy = full / "npy"
    for e in range(30):
        out = np.load(npy / f"{e}_Output.npy")
        assert out.shape == (100, 100) and out.dtype == np.float32
        assert np.array_equal(np.load(npy / f"{e}_Index.npy"), np.arange(100))
        assert np.load(npy / f"{e}_Loss.npy").shape == (100,)
    assert not (npy / "30_Output.npy").exists()
    assert np.load(npy / "targets.npy").shape == (100,)
    m = json.loads((full / "metrics.json").read_text())
    for key in ("best_acc", "final_acc", "epochs", "num_train_samples", "train_seconds", "seconds"):
        assert key in m
    assert m["epochs"] == 30 and m["num_train_samples"] == 100 and 0 < m["train_seconds"] <= m["seconds"]
    assert (full / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (full / "log_seed_42.txt").exists() and (full / "model_best.pth.tar").exists()

    cli("importance_evaluation.py", "--dynamics_path", f"{npy}/", "--mask_path", f"{masks}/",
        "--trajectory_len", "30", "--window_size", "10", "--decay", "0.9")
    mask = np.load(masks / "data_mask_win10_ep30.npy")
    score = np.load(masks / "score_win10_ep30.npy")
    assert mask.dtype == np.int64 and np.array_equal(np.sort(mask), np.arange(100))
    assert np.all(np.diff(score) >= 0)

    cli("train_subset.py", "--data_path", cifar100_dir, "--dataset", "cifar100", "--arch", "resnet20",
        "--epochs", "2", "--learning_rate", "0.1", "--batch-size", "128", "--save_path", pruned,
        "--subset_rate", "0.9", "--mask_path", masks / "data_mask_win10_ep30.npy",
        "--score_path", masks / "score_win10_ep30.npy")
    kept = np.load(pruned / "subset_indices.npy")
    assert np.array_equal(kept, np.sort(mask[int(0.9 * 100):]))  # the published slice
    m = json.loads((pruned / "metrics.json").read_text())
    assert m["num_train_samples"] == 10 and m["method"] == "tdds" and m["subset_rate"] == 0.9
    assert "mean weight u of the kept set" in (pruned / "log_seed_42.txt").read_text()


def test_published_commands_cifar10_resnet18(tmp_path):
    """CIFAR-10 layout (five data_batch files), the published resnet18; for CPU time 40 images, 3 epochs,
    T = K = 3."""
    cifar10_dir = write_cifar(str(tmp_path / "data"), "cifar10", 40, 10)
    full, masks = tmp_path / "all", tmp_path / "masks"
    cli("train.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet18",
        "--epochs", "3", "--batch-size", "100", "--dynamics", "--save_path", full, "--ngpu", "0")
    assert len(list((full / "npy").glob("*_Output.npy"))) == 3
    cli("importance_evaluation.py", "--dynamics_path", full / "npy", "--mask_path", masks,
        "--trajectory_len", "3", "--window_size", "3")
    cli("train_subset.py", "--data_path", cifar10_dir, "--dataset", "cifar10", "--arch", "resnet18",
        "--epochs", "1", "--save_path", tmp_path / "sub", "--subset_rate", "0.9", "--ngpu", "0",
        "--mask_path", masks / "data_mask_win3_ep3.npy",
        "--score_path", masks / "score_win3_ep3.npy", "--no_score_weighting")
    m = json.loads((tmp_path / "sub" / "metrics.json").read_text())
    assert m["num_train_samples"] == 4 and m["score_weighting"] is False


def test_amp_end_to_end(tmp_path):
    """--amp (bf16 autocast, channels_last) on the CPU through the three steps: the runs finish with
    --amp in their fingerprint, and the recorded logits are bf16 values (docs/SCALE.md: --amp rounds them)."""
    import torch
    data = write_cifar(str(tmp_path / "data"), "cifar10", 64, 16)
    full, masks, sub = tmp_path / "full", tmp_path / "masks", tmp_path / "sub"
    common = ["--data_path", data, "--dataset", "cifar10", "--arch", "resnet20", "--batch-size", "32", "--ngpu", "0",
              "--amp"]
    p = cli("train.py", *common, "--epochs", "3", "--dynamics", "--save_path", full)
    assert "resnet20 on cpu amp bfloat16" in p.out
    for e in range(3):
        z = np.load(full / "npy" / f"{e}_Output.npy")
        assert z.dtype == np.float32 and np.isfinite(z).all() and len(np.unique(z)) > 10
        bf16 = torch.from_numpy(z).to(torch.bfloat16).float().numpy()
        assert np.array_equal(z, bf16), e                        # every logit is a bf16 value
    cli("importance_evaluation.py", "--dynamics_path", full / "npy", "--mask_path", masks, "--trajectory_len", "3",
        "--window_size", "3", "--no_plot")
    cli("train_subset.py", *common, "--epochs", "1", "--subset_rate", "0.5", "--save_path", sub,
        "--mask_path", masks / "data_mask_win3_ep3.npy", "--score_path", masks / "score_win3_ep3.npy")
    for run in (full, sub):
        m = json.loads((run / "metrics.json").read_text())
        assert m["finished"] and all(np.isfinite(h["train_loss"]) for h in m["history"]), run
        ck = torch.load(run / "checkpoint.pth.tar", weights_only=True)
        assert ck["fingerprint"]["--amp"] is True, run
