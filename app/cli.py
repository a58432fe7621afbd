"""`iwlab` command line: the window, `serve` (headless lab) and `play` (flows).

Qt is imported only for the window, so `serve` and `play` work on machines
without any display or Qt libraries.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys

from iwlab.app.collector import tune_collector
from iwlab.backends.topology import TopologyError, load_topology, parse_hosts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iwlab", description="CPM <-> SMS / email interworking test lab (OMA CPM use cases 5.8 and 5.9).",
        epilog="exit codes: 0 all well; 1 a use case failed its verdict; 2 a usage error (unknown use case, "
               "bad topology or option); 3 the lab could not start (e.g. a port in use: try --port-base 0)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"iwlab {version()}")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--topology", metavar="FILE", help="lab topology (TOML); default: the bundled lab")
        p.add_argument("--host", metavar="ADDR[,ADDR]", default=None,
                       help="listen on these addresses (IPv4 and/or IPv6, e.g. 127.0.0.1,::1); default: the "
                            "topology's, loopback only")
        p.add_argument("--port-base", type=int, default=None, metavar="N",
                       help="0: free ports; N: shift every default port by N-5060 (default: 5060, 5062, 2775 ...)")

    def state(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("--state-dir", metavar="DIR", default=None,
                       help=f"keep the lab's store and mailboxes here; a restart delivers what was owed ({default})")
        p.add_argument("--fresh", action="store_true", help="empty the state folder first")

    window = sub.add_parser("window", help="open the lab window (the default when there is a display)")
    common(window)
    window.add_argument("--watch", metavar="HOST:PORT", type=host_and_port, default=None,
                        help="show the live ladder of a lab running elsewhere (`iwlab serve --trace-feed PORT`) "
                             "instead of starting one here")
    window.add_argument("--trace-feed", type=int, metavar="PORT", default=None,
                        help="offer this window's lab's live trace on PORT (0: a free one) for windows elsewhere")
    state(window, "default: the user's data folder")
    serve = sub.add_parser("serve", help="run the lab headless: endpoints table and one line per PDU")
    common(serve)
    state(serve, "default: none, a fresh lab each time")
    serve.add_argument("--devices", default="all", metavar="all|none|mary,peter,...",
                       help="which simulated devices run in-process; leave one out to use a real client instead")
    serve.add_argument("--endpoints-file", metavar="PATH", help="write the endpoints as JSON here")
    serve.add_argument("--quiet", action="store_true", help="do not print PDUs")
    serve.add_argument("--trace-feed", type=int, metavar="PORT", default=None,
                       help="offer the live trace on PORT (0: a free one) for `iwlab window --watch HOST:PORT`")
    serve.add_argument("--trace-feed-control", action="store_true",
                       help="let the feed's viewers change the lab too (the console commands; no authentication)")
    serve.add_argument("--trace-json", metavar="FILE", help="when stopped, export the whole trace as JSON")
    serve.add_argument("--pcap", metavar="FILE.pcapng", help="when stopped, export the whole trace as pcapng")
    play = sub.add_parser("play", help="run the use-case flows headless and print verdicts")
    common(play)
    play.add_argument("use_cases", nargs="*", metavar="USE-CASE",
                      help="scenario ids from resources/scenarios, e.g. 5.8.5 (default: all)")
    play.add_argument("--quiet", action="store_true", help="do not print the ladder")
    play.add_argument("--junit", metavar="FILE", help="write JUnit XML verdicts here (for CI)")
    play.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report here")
    play.add_argument("--trace-json", metavar="FILE", help="export the whole trace as JSON")
    play.add_argument("--pcap", metavar="FILE.pcapng", help="export the whole trace as pcapng (Wireshark, tshark)")
    return parser


def host_and_port(text: str) -> tuple[str, int]:
    """HOST:PORT, an IPv6 address in brackets ([::1]:7000), as SIP and URLs write it."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:7000 or [::1]:7000), not {text!r}")
    return host, int(port)


def version() -> str:
    try:
        return importlib.metadata.version("iwlab")
    except importlib.metadata.PackageNotFoundError:   # run from a checkout that was never installed
        return "unknown"


def load(args: argparse.Namespace):
    topology = load_topology(args.topology)
    if args.host:
        topology.hosts = parse_hosts(args.host)
        topology.host = topology.hosts[0]
    if args.port_base is not None:
        if args.port_base == 0:
            topology.with_free_ports()
        else:
            topology.shift_ports(args.port_base - 5060)
    return topology


def has_display() -> bool:
    """A screen someone can look at (an offscreen Qt platform, as set for tests, is not one)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(":", 1)[0]
    if platform in ("offscreen", "minimal"):
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or platform)


COMMANDS = ("window", "serve", "play")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        # No command: the window where there is a display, the flows headless where there is none.
        # Options given (e.g. `iwlab --port-base 0`) go to that command.
        if has_display():
            argv = ["window", *argv]
        else:
            print("iwlab: no display here (DISPLAY is not set), so no window: "
                  "running the use-case flows headless instead.\n")
            argv = ["play", *(argv or ["--port-base", "0"])]
    args = build_parser().parse_args(argv)
    command = args.command
    tune_collector()
    try:
        topology = load(args)
    except (TopologyError, OSError) as exc:
        print(f"iwlab: {exc}", file=sys.stderr)
        return 2
    if command in ("serve", "play"):
        from iwlab.app.headless import Exports, play, serve
        exports = Exports(junit=getattr(args, "junit", None), report=getattr(args, "report", None),
                          trace_json=args.trace_json, pcap=args.pcap)
        if command == "serve":
            return serve(topology, devices=args.devices, endpoints_file=args.endpoints_file, quiet=args.quiet,
                         exports=exports, state_dir=args.state_dir, fresh=args.fresh,
                         trace_feed_port=args.trace_feed, trace_feed_control=args.trace_feed_control)
        return play(topology, args.use_cases, quiet=args.quiet, exports=exports)
    from iwlab.app.main_window import run_window
    return run_window(topology, state_dir=args.state_dir, fresh=args.fresh, watch=args.watch,
                      trace_feed_port=args.trace_feed)


if __name__ == "__main__":
    sys.exit(main())
