"""The local executor of a study plan (utils/study/plan.py): stages 1 and 3 one command after the other
(stage 1 stops the sweep at its first failure), stage 2 with up to JOBS commands at once, each job's
output appended to <save folder>.log, threads split between the jobs and one GPU per job,
round-robin. Ctrl-C / SIGTERM end exactly the jobs it started (each in its own process group: the
job and its children, e.g. torchrun's workers). Before starting a command it asks the folders'
records, in its own process, whether the work is already done (utils/study/records.py: the scripts'
own decision, read-only); only a sure "done" skips the process, otherwise the command runs and its
script decides from what its folder holds. OUT/threads.json records the threads each run trained
with, per stretch of epochs, also for the runs an interrupt stopped. It ends with the list of failed
(status != 0, 2) and refused (status 2) commands and how to go on (exit status 1).
"""
import os
import re
import signal
import subprocess
import sys
import time
from collections import namedtuple

from utils.protocol.files import load_json, save_json, save_text
from utils.protocol.run import read_state
from utils.study.plan import gpu_count, line, plan_text
from utils.study.records import done_text, run_done, scoring_done, summary_fresh

PROG = "sweep.sh"
DONE = re.compile(r"^already (finished|stopped|scored)", re.M)
WHY = re.compile(r"^(error|sweep\.sh): .*$", re.M)


# a command running now: its index in stage 2 (None: stage 1 or 3), log, log offset, save folder, threads,
# and where its run stood when it started (run id, epochs done)
Job = namedtuple("Job", "index log offset save threads run_id start")


class Interrupted(Exception):
    pass


def load_text(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def epochs_done(save):
    """(run id, epochs the run in `save` has completed) from its records; (None, 0) for an empty folder."""
    state = read_state(save)
    metrics = load_json(os.path.join(save, "metrics.json"), {})
    done = [x for x in (state.get("completed_epochs"), metrics.get("completed_epochs") if isinstance(metrics, dict)
                        else None) if isinstance(x, int)]
    return state.get("run_id"), max(done, default=0)


def merge_threads(old, start, n):
    """A run's threads.json entry after an attempt that trained epochs `start`.. with n threads: one number
    when every epoch ran with the same, else [[first epoch, threads], ...] stretches."""
    stretches = [[0, old]] if isinstance(old, int) else [list(x) for x in old] if isinstance(old, list) else []
    merged = []
    for first, k in [x for x in stretches if x[0] < start] + [[start, n]]:
        if not merged or merged[-1][1] != k:
            merged.append([first, k])
    return n if merged == [[0, n]] else merged


def _interrupt(signum, frame):
    raise Interrupted(signum)


class Executor:
    def __init__(self, plan, environ, stdout=None, stderr=None):
        self.plan, self.c, self.env = plan, plan.cfg, dict(environ)
        self.out, self.err = stdout or sys.stdout, stderr or sys.stderr
        self.refused, self.failed = [], []   # (command line, why)
        self.running = {}                     # Popen -> Job
        self.gpus = []
        if int(self.c["NGPU"]) > 0:   # GPUS, else CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists
            self.gpus = (self.c["GPUS"].split() or [g for g in self.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
                         or [str(i) for i in range(gpu_count())] or ["0"])
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = max(1, cores // self.c["JOBS"])
        given = self.env.get("OMP_NUM_THREADS", "")
        self.own_threads = int(given) if given.isdigit() and int(given) > 0 else cores   # a job alone
        self.trained = {}   # save folder -> its threads.json entry (OUT/threads.json, for the summary)
        self.answered = {1: 0, 2: 0}   # per stage, the commands whose records showed their work done (no process)
        self.text, self.current = plan_text(plan), None   # the plan, and plan.txt once stage 2 has begun
        self.bar = None                                    # stage 2's progress line (JOBS > 1)

    def say(self, text, err=False):
        print(text, file=self.err if err else self.out, flush=True)

    # ------------------------------------------------------------------------------------------ one job
    def job_env(self, n):
        """The environment of stage-2 job number n (0, 1, ...): its GPU and, with JOBS > 1, its threads."""
        env = dict(self.env)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[n % len(self.gpus)]
        if self.c["JOBS"] > 1:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def start(self, argv, env, log):
        """A command in its own process group (Ctrl-C reaches the sweep alone, which then stops it)."""
        return subprocess.Popen([str(a) for a in argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def job(self, save, threads, index=None, log=None, offset=0):
        """The Job of a command about to start (where its run stands now, for threads.json)."""
        run_id, start = epochs_done(save) if save else (None, 0)
        return Job(index, log, offset, save, threads, run_id, start)

    def foreground(self, argv, env, log_path=None, job=None):
        """Run a command, its output on the terminal (and appended to log_path); (status, its output)."""
        self.say(f"+ {line(argv)}")
        p = subprocess.Popen([str(a) for a in argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.running[p] = job or Job(None, None, 0, None, None, None, 0)
        text = []
        log = open(log_path, "a") if log_path else None

        def copy():   # the job's output to the terminal and its log, line by line, until it closes it
            for raw in iter(p.stdout.readline, b""):
                s = raw.decode(errors="replace")
                text.append(s)
                self.out.write(s)
                self.out.flush()
                if log:
                    log.write(s)
                    log.flush()
        try:
            try:
                copy()
            except Interrupted:   # stop the job, and show its last words (where it stopped, how to resume)
                for s in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(s, signal.SIG_IGN)
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                copy()
                p.wait()
                raise
            status = p.wait()
        finally:
            if log:
                log.close()
        del self.running[p]
        return status, "".join(text)

    def trained_for(self, job, interrupted=False):
        """Record the threads of what a job trained (OUT/threads.json): from the epoch its run stood at when
        it started (0 when it started afresh), also when an interrupt stopped it."""
        if job.save is None or job.threads is None:
            return
        run_id, done = epochs_done(job.save)
        if interrupted and read_state(job.save).get("state") == "finished" and done == job.start:
            return   # it found its work done
        start = job.start if run_id == job.run_id else 0
        rel = os.path.relpath(job.save, self.c["OUT"])
        self.trained[rel] = merge_threads(self.trained.get(rel, self.known_threads().get(rel)), start, job.threads)

    def known_threads(self):
        return load_json(os.path.join(self.c["OUT"], "threads.json"), {})

    def from_records(self, stage, i):
        """The planned command's work, if its folder's records show it done (no process started): its text."""
        flags = self.plan.parsed[stage][i]
        argv, save = self.plan.stages[stage][i]
        script = os.path.basename(str(argv[1]))
        if flags is None:
            return None
        if script in ("train.py", "train_subset.py"):
            m = run_done(flags, script)
            return None if m is None else done_text(save, m)
        if script == "importance_evaluation.py":
            infos = scoring_done(flags)
            if infos is None:
                return None
            return f"already scored: {', '.join(infos)}; from its records, no process started"
        return None

    def settle(self, cmd, status, output, save=None):
        """Record how a command ended: 2 is a refusal (its error line says why), any other non-zero a failure."""
        where = f" (log: {save}.log)" if save else ""
        if status == 2:
            why = [m.group(0) for m in WHY.finditer(output)]   # its last error line
            self.refused.append((cmd, why[-1] if why else "status 2" + where))
            self.report(f"REFUSED {cmd}{where}")
        elif status:
            self.failed.append((cmd, f"status {status}" + (f", log: {save}.log" if save else "")))
            self.report(f"FAILED (status {status}) {cmd}{where}")

    def report(self, text):
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            self.say(text)

    # ------------------------------------------------------------------------------------------ stages
    def run(self):
        """Run the plan; returns the exit status (0 all went through, 1 some did not, 130 interrupted)."""
        previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        except Interrupted:
            for s in previous:   # a second Ctrl-C does not interrupt the stopping
                signal.signal(s, signal.SIG_IGN)
            if self.current and not self.refused:   # stage 2 had begun: its runs are (partly) in OUT
                save_text(self.current, self.text)
            jobs = list(self.running)
            if jobs:
                self.say(f"{PROG}: interrupted: stopping {len(jobs)} running job(s) (each resumes with --resume)",
                         err=True)
                for p in jobs:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                for p in jobs:
                    p.wait()
                for p in jobs:   # what they trained, at their threads (the summary's thread-seconds)
                    self.trained_for(self.running[p], interrupted=True)
            else:
                self.say(f"{PROG}: interrupted", err=True)
            self.write_threads()
            return 130
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _run(self):
        plan, out = self.plan, self.c["OUT"]
        os.makedirs(out, exist_ok=True)
        dated = self.dated_copy(self.text)
        self.say(f"plan: {dated} (stage 1 {len(plan.stages[1])}, stage 2 {len(plan.stages[2])}, stage 3 "
                 f"{len(plan.stages[3])} commands)")
        pinned = {**self.env, **({"CUDA_VISIBLE_DEVICES": self.gpus[0]} if self.gpus else {})}
        for i, (argv, save) in enumerate(plan.stages[1]):
            answer = self.from_records(1, i)
            if answer:
                self.say(f"+ {line(argv)}\n{answer}")
                self.answered[1] += 1
                continue
            job = self.job(save, self.own_threads)
            status, output = self.foreground(argv, pinned, job=job)
            self.settle(line(argv), status, output)
            if save and status == 0 and not DONE.search(output):
                self.trained_for(job)
            if status:
                self.say(f"{PROG}: stage 1 did not go through: stage 2 needs it", err=True)
                return self.finish()
        # plan.txt is the plan of what is in OUT: not rewritten by a sweep that OUT refused
        current = os.path.join(out, f"plan-{self.c['TAG']}.txt" if self.c["TAG"] else "plan.txt")
        self.current = current
        done_before = self.stage2()
        n, bad = len(plan.stages[2]), len(self.refused) + len(self.failed)
        answered = self.answered[2]
        self.say(f"stage 2: {n} runs: {n - bad - done_before} trained, {done_before} already done (nothing "
                 f"rewritten{f'; {answered} of them from their records, no process started' if answered else ''}), "
                 f"{len(self.refused)} refused, {len(self.failed)} failed")
        self.write_threads()
        if self.refused:
            self.say(f"{os.path.basename(current)} not rewritten: {len(self.refused)} command(s) refused (this "
                     f"sweep's plan: {dated})")
        elif load_text(current) != self.text:   # (unchanged: not rewritten, the summary stays up to date)
            save_text(current, self.text)
        started = len(plan.stages[1]) + len(plan.stages[2]) - sum(self.answered.values())
        for argv, _ in plan.stages[3]:   # whatever happened in stage 2: the summary names what is missing
            if not started and summary_fresh(argv):   # nothing new since it was written
                self.say(f"+ {line(argv)}\nup to date: nothing it reads changed since it was written; not run again")
                continue
            status, output = self.foreground(argv, pinned)
            self.settle(line(argv), status, output)
        return self.finish()

    def write_threads(self):
        """OUT/threads.json: {run folder: threads, or [[first epoch, threads], ...] where they changed} of the
        runs this sweep trained, merged with earlier sweeps' (summarize.py's seconds are thread-seconds where
        it knows them)."""
        if not self.trained:
            return
        known = self.known_threads()
        known.update(self.trained)
        save_json(os.path.join(self.c["OUT"], "threads.json"), known)

    def dated_copy(self, text):
        """OUT/plans/<date>-<time>[-TAG].txt: every sweep's plan, kept."""
        folder = os.path.join(self.c["OUT"], "plans")
        os.makedirs(folder, exist_ok=True)
        stem = time.strftime("%Y%m%d-%H%M%S") + (f"-{self.c['TAG']}" if self.c["TAG"] else "")
        path, k = os.path.join(folder, stem + ".txt"), 1
        while os.path.exists(path):
            k += 1
            path = os.path.join(folder, f"{stem}-{k}.txt")
        save_text(path, text)
        return path

    def stage2(self):
        """Up to JOBS stage-2 commands at once; returns how many found their work already done."""
        cmds, jobs = self.plan.stages[2], self.c["JOBS"]
        done_before = 0
        if jobs > 1 and cmds:
            from tqdm import tqdm
            self.bar = tqdm(total=len(cmds), desc="stage 2", unit="run", file=self.err, dynamic_ncols=True,
                            mininterval=1.0)
            self.progress()
        try:
            for i, (argv, save) in enumerate(cmds):
                answer = self.from_records(2, i)
                if answer:   # nothing started, nothing written (not even the log)
                    self.report(f"{answer}\nalready done {save}")
                    self.answered[2] += 1
                    done_before += 1
                    if self.bar is not None:
                        self.bar.update()
                    continue
                os.makedirs(os.path.dirname(save), exist_ok=True)
                log_path = save + ".log"
                offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0   # the log keeps every attempt
                env = self.job_env(i)
                threads = self.threads if jobs > 1 else self.own_threads
                if jobs == 1:   # in the foreground: the output on the terminal and in the log
                    job = self.job(save, threads, i, log_path, offset)
                    status, output = self.foreground(argv, env, log_path, job=job)
                    done_before += self.ended(job, argv, status, output)
                    continue
                while len(self.running) >= jobs:
                    done_before += self.reap()
                    time.sleep(0.2)
                shown = " ".join(f"{k}={env[k]}" for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                                 if k in env and (k != "CUDA_VISIBLE_DEVICES" or self.gpus))
                self.report(f"+ {shown} {line(argv)} >> {log_path} 2>&1")
                job = self.job(save, threads, i, log_path, offset)
                log = open(log_path, "a")
                p = self.start(argv, env, log)
                log.close()
                self.running[p] = job
                self.progress()
            while self.running:
                done_before += self.reap()
                time.sleep(0.2)
        finally:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
        return done_before

    def reap(self):
        """Collect the jobs that have ended; returns how many of them found their work done."""
        done = 0
        for p, job in list(self.running.items()):
            if p.poll() is None:
                continue
            del self.running[p]
            with open(job.log, errors="replace") as f:
                f.seek(job.offset)
                output = f.read()
            done += self.ended(job, self.plan.stages[2][job.index][0], p.returncode, output)
            if self.bar is not None:
                self.bar.update()
            self.progress()
        return done

    def ended(self, job, argv, status, output):
        """A stage-2 command ended; returns 1 when it found its work already done."""
        already = status == 0 and bool(DONE.search(output))
        if not already and status != 2:   # what it trained (also a run that failed part way; a refused one trained nothing)
            self.trained_for(job)
        if status == 0:
            self.report(f"{'already done' if already else 'done'} {job.save}")
        self.settle(line(argv), status, output, job.save)
        return int(already)

    def progress(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"running {len(self.running)}, failed {len(self.failed)}, "
                                     f"refused {len(self.refused)}", refresh=True)

    def finish(self):
        """The end of every run: what did not go through, and how to go on."""
        if not self.refused and not self.failed:
            return 0
        if self.refused:
            self.say(f"{PROG}: {len(self.refused)} command(s) refused:", err=True)
            for cmd, why in self.refused:
                self.say(f"  {cmd}\n      {why}", err=True)
            self.say("Folders holding work of other settings: OVERWRITE=1 replaces that work, another OUT (or a TAG) "
                     "keeps it. A folder another process writes: wait for it. Then run the same sweep again.", err=True)
        if self.failed:
            self.say(f"{PROG}: {len(self.failed)} command(s) failed:", err=True)
            for cmd, why in self.failed:
                self.say(f"  {cmd}   ({why})", err=True)
            self.say("Run the same sweep again to retry them: finished work is not redone, the rest resumes.", err=True)
        return 1
