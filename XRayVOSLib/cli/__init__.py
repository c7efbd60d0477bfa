"""`xrayvos` command line: one module per subcommand, each with `register(subparsers)`.

Errors that are the user's (XRayVOSError) and OS errors (an unwritable folder, a full disk) exit with status 2
and a one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from XRayVOSLib import __version__
from XRayVOSLib.errors import XRayVOSError

# Subcommand modules, imported lazily so that `xrayvos synth` does not import torch.
SUBCOMMANDS: dict[str, str] = {
    "demo": "XRayVOSLib.cli.demo_cmd",
    "synth": "XRayVOSLib.cli.synth_cmd",
    "propagate": "XRayVOSLib.cli.propagate_cmd",
    "batch": "XRayVOSLib.cli.batch_cmd",
    "bench": "XRayVOSLib.cli.bench_cmd",
    "eval": "XRayVOSLib.cli.eval_cmd",
    "evaluate": "XRayVOSLib.cli.evaluate_cmd",
    "calibrate": "XRayVOSLib.cli.calibrate_cmd",
    "train": "XRayVOSLib.cli.train_cmd",
    "finetune": "XRayVOSLib.cli.finetune_cmd",
    "info": "XRayVOSLib.cli.info_cmd",
    "export-seg": "XRayVOSLib.cli.export_seg_cmd",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrayvos", description="Segment every frame of an X-ray cine.")
    parser.add_argument("--version", action="version", version=f"xrayvos {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module_name in SUBCOMMANDS.items():
        if wanted is not None and name != wanted:
            subparsers.add_parser(name, help=f"see `xrayvos {name} --help`")
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not built yet
        module.register(subparsers)
    return parser


# Options whose value may start with "-" ("--support -1:m.png"): argparse would take such a value for an
# option and stop with "expected one argument", so it is attached as "--support=-1:m.png" before parsing.
DASH_VALUE_OPTIONS = ("--support",)


def attach_dash_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--":
            out += [arg, *rest]
            break
        if arg in DASH_VALUE_OPTIONS:
            value = next(rest, None)
            if value is not None and value.startswith("-") and not value.startswith("--") and value != "-":
                out.append(f"{arg}={value}")
                continue
            out += [arg] if value is None else [arg, value]
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = attach_dash_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except XRayVOSError as exc:
        message = " ".join(str(exc).splitlines())  # one line, even where a library's reason has several
        print(f"xrayvos {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # raised outside the writers' checks; the one-line form, as for bad input
        from XRayVOSLib.outputs import describe_os_error

        print(f"xrayvos {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xrayvos {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
