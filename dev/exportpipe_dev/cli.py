"""``exportpipe`` command (development only, never shipped to Lambda).

- ``exportpipe sandbox <source> --port N``: serve one source sandbox on 127.0.0.1 until interrupted;
  the first stdout line is the handshake ``{"source", "base_url", "credentials"}``.
- ``exportpipe local``: run the whole local stack until interrupted; prints its endpoints as JSON.
- ``exportpipe demo``: run every scheduled export end to end and show what landed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="exportpipe", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sb = sub.add_parser("sandbox", help="serve one source sandbox on loopback")
    sb.add_argument("source", choices=_sandbox_names())
    sb.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")

    sub.add_parser("local", help="run the local stack (moto + sandboxes + front door) until interrupted")

    demo = sub.add_parser("demo", help="run the scheduled exports end to end and show the result")
    demo.add_argument(
        "--output", default="demo-output", help="folder for the landed objects and summary.json"
    )
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every job")

    args = parser.parse_args(argv)
    if args.command == "sandbox":
        from exportpipe_dev.sandbox.base import run_cli

        return run_cli(args.source, args.port)
    if args.command == "local":
        return _run_local()
    from exportpipe_dev.demo import run_demo

    return run_demo(args.output, timeout=args.timeout)


def _sandbox_names() -> list[str]:
    from exportpipe_dev.sandbox.base import SANDBOXES

    return sorted(SANDBOXES)


def _run_local() -> int:
    from exportpipe_dev.local import LocalStack

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStack() as stack:
        info = {
            "endpoint_url": stack.endpoint_url,
            "region": "us-east-1",
            "bucket": stack.bucket,
            "table": stack.table,
            "event_bus": stack.event_bus,
            "state_machine_arn": stack.state_machine_arn,
            "webhook_url": stack.webhook_url,
            "functions": {k: v.name for k, v in stack.functions.items()},
            "schedules": sorted(stack.schedules),
            "sandboxes": {name: stack.sandbox_url(name) for name in stack.sandboxes},
            "connection_secret_prefix": stack.connection_secret_prefix,
        }
        print(json.dumps(info), flush=True)  # one line, like the sandboxes' handshake
        print("local stack running; Ctrl-C to stop", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
