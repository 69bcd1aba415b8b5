"""utils/science/scores.py and utils/science/features.py against references written here, in plain numpy (float64),
straight from the formulas of docs/METHODS.md, on dynamics files in the published shuffled layout
(the TDDS reference and the writer of that layout are conftest's, shared with the other tests)."""
import os

import numpy as np
import pytest
import torch

from conftest import assert_user_error, cli, ref_contributions, ref_tdds, write_published
from utils.science import trajectory
from utils.errors import UserError
from utils.science.features import FEATURES, FILE_TAGS, epoch_features
from utils.science.scores import Dynamics, compute_score, output_names


# ---------------------------------------------------------------- data and files
def make_logits(seed, T, N, C):
    """(T, N, C) float32 logits that drift towards the labels over the epochs, and the (N,) labels,
    so that correctness, margins and contributions vary between samples and epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    learn = rng.uniform(0, 4, N)                      # how fast each sample is learned
    Z = rng.standard_normal((T, N, C)) * rng.uniform(0.5, 3, (1, N, 1))
    Z[:, np.arange(N), y] += learn * np.linspace(0, 1, T)[:, None]
    return Z.astype(np.float32), y


def write_contrib(folder, Z, y):
    """The --dynamics_format contrib layout, its features computed by epoch_features over all N."""
    os.makedirs(folder, exist_ok=True)
    T, N, C = Z.shape
    prev = None
    for e in range(T):
        f, prev = epoch_features(torch.from_numpy(Z[e]), torch.from_numpy(y), prev, FEATURES)
        for name, v in f.items():
            np.save(os.path.join(folder, f'{e}_{FILE_TAGS[name]}.npy'), v.numpy())
        np.save(os.path.join(folder, f'{e}_Index.npy'), np.arange(N))
        np.save(os.path.join(folder, f'{e}_Loss.npy'), np.zeros(N, np.float32))
    np.save(os.path.join(folder, 'targets.npy'), y.astype(np.int64))
    return str(folder)


# ---------------------------------------------------------------- references (float64 numpy)
def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def ref_el2n(Z, y, T):
    N, C = Z.shape[1:]
    onehot = np.eye(C)[y]
    return np.mean([np.linalg.norm(softmax(Z[e]) - onehot, axis=1) for e in range(T)], 0)


def ref_forgetting(correct):
    """correct: (T, N) booleans."""
    T, N = correct.shape
    out = np.zeros(N)
    for i in range(N):
        out[i] = sum(correct[e - 1, i] and not correct[e, i] for e in range(1, T))
        if not correct[:, i].any():
            out[i] = T
    return out


def ref_aum(Z, y, T):
    N = Z.shape[1]
    margins = np.zeros((T, N))
    for e in range(T):
        for i in range(N):
            z = Z[e, i].astype(np.float64)
            margins[e, i] = z[y[i]] - np.delete(z, y[i]).max()
    return -margins.mean(0)


def ref_entropy(Z, T):
    p = softmax(Z[T - 1])
    return -(p * np.log(p)).sum(1)


def ref_dyn_unc(Z, y, T, K):
    N = Z.shape[1]
    py = np.stack([softmax(Z[e])[np.arange(N), y] for e in range(T)])   # (T, N)
    return np.mean([py[k:k + K].std(0) for k in range(T - K + 1)], 0)


def ref_margin(Z, T):
    """Minus the mean over epochs 0..T-1 of p_(1) - p_(2), the two largest probabilities (DeepCore's margin)."""
    gaps = []
    for e in range(T):
        p = np.sort(softmax(Z[e]), axis=1)
        gaps.append(p[:, -1] - p[:, -2])
    return -np.mean(gaps, 0)


def ref_least_confidence(Z, T):
    """The mean over epochs 0..T-1 of 1 - max_c p_e[i, c]."""
    return np.mean([1 - softmax(Z[e]).max(1) for e in range(T)], 0)


def stable_argsort(x):
    return np.argsort(x, kind='stable')


# ---------------------------------------------------------------- TDDS
@pytest.mark.parametrize('T,K', [(30, 10), (10, 5)])
def test_tdds_matches_reference_on_shuffled_files(tmp_path, T, K):
    Z, y = make_logits(1, T + 2, 500, 10)            # two epochs more than used: must be ignored
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z, seed=T), T)
    assert dyn.fmt == 'logits' and (dyn.n, dyn.num_classes, dyn.epochs_recorded) == (500, 10, T + 2)
    assert dyn.targets is None
    S = compute_score(dyn, 'tdds', T, K, 0.9, progress=False)
    ref = ref_tdds(Z, T, K, 0.9)
    assert S.dtype == np.float32 and S.shape == (500,)
    np.testing.assert_allclose(S, ref, rtol=1e-4)
    np.testing.assert_array_equal(stable_argsort(S), stable_argsort(ref))


def test_tdds_decay_one_keeps_last_window_only(tmp_path):
    T, K = 8, 3
    Z, _ = make_logits(2, T, 300, 6)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z), T)
    np.testing.assert_allclose(compute_score(dyn, 'tdds', T, K, 1.0, progress=False),
                               ref_tdds(Z, T, K, 1.0), rtol=1e-4)


def test_float16_files(tmp_path):
    """float16 logits are read exactly (upcast to float32): the reference on the same float16 values
    is matched as closely as for float32 files. Rounding the logits to float16 itself moves S by
    up to ~3e-3 relative on this data, a property of the stored values, not of the scorer."""
    T, K = 10, 5
    Z, _ = make_logits(3, T, 400, 10)
    s32 = compute_score(Dynamics(write_published(tmp_path / 'a', Z), T), 'tdds', T, K, 0.9, progress=False)
    s16 = compute_score(Dynamics(write_published(tmp_path / 'b', Z, dtype=np.float16), T), 'tdds', T, K,
                        0.9, progress=False)
    np.testing.assert_allclose(s16, ref_tdds(Z.astype(np.float16), T, K, 0.9), rtol=1e-4)
    np.testing.assert_allclose(s16, s32, rtol=1e-2)


@pytest.mark.parametrize('method', ['tdds', 'el2n', 'dyn_unc'])
def test_chunk_size_does_not_change_the_score(tmp_path, monkeypatch, method):
    T, K = 8, 4
    Z, y = make_logits(4, T, 150, 7)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z, y), T)
    whole = compute_score(dyn, method, T, K, 0.9, chunk_size=10_000, progress=False)
    for chunk in (7, 64, 149):
        np.testing.assert_array_equal(compute_score(dyn, method, T, K, 0.9, chunk_size=chunk,
                                                    progress=False), whole)
    monkeypatch.setattr(trajectory, "_BLOCK_BYTES", 100)   # read the files in many small blocks
    np.testing.assert_array_equal(compute_score(dyn, method, T, K, 0.9, chunk_size=50, progress=False), whole)


def test_contrib_layout_gives_the_same_scores(tmp_path):
    T, K = 10, 4
    Z, y = make_logits(5, T, 300, 8)
    logits = Dynamics(write_published(tmp_path / 'logits', Z, y), T)
    contrib = Dynamics(write_contrib(tmp_path / 'contrib', Z, y), T)
    assert contrib.fmt == 'contrib' and contrib.n == 300 and contrib.num_classes is None
    for method in ('tdds', 'el2n', 'forgetting', 'aum', 'entropy', 'dyn_unc'):
        a = compute_score(logits, method, T, K, 0.9, progress=False)
        b = compute_score(contrib, method, T, K, 0.9, progress=False)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=method)
    np.testing.assert_allclose(compute_score(contrib, 'tdds', T, K, 0.9, progress=False),
                               ref_tdds(Z, T, K, 0.9), rtol=1e-4)


# ---------------------------------------------------------------- baselines
def test_el2n_aum_dyn_unc_match_references(tmp_path):
    T, K = 12, 4
    Z, y = make_logits(6, T, 200, 5)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z, y), T)
    np.testing.assert_array_equal(dyn.targets, y)
    score = lambda m: compute_score(dyn, m, T, K, 0.9, progress=False)
    np.testing.assert_allclose(score('el2n'), ref_el2n(Z, y, T), rtol=1e-5)
    np.testing.assert_allclose(score('aum'), ref_aum(Z, y, T), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(score('dyn_unc'), ref_dyn_unc(Z, y, T, K), rtol=1e-4, atol=1e-7)


def test_labels_passed_in_override_the_folder(tmp_path):
    T = 5
    Z, y = make_logits(7, T, 100, 4)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z), T)   # no targets.npy, as published
    with pytest.raises(UserError, match='needs labels.*--data_path and --dataset'):
        compute_score(dyn, 'el2n', T, 2, 0.9, progress=False)
    np.testing.assert_allclose(compute_score(dyn, 'el2n', T, 2, 0.9, targets=y, progress=False),
                               ref_el2n(Z, y, T), rtol=1e-5)
    with pytest.raises(UserError, match='99 labels'):
        compute_score(dyn, 'el2n', T, 2, 0.9, targets=y[:99], progress=False)


def test_forgetting_on_a_hand_built_pattern(tmp_path):
    T, C = 6, 4
    pattern = np.array([          # rows: samples, columns: epochs; 1 = predicted correctly
        [0, 0, 0, 0, 0, 0],       # never learned: ranks as hardest, T
        [1, 1, 1, 1, 1, 1],       # never forgotten: 0
        [1, 0, 1, 0, 1, 0],       # forgotten 3 times
        [0, 1, 0, 1, 0, 1],       # forgotten twice
        [0, 0, 0, 0, 0, 1],       # learned at the last epoch: 0
        [1, 0, 0, 0, 0, 0],       # learned at epoch 0, forgotten once
        [1, 1, 0, 0, 1, 1],       # once
    ], bool).T                    # (T, N)
    N = pattern.shape[1]
    rng = np.random.default_rng(8)
    y = rng.integers(0, C, N)
    Z = rng.uniform(-1, 1, (T, N, C)).astype(np.float32)
    for e in range(T):
        for i in range(N):        # the winning class is y when correct, another class when not
            Z[e, i, y[i] if pattern[e, i] else (y[i] + 1 + e % (C - 1)) % C] = 5
    assert ((Z.argmax(2) == y) == pattern).all()
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z, y), T)
    score = compute_score(dyn, 'forgetting', T, 2, 0.9, progress=False)
    np.testing.assert_array_equal(score, ref_forgetting(pattern))
    np.testing.assert_array_equal(score, [T, 0, 3, 2, 0, 1, 1])


def test_entropy_reads_only_epoch_T_minus_1(tmp_path):
    T = 4
    Z, _ = make_logits(9, T + 3, 150, 6)
    folder = write_published(tmp_path / 'dyn', Z)
    for e in list(range(T - 1)) + [T, T + 1, T + 2]:   # other epochs: NaN logits, never read
        np.save(os.path.join(folder, f'{e}_Output.npy'), np.full((150, 6), np.nan, np.float32))
    score = compute_score(Dynamics(folder, T), 'entropy', T, 2, 0.9, progress=False)
    np.testing.assert_allclose(score, ref_entropy(Z, T), rtol=1e-5, atol=1e-7)


# probabilities per (epoch, sample), as logits log p: softmax gives them back, so the answer is known by hand
KNOWN_P = np.array([
    [[0.90, 0.05, 0.05], [0.50, 0.40, 0.10], [0.40, 0.35, 0.25], [0.60, 0.30, 0.10], [0.45, 0.45, 0.10],
     [0.34, 0.33, 0.33]],
    [[0.90, 0.05, 0.05], [0.50, 0.40, 0.10], [0.40, 0.35, 0.25], [0.20, 0.70, 0.10], [0.45, 0.10, 0.45],
     [0.33, 0.33, 0.34]]])   # (T=2, N=6, C=3); sample 3 changes its mind, 4 and 5 swap classes
KNOWN_MARGIN = -np.array([0.85, 0.10, 0.05, (0.30 + 0.50) / 2, 0.0, 0.01])
KNOWN_LEAST_CONFIDENCE = np.array([0.10, 0.50, 0.60, (0.40 + 0.30) / 2, 0.55, 0.66])


@pytest.mark.parametrize('method,ref,known,order', [
    ('margin', ref_margin, KNOWN_MARGIN, [0, 3, 1, 2, 5, 4]),
    ('least_confidence', ref_least_confidence, KNOWN_LEAST_CONFIDENCE, [0, 3, 1, 4, 2, 5]),
])
def test_uncertainty_scores_on_hand_made_probabilities(tmp_path, method, ref, known, order):
    """margin keeps the smallest gap between the two largest probabilities (sample 4, a tie), least
    confidence the smallest largest probability (sample 5, nearly uniform): the two rank 4 and 5 apart.
    No labels: the folder has no targets.npy."""
    Z = np.log(KNOWN_P).astype(np.float32)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z, seed=3), 2)
    assert dyn.targets is None
    score = compute_score(dyn, method, 2, 2, 0.9, progress=False)
    np.testing.assert_allclose(score, known, atol=1e-6)
    np.testing.assert_allclose(ref(Z, 2), known, atol=1e-6)
    assert list(stable_argsort(known)) == order
    np.testing.assert_array_equal(stable_argsort(score), order)


@pytest.mark.parametrize('method,ref', [
    ('margin', ref_margin),
    ('least_confidence', ref_least_confidence),
])
def test_uncertainty_scores_match_references(tmp_path, method, ref):
    """On drifting logits in the shuffled published layout, every T of one call against the float64
    reference, and the same bits whatever the chunk size."""
    Z, _ = make_logits(13, 9, 300, 7)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z), 9)
    for T in (1, 4, 9):
        S = compute_score(dyn, method, T, 2, 0.9, progress=False)
        assert S.dtype == np.float32 and S.shape == (300,)
        np.testing.assert_allclose(S, ref(Z, T), rtol=1e-5, atol=1e-6, err_msg=f'T={T}')
        np.testing.assert_array_equal(compute_score(dyn, method, T, 2, 0.9, chunk_size=37, progress=False), S)


@pytest.mark.parametrize('method,ref', [
    ('margin', ref_margin),
    ('least_confidence', ref_least_confidence),
])
def test_uncertainty_scores_from_the_command_line(tmp_path, method, ref):
    """importance_evaluation.py --method M writes the M_ep<T> files from logits; the contrib layout, which
    does not record its feature, is refused in one line."""
    Z, y = make_logits(14, 4, 120, 5)
    logits = write_published(tmp_path / 'run' / 'npy', Z, y)
    cli('importance_evaluation.py', '--dynamics_path', logits, '--method', method, '--trajectory_len', '4',
        '--mask_path', str(tmp_path / 'masks'), '--no_plot')
    mask = np.load(tmp_path / 'masks' / f'data_mask_{method}_ep4.npy')
    score = np.load(tmp_path / 'masks' / f'dataset_score_{method}_ep4.npy')
    np.testing.assert_allclose(score, ref(Z, 4), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mask, stable_argsort(score))
    contrib = write_contrib(tmp_path / 'contrib', Z, y)
    p = cli('importance_evaluation.py', '--dynamics_path', contrib, '--method', method,
            '--trajectory_len', '4', '--mask_path', str(tmp_path / 'masks2'), check=False)
    assert_user_error(p, f'--method {method} reads each epoch', '--dynamics_format logits')
    assert not os.path.exists(tmp_path / 'masks2')


def test_random_is_the_seeded_uniform(tmp_path):
    Z, _ = make_logits(10, 3, 120, 3)
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z), 3)
    np.testing.assert_array_equal(compute_score(dyn, 'random', 3, 2, 0.9, seed=7),
                                  np.random.default_rng(7).random(120).astype(np.float32))


# ---------------------------------------------------------------- features, names, errors
def test_epoch_features_against_reference():
    Z, y = make_logits(11, 2, 64, 5)
    f0, lp0 = epoch_features(torch.from_numpy(Z[0]), torch.from_numpy(y), None, FEATURES)
    assert 'contrib' not in f0 and set(f0) == set(FEATURES) - {'contrib'}
    f1, lp1 = epoch_features(torch.from_numpy(Z[1]), torch.from_numpy(y), lp0, FEATURES)
    p1 = softmax(Z[1])
    np.testing.assert_allclose(lp1.numpy(), np.log(p1 + 1e-8), rtol=1e-5, atol=1e-6)
    n = np.arange(64)
    ref = {'contrib': ref_contributions(Z[:2])[0],
           'el2n': np.linalg.norm(p1 - np.eye(5)[y], axis=1),
           'correct': (Z[1].argmax(1) == y).astype(float),
           'margin': -ref_aum(Z[1:], y, 1),
           'entropy': -(p1 * np.log(p1)).sum(1),
           'target_prob': p1[n, y]}
    for name in FEATURES:
        assert f1[name].dtype == torch.float32 and f1[name].shape == (64,)
        np.testing.assert_allclose(f1[name].numpy(), ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    f, _ = epoch_features(torch.from_numpy(Z[1]), None, lp0, ('contrib', 'entropy'))   # no labels
    assert set(f) == {'contrib', 'entropy'}
    with pytest.raises(ValueError):
        epoch_features(torch.from_numpy(Z[1]), None, None, ('el2n',))


def test_output_names():
    assert output_names('tdds', 30, 10) == {
        'mask': 'data_mask_win10_ep30.npy', 'score': 'score_win10_ep30.npy',
        'dataset_score': 'dataset_score_win10_ep30.npy', 'hist': 'score_hist_win10_ep30.png',
        'info': 'info_win10_ep30.json'}
    assert output_names('el2n', 20, 10)['mask'] == 'data_mask_el2n_ep20.npy'
    assert output_names('dyn_unc', 20, 10)['score'] == 'score_dyn_unc_ep20.npy'
    # several decays / window sizes in one call: every file name says which
    assert output_names('tdds', 30, 10, 0.8, name_decay=True)['mask'] == 'data_mask_win10_ep30_decay0.8.npy'
    assert output_names('dyn_unc', 20, 5, name_window=True)['score'] == 'score_dyn_unc_ep20_win5.npy'


def test_nan_logits_name_epoch_and_count(tmp_path):
    T = 5
    Z, _ = make_logits(12, T, 100, 4)
    Z[3, [5, 17], 1] = np.nan
    Z[3, 40, 0] = -np.inf
    Z[4, 9, 2] = np.inf
    dyn = Dynamics(write_published(tmp_path / 'dyn', Z), T)
    with pytest.raises(UserError, match=r'3_Output.npy: epoch 3 has NaN/inf logits for 3 samples \(and 1 more'):
        compute_score(dyn, 'tdds', T, 3, 0.9, chunk_size=30, progress=False)
