"""Does the CUDA path work on this machine? One line per step, `PASS|FAIL|SKIP <step> <detail>`, then a
summary; exit status 0 only if no step failed (docs/GPU.md says what each step checks).

    bash scripts/gpu_check.sh                 # about 3-8 minutes on one modern GPU
    python scripts/gpu_check.py --keep /tmp/gpu_check --only train score subset
    python scripts/gpu_check.py --cpu         # the same steps on the CPU, small (checks this script)

Offline: a synthetic data set in CIFAR-10's on-disk layout and a small ImageFolder tree are written to a
temporary folder (deleted at the end unless --keep). Without a CUDA device it says so and exits 0 at once.
"""
import argparse
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.protocol.files import load_json  # noqa: E402

STEPS = ("cuda", "train", "score", "subset", "amp-bf16", "amp-fp16", "resume", "preemption", "eval-sync",
         "benchmark", "torchrun-1", "torchrun-2", "imagefolder")


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def write_cifar10(root, n_train, n_test, seed=0):
    """CIFAR-10's python layout (data_batch_1..5, test_batch): a learnable colour band per class."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)

    def images(labels):
        x = rng.integers(0, 90, (len(labels), 3, 32, 32), dtype=np.uint8)
        for c in range(10):
            x[labels == c, c % 3, 3 * c:3 * c + 6] += 140
        return x.reshape(len(labels), -1)

    ytr, yte = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    xtr = images(ytr)
    for k, rows in enumerate(np.array_split(np.arange(n_train), 5)):
        with open(os.path.join(folder, f"data_batch_{k + 1}"), "wb") as f:
            pickle.dump({"data": xtr[rows], "labels": ytr[rows].tolist()}, f)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump({"data": images(yte), "labels": yte.tolist()}, f)


def write_image_folder(root, per_class, size=48, classes=4, seed=0):
    """root/{train,val}/<class>/<k>.png, a flat class colour plus noise."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", max(2, per_class // 4))):
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder)
            colour = np.array([(60 * c) % 256, 200 - 40 * c, 40 + 50 * c])
            for k in range(n):
                img = np.clip(colour + rng.integers(-40, 41, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(folder, f"{k:04d}.png"))


class Checker:
    def __init__(self, work, cpu):
        self.work, self.cpu = work, cpu
        self.results = []
        self.data = os.path.join(work, "cifar")
        self.n_train, self.n_test = (320, 100) if cpu else (10240, 1000)
        self.common = ["--data_path", self.data, "--dataset", "cifar10", "--arch", "resnet20", "--batch-size", "64",
                       "--learning_rate", "0.05", "--print_freq", "100000", "--ngpu", "0" if cpu else "1"]

    # -------------------------------------------------------------------------------- helpers
    def report(self, verdict, step, detail):
        detail = " ".join(str(detail).split())[:300]
        self.results.append(verdict)
        print(f"{verdict} {step} {detail}", flush=True)

    def run(self, step, fn):
        t = time.perf_counter()
        try:
            detail = fn()
            self.report("PASS", step, f"{detail} ({time.perf_counter() - t:.0f} s)")
        except Skip as e:
            self.report("SKIP", step, e)
        except Fail as e:
            self.report("FAIL", step, e)
        except Exception as e:   # a bug of the check itself is a failure too, in one line
            self.report("FAIL", step, f"{type(e).__name__}: {e}")

    def sh(self, *cmd, timeout=480, expect=0, launcher=None):
        """Run a repository script; Fail with its last error line unless it exits `expect`."""
        full = (launcher or [sys.executable]) + list(cmd)
        p = subprocess.run(full, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "TDDS_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")})
        if p.returncode != expect:
            lines = [l for l in (p.stderr + p.stdout).splitlines() if l.strip()]
            raise Fail(f"{' '.join(cmd[:1])} exit {p.returncode}: {lines[-1] if lines else '(no output)'}")
        return p

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def train(self, save, *extra, **kw):
        self.sh("train.py", *self.common, "--save_path", self.path(save), *extra, **kw)
        return self.metrics(save)

    def metrics(self, save):
        return load_json(self.path(save, "metrics.json"), strict=True)

    def checkpoint(self, save):
        import torch
        return torch.load(self.path(save, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)

    def same_weights(self, a, b):
        import torch
        ma, mb = self.checkpoint(a)["model"], self.checkpoint(b)["model"]
        differ = [k for k in ma if not torch.equal(ma[k], mb[k])]
        if differ:
            raise Fail(f"{len(differ)} of {len(ma)} tensors differ from the uninterrupted run (first: {differ[0]})")
        return len(ma)

    @staticmethod
    def learns(m):
        first, last = m["history"][0]["train_loss"], m["history"][-1]["train_loss"]
        if not np.isfinite(last) or last >= first:
            raise Fail(f"the training loss did not fall: {first:.4f} -> {last:.4f}")
        return f"loss {first:.3f} -> {last:.3f}, test {m['final_acc']:.1f}%"

    # -------------------------------------------------------------------------------- steps
    def step_cuda(self):
        import torch
        if self.cpu:
            return f"--cpu: the steps run on the CPU (torch {torch.__version__})"
        p = torch.cuda.get_device_properties(0)
        return (f"{torch.cuda.device_count()} x {p.name}, compute capability {p.major}.{p.minor}, "
                f"{p.total_memory / 2**30:.0f} GiB, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}, "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")

    def step_train(self):
        m = self.train("full", "--epochs", "4", "--dynamics")
        npy = self.path("full", "npy")
        missing = [f"{e}_{t}.npy" for e in range(4) for t in ("Output", "Loss", "Index")
                   if not os.path.isfile(os.path.join(npy, f"{e}_{t}.npy"))]
        if missing or not os.path.isfile(os.path.join(npy, "targets.npy")):
            raise Fail(f"dynamics files missing: {', '.join(missing) or 'targets.npy'}")
        out = np.load(os.path.join(npy, "3_Output.npy"))
        if out.shape != (self.n_train, 10) or not np.isfinite(out).all():
            raise Fail(f"3_Output.npy is {out.shape}, finite: {np.isfinite(out).all()}")
        return f"4 epochs, dynamics complete; {self.learns(m)}, {m['train_seconds']:.1f} s training"

    def step_score(self):
        self.sh("importance_evaluation.py", "--dynamics_path", self.path("full", "npy"), "--mask_path",
                self.path("masks"), "--trajectory_len", "4", "--window_size", "3", "--decay", "0.9", "--no_plot",
                "--device", "cpu" if self.cpu else "cuda")
        mask = np.load(self.path("masks", "data_mask_win3_ep4.npy"))
        if sorted(mask.tolist()) != list(range(self.n_train)):
            raise Fail("data_mask_win3_ep4.npy is not a permutation of the training indices")
        return f"TDDS scores of {len(mask)} samples (T=4, K=3)"

    def step_subset(self):
        if not os.path.isfile(self.path("masks", "data_mask_win3_ep4.npy")):
            raise Skip("needs the score step's mask")
        self.sh("train_subset.py", *self.common, "--epochs", "2", "--subset_rate", "0.5", "--save_path",
                self.path("subset"), "--mask_path", self.path("masks", "data_mask_win3_ep4.npy"),
                "--score_path", self.path("masks", "score_win3_ep4.npy"))
        m = self.metrics("subset")
        if not m["finished"] or m["num_train_samples"] != self.n_train // 2:
            raise Fail(f"finished {m['finished']}, {m['num_train_samples']} samples")
        return f"{m['num_train_samples']} kept samples, test {m['final_acc']:.1f}%"

    def step_amp_bf16(self):
        import torch
        if not self.cpu and not torch.cuda.is_bf16_supported():
            raise Skip(f"{torch.cuda.get_device_name(0)} has no bfloat16 (use --amp --amp_dtype float16)")
        return self.learns(self.train("amp-bf16", "--epochs", "2", "--amp"))

    def step_amp_fp16(self):
        if self.cpu:
            raise Skip("--cpu: float16 convolutions are very slow on CPUs without float16 instructions "
                       "(tests/test_gpu_ready.py checks this path with a small net)")
        m = self.train("amp-fp16", "--epochs", "2", "--amp", "--amp_dtype", "float16")
        scale = self.checkpoint("amp-fp16")["scaler"]["scale"]
        return f"{self.learns(m)}, gradient scale {scale:g}"

    def step_resume(self):
        det = ["--epochs", "3", "--deterministic", "--dynamics"]
        self.train("whole", *det)
        self.train("cut", *det, "--stop_epoch", "1")
        self.train("cut", *det, "--resume")
        n = self.same_weights("whole", "cut")
        a, b = (np.load(self.path(s, "npy", "2_Output.npy")) for s in ("whole", "cut"))
        if not np.array_equal(a, b):
            raise Fail("epoch 2's recorded logits differ from the uninterrupted run's")
        return f"--deterministic: stopped after epoch 1, resumed: {n} tensors and epoch 2's logits bit-identical"

    def step_preemption(self):
        if not os.path.isfile(self.path("whole", "checkpoint.pth.tar")):
            raise Skip("needs the resume step's uninterrupted run")
        cmd = [sys.executable, "train.py", *self.common, "--epochs", "3", "--deterministic", "--dynamics",
               "--save_path", self.path("pre")]
        env = {**os.environ, "TDDS_OFFLINE": "1"}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        log = self.path("pre", "log_seed_42.txt")
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:   # the end of epoch 0, then into epoch 1
            if os.path.isfile(log) and "epoch   0/" in open(log).read():
                break
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            raise Skip("the run ended before the signal arrived")
        if proc.returncode != 143:
            raise Fail(f"exit {proc.returncode} after SIGTERM (expected 143): {err.strip().splitlines()[-1:]}")
        ck = self.checkpoint("pre")
        at = f"epoch {ck['epoch']}, step {ck.get('step', 0)}"
        self.sh("train.py", *self.common, "--epochs", "3", "--deterministic", "--dynamics", "--save_path",
                self.path("pre"), "--resume")
        n = self.same_weights("whole", "pre")
        return f"SIGTERM -> exit 143 with a checkpoint at {at}; resumed: {n} tensors bit-identical"

    def step_eval_sync(self):
        """evaluate() must not wait for the device once per batch: the host synchronisations it makes
        (counted by torch.cuda's sync debug mode) do not grow with the number of batches."""
        import torch
        if self.cpu:
            raise Skip("--cpu: host synchronisation is a CUDA matter")
        from models import create_model
        from utils.training.data import CIFAR_STATS, Data, DeviceImages
        from utils.training.loop import EVAL_BATCH, evaluate
        dev = torch.device("cuda")
        model = create_model("resnet20", 10).to(dev)
        counts = {}
        for batches in (2, 8):
            n = batches * EVAL_BATCH
            images = DeviceImages(np.zeros((n, 3, 32, 32), np.uint8), np.zeros(n, np.int64), CIFAR_STATS["cifar10"],
                                  dev, augment=False)
            data = Data("sync", images, images, 10)
            evaluate(model, data)
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    evaluate(model, data)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            counts[batches] = sum("synchroniz" in str(w.message) for w in caught)
        if counts[8] > counts[2]:
            raise Fail(f"host synchronisations grow with the batches: {counts[2]} for 2 batches, {counts[8]} for 8")
        return f"{counts[2]} host synchronisations for 2 batches, {counts[8]} for 8"

    def step_benchmark(self):
        p = self.sh("benchmarks/bench_training.py", "--device", "cpu" if self.cpu else "cuda", "--n",
                    str(self.n_train if self.cpu else 20000), "--epochs", "2")
        ratio = re.search(r"ratio b/a: ([0-9.]+)", p.stdout)
        speeds = re.findall(r"\(([ab])\)[^:]*:\s+([0-9.]+) img/s", p.stdout)
        if not ratio:
            raise Fail("no ratio in the benchmark's output")
        return f"train_one_epoch / bare loop = {ratio.group(1)} ({', '.join(f'{k} {v} img/s' for k, v in speeds)})"

    def torchrun(self, n, save):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        self.sh("train.py", *self.common, "--epochs", "2", "--save_path", self.path(save), launcher=launcher)
        processes = load_json(self.path(save, "folder.json"), strict=True)["fingerprint"].get("processes")
        if processes != n:
            raise Fail(f"the run records {processes} processes, not {n}")
        return f"{'gloo' if self.cpu else 'NCCL'}, {n} process{'es' if n > 1 else ''}: {self.learns(self.metrics(save))}"

    def step_torchrun_1(self):
        return self.torchrun(1, "torchrun-1")

    def step_torchrun_2(self):
        import torch
        if not self.cpu and torch.cuda.device_count() < 2:
            raise Skip(f"{torch.cuda.device_count()} GPU visible: NCCL across processes needs 2 or more "
                       f"(torchrun-1 ran the same code path with one process)")
        return self.torchrun(2, "torchrun-2")

    def step_imagefolder(self):
        root = self.path("imagefolder")
        write_image_folder(root, 32 if self.cpu else 256)
        self.sh("train.py", "--dataset", "imagefolder", "--data_path", root, "--image_size", "32", "--arch",
                "resnet20", "--epochs", "2", "--batch-size", "32", "--ngpu", "0" if self.cpu else "1",
                "--save_path", self.path("imagefolder-run"))
        m = self.metrics("imagefolder-run")
        workers = load_json(self.path("imagefolder-run", "args.json"), strict=True)["args"]["workers"]
        return f"{workers} workers (--workers auto), 2 epochs, {m['train_seconds']:.1f} s training"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="write into DIR (created, must be empty) and keep it")
    parser.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP", help=f"run these steps ({', '.join(STEPS)})")
    parser.add_argument("--cpu", action="store_true", help="run the steps on the CPU at a small size")
    args = parser.parse_args(argv)
    import torch
    if not args.cpu and not torch.cuda.is_available():
        why = ("CUDA_VISIBLE_DEVICES is empty" if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else
               f"this torch {torch.__version__} is built without CUDA" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU or driver")
        print(f"SKIP cuda no CUDA device visible: {why}; nothing else was run")
        print("gpu_check: 0 passed, 0 failed, 1 skipped (no CUDA device)")
        return 0
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        if os.listdir(args.keep):
            parser.error(f"--keep {args.keep} is not empty")
    work = args.keep or tempfile.mkdtemp(prefix="gpu_check_")
    checker = Checker(work, args.cpu)
    t = time.perf_counter()
    try:
        write_cifar10(checker.data, checker.n_train, checker.n_test)
        for step in args.only or STEPS:
            checker.run(step, getattr(checker, "step_" + step.replace("-", "_")))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    r = checker.results
    print(f"gpu_check: {r.count('PASS')} passed, {r.count('FAIL')} failed, {r.count('SKIP')} skipped "
          f"in {time.perf_counter() - t:.0f} s" + (f"; files in {work}" if args.keep else ""))
    return 1 if "FAIL" in r else 0


if __name__ == "__main__":
    sys.exit(main())
