"""The study behind scripts/sweep.sh: its variables (from the environment) -> the plan
(utils/study/plan.py) -> written to PLAN, or run here (utils/study/executor.py). The reference of the
variables is docs/SWEEP.md.

    DATASET=digits ARCH=resnet20 EPOCHS=6 TRAJ=6 WIN=3 RATES="0.5 0.8" METHODS="tdds el2n random" \\
        python scripts/sweep.py          # the same as bash scripts/sweep.sh
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: utils
from utils.args import Parser  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.protocol.files import ensure_writable_dir, save_text  # noqa: E402
from utils.study.plan import VARIABLES, make_plan, near_misses, plan_text  # noqa: E402

PROG = "sweep.sh"


def parsers():
    """{script: argv -> its parsed flags}: each script's own parser and its checks of the flags alone
    (nothing read, nothing written), to check every planned line before anything runs."""
    from argparse import Namespace

    import importance_evaluation
    import train
    import train_subset
    from utils.args import check_training_args

    def full(argv):
        args = train.parse_args(argv)
        check_training_args(args)
        train.check_dynamic_args(args)
        return args

    def subset(argv):
        args = train_subset.parse_args(argv)
        check_training_args(args)
        # the teacher is trained in stage 1: its file is checked when the run starts, not at plan time
        train_subset.check_subset_args(Namespace(**{**vars(args), "teacher": None, "kd_alpha": None})
                                       if args.teacher else args)
        return args
    return {"train.py": full, "train_subset.py": subset, "importance_evaluation.py": importance_evaluation.parse_args}


def main(environ=None, cwd=None, argv=()):
    """Plan the study of `environ` (default: os.environ); returns the exit status (2: a mistake in the
    variables, reported in one line, nothing written). The study takes no arguments: --help shows the
    variables, anything else is refused (rather than running the default study)."""
    environ = os.environ if environ is None else environ
    parser = Parser(prog="sweep.sh", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     epilog="variables [default]: " + ", ".join(
                                         f"{k} [{v}]" if v else k for k, v in VARIABLES.items()) +
                                     " (docs/SWEEP.md)")
    if argv:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            return e.code
    try:
        near_misses(environ)
        plan = make_plan(environ, cwd, parse=parsers())
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for text in plan.settings + plan.notes:
        print(text)
    n = {s: len(plan.stages[s]) for s in plan.stages}
    if plan.cfg["PLAN"]:
        save_text(plan.cfg["PLAN"], plan_text(plan))
        print(f"plan: {plan.cfg['PLAN']}: stage 1 {n[1]} commands (in order), stage 2 {n[2]} (independent), "
              f"stage 3 {n[3]} (in order)")
        return 0
    try:
        ensure_writable_dir(plan.cfg["OUT"], "OUT")
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from utils.study.executor import Executor
    return Executor(plan, environ).run()


if __name__ == "__main__":
    sys.exit(main(argv=sys.argv[1:]))
