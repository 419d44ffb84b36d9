"""`tunebench` on the command line: check a config, list its runs, estimate its time.

    tunebench validate --configfile config/config.yaml   # the schema and semantic checks Snakemake runs first
    tunebench runs --configfile config/config.yaml       # every (dataset, model, method, seed) the study makes
    tunebench estimate --configfile config/config.yaml [--reference docs/results] [--cores N]
    tunebench --version

`--configfile` is Snakemake's word for the same file. The study itself runs through Snakemake (`make run`);
these are the parts a user wants without it.
"""

from __future__ import annotations

import argparse
import sys

from tunebench import __version__
from tunebench import config as tbconfig


def parser() -> argparse.ArgumentParser:
    from tunebench import estimate

    main_parser = argparse.ArgumentParser(prog="tunebench", description=__doc__.split("\n")[0])
    main_parser.add_argument("--version", action="version", version=f"tunebench {__version__}")
    commands = main_parser.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a config file"), ("runs", "list the runs of a config file")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--configfile", help="the study's config file")
        # The first releases took the file as a positional argument: still read, with a deprecation note.
        command.add_argument("old_configfile", nargs="?", metavar="CONFIGFILE", help=argparse.SUPPRESS)
    estimate_text = "estimate the study's time on this machine (see tunebench.estimate)"
    estimate.add_arguments(commands.add_parser("estimate", help=estimate_text, description=estimate_text))
    return main_parser


def main(argv=None) -> int:
    main_parser = parser()
    args = main_parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "estimate":
        from tunebench import estimate

        return estimate.run_estimate(args, main_parser)
    if args.old_configfile:
        if args.configfile:
            main_parser.error(f"{args.command}: give the config file once, as --configfile")
        print(f"tunebench {args.command} CONFIGFILE is deprecated: write tunebench {args.command} --configfile "
              f"{args.old_configfile}", file=sys.stderr)
        args.configfile = args.old_configfile
    if not args.configfile:
        main_parser.error(f"{args.command}: --configfile is required")
    try:
        cfg = tbconfig.load(args.configfile)
    except tbconfig.ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    runs = tbconfig.runs(cfg)
    if args.command == "validate":
        print(f"{args.configfile}: valid ({len(runs)} runs)")
    else:
        print("\n".join(run.path for run in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
