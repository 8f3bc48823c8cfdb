"""Every benchmark, side by side, into reports/benchmarks.md (with the machine described).

    python benchmarks/run_all.py [--skip-e2e] [--default-json reports/pipeline_default.json]

Runs bench_eval (metrics vs the per-query reference; MSMT17-scale evaluation with and without
re-ranking), bench_pretrain (MoCo vs UP-ReID images/s in fp32 and bf16, loader images/s),
bench_finetune (images/s per method in fp32 and bf16), bench_precision (both precisions train for
200 steps), bench_run (one whole fine-tuning run with the runtime options off and on),
bench_spread (a stage's runs in one process or spread over two) and the
quick profile's end-to-end wall time and peak memory; the default profile's, measured once by
measure_pipeline.py, is read from its JSON, and the GPU check's (benchmarks/gpu_check.py, run on
a GPU machine) from reports/gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{cpu}; {os.cpu_count()} cores; {mem:.0f} GiB RAM; GPU: {gpu}; "
        f"Python {platform.python_version()}; torch {torch.__version__}; {platform.system()}"
    )


def run(script: str, *args: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    cmd = [sys.executable, str(HERE / script), *args, "--json", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def section(title: str, result: dict) -> list[str]:
    lines = [f"## {title}", "", "```", json.dumps(result, indent=1), "```", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--eval-args", default="", help="extra args for bench_eval.py")
    ap.add_argument("--default-json", type=Path, default=ROOT / "reports" / "pipeline_default.json")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks.md")
    args = ap.parse_args()
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}",
        "",
        "Produced by `python benchmarks/run_all.py`. Ratios are measured side by side in "
        "one run; medians over steps.",
        "",
    ]
    lines += section(
        "Evaluation: ours vs the per-query reference loop",
        run("bench_eval.py", *args.eval_args.split()),
    )
    lines += section(
        "Evaluation at MSMT17 scale (11,659 x 82,161, 2048-d): seconds and peak "
        "memory, without and with re-ranking",
        run("bench_eval.py", "--msmt"),
    )
    lines += section(
        "Both precisions train: UP-ReID pre-training and BoT fine-tuning, 200 "
        "steps each (default profile geometry)",
        run("bench_precision.py"),
    )
    lines += section(
        "Pre-training: MoCo v2 vs UP-ReID, and the data loader (ResNet-18, 128x64)",
        run("bench_pretrain.py"),
    )
    lines += section(
        "Pre-training at the default profile's size (ResNet-18, 64x32)",
        run("bench_pretrain.py", "--height", "64", "--width", "32"),
    )
    lines += section(
        "Pre-training at the paper's geometry (ResNet-50, 256x128, batch 16)",
        run(
            "bench_pretrain.py",
            "--arch",
            "resnet50",
            "--height",
            "256",
            "--width",
            "128",
            "--batch",
            "16",
            "--steps",
            "4",
        ),
    )
    lines += section(
        "Fine-tuning: images/s per method (ResNet-18, 128x64)", run("bench_finetune.py")
    )
    lines += section(
        "Fine-tuning at the default profile's size (ResNet-18, 64x32)",
        run("bench_finetune.py", "--height", "64", "--width", "32"),
    )
    lines += section(
        "A whole fine-tuning run (default profile): checkpoint every epoch and no "
        "image cache (off) vs the profile's checkpoint_every and image_cache_mb (on)",
        run("bench_run.py"),
    )
    lines += section(
        "A stage's runs: one process with every core vs spread over 2 processes that share "
        "them (4 MGN runs, default profile)",
        run("bench_spread.py"),
    )
    if not args.skip_e2e:
        lines += section(
            "End to end: quick profile (`dvc repro`, fresh copy)",
            run("measure_pipeline.py", "--profile", "quick"),
        )
    if args.default_json.is_file():
        lines += section(
            "End to end: default profile (recorded run)", json.loads(args.default_json.read_text())
        )
    gpu = ROOT / "reports" / "gpu_check.md"
    if gpu.is_file():
        lines += [
            "## GPU (`python benchmarks/gpu_check.py`, on a GPU machine)",
            "",
            gpu.read_text(),
            "",
        ]
    else:
        lines += [
            "## GPU",
            "",
            "No GPU measurement recorded: no accelerator was available when "
            "this report was produced. `benchmarks/gpu_check.py` is the check to run on "
            "one; its `--tiny` mode runs the same code on the CPU in the tests, and the "
            "`cuda`-marked tests it runs are skipped without a GPU.",
            "",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
