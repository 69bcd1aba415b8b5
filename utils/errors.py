"""User mistakes end the run with one clear line and exit code 2; a write that fails (a full disk, a
quota, a read-only or failing file system) with one line naming the file and the way on, exit code 1
(nothing written before is lost: every file is replaced atomically); real bugs keep their traceback."""
import errno
import os
import sys

DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EIO: "an input/output error of the file system", errno.ESTALE: "a stale file handle (NFS)"}
RESUME = "make room (or make the folder writable), then run the same command with --resume to finish the run"


AT_EXIT = []   # what must run when a command ends, whatever happens (the folder locks register their release)


def at_exit(fn):
    """Register fn() to run at the end of `run` (a leaf registry: this module imports nothing of ours)."""
    if fn not in AT_EXIT:
        AT_EXIT.append(fn)
    return fn


class UserError(Exception):
    """A mistake in the user's input (a flag, a file, a folder): reported in one line, no traceback."""


class FolderLost(UserError):
    """This process no longer holds the folder it was writing (another process took it over, or its
    lock record was cleared): it stopped writing there, and committed nothing more (utils/protocol/fence.py)."""


class OtherRank(Exception):
    """Another process of this torchrun run failed, and process 0 reports why: this one ends silently
    with `status`, the status process 0 ends with (see `exit_status`)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


class WriteFailed(OSError):
    """A file could not be written (utils.protocol.files's atomic writes raise it, naming the real destination,
    never a temporary file); the file's previous version, if any, is intact."""

    def __init__(self, path, reason, err=None):
        super().__init__(err, reason, path)
        self.path, self.reason = path, reason


def describe_oserror(e):
    return DISK_ERRORS.get(e.errno) or (os.strerror(e.errno) if e.errno else "") or str(e)


class Preempted(Exception):
    """A signal stopped the run after its checkpoint was written (utils/training/preemption.py); the engine has
    printed where and how to resume. Ends the process with `status` (143 SIGTERM, 138 SIGUSR1)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def exit_status(e):
    """The exit status `run` ends the command with for the exception `e` (None: success)."""
    if e is None:
        return 0
    if isinstance(e, (Preempted, OtherRank)):
        return e.status
    if isinstance(e, UserError):
        return 2
    if isinstance(e, KeyboardInterrupt):
        return 130
    return 1


def speaks():
    """Whether this process prints the command's `error:` line: the only process, or process 0 of a
    torchrun run (RANK). A user's mistake is the same on every process, so one line says it."""
    return os.environ.get("RANK", "0") in ("0", "")


def run(main, way_on=RESUME):
    """Call main(); a UserError becomes `error: <message>` on stderr and exit status 2, a failed write
    `error: cannot write <file>: <why>; <way_on>` and exit status 1. Under torchrun a UserError (the
    same on every process) and Ctrl-C are printed by process 0 only; every process ends with the
    status. The folders this process locked are released whatever happens."""
    try:
        main()
    except UserError as e:
        if speaks():
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (Preempted, OtherRank) as e:
        sys.exit(e.status)
    except WriteFailed as e:
        print(f"error: cannot write {e.path}: {e.reason}; the files written before it are intact: {way_on}",
              file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        print(f"error: {e.filename or 'a file'}: {DISK_ERRORS[e.errno]}; the files written before it are intact: "
              f"{way_on}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if speaks():
            print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        for cleanup in list(AT_EXIT):
            cleanup()
