"""The files of a run folder: their names, the checkpoint (read back), the log, the training-set files."""
import os

from tqdm import tqdm

from utils.errors import UserError, WriteFailed, describe_oserror
from utils.protocol import fence
from utils.protocol.files import save_npy

CHECKPOINT, BEST, STATE = "checkpoint.pth.tar", "model_best.pth.tar", "folder.json"
# what a previous run leaves in its folder (besides npy/ and the logs); the lock files are not one of them
RUN_FILES = (CHECKPOINT, BEST, "metrics.json", "subset_indices.npy", "train_indices.npy", "train_labels.npy",
             "label_noise_mask.npy", "corrupted_mask.npy", "curve.png", STATE, "args.json")



# ------------------------------------------------------------------ a run folder's checkpoint and log
def load_checkpoint(path):
    """The dict a training script saved; anything else (a folder, an empty, truncated or foreign file) is
    one line. Loaded with weights_only: a checkpoint of ours holds tensors and plain values only."""
    import pickle

    import torch
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder: give the file, e.g. {os.path.join(path, CHECKPOINT)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        why = ("it is empty" if size == 0 else "it is truncated" if isinstance(e, EOFError) else
               "not a PyTorch checkpoint of tensors and plain values" if isinstance(e, pickle.UnpicklingError)
               else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise UserError(f"cannot read checkpoint {path}: not a complete checkpoint written by train.py or "
                        f"train_subset.py ({why})") from None


class Log:
    """Prints (main process only) and appends to SAVE_PATH/log_seed_<seed>.txt (the published name).
    Each line is fenced like every write into a held folder (utils/protocol/fence.py): a run that lost
    its folder appends nothing more; a failed write or flush (a full disk) names the log."""

    def __init__(self, save_path, seed, append, main):
        self.file = None
        self.path = os.path.join(save_path, f"log_seed_{seed}.txt")
        if main:
            fence.guard(self.path)
            try:
                self.file = open(self.path, "a" if append else "w")
            except OSError as e:
                raise WriteFailed(self.path, describe_oserror(e), e.errno) from None

    def __call__(self, msg, echo=True):
        if self.file is None:
            return
        if echo:
            tqdm.write(msg)
        fence.guard(self.path)
        try:
            self.file.write(msg + "\n")
            self.file.flush()
        except OSError as e:
            raise WriteFailed(self.path, describe_oserror(e), e.errno) from None


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
