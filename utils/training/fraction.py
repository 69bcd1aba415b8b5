"""Scoring from a fraction of the data (score extrapolation, Schmidt et al. 2025; docs/METHODS.md).

train.py --train_fraction f trains on a seeded uniform random subset S of round(f N) samples (drawn
from np.random.default_rng(--manualSeed), as train_subset.py --selection random draws its subset),
writes S to SAVE_PATH/train_indices.npy (dataset order, int64) and records dynamics for S only (the
rows of S in every epoch). importance_evaluation.py then scores S as usual and extends the scores to
every sample through the kNN of utils/science/extrapolate.py in the features of the run's final
model (one forward pass of all N samples). f = 1 (the default) is a full-data run, recorded exactly
as before the flag existed.
"""
import os

import numpy as np

from utils.errors import UserError
from utils.protocol.files import save_npy

INDICES = "train_indices.npy"   # in the run folder: S, the samples a --train_fraction run trained on


# ------------------------------------------------------------------------------------ train.py
def add_fraction_args(group):
    group.add_argument("--train_fraction", type=float, default=1.0, metavar="F",
                       help="train (and record dynamics) on a random fraction F of the training set, drawn from "
                            "--manualSeed and saved as train_indices.npy; importance_evaluation.py extends the "
                            "scores to every sample (score extrapolation)")


def check_fraction_args(args):
    f = args.train_fraction
    if not 0 < f <= 1:
        raise UserError(f"--train_fraction is the fraction of the training set trained on: it must lie in (0, 1], got {f}")
    if f < 1 and args.dynamic:
        raise UserError("--train_fraction and --dynamic both choose what the run trains on: use one")
    if f < 1 and args.evaluate:
        raise UserError("--train_fraction chooses what a training run trains on: it has no meaning with --evaluate")


def fraction_indices(n, fraction, seed):
    """S: (round(fraction n),) int64 dataset indices, ascending, uniform without replacement from
    np.random.default_rng(seed)."""
    m = int(round(fraction * n))
    if not 1 <= m <= n:
        raise UserError(f"--train_fraction {fraction} keeps {m} of the {n} training samples: nothing to train on")
    return np.sort(np.random.default_rng(seed).choice(np.arange(n, dtype=np.int64), size=m, replace=False))


class TrainFraction:
    """What train.py trains on: every sample (`whole`), or S."""

    def __init__(self, args, n):
        self.fraction, self.n, self.whole = args.train_fraction, n, args.train_fraction >= 1
        self.subset = None if self.whole else fraction_indices(n, args.train_fraction, args.manualSeed)

    @property
    def indices(self):
        """(M,) int64 torch tensor of the dataset indices trained on."""
        import torch
        return torch.arange(self.n) if self.whole else torch.from_numpy(self.subset)

    @property
    def info(self):
        """metrics.json entries (none for a full-data run): a fraction's run is labelled "fraction", not
        "full", so that no summary takes it for the full-data reference."""
        if self.whole:
            return {}
        return {"method": "fraction", "selection": "fraction", "subset_rate": 1 - self.fraction,
                "train_fraction": self.fraction, "num_train_samples": len(self.subset), "full_train_samples": self.n}

    def write(self, save_path, log):
        """SAVE_PATH/train_indices.npy (main process; nothing for a full-data run) and a log line."""
        if self.whole:
            return
        save_npy(os.path.join(save_path, INDICES), self.subset)
        log(f"training on {len(self.subset)} of the {self.n} samples (--train_fraction {self.fraction}, drawn from "
            f"--manualSeed): {save_path}/{INDICES}; the dynamics cover only them")


# ------------------------------------------------------------------------- importance_evaluation.py
def recorded_subset(dynamics_path):
    """S of the --train_fraction run whose npy/ folder is `dynamics_path` (its run folder's
    train_indices.npy), or None: the dynamics cover every sample."""
    folder = os.path.dirname(os.path.abspath(dynamics_path.rstrip("/")))
    path = os.path.join(folder, INDICES)
    if not os.path.isfile(path):
        return None
    try:
        S = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"cannot read {path}: not a .npy array ({type(e).__name__})") from None
    if S.ndim != 1 or S.dtype.kind not in "iu" or len(S) == 0 or (np.diff(S) <= 0).any() or S[0] < 0:
        raise UserError(f"{path} must hold increasing dataset indices (int64), the samples the run trained on")
    return S.astype(np.int64)


def check_extrapolate_args(k, subset, method):
    """The k to use: --extrapolate_k (default k = 10) for dynamics of a fraction; refused otherwise."""
    from utils.science.extrapolate import K_DEFAULT, check_k
    if subset is None:
        if k is not None:
            raise UserError(f"--extrapolate_k extends scores from the samples a train.py --train_fraction run trained on "
                            f"to the others{'' if method == 'moderate' else ': these dynamics cover every sample'}")
        return None
    if method == "random":
        raise UserError("--method random draws every sample's score itself: it does not read a --train_fraction run's "
                        "dynamics (score the full data, or select with train_subset.py --selection random)")
    k = K_DEFAULT if k is None else k
    check_k(k, len(subset))
    return k


class FeatureSource:
    """The features a fraction's scores are extended by: the penultimate layer of the final model of
    the run that recorded `dyn` (a Dynamics opened with its subset S), from `checkpoint` (by default
    the run folder's checkpoint.pth.tar). Opening reads and checks the checkpoint only; `extend`
    computes the features (one forward pass of all N samples) and the neighbours once."""

    def __init__(self, dyn, checkpoint=None, data_path=None, dataset=None):
        from utils.protocol.fingerprint import file_sha256
        from utils.training.checkpoint_features import read_checkpoint, run_settings
        self.dyn, self.S = dyn, dyn.subset
        run_folder = os.path.dirname(os.path.abspath(dyn.path.rstrip("/")))
        self.path = checkpoint or os.path.join(run_folder, "checkpoint.pth.tar")
        what = "--checkpoint" if checkpoint else "the scoring run's checkpoint"
        self.ck = read_checkpoint(self.path, what)
        self.run = run_settings(self.ck, self.path, data_path, dataset, what)
        ck_run_id = (self.ck.get("run_info") or {}).get("run_id")
        if dyn.run_id is not None and ck_run_id is not None and ck_run_id != dyn.run_id:
            raise UserError(f"{what} {self.path} is of run {ck_run_id}, the dynamics were recorded by run "
                            f"{dyn.run_id}: the features must come from the model of the run that recorded them")
        self.fraction = self.run.get("train_fraction", 1.0)
        if self.fraction >= 1 or not np.array_equal(
                fraction_indices(dyn.n_all, self.fraction, self.run.get("manualSeed")), self.S):
            raise UserError(f"{what} {self.path} did not train on the {len(self.S)} samples of the run's {INDICES}")
        self.sha256 = file_sha256(self.path)
        self._neighbours = None

    def identity(self, k):
        """What decides the extended files besides the dynamics: k, S and the model (for the scoring's record)."""
        from utils.protocol.fingerprint import array_sha256
        return {"k": k, "samples": f"{len(self.S)} of {self.dyn.n_all}, sha256 {array_sha256(self.S)[:16]}",
                "features": f"sha256 {self.sha256[:16]}"}

    def extend(self, arrays, k, device="cpu", log=print):
        """([(N,) arrays], record): each of `arrays` ((|S|,) in S's order) at every sample, S's values
        unchanged, the others the mean of their k nearest in S; record: the fields of info_<tag>.json."""
        from utils.science.extrapolate import extend, nearest
        from utils.training.checkpoint_features import checkpoint_features
        n, arch = self.dyn.n_all, self.run.get("arch")
        if self._neighbours is None or self._neighbours[0] != k:
            log(f"extrapolating to the {n - len(self.S)} samples outside the {len(self.S)} scored: mean of the {k} "
                f"nearest in the penultimate features of {self.path} ({arch}, epoch {self.ck.get('epoch')}), one "
                f"forward pass of all {n} samples")
            features, data = checkpoint_features(self.ck, self.run, device)
            if data.n_train != n:
                raise UserError(f"{self.path}: its training set has {data.n_train} samples, the dynamics' targets.npy {n}")
            self._neighbours = (k, *nearest(features, self.S, k, device=device))
        _, others, positions = self._neighbours
        record = {"train_fraction": self.fraction, "extrapolate_k": k, "scored_samples": len(self.S), "num_samples": n,
                  "feature_source": {"checkpoint": os.path.abspath(self.path), "sha256": self.sha256,
                                     "epoch": self.ck.get("epoch"), "arch": arch,
                                     "layer": "penultimate (input of the final nn.Linear), eval mode, no augmentation"},
                  "feature_passes": int(n), "feature_arch": arch}
        return [extend(a, self.S, others, positions) for a in arrays], record
