# Entry point of every rule's `script:`: hand the job to the tunebench package (the logic lives there).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (snakemake is injected)

from tunebench.jobs import run_job  # noqa: E402

run_job(snakemake)  # noqa: F821
