"""The work of a static run's scoring, read from its records: which run recorded the dynamics (its
architecture, the fraction of the data it trained), how many epochs the score used, and the forward
passes the scoring made (moderate's features, an extrapolated score's features), charged through the
one rule utils/study/work.scoring_work in training passes of the subset run's architecture. The
factors between architectures are measured (utils/training/flops.py) only where one is needed, so a
summary of a study that has none counts no FLOPs; every factor used is recorded for the ledger."""
import sys

from utils.methods import DATASET_CLASSES
from utils.study.work import scoring_work



class Factors:
    """Measured work factors, each counted once and kept (self.used) for the ledger's table."""

    def __init__(self):
        self.used = {}    # (arch, target, classes, image size) -> utils.training.flops.factors record
        self.run = []     # the records of the run being counted (add_work keeps them in its m["factors"])

    def _record(self, arch, m):
        """The factors of `arch` against run m's architecture, at m's classes and image size (None where
        the classes are unknown)."""
        classes, size = run_geometry(m)
        if classes is None:
            return None
        key = (arch, m.get("arch"), classes, size)
        if key not in self.used:
            from utils.training import flops
            self.used[key] = flops.factors(arch, m.get("arch"), classes, size)
        if self.used[key] not in self.run:
            self.run.append(self.used[key])
        return self.used[key]

    def train(self, arch, m):
        """One training pass of `arch` in training passes of run m's architecture: 1 for that
        architecture itself (nothing measured), else the measured FLOPs ratio."""
        record = self._record(arch, m) if arch and arch != m.get("arch") else None
        return record["work_factor"] if record else 1.0

    def forward(self, arch, m):
        """One forward-only pass of `arch` in training passes of run m's architecture (measured; about
        1/3 for that architecture itself); 0 where it cannot be measured (a note says why)."""
        record = self._record(arch or m.get("arch"), m)
        return record["forward_share"] if record else 0.0


def run_geometry(m):
    """(classes, image side) that the factors of run m are measured at: the scoring's record, else the
    data set's; None classes where neither says (then no factor is measured: a note says so)."""
    from utils.training.flops import input_size
    info = m.get("score_info") or {}
    classes = info.get("num_classes") or m.get("num_classes") or DATASET_CLASSES.get(m.get("dataset"))
    if classes is None:
        print(f"note: {m.get('run')}: the number of classes of {m.get('dataset')} is not recorded: its work is "
              f"counted without the architecture factors", file=sys.stderr)
    size = m.get("image_size") or (m.get("fingerprint") or {}).get("--image_size") or 224
    return classes, input_size(m.get("dataset"), int(size))


def scored_fraction(info):
    """The fraction of the data the scoring run trained: |S| / N where the scoring's record says both
    (score extrapolation), else its train fraction, else 1."""
    if info.get("scored_samples") and info.get("num_samples"):
        return float(info["scored_samples"]) / float(info["num_samples"])
    return float(info.get("train_fraction") or 1.0)


def is_moderate(m):
    return "moderate" in ((m.get("score_info") or {}).get("method"), m.get("method"))


def static_scoring(m, epochs, factors):
    """The work of static run m's scoring, as fractions of one full-data training of its own
    architecture (E = `epochs`): {"epochs_used": T (moderate: the whole run, E), "fraction": f,
    "train_factor", "forward_share" (its features' forward passes, x N), "work": scoring_work(...),
    "features": the forward-only part of it}. Random selection: nothing."""
    if m.get("selection") == "random":
        return {"epochs_used": 0, "fraction": 1.0, "train_factor": 1.0, "forward_share": 0.0, "work": 0.0,
                "features": 0.0}
    info = m.get("score_info") or {}
    T = epochs if is_moderate(m) else (info.get("trajectory_len") or 0)
    f = scored_fraction(info)
    scorer = info.get("arch") or m.get("scored_arch") or m.get("arch")
    tf = factors.train(scorer, m)
    if is_moderate(m):          # the trained model's features: one forward pass of every sample
        passes, feature_arch = 1.0, scorer
    elif info.get("feature_passes") and info.get("num_samples"):    # an extrapolated score's features
        passes, feature_arch = float(info["feature_passes"]) / float(info["num_samples"]), info.get("feature_arch")
    else:
        passes, feature_arch = 0.0, None
    fs = passes * factors.forward(feature_arch or scorer, m) if passes else 0.0
    return {"epochs_used": T, "fraction": f, "train_factor": tf, "forward_share": fs,
            "work": scoring_work(T, epochs, f, tf, fs), "features": fs / float(epochs)}


def teacher_work(m, epochs, trained, n, scoring, factors):
    """(teacher's training, its forward passes) of a distilling run m, as fractions of one full-data
    training: the teacher's own training (less the dynamics epochs already charged when the teacher is
    the run that recorded them) at its architecture's factor; its forward pass of every sample trained
    at its measured forward share."""
    if not m.get("teacher"):
        return 0.0, 0.0
    arch = m.get("teacher_arch") or m.get("arch")
    tf = factors.train(arch, m)
    used = scoring["epochs_used"] / float(epochs) if scoring["work"] else 0.0
    charged = used and m.get("teacher_run") == (m.get("score_info") or {}).get("dynamics_run")
    training = tf * (1.0 - used) if charged else tf
    forward = trained * factors.forward(arch, m) / (float(n) * float(epochs))
    return training, forward
