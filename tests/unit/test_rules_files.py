"""A folder of rule packs takes ``*.yml`` files as well as ``*.yaml``: the loader, `rules
check` and the hot reload's fingerprint see the same files, in name order."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from segengine.cli import app
from segengine.rules import check_files, rule_files
from segengine.worker.reload import rules_fingerprint

TIER = "dimensions:\n  tier:\n    segments:\n      - {name: big, when: spend_total >= 100}\n    default: small\n"
BAND = "dimensions:\n  band:\n    segments:\n      - {name: old, when: profile_age >= 50}\n    default: young\n"


def test_a_folder_loads_yml_and_yaml_packs_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b_tier.yml").write_text(TIER)
    (tmp_path / "a_band.yaml").write_text(BAND)
    (tmp_path / "notes.txt").write_text("not a pack")
    assert [f.name for f in rule_files(tmp_path)] == ["a_band.yaml", "b_tier.yml"]
    rules, problems = check_files(tmp_path)
    assert problems == [] and rules is not None
    assert [d.name for d in rules.dimensions] == ["band", "tier"]


def test_a_folder_of_only_yml_packs_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "tier.yml").write_text(TIER)
    rules, problems = check_files(tmp_path)
    assert problems == [] and rules is not None and [d.name for d in rules.dimensions] == ["tier"]


def test_rules_check_on_a_folder_reads_yml_packs(tmp_path: Path) -> None:
    (tmp_path / "tier.yml").write_text(TIER)
    (tmp_path / "band.yaml").write_text(BAND)
    done = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert done.exit_code == 0 and "2 dimensions: band (2), tier (2)" in " ".join(done.output.split()), done.output

    (tmp_path / "tier.yml").write_text(TIER.replace("spend_total", "spend_totl"))
    done = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    expected = f"{tmp_path / 'tier.yml'}:4:27: unknown feature 'spend_totl': did you mean 'spend_total'?"
    assert done.exit_code == 1 and expected in done.output, done.output


def test_the_hot_reload_notices_a_changed_yml_pack(tmp_path: Path) -> None:
    (tmp_path / "band.yaml").write_text(BAND)
    before = rules_fingerprint(tmp_path)
    (tmp_path / "tier.yml").write_text(TIER)
    added = rules_fingerprint(tmp_path)
    (tmp_path / "tier.yml").write_text(TIER.replace("100", "50"))
    assert len({before, added, rules_fingerprint(tmp_path)}) == 3


def test_an_empty_folder_says_which_files_it_looked_for(tmp_path: Path) -> None:
    rules, problems = check_files_or_problems(tmp_path)
    assert rules is None and problems == [f"{tmp_path}:1:1: no *.yaml rule packs (or *.yml) in this folder"]


def check_files_or_problems(path: Path) -> tuple[object, list[str]]:
    from segengine.rules import RulesError

    try:
        return check_files(path)
    except RulesError as exc:
        return None, exc.problems
