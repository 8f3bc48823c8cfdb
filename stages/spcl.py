"""Stage `spcl@SETTING`: SpCL, target only (M) or PersonX -> Market-1501 (P2M), every init."""

import sys

from _common import run, start

from upreid.steps.spcl import run_spcl


def main() -> None:
    run_spcl(start(distributed=True), sys.argv[1])


if __name__ == "__main__":
    run(main)
