"""README.md and docs/*.md: every number in them is a generated block that equals what the kept results make of
it (tunebench.evaluation.readme), no number stands outside one, every command and link they give exists, and
README stays short. Plus the generator itself, on made-up kept folders: a missing log is "not yet measured", a
study run before the current protocol says so, the headline table picks each family's best."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from tunebench import cli
from tunebench.evaluation import readme

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
DOCUMENTS = readme.documents(REPO)
REFRESH = "run `python -m tunebench.evaluation.readme` to make the blocks again from what docs/results/ holds"


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---- the documents ------------------------------------------------------------------------------------------

def needs_history():
    """The blocks name the protocol the kept study ran under from the commit history: a clone without it (a
    shallow one, a source archive) cannot make them again."""
    if readme.protocol_of(readme.study_commit(readme.read_kept(RESULTS)), REPO) is None:
        pytest.skip("the kept study's commit is not in this clone's history (shallow clone?)")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_generated_block_is_what_the_kept_results_make(path):
    needs_history()
    text = text_of(path)
    assert readme.refresh(text, REPO) == text, f"{path.name}: a generated block is out of date; {REFRESH}"


def test_readme_is_short_and_carries_the_headline_and_the_two_commands_with_their_times():
    text = text_of(REPO / "README.md")
    assert len(text.splitlines()) <= 150
    names = [m.group("name") for m in readme.BEGIN.finditer(text)]
    assert names[:2] == ["headline", "commands"]
    top = "\n".join(text.splitlines()[:15])
    assert "](data/README.md" in top, "the bring-your-own-data walkthrough is linked from the top"
    commands = text.split("<!-- generated:commands -->")[1].split("<!-- /generated:commands -->")[0]
    assert "`make run`" in commands and "`make study`" in commands


def test_the_quoted_times_are_the_kept_logs():
    """Beside each command: its kept log's wall time, or "not yet measured" exactly when the log is absent."""
    text = text_of(REPO / "README.md")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `make ")}
    for command, log in (("`make run`", RESULTS / "quick" / "study_time.log"),
                         ("`make study`", RESULTS / "study_time.log")):
        if log.exists():
            assert readme.duration(readme.study_time(log)["wall_s"]) in rows[command]
            assert "not yet measured" not in rows[command]
        else:
            assert "not yet measured" in rows[command]


def test_the_headline_says_when_the_kept_study_predates_the_protocol():
    needs_history()
    kept = readme.read_kept(RESULTS)
    text = text_of(REPO / "README.md")
    previous = readme.protocol_of(readme.study_commit(kept), REPO) == "previous"
    assert ("previous protocol's results" in text) == previous


def prose(text: str) -> str:
    """What is left of a page outside generated blocks, code, link targets and comments, citations taken out."""
    text = readme.BEGIN.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"doi:\S+|arXiv:?\s?\d{4}\.\d{4,5}|\b\d+\(\d+\)|\bTask \d+", "", text)   # a citation's identifiers
    return re.sub(r"\b(19|20)\d\d\b", "", text)                                # and its year


NUMBER = re.compile(r"(?<![\w.\-/(])[+\-−]?\d[\d,.]*(?![\w\-])\s?(%|×|x\b|s\b|min\b|h\b|GB\b|MB\b)?")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_number_stands_outside_a_generated_block(path):
    found = [m.group(0).strip() for m in NUMBER.finditer(prose(text_of(path)))]
    assert found == [], f"{path.name}: numbers typed by hand ({found}): generate them (readme.py) or drop them"


def test_prose_check_catches_a_typed_number():
    assert [m.group(0) for m in NUMBER.finditer(prose("took 65 min, 2.3× faster; `make run` (Wang 2024)"))] == \
        ["65 min", "2.3×"]


def code_lines(text: str, program: str) -> list[str]:
    """Every `program …` command the page gives, in code blocks and inline code, comments and prompts cut."""
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                found.append(part.strip())
    found += re.findall(r"`([^`\n]+)`", text)
    return [c for c in found if c.startswith(program + " ")]


def documented(program: str) -> list[str]:
    return sorted({c for path in DOCUMENTS for c in code_lines(text_of(path), program)})


def test_every_make_target_named_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", text_of(REPO / "Makefile"), flags=re.M))
    for command in documented("make"):
        words = [w for w in shlex.split(command)[1:] if "=" not in w and not w.startswith("-")]
        assert set(words) <= targets, f"{command!r}: no such make target"


def test_every_tunebench_command_given_parses():
    for command in documented("tunebench"):
        args = [w for w in shlex.split(command.replace("…", "x.yaml"))[1:]]
        with contextlib.redirect_stderr(io.StringIO()):
            cli.parser().parse_args(args)   # SystemExit (unknown command or flag) fails the test


def test_every_snakemake_command_given_parses():
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()
    for command in documented("snakemake"):
        args = shlex.split(command.replace("…", "x.yaml"))[1:]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                parser.parse_args(args)
            except SystemExit as exit_:
                pytest.fail(f"{command!r}: snakemake refuses it ({exit_})")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", DOCUMENTS + [REPO / "data" / "README.md"], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_exists(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", text_of(path)):
        if re.match(r"\w+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: link to {target}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", text_of(linked), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{path.name}: link to {target}: no such heading"


def test_license_and_citation():
    assert text_of(REPO / "LICENSE").startswith("MIT License")
    citation = yaml.safe_load(text_of(REPO / "CITATION.cff"))
    assert citation["cff-version"] == "1.2.0" and "tunebench" in citation["title"]
    assert {"message", "authors", "type"} <= set(citation)
    cited = {r["authors"][0]["family-names"]: r for r in citation["references"]}
    assert cited["Wang"]["journal"] == "Political Analysis" and cited["Wang"]["year"] == 2024
    assert cited["Fatemi"]["identifiers"][0]["value"] == "arXiv:2312.08725"
    assert "## Licences" in text_of(REPO / "data" / "README.md")


# ---- the generator, on made-up kept folders -----------------------------------------------------------------

LOG = """# commit {commit}
# config config/config.yaml sha256 abc
# this machine: Test CPU, 2 cores, avx2
# estimated time: about 13 min (780 s) for 58 jobs (0 runs already finished); expect ±50%
\tCommand being timed: "snakemake"
\tUser time (seconds): 1200.5
\tSystem time (seconds): 60.0
\tElapsed (wall clock) time (h:mm:ss or m:ss): 14:20.31
\tMaximum resident set size (kbytes): 2097152
\tExit status: 0
"""


def head_commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def kept_folder(tmp_path: Path, commit: str, log: bool = True) -> Path:
    """A kept study of two datasets, three families, a `-gen` row that would win if it counted."""
    folder = tmp_path / "kept"
    folder.mkdir(parents=True)
    rows = [  # dataset, task, model, method, family, metric, mean
        ("a", "classification", "none", "tfidf", "baseline", "macro_f1", 0.70),
        ("a", "classification", "none", "majority", "baseline", "macro_f1", 0.30),
        ("a", "classification", "enc", "full", "encoder", "macro_f1", 0.80),
        ("a", "classification", "llm", "llm_k0", "icl", "macro_f1", 0.50),
        ("a", "classification", "llm", "llm_k0-gen", "icl", "macro_f1", 0.90),
        ("b", "regression", "none", "tfidf", "baseline", "r2", 0.40),
        ("b", "regression", "enc", "full", "encoder", "r2", 0.30),
    ]
    summary = pl.DataFrame([{"dataset": d, "task": t, "model": m, "method": me, "metric": k, "mean": v, "sd": None,
                             "ci_low": v - 0.05, "ci_high": v + 0.05, "n_seeds": 1, "confidence": 0.95}
                            for d, t, m, me, _, k, v in rows])
    runs = pl.DataFrame([{"dataset": d, "model": m, "method": me, "family": f, "seed": 0, "n_test": 100,
                          "git_commit": commit} for d, _, m, me, f, _, _ in rows])
    comparisons = pl.DataFrame([
        {"dataset": "a", "task": "classification", "a": "full", "b": "tfidf", "metric": "macro_f1", "difference": 0.1,
         "ci_low": 0.02, "ci_high": 0.18, "relative_gain_pct": 14.3, "relative_ci_low": 2.9, "relative_ci_high": 25.7,
         "mcnemar_p": 0.0004, "n_test": 100},
        {"dataset": "b", "task": "regression", "a": "full", "b": "tfidf", "metric": "r2", "difference": -0.1,
         "ci_low": None, "ci_high": None, "relative_gain_pct": -25.0, "relative_ci_low": None,
         "relative_ci_high": None, "mcnemar_p": None, "n_test": 100},
        {"dataset": "b", "task": "regression", "a": "full", "b": "tfidf", "metric": "mse", "difference": 0.02,
         "ci_low": None, "ci_high": None, "relative_gain_pct": 10.0, "relative_ci_low": None,
         "relative_ci_high": None, "mcnemar_p": None, "n_test": 100}])
    comparisons.write_csv(folder / "comparisons.csv")
    summary.write_csv(folder / "summary.csv")
    runs.write_csv(folder / "runs.csv")
    if log:
        (folder / "study_time.log").write_text(LOG.format(commit=commit))
    return folder


@pytest.mark.parametrize("folder", [RESULTS, RESULTS / "quick"], ids=["full", "quick"])
def test_no_kept_method_repeats_one_result_over_its_seeds(folder):
    """Several seeds of one method are draws (rows, initialisations, demonstrations), never copies of a
    deterministic run: a "± 0.000" over seeds means the study ran the same thing again (#29)."""
    if not (folder / "runs.csv").exists():
        pytest.skip(f"no study kept in {folder}")
    runs = pl.read_csv(folder / "runs.csv", infer_schema_length=None)
    primary = pl.when(pl.col("task") == "regression").then(pl.col("r2")).otherwise(pl.col("macro_f1"))
    groups = (runs.with_columns(primary.alias("primary")).group_by("dataset", "model", "method")
              .agg(pl.len().alias("seeds"), pl.col("primary").n_unique().alias("values"))
              .filter((pl.col("seeds") > 1) & (pl.col("values") == 1)))
    assert groups.is_empty(), f"{folder / 'runs.csv'}: seeds that repeat one result:\n{groups}"


def test_a_kept_log_is_read():
    info = readme.study_time(RESULTS / "study_time.log")
    assert info["wall_s"] > 0 and info["commit"] and info["cores"] >= 1
    assert readme.duration(3890) == "1 h 05 min" and readme.duration(860.31) == "14 min"
    assert readme.clock_seconds("1:04:50") == 3890 and readme.clock_seconds("14:20.5") == 860.5


def test_a_log_without_its_wall_time_is_an_error_not_an_unmeasured_study(tmp_path):
    (tmp_path / "study_time.log").write_text("# commit abc\n")
    with pytest.raises(ValueError, match="Elapsed"):
        readme.study_time(tmp_path / "study_time.log")


def test_headline_table_is_each_familys_best_the_generated_answers_left_out(tmp_path):
    kept = readme.read_kept(kept_folder(tmp_path, head_commit()))
    table = readme.headline_table(kept.summary, kept.runs)
    lines = table.splitlines()
    assert lines[0] == "| family | a (macro-F1) | b (R²) |"
    assert lines[2] == "| baselines | tfidf: 0.700 [0.650, 0.750] | **tfidf: 0.400 [0.350, 0.450]** |"
    assert lines[3] == "| encoder fine-tuning | **full (enc): 0.800 [0.750, 0.850]** | full (enc): 0.300 [0.250, 0.350] |"
    assert lines[4] == "| prompting | llm_k0 (llm): 0.500 [0.450, 0.550] | not run |"
    assert "-gen" not in table


def test_the_time_of_a_kept_quick_study_or_not_yet_measured(tmp_path):
    commit = head_commit()
    quick = readme.read_kept(kept_folder(tmp_path, commit))
    assert readme.measured(quick, "q.log") == "14 min on Test CPU, 2 cores (`q.log`)"
    assert readme.measured(None, "q.log") == "not yet measured (no `q.log`)"
    unlogged = readme.read_kept(kept_folder(tmp_path / "x", commit, log=False))
    assert readme.measured(unlogged, "q.log").startswith("not yet measured")


def test_jobs_added_to_a_kept_study_are_named_with_their_commit_and_time(tmp_path):
    """A study extended later: the headline counts the runs of each commit, the command's time adds the added
    jobs' own log to the study's (not the hours between)."""
    commit = head_commit()
    folder = kept_folder(tmp_path, commit)
    runs = pl.read_csv(folder / "runs.csv")
    runs.with_columns(pl.when(pl.col("method") == "tfidf").then(pl.lit("f" * 40)).otherwise(pl.col("git_commit"))
                      .alias("git_commit")).write_csv(folder / "runs.csv")
    (folder / "study_time_added.log").write_text(LOG.format(commit="f" * 40).replace("14:20.31", "30:00"))
    kept = readme.read_kept(folder)
    assert f"6 runs of commits `{commit[:12]}` (4 runs), `ffffffffffff` (2 runs)" in readme.provenance(kept)
    assert readme.measured(kept, "s.log") == ("14 min on Test CPU, 2 cores (`s.log`), then 30 min for the jobs added "
                                              f"at `fffffff` (`{folder / 'study_time_added.log'}`): 44 min in all")


def test_a_study_before_the_current_protocol_says_so(tmp_path):
    needs_history()
    assert readme.protocol_of("56b1e030e64193eed8ca5f2847b9c49bd0075799", REPO) == "previous"
    assert readme.protocol_of(head_commit() + "-dirty", REPO) == "current"
    assert readme.protocol_of("0" * 40, REPO) is None and readme.protocol_of(None, REPO) is None
    old = readme.read_kept(kept_folder(tmp_path / "old", "56b1e030e64193eed8ca5f2847b9c49bd0075799"))
    new = readme.read_kept(kept_folder(tmp_path / "new", head_commit()))
    assert "previous protocol's results" in readme.provenance(old)
    assert "previous protocol" not in readme.provenance(new)
    assert "before the current protocol" in readme.measured(old, "l.log")
    assert "before the current protocol" not in readme.measured(new, "l.log")


def test_an_unknown_block_name_is_an_error():
    with pytest.raises(KeyError, match="no generator"):
        readme.refresh("<!-- generated:nonsense -->\n<!-- /generated:nonsense -->\n", REPO)


def test_comparisons_are_grouped_by_question_a_missing_interval_left_unresolved(tmp_path):
    kept = readme.read_kept(kept_folder(tmp_path, head_commit()))
    text = readme.comparisons_block(kept)
    assert text.startswith("**Does training the encoder beat the dictionary")
    assert "| a | full − tfidf | 0.100 [0.020, 0.180] | +14.3% [2.9, 25.7] |  | yes | < 0.001 | 100 |" in text
    assert "| b | full − tfidf | -0.100 | −25.0% | +10.0% MSE | – | – | 100 |" in text
    assert "Which encoder strategy" not in text   # no pair of it was compared


def test_every_method_ranked_with_its_generated_answers_beside_it(tmp_path):
    kept = readme.read_kept(kept_folder(tmp_path, head_commit()))
    text = readme.ranking_block(kept)
    assert "| llm_k0 | llm | prompting | 1 | 0.500 [0.450, 0.550] | 0.900 [0.850, 0.950] |" in text
    assert "| llm_k0-gen |" not in text and text.index("| full | enc |") < text.index("| tfidf | none |")


def test_the_blocks_follow_whatever_docs_results_holds(tmp_path):
    """A new full study and a quick one kept (current protocol, both logged): README says their times and no
    longer calls the results the previous protocol's; every block of every page is made from them."""
    import shutil

    repo = tmp_path / "repo"
    kept = repo / "docs" / "results"
    shutil.copytree(kept_folder(tmp_path / "full", head_commit()), kept)
    shutil.copytree(kept_folder(tmp_path / "quick", head_commit()), kept / "quick")
    shutil.copytree(REPO / "config", repo / "config")
    text = readme.refresh(text_of(REPO / "README.md"), repo)
    assert "previous protocol" not in text and "not yet measured" not in text
    assert [line.count("14 min on Test CPU, 2 cores") for line in text.splitlines()
            if line.startswith("| `make ")] == [1, 1]
    assert "| encoder fine-tuning | **full (enc): 0.800 [0.750, 0.850]** |" in text
    for page in DOCUMENTS[1:]:
        readme.refresh(text_of(page), repo)   # no block fails on a kept study without a bench or an AVX2 run
