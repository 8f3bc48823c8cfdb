"""Stage `pretrain`: every pre-training variant the tables need (or only the variants named on
the command line); under torchrun when params ask for more than one process: the runs spread
over the processes (`launch.pretrain: spread`), or each run over all of them (`ddp`)."""

import sys

from _common import run, start

from upreid.steps.pretrain import run_pretrain_stage


def main() -> None:
    run_pretrain_stage(start(distributed=True), sys.argv[1:] or None)


if __name__ == "__main__":
    run(main)
