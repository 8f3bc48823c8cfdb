"""The README's library example runs as written."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## As a library") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_library_example_runs(tmp_path: Path) -> None:
    from upreid.data.synth import synthesize
    from upreid.models.reid import build_reid_model
    from upreid.params import load_params

    data = load_params(ROOT / "params.yaml", "quick").data
    sizes = {"train_identities": 4, "test_identities": 4, "distractors": 2}
    data = dataclasses.replace(
        data,
        pool=dataclasses.replace(data.pool, identities=2),
        **{
            n: dataclasses.replace(getattr(data, n), **sizes)
            for n in ("market1501", "cuhk03", "msmt17", "personx")
        },
    )
    synthesize(data, tmp_path / "data" / "synth")
    model = build_reid_model("bot", "resnet18", 4)
    ckpt = tmp_path / "runs" / "finetune" / "bot" / "market1501" / "upreid-s0" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(
        {
            "method": "bot",
            "arch": "resnet18",
            "num_classes": 4,
            "height": 64,
            "width": 32,
            "model": model.state_dict(),
        },
        ckpt,
    )
    proc = subprocess.run(
        [sys.executable, "-c", _readme_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\d+ queries, mAP \d+\.\d, rank-1 \d+\.\d", proc.stdout), proc.stdout
