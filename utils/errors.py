"""User mistakes end the run with one clear line and exit code 2; real bugs keep their traceback."""
import sys


class UserError(Exception):
    """A mistake in the user's input (a flag, a file, a folder): reported in one line, no traceback."""


def run(main):
    """Call main(); a UserError becomes `error: <message>` on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
