"""The one table of methods: every score, selection, dynamic-pruning method, label-noise type,
corruption and data set, declared once. Everything else (argparse choices, the scorer, the selector,
the study planner, the summaries) reads these declarations; tests/test_methods.py fails on a second
copy of any of these name lists.

The ground floor: pure Python, no torch, no numpy, nothing of ours, so that parsing flags and
planning a study import it in milliseconds.

Adding a score computed from the recorded dynamics = one `Score(...)` line in SCORES below, plus its
per-epoch feature (a function decorated with @per_epoch in utils/science/features.py) unless it
reads an existing one, plus its reducer (@reducer in utils/science/reducers.py) unless a generic one
("mean", "neg_mean", ...) does. Its definition goes to docs/METHODS.md.
"""
from dataclasses import dataclass


# ------------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class Score:
    """One score of importance_evaluation.py --method (higher = more important = kept).

    feature  the per-epoch quantity it reads, computed from each epoch's logits by
             utils/science/features.py (None: random, moderate)
    reducer  how the per-epoch values of epochs 0..T-1 become the score: a function of that name in
             utils/science/reducers.py (None: random, moderate)
    labels   needs the training labels y (computed from logits; the contrib layout stores the feature)
    window   takes --window_size K with K >= window (None: no window)
    decay    takes --decay beta (TDDS)
    mean_p   also writes mean_p_<tag>.npy, each sample's mean p_y (DUAL's Beta sampling reads it)
    tag      the <tag> of its files, before the suffixes of output_tag ({name}, {T}, {K})
    label    what a log line, info_<tag>.json's "what" and a histogram's title call one scoring
             ({name}, {T}, {K}, {decay}, {seed}; moderate: {arch}, {epoch})
    source   'dynamics' (the recorded epochs 0..T-1), 'seed' (random) or 'checkpoint' (computed from a
             trained model's features, not from the dynamics: moderate)
    """
    name: str
    feature: object = None
    reducer: object = None
    labels: bool = False
    window: object = None
    decay: bool = False
    mean_p: bool = False
    tag: str = '{name}_ep{T}'
    label: str = '{name} (T={T})'
    source: str = 'dynamics'


SCORES = {s.name: s for s in (
    Score('tdds', 'contrib', 'tdds', window=3, decay=True, tag='win{K}_ep{T}',
          label='TDDS (T={T}, K={K}, decay={decay})'),
    Score('random', source='seed', label='random (seed {seed})'),
    Score('el2n', 'el2n', 'mean', labels=True),
    Score('forgetting', 'correct', 'forgetting', labels=True),
    Score('aum', 'margin', 'neg_mean', labels=True),
    Score('entropy', 'entropy', 'last'),
    Score('dyn_unc', 'target_prob', 'window_std', labels=True, window=2, label='dyn_unc (T={T}, K={K})'),
    Score('dual', 'target_prob', 'dual', labels=True, window=2, mean_p=True, label='DUAL (T={T}, J={K})'),
    Score('margin', 'prob_gap', 'neg_mean'),
    Score('least_confidence', 'least_conf', 'mean'),
    Score('moderate', source='checkpoint', tag='moderate', label='moderate ({arch}, epoch {epoch})'),
)}

# The per-epoch features train.py --dynamics_format contrib records, each as <e>_<Tag>.npy (N,) with
# Tag the name in CamelCase (contrib: c_{e-1}, from e = 1 on). A score whose feature is not listed is
# computed from logits only (the contrib layout is refused for it with one line).
CONTRIB_FEATURES = ('contrib', 'el2n', 'correct', 'margin', 'entropy', 'target_prob')


def names(table, **where):
    """The names of `table` whose declarations have every attribute of `where` at that value, in
    declaration order: names(SCORES, labels=True), names(SELECTIONS, score_values=True)."""
    return tuple(n for n, d in table.items() if all(getattr(d, k) == v for k, v in where.items()))


# the scores importance_evaluation.py computes from a dynamics folder (all but moderate)
DYNAMICS_SCORES = tuple(n for n, s in SCORES.items() if s.source != 'checkpoint')
WINDOW_SCORES = tuple(n for n, s in SCORES.items() if s.window is not None)


def describe(method, **fields):
    """The label of one scoring: describe('tdds', T=10, K=5, decay=0.9) == 'TDDS (T=10, K=5, decay=0.9)'."""
    return SCORES[method].label.format(name=method, **fields)


def output_tag(method, trajectory_len, window_size=None, decay=None, name_window=False, name_decay=False):
    """The <tag> of a score's files: win{K}_ep{T} for TDDS (the published name), {method}_ep{T} for a
    baseline, 'moderate' for moderate. When one call scores several decays (several window sizes of a
    windowed score whose tag does not hold K: dyn_unc, dual), _decay{beta} (_win{K}) is appended so
    that no two results share a file."""
    s = SCORES[method]
    tag = s.tag.format(name=method, T=trajectory_len, K=window_size)
    if s.window is not None and name_window and '{K}' not in s.tag:
        tag += f'_win{window_size}'
    if s.decay and name_decay:
        tag += f'_decay{decay:g}'
    return tag


# ----------------------------------------------------------------------------------------- selections
@dataclass(frozen=True)
class Selection:
    """One train_subset.py --selection.

    ranked        chooses by the scoring (reads --mask_path); False: ignores it (random)
    score_values  needs the score values themselves (--score_path), not only their order
    mean_p        needs each sample's mean p_y (mean_p_<tag>.npy or --mean_p_path)
    --class_balanced applies any of them within each class (a flag, not a selection).
    """
    name: str
    ranked: bool = True
    score_values: bool = False
    mean_p: bool = False


SELECTIONS = {s.name: s for s in (
    Selection('top'),
    Selection('ccs', score_values=True),
    Selection('random', ranked=False),
    Selection('beta', score_values=True, mean_p=True),
)}


# ------------------------------------------------------------------------------ dynamic pruning
@dataclass(frozen=True)
class DynamicMethod:
    """One train.py --dynamic method (prunes while training). delta: reads --dynamic_delta."""
    name: str
    delta: bool = False


DYNAMIC_METHODS = {d.name: d for d in (
    DynamicMethod('infobatch', delta=True),
    DynamicMethod('rs2'),
)}


# ----------------------------------------------------------------------------------- robustness
NOISE_TYPES = ('symmetric', 'asymmetric')   # --noise_type (utils/training/robustness.py applies them)


@dataclass(frozen=True)
class Corruption:
    """One --corruption: its parameter at severity 1..5, in the spirit of CIFAR-10-C (Hendrycks &
    Dietterich 2019), and what that parameter is."""
    name: str
    severity: tuple
    unit: str


CORRUPTIONS = {c.name: c for c in (
    Corruption('gaussian_noise', (0.04, 0.06, 0.08, 0.09, 0.10), 'std of additive noise, fraction of 255'),
    Corruption('gaussian_blur', (0.4, 0.6, 0.7, 0.8, 1.0), 'sigma in pixels (kernel 2*ceil(3 sigma)+1)'),
    Corruption('contrast', (0.75, 0.5, 0.4, 0.3, 0.15), 'contrast factor (1 = unchanged)'),
    Corruption('jpeg', (80, 65, 58, 50, 40), 'JPEG quality (Pillow)'),
)}


# ------------------------------------------------------------------------------------- data sets
DATASETS = ('cifar10', 'cifar100', 'digits', 'imagefolder')   # --dataset (utils/training/data.py reads them)
DATASET_CLASSES = {'cifar10': 10, 'cifar100': 100, 'digits': 10}   # imagefolder: its class folders
