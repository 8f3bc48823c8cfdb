"""A run's own curves, written as its MLflow artifact."""

from pathlib import Path

from PIL import Image

from upreid.report.figures import run_curves


def test_run_curves_draws_losses_and_scores(tmp_path: Path) -> None:
    history = [
        {"step": s, "loss": 5.0 - s, "loss_patch": 3.0 - 0.5 * s, "images_per_s": 90.0}
        for s in range(1, 5)
    ]
    history[-1].update(mAP=41.0, rank1=60.0)
    path = Path(run_curves(history, tmp_path / "curves.png"))
    with Image.open(path) as img:
        two_panels = img.size
    assert path.is_file() and not (tmp_path / "curves.tmp.png").exists()
    one = Path(
        run_curves(
            [{k: v for k, v in r.items() if k in ("step", "loss")} for r in history],
            tmp_path / "loss_only.png",
        )
    )
    with Image.open(one) as img:
        assert img.size[0] < two_panels[0]  # a losses-only run draws one panel
