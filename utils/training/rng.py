"""The random streams of a training run, and their states in a checkpoint.

Every stream is named and seeded from the run seed (--manualSeed) through numpy's SeedSequence: the
data order (shared by all ranks), the augmentation (per rank), torch's global stream (per rank; model
initialisation and ImageFolder transforms with --workers 0 draw from it) and dynamic pruning's.
`rng_state` / `set_rng_state` gather and restore all of them, so a resumed run draws exactly what the
uninterrupted one would have.
"""
import random

import numpy as np
import torch

from utils import dist
from utils.errors import UserError

ORDER, AUGMENT, GLOBAL, DYNAMIC = 0, 1, 2, 3   # spawn keys: data order, crops/flips, torch's global, dynamic pruning


def stream_seed(seed, *key):
    """A 64-bit seed for the named random stream `key` of run seed `seed`: numpy's SeedSequence
    spawning, so streams are independent of each other and of every other seed's streams (a plain
    seed + k would make run s's augmentation stream run s+k's initialisation stream)."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


def seed_everything(seed):
    """Seed python, numpy and torch's global stream (model initialisation uses the latter)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(order_gen, aug_gen, epoch_start=None):
    """Every random generator's state, gathered from all ranks (a collective: call on every rank).
    In the middle of an epoch, `epoch_start` = (order, augmentation) states at the start of that
    epoch: the order stream's, from which the epoch's batches are drawn again on resume (so "order"
    always means the stream at the start of the checkpoint's epoch), and the augmentation stream's,
    for data sets that draw from it once per epoch (ImageFolder: its DataLoader's worker seeds)."""
    np_state = np.random.get_state()
    local = {"augment": aug_gen.get_state(), "torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state() if aug_gen.device.type == "cuda" else None}
    if epoch_start is not None:
        local["augment_epoch_start"] = epoch_start[1]
    return {"order": order_gen.get_state() if epoch_start is None else epoch_start[0], "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "ranks": dist.all_gather_objects(local)}


def set_rng_state(state, order_gen, aug_gen, per_batch=True):
    """Restore every stream. In the middle of an epoch, `per_batch`: the data draw augmentation batch by
    batch (in-memory data: restore the stream at the step) or once per epoch (ImageFolder: restore it at
    the epoch start, so that the epochs after this one draw exactly what they would have)."""
    if len(state["ranks"]) != dist.world_size():
        raise UserError(f"the checkpoint was written by {len(state['ranks'])} processes; resume it with "
                        f"the same number (now {dist.world_size()})")
    order_gen.set_state(state["order"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    local = state["ranks"][dist.rank()]
    aug_gen.set_state(local["augment"] if per_batch else local.get("augment_epoch_start", local["augment"]))
    torch.set_rng_state(local["torch"])
    if local["cuda"] is not None and aug_gen.device.type == "cuda":
        torch.cuda.set_rng_state(local["cuda"])
