"""Stage `data`: generate the datasets (or check the real ones) and write data/manifest.json."""

from _common import run, start

from upreid.steps.data import run_data


def main() -> None:
    run_data(start())


if __name__ == "__main__":
    run(main)
