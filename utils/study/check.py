"""The planned command lines checked before anything runs: each is parsed by its own script's parser
(given by scripts/sweep.py: train.py, train_subset.py, importance_evaluation.py), so that a flag a
script refuses is refused at plan time, naming the variable it came from; and a variant (TAG) keeps
only the runs its flags change, judged by the run folders' identity rule (utils.args.without_unused
of the fingerprinted settings: a flag that acts on nothing is not identity)."""
import contextlib
import io
import os
import re
from collections import Counter

from utils.args import ONLY_FOR, ONLY_WITH, flag_name, without_unused
from utils.errors import UserError
from utils.protocol.fingerprint import NOT_FINGERPRINTED
from utils.study.equal_work import RANDOM_EW, RS2_EW

VARIANT_FLAGS = ("TRAIN_FLAGS", "SUBSET_FLAGS", "DYNAMIC_FLAGS")   # the flags that make a TAG's variant
# the variable behind a flag of the plan's own making, to name it when a script refuses its value
PLANNED_BY = {"--dataset": "DATASET", "--arch": "ARCH or SUBSET_ARCHS", "--epochs": "EPOCHS", "--ngpu": "NGPU",
              "--data_path": "DATA_PATH", "--save_path": "OUT", "--selection": "SELECTIONS", "--method": "METHODS",
              "--dynamic": "DYNAMIC", "--stop_epoch": "TRAJ (the largest T) or FULL_ACC",
              "--batch-size": "BATCH, FULL_BATCH or RATE_FLAGS", "--kd_alpha": "KD_ALPHA", "--manualSeed": "SEEDS",
              "--dynamic_ratio": "DYNAMIC_RATIOS (or RATES)", "--dynamic_delta": "DYNAMIC_DELTA",
              "--trajectory_len": "TRAJ", "--window_size": "WIN", "--subset_rate": "RATES",
              "--train_fraction": "FRACTION", "--extrapolate_k": "EXTRAPOLATE_K"}
OVERRIDABLE = ("learning_rate",)   # planned at the published value, no variable of its own: a flag variable may set it
HINTS = {"TRAIN_FLAGS": " (TRAIN_FLAGS go to every training run: the full-data run, the subset runs and the dynamic "
                        "runs; flags of one kind of run go in FULL_FLAGS, SUBSET_FLAGS or DYNAMIC_FLAGS)",
         "SUBSET_FLAGS": " (SUBSET_FLAGS go to train_subset.py's subset runs)",
         "DYNAMIC_FLAGS": " (DYNAMIC_FLAGS go to train.py's dynamic runs)",
         "FULL_FLAGS": " (FULL_FLAGS go to train.py's full-data run)"}
DYNAMIC_HINT = "; InfoBatch's delta is DYNAMIC_DELTA, the dynamic runs' ratios DYNAMIC_RATIOS"


def parsed(parse, argv):
    """(flags, None) when the script's parser (and its checks of the flags alone) accept argv, else
    (None, why): the parser's own error line, without its "error: " and "(see ... --help)"."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parse([str(a) for a in argv]), None
    except SystemExit:
        text = err.getvalue().strip().splitlines()
        why = text[-1] if text else "--help is not a flag of a study"
    except UserError as e:
        why = str(e)
    why = re.sub(r"^error: ", "", why)
    return None, re.sub(r" \(see [^()]* --help\)$", "", why)


def _without(argv, origins, variables):
    """argv without the words that `variables` put at its end (Plan.add appends them in order)."""
    n = sum(len(ws) for v, ws in origins.items() if v in variables)
    kept = [w for v, ws in origins.items() if v not in variables for w in ws]
    tail = sum(len(ws) for ws in origins.values())
    return argv[:len(argv) - tail] + kept if n else list(argv)


def check_commands(plan, parse):
    """Parse every planned line of stages 1 and 2 with its script's parser (plan.parsed gets the flags);
    a refused line is a UserError naming the variable whose words the script refuses."""
    for stage in (1, 2):
        for i, (argv, _) in enumerate(plan.stages[stage]):
            script = os.path.basename(argv[1])
            if script in parse:
                plan.parsed[stage][i] = _check_line(parse[script], script, argv, plan.origins[stage][i])


def _check_line(parse, script, argv, origins):
    flags, why = parsed(parse, argv[2:])
    base = _without(argv, origins, set(origins))
    if flags is None:
        given, why_base = parsed(parse, base[2:])
        if given is None:   # a value the plan made of a variable
            named = [v for f, v in PLANNED_BY.items() if f in why_base.split()]
            raise UserError(f"{named[0] if named else 'the sweep'}: {script} refuses its planned command: {why_base}")
        words = list(base)
        for variable, ws in origins.items():   # the first variable whose words make it refuse
            words += ws
            if parsed(parse, words[2:])[0] is None:
                hint = HINTS.get(variable, "") + (DYNAMIC_HINT if any(w.startswith("--dynamic") for w in ws) else "")
                raise UserError(f"{variable}: {script} refuses '{' '.join(ws)}': {why}{hint}")
        raise UserError(f"{script} refuses its planned command: {why}")
    given, _ = parsed(parse, base[2:])
    for variable, ws in origins.items():   # a flag the plan sets itself is the plan's, not a flag variable's
        alone, _ = parsed(parse, base[2:] + ws)
        for key, value in sorted(vars(given).items()) if alone is not None else ():
            if flag_name(key) in base and key not in OVERRIDABLE and getattr(alone, key, value) != value:
                raise UserError(f"{variable}: {flag_name(key)} is set by the sweep itself ({value} here"
                                + (f", from {PLANNED_BY[flag_name(key)]}" if flag_name(key) in PLANNED_BY else "")
                                + f"): {variable} may not change it")
    if script == "train.py" and "--dynamics" in base and getattr(flags, "dynamic", None):
        variable = next(v for v, ws in origins.items() if "--dynamic" in ws)
        raise UserError(f"{variable}: --dynamic {flags.dynamic} would make the full-data run prune as it trains: its "
                        f"dynamics would not hold every sample, and no score could be computed from them (dynamic "
                        f"runs beside the study: DYNAMIC={flags.dynamic})")
    return flags


def identity(flags):
    """The settings of parsed flags that make a run folder's identity: the fingerprinted ones, without
    those that act on nothing (utils.args.without_unused, the rule the run folders apply)."""
    return without_unused({k: v for k, v in vars(flags).items() if k not in NOT_FINGERPRINTED})


def _why_same(flags, alone, given, script):
    """Why a variant's flags change nothing in a run: which rule drops each setting they change."""
    changed = sorted(k for k, v in vars(flags).items() if getattr(alone, k, v) != v)
    if not changed:
        kind = "dynamic runs" if getattr(flags, "dynamic", None) else "runs"
        return f"{' and '.join(given)} do not reach {script}'s {kind}"
    why = []
    for k in changed:
        if k in NOT_FINGERPRINTED:
            why.append(f"{flag_name(k)} is not part of a run's identity")
        elif k in ONLY_FOR:
            other, _ = ONLY_FOR[k]
            why.append(f"{flag_name(k)} acts on nothing with {flag_name(other)} {getattr(flags, other)}")
        else:
            rate = next((r for r, ds in ONLY_WITH.items() if k in ds), None)
            why.append(f"{flag_name(k)} acts on nothing without {flag_name(rate)}" if rate else f"{flag_name(k)}")
    return ", ".join(why)


def skip_shared(plan, parse):
    """A variant (TAG with TRAIN_FLAGS, SUBSET_FLAGS or DYNAMIC_FLAGS) plans only the stage-2 runs its
    flags change: a run whose identity is the same without them is the study's own run, shared (listed
    in plan.shared and in a note that says how many and why)."""
    c = plan.cfg
    if not c["TAG"] or not any(c[v] for v in VARIANT_FLAGS):
        return
    keep, why, changed_controls = ([], [], []), Counter(), 0
    for i, (argv, save) in enumerate(plan.stages[2]):
        flags, origins = plan.parsed[2][i], plan.origins[2][i]
        if flags is not None:
            alone, _ = parsed(parse[os.path.basename(argv[1])], _without(argv, origins, VARIANT_FLAGS)[2:])
            rel = os.path.relpath(save, c["OUT"]).split(os.sep)
            if rel[0] in (RANDOM_EW, RS2_EW):   # an equal-work control: the study's own folder, whoever asks
                if alone is None or identity(alone) != identity(flags):
                    changed_controls += 1
            elif alone is not None and identity(alone) == identity(flags):
                plan.shared.append((save, os.path.join(c["OUT"], rel[0][:-len(c["TAG"]) - 1], *rel[1:])))
                given = [v for v in VARIANT_FLAGS if c[v] and v not in origins]
                why[_why_same(flags, alone, given, os.path.basename(argv[1]))] += 1
                continue
        for kept, item in zip(keep, (plan.stages[2][i], origins, flags)):
            kept.append(item)
    if changed_controls:   # the control folders carry no TAG: a study's control of other settings is refused by its script
        flags = " ".join(f"{v}={' '.join(c[v])}" for v in VARIANT_FLAGS if c[v])
        plan.notes.append(f"EQUAL_WORK: {changed_controls} equal-work control(s) planned with TAG={c['TAG']}'s {flags} in "
                          f"the study's folders ({RANDOM_EW}, {RS2_EW}: no TAG); where one of them already holds a run "
                          f"of other settings, its script refuses it (give this variant its own OUT)")
    if why:
        n = len(plan.stages[2])
        plan.stages[2], plan.origins[2], plan.parsed[2] = (list(k) for k in keep)
        flags = " ".join(f"{v}={' '.join(c[v])}" for v in VARIANT_FLAGS if c[v])
        plan.notes.append(f"TAG={c['TAG']}: {len(plan.shared)} of {n} runs not planned: the study's own runs are the "
                          f"same ({flags} change nothing there: " + "; ".join(f"{v} run(s): {k}" for k, v in why.items())
                          + "); the summary shows them beside the variant")
