"""The fitted models as a versioned file (``models/clv.yaml`` by default), for rule packs to
reference by its version:

    kind: segengine/clv
    schema: 1
    version: 3b0f8c2d9a41          # sha256 of the content below, first 12 hex digits
    fitted_at: '2024-05-01T09:30:00Z'
    data:
      source: CDNOW_master.txt     # the file's name only
      first_purchase: '1997-01-01' # the history's first and last purchase days
      last_purchase: '1998-06-30'
      calibration_end: null        # or the last day fitted on, when a holdout followed it
      time_unit: week              # the unit of T, recency and alpha
      customers: 23570             # the customers fitted on
    models:
      bgnbd: {r: ..., alpha: ..., a: ..., b: ..., log_likelihood: ..., customers: 23570}
      gamma_gamma: {p: ..., q: ..., gamma: ..., log_likelihood: ..., customers: 7930}

The version covers everything but itself and ``fitted_at``: the same data fitted again gives
the same version, and a file edited by hand no longer matches it (``load`` refuses it).
Parameters are written at full precision (a float's shortest round-trip form).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from ..errors import ConfigError
from .params import BGNBD, GammaGamma

KIND: Final = "segengine/clv"
SCHEMA: Final = 1
DEFAULT_PATH = Path("models/clv.yaml")
DAYS_IN = {"day": 1, "week": 7}


class ArtefactError(ConfigError):
    """A model file that cannot be used: unreadable, invalid, or edited after it was written."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataWindow(_Model):
    source: str = Field(min_length=1)
    first_purchase: date
    last_purchase: date
    calibration_end: date | None = None
    time_unit: Literal["day", "week"]
    customers: PositiveInt

    @property
    def period_days(self) -> int:
        return DAYS_IN[self.time_unit]


class BGNBDModel(_Model):
    r: PositiveFloat
    alpha: PositiveFloat
    a: PositiveFloat
    b: PositiveFloat
    log_likelihood: float
    customers: PositiveInt

    @property
    def params(self) -> BGNBD:
        return BGNBD(self.r, self.alpha, self.a, self.b)


class GammaGammaModel(_Model):
    p: PositiveFloat
    q: PositiveFloat
    gamma: PositiveFloat
    log_likelihood: float
    customers: PositiveInt

    @property
    def params(self) -> GammaGamma:
        return GammaGamma(self.p, self.q, self.gamma)


class Models(_Model):
    bgnbd: BGNBDModel
    gamma_gamma: GammaGammaModel | None = None  # None: no customer with repeat purchases of value


class ClvArtefact(_Model):
    kind: Literal["segengine/clv"] = KIND
    schema_: Literal[1] = Field(SCHEMA, alias="schema")
    version: str = Field(pattern=r"^[0-9a-f]{12}$")
    fitted_at: datetime
    data: DataWindow
    models: Models

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _version_matches(self) -> ClvArtefact:
        if self.version != content_version(self):
            raise ValueError("the version does not match the content: the file was edited after it was written")
        return self

    def document(self) -> dict[str, Any]:
        """The file's content, in its order."""
        return self.model_dump(mode="json", by_alias=True)


def content_version(artefact: ClvArtefact | dict[str, Any]) -> str:
    """sha256 of the content (``version`` and ``fitted_at`` left out), first 12 hex digits."""
    doc = artefact.model_dump(mode="json", by_alias=True) if isinstance(artefact, ClvArtefact) else artefact
    content = {k: v for k, v in doc.items() if k not in ("version", "fitted_at")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def build(data: DataWindow, models: Models, *, fitted_at: datetime | None = None) -> ClvArtefact:
    """The artefact of a fit, its version computed."""
    at = (fitted_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    draft: dict[str, Any] = {
        "kind": KIND,
        "schema": SCHEMA,
        "data": data.model_dump(mode="json"),
        "models": models.model_dump(mode="json"),
    }
    return ClvArtefact.model_validate({**draft, "version": content_version(draft), "fitted_at": at})


def write(artefact: ClvArtefact, path: Path = DEFAULT_PATH) -> None:
    """Write the file whole (a temporary file renamed over it), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = artefact.document()
    doc["fitted_at"] = artefact.fitted_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def load(path: Path = DEFAULT_PATH) -> ClvArtefact:
    """The model file at ``path``, validated; ArtefactError names each problem in one line."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ArtefactError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ArtefactError(f"{path}: not a segengine CLV model file (kind: {KIND})")
    try:
        return ClvArtefact.model_validate(doc)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()]
        raise ArtefactError(f"{path}: " + "; ".join(problems)) from None
