"""The dynamics manifest (npy/manifest.json): per recorded epoch, the run that wrote it and each file's
size and CRC-32, written right after the epoch's files; the scorer checks a trajectory against it."""
import os
import zlib

import numpy as np

from utils.errors import UserError
from utils.protocol.files import load_json, save_json

MANIFEST = "manifest.json"



# ----------------------------------------------------------------------- dynamics manifest
def data_crc32(path_or_array):
    """CRC-32 of an array's bytes as stored after the .npy header (the same from memory or from disk)."""
    if isinstance(path_or_array, np.ndarray):
        return zlib.crc32(np.ascontiguousarray(path_or_array).data)
    mm = np.load(path_or_array, mmap_mode="r")
    offset = mm.offset
    del mm
    crc = 0
    with open(path_or_array, "rb") as f:
        f.seek(offset)
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def read_manifest(npy_folder):
    """npy/manifest.json, or None (dynamics written by the published train.py, or older versions)."""
    path = os.path.join(npy_folder, MANIFEST)
    if not os.path.exists(path):
        return None
    m = load_json(path)
    if m is None or not isinstance(m.get("epochs"), dict):
        raise UserError(f"cannot read {path}: not the manifest train.py writes (delete it to score the folder "
                        f"as unverified published files)")
    return m


def record_epoch(npy_folder, epoch, run_id, arrays):
    """Add epoch `epoch` (files {name: array}, already written) of run `run_id` to the manifest."""
    m = read_manifest(npy_folder) or {"epochs": {}}
    m["epochs"][str(epoch)] = {"run_id": run_id, "files": {
        name: {"bytes": int(a.nbytes), "crc32": data_crc32(a)} for name, a in arrays.items()}}
    save_json(os.path.join(npy_folder, MANIFEST), m)


def check_trajectory(manifest, epochs, path):
    """The run id that wrote every epoch of `epochs`, or a UserError naming the epochs that do not
    come from one run. {file name: expected crc32} of those epochs is returned beside it."""
    ent = manifest["epochs"]
    missing = [e for e in epochs if str(e) not in ent]
    if missing:
        raise UserError(f"{path}: epochs {_ranges(missing)} are not in {MANIFEST} (written by another run, or "
                        f"by a run that never finished them): epochs 0..{max(epochs)} must all come from one run")
    runs = {}
    for e in epochs:
        runs.setdefault(ent[str(e)]["run_id"], []).append(e)
    if len(runs) > 1:
        parts = "; ".join(f"epochs {_ranges(es)} by run {r}" for r, es in runs.items())
        raise UserError(f"{path} mixes runs: {parts}: score the dynamics of one run")
    crcs = {name: f["crc32"] for e in epochs for name, f in ent[str(e)]["files"].items()}
    return next(iter(runs)), crcs


def _ranges(es):
    es, out, i = sorted(es), [], 0
    while i < len(es):
        j = i
        while j + 1 < len(es) and es[j + 1] == es[j] + 1:
            j += 1
        out.append(str(es[i]) if i == j else f"{es[i]}-{es[j]}")
        i = j + 1
    return ", ".join(out)

