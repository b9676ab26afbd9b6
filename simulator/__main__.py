"""``python -m simulator``: run the simulator in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading

from simulator.dialects import DIALECTS
from simulator.engine import Simulator
from simulator.server import SimulatorServer


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A local simulator of the OpenAI (or Azure OpenAI) Files + Batches API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--speed", type=float, default=1.0, help="run batches N times faster")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SIMULATOR_API_KEY"),
        help="the only key accepted (default: $SIMULATOR_API_KEY, else any non-empty key)",
    )
    parser.add_argument("--state-file", default=None, help="JSON file that keeps the state")
    parser.add_argument(
        "--dialect",
        default=os.environ.get("SIMULATOR_DIALECT") or "openai",
        help=f"the API spoken: {', '.join(DIALECTS)} (default: $SIMULATOR_DIALECT, else openai)",
    )
    parser.add_argument(
        "--enqueued-token-limit",
        type=int,
        default=None,
        metavar="N",
        help="most estimated input tokens of unfinished batches per model (default: no limit)",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=0,
        metavar="N",
        help="start with N days (up to 30) of a team's finished batches, ending now (demo mode)",
    )
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be positive")
    # Checked here rather than with choices=, which argparse skips for a default from $ENV.
    if args.dialect not in DIALECTS:
        parser.error(f"--dialect must be one of {', '.join(DIALECTS)}")
    if args.enqueued_token_limit is not None and args.enqueued_token_limit < 0:
        parser.error("--enqueued-token-limit must not be negative")
    if not 0 <= args.history_days <= 30:
        parser.error("--history-days must be from 0 to 30")
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}, not loopback", file=sys.stderr)

    sim = Simulator(
        speed=args.speed,
        api_key=args.api_key,
        state_file=args.state_file,
        dialect=args.dialect,
        enqueued_token_limit=args.enqueued_token_limit,
        history_days=args.history_days,
    )
    server = SimulatorServer(sim, host=args.host, port=args.port)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    print(server.base_url, flush=True)
    print(f"control API: {server.root_url}/_sim/state", file=sys.stderr, flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
