"""User mistakes end the run with one clear line and exit code 2; real bugs keep their traceback."""
import sys


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
