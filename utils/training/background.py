"""Epoch ends off the training's critical path: host copies of device tensors that do not wait for the
device, and one background thread that writes the files in the order they were handed to it.

The folder protocol's order is kept because one thread runs the jobs one after another: an epoch's
dynamics files and their manifest, then its checkpoint, model_best, metrics.json and curve.png. After
a failed job no later job runs (a checkpoint never vouches for dynamics that are not on disk); the
error is raised in the training thread at its next `check()` or `wait()`.
"""
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch


class HostCopy:
    """A copy of `obj` (tensors in nested dicts, lists and tuples) in host memory, taken now. CUDA
    tensors are copied without blocking into pinned memory (the next epoch's kernels queue behind
    the copies, so they read this epoch's values); `get()` waits for the copies, in whichever thread
    needs them. CPU tensors are cloned when `copy` (the caller goes on changing them) or kept."""

    def __init__(self, obj, copy=True):
        self._cuda = False
        self._obj = self._map(obj, copy)
        self._ready = None
        if self._cuda:
            self._ready = torch.cuda.Event()
            self._ready.record()

    def _map(self, obj, copy):
        if torch.is_tensor(obj):
            if obj.is_cuda:
                self._cuda = True
                return obj.detach().to("cpu", non_blocking=True)   # pinned (PyTorch's caching host allocator)
            return obj.detach().clone() if copy else obj.detach()
        if isinstance(obj, dict):
            return {k: self._map(v, copy) for k, v in obj.items()}
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):   # a named tuple
            return type(obj)(*(self._map(v, copy) for v in obj))
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._map(v, copy) for v in obj)
        return obj

    def get(self):
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        return self._obj


class BackgroundWriter:
    """Runs write jobs one at a time, in order, in a background thread. `submit` returns at once
    (after the job before the previous one has ended: at most one job waits while another runs);
    `check` raises the error of a failed job without waiting; `wait` waits for every job, then raises
    it. Once a job has failed, the jobs after it are skipped."""
    _live = weakref.WeakSet()

    def __init__(self):
        BackgroundWriter._live.add(self)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self._pending = []
        self._error = None
        self._lock = threading.Lock()

    def _run(self, fn, args):
        with self._lock:
            if self._error is not None:
                return
        try:
            fn(*args)
        except BaseException as e:   # noqa: B902 (kept, re-raised in the training thread)
            with self._lock:
                self._error = e

    def submit(self, fn, *args):
        self.check()
        while len(self._pending) > 1:       # bounded: the host copies of at most two jobs are alive
            self._pending.pop(0).result()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._run, fn, args))

    def check(self):
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def wait(self):
        for f in self._pending:
            f.result()
        self._pending = []
        self.check()

    def drain(self):
        """Wait for every job without raising (for a run that ends with another error)."""
        for f in self._pending:
            f.result()
        self._pending = []

    @classmethod
    def drain_all(cls):
        for writer in list(cls._live):
            writer.drain()
