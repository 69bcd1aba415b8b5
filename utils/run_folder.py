"""Small steps of the two training scripts around their run folder: checks before any work, the
"already done" answer, the training-set files. The folder's identity, the protocol by which it is
written (lock, decision, commit), its checkpoint and log are utils/folder.py's."""
import os

from . import dist
from .errors import UserError
from .io import save_npy


def check_writable(path, flag):
    """Fail before any work if `path` could not be created or written; creates nothing."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable")


def already_done(args, metrics):
    """The same command on a run that is done: say so, write nothing."""
    if dist.is_main_process():
        what = ("finished" if metrics.get("finished") else
                f"stopped after epoch {metrics.get('completed_epochs')}, which holds the epochs asked")
        print(f"already {what}: {args.save_path} (final {metrics.get('final_acc')}%, best {metrics.get('best_acc')}%); "
              f"nothing rewritten")
    dist.cleanup()
    return metrics


def write_training_set_files(save_path, data):
    """What --label_noise / --corrupt_ratio did to the training set, (N,) each in dataset order:
    the labels trained on, which labels were flipped, which images were corrupted."""
    if data.flipped is not None:
        save_npy(os.path.join(save_path, "train_labels.npy"), data.targets)
        save_npy(os.path.join(save_path, "label_noise_mask.npy"), data.flipped)
    if data.corrupted is not None:
        save_npy(os.path.join(save_path, "corrupted_mask.npy"), data.corrupted)


def training_set_info(data):
    """metrics.json entries: how many training samples the robustness flags changed."""
    info = {}
    if data.flipped is not None:
        info["num_mislabeled"] = int(data.flipped.sum())
    if data.corrupted is not None:
        info["num_corrupted"] = int(data.corrupted.sum())
    return info
