"""Rank fidelity of a cheap scoring (docs/STUDIES.md, "Rank fidelity"): how far the scores a static run
trained on agree with the reference scoring — the same method's score in OUT/masks (the study's
architecture on all the data) at the same T where there is one, else at the largest T there (for a
score of OUT/masks itself at a smaller T, early epochs, the largest T there).
Spearman's rho over all N samples and |kept ∩ kept_ref| / |kept| of the kept sets at the run's rate
(the top-scored samples, as --selection top keeps them: the agreement of the scores, whatever
selection the run used), from utils/science/agreement.py."""
import os
import sys

import numpy as np

from utils.errors import UserError
from utils.protocol.run import training_cwd
from utils.science.agreement import kept_set, spearman
from utils.science.selection import file_tag
from utils.study.runs import counts, is_dynamic
from utils.study.scorings import load_scores

REFERENCE = "masks"   # OUT/masks: the reference scorings of a study


def mask_folder(m, out):
    """The folder of the scores run m trained on (its --mask_path's, relative to where the run
    started), or the folder of that name in `out` when the study was moved since; None if neither."""
    mask = m.get("mask_path")
    if not mask:
        return None
    if not os.path.isabs(mask):
        cwd = training_cwd(m["path"])
        if cwd is None:
            return None
        mask = os.path.join(cwd, mask)
    folder = os.path.dirname(os.path.abspath(mask))
    if os.path.isdir(folder):
        return folder
    moved = os.path.join(out, os.path.basename(folder))
    return moved if os.path.isdir(moved) else None


def reference_tag(scores, own, in_reference):
    """The tag of the reference of score `own` (a Score) among `scores` ({tag: Score} of OUT/masks):
    for a score of another source, its own tag there, else the same method at the same T (the same
    window and decay first), else at the largest T; for a score of OUT/masks itself (early epochs),
    the same method at the largest T there. None where the method was not scored there."""
    same = sorted((s for s in scores.values() if s.method == own.method), key=lambda s: s.tag)
    if not same:
        return None
    if not in_reference and own.tag in scores and scores[own.tag].method == own.method:
        return own.tag
    at_T = [s for s in same if s.T == own.T] if not in_reference else []
    if not at_T:
        largest = max(s.T or 0 for s in same)
        at_T = [s for s in same if (s.T or 0) == largest]
    alike = [s for s in at_T if all(s.info.get(k) == own.info.get(k) for k in ("window_size", "decay"))]
    return (alike or at_T)[0].tag


def fidelity(score, reference, rate):
    """(Spearman's rho over all samples, |kept ∩ kept_ref| / |kept| at pruning rate `rate`) of two
    (N,) scores in dataset order."""
    kept, kept_ref = kept_set(score, rate), kept_set(reference, rate)
    overlap = len(np.intersect1d(kept, kept_ref)) / len(kept) if len(kept) else float("nan")
    return spearman(score, reference), overlap


class _Folders:
    """load_scores of each mask folder, once; {} for a folder without finished scores (a note)."""

    def __init__(self):
        self.cache = {}

    def __call__(self, folder):
        if folder not in self.cache:
            try:
                self.cache[folder] = load_scores(folder)
            except UserError as e:
                print(f"note: no rank fidelity for the scores of {folder}: {e}", file=sys.stderr)
                self.cache[folder] = {}
        return self.cache[folder]


def add_fidelity(runs, out):
    """rank_rho, kept_overlap, rank_scoring and rank_reference (the two scores, as mask folder/tag
    relative to `out`) of every counted static run whose scores are not the reference's."""
    ref_folder = os.path.join(os.path.abspath(out), REFERENCE)
    if not os.path.isdir(ref_folder):
        return
    folders, done = _Folders(), {}
    for m in runs:
        if not counts(m) or m["is_full"] or is_dynamic(m) or m.get("selection") == "random":
            continue
        folder = mask_folder(m, out)
        tag = (m.get("score_info") or {}).get("tag") or file_tag(m.get("mask_path") or "", "data_mask_")
        if folder is None or tag is None:
            continue
        own = folders(folder).get(tag)
        in_reference = os.path.samefile(folder, ref_folder)
        ref = reference_tag(folders(ref_folder), own, in_reference) if own is not None else None
        if ref is None or (in_reference and ref == tag):
            continue
        reference = folders(ref_folder)[ref]
        if len(reference.score) != len(own.score):
            print(f"note: no rank fidelity for {m['run']}: its scores have {len(own.score)} samples, the "
                  f"reference {ref} {len(reference.score)}", file=sys.stderr)
            continue
        key = (folder, tag, ref, m["subset_rate"])
        if key not in done:
            done[key] = fidelity(own.score, reference.score, m["subset_rate"])
        m["rank_rho"], m["kept_overlap"] = done[key]
        m["rank_scoring"] = f"{os.path.relpath(folder, out)}/{tag}"
        m["rank_reference"] = f"{REFERENCE}/{ref}"
