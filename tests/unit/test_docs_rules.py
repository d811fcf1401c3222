"""The examples in docs/rules.md are valid rules: a reader can copy them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from segengine.rules import check_rules
from tests.unit.test_predictions import write_model

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_every_yaml_example_in_the_rules_guide_passes_the_checker(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    write_model(tmp_path)  # the model file an example with 'models:' names, beside it
    for block in blocks:
        doc = yaml.safe_load(block)
        if "dimensions" not in doc:  # a features-only example: read every feature it declares
            reads = " or ".join(f"{name} != null" for name in doc["features"])
            block += f'dimensions:\n  example:\n    segments:\n      - name: any\n        when: "{reads}"\n'
        rules, problems = check_rules(block, "docs/rules.md", folder=tmp_path)
        assert rules is not None, problems
