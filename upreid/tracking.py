"""MLflow, in one place: stage runs nested under a pipeline run, their params, metrics, tags
and artifacts, and reading them back for the report. No other module imports ``mlflow``.

The store is ``sqlite:///<project>/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` names another
(a remote ``http://`` server, say). A remote server is checked before any work starts.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "upreid"
TAG = "upreid."


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used."""


def tracking_uri(root: str | Path = ".") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sqlite store in ``root``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` when an HTTP tracking server does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with {resp.status}")
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(
            f"MLflow server {uri} is unreachable ({err}); start it, or unset "
            "MLFLOW_TRACKING_URI to use the local store mlflow.db"
        ) from err


@functools.lru_cache(maxsize=4)
def _client(uri: str) -> Any:
    """One client per store and process: opening a sqlite store checks its schema (~0.3 s).
    (MLflow keeps one engine per URI in a process: a store deleted meanwhile is seen by the
    next process, e.g. the next ``dvc repro``.)"""
    import mlflow  # heavy: imported when tracking is used

    return mlflow.MlflowClient(uri)


def _use_store(uri: str) -> None:
    """Point MLflow's fluent API (``mlflow.start_run``) at ``uri`` for the call that follows,
    leaving ``MLFLOW_TRACKING_URI`` as it was: MLflow's ``set_tracking_uri`` also writes that
    variable, which would make :func:`tracking_uri` answer this store for every other root."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def _experiment_id(client: Any, profile: str, root: str | Path = ".") -> str:
    """The profile's experiment. In the local store its artifacts live in ``<root>/mlruns``,
    whatever the current folder (MLflow's own default follows the current folder)."""
    name = f"{EXPERIMENT_PREFIX}-{profile}"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:"):  # a local store (mlflow sets the env var)
        location = (Path(root).resolve() / "mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _pipeline_run(client: Any, exp_id: str, profile: str, commit: str) -> str:
    """The pipeline run of this profile and commit: found, or created."""
    key = f"{profile}@{commit}"
    found = client.search_runs([exp_id], f"tags.`{TAG}pipeline` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id,
        run_name=f"pipeline {key}",
        tags={f"{TAG}pipeline": key, f"{TAG}profile": profile, f"{TAG}commit": commit},
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as ``a.b.c -> str(value)`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(list(value) if isinstance(value, tuple) else value)[:6000]
    return out


@dataclass
class StageRun:
    """One stage's MLflow run. ``log_metrics`` buffers and flushes in batches; a failing remote
    store is reported once and never stops training (the stage's own files keep every value)."""

    client: Any
    run_id: str
    flush_every: float = 5.0
    _buffer: list[Any] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _broken: bool = False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._buffer += [
            Metric(k, float(v), stamp, int(step))
            for k, v in metrics.items()
            if isinstance(v, int | float)
        ]
        if time.monotonic() - self._last_flush > self.flush_every or len(self._buffer) > 900:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        while self._buffer and not self._broken:
            batch, self._buffer = self._buffer[:900], self._buffer[900:]
            try:
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as err:  # a remote store that went away: keep training
                self._broken = True
                log.error(
                    "MLflow logging failed (%s); training goes on, metrics stay in the "
                    "stage's own files",
                    err,
                )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_datasets(self, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """MLflow dataset inputs, by context (``train``, ``target``, ...): each one's name,
        source folder, and its manifest entry (splits, identities, images) as the profile."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for context, info in datasets.items():
            profile = {k: v for k, v in info.items() if k not in ("name", "source")}
            blob = json.dumps(profile, sort_keys=True, default=str)
            inputs.append(
                DatasetInput(
                    Dataset(
                        name=str(info["name"]),
                        digest=hashlib.sha256(blob.encode()).hexdigest()[:10],
                        source_type="local",
                        source=json.dumps({"uri": str(info["source"])}),
                        profile=blob,
                    ),
                    tags=[InputTag("mlflow.data.context", context)],
                )
            )
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_model(self, module: Any, example: Any) -> str:
        """``module`` (a ``torch.nn.Module``) as the run's MLflow model ``model``: saved as a
        torch.export program (loading it runs no pickled code), with the signature of its
        output on ``example`` (a float32 NumPy batch) and ``example`` itself. Returns the
        model URI (``mlflow.pytorch.load_model`` takes it, and so does ``upreid register``)."""
        import mlflow
        import mlflow.pytorch
        import torch
        import torchvision
        from mlflow.models import infer_signature

        with torch.no_grad():
            signature = infer_signature(example, module(torch.from_numpy(example)).numpy())
        _use_store(self.client.tracking_uri)
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                module,
                name="model",
                signature=signature,
                input_example=example,
                serialization_format="pt2",
                validate_serving_input=False,  # a reload and predict, ~2 s a model
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"torchvision=={torchvision.__version__.split('+')[0]}",
                ],
            )
        self.client.set_tag(self.run_id, f"{TAG}model_uri", info.model_uri)
        return str(info.model_uri)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or folder. Into a local artifact store on the same filesystem a file is
        hard-linked, not copied: run folders are written by atomic replace, so the link keeps
        the logged content, and a checkpoint does not take its disk twice."""
        path = Path(path)
        if not path.exists():
            return
        local = _local_artifact_dir(self.client.get_run(self.run_id).info.artifact_uri)
        if local is not None and _link_tree(path, local / (artifact_path or "")):
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def _local_artifact_dir(uri: str) -> Path | None:
    """The folder of a ``file:`` (or plain path) artifact URI; None for remote stores."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def _link_tree(src: Path, dest_dir: Path) -> bool:
    """Hard-link ``src`` (a file, or a folder's files) into ``dest_dir``. False, with the links
    made so far removed, when links are not possible there (another filesystem, say)."""
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    base = src.parent if src.is_file() else src
    made: list[Path] = []
    try:
        for file in files:
            target = dest_dir / file.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            os.link(file, target)
            made.append(target)
    except OSError:
        for target in made:  # a copy must never write through a link into the run folder
            target.unlink(missing_ok=True)
        return False
    return True


@contextmanager
def stage_run(
    key: str,
    *,
    profile: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    commit: str,
    root: str | Path = ".",
) -> Iterator[StageRun]:
    """A run named ``key`` nested under the pipeline run; FAILED if the body raises."""
    uri = tracking_uri(root)
    check_reachable(uri)
    client = _client(uri)
    exp_id = _experiment_id(client, profile, root)
    parent = _pipeline_run(client, exp_id, profile, commit)
    all_tags = {
        "mlflow.parentRunId": parent,
        **standard_tags(commit),
        f"{TAG}key": key,
        f"{TAG}stage": key.split("/")[0],
        f"{TAG}profile": profile,
        f"{TAG}commit": commit,
        **{f"{TAG}{k}": str(v) for k, v in tags.items()},
    }
    run = client.create_run(exp_id, run_name=key, tags=all_tags)
    from mlflow.entities import Param

    flat = [Param(k, v) for k, v in flatten(params).items()]
    for i in range(0, len(flat), 90):
        client.log_batch(run.info.run_id, params=flat[i : i + 90])
    stage = StageRun(client, run.info.run_id)
    monitor = _system_metrics(run.info.run_id, uri)
    status = "FAILED"
    try:
        yield stage
        status = "FINISHED"
    finally:
        if monitor is not None:
            monitor.finish()
        stage.flush()
        client.set_terminated(run.info.run_id, status)
        client.set_terminated(parent, "FINISHED")  # the pipeline run spans its stages' runs


def _free_port() -> int:
    """A loopback port free now (another process may bind it before the caller does)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_taken(port: int) -> bool:
    """Whether some process holds the loopback ``port``."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@contextmanager
def serve(
    store: str | Path,
    *,
    port: int = 0,
    extra_args: Sequence[str] = (),
    cwd: str | Path | None = None,
    log_file: str | Path | None = None,
    timeout: float = 180.0,
) -> Iterator[str]:
    """``mlflow server`` over the sqlite store ``store`` on a free loopback port, yielding its
    base URL once ``/health`` answers (7-20 s); the server and its workers are stopped at the
    end, however the body ends. ``port`` 0 takes a free one, and another (up to three tries,
    ``timeout`` seconds each) when the server exits because some process bound the port between
    the pick and the server's bind; a process that answers ``/health`` on it first is taken for
    the server. ``extra_args`` go to the server's command line (e.g. ``--allowed-hosts``)."""
    import signal
    import subprocess

    def stop(server: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the group: uvicorn and job workers too
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                pass
            if sig == signal.SIGTERM:
                time.sleep(0.5)  # the workers' own shutdown

    def wait_health(server: subprocess.Popen[bytes], base: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                check_reachable(base, timeout=2)
                return "up"
            except TrackingError:
                if server.poll() is not None:
                    return "exited"
                if time.monotonic() > deadline:
                    return "silent"
                time.sleep(0.5)

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri"]
    cmd += [f"sqlite:///{Path(store).resolve()}", "--host", "127.0.0.1", "--workers", "1"]
    cmd += [*extra_args, "--port"]
    tries = 1 if port else 3
    server: subprocess.Popen[bytes] | None = None
    try:
        with open(log_file or os.devnull, "wb") as log:
            for attempt in range(1, tries + 1):
                bound = port or _free_port()
                server = subprocess.Popen(
                    [*cmd, str(bound)],
                    cwd=cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                base = f"http://127.0.0.1:{bound}"
                state = wait_health(server, base)
                if state != "exited" or attempt == tries or not _port_taken(bound):
                    break
                stop(server)  # another process bound the port after the pick: pick again
        where = f"port {bound}, try {attempt} of {tries}; its output: {log_file or 'pass log_file'}"
        if state == "exited":
            code = server.returncode if server else None
            raise TrackingError(f"mlflow server exited with {code} ({where})")
        if state == "silent":
            raise TrackingError(f"mlflow server: no /health in {timeout:.0f} s ({where})")
        yield base
    finally:
        if server is not None:
            stop(server)


def standard_tags(commit: str) -> dict[str, str]:
    """MLflow's own source and git tags (Source and Version columns of the UI), and the DVC
    experiment a run belongs to when ``dvc exp run`` started it."""
    tags = {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": Path(sys.argv[0]).name or "python",
        "mlflow.user": getpass.getuser(),
    }
    sha = commit.removesuffix("-dirty")
    if len(sha) == 40:
        tags["mlflow.source.git.commit"] = sha
    if os.environ.get("DVC_EXP_NAME"):
        tags[f"{TAG}dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        tags[f"{TAG}dvc_baseline"] = os.environ.get("DVC_EXP_BASELINE_REV", "")
    return tags


def _system_metrics(run_id: str, uri: str) -> Any:
    """MLflow's system metrics (CPU, memory, GPU when present) sampled beside the run, every
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (10 by default); off with
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false``."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true").lower() == "false":
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        interval = float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "10"))
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as err:  # optional: a missing sampler never stops a run
        log.warning("system metrics are off (%s)", err)
        return None


@dataclass(frozen=True)
class RunRecord:
    key: str
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]  # last value of each metric
    params: dict[str, str]


def run_records(run_ids: list[str], root: str | Path = ".") -> dict[str, RunRecord]:
    """The runs with these ids, by key."""
    client = _client(tracking_uri(root))
    out: dict[str, RunRecord] = {}
    for run_id in run_ids:
        run = client.get_run(run_id)
        key = run.data.tags.get(f"{TAG}key", run.info.run_name)
        out[key] = RunRecord(
            key, run_id, dict(run.data.tags), dict(run.data.metrics), dict(run.data.params)
        )
    return out


def latest_runs(profile: str, root: str | Path = ".") -> dict[str, RunRecord]:
    """The newest FINISHED run of each stage key of ``profile``."""
    uri = tracking_uri(root)
    check_reachable(uri)
    client = _client(uri)
    exp = client.get_experiment_by_name(f"{EXPERIMENT_PREFIX}-{profile}")
    if exp is None:
        return {}
    out: dict[str, RunRecord] = {}
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        for run in page:
            key = run.data.tags.get(f"{TAG}key")
            if key and key not in out:
                out[key] = RunRecord(
                    key,
                    run.info.run_id,
                    dict(run.data.tags),
                    dict(run.data.metrics),
                    dict(run.data.params),
                )
        token = page.token
        if not token:
            return out


def find_run(profile: str, key: str, input_hash: str, root: str | Path = ".") -> str | None:
    """The id of a FINISHED run of ``key`` made from the same inputs, if one exists."""
    uri = tracking_uri(root)
    client = _client(uri)
    exp = client.get_experiment_by_name(f"{EXPERIMENT_PREFIX}-{profile}")
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{TAG}key` = '{key}' and tags.`{TAG}input_hash` = '{input_hash}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def end_killed(profile: str, key: str, root: str | Path = ".") -> int:
    """Mark the runs of ``key`` still RUNNING (their process was killed: a live one would be
    this one) as KILLED; returns how many."""
    client = _client(tracking_uri(root))
    exp = client.get_experiment_by_name(f"{EXPERIMENT_PREFIX}-{profile}")
    if exp is None:
        return 0
    stale = client.search_runs(
        [exp.experiment_id], f"tags.`{TAG}key` = '{key}' and attributes.status = 'RUNNING'"
    )
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(stale)


def metric_history(run_id: str, name: str, root: str | Path = ".") -> list[tuple[int, float]]:
    """``(step, value)`` of one metric of one run, by step."""
    client = _client(tracking_uri(root))
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def artifact_paths(run_id: str, root: str | Path = ".") -> list[str]:
    """Every artifact file of one run, as paths relative to the run's artifact root."""
    client = _client(tracking_uri(root))
    found: list[str] = []
    folders: list[str | None] = [None]
    while folders:
        for item in client.list_artifacts(run_id, folders.pop()):
            (folders if item.is_dir else found).append(item.path)
    return sorted(found)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def ui_url(profile: str, root: str | Path = ".", base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of this profile's training runs (MLflow 3 opens an experiment in
    its GenAI view unless asked for ``workflowType=machine_learning``). ``base`` is where
    ``mlflow ui`` serves the local store; a remote tracking server is its own base."""
    uri = tracking_uri(root)
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
    elif not (uri.startswith("sqlite:///") and Path(uri[len("sqlite:///") :]).is_file()):
        return base  # no store yet: the experiment has no id
    exp = _client(uri).get_experiment_by_name(f"{EXPERIMENT_PREFIX}-{profile}")
    if exp is None:
        return base
    return f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"


def register_model(run_id: str, name: str, root: str | Path = ".") -> int:
    """Register the MLflow model of run ``run_id`` as a new version of ``name`` in the model
    registry; returns the version."""
    import mlflow

    client = _client(tracking_uri(root))
    uri = client.get_run(run_id).data.tags.get(f"{TAG}model_uri")
    if not uri:
        raise TrackingError(
            f"run {run_id} has no MLflow model: only fine-tuning and SpCL runs log one"
        )
    _use_store(client.tracking_uri)
    version = mlflow.register_model(uri, name)
    return int(version.version)


def find_run_id(profile: str, key_or_id: str, root: str | Path = ".") -> str:
    """The id of the newest FINISHED run named ``key_or_id`` in ``profile``, or
    ``key_or_id`` itself when it is a run id."""
    runs = latest_runs(profile, root)
    if key_or_id in runs:
        return runs[key_or_id].run_id
    if any(r.run_id == key_or_id for r in runs.values()):
        return key_or_id
    raise TrackingError(
        f"no finished run {key_or_id!r} in profile {profile!r}; give a run key "
        "(finetune/bot/market1501/upreid/s0) or an id from the MLflow UI"
    )
