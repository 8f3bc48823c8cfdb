"""Stage `store` (runs on every `dvc repro`): the MLflow store holds a run for every finished
run folder; runs missing from it (a deleted `mlflow.db`, a fresh server) are re-logged."""

from _common import run, start

from upreid.steps.store import sync_store


def main() -> None:
    params = start()
    done = sync_store(params)
    print(f"MLflow store: {done['runs']} finished runs, {done['relogged']} re-logged from runs/")


if __name__ == "__main__":
    run(main)
