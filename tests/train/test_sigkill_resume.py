"""A trainer SIGKILLed as soon as its first checkpoint is on disk and started again ends
bit-exactly where an uninterrupted run ends (CPU, same seed). SpCL here; pre-training and
fine-tuning are killed the same way through `dvc repro` in tests/test_pipeline_e2e.py, which
compares their results with uninterrupted runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from upreid.data.records import Record

ROOT = Path(__file__).resolve().parents[2]

# Runs one trainer on tiny data: argv = kind, out folder, data (pool folder or synth root).
SCRIPT = r"""
import dataclasses, json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from upreid.params import load_params
kind, out, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
p = load_params(Path({root!r}) / "params.yaml", "quick")
if kind == "pretrain":
    from upreid.data.records import Record
    from upreid.experiments import pretrain_variant
    from upreid.train.pretrain import pretrain
    pp = dataclasses.replace(pretrain_variant(p.pretrain, "upreid"), height=32, width=16,
                             batch_size=8, epochs=3, queue_size=16, hidden_dim=16, dim=8,
                             patches=4, warmup_epochs=1, checkpoint_every_steps=2)
    records = [Record(str(f), -1, 0) for f in sorted(data.glob("*.jpg"))]
    result = pretrain(pp, records, out, seed=4)
    product = out / "backbone.pt"
elif kind == "finetune":
    from upreid.data.readers import read_market1501
    from upreid.train.finetune import finetune
    mp = dataclasses.replace(p.finetune.bot, height=32, width=16, epochs=3, eval_every=1, p=4,
                             k=4, milestones=(2,))
    result = finetune("bot", mp, "resnet18", read_market1501(data / "market1501"), "scratch",
                      None, out, p.eval, 4, checkpoint_every=1)
    product = out / "best.pt"
else:
    from upreid.data.readers import read_market1501
    from upreid.train.spcl import adapt
    sp = dataclasses.replace(p.spcl, height=32, width=16, epochs=3, iters_per_epoch=3,
                             batch_size=16, k=4, eval_every=1, k1=8, k2=3, min_samples=2)
    result = adapt(sp, "resnet18", read_market1501(data / "market1501"), None, "scratch", None,
                   out, p.eval, 4, checkpoint_every=1)
    product = out / "model.pt"
result = {{k: v for k, v in result.items() if k not in ("wall_s", "images_per_s")}}
(out / "done.json").write_text(json.dumps({{"result": result, "product": str(product)}}))
"""

CHECKPOINT = {"pretrain": "checkpoint.pt", "finetune": "last.pt", "spcl": "last.pt"}


def _command(tmp: Path, kind: str, out: Path, data: Path) -> list[str]:
    script = tmp / "train.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    return [sys.executable, str(script), kind, str(out), str(data)]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_at_first_checkpoint(cmd: list[str], checkpoint: Path, done: Path) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not done.exists(), "the run finished before the kill"


def _product(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    done = json.loads((out / "done.json").read_text())
    blob = torch.load(done["product"], map_location="cpu", weights_only=True)
    return done["result"], blob.get("backbone", blob.get("model"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["spcl"])
def test_sigkill_then_resume_equals_uninterrupted(
    kind: str, tiny_pool: list[Record], tiny_synth: Path, tmp_path: Path
) -> None:
    data = Path(tiny_pool[0].path).parent if kind == "pretrain" else tiny_synth
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(_command(tmp_path, kind, full, data))
    cmd = _command(tmp_path, kind, cut, data)
    _kill_at_first_checkpoint(cmd, cut / CHECKPOINT[kind], cut / "done.json")
    _run(cmd)
    (res_a, w_a), (res_b, w_b) = _product(full), _product(cut)
    assert res_a == res_b
    assert w_a.keys() == w_b.keys()
    for key in w_a:
        assert torch.equal(w_a[key], w_b[key]), key
