"""conftest.cli, the in-process harness most tests run the scripts through: it ends as the command
does (exit status, what is printed, nothing else) and leaves no global state behind; and the guard
that fails a test which does."""
import os
import signal

import pytest
import torch

from conftest import changed_state, cli, global_state, run_script, set_global_state

# (script, argv): a UserError after the deterministic switch, an argparse error, a bad folder
CASES = [("train.py", ["--dataset", "digits", "--ngpu", "0", "--deterministic", "--resume", "/nonexistent/ck.pth"]),
         ("train_subset.py", ["--dataset", "digits", "--no_such_flag"]),
         ("scripts/summarize.py", ["/nonexistent/sweep"])]


@pytest.mark.parametrize("script,argv", CASES, ids=[c[0] for c in CASES])
def test_cli_ends_as_the_process_does(script, argv):
    before = global_state()
    inside = cli(script, *argv, check=False)
    assert changed_state(before, global_state()) == []         # --deterministic switched it on, cli put it back
    process = run_script(script, *argv, check=False)
    assert (inside.code, inside.out, inside.err) == (process.returncode, process.stdout, process.stderr)
    assert inside.code == 2 and inside.err.startswith("error: ") and inside.err.count("\n") == 1


def test_cli_passes_argv_env_and_cwd_and_raises_on_failure(tmp_path):
    r = cli("train.py", "--help", env={"TDDS_TEST_VAR": "1"}, cwd=tmp_path)
    assert r.code == 0 and r.out.startswith("usage: train.py") and r.err == ""
    assert "TDDS_TEST_VAR" not in os.environ and os.getcwd() != str(tmp_path)
    with pytest.raises(AssertionError, match="ended with 2"):
        cli("train.py", "--epochs", "0")


def test_global_state_names_and_restores_every_change(tmp_path):
    before = global_state()
    old_cwd = os.getcwd()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(torch.get_num_threads() + 1)
        os.environ["TDDS_TEST_VAR"] = "x"
        os.chdir(tmp_path)
        signal.signal(signal.SIGUSR1, lambda *a: None)
        assert changed_state(before, global_state()) == [
            "deterministic algorithms", "default dtype", "torch threads", "cwd", "signal handlers", "$TDDS_TEST_VAR"]
    finally:
        set_global_state(before)
    assert changed_state(before, global_state()) == [] and os.getcwd() == old_cwd
