"""`tunebench` on the command line: check a config, list its runs, estimate its time.

    tunebench validate config/config.yaml      # the schema and semantic checks Snakemake runs first
    tunebench runs config/config.yaml          # every (dataset, model, method, seed) the study makes
    tunebench estimate --configfile config/config.yaml --reference docs/results [--cores N]

The study itself runs through Snakemake (`make run`); these are the parts a user wants without it.
"""

from __future__ import annotations

import argparse
import sys

from tunebench import config as tbconfig


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["estimate"]:
        from tunebench import estimate

        return estimate.main(argv[1:])
    parser = argparse.ArgumentParser(prog="tunebench", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a config file"), ("runs", "list the runs of a config file")):
        commands.add_parser(name, help=text).add_argument("configfile")
    commands.add_parser("estimate", help="estimate the study's time here (see tunebench.estimate)")
    args = parser.parse_args(argv)
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
