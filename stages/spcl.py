"""Stage `spcl`: SpCL target only (M) and PersonX -> Market-1501 (P2M), from every init."""

from _common import run, start

from upreid.steps.spcl import run_spcl


def main() -> None:
    run_spcl(start(distributed=True))


if __name__ == "__main__":
    run(main)
