"""The study's variables (scripts/sweep.sh's environment): their defaults, the check of every one of
them before anything is planned, and the notes on variables that act on nothing in a study. Their
reference is docs/SWEEP.md; the plan made of them is utils/study/plan.py."""
import os
import re
import shutil
import subprocess

from utils.args import DATASETS
from utils.errors import UserError
from utils.methods import DYNAMIC_METHODS as DYNAMIC_TABLE
from utils.methods import SCORES, WINDOW_SCORES
from utils.methods import SELECTIONS as SELECTION_TABLE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
METHODS = tuple(SCORES)     # the study's names are utils/methods.py's: SCORES, SELECTIONS, DYNAMIC_METHODS
WINDOWED = WINDOW_SCORES    # the scores that take a window K
SELECTIONS = tuple(SELECTION_TABLE)
DYNAMIC_METHODS = tuple(DYNAMIC_TABLE)   # train.py --dynamic: one full-data run that prunes as it goes
NO_METHODS = "none"                                # METHODS=none: no static method (a dynamic-only study)
# The per-rate defaults of the subset runs (RATE_FLAGS unset): the authors' advice, a smaller batch at high
# rates, with DUAL's numbers.
# Under BUDGET=iterations a subset run at rate r trains about 1/(1 - r) times the epochs, each 1 - r as long:
# evaluating the whole test set after each would cost more than the training at high rates, so the defaults
# evaluate every round(1/(1 - r)) epochs there (the last epoch always), about once per full-data epoch.
RATE_DEFAULTS = "0.8:--batch-size 64 0.9:--batch-size 32"
ITERATION_RATE_DEFAULTS = "0.5:--eval_every 2 0.7:--eval_every 3 0.8:--batch-size 64 --eval_every 5 " \
                          "0.9:--batch-size 32 --eval_every 10"


def default_rate_flags(budget):
    """RATE_FLAGS when it is unset, for the study's BUDGET (epochs or iterations)."""
    return ITERATION_RATE_DEFAULTS if budget == "iterations" else RATE_DEFAULTS
# every variable the sweep reads, with its default ("" = none); the reference is docs/SWEEP.md
VARIABLES = {
    "DATASET": "cifar100", "DATA_PATH": "./data", "ARCH": "resnet18", "EPOCHS": "200", "FULL_BATCH": "100",
    "BATCH": "128", "RATE_FLAGS": RATE_DEFAULTS, "RATES": "0.3 0.5 0.7 0.8 0.9",
    "METHODS": "tdds el2n forgetting aum entropy dyn_unc random", "SELECTIONS": "top", "DYNAMIC": "", "KD": "0",
    "KD_ALPHA": "", "SEEDS": "42", "SUBSET_ARCHS": "", "BUDGET": "epochs", "FULL_ACC": "0", "DYNAMICS": "",
    "TRAJ": "", "WIN": "", "NGPU": "", "JOBS": "1", "GPUS": "", "TRAIN_FLAGS": "", "SUBSET_FLAGS": "",
    "EVAL_FLAGS": "", "OUT": "./checkpoint/sweep", "TAG": "", "OVERWRITE": "0", "PYTHON": "python", "PLAN": "",
    "FULL_FLAGS": "", "DYNAMIC_FLAGS": "", "DYNAMIC_RATIOS": "", "DYNAMIC_DELTA": "",
    "PROXY_ARCH": "", "FRACTION": "", "EXTRAPOLATE_K": "", "EQUAL_WORK": "0",
}
FLAG_VARIABLES = ("FULL_FLAGS", "TRAIN_FLAGS", "SUBSET_FLAGS", "DYNAMIC_FLAGS", "EVAL_FLAGS")   # words of flags
NOT_A_PREFIX = ("PYTHON",)   # PYTHON_* are Python's own variables (PYTHON_GIL, PYTHON_COLORS, ...)


def words(text):
    """The whitespace-separated words of `text`, each once, in order."""
    return list(dict.fromkeys(text.split()))


# ------------------------------------------------------------------------------------------ near misses
def near_misses(environ):
    """Refuse a variable of the environment that looks like one of the sweep's but is not (EPOCH, SEED,
    epochs, DYNAMIC_RATIO, SUBSETFLAGS, KD_TEMPERATURE, ...): the user meant the sweep's, which would
    otherwise silently keep its default. Looks like: one edit away (two for long names), or a
    variable's name plus a suffix (DYNAMIC_RATE, BATCH_SIZE)."""
    for key in sorted(environ):
        if key in VARIABLES or not key or not key.replace("_", "").isalnum():
            continue
        meant = meant_variable(key)
        if meant:
            raise UserError(f"{key} is not a variable of the sweep: did you mean {meant}? (unset {key} to go on; "
                            f"the variables are in docs/SWEEP.md)")


def meant_variable(key):
    """The sweep variable that `key` (not one of them) looks like a slip of, or None."""
    upper = key.upper()
    if upper in VARIABLES:
        return upper
    names = [v for v in VARIABLES if len(v) >= 3]
    for allowed in (1, 2):   # the nearest first
        for name in names:
            if allowed == 2 and min(len(name), len(upper)) < 8:   # two slips only in long names
                continue
            if abs(len(upper) - len(name)) <= allowed and edit_distance(upper, name, allowed) <= allowed:
                return name
    # a variable's name plus a suffix (BATCH_SIZE, KD_TEMPERATURE), or a near one of its family (DYNAMIC_RATE)
    family = [n for n in VARIABLES if "_" in n and upper.startswith(n.split("_")[0] + "_")
              and edit_distance(upper, n, 3) <= 3]
    if family:
        return min(family, key=lambda n: edit_distance(upper, n, 3))
    prefixed = [n for n in VARIABLES if n not in NOT_A_PREFIX and re.fullmatch(re.escape(n) + r"_[A-Z0-9_]+", upper)]
    return max(prefixed, key=len) if prefixed else None


def edit_distance(a, b, bound):
    """Insertions, deletions, substitutions and transpositions (of neighbours) from a to b; any number
    above `bound` is returned as bound + 1."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        if min(row) > bound:
            return bound + 1
        prev2, prev = prev, row
    return min(prev[-1], bound + 1)


# ------------------------------------------------------------------------------------------ values
def is_count(value):
    return re.fullmatch(r"[1-9][0-9]*", value) is not None


def _count(name, value):
    if not is_count(value):
        raise UserError(f"{name}: '{value}' is not a positive integer")
    return int(value)


def _flag(name, value):
    if value not in ("0", "1"):
        raise UserError(f"{name}: '{value}' is not 0 or 1")
    return value == "1"


def rate(text):
    """'0.50' -> '0.5' (printf %g), or None when `text` is not a number."""
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
        return None
    return "%g" % float(text)


def _realpath(path, cwd):
    return os.path.realpath(os.path.join(cwd, path))


def gpu_count():
    """The GPUs nvidia-smi lists here (0 without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(l.startswith("GPU ") for l in p.stdout.splitlines()) if p.returncode == 0 else 0


def _methods(env, dynamic):
    """METHODS as a list: the default when unset or empty, [] for `none` (and for an empty value when
    DYNAMIC is set: a dynamic-only study)."""
    value = env["METHODS"]
    if value is None or value == "":
        return [] if dynamic else words(VARIABLES["METHODS"])
    methods = words(value)
    if methods == [NO_METHODS] or (not methods and dynamic):
        return []
    if NO_METHODS in methods:
        raise UserError(f"METHODS: '{NO_METHODS}' stands alone (no static method: a study of DYNAMIC runs only)")
    if not methods:
        raise UserError("METHODS is empty")
    for m in methods:
        if m not in METHODS:
            raise UserError(f"METHODS: unknown method '{m}'")
    return methods


def _ratios(text):
    """DYNAMIC_RATIOS as a list of fractions in (0, 1), normalised (0.50 -> 0.5), each once."""
    out = []
    for word in words(text):
        r = rate(word)
        if r is None or not 0 < float(r) < 1:
            raise UserError(f"DYNAMIC_RATIOS: '{word}' is not a fraction pruned in (0, 1)")
        if r not in out:
            out.append(r)
    return out


def read_config(environ, cwd=None):
    """The study's variables from `environ` (as sweep.sh reads them: unset or empty = the default; only
    RATE_FLAGS keeps an empty value), checked, paths made absolute. Raises UserError."""
    cwd = cwd or os.getcwd()
    env = {k: environ.get(k) for k in VARIABLES}

    def get(name, default=None):
        value = env[name]
        return value if value else (VARIABLES[name] if default is None else default)
    c = {k: get(k) for k in ("DATASET", "DATA_PATH", "ARCH", "EPOCHS", "FULL_BATCH", "BATCH", "RATES", "BUDGET",
                             "FULL_ACC", "OVERWRITE", "KD", "KD_ALPHA", "DYNAMICS", "OUT", "TRAJ", "WIN", "JOBS",
                             "PYTHON", "PLAN", "GPUS", "TAG", "DYNAMIC_DELTA", "PROXY_ARCH", "FRACTION",
                             "EXTRAPOLATE_K", "EQUAL_WORK")}
    c["SET"] = {k for k, v in env.items() if v}      # the variables the user gave (for the notes)
    c["DYNAMIC"] = words(get("DYNAMIC"))
    c["METHODS"] = _methods(env, c["DYNAMIC"])
    c["SELECTIONS"], c["SEEDS"] = words(get("SELECTIONS")), words(get("SEEDS"))
    c["SUBSET_ARCHS"] = words(get("SUBSET_ARCHS", c["ARCH"]))
    rate_flags = env["RATE_FLAGS"]
    c["RATE_FLAGS"] = default_rate_flags(c["BUDGET"]) if rate_flags is None else rate_flags   # set but empty: none
    for k in FLAG_VARIABLES:
        c[k] = (env[k] or "").split()
    ngpu = env["NGPU"]
    if not ngpu:   # a plan runs elsewhere: --ngpu 1 uses CUDA where it runs, if any, else the CPU
        ngpu = "1" if c["PLAN"] or gpu_count() > 0 else "0"
    c["NGPU"] = ngpu
    c["ROOT"] = ROOT
    c["OUT"] = _realpath(c["OUT"], cwd)                      # plan lines hold absolute paths
    c["DATA_PATH"] = _realpath(c["DATA_PATH"], cwd)
    if c["DYNAMICS"]:
        c["DYNAMICS"] = _realpath(c["DYNAMICS"], cwd)
    _check(c)
    c["DYNAMIC_RATIOS"] = _ratios(env["DYNAMIC_RATIOS"] or "")
    if c["PLAN"]:
        c["PLAN"] = _realpath(c["PLAN"], cwd)
        if not os.path.isdir(os.path.dirname(c["PLAN"])):
            raise UserError(f"PLAN: no folder {os.path.dirname(c['PLAN'])} to write {c['PLAN']} into")
    return c


def _check(c):
    """Check the variables, all of them, before anything is written or trained (in place: counts become
    ints, 0/1 flags booleans)."""
    if c["DATASET"] not in DATASETS:
        raise UserError(f"DATASET: unknown data set '{c['DATASET']}' ({', '.join(DATASETS)})")
    for s in c["SELECTIONS"]:
        if s not in SELECTIONS:
            raise UserError(f"SELECTIONS: unknown selection '{s}' (top, ccs, beta, random)")
    if not c["SELECTIONS"]:
        raise UserError("SELECTIONS is empty")
    for s in c["SEEDS"]:
        if not re.fullmatch(r"[0-9]+", s):
            raise UserError(f"SEEDS: '{s}' is not a non-negative integer")
    if not c["SEEDS"]:
        raise UserError("SEEDS is empty")
    if not c["SUBSET_ARCHS"]:
        raise UserError("SUBSET_ARCHS is empty")
    for m in c["DYNAMIC"]:
        if m not in DYNAMIC_METHODS:
            raise UserError(f"DYNAMIC: unknown dynamic pruning method '{m}' ({', '.join(DYNAMIC_METHODS)})")
    if not c["METHODS"] and not c["DYNAMIC"]:
        raise UserError("METHODS=none and no DYNAMIC: nothing to study (set METHODS, or DYNAMIC=\"infobatch rs2\")")
    if c["TAG"] and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", c["TAG"]):
        raise UserError(f"TAG: '{c['TAG']}' is not a folder-name suffix (letters, digits, '_', '.', '-')")
    if c["BUDGET"] not in ("epochs", "iterations"):
        raise UserError(f"BUDGET: '{c['BUDGET']}' is not epochs or iterations")
    c["FULL_ACC"], c["OVERWRITE"], c["KD"] = (_flag(k, c[k]) for k in ("FULL_ACC", "OVERWRITE", "KD"))
    if c["KD_ALPHA"] and not c["KD"]:
        raise UserError("KD_ALPHA is set but KD=0: set KD=1 to distil from the full-data model")
    if c["KD"] and not c["KD_ALPHA"]:
        raise UserError('KD=1 needs KD_ALPHA (e.g. 1.0, or per rate "0.5:0.5 0.9:1.0"; untuned here)')
    for k in ("EPOCHS", "FULL_BATCH", "BATCH", "JOBS"):
        c[k] = _count(k, c[k])
    if not re.fullmatch(r"[0-9]+", c["NGPU"]):
        raise UserError(f"NGPU: '{c['NGPU']}' is not a non-negative integer")
    if c["GPUS"] and int(c["NGPU"]) == 0:
        raise UserError("GPUS is set but NGPU=0 (no nvidia-smi here): set NGPU=1 to train on GPUs")
    for g in c["GPUS"].split():   # what CUDA_VISIBLE_DEVICES takes: indices, or GPU-/MIG- UUIDs
        if not re.fullmatch(r"[0-9]+|(GPU|MIG)-[0-9A-Za-z/-]+", g):
            raise UserError(f"GPUS: '{g}' is not a GPU (an index as nvidia-smi -L lists them, e.g. GPUS=\"0 1\", "
                            f"or a GPU-/MIG- UUID)")
    for k in ("TRAJ", "WIN"):
        c[k] = _count(k, c[k]) if c[k] else None
    if c["DYNAMIC_DELTA"]:
        d = rate(c["DYNAMIC_DELTA"])
        if d is None or not 0 < float(d) <= 1:
            raise UserError(f"DYNAMIC_DELTA: '{c['DYNAMIC_DELTA']}' is not a fraction of the epochs in (0, 1] "
                            f"(InfoBatch prunes epoch e of E while e + 1 <= delta E)")
        c["DYNAMIC_DELTA"] = d
    _check_cheap(c)


def _check_cheap(c):
    """The cheap scoring sources (PROXY_ARCH, FRACTION with EXTRAPOLATE_K) and EQUAL_WORK."""
    if c["PROXY_ARCH"]:
        if c["PROXY_ARCH"] == c["ARCH"]:
            raise UserError(f"PROXY_ARCH={c['PROXY_ARCH']} is ARCH itself: its scores would be the reference's "
                            f"(a proxy is another, usually smaller, architecture, e.g. PROXY_ARCH=resnet20)")
        known_arch("PROXY_ARCH", c["PROXY_ARCH"])
    if c["FRACTION"]:
        f = rate(c["FRACTION"])
        if f is None or not 0 < float(f) < 1:
            raise UserError(f"FRACTION: '{c['FRACTION']}' is not a fraction of the training set in (0, 1) "
                            f"(the share of the data the extrapolation's scoring run trains on, e.g. 0.2)")
        c["FRACTION"] = f
    c["EXTRAPOLATE_K"] = _count("EXTRAPOLATE_K", c["EXTRAPOLATE_K"]) if c["EXTRAPOLATE_K"] else None
    c["EQUAL_WORK"] = _flag("EQUAL_WORK", c["EQUAL_WORK"])
    if c["EQUAL_WORK"] and c["KD"] and c["METHODS"] and c["BUDGET"] == "epochs":
        raise UserError("EQUAL_WORK=1 with KD=1: the subset runs also pay their teacher's forward passes, which the "
                        "equal-work rule does not count: plan the equal-work controls in a study without KD")


def known_arch(variable, arch):
    """Refuse, naming `variable`, an architecture the scripts cannot build (models.create_model's names)."""
    from models import ARCH_NAMES, TV_PREFIX, _choices
    if arch in ARCH_NAMES:
        return
    if arch.startswith(TV_PREFIX):
        import torchvision
        if arch[len(TV_PREFIX):] in torchvision.models.list_models(module=torchvision.models):
            return
    raise UserError(f"{variable}: '{arch}' is not an architecture of the scripts (one of {_choices()})")


def rate_flags(text):
    """RATE_FLAGS "0.8:--batch-size 64 0.9:--batch-size 32" -> {"0.8": ["--batch-size", "64"], ...}"""
    flags, key = {}, None
    for w in text.split():
        m = re.fullmatch(r"([0-9.]+):(.*)", w)
        if m:
            key = rate(m.group(1))
            if key is None:
                raise UserError(f"RATE_FLAGS: '{m.group(1)}' is not a rate")
            if key in flags:
                raise UserError(f"RATE_FLAGS: rate {key} is given twice")
            flags[key] = [m.group(2)] if m.group(2) else []
        elif key is None:
            raise UserError(f"RATE_FLAGS: '{w}' does not follow a RATE: (e.g. \"0.9:--batch-size 32\")")
        else:
            flags[key].append(w)
    return flags


def kd_alpha(text):
    """KD_ALPHA "1.0" (every rate, key "all") or "0.5:0.5 0.9:1.0" (per rate)"""
    alpha = {}
    for w in text.split():
        m = re.fullmatch(r"([0-9.]+):([0-9.]+)", w)
        if m and rate(m.group(1)) is not None:
            alpha[rate(m.group(1))] = m.group(2)
        elif re.fullmatch(r"[0-9.]+", w) and len(text.split()) == 1:
            alpha["all"] = w
        else:
            raise UserError(f"KD_ALPHA: '{w}' is neither one value nor RATE:ALPHA (e.g. \"0.5:0.5 0.9:1.0\")")
    return alpha


# ------------------------------------------------------------------------------------------ unused
def unused_notes(c, has):
    """"note: X acts on nothing in this study (why)" for each variable the user set that no planned command
    reads. `has`: what the plan holds (full, subset, scored, windowed, dynamics, infobatch, and train.py
    --dynamic runs of any kind: `dynamic_runs`, the DYNAMIC runs or EQUAL_WORK's RS2 controls)."""
    static, dynamic, runs = bool(c["METHODS"]), bool(c["DYNAMIC"]), has.get("dynamic_runs", bool(c["DYNAMIC"]))
    no_subset = "METHODS=none: no subset run"
    rules = [
        ("SELECTIONS", not static, no_subset), ("BATCH", not static, no_subset),
        ("SUBSET_FLAGS", not static, no_subset), ("BUDGET", not static, no_subset),
        ("RATE_FLAGS", not static, no_subset), ("KD", not static and c["KD"], no_subset),
        ("RATES", not static and c["DYNAMIC_RATIOS"], "no static method, and DYNAMIC_RATIOS sets the dynamic runs' ratios"),
        ("DYNAMIC_RATIOS", not dynamic, "no DYNAMIC method"),
        ("DYNAMIC_FLAGS", not runs, "no DYNAMIC method" + (" and no RS2 equal-work control" if c["EQUAL_WORK"] else "")),
        ("DYNAMIC_DELTA", not has["infobatch"], "no InfoBatch run: only InfoBatch has a delta"),
        ("FULL_FLAGS", not has["full"], "no full-data run is planned"),
        ("FULL_BATCH", not has["full"] and not runs, "no full-data run and no DYNAMIC run is planned"),
        ("FULL_ACC", c["DYNAMICS"] and c["FULL_ACC"], "DYNAMICS is given: no full-data run is planned"),
        ("EVAL_FLAGS", not has["scored"], "nothing is scored"),
        ("WIN", not has["windowed"], "no windowed score (tdds, dyn_unc, dual) is in the study"),
        ("TRAJ", not has["dynamics"], "no score reads the dynamics"),
        ("JOBS", c["PLAN"] and c["JOBS"] > 1, "PLAN is written, not run here"),
        ("GPUS", c["PLAN"], "PLAN is written, not run here"),
        ("PROXY_ARCH", not has["dynamics"], "no score reads the dynamics a proxy would record"),
        ("FRACTION", not has["dynamics"], "no score reads the dynamics the extrapolation would score"),
        ("EXTRAPOLATE_K", not c["FRACTION"] or not has["dynamics"], "no FRACTION source: nothing is extrapolated"),
        ("EQUAL_WORK", c["EQUAL_WORK"] and not has.get("points"), "no static point (a scored subset run) to match"),
    ]
    return [f"note: {name} acts on nothing in this study ({why})" for name, cond, why in rules
            if cond and name in c["SET"]]
