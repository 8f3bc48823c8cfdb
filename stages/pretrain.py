"""Stage `pretrain@VARIANT`: pre-train one variant; under torchrun when params ask for more
than one process (the paper profile)."""

import sys

from _common import run, start

from upreid.steps.pretrain import run_pretrain


def main() -> None:
    run_pretrain(start(distributed=True), sys.argv[1])


if __name__ == "__main__":
    run(main)
