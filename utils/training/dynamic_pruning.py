"""Dynamic pruning: which samples each epoch of train.py trains on, and with what loss weight
(train.py --dynamic infobatch|rs2; docs/METHODS.md, "Dynamic pruning").

- InfoBatch: a sample's score is its most recent unweighted training loss (3 before its first
  visit). Epoch e of E is pruned while e + 1 <= delta * E: of the well-learned samples W (score below
  the mean score) floor(k |W|) are kept at loss weight 1/k, k = clip(1 - ratio, 0.1, 1), every other
  sample at weight 1. The other epochs train on all samples at weight 1. The learning rate follows
  epoch progress (EpochCosine), since the epochs differ in length.
- RS2 without replacement: epoch e trains on positions e*n .. (e+1)*n - 1 of a stream of passes
  over 0..N-1 in random orders, n = N - int(ratio * N): every sample once before any twice, never
  twice in one epoch; weight 1.

Each epoch's selection (indices, weights) is a pure function of (run seed, epoch, scores so far):
its random draws come from their own named stream (stream_seed(seed, DYNAMIC, ...)), never from a
global generator, so a resumed run and every rank of a torchrun select exactly alike. The training
loop (utils/training/loop.py fit) calls, per epoch: `begin_epoch(e)` (the indices; `weights` then holds the
per-sample loss weights, None = all 1), `observe(idx, losses)` after every step, and `sync()` at the
end (a collective). `state_dict()` / `load_state_dict()` carry it through checkpoints.

Records, per epoch e, in SAVE_PATH/selection/: <e>_Index.npy (M,) int64 the dataset indices trained
(InfoBatch: ascending; RS2: in stream order), <e>_Weight.npy (M,) float32 their loss weights, and for
InfoBatch <e>_Score.npy (N,) float32 the scores from which epoch e was selected.
"""
import math
import os
import re

import torch

from utils import dist
from utils.methods import DYNAMIC_METHODS
from utils.protocol.files import remove_file, save_npy
from utils.science.selection import kept_count
from utils.training.rng import DYNAMIC, stream_seed

METHODS = tuple(DYNAMIC_METHODS)   # train.py --dynamic (declared in utils/methods.py)
INITIAL_SCORE = 3.0   # InfoBatch's score of a sample not yet trained: every sample is kept in epoch 0
RECORD = re.compile(r"^\d+_(Index|Weight|Score)\.npy$")


# --------------------------------------------------------------------------------------------------
# The selections, as pure functions
# --------------------------------------------------------------------------------------------------
def keep_fraction(ratio):
    """InfoBatch's k: the fraction of the well-learned samples kept, 1 - ratio floored at 0.1."""
    return min(1.0, max(0.1, 1.0 - ratio))


def is_pruned(epoch, epochs, delta):
    """InfoBatch prunes epoch `epoch` (0-based) of `epochs` iff epoch + 1 <= delta * epochs."""
    return epoch + 1 <= delta * epochs


def infobatch_select(scores, epoch, epochs, ratio, delta, seed):
    """(indices (M,) int64 ascending, weights (M,) float32) of epoch `epoch` from the scores (N,)."""
    scores = torch.as_tensor(scores, dtype=torch.float32).cpu()
    n = len(scores)
    if not is_pruned(epoch, epochs, delta):
        return torch.arange(n), torch.ones(n)
    well = scores.double() < scores.double().mean()            # (N,) the well-learned set W
    learned = well.nonzero().squeeze(1)
    k = keep_fraction(ratio)
    g = torch.Generator().manual_seed(stream_seed(seed, DYNAMIC, epoch))
    chosen = learned[torch.randperm(len(learned), generator=g)[:int(k * len(learned))]]
    keep, weights = ~well, torch.ones(n)
    keep[chosen] = True
    weights[chosen] = 1.0 / k
    indices = keep.nonzero().squeeze(1)
    return indices, weights[indices]


def rs2_permutation(n, p, seed):
    """The random permutation of 0..n-1 drawn for pass p of RS2's stream."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, DYNAMIC, p)))


def rs2_order(n, per_epoch, p, seed, cache=None):
    """The order in which pass p visits 0..n-1: its permutation, except where an epoch ends pass p-1
    and begins pass p. That epoch takes from pass p the first samples it does not hold already (so no
    epoch holds a sample twice); the ones skipped keep their order after them. `cache` {pass: order}
    keeps the last orders computed (pass p's depends on pass p-1's)."""
    cache = {} if cache is None else cache
    q = max((k for k in cache if k <= p), default=None)
    q, order = (0, rs2_permutation(n, 0, seed)) if q is None else (q, cache[q])
    while q < p:
        q += 1
        order, before = rs2_permutation(n, q, seed), order
        carried = (q * n) % per_epoch        # samples of pass q-1 in the epoch that begins pass q
        if carried:
            fresh = (~torch.isin(order, before[n - carried:])).nonzero().squeeze(1)[:per_epoch - carried]
            first = torch.zeros(n, dtype=torch.bool)
            first[fresh] = True
            order = torch.cat([order[first], order[~first]])
    for k in [k for k in cache if k < p - 1]:
        del cache[k]
    cache[p] = order
    return order


def rs2_select(n, per_epoch, epoch, seed, cache=None):
    """(M,) int64: positions epoch*per_epoch .. (epoch+1)*per_epoch - 1 of the stream of passes
    (an epoch that crosses the end of one pass continues into the next)."""
    parts, pos, end = [], epoch * per_epoch, (epoch + 1) * per_epoch
    while pos < end:
        p, offset = divmod(pos, n)
        take = min(end - pos, n - offset)
        parts.append(rs2_order(n, per_epoch, p, seed, cache)[offset:offset + take])
        pos += take
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------
# The learning-rate schedule of epochs of varying length
# --------------------------------------------------------------------------------------------------
class EpochCosine(torch.optim.lr_scheduler.LRScheduler):
    """Cosine annealing to 0 over `epochs` epochs by epoch progress: at step j of the n steps of
    epoch e the learning rate is base * (1 + cos(pi * (e + j / n) / epochs)) / 2, whatever the
    epochs' lengths. The training loop calls begin_epoch(e, n) before the epoch's first step."""

    def __init__(self, optimizer, epochs):
        self.epochs, self.epoch, self.epoch_steps, self.first_step = epochs, 0, 1, 0
        super().__init__(optimizer)

    def begin_epoch(self, epoch, steps, done=0):
        """Epoch `epoch` has `steps` optimizer steps, `done` of which were taken already (a resume)."""
        self.epoch, self.epoch_steps, self.first_step = epoch, max(1, steps), self.last_epoch - done

    def get_lr(self):
        t = (self.epoch + (self.last_epoch - self.first_step) / self.epoch_steps) / self.epochs
        return [base * (1 + math.cos(math.pi * t)) / 2 for base in self.base_lrs]


# --------------------------------------------------------------------------------------------------
# The sampler the training loop holds
# --------------------------------------------------------------------------------------------------
class DynamicSampler:
    """The selection state of one run: InfoBatch's scores (N,) on the training device, the epoch in
    progress and its selection. `folder` (main process): where the records go; `fresh`: a new run,
    whose folder's records of an earlier run are removed first."""

    def __init__(self, method, n, epochs, ratio, delta, seed, device, folder=None, fresh=True, log=None):
        self.method, self.n, self.epochs, self.ratio, self.delta, self.seed = method, n, epochs, ratio, delta, seed
        self.folder, self.log = folder, log
        self.scores = self.seen = None
        if method == "infobatch":
            self.scores = torch.full((n,), INITIAL_SCORE, device=device)   # (N,) last unweighted loss
            self.seen = torch.zeros(n, dtype=torch.bool, device=device)    # (N,) visited by this rank since sync
        self.weights = None            # (N,) loss weight of each sample this epoch; None = all 1
        self.epoch_size = None if method == "infobatch" else kept_count(n, ratio)   # None: varies by epoch
        self.selection = None          # (epoch, indices, weights) of the epoch in progress
        self._orders = {}              # RS2: the last passes' orders (recomputed from the seed on resume)
        if folder is not None and dist.is_main_process():
            os.makedirs(folder, exist_ok=True)
            for f in os.listdir(folder) if fresh else ():
                if RECORD.match(f):
                    remove_file(os.path.join(folder, f))   # fenced: only while this run owns the folder

    def scheduler(self, optimizer):
        """InfoBatch's learning rate by epoch progress; None: the loop's cosine over its steps (RS2)."""
        return EpochCosine(optimizer, self.epochs) if self.method == "infobatch" else None

    def begin_epoch(self, epoch):
        """The (M,) dataset indices epoch `epoch` trains on; sets `weights`, writes the records. A run
        resumed in the middle of the epoch gets the checkpoint's selection (and writes nothing)."""
        if self.selection is None or self.selection[0] != epoch:
            if self.method == "infobatch":
                scores = self.scores.cpu()
                indices, weights = infobatch_select(scores, epoch, self.epochs, self.ratio, self.delta, self.seed)
                records = {"Score": scores.numpy()}
            else:
                indices = rs2_select(self.n, self.epoch_size, epoch, self.seed, self._orders)
                weights, records = torch.ones(len(indices)), {}
            self.selection = (epoch, indices, weights)
            if self.folder is not None and dist.is_main_process():
                for tag, arr in {"Index": indices.numpy(), "Weight": weights.numpy(), **records}.items():
                    save_npy(os.path.join(self.folder, f"{epoch}_{tag}.npy"), arr)
            if self.log is not None:
                pruned = self.method == "rs2" or is_pruned(epoch, self.epochs, self.delta)
                self.log(f"  {self.method} epoch {epoch}: {len(indices)} of {self.n} samples"
                         f"{'' if pruned else ' (not pruned)'}", echo=False)
        _, indices, weights = self.selection
        if self.method == "infobatch":
            self.weights = torch.ones(self.n, device=self.scores.device)
            self.weights[indices.to(self.scores.device)] = weights.to(self.scores.device)
        return indices

    @torch.no_grad()
    def observe(self, idx, losses):
        """This rank's batch: dataset indices idx (B,) and their unweighted per-sample losses (B,)."""
        if self.scores is not None:
            self.scores[idx] = losses.detach().float()
            self.seen[idx] = True

    @torch.no_grad()
    def sync(self):
        """Merge the scores the ranks updated since the last sync (they visited disjoint samples), so
        that every rank holds every sample's latest loss. A collective: every rank calls it."""
        if self.scores is None or not dist.is_distributed():
            return
        seen = dist.all_reduce_sum(self.seen.to(torch.int32)) > 0
        mine = torch.where(self.seen, self.scores, torch.zeros_like(self.scores))
        self.scores = torch.where(seen, dist.all_reduce_sum(mine), self.scores)
        self.seen.zero_()

    def state_dict(self):
        """What a checkpoint needs (a collective: it syncs the scores first). The selection of the
        epoch in progress is kept so that a resume in its middle trains exactly its remaining batches."""
        self.sync()
        epoch, indices, weights = self.selection if self.selection is not None else (-1, None, None)
        return {"method": self.method, "epoch": epoch, "indices": indices, "weights": weights,
                "scores": None if self.scores is None else self.scores.cpu()}

    def load_state_dict(self, state):
        if state["indices"] is not None:
            self.selection = (state["epoch"], state["indices"], state["weights"])
        if self.scores is not None:
            self.scores.copy_(state["scores"])
