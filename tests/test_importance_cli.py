"""importance_evaluation.py as a user runs it: the files it writes, and one clear error line (exit 2,
nothing written) for every kind of bad input (conftest.cli: its main in this process, ending as the
command would; one case also as a separate process)."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import assert_user_error, cli, run_script, write_published

N, C, T = 40, 5, 6


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    """The published shuffled layout (a new visiting order every epoch) plus targets.npy."""
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((T, N, C)).astype(np.float32)
    return write_published(str(tmp_path_factory.mktemp('dyn') / 'npy'), Z, rng.integers(0, C, N), seed=1)


def command(dyn, out, *extra):
    return ('importance_evaluation.py', '--dynamics_path', dyn, '--mask_path', out,
            '--trajectory_len', str(T), '--window_size', '3', '--no_plot', *extra)


def check_outputs(dyn, out, method, tag, seed=42, plot=False):
    """The files in `out` hold the score of compute_score (dataset order), its argsort and the sorted score."""
    from utils.science.scores import Dynamics, compute_score
    files = {f'data_mask_{tag}.npy', f'score_{tag}.npy', f'dataset_score_{tag}.npy', f'info_{tag}.json'}
    info = json.load(open(os.path.join(out, f'info_{tag}.json')))
    assert info['method'] == method and info['tag'] == tag and info['trajectory_len'] == T
    assert info['num_samples'] == N and os.path.isabs(info['dynamics_path']) and info['seconds'] > 0
    if plot:
        files.add(f'score_hist_{tag}.png')
        assert open(os.path.join(out, f'score_hist_{tag}.png'), 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert {f for f in os.listdir(out) if f != ".lock"} == files   # .lock: the folder's writer lock
    mask = np.load(os.path.join(out, f'data_mask_{tag}.npy'))
    score = np.load(os.path.join(out, f'score_{tag}.npy'))
    dataset_score = np.load(os.path.join(out, f'dataset_score_{tag}.npy'))
    assert mask.dtype == np.int64 and score.dtype == np.float32 and dataset_score.dtype == np.float32
    expected = compute_score(Dynamics(dyn, T), method, T, 3, 0.9, seed=seed, progress=False)
    np.testing.assert_array_equal(dataset_score, expected)
    np.testing.assert_array_equal(mask, np.argsort(expected, kind='stable'))
    np.testing.assert_array_equal(score, expected[mask])
    assert np.all(np.diff(score) >= 0)
    return files


def test_outputs(base, tmp_path):
    out = tmp_path / 'masks' / 'deeper'   # created, parents included; trailing slashes accepted
    tdds = command(base + '/', f'{out}/')[:-1]   # with the histogram
    rand = command(base, str(tmp_path / 'r'), '--method', 'random', '--manualSeed', '3')
    p = cli(*tdds)
    cli(*rand)
    for f in check_outputs(base, str(out), 'tdds', 'win3_ep6', plot=True):   # one summary line per file
        assert f'wrote {out}/{f}' in p.stdout, (f, p.stdout)
    assert 'done in' in p.stdout and p.stderr == ''
    check_outputs(base, str(tmp_path / 'r'), 'random', 'random_ep6', seed=3)
    np.testing.assert_array_equal(np.load(tmp_path / 'r' / 'dataset_score_random_ep6.npy'),
                                  np.random.default_rng(3).random(N).astype(np.float32))


def test_labels_from_the_data_set(base, tmp_path, monkeypatch, capsys):
    """--data_path/--dataset (published dynamics carry no targets.npy): labels via utils.training.data.load_targets."""
    import importance_evaluation
    import utils.training.data
    dyn = str(tmp_path / 'published')
    shutil.copytree(base, dyn)
    y = np.load(os.path.join(dyn, 'targets.npy'))
    os.remove(os.path.join(dyn, 'targets.npy'))
    calls = []
    monkeypatch.setattr(utils.training.data, 'load_targets', lambda path, name: calls.append((path, name)) or y)
    for method in ('aum', 'el2n'):
        importance_evaluation.main(list(command(dyn, str(tmp_path / method), '--method', method, '--data_path',
                                                'D', '--dataset', 'cifar10', '--device', 'cpu')[1:]))
        check_outputs(base, str(tmp_path / method), method, f'{method}_ep6')   # same as with targets.npy
    assert calls == [('D', 'cifar10')] * 2
    assert 'wrote' in capsys.readouterr().out


def _save(path, array):
    np.save(path, array)


def _truncate(path):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) - 17])


def _nonfinite(folder):
    z = np.load(os.path.join(folder, '2_Output.npy'))
    z[[3, 8], 1] = np.nan
    z[11, 0] = np.inf
    np.save(os.path.join(folder, '2_Output.npy'), z)


# name: (how to break a copy of the folder, extra flags, fragments the error line must contain)
BAD = {
    'no folder': (lambda d: shutil.rmtree(d), (), ['does not exist']),
    'no epoch files': (lambda d: [os.remove(os.path.join(d, f)) for f in os.listdir(d)], (), ['no epoch files']),
    'missing epoch file': (lambda d: os.remove(os.path.join(d, '3_Output.npy')), (), ['3_Output.npy']),
    'too few epochs': (None, ('--trajectory_len', '8'),
                       ['found 6 recorded epochs (0..5)', '--trajectory_len 8 needs 8']),
    'window too small': (None, ('--window_size', '1'), ['--window_size 1']),
    'window too large': (None, ('--window_size', '7'), ['--window_size 7']),
    'window 2 for tdds': (None, ('--window_size', '2'), ['--window_size 2', 'all scores']),
    'no valid combination': (None, ('--window_size', '2', '9'), ['--window_size 2']),
    'decay zero': (None, ('--decay', '0'), ['--decay 0']),
    'decay above one': (None, ('--decay', '1.5'), ['--decay 1.5']),
    'other N': (lambda d: (_save(os.path.join(d, '4_Output.npy'), np.zeros((N - 1, C), np.float32)),
                           _save(os.path.join(d, '4_Index.npy'), np.arange(N - 1))), (), ['4_Output.npy']),
    'other C': (lambda d: _save(os.path.join(d, '1_Output.npy'), np.zeros((N, C + 1), np.float32)), (),
                ['1_Output.npy', f'{(N, C)}']),
    'index not a permutation': (lambda d: _save(os.path.join(d, '2_Index.npy'), np.r_[0, np.arange(N - 1)]), (),
                                ['2_Index.npy', 'not a permutation']),
    'nan logits': (_nonfinite, (), ['2_Output.npy', 'epoch 2', '3 samples']),
    'truncated npy': (lambda d: _truncate(os.path.join(d, '5_Output.npy')), (), ['5_Output.npy']),
    'corrupt npy': (lambda d: open(os.path.join(d, '0_Index.npy'), 'wb').write(b'not numpy'), (),
                    ['0_Index.npy']),
    'no labels': (lambda d: os.remove(os.path.join(d, 'targets.npy')), ('--method', 'forgetting'),
                  ['--method forgetting needs labels', 'no targets.npy', '--data_path and --dataset']),
    'targets wrong length': (lambda d: _save(os.path.join(d, 'targets.npy'), np.zeros(N + 1, np.int64)),
                             ('--method', 'el2n'), ['targets.npy', f'{N + 1} labels']),
    'unknown method': (None, ('--method', 'el3n'), ["--method: invalid choice: 'el3n'"]),
    'data_path alone': (None, ('--method', 'el2n', '--data_path', 'x'), ['--data_path and --dataset']),
}


def test_bad_input(base, tmp_path):
    jobs = {}
    for name, (breaks, extra, fragments) in BAD.items():
        dyn = str(tmp_path / name.replace(' ', '_') / 'npy')
        shutil.copytree(base, dyn)
        if breaks:
            breaks(dyn)
        out = str(tmp_path / name.replace(' ', '_') / 'masks')
        jobs[name] = command(dyn, out, *extra)
    for name, argv in jobs.items():
        p = cli(*argv, check=False)
        try:
            assert_user_error(p, *BAD[name][2])
        except AssertionError as e:
            raise AssertionError(f'{name}: {e}') from None
        out = argv[argv.index('--mask_path') + 1]
        assert not os.path.exists(out), name   # not even an empty folder
    # the same ending from a separate process: exit status 2, one line on stderr
    argv = jobs['nan logits']
    assert_user_error(run_script(*argv, check=False), *BAD['nan logits'][2])
    assert not os.path.exists(argv[argv.index('--mask_path') + 1])


def test_same_command_rewrites_nothing_and_repairs_a_changed_file(base, tmp_path):
    """A second call with the same settings and inputs finds the scoring done (nothing rewritten);
    an output changed behind info_<tag>.json's sha256 is found and written again."""
    from conftest import folder_digest
    out = str(tmp_path / 'masks')
    cli(*command(base, out))
    digest = folder_digest(out)
    p = cli(*command(base, out))
    assert 'already scored' in p.out and folder_digest(out) == digest
    score = os.path.join(out, 'score_win3_ep6.npy')
    np.save(score, np.load(score)[::-1].copy())            # the same shape and dtype, other bytes
    p = cli(*command(base, out))
    assert 'already scored' not in p.out
    arrays = lambda d: {f: h for f, h in d.items() if f.endswith('.npy')}   # info_<tag>.json: a new `seconds`
    assert arrays(folder_digest(out)) == arrays(digest) and len(arrays(digest)) == 3
