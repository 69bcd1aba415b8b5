"""A pruning study as a plan: the study's variables (scripts/sweep.sh's environment, checked by
utils/study/variables.py) -> three stages of self-contained command lines. A pure function of the
variables (and, for DYNAMICS, of which epochs that folder holds): the same plan comes out before and
after a run. Given the scripts' parsers (`parse`), every planned line is parsed by its own script's
parser before anything runs, and a variant (TAG) plans only the runs its flags change
(utils/study/check.py). The cheap scoring sources (PROXY_ARCH, FRACTION) are utils/study/sources.py,
the equal-work controls (EQUAL_WORK) utils/study/equal_work.py. Its reference is docs/SWEEP.md; the
executor that runs it on this machine is utils/study/executor.py.

    from utils.study.plan import make_plan, plan_text
    plan = make_plan({"DATASET": "digits", "RATES": "0.5 0.9", "METHODS": "tdds random"})
    print(plan_text(plan))
"""
import os
from types import SimpleNamespace

from utils.errors import UserError
from utils.methods import SCORES, output_tag
from utils.study import equal_work
from utils.study.check import check_commands, skip_shared
from utils.study.sources import from_dynamics, scoring_sources, source_notes, source_run, source_settings
from utils.study.variables import (  # noqa: F401 (VARIABLES, near_misses, gpu_count: the sweep's, from here)
    DYNAMIC_METHODS,
    METHODS,
    SELECTIONS,
    VARIABLES,
    WINDOWED,
    gpu_count,
    is_count,
    kd_alpha,
    near_misses,
    rate,
    rate_flags,
    read_config,
    unused_notes,
    words,
)

# (T, K) per pruning rate for TDDS, as reported for CIFAR-100 / ResNet-18 (docs/METHODS.md)
REPORTED = {"0.3": (90, 10), "0.5": (70, 10), "0.7": (60, 20), "0.8": (20, 10), "0.9": (10, 5)}


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


class Plan:
    """The stages of a study: stages[s] = [(argv, save folder or None)]; `settings` the resolved settings
    (printed before anything runs), `notes` what the plan decided that a user should know. Beside each
    command: origins[s][i] = {variable: words it put at the end of the line}, parsed[s][i] its parsed
    flags (with the scripts' parsers). `shared`: [(variant folder, study folder)] a TAG did not plan."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.stages = {1: [], 2: [], 3: []}
        self.origins = {1: [], 2: [], 3: []}
        self.parsed = {1: [], 2: [], 3: []}
        self.notes, self.settings, self.shared = [], [], []
        self.points, self.equal_work = [], []   # the static points (EQUAL_WORK), and their "# equal-work:" rows

    def add(self, stage, argv, save=None, **flags):
        """A command: argv, then the words of each flag variable in `flags` (recorded as their origin)."""
        argv, origins = list(argv), {}
        for variable, ws in flags.items():
            if ws:
                origins[variable] = list(ws)
                argv += ws
        self.stages[stage].append((argv, save))
        self.origins[stage].append(origins)
        self.parsed[stage].append(None)

    def lines(self, stage):
        return [line(argv) for argv, _ in self.stages[stage]]


def _batch_size(batch, rate_, flags):
    """(batch size, other flags) of a rate's RATE_FLAGS: a --batch-size among them replaces BATCH (one
    --batch-size per line)."""
    extra, j = [], 0
    while j < len(flags):
        if flags[j] == "--batch-size":
            batch = flags[j + 1] if j + 1 < len(flags) else ""
            j += 1
            if not is_count(batch):
                raise UserError(f"RATE_FLAGS: rate {rate_}: --batch-size '{batch}' is not a positive integer")
        else:
            extra.append(flags[j])
        j += 1
    return batch, extra


def _shapes(c, plan, s, alpha):
    """The study's pruning rates (normalised: 0.50 -> 0.5, each once) and per rate the T and K of the
    scores: reported, or TRAJ / WIN, clamped to the `s.limit` epochs there are; what is used is said in
    plan.settings. K is asked for only where a windowed score uses it."""
    windowed = [m for m in s.scored if m in WINDOWED]
    rates, Ts, Ks = [], [], []   # per rate, normalised (0.50 -> 0.5), T and K clamped to what can be recorded
    for word in words(c["RATES"]):
        r = rate(word)
        if r is None:
            raise UserError(f"RATES: '{word}' is not a number")
        if not 0 < float(r) < 1:
            raise UserError(f"RATES: pruning rate {r} is not in (0, 1)")
        if r in rates:   # 0.5 and 0.50
            continue
        T, K = REPORTED.get(r, (None, None))
        T, K = c["TRAJ"] or T, c["WIN"] or K
        said = []
        if s.needs_dynamics:
            if T is None or (K is None and windowed):
                need = [v for v, x in (("TRAJ", T), ("WIN", K if windowed else 0)) if x is None]
                raise UserError(f"RATES: no reported (T, K) for pruning rate {r}: set {' and '.join(need)}")
            if T > s.limit:
                said.append(f"T={T} exceeds the {s.limit} {s.what}")
                T = s.limit
            if windowed and K > T:
                said.append(f"K={K} exceeds T={T}")
                K = T
            if "tdds" in c["METHODS"] and K < 3:
                raise UserError(f"WIN: rate {r}: K={K} leaves at most one contribution per window (TDDS needs K >= 3)")
            if "dual" in s.scored and K < 2:
                raise UserError(f"WIN: rate {r}: K={K}: DUAL's windows need K >= 2 (a sample standard deviation)")
            origin = f"T {'from TRAJ' if c['TRAJ'] else 'reported'}" + (
                f", K {'from WIN' if c['WIN'] else 'reported'}" if windowed else "")
            plan.settings.append(f"  rate {r}: T={T}" + (f", K={K}" if windowed else "") + f" ({origin}"
                                 + (f"; clamped: {', '.join(said)}" if said else "") + ")")
        if c["KD"] and c["METHODS"] and "all" not in alpha and r not in alpha:
            raise UserError(f"KD_ALPHA: no distillation weight for pruning rate {r} (KD_ALPHA='{c['KD_ALPHA']}')")
        rates.append(r)
        Ts.append(T or 0)
        Ks.append(K or 0)
    if not rates:
        raise UserError("RATES is empty")
    return rates, Ts, Ks


def _study(c):
    """What the study needs: the methods scored in stage 1 (METHODS, and dual when beta sampling needs
    its mean p_y for another score), whether they read dynamics or the trained model, and where the
    dynamics, moderate's checkpoint and the teacher are."""
    scored = list(c["METHODS"])
    if "beta" in c["SELECTIONS"] and any(m != "random" and not SCORES[m].mean_p for m in c["METHODS"]):
        scored = words(" ".join(scored + ["dual"]))
    s = SimpleNamespace(scored=scored, needs_dynamics=any(SCORES[m].source == "dynamics" for m in scored),
                        needs_model=(c["KD"] and bool(c["METHODS"])) or "moderate" in scored,
                        scores=any(m != "random" for m in scored))
    if c["DYNAMICS"]:   # an existing recording: epochs 0 .. recorded-1 are all there
        recorded = 0
        while any(os.path.isfile(os.path.join(c["DYNAMICS"], f"{recorded}_{k}.npy")) for k in ("Output", "Index")):
            recorded += 1
        if not recorded:
            raise UserError(f"DYNAMICS: no dynamics in {c['DYNAMICS']}: expected 0_Output.npy, 1_Output.npy, ...")
        run = os.path.dirname(c["DYNAMICS"])
        s.limit, s.what, s.dynamics = recorded, "recorded epochs", c["DYNAMICS"]
        s.moderate_checkpoint, s.teacher = (os.path.join(run, f) for f in ("checkpoint.pth.tar", "model_best.pth.tar"))
        if "moderate" in c["METHODS"] and not os.path.isfile(s.moderate_checkpoint):
            raise UserError(f"METHODS: moderate needs the model of the run that recorded DYNAMICS: "
                            f"no {s.moderate_checkpoint}")
        if c["KD"] and c["METHODS"] and not os.path.isfile(s.teacher):
            raise UserError(f"KD=1 needs the model of the run that recorded DYNAMICS: no {s.teacher}")
    else:
        full = os.path.join(c["OUT"], "full")
        s.limit, s.what, s.dynamics = c["EPOCHS"], "epochs of the full-data run", os.path.join(full, "npy")
        s.moderate_checkpoint, s.teacher = (os.path.join(full, f) for f in ("checkpoint.pth.tar", "model_best.pth.tar"))
    return s


def make_plan(environ, cwd=None, parse=None):
    """The plan of the study that `environ` describes (see the module docstring). `parse`: {script file
    name: its parser (argv -> flags)}, to check every line before anything runs. Raises UserError."""
    c = read_config(environ, cwd)
    plan = Plan(c)
    s = _study(c)
    per_rate, alpha = rate_flags(c["RATE_FLAGS"]), kd_alpha(c["KD_ALPHA"])
    rates, Ts, Ks = _shapes(c, plan, s, alpha)
    for r in rates if c["METHODS"] else ():   # what each rate's subset runs add, said once
        if r in per_rate:
            plan.notes.append(f"rate {r}: subset runs add{''.join(' ' + w for w in per_rate[r])} "
                              f"(RATE_FLAGS; BATCH={c['BATCH']} elsewhere)")
    c["rates"] = rates
    c["common"] = ["--data_path", c["DATA_PATH"], "--dataset", c["DATASET"], "--epochs", c["EPOCHS"],
                   "--learning_rate", "0.1", "--ngpu", c["NGPU"]]
    c["overwrite"] = ["--overwrite"] if c["OVERWRITE"] else []
    sources = scoring_sources(c, s)
    _full_run(plan, c, s, max(map(int, Ts)))
    for src in sources:   # the reference, then the cheap sources: each its run (but the reference's) and scorings
        if src.run:
            source_run(plan, c, src, max(map(int, Ts)), c["EPOCHS"])
        _scorings(plan, c, s, Ts, Ks, src)
    for src in sources:
        _subset_runs(plan, c, s, list(zip(rates, Ts, Ks)), per_rate, alpha, len(set(Ks)) > 1, src)
    _dynamic_runs(plan, c, c["DYNAMIC_RATIOS"] or rates)
    controls = _equal_work(plan, c, per_rate)
    plan.add(3, [c["PYTHON"], os.path.join(c["ROOT"], "scripts", "summarize.py"), c["OUT"]])
    if s.scores:   # the scores of the study, at its own pruning rates
        plan.add(3, [c["PYTHON"], os.path.join(c["ROOT"], "scripts", "report.py"), os.path.join(c["OUT"], "masks"),
                     "--rates", *rates])
    if parse:
        check_commands(plan, parse)
        skip_shared(plan, parse)
    has = {"full": any(a[1].endswith("train.py") for a, _ in plan.stages[1]), "scored": s.scores,
           "windowed": any(m in WINDOWED for m in s.scored), "dynamics": s.needs_dynamics,
           "infobatch": "infobatch" in c["DYNAMIC"], "dynamic_runs": bool(c["DYNAMIC"] or controls),
           "points": bool(plan.points)}
    plan.notes += source_notes(c, sources, s.scored) + unused_notes(c, has)
    plan.settings = _settings(c, plan, s.scored) + source_settings(sources) + (
        equal_work.settings(c, plan.equal_work, controls) if plan.equal_work else []) + plan.settings
    return plan


def _full_run(plan, c, s, T_max):
    """The full-data run: recorded up to the largest T, or to the end when its accuracy or model is
    wanted; none with DYNAMICS, or where nothing needs it (a study of dynamic runs without FULL_ACC)."""
    if c["DYNAMICS"] or not (s.needs_dynamics or s.needs_model or c["FULL_ACC"]):
        return
    E, stop = c["EPOCHS"], []
    if c["FULL_ACC"]:
        plan.notes.append(f"dynamics: all {E} epochs (FULL_ACC=1: the full-data run trains to the end)")
    elif c["KD"]:
        plan.notes.append(f"dynamics: all {E} epochs (KD=1: the trained full-data model is the teacher)")
    elif s.needs_model:
        plan.notes.append(f"dynamics: all {E} epochs (moderate scores the trained full-data model)")
    elif T_max >= E:
        plan.notes.append(f"dynamics: all {E} epochs (the largest T is {T_max})")
    else:
        stop = ["--stop_epoch", T_max]
        plan.notes.append(f"dynamics: {T_max} of {E} epochs ({100 * (1 - T_max / E):.0f}% of the full-data "
                          f"training saved; FULL_ACC=1 trains to the end)")
    save = os.path.join(c["OUT"], "full")
    plan.add(1, [c["PYTHON"], os.path.join(c["ROOT"], "train.py"), *c["common"], "--arch", c["ARCH"], "--batch-size",
                 c["FULL_BATCH"], "--dynamics", "--save_path", save, "--resume", "--manualSeed", c["SEEDS"][0], *stop,
                 *c["overwrite"]], save, TRAIN_FLAGS=c["TRAIN_FLAGS"], FULL_FLAGS=c["FULL_FLAGS"])


def _scorings(plan, c, s, Ts, Ks, src):
    """One importance_evaluation.py call per scored method of the scoring source `src` (utils/study/
    sources.py), every (T, K) of the study in one pass."""
    all_T, all_K = words(" ".join(map(str, Ts))), words(" ".join(map(str, Ks)))
    masks, score = src.masks, os.path.join(c["ROOT"], "importance_evaluation.py")
    for m in s.scored:
        if m == "random" or (src.run and not from_dynamics(m)):   # a cheap source scores dynamics only
            continue
        if m == "moderate":
            argv = [c["PYTHON"], score, "--method", "moderate", "--checkpoint", s.moderate_checkpoint, "--data_path",
                    c["DATA_PATH"], "--dataset", c["DATASET"], "--mask_path", masks, *c["overwrite"]]
        else:
            shape = ["--trajectory_len", *all_T]                  # the methods with windows take K,
            if m in WINDOWED:
                shape += ["--window_size", *all_K]
            if m == "tdds":                                       # TDDS also beta
                shape += ["--decay", "0.9"]
            argv = [c["PYTHON"], score, "--dynamics_path", src.dynamics, "--mask_path", masks, "--method", m, *shape,
                    *src.flags, *c["overwrite"]]
        plan.add(1, argv, EVAL_FLAGS=c["EVAL_FLAGS"])


def _folder(c, name, arch):
    return os.path.join(c["OUT"], name, arch) if c["SUBSET_ARCHS"] != [c["ARCH"]] else os.path.join(c["OUT"], name)


def _subset_runs(plan, c, s, shapes, per_rate, alpha, name_window, src):
    """One train_subset.py run per (method, selection, rate, architecture, seed) of the scoring source
    `src`: the reference's (random included), or a cheap source's scored copy (<name><src.suffix>)."""
    masks = src.masks
    budget = ["--budget", "iterations"] if c["BUDGET"] == "iterations" else []
    suffix = ("-iters" if budget else "") + ("-kd" if c["KD"] else "") + (f"-{c['TAG']}" if c["TAG"] else "")

    # the <tag> of the files importance_evaluation.py writes for (method, T, K), from its own code (one
    # call per method scores every (T, K); with several K, dyn_unc and dual add _win<K> to their names)
    def tag(method, T, K):
        return output_tag(method, int(T), int(K), name_window=name_window)
    for r, T, K in shapes:
        bs, extra = _batch_size(c["BATCH"], r, per_rate.get(r, []))
        seen = []   # run names done at this rate
        for method in c["METHODS"]:
            for sel in c["SELECTIONS"]:
                name = "random" if "random" in (method, sel) else method if sel == "top" else f"{method}-{sel}"
                if src.run and (name == "random" or not from_dynamics(method)):   # no cheap copy
                    continue
                name += ("" if name == "random" else src.suffix) + suffix
                if name in seen:   # e.g. "random" reached from several methods
                    continue
                seen.append(name)
                for arch in c["SUBSET_ARCHS"]:
                    if not name.startswith("random"):   # a static point (EQUAL_WORK)
                        plan.points.append(SimpleNamespace(source=src, method=method, T=int(T), rate=r, arch=arch,
                                                           folder=os.path.join(_folder(c, name, arch), f"r{r}")))
                    for seed in c["SEEDS"]:
                        save = os.path.join(_folder(c, name, arch), f"r{r}", f"s{seed}")
                        run = _subset_argv(c, arch, bs, save, r, seed) + budget
                        if name.startswith("random"):
                            run += ["--selection", "random"]
                        else:
                            t = tag(method, T, K)
                            run += ["--mask_path", os.path.join(masks, f"data_mask_{t}.npy"), "--score_path",
                                    os.path.join(masks, f"score_{t}.npy"), "--selection", sel]
                            if sel == "beta" and method != "dual":   # beta reads dual's mean p_y
                                run += ["--mean_p_path", os.path.join(masks, f"mean_p_{tag('dual', T, K)}.npy")]
                        if c["KD"]:
                            run += ["--teacher", s.teacher, "--kd_alpha", alpha.get(r, alpha.get("all"))]
                        plan.add(2, [*run, *c["overwrite"]], save, TRAIN_FLAGS=c["TRAIN_FLAGS"],
                                 SUBSET_FLAGS=c["SUBSET_FLAGS"], RATE_FLAGS=extra)


def _dynamic_runs(plan, c, ratios):
    """Dynamic pruning: one full-data run per (method, ratio, architecture, seed) that trains 1 - ratio of
    the samples per epoch on average (--dynamic_ratio: DYNAMIC_RATIOS, else the study's rates), at the
    full-data run's batch size; InfoBatch with DYNAMIC_DELTA's delta."""
    for method in c["DYNAMIC"]:
        name = method + (f"-{c['TAG']}" if c["TAG"] else "")
        delta = ["--dynamic_delta", c["DYNAMIC_DELTA"]] if c["DYNAMIC_DELTA"] and method == "infobatch" else []
        for r in ratios:
            for arch in c["SUBSET_ARCHS"]:
                for seed in c["SEEDS"]:
                    _add_dynamic_run(plan, c, method, r, arch, seed, os.path.join(_folder(c, name, arch), f"r{r}",
                                                                                  f"s{seed}"), delta)


def _subset_argv(c, arch, batch, save, rate_, seed):
    """The start of a train_subset.py line (its selection, budget and other flags follow)."""
    return [c["PYTHON"], os.path.join(c["ROOT"], "train_subset.py"), *c["common"], "--arch", arch, "--batch-size",
            batch, "--save_path", save, "--resume", "--subset_rate", rate_, "--manualSeed", seed]


def _add_dynamic_run(plan, c, method, ratio, arch, seed, save, delta=()):
    """One train.py --dynamic run (a DYNAMIC run, or EQUAL_WORK's RS2 control) at the full-data batch size."""
    plan.add(2, [c["PYTHON"], os.path.join(c["ROOT"], "train.py"), *c["common"], "--arch", arch, "--batch-size",
                 c["FULL_BATCH"], "--save_path", save, "--resume", "--manualSeed", seed, "--dynamic", method,
                 "--dynamic_ratio", ratio, *delta, *c["overwrite"]], save, TRAIN_FLAGS=c["TRAIN_FLAGS"],
             DYNAMIC_FLAGS=c["DYNAMIC_FLAGS"])


def _equal_work(plan, c, per_rate):
    """EQUAL_WORK=1 (utils/study/equal_work.py): per distinct (architecture, rate r') of the static points'
    controls, a random subset run (as any at rate r') and an RS2 run (as the study's dynamic runs), each
    seed; the points and their controls in plan.equal_work. Returns the (arch, r') planned."""
    if not c["EQUAL_WORK"] or not plan.points:
        return []
    if c["BUDGET"] == "iterations":
        plan.notes.append(equal_work.iterations_note(c, any(n.startswith("random") for n in _names(plan))))
        return []
    plan.equal_work, controls, note = equal_work.plan_controls(c, plan.points, lambda n, a: _folder(c, n, a))
    plan.notes.append(note)
    for arch, r in controls:
        bs, extra = _batch_size(c["BATCH"], r, per_rate.get(r, []))
        for seed in c["SEEDS"]:
            save = os.path.join(_folder(c, equal_work.RANDOM_EW, arch), f"r{r}", f"s{seed}")
            plan.add(2, [*_subset_argv(c, arch, bs, save, r, seed), "--selection", "random", *c["overwrite"]], save,
                     TRAIN_FLAGS=c["TRAIN_FLAGS"], SUBSET_FLAGS=c["SUBSET_FLAGS"], RATE_FLAGS=extra)
    for arch, r in controls:
        for seed in c["SEEDS"]:
            _add_dynamic_run(plan, c, "rs2", r, arch, seed,
                             os.path.join(_folder(c, equal_work.RS2_EW, arch), f"r{r}", f"s{seed}"))
    return controls


def _names(plan):
    """The stage-2 run names planned so far (OUT/<name>/...)."""
    return {os.path.relpath(save, plan.cfg["OUT"]).split(os.sep)[0] for _, save in plan.stages[2]}


def _settings(c, plan, scored):
    """What the study will do, in words, before anything runs."""
    n = {s: len(plan.stages[s]) for s in plan.stages}
    rates = f"pruning rates {' '.join(c['rates'])}, " if c["METHODS"] or not c["DYNAMIC_RATIOS"] else ""
    lines = [f"study: {c['DATASET']} / {c['ARCH']}, {c['EPOCHS']} epochs, {rates}seeds {' '.join(c['SEEDS'])}; "
             f"OUT={c['OUT']}",
             f"  methods {' '.join(c['METHODS']) or 'none'}; selections {' '.join(c['SELECTIONS'])}"
             + (f"; dynamic {' '.join(c['DYNAMIC'])}" if c["DYNAMIC"] else "")
             + (f" at ratios {' '.join(c['DYNAMIC_RATIOS'])}" if c["DYNAMIC"] and c["DYNAMIC_RATIOS"] else "")
             + (f"; scored: {' '.join(m for m in scored if m != 'random')}" if set(scored) - {"random"} else "")
             + (f"; subset architectures {' '.join(c['SUBSET_ARCHS'])}" if c["SUBSET_ARCHS"] != [c["ARCH"]] else ""),
             f"  runs: stage 1 {n[1]} command(s) (full-data run, scores), stage 2 {n[2]} training run(s), "
             f"stage 3 {n[3]} (summary, report)" + (f"; TAG={c['TAG']}" if c["TAG"] else "")
             + ("; OVERWRITE=1" if c["OVERWRITE"] else "")]
    if c["DYNAMICS"]:
        lines.append(f"  dynamics from DYNAMICS={c['DYNAMICS']} (no full-data run)")
    return lines


def plan_text(plan):
    """The plan file: a header (with a "# shared: VARIANT STUDY" line per run a TAG shares with the
    study), then the sections "# stage 1", "# stage 2", "# stage 3"."""
    c = plan.cfg
    extra = {k: " ".join(c[k]) if isinstance(c[k], list) else c[k]
             for k in ("DYNAMIC", "DYNAMIC_RATIOS", "DYNAMIC_DELTA", "PROXY_ARCH", "FRACTION", "EXTRAPOLATE_K",
                       "EQUAL_WORK", "TAG") if c[k]}
    head = [
        "# TDDS pruning study, written by scripts/sweep.sh: run the stages in order; the lines of",
        "# stage 2 are independent (scripts/slurm_array.sh PLAN 2: array task i runs line i, 0-based).",
        f"# DATASET={c['DATASET']} ARCH={c['ARCH']} EPOCHS={c['EPOCHS']} RATES='{' '.join(c['rates'])}' "
        f"METHODS='{' '.join(c['METHODS']) or 'none'}' SELECTIONS='{' '.join(c['SELECTIONS'])}' "
        f"SEEDS='{' '.join(c['SEEDS'])}' SUBSET_ARCHS='{' '.join(c['SUBSET_ARCHS'])}' BUDGET={c['BUDGET']} "
        f"KD={int(c['KD'])} KD_ALPHA='{c['KD_ALPHA']}' RATE_FLAGS='{c['RATE_FLAGS']}' OVERWRITE={int(c['OVERWRITE'])}"
        + "".join(f" {k}={int(v) if k == 'EQUAL_WORK' else v}" if k in ("TAG", "EQUAL_WORK") else f" {k}='{v}'"
                  for k, v in extra.items()),
        f"# OUT={bash_quote(c['OUT'])}"]   # summarize.py finds the planned runs even if the folder moved
    if plan.shared:
        head.append(f"# TAG={c['TAG']} shares these runs with the study (its flags act on nothing there): VARIANT STUDY")
        head += [f"# shared: {bash_quote(v)} {bash_quote(s)}" for v, s in plan.shared]
    head += equal_work.header_lines(plan.equal_work, bash_quote)
    body = []
    for s in (1, 2, 3):
        body += [f"# stage {s}", *plan.lines(s)]
    return "\n".join(head + body) + "\n"
