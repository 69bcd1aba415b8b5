"""The penultimate-layer features of every training image under a checkpoint of train.py: one forward
pass of the training set as that run trained on it (label noise, corruption), in eval mode, without
augmentation (ImageFolder: the evaluation transform). Used by Moderate and by score extrapolation."""
import os
from types import SimpleNamespace

import torch

from utils.errors import UserError
from utils.protocol.outputs import load_checkpoint
from utils.training.data import make_batches

# what a checkpoint's args may lack (runs of older versions) for the data set to be rebuilt
RUN_DEFAULTS = {"label_noise": 0.0, "corrupt_ratio": 0.0, "workers": 2, "image_size": 224}


def read_checkpoint(path, what="--checkpoint"):
    """The checkpoint dict of train.py at `path` (with 'model' and 'args'), or one line saying why not."""
    if not os.path.exists(path):   # a folder: load_checkpoint says which file to give
        raise UserError(f"{what} {path}: no such file")
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or "model" not in ck or "args" not in ck:
        hint = (f"; {os.path.basename(path)} holds the weights only: give checkpoint.pth.tar of the same run"
                if isinstance(ck, dict) and "model" in ck else "")
        raise UserError(f"{what} {path} is not a checkpoint of train.py (no 'model' and 'args'){hint}")
    return ck


def run_settings(ck, path, data_path=None, dataset=None, what="--checkpoint"):
    """The checkpoint's run settings (a dict of its args), with `data_path` replacing the recorded one
    when given; a recorded relative path is found from the folder that run was started in."""
    from utils.training.data import recorded_data_path
    run = dict(ck["args"])
    if dataset is not None and dataset != run.get("dataset"):
        raise UserError(f"{what} {path} was trained on {run.get('dataset')}, not --dataset {dataset}")
    if data_path is not None:
        run["data_path"] = data_path
    elif run.get("data_path"):
        run["data_path"] = recorded_data_path(run.get("dataset"), run["data_path"], os.path.dirname(os.path.abspath(path)))
    return run


def checkpoint_features(ck, run, device):
    """(features (N, D) float32 in dataset order, data): the input of the final nn.Linear of the
    checkpoint's model for every training image of its run (`run`: run_settings(ck, ...))."""
    from models import create_model
    from utils.training.data import FolderImages, load_data
    ns = SimpleNamespace(**{**RUN_DEFAULTS, **run})
    data = load_data(ns, torch.device(device))          # the training set as trained (noise, corruption)
    model = create_model(ns.arch, data.num_classes).to(device)
    model.load_state_dict(ck["model"])
    images = data.train
    if isinstance(images, FolderImages):               # the evaluation transform: no random crop
        images = FolderImages(images.dataset.folder, False, ns.image_size, torch.device(device), ns.workers)
        images.set_labels(data.targets)
    else:
        images.augment = False
    return penultimate_features(model, images, data.n_train), data


def final_linear(model):
    """The last nn.Linear of `model` (its input is the penultimate feature)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear: no penultimate features to take")
    return layers[-1]


@torch.no_grad()
def penultimate_features(model, images, n, batch_size=500):
    """(N, D) float32 features of training images 0..n-1 from `images.batches(...)` (an object of
    utils.training.data with augmentation off), the model in eval mode."""
    model.eval()
    feats = {}
    hook = final_linear(model).register_forward_hook(lambda m, inp, out: feats.__setitem__("x", inp[0]))
    out = None
    try:
        for x, _, idx in images.batches(make_batches(torch.arange(n), batch_size)):
            model(x)
            f = feats["x"].float().flatten(1)                            # (B, D)
            if out is None:
                out = torch.empty(n, f.shape[1])
            out[idx.cpu()] = f.cpu()
    finally:
        hook.remove()
    return out.numpy()
