"""Stage `finetune@METHOD`: every dataset, init and seed of one supervised method."""

import sys

from _common import run, start

from upreid.steps.finetune import run_finetune


def main() -> None:
    run_finetune(start(distributed=True), sys.argv[1])


if __name__ == "__main__":
    run(main)
