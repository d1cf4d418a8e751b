"""The ``vislex`` command line: serve, worker, and the feature commands (align, evaluate, ...)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from typing import Optional

import typer

from app.settings import SettingsError, load_settings

app = typer.Typer(help="vislex: word translation through vision.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

# Feature command modules, each with ``register(app)``.
FEATURE_COMMANDS = ("alignment", "vision", "uclip", "clip", "serving", "sentences")


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep or not key or not path:
            raise typer.BadParameter(f"{what} must look like NAME=PATH, got {value!r}")
        out[key] = path
    return out


def _settings_or_exit(**overrides):
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)


@app.command()
def serve(
    space: list[str] = typer.Option([], "--space", help="word space LANG=PATH (.vec, .bin, .npy); repeatable"),
    mapping: list[str] = typer.Option([], "--mapping", help="mapping SRC-TGT=PATH (saved Mapping); repeatable"),
    host: Optional[str] = typer.Option(None, help="bind address (VISLEX_HOST)"),
    port: Optional[int] = typer.Option(None, help="port (VISLEX_PORT, default 8000)"),
) -> None:
    """Run the API; with no VISLEX_REDIS_URL also an embedded Redis and one worker."""
    from app.probes import describe as describe_probes
    from services.observability import configure_logging
    from vislex.supervisor import auth_notices
    from vislex.supervisor import serve as run

    overrides: dict = {}
    env = dict(os.environ)
    if space:
        overrides["spaces"] = _pairs(space, "--space")
        env["VISLEX_SPACES"] = json.dumps(overrides["spaces"])
    if mapping:
        overrides["mappings"] = _pairs(mapping, "--mapping")
        env["VISLEX_MAPPINGS"] = json.dumps(overrides["mappings"])
    if host:
        overrides["host"] = env["VISLEX_HOST"] = host
    if port:
        overrides["port"] = port
        env["VISLEX_PORT"] = str(port)
    settings = _settings_or_exit(**overrides)
    configure_logging(settings.log_level, settings.log_json)
    for notice in auth_notices(settings):
        typer.echo(notice, err=True)
    typer.echo(describe_probes(settings), err=True)
    run(settings, env)


@app.command()
def worker(
    queues: Optional[str] = typer.Option(None, help="comma-separated queues (VISLEX_WORKER_QUEUES)"),
    concurrency: Optional[int] = typer.Option(None, help="worker processes (VISLEX_WORKER_CONCURRENCY)"),
    ping: bool = typer.Option(False, "--ping", help="healthcheck: exit 0 if a worker of this host answers, else 1"),
    any_host: bool = typer.Option(False, "--any-host", help="with --ping: any worker on the Redis counts"),
    ping_timeout: float = typer.Option(2.0, "--ping-timeout", help="with --ping: seconds to wait for replies"),
) -> None:
    """Run a Celery worker on VISLEX_REDIS_URL (required when run on its own); --ping checks one is alive."""
    from services.jobs.worker import ping_main, run_worker
    from services.observability import configure_logging

    settings = _settings_or_exit()
    if settings.redis_url is None:
        typer.echo("error: VISLEX_REDIS_URL: a worker needs the Redis URL the API uses "
                   "(`vislex serve` sets it for its own worker)", err=True)
        raise typer.Exit(2)
    if ping:
        raise typer.Exit(ping_main(settings.redis_url, timeout=ping_timeout, any_host=any_host))
    configure_logging(settings.log_level, settings.log_json)
    run_worker(settings.redis_url, queues=queues or settings.worker_queues,
               concurrency=concurrency or settings.worker_concurrency, data_dir=settings.data_dir,
               time_limit_s=settings.job_time_limit_s, loglevel=settings.log_level,
               heartbeat_s=settings.job_heartbeat_s, settings_loader=load_settings)


@app.command()
def version() -> None:
    """Print the version."""
    import vislex

    typer.echo(vislex.__version__)


def _register_features() -> None:
    for name in FEATURE_COMMANDS:
        module = f"vislex.commands.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(app)


_register_features()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
