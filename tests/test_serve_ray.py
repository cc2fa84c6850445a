"""fvt serve --ray: the deployment's settings as Ray Serve reads them, and the same app on two replicas of
a local Ray instance the test starts (same answers, routes, token and limits as one process)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import make_checkpoint, make_folder  # noqa: E402

from fvt.serve.options import ServeOptions  # noqa: E402
from fvt.serve.ray_app import build_deployment, deployment_settings  # noqa: E402


def test_deployment_carries_replicas_autoscaling_bounds_and_resources():
    fixed = ServeOptions(checkpoint="m.pt", ray=True, replicas=3, replica_cpus=0.5, max_batch=16).check()
    d = build_deployment(fixed)
    assert d.num_replicas == 3 and d.ray_actor_options == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert d.max_ongoing_requests >= 2 * 16 and d.max_queued_requests == fixed.max_queue
    scaled = ServeOptions(checkpoint="m.pt", ray=True, min_replicas=1, max_replicas=4).check()
    cfg = deployment_settings(scaled)["autoscaling_config"]
    assert (cfg["min_replicas"], cfg["max_replicas"]) == (1, 4) and "num_replicas" not in deployment_settings(scaled)
    build_deployment(scaled)  # Ray Serve validates the autoscaling config here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow  # a local Ray instance and two replicas: ~70 s on the shared 2-core machine
def test_two_replicas_on_local_ray_answer_like_one_process(ray_local, tmp_path):
    from ray import serve

    from fvt.serve.ray_app import APP_NAME, deploy
    from fvt.serve.runner import ModelRunner

    data = make_folder(tmp_path / "data", per_class=2)
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", data)
    files = sorted(data.rglob("*.png"))[:3]
    options = ServeOptions(checkpoint=str(ckpt), device="cpu", ray=True, replicas=2, replica_cpus=0.5,
                           port=_free_port(), token="tok", max_body_mb=0.1, log_level="warning").check()
    url = deploy(options)  # returns once both replicas have loaded the model
    auth = {"Authorization": "Bearer tok"}
    status = serve.status().applications[APP_NAME].deployments["fvt_model"]
    assert status.replica_states.get("RUNNING") == 2
    rows = httpx.post(url + "/v1/predict", headers=auth, timeout=120,
                      files=[("f", (f.name, f.read_bytes(), "image/png")) for f in files]).json()["predictions"]
    here = ModelRunner.load(options)  # the same model in this process, without Ray
    ref = here.infer([here.decode(f.read_bytes()) for f in files])
    assert [r["pred"] for r in rows] == [here.classes[i] for i in ref.argmax(1)]
    np.testing.assert_allclose([r["prob"] for r in rows], ref.max(1), atol=1e-5)
    pids = set()
    for _ in range(60):  # Ray's proxy spreads requests over both replicas
        pids.add(httpx.get(url + "/healthz", timeout=30).json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2
    assert httpx.post(url + "/v1/predict", files={"f": ("a.png", files[0].read_bytes())}).status_code == 401
    big = httpx.post(url + "/v1/predict", headers={**auth, "Content-Type": "image/png"}, content=b"\0" * 200_000)
    assert big.status_code == 413
    assert httpx.get(url + "/readyz").json()["status"] == "ready"
    serve.delete(APP_NAME)
