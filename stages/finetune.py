"""Stage `finetune@METHOD-DATASET`: every init and seed of one supervised method on one dataset."""

import sys

from _common import run, start

from upreid.steps.finetune import run_finetune


def main() -> None:
    run_finetune(start(distributed=True), sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    run(main)
