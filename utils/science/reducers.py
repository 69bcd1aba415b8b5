"""How a score turns the per-epoch values of a chunk of samples into one number per sample.

A score of utils/methods.py names its reducer; each is one function below, decorated with @reducer:
f(x, T, K, decay) -> (B,) float32 from x (epochs, B) float32, the score's per-epoch feature of B
samples: epochs 0..T-1 (TDDS: its T-1 contributions c_0..c_{T-2}; a reducer of LAST_EPOCH_ONLY:
epoch T-1 alone, as (1, B)). K and decay are None where the score takes none. Sums over epochs are
plain elementwise adds (_sum0), so a sample gets the same bits whatever chunk it is in.
"""
import torch

REDUCERS = {}   # name -> f(x, T, K, decay)
LAST_EPOCH_ONLY = ('last',)   # reducers that read epoch T-1 only: the scorer reads no other epoch


def reducer(f):
    """Declare f as the reducer of its name."""
    REDUCERS[f.__name__] = f
    return f


def _sum0(x):
    """Sum over dim 0 by plain elementwise adds, so a sample gets the same bits whatever chunk it
    is in (torch's vectorized column sums round the last, partial SIMD block differently)."""
    acc = x[0].clone()
    for row in x[1:]:
        acc += row
    return acc


@reducer
def mean(x, T, K, decay):
    """The mean over epochs 0..T-1."""
    return _sum0(x) / T


@reducer
def neg_mean(x, T, K, decay):
    """Minus the mean over epochs 0..T-1: a small value ranks high (is kept)."""
    return -_sum0(x) / T


@reducer
def last(x, T, K, decay):
    """The value at epoch T-1 alone."""
    return x[0]


@reducer
def tdds(x, T, K, decay):
    """TDDS from its contributions x = c_0..c_{T-2}: per window of K epochs the root of the summed
    squared deviations of its K-1 contributions from their mean, exponentially weighted (float64 sum)."""
    S = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for k in range(T - K + 1):
        win = x[k:k + K - 1]                                   # (K-1, B) c_k..c_{k+K-2}
        s = _sum0((win - _sum0(win) / (K - 1)).square_()).sqrt_()   # root of summed squares (as published)
        S += s.double() * (decay * (1 - decay) ** (T - K - k))
    return S.float()


@reducer
def forgetting(x, T, K, decay):
    """Forgetting events from correctness x (0/1): correct at e-1, wrong at e; never learned: T."""
    ok = x > 0.5
    forgot = (ok[:-1] & ~ok[1:]).sum(0).float()
    return torch.where(ok.any(0), forgot, torch.full_like(forgot, T))   # never learned: T


@reducer
def window_std(x, T, K, decay):
    """The mean over windows of K epochs of the population std of x (dyn_unc's p_y)."""
    std = 0
    for k in range(T - K + 1):
        win = x[k:k + K]                                       # (K, B) p_y at e = k..k+K-1
        std += (_sum0((win - _sum0(win) / K).square_()) / K).sqrt_()   # population std
    return std / (T - K + 1)


@reducer
def dual(x, T, K, decay):
    """DUAL (Cho et al. 2025) from p_y: the mean over windows of 10 * std_ddof1 * (1 - mean), in float64."""
    acc = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for k in range(T - K + 1):
        win = x[k:k + K].double()                              # (K, B) p_y at e = k..k+K-1
        m = _sum0(win) / K
        std = (_sum0((win - m).square_()) / (K - 1)).sqrt_()   # sample std (ddof 1), as published
        acc += 10 * std * (1 - m)                              # the product inside each window
    return (acc / (T - K + 1)).float()


def mean_p(x, T):
    """(B,) the mean of p_y over epochs 0..T-1 (mean_p_<tag>.npy of a score with mean_p)."""
    return _sum0(x[:T]) / T
