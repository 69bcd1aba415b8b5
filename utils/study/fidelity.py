"""Rank fidelity of a cheap scoring (docs/STUDIES.md, "Rank fidelity"): how far the scores a static run
trained on agree with the reference scoring — the same method's score in OUT/masks (the study's
architecture on all the data) at the same T where there is one, else at the largest T there.
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
from utils.study.scorings import load_scores, parse_tag

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


def reference_tag(scores, method, T, tag):
    """The reference of a score of `method` at `T` (its own tag `tag`) among `scores` ({tag: Score}):
    that tag where it is there; else the method's score at the same T (the first tag); else at the
    largest T; None where the method was not scored there."""
    same = sorted((s for s in scores.values() if s.method == method), key=lambda s: s.tag)
    if not same:
        return None
    if tag in scores and scores[tag].method == method:
        return tag
    at_T = [s for s in same if s.T == T]
    return at_T[0].tag if at_T else max(same, key=lambda s: s.T or 0).tag


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
        method, T = (own.method, own.T) if own is not None else parse_tag(tag)
        ref = reference_tag(folders(ref_folder), method, T, tag)
        if own is None or ref is None or (os.path.samefile(folder, ref_folder) and ref == tag):
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
