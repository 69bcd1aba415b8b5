"""Data sets and batching.

CIFAR-10/100 and digits are small: their uint8 images live on the training device and are augmented
there in whole batches (random crop with 4-pixel zero padding + horizontal flip + normalisation, the
published transforms), so an epoch needs no DataLoader and no per-image PIL work. ImageFolder trees
(ImageNet-1K, Tiny-ImageNet, a user's own) are too large for that: they go through torchvision's
ImageFolder and a DataLoader with workers. Both yield (x, y, idx) batches, idx being the dataset index
that the dynamics recorder and the subset weights are keyed by.
"""
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F

from utils.args import DATASETS
from utils.errors import UserError

# Normalisation constants of the published scripts (mean/std of the training images, 0-255 scale).
CIFAR_STATS = {
    "cifar10": ([125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    "cifar100": ([129.3, 124.1, 112.4], [68.2, 65.4, 70.4]),
}
IMAGENET_STATS = ([0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255])

CIFAR_LAYOUT = {  # folder, training files, test files, label key, archive URL page
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


# --------------------------------------------------------------------------------------------------
# Readers: each returns numpy arrays, images uint8 (N, 3, H, W), labels int64 (N,)
# --------------------------------------------------------------------------------------------------
def _read_pickle(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UserError(f"{path} is not a readable CIFAR pickle ({e})") from None


def read_cifar(root, name, train):
    """Read the standard python-version layout; any number of rows, no checksum (small files work).
    Missing files are downloaded through torchvision, as the published scripts do (unless the
    environment sets TDDS_OFFLINE=1); without network the error says where to unpack the archive."""
    folder, train_files, test_files, label_key = CIFAR_LAYOUT[name]
    base = os.path.join(root, folder)
    files = [os.path.join(base, f) for f in (train_files if train else test_files)]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        _download_cifar(root, name, missing[0])
    images, labels = [], []
    for f in files:
        d = _read_pickle(f)
        if "data" not in d or label_key not in d:
            raise UserError(f"{f} lacks the keys 'data' and '{label_key}' of the {name} layout")
        images.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(d[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _download_cifar(root, name, missing):
    """torchvision's download into `root` (rank 0 only; the others wait), or one clear error."""
    from utils import dist
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    where = (f"{name} not found: {missing} is missing; download {archive} from {CIFAR_URL} and unpack it "
             f"into {root}")
    if os.environ.get("TDDS_OFFLINE") == "1":
        raise UserError(f"{where} (TDDS_OFFLINE=1: no download attempted)")
    error = None
    if dist.is_main_process():
        import torchvision
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        print(f"note: {name} not found in {root}: downloading it through torchvision")
        try:
            cls(root, train=True, download=True)
        except Exception as e:  # no network, disk full, ...
            error = " ".join(str(e).split())[:200] or type(e).__name__
    dist.barrier()
    if error is not None or not os.path.isfile(missing):
        raise UserError(f"{where} (the download failed: {error})")


def read_digits(train):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no network needed), upsampled
    to 32x32 RGB so that every CIFAR architecture and the CIFAR augmentation apply unchanged.
    Fixed split: 80% train / 20% test from a permutation with seed 0."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    x = (x * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).numpy()
    perm = np.random.RandomState(0).permutation(len(x))
    n_train = int(0.8 * len(x))
    sel = perm[:n_train] if train else perm[n_train:]
    return np.ascontiguousarray(x[sel]), d.target[sel].astype(np.int64)


def _image_folder(root, split):
    import torchvision
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise UserError(f"imagefolder: {path} not found; expected {root}/train/<class>/*.png|jpg and "
                        f"{root}/val/<class>/* (ImageNet: see docs/SCALE.md, 'ImageNet')")
    try:
        return torchvision.datasets.ImageFolder(path)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"imagefolder: {path}: {e}") from None


def load_targets(data_path, dataset):
    """(N,) int64 training labels in dataset order, for scoring dynamics that carry no targets.npy."""
    if dataset in CIFAR_LAYOUT:
        return read_cifar(data_path, dataset, train=True)[1]
    if dataset == "digits":
        return read_digits(train=True)[1]
    if dataset == "imagefolder":
        return np.asarray(_image_folder(data_path, "train").targets, dtype=np.int64)
    raise UserError(f"unknown --dataset {dataset!r}; choose from {', '.join(DATASETS)}")


# --------------------------------------------------------------------------------------------------
# Batching: the same for every data set; the rank's share of every global batch
# --------------------------------------------------------------------------------------------------
def make_batches(indices, batch_size, generator=None, rank=0, world=1):
    """Split `indices` (M,) into global batches of `batch_size` (shuffled with `generator`, in order
    when it is None) and return this rank's part of each: global batch b, items rank::world.
    Every rank gets the same number of batches (DDP needs that) and every index is visited exactly
    once per epoch across ranks. A last batch smaller than `world` is merged into the one before."""
    if batch_size < world:  # else some ranks would get empty batches (DDP would hang or fail)
        raise UserError(f"--batch-size {batch_size} is the global batch: it must be at least the number "
                        f"of processes ({world})")
    indices = torch.as_tensor(indices, dtype=torch.int64)
    if generator is not None:
        indices = indices[torch.randperm(len(indices), generator=generator)]
    batches = list(torch.split(indices, batch_size))
    if len(batches) > 1 and len(batches[-1]) < world:
        batches[-2:] = [torch.cat(batches[-2:])]
    return [b[rank::world] for b in batches]


class DeviceImages:
    """uint8 images resident on `device`; batches are cropped/flipped/normalised there."""

    def __init__(self, images, labels, stats, device, augment, flip=True, pad=4, channels_last=False):
        self.images = torch.as_tensor(images).to(device)           # (N, 3, H, W) uint8
        self.labels = torch.as_tensor(labels).to(device)           # (N,) int64
        mean, std = (torch.tensor(s, dtype=torch.float32, device=device).view(1, 3, 1, 1) for s in stats)
        self.scale, self.shift = 1.0 / std, mean / std             # x = img * scale - shift
        self.augment, self.flip, self.pad = augment, flip, pad
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self):
        return len(self.labels)

    def _augment(self, img, gen):
        """Random crop with zero padding and random horizontal flip, per image, on the whole batch."""
        b, _, h, w = img.shape
        p, dev = self.pad, img.device
        padded = F.pad(img, (p, p, p, p))                                    # (B, 3, H+2p, W+2p), zeros
        dy = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        dx = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        rows = (dy + torch.arange(h, device=dev))[:, None, :, None]          # (B, 1, H, 1)
        cols = (dx + torch.arange(w, device=dev))[:, None, None, :]          # (B, 1, 1, W)
        if self.flip:
            flip = torch.rand(b, device=dev, generator=gen) < 0.5
            cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
        bidx = torch.arange(b, device=dev)[:, None, None, None]
        cidx = torch.arange(img.shape[1], device=dev)[None, :, None, None]
        return padded[bidx, cidx, rows, cols]

    def batches(self, index_batches, gen=None):
        """Yield (x (B,3,H,W) float32, y (B,), idx (B,)) on the device for each index batch."""
        dev = self.images.device
        for idx in index_batches:
            idx = idx.to(dev, non_blocking=True)
            img = self.images[idx]
            if self.augment:
                img = self._augment(img, gen)
            x = (img.float() * self.scale - self.shift).contiguous(memory_format=self.memory_format)
            yield x, self.labels[idx], idx


class _Indexed(torch.utils.data.Dataset):
    """(image, label, dataset index); the label comes from `labels` (which --label_noise may change).
    Asked for (i, seed), the random transform of sample i draws from its own stream seeded by (seed, i):
    what a sample gets is then the same whichever worker, and however many, load it."""

    def __init__(self, folder, transform, labels):
        self.folder, self.transform, self.labels = folder, transform, labels

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        img = self.folder.loader(self.folder.samples[i][0])
        if seed is None:
            return self.transform(img), int(self.labels[i]), i
        with torch.random.fork_rng(devices=[]):   # (a worker's global stream, or the main process's, untouched)
            torch.manual_seed((seed + i * 0x9E3779B97F4A7C15) % 2**64)
            return self.transform(img), int(self.labels[i]), i


class _EpochBatches:
    """The batch sampler of a DataLoader built once per run: the batches of the epoch at hand."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class FolderImages:
    """ImageFolder through a DataLoader with workers; standard ImageNet augmentation. The DataLoader is
    built once per run (its workers persist from epoch to epoch; pinned memory on CUDA, a few batches
    prefetched per worker); `close()` ends its workers."""
    PREFETCH = 4   # batches each worker prepares ahead

    def __init__(self, folder, train, image_size, device, workers, channels_last=False):
        from torchvision import transforms as T
        norm = T.Normalize([m / 255 for m in IMAGENET_STATS[0]], [s / 255 for s in IMAGENET_STATS[1]])
        if train:
            tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        else:
            tf = T.Compose([T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToTensor(), norm])
        self.labels = torch.as_tensor(folder.targets, dtype=torch.int64)
        self.dataset = _Indexed(folder, tf, self.labels.numpy())
        self.device, self.workers = device, workers
        self._loader, self._sampler = None, _EpochBatches()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self):
        return len(self.dataset)

    def set_labels(self, labels):
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.dataset.labels = self.labels.numpy()

    def loader(self):
        """The run's DataLoader (built on first use)."""
        if self._loader is None:
            workers = self.workers
            if workers == "auto":
                from utils.args import default_workers
                workers = default_workers()
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=self._sampler, num_workers=workers, persistent_workers=workers > 0,
                prefetch_factor=self.PREFETCH if workers > 0 else None, pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(0))   # its own seeds are unused: see _Indexed
        return self._loader

    def close(self):
        self._loader = None   # the workers end with the last reference to their loader

    def batches(self, index_batches, gen=None):
        """Yield (x, y, idx) on the device. With `gen` (the per-rank augmentation stream, saved in
        checkpoints) one seed is drawn from it per epoch, and each sample's transform is seeded by it
        and the sample's index (_Indexed): an epoch, or the rest of one after a resume, is the same
        with any number of workers."""
        seed = None
        if gen is not None:
            seed = torch.randint(0, 2**62, (1,), device=gen.device, generator=gen).item()
        self._sampler.batches = [[(i, seed) for i in b.tolist()] for b in index_batches]
        for x, y, idx in self.loader():
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)


class Data:
    """Everything a training script needs from a data set. `targets` are the labels trained on
    (after --label_noise); `flipped` / `corrupted` are (N,) bool masks of the training samples whose
    label / image was changed by the robustness flags, or None when nothing was."""

    def __init__(self, name, train, test, num_classes, flipped=None, corrupted=None):
        self.name, self.train, self.test, self.num_classes = name, train, test, num_classes
        self.targets = train.labels.cpu().numpy()  # (N,) int64, dataset order
        self.flipped, self.corrupted = flipped, corrupted

    @property
    def n_train(self):
        return len(self.train)


def load_data(args, device, channels_last=False):
    """Build the Data of --dataset from --data_path (see the module docstring), with the training
    labels and images changed by --label_noise / --corrupt_ratio. Both are pure functions of (data
    set, their own flags and seed), so train.py and train_subset.py see the same training set."""
    if args.label_noise > 0 or args.corrupt_ratio > 0:
        from utils.training import robustness
    name = args.dataset
    flipped = corrupted = None
    if name in ("cifar10", "cifar100", "digits"):
        if name == "digits":
            (xtr, ytr), (xte, yte) = read_digits(True), read_digits(False)
            stats = ([float(xtr.mean())] * 3, [float(xtr.std())] * 3)
            num_classes, flip = 10, False  # mirrored digits are other symbols: no flip
        else:
            (xtr, ytr) = read_cifar(args.data_path, name, True)
            (xte, yte) = read_cifar(args.data_path, name, False)
            stats, num_classes, flip = CIFAR_STATS[name], (10 if name == "cifar10" else 100), True
        if ytr.min() < 0 or max(ytr.max(), yte.max()) >= num_classes:
            raise UserError(f"{name}: labels must lie in 0..{num_classes - 1}")
        if args.corrupt_ratio > 0:   # statistics above stay those of the clean images, as published
            xtr, corrupted = robustness.apply_corruption(xtr, args.corrupt_ratio, args.corruption, args.severity,
                                                         seed=args.corrupt_seed)
        if args.label_noise > 0:
            ytr, flipped = robustness.apply_label_noise(ytr, num_classes, args.label_noise, args.noise_type,
                                                        seed=args.noise_seed, dataset=name)
        train = DeviceImages(xtr, ytr, stats, device, augment=True, flip=flip, channels_last=channels_last)
        test = DeviceImages(xte, yte, stats, device, augment=False, channels_last=channels_last)
        return Data(name, train, test, num_classes, flipped, corrupted)
    if name == "imagefolder":
        tr, te = _image_folder(args.data_path, "train"), _image_folder(args.data_path, "val")
        if tr.classes != te.classes:
            raise UserError(f"imagefolder: {args.data_path}/train and /val have different class folders")
        train = FolderImages(tr, True, args.image_size, device, args.workers, channels_last)
        if args.label_noise > 0:
            labels, flipped = robustness.apply_label_noise(train.labels.numpy(), len(tr.classes), args.label_noise,
                                                           args.noise_type, seed=args.noise_seed, dataset=name)
            train.set_labels(labels)
        test = FolderImages(te, False, args.image_size, device, args.workers, channels_last)
        return Data(name, train, test, len(tr.classes), flipped)
    raise UserError(f"unknown --dataset {name!r}; choose from {', '.join(DATASETS)}")


def has_training_data(dataset, path):
    """Whether `path` holds the training part of `dataset` (digits needs no folder)."""
    if dataset in CIFAR_LAYOUT:
        folder, files = CIFAR_LAYOUT[dataset][:2]
        return os.path.isfile(os.path.join(path, folder, files[0]))
    return dataset == "digits" or os.path.isdir(os.path.join(path, "train"))


def recorded_data_path(dataset, data_path, run_folder):
    """A --data_path that the run in run_folder recorded: a relative one that holds no data from here is
    taken relative to the folder that run was started in, when the data are there."""
    from utils.protocol.run import training_cwd
    if os.path.isabs(data_path) or not run_folder or has_training_data(dataset, data_path):
        return data_path
    cwd = training_cwd(run_folder)
    if cwd and has_training_data(dataset, os.path.join(cwd, data_path)):
        return os.path.join(cwd, data_path)
    return data_path
