"""docker-compose.yml parses (checked by the docker client when it exists; no engine is needed).

Either the compose plugin (``docker compose``) or the standalone ``docker-compose`` does the check;
with neither on the machine, only the structural test below runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compose_command() -> list[str] | None:
    if shutil.which("docker") is not None:
        if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    return None


COMPOSE = _compose_command()


@pytest.mark.skipif(COMPOSE is None, reason="neither `docker compose` nor `docker-compose` on this machine")
def test_compose_config_parses():
    proc = subprocess.run([*COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_compose_services_share_redis_and_data():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert set(services) == {"redis", "api", "worker"}
    for name in ("api", "worker"):
        assert services[name]["environment"]["VISLEX_REDIS_URL"] == "redis://redis:6379/0"
        assert "vislex-data:/data" in services[name]["volumes"]
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert all("healthcheck" in s for s in services.values())
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfile_pins_torch_and_has_cpu_variant():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "torch==2.13.0" in text
    assert "ARG VARIANT" in text and "base-cpu" in text and "base-gpu" in text


def test_worker_healthcheck_is_the_cli_ping():
    """The worker's healthcheck runs `vislex worker --ping` (tested against a real worker in
    tests/services/jobs/test_worker_ping.py), not a celery CLI pointed at an unconfigured app."""
    yaml = pytest.importorskip("yaml")
    from typer.testing import CliRunner

    from vislex.cli import app

    check = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]["healthcheck"]
    assert check["test"][:4] == ["CMD", "vislex", "worker", "--ping"]
    assert "celery" not in " ".join(check["test"])
    help_text = CliRunner().invoke(app, ["worker", "--help"], terminal_width=200).output
    for option in check["test"][3:]:
        if option.startswith("--"):
            assert option in help_text


def test_compose_does_not_publish_the_api_on_all_interfaces_without_a_key():
    """Issue 19: an anonymous API on every interface lets anyone write. Either the port is bound to loopback,
    or the compose file refuses to start without VISLEX_API_KEYS (``${VISLEX_API_KEYS:?...}``)."""
    yaml = pytest.importorskip("yaml")
    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    key = str(api["environment"].get("VISLEX_API_KEYS", ""))
    key_required = key.startswith("${VISLEX_API_KEYS:?")
    for port in api.get("ports", []):
        spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}:{port.get('target')}"
        assert key_required or spec.startswith(("127.0.0.1:", "[::1]:", "localhost:")), spec
    assert "VISLEX_API_KEYS" in api["environment"]  # keys reach the API when the operator sets them


def test_api_healthcheck_uses_the_probe_port():
    """Issue 19: under overload the API port's /readyz waits behind the event loop (3.2 s in the drill); the
    healthcheck asks the probe listener (VISLEX_PROBE_PORT, own thread) instead, which is not published."""
    yaml = pytest.importorskip("yaml")
    from app.settings import Settings

    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    env = api["environment"]
    probe_port = int(env["VISLEX_PROBE_PORT"])
    settings = Settings(port=int(env.get("VISLEX_PORT", 8000)), probe_port=probe_port)  # a valid pair
    assert settings.probe_port == probe_port and probe_port != settings.port
    test = api["healthcheck"]["test"]
    assert test[:3] == ["CMD", "curl", "-fsS"]
    assert test[3] == f"http://127.0.0.1:{probe_port}/readyz"
    assert float(api["healthcheck"]["timeout"].rstrip("s")) >= 1  # the probe answers in ms; 1 s is ample
    for port in api.get("ports", []):  # the probe port stays inside the container
        assert not str(port).endswith(f":{probe_port}"), port
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "VISLEX_PROBE_PORT" in dockerfile and "EXPOSE 8000 8001" in dockerfile
