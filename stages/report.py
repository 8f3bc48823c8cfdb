"""Stage `report`: the paper's tables and figures, from the MLflow runs, into reports/."""

from _common import run, start

from upreid.pipeline import where
from upreid.steps.report import run_report


def main() -> None:
    params = start()
    run_report(params)
    print(where(params))


if __name__ == "__main__":
    run(main)
