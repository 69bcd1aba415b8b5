"""A run's identity: the fingerprint of the settings that define what it computes, and the
content hashes (sha256) of the files and arrays it reads."""
import hashlib
import re

import numpy as np

from utils.args import flag_name, without_unused

# Flags that cannot change what a run computes: where it is, how it reports, how it is resumed.
# --data_path is here because the training labels' content is fingerprinted instead (a data set may
# move between machines); --mask_path/--score_path likewise (their content is); --ngpu because the
# resolved device is; --stop_epoch and --save_every_steps because stopping (or checkpointing) early and
# resuming gives the uninterrupted run.
NOT_FINGERPRINTED = {"print_freq", "workers", "resume", "overwrite", "evaluate", "save_path", "start_epoch",
                     "download", "data_path", "ngpu", "mask_path", "score_path", "stop_epoch", "save_every_steps",
                     "eval_every"}   # --eval_every: when the test set is evaluated, never what is trained
# Flags added after runs were recorded without them, left out at the value those runs behaved as, so that
# their folders keep their fingerprint (and resume): --train_fraction 1 trains on every sample, as before.
ABSENT_AT = {"train_fraction": 1.0}
# train_subset.py: the files read are fingerprinted by content (their paths may move), and the flags that
# act only with Beta sampling or a teacher are left out without them (runs of earlier versions had none).
SUBSET_PATHS = ("mean_p_path", "teacher")


def fingerprinted(args):
    """{dest: value} of the flags that enter the fingerprint of a run with these args (the one rule of
    train.py, train_subset.py and the study's records)."""
    out = {k: v for k, v in vars(args).items() if k not in NOT_FINGERPRINTED
           and not (k in ABSENT_AT and v == ABSENT_AT[k])}
    if "subset_rate" in out:   # train_subset.py
        dropped = set(SUBSET_PATHS) | ({"beta_c"} if args.selection != "beta" else set()) \
            | ({"kd_alpha", "kd_temperature"} if args.teacher is None else set())
        out = {k: v for k, v in out.items() if k not in dropped}
    return out


# ----------------------------------------------------------------------------------- the fingerprint
def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(a):
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()


def run_fingerprint(args, **facts):
    """{setting: value} of everything that defines the run: the fingerprinted flags under their
    command-line names, plus `facts` (e.g. device, processes, content hashes) under theirs."""
    fp = {flag_name(k): v for k, v in sorted(fingerprinted(args).items())}
    fp.update(facts)
    return fp


def _show(value):
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return f"sha256 {value[:12]}…"
    return repr(value)


def fingerprint_diffs(was, now):
    """["--epochs 3 (now 5)", ...]: every setting in which two fingerprints differ (settings without
    effect, e.g. the noise type at noise 0, ignored)."""
    was, now = without_unused(was, "--"), without_unused(now, "--")
    diffs = []
    for key in sorted(set(was) | set(now)):
        old, new = was.get(key, "(not set)"), now.get(key, "(not set)")
        if old != new:
            what = key if key.startswith("--") else f"the {key}"
            diffs.append(f"{what} {_show(old)} (now {_show(new)})")
    return diffs

