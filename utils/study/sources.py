"""The scoring sources of a study: where its scores come from. The reference is always there: the
study's ARCH on all the data (the full-data run's dynamics, or DYNAMICS), scored into OUT/masks. Two
cheap sources may stand beside it (docs/SWEEP.md, "Cheap scores"), each with its own stage-1 run,
scored by the same importance_evaluation.py calls into its own masks folder, and its own copy of the
scored subset runs in stage 2:

    PROXY_ARCH=a     the dynamics of another architecture a on all the data: OUT/proxy-<a>,
                     OUT/masks-proxy-<a>, subset runs <name>-proxy-<a>
    FRACTION=f       score extrapolation: ARCH trained on a seeded random fraction f of the data,
                     its scores extended to every sample by the kNN of importance_evaluation.py
                     (--extrapolate_k EXTRAPOLATE_K): OUT/fraction-<f>, OUT/masks-fraction-<f>,
                     subset runs <name>-f<f>

A source only records dynamics: moderate (a score of the trained full-data model) and random (no
score) have no cheap copy.
"""
import os
from types import SimpleNamespace

from utils.methods import SCORES
from utils.science.extrapolate import K_DEFAULT


PROXY_FOLDER, FRACTION_FOLDER = "proxy-", "fraction-"   # OUT/proxy-<arch>, OUT/fraction-<f>: the cheap sources' runs


def from_dynamics(method):
    """Whether a cheap source can score `method`: it reads dynamics (not random, not moderate)."""
    return SCORES[method].source == "dynamics"


def scoring_sources(c, s):
    """[reference, proxy?, fraction?], each a SimpleNamespace: key, suffix (of the subset runs' names),
    run (the stage-1 run folder; None for the reference, whose run is the full-data run), dynamics,
    masks, arch (that scores), fraction (of the data the scoring run trains on), train (train.py's
    flags of the source's run), flags (importance_evaluation.py's extra flags), what (in words)."""
    out, masks = [], os.path.join(c["OUT"], "masks")
    out.append(SimpleNamespace(key="reference", suffix="", run=None, dynamics=s.dynamics, masks=masks, arch=c["ARCH"],
                               fraction=1.0, train=[], flags=[],
                               what=f"{c['ARCH']} on all the data ({_rel(c, masks)})"))
    if not s.needs_dynamics:
        return out
    if c["PROXY_ARCH"]:
        a = c["PROXY_ARCH"]
        run, masks = os.path.join(c["OUT"], f"{PROXY_FOLDER}{a}"), os.path.join(c["OUT"], f"masks-{PROXY_FOLDER}{a}")
        out.append(SimpleNamespace(key="proxy", suffix=f"-proxy-{a}", run=run, dynamics=os.path.join(run, "npy"),
                                   masks=masks, arch=a, fraction=1.0, train=[], flags=[],
                                   what=f"proxy {a} on all the data ({_rel(c, masks)}, subset runs <name>-proxy-{a})"))
    if c["FRACTION"]:
        f, k = c["FRACTION"], c["EXTRAPOLATE_K"]
        run, masks = os.path.join(c["OUT"], f"{FRACTION_FOLDER}{f}"), os.path.join(c["OUT"], f"masks-{FRACTION_FOLDER}{f}")
        out.append(SimpleNamespace(key="fraction", suffix=f"-f{f}", run=run, dynamics=os.path.join(run, "npy"),
                                   masks=masks, arch=c["ARCH"], fraction=float(f), train=["--train_fraction", f],
                                   flags=["--extrapolate_k", k] if k else [],
                                   what=f"{c['ARCH']} on a fraction {f} of the data, extrapolated to every sample "
                                        f"(k={k or K_DEFAULT}{'' if k else ', the default'}; {_rel(c, masks)}, "
                                        f"subset runs <name>-f{f})"))
    return out


def _rel(c, path):
    return os.path.relpath(path, c["OUT"])


def source_run(plan, c, src, T_max, stop_epoch):
    """The stage-1 run of a cheap source: train.py --dynamics as the full-data run (FULL_BATCH, the first
    seed, TRAIN_FLAGS and FULL_FLAGS), with the source's architecture (and fraction), recording only the
    epochs the largest T needs."""
    stop = ["--stop_epoch", T_max] if T_max < stop_epoch else []
    plan.add(1, [c["PYTHON"], os.path.join(c["ROOT"], "train.py"), *c["common"], "--arch", src.arch, "--batch-size",
                 c["FULL_BATCH"], *src.train, "--dynamics", "--save_path", src.run, "--resume", "--manualSeed",
                 c["SEEDS"][0], *stop, *c["overwrite"]], src.run, TRAIN_FLAGS=c["TRAIN_FLAGS"],
             FULL_FLAGS=c["FULL_FLAGS"])


def source_notes(c, sources, scored):
    """What a user should know about the cheap sources: a method that has no cheap copy."""
    if len(sources) == 1:
        return []
    left = [m for m in c["METHODS"] if m != "random" and not from_dynamics(m)]
    names = " and ".join(f"{v}={c[v]}" for v in ("PROXY_ARCH", "FRACTION") if c[v])
    return [f"{m}: no copy from {names} ({m} scores the trained full-data model, not dynamics)" for m in left]


def source_settings(sources):
    """The settings line of the scoring sources (none for the reference alone)."""
    if len(sources) == 1:
        return []
    return ["  scoring sources: " + "; ".join(src.what for src in sources)]
