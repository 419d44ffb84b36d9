"""The `tunebench` command: validate and list a config's runs without Snakemake."""
from conftest import REPO
from tunebench import cli


def test_validate_counts_the_runs_and_runs_lists_them(capsys):
    assert cli.main(["validate", str(REPO / "config" / "smoke.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid (" in out
    assert cli.main(["runs", str(REPO / "config" / "smoke.yaml")]) == 0
    assert "fpb/none/majority/seed0" in capsys.readouterr().out.splitlines()


def test_a_config_typo_is_named_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {}\nmethods: {a: {strategy: lorra}}\nstudy: []\n")
    assert cli.main(["validate", str(bad)]) == 1
    assert "'lorra'" in capsys.readouterr().err
