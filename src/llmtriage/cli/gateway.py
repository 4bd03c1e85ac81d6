"""The gateway's commands: serve, export its request log, make a client key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmtriage.cli.common import (
    CatalogOpt,
    console,
    err,
    fail,
    model_catalog,
    user_errors,
    warn_catalog,
    writable,
)


def serve(
    config: Annotated[Path | None, typer.Option(
        help="Gateway config (TOML): models, policies, keys, limits, request log; default: "
             "the embedded local ladder behind two policies, 'triage' (fitted on its "
             "recording) and 'triage-cascade' (a threshold cascade), no keys.")] = None,
    catalog: CatalogOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Run on the Ray cluster at this address, as a Ray Serve deployment "
                      "(needs the 'scale' extra).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="With --ray: gateway replicas.")] = 1,
) -> None:
    """Serve the catalog's models and policies behind an OpenAI-compatible API."""
    if ray is not None:
        from llmtriage.serving.ray_serve import deploy

        if catalog is not None:
            fail("with --ray, give the models in --config (every replica reads it)")
        with user_errors():
            from llmtriage.serving.config import load_gateway_config

            load_gateway_config(config)  # a bad config fails here, not in every replica
            console.print(f"joining the Ray cluster at {ray} to serve {replicas} gateway "
                          f"replica(s) on http://{host}:{port}/v1")
            deploy(config, ray, replicas, host, port)
        return
    from llmtriage.serving.app import build_gateway
    from llmtriage.serving.config import load_gateway_config
    from llmtriage.serving.server import listening_socket, run

    with user_errors():
        cfg = load_gateway_config(config)
        if catalog is not None and cfg.models is not None:
            fail("give the models either in --config or in --catalog, not both")
        cat = model_catalog(catalog, None) if catalog is not None else cfg.catalog()
        settings = cfg.gateway
        gateway, policies = build_gateway(cfg, cat)
        sock = listening_socket(host, port)
    warn_catalog(cat)
    if not cfg.keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] no API keys configured and listening on {host}: "
                  "anyone who can reach it can spend on your models")
    log = (settings.database_url.split("@")[-1] if settings.database_url
           else settings.request_log or "off")  # never a password
    if log != "off":
        log = f"{log}, rows kept " + (f"{settings.log_retention_days:g} days"
                                      if settings.log_retention_days else "for ever")
    state = settings.state_url.split("@")[-1] if settings.state_url else "in memory"
    console.print(f"serving {', '.join(policies)} and {', '.join(cat.names())} on "
                  f"http://{host}:{port}/v1 (request log: {log}; limits and sessions: "
                  f"{state})")
    run(gateway, sock, settings)


def export(
    out: Annotated[Path, typer.Option("--out", help="Long-format table to write "
                                      "(.csv, .jsonl or .parquet).")],
    log: Annotated[str | None, typer.Option(
        help="The gateway's request log: a SQLite file or a postgresql:// URL (default: "
             "where `serve` keeps it).")] = None,
) -> None:
    """Write the gateway's answered requests with feedback as a long-format outcome table."""
    from llmtriage.data.loaders.generic import check_suffix, write_frame
    from llmtriage.serving.config import default_log_path
    from llmtriage.serving.requestlog import export_frame

    with user_errors():
        check_suffix(out)
    log = log or str(default_log_path())
    writable(out, reads=[] if "://" in log else [Path(log)])
    with user_errors():
        frame = export_frame(log)
        write_frame(frame, out)
    console.print(f"wrote {len(frame)} outcomes ({frame['prompt_id'].nunique()} prompts, "
                  f"{frame['model'].nunique()} models) to {out}")


def key(
    name: Annotated[str, typer.Option(help="The key's name in logs and metrics.")] = "client",
) -> None:
    """Make a client API key for the gateway; prints the key once and its config entry."""
    import secrets

    from pydantic import ValidationError

    from llmtriage.data.errors import faults
    from llmtriage.serving.config import ClientKey
    from llmtriage.serving.guard import key_hash

    token = "tri-" + secrets.token_urlsafe(32)
    try:  # the entry printed is one the config accepts (the name's rule is the config's)
        entry = ClientKey(name=name, sha256=key_hash(token))
    except ValidationError as exc:
        fail(f"--name {name!r}: {faults(exc.errors())}")
    console.print(f"key (give it to the client; it is not stored): {token}")
    console.print(f'\n[[keys]]\nname = "{entry.name}"\nsha256 = "{entry.sha256}"\n'
                  "# requests_per_minute = 600\n# budget_usd = 20.0", markup=False)
