"""utils/methods.py is the one table of methods: no second copy of its name lists anywhere in the code,
every declared score can be computed (its per-epoch feature and reducer exist) and nothing the scorer
has is undeclared, the scripts' argparse choices are the table's, and the table imports no torch/numpy."""
import argparse
import ast
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, write_published
from utils import methods
from utils.errors import UserError
from utils.science import features, reducers
from utils.science.scores import Dynamics, compute_score

# the name lists that must be written once (data sets are left out: per-data-set facts such as the
# CIFAR normalisation statistics are rightly keyed by a data set's name in utils/training/data.py)
NAME_LISTS = {"score methods": set(methods.SCORES), "selections": set(methods.SELECTIONS),
              "dynamic methods": set(methods.DYNAMIC_METHODS), "noise types": set(methods.NOISE_TYPES),
              "corruptions": set(methods.CORRUPTIONS)}
SKIP_DIRS = {"tests", "data", "checkpoint", "__pycache__"}


def source_files(root):
    """The repository's .py files outside tests/ (and outside hidden folders, data, virtual environments)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg")))
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def copies(path):
    """[(line, which list, names)] of every literal tuple, list, set or dict (its keys) in `path` that
    holds two or more names of one list of NAME_LISTS."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        words = [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
        for which, known in NAME_LISTS.items():
            hits = [w for w in words if w in known]
            if len(hits) >= 2:
                found.append((node.lineno, which, hits))
    return found


def test_no_second_copy_of_a_name_list():
    table = os.path.join(ROOT, "utils", "methods.py")
    found = [f"{os.path.relpath(p, ROOT)}:{line}: {which} {hits}"
             for p in source_files(ROOT) if p != table for line, which, hits in copies(p)]
    assert not found, ("name lists written outside utils/methods.py (import them from there, or derive them "
                       "with utils.methods.names):\n" + "\n".join(found))


def test_the_scan_finds_a_copy(tmp_path):
    """The scan above can fail: a tuple, a dict's keys and a membership test are each found."""
    (tmp_path / "a.py").write_text('X = ("tdds", "el2n")\nY = {"infobatch": 1, "rs2": 2}\n'
                                   'def f(s):\n    return s in ["ccs", "beta"]\nZ = ("tdds",)\n')
    assert sorted((line, which) for line, which, _ in copies(tmp_path / "a.py")) == [
        (1, "score methods"), (2, "dynamic methods"), (4, "selections")]


# ------------------------------------------------------------------------------------ the scores
def test_every_score_has_its_feature_and_reducer():
    for name, s in methods.SCORES.items():
        assert s.source in ("dynamics", "seed", "checkpoint"), name
        if s.source != "dynamics":
            assert s.feature is None and s.reducer is None, name
            continue
        assert s.feature == "contrib" or s.feature in features.PER_EPOCH, f"{name}: no feature {s.feature}"
        assert s.reducer in reducers.REDUCERS, f"{name}: no reducer {s.reducer}"
        assert s.window is None or s.window >= 2, name
    assert set(methods.CONTRIB_FEATURES) <= set(features.PER_EPOCH) | {"contrib"}


def test_no_orphan_feature_or_reducer():
    """Every per-epoch feature and reducer of the scorer is read by a declared score."""
    declared = methods.SCORES.values()
    assert set(features.PER_EPOCH) - {s.feature for s in declared} == set()
    assert set(reducers.REDUCERS) - {s.reducer for s in declared} == set()
    assert set(reducers.LAST_EPOCH_ONLY) <= set(reducers.REDUCERS)


def test_the_features_of_label_free_scores_need_no_labels():
    z = torch.randn(6, 4)
    p, y = torch.softmax(z, 1), torch.tensor([0, 1, 2, 3, 0, 1]).view(-1, 1)
    for name, s in methods.SCORES.items():
        if s.feature in features.PER_EPOCH:
            v = features.PER_EPOCH[s.feature](z, p, None if not s.labels else y)
            assert v.shape == (6,) and v.dtype == torch.float32 and torch.isfinite(v).all(), name


@pytest.fixture(scope="module")
def dynamics(tmp_path_factory):
    rng = np.random.default_rng(0)
    T, N, C = 5, 40, 4
    y = rng.integers(0, C, N)
    Z = (rng.standard_normal((T, N, C)) + 2 * np.eye(C)[y] * np.linspace(0, 1, T)[:, None, None]).astype(np.float32)
    return write_published(tmp_path_factory.mktemp("dyn"), Z, y), Z, y


def test_every_dynamics_score_runs(dynamics):
    """The scorer computes every declared score from logits, by the table alone: (N,) finite float32."""
    folder, Z, _ = dynamics
    T = Z.shape[0]
    dyn = Dynamics(folder, T)
    for name in methods.DYNAMICS_SCORES:
        s = methods.SCORES[name]
        score = compute_score(dyn, name, T, s.window or 2, 0.9, progress=False)
        assert score.shape == (Z.shape[1],) and score.dtype == np.float32 and np.isfinite(score).all(), name


def test_contrib_layout_scores_what_it_records_and_refuses_the_rest(tmp_path, dynamics):
    """A score whose feature the contrib layout does not record is refused in one line naming it."""
    from test_scoring import write_contrib
    _, Z, y = dynamics
    T = Z.shape[0]
    dyn = Dynamics(write_contrib(tmp_path / "contrib", Z, y), T)
    for name in methods.DYNAMICS_SCORES:
        s = methods.SCORES[name]
        if s.source != "dynamics" or s.feature in methods.CONTRIB_FEATURES:
            assert np.isfinite(compute_score(dyn, name, T, s.window or 2, 0.9, progress=False)).all(), name
        else:
            with pytest.raises(UserError, match=f"--method {name} reads each epoch's {s.feature}.*"
                                                f"--dynamics_format logits") as e:
                compute_score(dyn, name, T, s.window or 2, 0.9, progress=False)
            assert "\n" not in str(e.value)


def test_output_tags_follow_the_declared_rule():
    tag = methods.output_tag
    assert tag("tdds", 30, 10) == "win10_ep30" and tag("tdds", 30, 10, 0.8, name_decay=True) == "win10_ep30_decay0.8"
    assert tag("tdds", 30, 10, name_window=True) == "win10_ep30"   # K is in the name already
    assert tag("dual", 20, 5, name_window=True) == "dual_ep20_win5" and tag("dual", 20, 5) == "dual_ep20"
    assert tag("el2n", 7) == "el2n_ep7" and tag("el2n", 7, 3, 0.5, True, True) == "el2n_ep7"   # no window, no decay
    assert tag("moderate", 0, 0) == "moderate"
    assert methods.describe("tdds", T=10, K=5, decay=0.9) == "TDDS (T=10, K=5, decay=0.9)"
    assert methods.describe("el2n", T=10) == "el2n (T=10)"
    assert methods.describe("moderate", arch="resnet18", epoch=4) == "moderate (resnet18, epoch 4)"


# ------------------------------------------------------------------------------- argparse choices
class _Caught(Exception):
    pass


def choices(script, monkeypatch):
    """{--flag: choices} of the parser that `script`'s parse_args builds, caught before it parses."""
    def catch(self, *a, **k):
        raise _Caught(self)
    module = importlib.import_module(script[:-3])
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Caught) as e:
            module.parse_args([])
    return {max(a.option_strings, key=len): tuple(a.choices) for a in e.value.args[0]._actions if a.choices}


def test_argparse_choices_are_the_table(monkeypatch):
    robust = {"--dataset": methods.DATASETS, "--noise_type": methods.NOISE_TYPES,
              "--corruption": tuple(methods.CORRUPTIONS)}
    got = {s: choices(s, monkeypatch) for s in ("importance_evaluation.py", "train.py", "train_subset.py")}
    assert got["importance_evaluation.py"]["--method"] == tuple(methods.SCORES)
    assert got["importance_evaluation.py"]["--dataset"] == methods.DATASETS
    assert got["train.py"]["--dynamic"] == tuple(methods.DYNAMIC_METHODS)
    assert got["train_subset.py"]["--selection"] == tuple(methods.SELECTIONS)
    for script in ("train.py", "train_subset.py"):
        for flag, want in robust.items():
            assert got[script][flag] == want, (script, flag)


def test_the_table_imports_no_torch_and_no_numpy():
    code = ("import sys, utils.methods; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch', 'utils')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['utils', 'utils.methods']"
