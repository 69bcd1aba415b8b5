"""python -m utils.protocol.unlock FOLDER: the manual takeover of a folder whose writer is known dead."""
import os

from utils.errors import UserError
from utils.protocol.lock import unlock


def main(argv=None):
    """The manual takeover of a folder whose writer is known dead: python -m utils.protocol.unlock FOLDER."""
    from utils.args import Parser
    parser = Parser(prog="python -m utils.protocol.unlock", description=main.__doc__.split(":")[0])
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.folder):
        raise UserError(f"{args.folder}: no such folder")
    return unlock(args.folder)


if __name__ == "__main__":
    from utils.errors import run
    run(main)
