"""EQUAL_WORK=1: the equal-work controls of a study's static points, planned before anything runs.

A static point is a scored subset row at a pruning rate (every scoring source, every selection, every
subset architecture; not random, not a dynamic run). Its charged work under the epoch budget, in
full-data trainings of the subset run's architecture, is utils/study/work.py's rule:

    w  = point_work(scoring_work(T, E, f, train_factor, forward_share), rate)
    r' = equal_work_rate(w)          None where w >= 1: the full-data run is that point's control

train_factor and forward_share are measured by utils/training/flops.py for the scoring architecture
against the subset run's, at the data set's input size (1 and 0 for the study's own ARCH on all the
data: torch is imported only where a factor is measured). Each distinct (architecture, r') gets a
random subset run OUT/random-ew[/<arch>]/r<r'>/s<seed> and an RS2 run OUT/rs2-ew[/<arch>]/r<r'>/s<seed>
per seed, folders without TAG: a control is the same run whoever asks for it. The plan file's header
names each point's controls ("# equal-work:" lines, utils/study/plan.plan_text).

Under BUDGET=iterations every subset run trains as much as the full data: the control of a point is
the study's random row at the point's own rate, and nothing is planned.
"""
import os

from utils.errors import UserError
from utils.methods import DATASET_CLASSES
from utils.study.work import equal_work_rate, point_work, scoring_work

RANDOM_EW, RS2_EW = "random-ew", "rs2-ew"     # the controls' folders under OUT


class Factors:
    """work_factor / forward_share of a scoring architecture against a subset architecture, measured
    once each (utils/training/flops.py), at the study's number of classes and input size."""

    def __init__(self, c):
        self.c, self.cache = c, {}

    def _classes(self):
        c = self.c
        if c["DATASET"] in DATASET_CLASSES:
            return DATASET_CLASSES[c["DATASET"]]
        train = os.path.join(c["DATA_PATH"], "train")
        try:
            return len([d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d))])
        except OSError:
            raise UserError(f"EQUAL_WORK: the work of one architecture against another is measured at the data "
                            f"set's number of classes: no class folders in {train} (DATA_PATH)") from None

    def _image_size(self):
        size = 224   # utils.args' --image_size default (imagefolder only; the others are 32)
        words = self.c["TRAIN_FLAGS"] + self.c["SUBSET_FLAGS"]
        for i, w in enumerate(words):
            value = words[i + 1] if w == "--image_size" and i + 1 < len(words) else \
                w.split("=", 1)[1] if w.startswith("--image_size=") else None
            if value is not None and value.isdigit():
                size = int(value)
        return size

    def __call__(self, arch, target):
        """(train_factor, forward_share) of passes of `arch` charged to `target`."""
        if (arch, target) not in self.cache:
            from utils.training import flops
            n, size = self._classes(), flops.input_size(self.c["DATASET"], self._image_size())
            self.cache[arch, target] = (flops.work_factor(arch, target, n, size),
                                        flops.forward_share(arch, target, n, size))
        return self.cache[arch, target]


def work_of(c, point, factors):
    """The planned charged work w of a static point (point: source, method, T, rate, arch)."""
    src, E = point.source, c["EPOCHS"]
    moderate = point.method == "moderate"      # the trained full-data model, read once forward
    forward = moderate or src.fraction < 1     # a forward pass of all N samples through the scoring model
    if src.arch == point.arch and not forward:
        train, share = 1.0, 0.0
    else:
        train, share = factors(src.arch, point.arch)
        train = 1.0 if src.arch == point.arch else train
    T = E if moderate else point.T
    return point_work(scoring_work(T, E, src.fraction, train, share if forward else 0.0), point.rate)


def plan_controls(c, points, folder):
    """(rows, controls, note): rows [(point folder, w, random folder or None, rs2 folder or None)], one
    per static point; controls [(arch, r')] in order of first need; the note line that sums them up.
    `folder(name, arch)`: the run folder of a name (OUT/<name>[/<arch>])."""
    factors, rows, controls, none = Factors(c), [], [], []
    for p in points:
        w = work_of(c, p, factors)
        r = equal_work_rate(w)
        if r is None:
            rows.append((p.folder, w, None, None))
            none.append(os.path.relpath(p.folder, c["OUT"]))
            continue
        if (p.arch, r) not in controls:
            controls.append((p.arch, r))
        rows.append((p.folder, w, *(os.path.join(folder(n, p.arch), f"r{r}") for n in (RANDOM_EW, RS2_EW))))
    rates = sorted({r for _, r in controls}, key=float)
    n = len(controls) * len(c["SEEDS"])
    note = f"EQUAL_WORK=1: {len(points)} static point(s); " + (
        f"controls at rate(s) {' '.join(rates)}: {n} {RANDOM_EW} and {n} {RS2_EW} run(s)" if controls
        else "no control run")
    if none:
        note += f"; {len(none)} point(s) without one (work >= one full-data training: the full-data run is " \
                f"their control): {', '.join(none)}"
    return rows, controls, note


def iterations_note(c, random_row):
    """EQUAL_WORK=1 under BUDGET=iterations: no new run (the study's random row is the control)."""
    return ("EQUAL_WORK=1 under BUDGET=iterations: every subset run trains as many steps as the full data, so a "
            "static point's equal-work control is the study's random row at the same rate; no run is added "
            "(RS2 has no equal-work run there)"
            + ("" if random_row else "; the study has no random row: add random to METHODS"))


def header_lines(rows, quote):
    """The plan file's "# equal-work: POINT W RANDOM RS2" lines ("-" where there is no control)."""
    return [f"# equal-work: {quote(p)} {w:.4f} {quote(a) if a else '-'} {quote(b) if b else '-'}"
            for p, w, a, b in rows]


def settings(c, rows, controls):
    """The settings line of the equal-work controls."""
    n = len(controls) * len(c["SEEDS"])
    return [f"  equal work: {len(rows)} static point(s), {sum(a is None for _, _, a, _ in rows)} without a control "
            f"(work >= 1); {n} random and {n} RS2 control run(s) ({RANDOM_EW}, {RS2_EW})"]
