"""tunebench's benchmark suite: speed and cost of the package's own code paths, each beside a naive baseline or
the hardware's limit, measured in one run on one machine. Entry point: `python -m bench.run` (see README.md)."""
