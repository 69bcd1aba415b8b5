"""A pruning study as a plan: the study's variables (scripts/sweep.sh's environment) -> three stages of
self-contained command lines. A pure function of the variables (and, for DYNAMICS, of which epochs
that folder holds): the same plan comes out before and after a run. Its reference is docs/SWEEP.md;
the executor that runs it on this machine is utils/study/executor.py.

    from utils.study.plan import make_plan, plan_text
    plan = make_plan({"DATASET": "digits", "RATES": "0.5 0.9", "METHODS": "tdds random"})
    print(plan_text(plan))
"""
import os
import re
import shutil
import subprocess

from utils.errors import UserError
from utils.methods import DYNAMIC_METHODS, SCORES, SELECTIONS, WINDOW_SCORES, output_tag

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository
# (T, K) per pruning rate for TDDS, as reported for CIFAR-100 / ResNet-18 (docs/METHODS.md)
REPORTED = {"0.3": (90, 10), "0.5": (70, 10), "0.7": (60, 20), "0.8": (20, 10), "0.9": (10, 5)}
METHODS = tuple(SCORES)     # the study's names are utils/methods.py's: SCORES, SELECTIONS, DYNAMIC_METHODS
WINDOWED = WINDOW_SCORES    # the scores that take a window K
# every variable the sweep reads, with its default ("" = none); the reference is docs/SWEEP.md
VARIABLES = {
    "DATASET": "cifar100", "DATA_PATH": "./data", "ARCH": "resnet18", "EPOCHS": "200", "FULL_BATCH": "100",
    "BATCH": "128", "RATE_FLAGS": "0.8:--batch-size 64 0.9:--batch-size 32", "RATES": "0.3 0.5 0.7 0.8 0.9",
    "METHODS": "tdds el2n forgetting aum entropy dyn_unc random", "SELECTIONS": "top", "DYNAMIC": "", "KD": "0",
    "KD_ALPHA": "", "SEEDS": "42", "SUBSET_ARCHS": "", "BUDGET": "epochs", "FULL_ACC": "0", "DYNAMICS": "",
    "TRAJ": "", "WIN": "", "NGPU": "", "JOBS": "1", "GPUS": "", "TRAIN_FLAGS": "", "SUBSET_FLAGS": "",
    "EVAL_FLAGS": "", "OUT": "./checkpoint/sweep", "TAG": "", "OVERWRITE": "0", "PYTHON": "python", "PLAN": "",
}


def bash_quote(word):
    """`printf %q` of bash: the plan's lines are written exactly as the bash sweep wrote them."""
    if word == "":
        return "''"
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        return "$'" + "".join({"\n": "\\n", "\t": "\\t", "\\": "\\\\", "'": "\\'"}.get(c, c) for c in word) + "'"
    out = []
    for i, c in enumerate(word):
        if c in " '\"\\|&;()<>!{}*[?]^$`," or (c == "~" and (i == 0 or word[i - 1] in "=:")) or (c == "#" and i == 0):
            out.append("\\")
        out.append(c)
    return "".join(out)


def line(argv):
    return " ".join(bash_quote(str(a)) for a in argv)


def words(text):
    """The whitespace-separated words of `text`, each once, in order."""
    return list(dict.fromkeys(text.split()))


def near_misses(environ):
    """A variable in the environment that is one edit away from a sweep variable (EPOCH, SEED, JOB,
    epochs, ...): the user meant the sweep's, which would otherwise silently keep its default."""
    names = [v for v in VARIABLES if len(v) >= 3]
    for key in sorted(environ):
        if key in VARIABLES or not key or not key.replace("_", "").isalnum():
            continue
        upper = key.upper()
        for name in names:
            if upper == name or (abs(len(upper) - len(name)) <= 1 and _one_edit(upper, name)):
                raise UserError(f"{key} is not a variable of the sweep: did you mean {name}? (unset {key} to go on; "
                                f"the variables are in docs/SWEEP.md)")


def _one_edit(a, b):
    """Are a and b one insertion, deletion, substitution or transposition apart?"""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                   and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _is_count(value):
    return re.fullmatch(r"[1-9][0-9]*", value) is not None


def _count(name, value):
    if not _is_count(value):
        raise UserError(f"{name}: '{value}' is not a positive integer")
    return int(value)


def _flag(name, value):
    if value not in ("0", "1"):
        raise UserError(f"{name}: '{value}' is not 0 or 1")
    return value == "1"


def _rate(text):
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


class Plan:
    """The stages of a study: stages[s] = [(argv, save folder or None)]; `settings` the resolved settings
    (printed before anything runs), `notes` what the plan decided that a user should know."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.stages = {1: [], 2: [], 3: []}
        self.notes, self.settings = [], []

    def lines(self, stage):
        return [line(argv) for argv, _ in self.stages[stage]]


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
                             "PYTHON", "PLAN", "GPUS", "TAG")}
    c["METHODS"], c["SELECTIONS"], c["SEEDS"] = words(get("METHODS")), words(get("SELECTIONS")), words(get("SEEDS"))
    c["DYNAMIC"] = words(get("DYNAMIC"))
    c["SUBSET_ARCHS"] = words(get("SUBSET_ARCHS", c["ARCH"]))
    rate_flags = env["RATE_FLAGS"]
    c["RATE_FLAGS"] = VARIABLES["RATE_FLAGS"] if rate_flags is None else rate_flags   # set but empty: none
    for k in ("TRAIN_FLAGS", "SUBSET_FLAGS", "EVAL_FLAGS"):
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

    # check the variables, all of them, before anything is written or trained
    for m in c["METHODS"]:
        if m not in METHODS:
            raise UserError(f"METHODS: unknown method '{m}'")
    if not c["METHODS"]:
        raise UserError("METHODS is empty")
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
    for k in ("TRAJ", "WIN"):
        c[k] = _count(k, c[k]) if c[k] else None
    if c["PLAN"]:
        c["PLAN"] = _realpath(c["PLAN"], cwd)
        if not os.path.isdir(os.path.dirname(c["PLAN"])):
            raise UserError(f"PLAN: no folder {os.path.dirname(c['PLAN'])} to write {c['PLAN']} into")
    return c


def _rate_flags(text):
    """RATE_FLAGS "0.8:--batch-size 64 0.9:--batch-size 32" -> {"0.8": ["--batch-size", "64"], ...}"""
    flags, key = {}, None
    for w in text.split():
        m = re.fullmatch(r"([0-9.]+):(.*)", w)
        if m:
            key = _rate(m.group(1))
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


def _kd_alpha(text):
    """KD_ALPHA "1.0" (every rate, key "all") or "0.5:0.5 0.9:1.0" (per rate)"""
    alpha = {}
    for w in text.split():
        m = re.fullmatch(r"([0-9.]+):([0-9.]+)", w)
        if m and _rate(m.group(1)) is not None:
            alpha[_rate(m.group(1))] = m.group(2)
        elif re.fullmatch(r"[0-9.]+", w) and len(text.split()) == 1:
            alpha["all"] = w
        else:
            raise UserError(f"KD_ALPHA: '{w}' is neither one value nor RATE:ALPHA (e.g. \"0.5:0.5 0.9:1.0\")")
    return alpha


def _batch_size(batch, rate, flags):
    """(batch size, other flags) of a rate's RATE_FLAGS: a --batch-size among them replaces BATCH (one
    --batch-size per line)."""
    extra, j = [], 0
    while j < len(flags):
        if flags[j] == "--batch-size":
            batch = flags[j + 1] if j + 1 < len(flags) else ""
            j += 1
            if not _is_count(batch):
                raise UserError(f"RATE_FLAGS: rate {rate}: --batch-size '{batch}' is not a positive integer")
        else:
            extra.append(flags[j])
        j += 1
    return batch, extra


def _shapes(c, plan, scored, needs_dynamics, limit, what, kd_alpha):
    """The study's pruning rates (normalised: 0.50 -> 0.5, each once) and per rate the T and K of the
    scores: reported, or TRAJ / WIN, clamped to the `limit` epochs there are; what is used is said in
    plan.settings. K is asked for only where a windowed score uses it."""
    windowed = [m for m in scored if m in WINDOWED]
    rates, Ts, Ks = [], [], []   # per rate, normalised (0.50 -> 0.5), T and K clamped to what can be recorded
    for word in words(c["RATES"]):
        r = _rate(word)
        if r is None:
            raise UserError(f"RATES: '{word}' is not a number")
        if not 0 < float(r) < 1:
            raise UserError(f"RATES: pruning rate {r} is not in (0, 1)")
        if r in rates:   # 0.5 and 0.50
            continue
        T, K = REPORTED.get(r, (None, None))
        T, K = c["TRAJ"] or T, c["WIN"] or K
        said = []
        if needs_dynamics:
            if T is None or (K is None and windowed):
                need = [v for v, x in (("TRAJ", T), ("WIN", K if windowed else 0)) if x is None]
                raise UserError(f"RATES: no reported (T, K) for pruning rate {r}: set {' and '.join(need)}")
            if T > limit:
                said.append(f"T={T} exceeds the {limit} {what}")
                T = limit
            if windowed and K > T:
                said.append(f"K={K} exceeds T={T}")
                K = T
            if "tdds" in c["METHODS"] and K < 3:
                raise UserError(f"WIN: rate {r}: K={K} leaves at most one contribution per window (TDDS needs K >= 3)")
            if "dual" in scored and K < 2:
                raise UserError(f"WIN: rate {r}: K={K}: DUAL's windows need K >= 2 (a sample standard deviation)")
            origin = f"T {'from TRAJ' if c['TRAJ'] else 'reported'}" + (
                f", K {'from WIN' if c['WIN'] else 'reported'}" if windowed else "")
            plan.settings.append(f"  rate {r}: T={T}" + (f", K={K}" if windowed else "") + f" ({origin}"
                                 + (f"; clamped: {', '.join(said)}" if said else "") + ")")
        if c["KD"] and "all" not in kd_alpha and r not in kd_alpha:
            raise UserError(f"KD_ALPHA: no distillation weight for pruning rate {r} (KD_ALPHA='{c['KD_ALPHA']}')")
        rates.append(r)
        Ts.append(T or 0)
        Ks.append(K or 0)
    return rates, Ts, Ks


def make_plan(environ, cwd=None):
    """The plan of the study that `environ` describes (see the module docstring). Raises UserError."""
    c = read_config(environ, cwd)
    plan = Plan(c)
    out, masks, root, py = c["OUT"], os.path.join(c["OUT"], "masks"), c["ROOT"], c["PYTHON"]
    first_seed = c["SEEDS"][0]
    # the methods scored in stage 1: METHODS, and dual when beta sampling needs its mean p_y for another score
    scored = list(c["METHODS"])
    if "beta" in c["SELECTIONS"] and any(m != "random" and not SCORES[m].mean_p for m in c["METHODS"]):
        scored = words(" ".join(scored + ["dual"]))
    needs_dynamics = any(SCORES[m].source == "dynamics" for m in scored)
    needs_model = c["KD"] or "moderate" in scored
    scores = any(m != "random" for m in scored)

    if c["DYNAMICS"]:   # an existing recording: epochs 0 .. recorded-1 are all there
        recorded = 0
        while any(os.path.isfile(os.path.join(c["DYNAMICS"], f"{recorded}_{k}.npy")) for k in ("Output", "Index")):
            recorded += 1
        if not recorded:
            raise UserError(f"DYNAMICS: no dynamics in {c['DYNAMICS']}: expected 0_Output.npy, 1_Output.npy, ...")
        limit, what = recorded, "recorded epochs"
        moderate_checkpoint = os.path.join(os.path.dirname(c["DYNAMICS"]), "checkpoint.pth.tar")
        teacher = os.path.join(os.path.dirname(c["DYNAMICS"]), "model_best.pth.tar")
        if "moderate" in c["METHODS"] and not os.path.isfile(moderate_checkpoint):
            raise UserError(f"METHODS: moderate needs the model of the run that recorded DYNAMICS: "
                            f"no {moderate_checkpoint}")
        if c["KD"] and not os.path.isfile(teacher):
            raise UserError(f"KD=1 needs the model of the run that recorded DYNAMICS: no {teacher}")
    else:
        limit, what = c["EPOCHS"], "epochs of the full-data run"
        moderate_checkpoint = os.path.join(out, "full", "checkpoint.pth.tar")
        teacher = os.path.join(out, "full", "model_best.pth.tar")
    rate_flags = _rate_flags(c["RATE_FLAGS"])
    kd_alpha = _kd_alpha(c["KD_ALPHA"])

    rates, Ts, Ks = _shapes(c, plan, scored, needs_dynamics, limit, what, kd_alpha)
    for r in rates:   # what each rate's subset runs add, said once
        if r in rate_flags:
            plan.notes.append(f"rate {r}: subset runs add{''.join(' ' + w for w in rate_flags[r])} "
                              f"(RATE_FLAGS; BATCH={c['BATCH']} elsewhere)")
    if not rates:
        raise UserError("RATES is empty")
    all_T, all_K = words(" ".join(map(str, Ts))), words(" ".join(map(str, Ks)))
    T_max = max(map(int, all_T))
    c["rates"] = rates

    common = ["--data_path", c["DATA_PATH"], "--dataset", c["DATASET"], "--epochs", c["EPOCHS"],
              "--learning_rate", "0.1", "--ngpu", c["NGPU"]]
    overwrite = ["--overwrite"] if c["OVERWRITE"] else []
    dynamics = c["DYNAMICS"]
    # the full-data run: recorded up to the largest T, or to the end when its accuracy or model is wanted
    if not c["DYNAMICS"] and (needs_dynamics or needs_model or c["FULL_ACC"]):
        E, stop = c["EPOCHS"], []
        if c["FULL_ACC"]:
            plan.notes.append(f"dynamics: all {E} epochs (FULL_ACC=1: the full-data run trains to the end)")
        elif c["KD"]:
            plan.notes.append(f"dynamics: all {E} epochs (KD=1: the trained full-data model is the teacher)")
        elif needs_model:
            plan.notes.append(f"dynamics: all {E} epochs (moderate scores the trained full-data model)")
        elif T_max >= E:
            plan.notes.append(f"dynamics: all {E} epochs (the largest T is {T_max})")
        else:
            stop = ["--stop_epoch", T_max]
            plan.notes.append(f"dynamics: {T_max} of {E} epochs ({100 * (1 - T_max / E):.0f}% of the full-data "
                              f"training saved; FULL_ACC=1 trains to the end)")
        save = os.path.join(out, "full")
        plan.stages[1].append(([py, os.path.join(root, "train.py"), *common, "--arch", c["ARCH"], "--batch-size",
                                c["FULL_BATCH"], "--dynamics", "--save_path", save, "--resume", "--manualSeed",
                                first_seed, *stop, *overwrite, *c["TRAIN_FLAGS"]], save))
        dynamics = os.path.join(out, "full", "npy")

    # the <tag> of the files importance_evaluation.py writes for (method, T, K), from its own code (one
    # call per method scores every (T, K); with several K, dyn_unc and dual add _win<K> to their names)
    def tag(method, T, K):
        return output_tag(method, int(T), int(K), name_window=len(all_K) > 1)
    for m in scored:
        if m == "random":
            continue
        if m == "moderate":
            argv = [py, os.path.join(root, "importance_evaluation.py"), "--method", "moderate", "--checkpoint",
                    moderate_checkpoint, "--data_path", c["DATA_PATH"], "--dataset", c["DATASET"], "--mask_path",
                    masks, *overwrite, *c["EVAL_FLAGS"]]
        else:
            shape = ["--trajectory_len", *all_T]                  # the methods with windows take K,
            if m in WINDOWED:
                shape += ["--window_size", *all_K]
            if m == "tdds":                                       # TDDS also beta
                shape += ["--decay", "0.9"]
            argv = [py, os.path.join(root, "importance_evaluation.py"), "--dynamics_path", dynamics, "--mask_path",
                    masks, "--method", m, *shape, *overwrite, *c["EVAL_FLAGS"]]
        plan.stages[1].append((argv, None))

    budget = ["--budget", "iterations"] if c["BUDGET"] == "iterations" else []
    suffix = ("-iters" if budget else "") + ("-kd" if c["KD"] else "") + (f"-{c['TAG']}" if c["TAG"] else "")
    several_archs = c["SUBSET_ARCHS"] != [c["ARCH"]]
    for rate, T, K in zip(rates, Ts, Ks):
        bs, extra = _batch_size(c["BATCH"], rate, rate_flags.get(rate, []))
        seen = []   # run names done at this rate
        for method in c["METHODS"]:
            for sel in c["SELECTIONS"]:
                name = "random" if "random" in (method, sel) else method if sel == "top" else f"{method}-{sel}"
                name += suffix
                if name in seen:   # e.g. "random" reached from several methods
                    continue
                seen.append(name)
                for arch in c["SUBSET_ARCHS"]:
                    folder = os.path.join(out, name, arch) if several_archs else os.path.join(out, name)
                    for seed in c["SEEDS"]:
                        save = os.path.join(folder, f"r{rate}", f"s{seed}")
                        run = [py, os.path.join(root, "train_subset.py"), *common, "--arch", arch, "--batch-size", bs,
                               "--save_path", save, "--resume", "--subset_rate", rate, "--manualSeed", seed, *budget]
                        if name.startswith("random"):
                            run += ["--selection", "random"]
                        else:
                            t = tag(method, T, K)
                            run += ["--mask_path", os.path.join(masks, f"data_mask_{t}.npy"), "--score_path",
                                    os.path.join(masks, f"score_{t}.npy"), "--selection", sel]
                            if sel == "beta" and method != "dual":   # beta reads dual's mean p_y
                                run += ["--mean_p_path", os.path.join(masks, f"mean_p_{tag('dual', T, K)}.npy")]
                        if c["KD"]:
                            run += ["--teacher", teacher, "--kd_alpha", kd_alpha.get(rate, kd_alpha.get("all"))]
                        plan.stages[2].append(([*run, *overwrite, *c["TRAIN_FLAGS"], *c["SUBSET_FLAGS"], *extra], save))
        # dynamic pruning: one full-data run per (method, rate, architecture, seed) that trains 1 - rate of
        # the samples per epoch on average (--dynamic_ratio = the rate), at the full-data run's batch size
        for method in c["DYNAMIC"]:
            name = method + (f"-{c['TAG']}" if c["TAG"] else "")
            for arch in c["SUBSET_ARCHS"]:
                folder = os.path.join(out, name, arch) if several_archs else os.path.join(out, name)
                for seed in c["SEEDS"]:
                    save = os.path.join(folder, f"r{rate}", f"s{seed}")
                    plan.stages[2].append(([py, os.path.join(root, "train.py"), *common, "--arch", arch, "--batch-size",
                                            c["FULL_BATCH"], "--save_path", save, "--resume", "--manualSeed", seed,
                                            "--dynamic", method, "--dynamic_ratio", rate, *overwrite,
                                            *c["TRAIN_FLAGS"]], save))
    plan.stages[3].append(([py, os.path.join(root, "scripts", "summarize.py"), out], None))
    if scores:   # the scores of the study, at its own pruning rates
        plan.stages[3].append(([py, os.path.join(root, "scripts", "report.py"), masks, "--rates", *rates], None))
    plan.settings = _settings(c, plan, scored) + plan.settings
    return plan


def _settings(c, plan, scored):
    """What the study will do, in words, before anything runs."""
    n = {s: len(plan.stages[s]) for s in plan.stages}
    lines = [f"study: {c['DATASET']} / {c['ARCH']}, {c['EPOCHS']} epochs, pruning rates {' '.join(c['rates'])}, "
             f"seeds {' '.join(c['SEEDS'])}; OUT={c['OUT']}",
             f"  methods {' '.join(c['METHODS'])}; selections {' '.join(c['SELECTIONS'])}"
             + (f"; dynamic {' '.join(c['DYNAMIC'])}" if c["DYNAMIC"] else "")
             + (f"; scored: {' '.join(m for m in scored if m != 'random')}" if set(scored) - {"random"} else "")
             + (f"; subset architectures {' '.join(c['SUBSET_ARCHS'])}" if c["SUBSET_ARCHS"] != [c["ARCH"]] else ""),
             f"  runs: stage 1 {n[1]} command(s) (full-data run, scores), stage 2 {n[2]} training run(s), "
             f"stage 3 {n[3]} (summary, report)" + (f"; TAG={c['TAG']}" if c["TAG"] else "")
             + ("; OVERWRITE=1" if c["OVERWRITE"] else "")]
    if c["DYNAMICS"]:
        lines.append(f"  dynamics from DYNAMICS={c['DYNAMICS']} (no full-data run)")
    return lines


def plan_text(plan):
    """The plan file: a header, then the sections "# stage 1", "# stage 2", "# stage 3"."""
    c = plan.cfg
    head = [
        "# TDDS pruning study, written by scripts/sweep.sh: run the stages in order; the lines of",
        "# stage 2 are independent (scripts/slurm_array.sh PLAN 2: array task i runs line i, 0-based).",
        f"# DATASET={c['DATASET']} ARCH={c['ARCH']} EPOCHS={c['EPOCHS']} RATES='{' '.join(c['rates'])}' "
        f"METHODS='{' '.join(c['METHODS'])}' SELECTIONS='{' '.join(c['SELECTIONS'])}' SEEDS='{' '.join(c['SEEDS'])}' "
        f"SUBSET_ARCHS='{' '.join(c['SUBSET_ARCHS'])}' BUDGET={c['BUDGET']} KD={int(c['KD'])} "
        f"KD_ALPHA='{c['KD_ALPHA']}' RATE_FLAGS='{c['RATE_FLAGS']}' OVERWRITE={int(c['OVERWRITE'])}"
        + (f" DYNAMIC='{' '.join(c['DYNAMIC'])}'" if c["DYNAMIC"] else "") + (f" TAG={c['TAG']}" if c["TAG"] else ""),
        f"# OUT={bash_quote(c['OUT'])}"]   # summarize.py finds the planned runs even if the folder moved
    body = []
    for s in (1, 2, 3):
        body += [f"# stage {s}", *plan.lines(s)]
    return "\n".join(head + body) + "\n"

