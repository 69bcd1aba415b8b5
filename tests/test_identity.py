"""A run's identity and the scripts' front door: flags that act on nothing are not identity and get one
note (the one rule, utils.args.without_unused, that the study uses for its variants too); --workers
beyond the cores; train.py's "next:" only where the scorer accepts the dynamics; the scorer pointed at
a selection/ folder; one error line under torchrun, every process ending with its status."""
import json
import os
import shutil
import sys

import pytest
from conftest import ROOT, cli, folder_digest, run_script

import train
import train_subset
from utils.args import idle_flags, usable_cores, without_unused
from utils.errors import OtherRank, UserError, run
from utils.protocol.fingerprint import fingerprint_diffs

DIGITS = ["--dataset", "digits", "--arch", "resnet20", "--ngpu", "0", "--batch-size", "256"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch digits run on the CPU (copied before anything writes into it), and its output."""
    save = tmp_path_factory.mktemp("identity") / "run"
    p = cli("train.py", *DIGITS, "--epochs", "1", "--save_path", str(save))
    return save, p.out


IDLE = {"--dynamics_dtype": "float16", "--dynamics_format": "contrib", "--image_size": "64", "--tf32": "off",
        "--dynamic_ratio": "5", "--dynamic_delta": "0.5", "--amp_dtype": "float16", "--workers": "999"}


def test_flags_that_act_on_nothing_are_not_identity_and_get_one_note(finished, tmp_path):
    """Issue 31, hole 7: --dynamics_dtype / --dynamics_format without --dynamics, --image_size on digits,
    --tf32 on the CPU (and the others that act on nothing here) made the same run refuse."""
    save, _ = finished
    run_dir = tmp_path / "run"
    shutil.copytree(save, run_dir)
    before = folder_digest(run_dir)
    extra = [x for flag, value in IDLE.items() for x in (flag, value)]
    p = cli("train.py", *DIGITS, "--epochs", "1", "--save_path", run_dir, *extra, check=False)
    assert p.code == 0 and "already finished" in p.out, (p.out, p.err)
    notes = [line for line in p.out.splitlines() if line.startswith("note:") and "no effect" in line]
    assert len(notes) == 1 and all(flag in notes[0] for flag in IDLE), notes
    assert folder_digest(run_dir) == before
    # one at a time, each is refused where it does act (the identity still holds)
    p = cli("train.py", *DIGITS, "--epochs", "1", "--save_path", run_dir, "--dynamics", "--dynamics_dtype", "float16",
            check=False)
    assert p.code == 2 and "--dynamics False (now True)" in p.err


def test_the_one_rule_of_what_acts_and_the_notes_it_gives():
    fp = {"--dataset": "imagefolder", "--image_size": 224, "--tf32": "on", "device": "cuda", "--amp": False}
    assert fingerprint_diffs(fp, {**fp, "--image_size": 160}) == ["--image_size 224 (now 160)"]
    assert fingerprint_diffs(fp, {**fp, "--tf32": "off"}) == ["--tf32 'on' (now 'off')"]
    cpu = {**fp, "device": "cpu", "--dataset": "cifar10"}
    assert fingerprint_diffs(cpu, {**cpu, "--image_size": 160, "--tf32": "off"}) == []
    # a setting the compared dict does not hold is never assumed off: train_subset.py keeps --teacher's
    # content, not its path, so its --kd_alpha stays identity
    assert without_unused({"--kd_alpha": 0.5}, "--") == {"--kd_alpha": 0.5}
    assert "kd_alpha" not in without_unused({"teacher": None, "kd_alpha": 0.5})
    a = train_subset.parse_args(["--selection", "random", "--strata", "7", "--kd_temperature", "2",
                                 "--mask_path", "m.npy", "--no_score_weighting"])
    assert idle_flags(a, device="cpu") == [
        "--kd_temperature 2.0 (acts only with --teacher)", "--mask_path m.npy (acts only with --selection top or ccs "
        "or beta)", "--no_score_weighting (acts only with --selection top or ccs or beta)",
        "--strata 7 (acts only with --selection ccs)"]
    assert idle_flags(train.parse_args(["--tf32", "off"]), device="cuda") == []
    assert idle_flags(train.parse_args([]), device="cpu") == []          # nothing given, nothing noted


def test_workers_beyond_the_cores_are_lowered_with_a_note(capsys, monkeypatch):
    from utils.args import check_training_args
    monkeypatch.delenv("RANK", raising=False)
    a = train.parse_args(["--dataset", "imagefolder", "--workers", "999", "--ngpu", "0"])
    check_training_args(a)
    assert a.workers == usable_cores() and f"--workers 999 is more than the {usable_cores()}" in capsys.readouterr().out
    a = train.parse_args(["--dataset", "imagefolder", "--workers", str(usable_cores()), "--ngpu", "0"])
    check_training_args(a)
    assert a.workers == usable_cores() and capsys.readouterr().out == ""


def test_next_step_only_where_the_scorer_accepts_the_dynamics(finished, tmp_path):
    """A plain --dynamics run names its next step; a --dynamic run says why its dynamics cannot be scored
    (and the scorer does refuse them), and its selection/ folder given as dynamics is named as such."""
    save = tmp_path / "rs2"
    p = cli("train.py", *DIGITS, "--epochs", "1", "--dynamics", "--dynamic", "rs2", "--save_path", save)
    assert "next:" not in p.out and "not for importance_evaluation.py: --dynamic rs2" in p.out
    score = ["--mask_path", tmp_path / "m", "--trajectory_len", "1", "--method", "el2n"]
    p = cli("importance_evaluation.py", "--dynamics_path", save / "npy", *score, check=False)
    assert p.code == 2 and "every sample in every epoch" in p.err
    p = cli("importance_evaluation.py", "--dynamics_path", save / "selection", *score, check=False)
    assert p.code == 2 and "is the selection/ folder of a train.py --dynamic run" in p.err, p.err
    assert len(p.err.strip().splitlines()) == 1
    p = cli("train.py", *DIGITS, "--epochs", "1", "--dynamics", "--save_path", tmp_path / "full")
    assert f"next: python importance_evaluation.py --dynamics_path {tmp_path / 'full'}/npy/" in p.out


def test_the_scorer_notes_flags_it_does_not_read(tmp_path):
    import numpy as np
    from conftest import write_published
    d = write_published(tmp_path / "d", np.random.default_rng(0).standard_normal((2, 40, 5)),
                        np.random.default_rng(1).integers(0, 5, 40))
    p = cli("importance_evaluation.py", "--dynamics_path", d, "--mask_path", tmp_path / "m", "--method", "el2n",
            "--trajectory_len", "2", "--decay", "0.5", "--manualSeed", "3", "--no_plot")
    notes = [line for line in p.out.splitlines() if "no effect" in line]
    assert len(notes) == 1 and "--decay" in notes[0] and "--manualSeed" in notes[0] and "--window" not in notes[0]
    assert json.load(open(tmp_path / "m" / "info_el2n_ep2.json"))["scoring"]["decay"] is None


# ------------------------------------------------------------------------------------ under torchrun
def _ends(monkeypatch, capsys, rank, fn):
    monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as e:
        run(fn)
    return e.value.code, capsys.readouterr().err


def test_a_users_mistake_is_one_line_from_process_0_and_every_process_ends_with_its_status(monkeypatch, capsys):
    def mistake():
        raise UserError("--epochs must be at least 1, got 0")

    assert _ends(monkeypatch, capsys, "0", mistake) == (2, "error: --epochs must be at least 1, got 0\n")
    assert _ends(monkeypatch, capsys, "1", mistake) == (2, "")
    assert _ends(monkeypatch, capsys, "1", lambda: (_ for _ in ()).throw(OtherRank(1))) == (1, "")
    assert _ends(monkeypatch, capsys, "3", lambda: (_ for _ in ()).throw(KeyboardInterrupt())) == (130, "")


@pytest.mark.slow
def test_torchrun_refusal_is_one_error_line(tmp_path):
    p = run_script(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   os.path.join(ROOT, "train.py"), *DIGITS, "--epochs", "0", "--save_path", str(tmp_path / "r"),
                   check=False, env={"OMP_NUM_THREADS": "1"})
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert p.returncode != 0 and errors == ["error: --epochs must be at least 1, got 0"], p.stderr[-3000:]
