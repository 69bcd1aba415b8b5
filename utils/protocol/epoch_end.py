"""The files a training run writes while it trains, in the write protocol's order (the training loop,
utils/training/loop.py, decides when; this module decides what and in which order).

- In the middle of an epoch (--save_every_steps, a signal): checkpoint.pth.tar alone (`save_checkpoint`).
- At an epoch end, one call (`commit_epoch`, run by the training's background writer): checkpoint.pth.tar
  first, then what it vouches for: model_best.pth.tar (when the epoch is the best evaluated one so far),
  metrics.json, folder.json's completed_epochs (so that folder.json and metrics.json agree on the epochs
  done whenever the run is interrupted), and curve.png (when it is drawn at this epoch).
- At the start of a resumed run: folder.json's completed_epochs, the checkpoint's (`record_completed`).
- At the end of the run: metrics.json with the run's last word (`save_metrics`).

Each file is replaced atomically (utils/protocol/files.py): an interruption leaves the previous epoch's
version or this one's, never half of one. Only rank 0 calls these.
"""
import os

from utils.protocol.files import save_json, save_torch
from utils.protocol.outputs import BEST, CHECKPOINT
from utils.protocol.run import write_state

METRICS, CURVE = "metrics.json", "curve.png"


def save_checkpoint(save_path, state):
    """checkpoint.pth.tar in the middle of an epoch: the state dict `state`, written now."""
    save_torch(os.path.join(save_path, CHECKPOINT), state)


def save_metrics(save_path, metrics):
    """metrics.json, and folder.json's completed_epochs, which says the same (metrics["completed_epochs"])."""
    save_json(os.path.join(save_path, METRICS), metrics)
    record_completed(save_path, metrics["completed_epochs"])


def record_completed(save_path, epochs):
    """folder.json's completed_epochs: the epochs that the folder's checkpoint holds (a resumed run says
    so at its start, before its next epoch end)."""
    write_state(save_path, completed_epochs=epochs)


def commit_epoch(save_path, checkpoint, metrics, best=None, plot=None):
    """An epoch end's files, in order. `checkpoint`: a function returning the checkpoint's state dict
    (the training's host copy, completed in the calling thread); `metrics`: metrics.json's dict, its
    "history" the rows so far; `best`: {"epoch": e + 1, "arch": ...} when this epoch is the best evaluated
    one so far (model_best.pth.tar then holds its weights and best_acc), else None; `plot`: None, or
    (draw, title) to draw curve.png with draw(history, path, title=title)."""
    state = checkpoint()
    save_torch(os.path.join(save_path, CHECKPOINT), state)
    if best is not None:
        save_torch(os.path.join(save_path, BEST), {"model": state["model"], "epoch": best["epoch"],
                                                   "best_acc": state["best_acc"], "arch": best["arch"]})
    save_metrics(save_path, metrics)
    if plot is not None:
        draw, title = plot
        draw(metrics["history"], os.path.join(save_path, CURVE), title=title)
