"""``tally serve | keygen | openapi``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tally.config import Settings
from tally.domain.keys import new_secret


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally", description="A double-entry ledger service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (embedded SQLite by default)")
    serve.add_argument("--host", help="listen address (TALLY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (TALLY_PORT)")
    serve.add_argument("--database-url", help="database URL (TALLY_DATABASE_URL)")
    serve.add_argument("--log-format", choices=["json", "console"], help="TALLY_LOG_FORMAT")
    commands.add_parser("keygen", help="print a fresh root key for TALLY_ROOT_KEY")
    commands.add_parser("openapi", help="print the OpenAPI document")
    args = parser.parse_args(argv)

    if args.command == "keygen":
        print(new_secret("root"))
        return 0
    if args.command == "openapi":
        from tally.bootstrap import build_app

        app = build_app(Settings(database_url="sqlite://", log_format="json"))
        print(json.dumps(app.openapi(), indent=2, sort_keys=True))
        return 0
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tally.bootstrap import build_app

    overrides = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("database_url", args.database_url),
            ("log_format", args.log_format),
        )
        if value is not None
    }
    settings = Settings(**overrides)
    app = build_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
