"""The `tunebench` command: validate and list a config's runs without Snakemake, estimate its time, --version."""
import pytest

from conftest import REPO
from tunebench import __version__, cli, estimate

SMOKE = str(REPO / "config" / "smoke.yaml")


def test_validate_counts_the_runs_and_runs_lists_them(capsys):
    assert cli.main(["validate", "--configfile", SMOKE]) == 0
    out = capsys.readouterr()
    assert "valid (" in out.out and not out.err
    assert cli.main(["runs", "--configfile", SMOKE]) == 0
    assert "fpb/none/majority/seed0" in capsys.readouterr().out.splitlines()


def test_a_config_typo_is_named_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {}\nmethods: {a: {strategy: lorra}}\nstudy: []\n")
    assert cli.main(["validate", "--configfile", str(bad)]) == 1
    assert "'lorra'" in capsys.readouterr().err


def test_the_positional_config_file_still_works_with_a_deprecation_note(capsys):
    assert cli.main(["validate", SMOKE]) == 0
    out = capsys.readouterr()
    assert "valid (" in out.out
    assert f"deprecated: write tunebench validate --configfile {SMOKE}" in out.err
    with pytest.raises(SystemExit):
        cli.main(["validate", SMOKE, "--configfile", SMOKE])
    assert "give the config file once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["runs"])
    assert "--configfile is required" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"tunebench {__version__}"


def test_estimate_takes_the_kept_results_beside_the_package_by_default(monkeypatch, tmp_path):
    """`--reference` defaults to the repository's docs/results, found from the package's own location."""
    assert estimate.KEPT_RESULTS == REPO / "docs" / "results" and (estimate.KEPT_RESULTS / "calibration.json").exists()
    seen = {}

    class Stop(Exception):
        pass

    def stop(cfg, reference_dir, here, cores, results):
        seen["reference"] = reference_dir
        raise Stop

    monkeypatch.setattr(estimate, "calibrate", lambda threads, **kwargs: {"dense_step_s": 1.0, "qlora_step_s": 1.0})
    monkeypatch.setattr(estimate, "estimate", stop)
    with pytest.raises(Stop):
        cli.main(["estimate", "--configfile", SMOKE, "--results", str(tmp_path)])
    assert seen["reference"] == estimate.KEPT_RESULTS
    other = tmp_path / "reference"
    other.mkdir()
    (other / "calibration.json").write_text((estimate.KEPT_RESULTS / "calibration.json").read_text())
    with pytest.raises(Stop):
        cli.main(["estimate", "--configfile", SMOKE, "--results", str(tmp_path), "--reference", str(other)])
    assert seen["reference"] == other


def test_estimate_without_kept_results_asks_for_the_reference(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(estimate, "KEPT_RESULTS", tmp_path / "absent")
    with pytest.raises(SystemExit):
        cli.main(["estimate", "--configfile", SMOKE])
    assert "--reference: no kept results beside the package" in capsys.readouterr().err
