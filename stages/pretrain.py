"""Stage `pretrain@VARIANT`: pre-train one variant; under torchrun when params ask for more
than one process (the paper profile)."""

import sys

from _common import run, start

from upreid.pipeline import relaunch_distributed, run_pretrain


def main() -> None:
    params = start()
    relaunch_distributed(params, sys.argv)
    run_pretrain(params, sys.argv[1])


if __name__ == "__main__":
    run(main)
