# Copyright (c) airgap.ngc contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command line: ``python -m tests.testbed up|down|fault|info --dir DIR ...`` (see README.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._common import TestbedError
from .seed import SCALES
from .testbed import FaultSwitch, Testbed, TestbedInfo, info_json, running_testbed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description="airgap.ngc integration test bed")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything, seed, print the TestbedInfo JSON")
    up.add_argument("--dir", required=True, type=Path)
    up.add_argument("--scale", default="small", choices=sorted(SCALES))
    up.add_argument("--seed", default=1, type=int)
    up.add_argument("--no-engine", action="store_true", help="do not start dockerd")
    down = commands.add_parser("down", help="stop the test bed started in DIR")
    down.add_argument("--dir", required=True, type=Path)
    info = commands.add_parser("info", help="print the TestbedInfo JSON of a running test bed")
    info.add_argument("--dir", required=True, type=Path)
    fault = commands.add_parser("fault", help="set faults (JSON), reset them, or show request stats")
    fault.add_argument("--dir", required=True, type=Path)
    fault.add_argument("--target", required=True, choices=("ngc", "registry"))
    fault.add_argument("fault", nargs="?", help='e.g. \'{"status": 429, "count": 3, "retry_after": 1}\'')
    fault.add_argument("--reset", action="store_true", help="clear faults and counters")
    fault.add_argument("--stats", action="store_true", help="print request counters")
    return parser


def _running(workdir: Path) -> TestbedInfo:
    info = running_testbed(workdir.resolve())
    if info is None:
        raise TestbedError(f"no running test bed in {workdir}")
    return info


def _fault(args: argparse.Namespace) -> object:
    switch = FaultSwitch(_running(args.dir))
    if args.reset:
        switch.reset()
    if args.fault:
        return switch.set(args.target, json.loads(args.fault))
    if args.stats or not args.reset:
        return switch.stats(args.target)
    return {"reset": True}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            started = time.monotonic()
            info = Testbed().up(args.dir, args.scale, engine=not args.no_engine, seed=args.seed)
            print(info_json(info))
            print(f"test bed up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        elif args.command == "down":
            print("stopped" if Testbed.stop(args.dir) else f"nothing running in {args.dir}", file=sys.stderr)
        elif args.command == "info":
            print(info_json(_running(args.dir)))
        else:
            print(json.dumps(_fault(args), indent=2))
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
