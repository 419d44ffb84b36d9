"""The architecture, checked on the source (no imports run): the layer order (LAYERS, lowest first) with no
import cycle, lazy imports included; the rules README's architecture section states; the results layout named
only by tunebench.paths; every rule naming its job; RunSpec made only by RunSpec.from_config; strategy names
compared only in the registry and the strategies' modules; and the claim that a new method touches one module
and one registry entry (tests/test_workflow.py runs a new trained encoder strategy through the rules)."""
from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from tunebench import config as tbconfig
from tunebench import families, runner

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "tunebench"
HEAVY = ("torch", "transformers", "peft", "bitsandbytes")   # (the `datasets` library is a data reader)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module the file imports, at any depth (function-level imports count too)."""
    here = module_name(path).split(".") if PACKAGE in path.parents else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def string_constants(path: Path) -> list[str]:
    """String literals that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def violations(rule) -> list[str]:
    return sorted(f"{name} imports {imp}" for name, path in MODULES.items() for imp in imports_of(path)
                  if rule(name, imp))


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_layout_is_the_one_the_rules_speak_of():
    assert {"tunebench.data", "tunebench.evaluation", "tunebench.methods", "tunebench.modeling",
            "tunebench.config", "tunebench.families", "tunebench.runner"} <= set(MODULES)


def test_package_never_imports_snakemake_bench_or_tests():
    assert violations(lambda name, imp: top(imp) in ("snakemake", "bench", "tests", "conftest")) == []


def test_data_and_config_layers_never_import_torch_or_the_model_stack():
    lower = lambda name: name.startswith("tunebench.data") or name in ("tunebench.config",  # noqa: E731
                                                                      "tunebench.families")
    assert violations(lambda name, imp: lower(name) and top(imp) in HEAVY) == []


def test_evaluation_never_imports_a_strategy_module():
    assert violations(lambda name, imp: name.startswith("tunebench.evaluation")
                      and imp.startswith("tunebench.methods")) == []


def test_strategy_modules_never_import_each_other():
    def rule(name, imp):
        return (name.startswith("tunebench.methods.") and imp.startswith("tunebench.methods.")
                and imp.split(".")[2] != name.split(".")[2])
    assert violations(rule) == []


def test_package_never_names_a_repository_path():
    """Lexicons, tables, caches and outputs reach the package as rule inputs/outputs, never as paths it knows."""
    found = [f"{name}: {s!r}" for name, path in MODULES.items() for s in string_constants(path)
             if s.startswith(("results/", "data/raw", "data/reference", "logs/", "config/"))]
    assert found == []


def test_the_rules_take_every_results_path_from_the_layout_helper(repo):
    """tunebench.paths names the results layout once: no rule file writes a results/ path of its own."""
    rules = [repo / "Snakefile", *sorted((repo / "workflow" / "rules").glob("*.smk"))]
    found = [f"{path.name}:{n}" for path in rules for n, line in enumerate(path.read_text().splitlines(), 1)
             if ('"results/' in line or "'results/" in line) and not line.lstrip().startswith("#")]
    assert found == []


def test_every_rule_names_its_job_function(repo):
    """A reader goes from a rule to its code in one hop: each rule with a script names its job in params."""
    import re

    from tunebench import jobs

    for path in sorted((repo / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        named = re.findall(r'^\s+job="(\w+)",$', text, re.M)
        assert len(named) == text.count("script:"), path.name
        assert set(named) <= set(jobs.JOBS), path.name
    with pytest.raises(KeyError, match="names its job"):
        jobs.job_function(object())   # no rule-name guessing: a rule without `job` is refused


def test_a_run_spec_is_made_only_by_run_spec_from_config(repo):
    """jobs, the estimate, bench and the tests all build a RunSpec through RunSpec.from_config (tunebench.spec)."""
    constructor = "RunSpec" + "("
    sources = [p for folder in ("workflow", "bench", "tests") for p in sorted((repo / folder).rglob("*.py"))]
    found = [str(p.relative_to(repo)) for p in sources if constructor in p.read_text() and p.name != "spec.py"]
    assert found == []


def test_the_rules_catch_a_violation(tmp_path):
    """The checker itself: a module that breaks a rule is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom tunebench.methods import icl\nX = 'results/runs'\n")
    assert "torch" in imports_of(bad) and "tunebench.methods.icl" in imports_of(bad)
    assert "results/runs" in string_constants(bad)


# ---- the layer order, and no cycle ----------------------------------------------------------------------------
#
# Lowest first. A module imports only modules of its own layer or a lower one, at module level or inside a
# function alike (imports_of sees both), and no chain of imports leads back to where it started.

LAYERS = (
    ("ground", ("tunebench", "tunebench.spec", "tunebench.files", "tunebench.paths", "tunebench.hardware",
                "tunebench.provenance", "tunebench.progress", "tunebench.selection", "tunebench.data",
                "tunebench.data.errors", "tunebench.evaluation", "tunebench.evaluation.metrics",
                "tunebench.evaluation.answers", "tunebench.evaluation.stats", "tunebench.modeling",
                "tunebench.methods")),
    ("registry", ("tunebench.families", "tunebench.strategies")),
    ("data", ("tunebench.data.*",)),
    ("modeling and config validation", ("tunebench.modeling.*", "tunebench.config")),
    ("methods", ("tunebench.methods.*",)),
    ("runs", ("tunebench.runner", "tunebench.estimate")),
    ("aggregate and report", ("tunebench.evaluation.*",)),
    ("entry points", ("tunebench.jobs", "tunebench.cli")),
)


def layer_of(module: str) -> int | None:
    """The layer index of a module: an exact name first, then the lowest layer whose `package.*` holds it."""
    for exact in (True, False):
        for index, (_, members) in enumerate(LAYERS):
            for member in members:
                if (module == member) if exact else (member.endswith(".*") and module.startswith(member[:-1])):
                    return index
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the package modules it imports}, `from package import name` resolved to the module it names."""
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {name: {target for imp in imports_of(path) if (target := resolve(imp)) and target != name}
            for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                  for name, targets in graph.items() for target in targets if layer_of(target) > layer_of(name))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk (each reported once, from where the walk met it)."""
    found, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, path + [target])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    return found


GRAPH = import_graph(MODULES)


def test_every_module_has_a_layer():
    assert [name for name in MODULES if layer_of(name) is None] == []


def test_no_module_imports_a_higher_layer():
    assert layer_violations(GRAPH) == []


def test_no_import_cycle_even_through_imports_inside_functions():
    assert cycles(GRAPH) == []


def test_the_layer_check_catches_a_planted_violation_and_cycle(tmp_path):
    """The checker itself: files importing the runner inside a function (a lower layer reaching up, closing a
    cycle runner → files → runner) is reported by both checks."""
    planted = tmp_path / "files.py"
    planted.write_text("def later():\n    from tunebench.runner import execute\n")
    graph = import_graph({**MODULES, "tunebench.files": planted})
    assert graph["tunebench.files"] == {"tunebench.runner"}
    assert layer_violations(graph) == ["tunebench.files (ground) imports tunebench.runner (runs)"]
    assert any(cycle[0] == cycle[-1] and {"tunebench.files", "tunebench.runner"} <= set(cycle)
               for cycle in cycles(graph))


# ---- strategy names: compared only in the registry and the strategies' own modules ----------------------------

def mentions_strategy(node) -> bool:
    """An expression about a strategy: r["strategy"], spec.strategy, pl.col("strategy"), strategy, ..."""
    return any((isinstance(n, ast.Constant) and n.value == "strategy")
               or (isinstance(n, ast.Attribute) and n.attr == "strategy")
               or (isinstance(n, ast.Name) and "strategy" in n.id.lower()) for n in ast.walk(node))


def strategy_name_comparisons(path: Path, names: set[str]) -> list[int]:
    """Lines that compare a strategy with names (==, !=, in, not in, startswith, is_in): against a name, a
    collection of names or a constant holding them. Asking the registry (a call) is not comparing."""
    def names_side(node) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str) and (node.value in names or any(n.startswith(node.value)
                                                                               for n in names))
        if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
            return any(map(names_side, node.elts))
        return isinstance(node, ast.Name) and node.id.isupper()   # a module constant such as QUANTIZED

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(mentions_strategy, sides)) and any(names_side(s) for s in sides if not mentions_strategy(s)):
                found.add(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "is_in") and mentions_strategy(node.func.value)):
            found.add(node.lineno)
    return sorted(found)


STRATEGY_HOMES = ("tunebench.families", "tunebench.methods.")


def comparisons_outside_the_strategy_homes(modules) -> list[str]:
    names = set(families.all_strategies())
    return [f"{name}:{line}" for name, path in MODULES.items() if name in modules
            for line in strategy_name_comparisons(path, names)]


def test_no_code_outside_the_registry_and_strategy_modules_compares_a_strategy_name():
    """The report included: it asks the registry how to group a run (approach, curve, word_weights)."""
    checked = [name for name in MODULES if not name.startswith(STRATEGY_HOMES)]
    assert "tunebench.evaluation.sections" in checked and "tunebench.evaluation.readme" in checked
    assert comparisons_outside_the_strategy_homes(checked) == []


def test_the_strategy_name_check_catches_a_comparison(tmp_path):
    names = set(families.all_strategies())
    bad, fine = tmp_path / "bad.py", tmp_path / "fine.py"
    bad.write_text("def f(r, spec):\n    a = r['strategy'] == 'icl'\n    b = spec.strategy in {'lora', 'qlora'}\n"
                   "    c = spec.strategy not in QUANTIZED\n    return r['strategy'].startswith('generative_')\n")
    fine.write_text("X = step_seconds('lora')\nY = r['family'] == 'encoder'\nZ = ('full', 'head')\n"
                    "W = families.strategy(spec.strategy).quantised\n")
    assert strategy_name_comparisons(bad, names) == [2, 3, 4, 5]
    assert strategy_name_comparisons(fine, names) == []


# ---- a new method: its module and one registry entry ---------------------------------------------------------

TOY_MODULE = '''
"""toy_median: predicts the training median (a method added by a test)."""
import polars as pl

from tunebench.spec import RunOutput


def run(spec):
    median = float(spec.split("train")["target"].median())
    test = spec.split("test")
    return RunOutput(pl.DataFrame({"id": test["id"], "prediction": [median] * test.height}),
                     {"trainable_params": 1, "train_rows": spec.split("train").height})
'''


def test_a_new_strategy_needs_only_its_module_and_one_registry_entry(tmp_path, monkeypatch, make_table_spec):
    (tmp_path / "toy_median_module.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    table = pl.DataFrame({"id": [f"r{i}" for i in range(60)], "text": [f"text {i}" for i in range(60)],
                          "target": [float(i % 7) for i in range(60)], "group": [f"r{i}" for i in range(60)],
                          "split": ["train"] * 40 + ["dev"] * 10 + ["test"] * 10})
    with pytest.raises(tbconfig.ConfigError, match="toy_median"):
        make_table_spec(table, "regression", None, {"strategy": "toy_median"})

    toy = families.Family("toy", "toy_median_module", "run_toy", "baselines", 1, schema="baseline_method",
                          tasks=frozenset({"regression"}))
    monkeypatch.setattr(families, "FAMILIES", families.FAMILIES + (toy,))
    monkeypatch.setattr(families, "STRATEGIES", families.STRATEGIES + (families.Strategy("toy_median", "toy"),))
    spec = make_table_spec(table, "regression", None, {"strategy": "toy_median"})
    record = runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    assert record["family"] == "toy" and record["cost"]["trainable_params"] == 1
    predictions = pl.read_parquet(tmp_path / "predictions.parquet")
    assert predictions["prediction"].n_unique() == 1 and "r2" in record["metrics"]
    assert families.by_rule("run_toy") is toy
    assert "toy_median_module" in sys.modules
