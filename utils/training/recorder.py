"""Recording training dynamics during the full-data run (train.py --dynamics).

Per-sample outputs of the training forward pass are scattered by dataset index into buffers
preallocated on the training device (no per-batch concatenation, no per-batch host copy); once per
epoch the buffers are summed over ranks into rank 0, copied to the host once, and written atomically by
a background thread while training goes on.

Two layouts (docs/METHODS.md, "Dynamics files"):
- `logits` (default, the published one): <e>_Output.npy (N, C) logits (float32, or float16 with
  --dynamics_dtype float16), <e>_Loss.npy (N,), <e>_Index.npy (N,) = arange(N) (rows in dataset order).
- `contrib` (ImageNet scale): the previous epoch's log(p + 1e-8) stays on the device and each epoch
  writes only N-float files: <e>_Contrib.npy (the TDDS contribution c_{e-1}, from epoch 1 on) and the
  cheap per-sample quantities the baselines need (El2n, Correct, Margin, Entropy, TargetProb), plus
  Loss and Index. See utils/science/features.py.
Both write targets.npy (N,) int64 in dataset order beside them.
"""
import os

import numpy as np
import torch

from utils import dist
from utils.protocol.files import save_npy
from utils.protocol.manifest import record_epoch
from utils.science.features import FEATURES, FILE_TAGS, epoch_features
from utils.training.background import BackgroundWriter, HostCopy

FORMATS = ("logits", "contrib")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


class DynamicsRecorder:
    def __init__(self, folder, targets, num_classes, device, fmt="logits", dtype="float32", run_id=None,
                 every_sample=True):
        self.folder, self.fmt, self.run_id = folder, fmt, run_id   # run_id: whose epochs the manifest says
        self.every_sample = every_sample   # False (dynamic pruning): an epoch holds the samples it trained
        self.targets = targets.to(device)                                   # (N,) int64
        n = len(targets)
        self.n = n
        self.loss = torch.zeros(n, device=device)                            # (N,) per-sample CE
        self.count = torch.zeros(n, dtype=torch.int32, device=device)        # visits this epoch
        if fmt == "logits":
            self.out = torch.zeros(n, num_classes, dtype=DTYPES[dtype], device=device)  # (N, C)
        else:
            self.prev_logp = torch.zeros(n, num_classes, device=device)      # (N, C) log(p_{e-1}+1e-8)
            self.has_prev = False
            self.feats = {k: torch.zeros(n, device=device) for k in FEATURES}  # each (N,)
        self.writer = BackgroundWriter()   # the training engine queues its epoch-end writes behind ours
        if dist.is_main_process():
            os.makedirs(folder, exist_ok=True)
            save_npy(os.path.join(folder, "targets.npy"), targets.cpu().numpy().astype(np.int64))

    def start_epoch(self):
        self.loss.zero_()
        self.count.zero_()
        if self.fmt == "logits":
            self.out.zero_()
        else:
            for v in self.feats.values():
                v.zero_()

    @torch.no_grad()
    def record(self, idx, logits, losses):
        """idx (B,) dataset indices, logits (B, C), losses (B,) of this rank's batch."""
        self.loss[idx] = losses.detach().float()
        self.count[idx] += 1
        if self.fmt == "logits":
            self.out[idx] = logits.detach().to(self.out.dtype)
            return
        prev = self.prev_logp[idx] if self.has_prev else None
        feats, logp = epoch_features(logits.detach().float(), self.targets[idx], prev, FEATURES)
        for k, v in feats.items():
            self.feats[k][idx] = v
        self.prev_logp[idx] = logp

    @torch.no_grad()
    def end_epoch(self, epoch, owned):
        """Gather the epoch (every sample exactly once over ranks) into rank 0 and start writing it: host
        copies that do not wait for the device, the files on the background writer. `owned` (M,) are the
        dataset indices this rank visited this epoch."""
        bufs = {"Loss": self.loss}
        if self.fmt == "logits":
            bufs["Output"] = self.out
        else:
            bufs.update({FILE_TAGS[k]: v for k, v in self.feats.items() if k != "contrib" or self.has_prev})
            if dist.is_distributed():  # every rank needs every sample's probabilities next epoch
                mine = torch.zeros(self.n, dtype=torch.bool, device=self.prev_logp.device)
                mine[owned.to(mine.device)] = True
                self.prev_logp[~mine] = 0
                dist.all_reduce_sum(self.prev_logp)
            self.has_prev = True
        dist.reduce_sum_to_main(self.count)
        for v in bufs.values():
            dist.reduce_sum_to_main(v)
        if not dist.is_main_process():
            return
        bad = self.count != 1 if self.every_sample else self.count > 1
        host = HostCopy({"bufs": bufs, "bad": bad.sum(), "trained": self.count > 0})   # one copy per epoch
        self.writer.submit(self._write, epoch, host)

    def _write(self, epoch, host):
        host = host.get()
        if host["bad"]:
            raise RuntimeError(f"dynamics of epoch {epoch}: {int(host['bad'])} samples were not visited "
                               f"{'exactly' if self.every_sample else 'at most'} once")
        files = {f"{epoch}_{tag}.npy": arr.numpy() for tag, arr in host["bufs"].items()}
        files[f"{epoch}_Index.npy"] = np.arange(self.n, dtype=np.int64)
        if not self.every_sample:   # the rows of the samples trained this epoch, in dataset order
            trained = host["trained"].numpy()
            files = {name: arr[trained] for name, arr in files.items()}
        for name, arr in files.items():
            save_npy(os.path.join(self.folder, name), arr)
        if self.run_id is not None:   # after the files: the manifest vouches only for what is on disk
            record_epoch(self.folder, epoch, self.run_id, files)

    def wait(self):
        """Block until the last epoch is on disk (re-raises a failed write)."""
        self.writer.wait()

    def _epoch_buffers(self):
        """{name: buffer} of what this epoch has recorded so far (zero where nothing was)."""
        bufs = {"loss": self.loss, "count": self.count}
        if self.fmt == "logits":
            bufs["out"] = self.out
        else:
            bufs.update({f"feat_{k}": v for k, v in self.feats.items()})
        return bufs

    @torch.no_grad()
    def state_dict(self, mid_epoch=False):
        """What a checkpoint needs. At an epoch boundary: the contrib format's previous log p. In the
        middle of an epoch (a collective: call on every rank) also the samples recorded so far,
        merged into rank 0, which is what a resumed run loads: afterwards this recorder holds exactly
        that state (rank 0 everything, other ranks zeros), so continuing gives what resuming does."""
        main = dist.is_main_process()
        state = {} if self.fmt == "logits" else {"has_prev": self.has_prev}
        if mid_epoch and self.fmt == "contrib" and dist.is_distributed():
            # during an epoch a rank's prev_logp holds this epoch's log p for the samples it visited and
            # the previous epoch's (the same on every rank) for the others: merged, every rank has both
            mine = self.count > 0
            visited = dist.all_reduce_sum(mine.to(torch.int32)) > 0
            self.prev_logp[~mine & (visited | (not main))] = 0
            dist.all_reduce_sum(self.prev_logp)
        if self.fmt == "contrib" and main:   # at an epoch end the engine copies it without waiting (HostCopy)
            state["prev_logp"] = self.prev_logp.cpu() if mid_epoch else self.prev_logp
        if mid_epoch:
            for name, buf in self._epoch_buffers().items():   # ranks visited disjoint samples: sum = merge
                dist.reduce_sum_to_main(buf)
                if main:
                    state[name] = buf.cpu()
                else:
                    buf.zero_()
        return state

    def load_state_dict(self, state):
        if self.fmt == "contrib":
            self.has_prev = state["has_prev"]
            self.prev_logp.copy_(state["prev_logp"])
        if "count" in state and dist.is_main_process():   # a mid-epoch checkpoint: rank 0 holds the epoch so far
            for name, buf in self._epoch_buffers().items():
                buf.copy_(state[name])
