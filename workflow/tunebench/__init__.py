"""tunebench: which adaptation strategy wins on domain text, and at what cost."""

# Part of every run's params: bumping it reruns every job (see README, "When code changes").
__version__ = "0.1.0"
