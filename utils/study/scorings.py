"""The scorings of a mask folder, as scripts/report.py (and the sweep, and the summary) read them:
what importance_evaluation.py wrote (dataset_score_<tag>.npy, or the published pair data_mask_<tag>.npy
+ score_<tag>.npy), its record info_<tag>.json (written last, with the sha256 of the arrays it
vouches for), and what the scored training run left beside its dynamics (labels, noise and
corruption masks). Only finished scorings count: one without its record, or whose arrays no longer
match it, is not trusted."""
import glob
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from utils.errors import UserError
from utils.protocol.files import load_json
from utils.protocol.fingerprint import file_sha256
from utils.science.selection import load_mask_and_score

ARRAYS = ("mask", "score", "dataset_score")   # the files info_<tag>.json vouches for (sha256 each)


def read_info(mask_dir, tag, strict=False):
    """info_<tag>.json of the scoring <tag> in mask_dir as a dict, {} when there is none (strict: an
    unreadable one is a UserError; else it counts as none)."""
    path = os.path.join(mask_dir, f"info_{tag}.json")
    if strict:
        return load_json(path, strict=True) if os.path.exists(path) else {}
    info = load_json(path, {})
    return info if isinstance(info, dict) else {}


@dataclass
class Score:
    """One score of the mask folder."""
    tag: str
    score: np.ndarray            # (N,) float64, dataset order
    order: np.ndarray            # (N,) int64 dataset indices by ascending score (the mask)
    info: dict = field(default_factory=dict)
    method: str = None           # tdds, el2n, ... (None if neither the info nor the name says)
    T: int = None                # trajectory length


def parse_tag(tag):
    """(method, T) from a file tag: win{K}_ep{T}[_suffix] is TDDS, {method}_ep{T}[_suffix] a baseline,
    'moderate' moderate; (None, None) for anything else."""
    m = re.match(r"^win\d+_ep(\d+)(_|$)", tag)
    if m:
        return "tdds", int(m[1])
    m = re.match(r"^([a-z][a-z0-9_]*?)_ep(\d+)(_|$)", tag)
    if m:
        return m[1], int(m[2])
    return ("moderate", None) if tag == "moderate" else (None, None)


def _load_vector(path):
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:   # truncated, not .npy, pickled objects ...
        raise UserError(f"{path} is not a readable .npy array ({type(e).__name__})") from None
    if a.ndim != 1 or a.dtype.kind not in "fiu":
        raise UserError(f"{path} holds {a.dtype} {a.shape}, expected a (N,) score")
    if not np.isfinite(a).all():
        raise UserError(f"{path} contains NaN or inf")
    return a.astype(np.float64)


def load_scores(mask_dir):
    """{tag: Score} of every score in mask_dir: dataset_score_<tag>.npy, or (files of the published
    script, which writes no dataset-order score) the pair data_mask_<tag>.npy + score_<tag>.npy."""
    tags = {os.path.basename(f)[len("dataset_score_"):-4] for f in glob.glob(os.path.join(mask_dir, "dataset_score_*.npy"))}
    tags |= {os.path.basename(f)[len("score_"):-4] for f in glob.glob(os.path.join(mask_dir, "score_*.npy"))
             if os.path.exists(os.path.join(mask_dir, "data_mask_" + os.path.basename(f)[len("score_"):]))}
    if not tags:
        raise UserError(f"no score files (dataset_score_<tag>.npy, or data_mask_<tag>.npy + score_<tag>.npy) in "
                        f"{mask_dir}: run importance_evaluation.py --mask_path {mask_dir} first")
    out = {}
    for tag in sorted(tags):
        path = os.path.join(mask_dir, f"dataset_score_{tag}.npy")
        if os.path.exists(path):
            score = _load_vector(path)
            order = np.argsort(score, kind="stable")      # = data_mask_<tag>.npy of importance_evaluation.py
        else:
            mask = os.path.join(mask_dir, f"data_mask_{tag}.npy")
            # N is the mask's own length here; load_mask_and_score reports an unreadable or 2-D file
            order, score = load_mask_and_score(mask, os.path.join(mask_dir, f"score_{tag}.npy"), _length(mask))
        info = read_info(mask_dir, tag, strict=True)
        why = uncommitted(mask_dir, tag, info)
        if why:
            print(f"note: {tag}: skipped: {why}", file=sys.stderr)
            continue
        method, T = parse_tag(tag)
        out[tag] = Score(tag, score, order, info, info.get("method") or method, info.get("trajectory_len") or T)
    if not out:
        raise UserError(f"no finished scoring in {mask_dir} (see the notes above): run importance_evaluation.py "
                        f"--mask_path {mask_dir} again")
    sizes = {t: len(s.score) for t, s in out.items()}
    if len(set(sizes.values())) != 1:
        raise UserError(f"the scores in {mask_dir} have different lengths ({', '.join(f'{t}: {n}' for t, n in sizes.items())}): "
                        "one data set per folder")
    return out


def uncommitted(mask_dir, tag, info):
    """Why the scoring <tag> cannot be trusted, or None. importance_evaluation.py writes info_<tag>.json
    last, with the sha256 of its arrays: our files without it are a scoring that did not finish, and
    arrays that no longer match it were changed since. The published script's pair (data_mask + score,
    no dataset_score, no info) is accepted as it is."""
    own = os.path.exists(os.path.join(mask_dir, f"dataset_score_{tag}.npy"))
    if not info:
        return f"no info_{tag}.json: a scoring that did not finish (run importance_evaluation.py again)" if own else None
    for kind, expected in (info.get("sha256") or {}).items():
        name = (info.get("files") or {}).get(kind)
        path = os.path.join(mask_dir, name) if name else None
        if path and os.path.exists(path) and file_sha256(path) != expected:   # (a missing one is not read)
            return f"{name} is not the file info_{tag}.json vouches for (changed or replaced since it was scored)"
    return None


def _length(path):
    """Rows of a 1-D .npy file, 0 when it is not one (load_mask_and_score then says why in one line)."""
    try:
        a = np.load(path, mmap_mode="r")
        return a.shape[0] if a.ndim == 1 else 0
    except Exception:
        return 0


def from_info(scores, key):
    return next((s.info[key] for s in scores.values() if s.info.get(key)), None)


def load_run_files(run_folder, n):
    """(labels trained on or None, {"mislabeled": (N,) bool, "corrupted": (N,) bool}) from the
    training run's folder: files absent = nothing to say; files of another length = a UserError."""
    labels, flags = None, {}
    if not run_folder:
        return labels, flags
    for key, name in (("labels", "train_labels.npy"), ("mislabeled", "label_noise_mask.npy"),
                      ("corrupted", "corrupted_mask.npy")):
        path = os.path.join(run_folder, name)
        if not os.path.exists(path):
            continue
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:
            raise UserError(f"{path} is not a readable .npy array ({type(e).__name__})") from None
        if a.shape != (n,):
            raise UserError(f"{path} has shape {a.shape} but the scores have {n} samples: "
                            "the scores are not of this training run")
        if key == "labels":
            labels = a.astype(np.int64)
        else:
            flags[key] = a.astype(bool)
    return labels, flags


def open_dynamics(s, flag_path, n):
    """(Dynamics or None, why not) for the trajectories of TDDS score s."""
    from utils.science.scores import Dynamics
    path = flag_path or s.info.get("dynamics_path")
    if not path:
        return None, "no dynamics folder known (pass --dynamics_path)"
    if not s.T or s.T < 2:
        return None, "its trajectory length is unknown"
    try:
        dyn = Dynamics(path, s.T)
    except UserError as e:
        if flag_path:
            raise   # the user named this folder: a mistake to report, not to skip
        return None, f"the dynamics are unavailable ({e})"
    if dyn.n != n:
        if flag_path:
            raise UserError(f"--dynamics_path {path} holds {dyn.n} samples, the scores {n}")
        return None, f"{path} holds {dyn.n} samples, the scores {n}"
    return dyn, ""


