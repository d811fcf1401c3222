"""The model file: written and read back equal, its version the content's (the same fit gives
the same version at any time; any edit is refused), and every invalid file refused in one line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from segengine.clv import artefact
from segengine.clv.artefact import ArtefactError, BGNBDModel, DataWindow, GammaGammaModel, Models
from segengine.errors import ConfigError

WINDOW = DataWindow(
    source="CDNOW_sample.txt",
    first_purchase=date(1997, 1, 1),
    last_purchase=date(1998, 6, 30),
    calibration_end=date(1997, 9, 30),
    time_unit="week",
    customers=2357,
)
MODELS = Models(
    bgnbd=BGNBDModel(
        r=0.24259452249890268,
        alpha=4.413602028793031,
        a=0.7929220192485793,
        b=2.4259067868583135,
        log_likelihood=-9582.429206673929,
        customers=2357,
    ),
    gamma_gamma=GammaGammaModel(
        p=6.24957227139303, q=3.7442246671598873, gamma=15.44352096249639, log_likelihood=-4055.9177, customers=946
    ),
)
AT = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def test_written_and_read_back_equal_at_full_precision(tmp_path: Path) -> None:
    model = artefact.build(WINDOW, MODELS, fitted_at=AT)
    path = tmp_path / "models" / "clv.yaml"
    artefact.write(model, path)
    loaded = artefact.load(path)
    assert loaded == model
    assert loaded.models.bgnbd.alpha == 4.413602028793031  # not rounded on the way
    assert loaded.models.bgnbd.params.alpha == 4.413602028793031
    assert loaded.data.period_days == 7 and loaded.data.calibration_end == date(1997, 9, 30)
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["kind", "schema", "version", "fitted_at", "data", "models"]
    assert doc["kind"] == "segengine/clv" and doc["schema"] == 1 and doc["fitted_at"] == "2024-05-01T09:30:00Z"
    assert not list(tmp_path.glob("models/*.partial"))


def test_the_version_is_the_contents() -> None:
    first = artefact.build(WINDOW, MODELS, fitted_at=AT)
    later = artefact.build(WINDOW, MODELS, fitted_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert first.version == later.version and len(first.version) == 12
    other = artefact.build(WINDOW.model_copy(update={"calibration_end": None}), MODELS, fitted_at=AT)
    assert other.version != first.version
    refit = MODELS.model_copy(update={"bgnbd": MODELS.bgnbd.model_copy(update={"r": 0.2426})})
    assert artefact.build(WINDOW, refit, fitted_at=AT).version != first.version


def test_an_edited_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clv.yaml"
    artefact.write(artefact.build(WINDOW, MODELS, fitted_at=AT), path)
    path.write_text(path.read_text().replace("r: 0.24259452249890268", "r: 0.3"))
    with pytest.raises(ArtefactError, match="version does not match the content"):
        artefact.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["models"]["bgnbd"].update(alpha=-1.0), "models.bgnbd.alpha: Input should be greater than 0"),
        (lambda d: d["data"].update(time_unit="month"), "data.time_unit: Input should be 'day' or 'week'"),
        (lambda d: d["models"].update(pareto={}), "models.pareto: Extra inputs are not permitted"),
        (lambda d: d.update(schema=2), "schema: Input should be 1"),
        (lambda d: d.pop("models"), "models: Field required"),
    ],
)
def test_an_invalid_file_is_refused_naming_the_field(tmp_path: Path, change: object, message: str) -> None:
    doc = artefact.build(WINDOW, MODELS, fitted_at=AT).document()
    change(doc)  # type: ignore[operator]
    path = tmp_path / "clv.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ArtefactError, match=message) as caught:
        artefact.load(path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="cannot be read"):
        artefact.load(tmp_path / "missing.yaml")
    (tmp_path / "rules.yaml").write_text("dimensions: []\n")
    with pytest.raises(ArtefactError, match="not a segengine CLV model file"):
        artefact.load(tmp_path / "rules.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    with pytest.raises(ArtefactError, match="not YAML"):
        artefact.load(tmp_path / "bad.yaml")


def test_a_model_without_repeat_spend_has_no_gamma_gamma(tmp_path: Path) -> None:
    model = artefact.build(WINDOW, Models(bgnbd=MODELS.bgnbd), fitted_at=AT)
    artefact.write(model, tmp_path / "clv.yaml")
    assert artefact.load(tmp_path / "clv.yaml").models.gamma_gamma is None
