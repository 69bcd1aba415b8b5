"""User mistakes end the run with one clear line and exit code 2; a full or read-only disk with one
line and exit code 1 (nothing written before is lost: every file is replaced atomically); real bugs
keep their traceback."""
import errno
import sys

DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


class UserError(Exception):
    """A mistake in the user's input (a flag, a file, a folder): reported in one line, no traceback."""


class Preempted(Exception):
    """A signal stopped the run after its checkpoint was written (utils/preemption.py); the engine has
    printed where and how to resume. Ends the process with `status` (143 SIGTERM, 138 SIGUSR1)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def run(main):
    """Call main(); a UserError becomes `error: <message>` on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        sys.exit(e.status)
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        print(f"error: {e.filename or 'a file'}: {DISK_ERRORS[e.errno]}; the files written before it "
              f"are intact (the last checkpoint, metrics.json): make room (or make the folder writable) and run the "
              f"same command with --resume", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
