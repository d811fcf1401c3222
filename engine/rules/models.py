"""A rule pack's ``models:`` section: the fitted model its rules read predictions from.

    models:
      clv: models/clv.yaml            # the file segengine fit clv writes, relative to the pack's folder
    # or, with the discount rate of predicted_clv_365d:
    models:
      clv: {path: ../models/clv.yaml, annual_discount: 0.08}     # default 0.10

The file is loaded and checked with the pack (segengine.clv.artefact), and its content version
is part of the rules version (segengine.rules.loader): fitting a new model into the same file
is a rules switch, and ``rule_files`` lists the file, so that the hot reload, which watches
those files, takes it and re-evaluates every customer as after any rules switch.

A pack that reads a prediction (segengine.clv.features) without a usable model is refused
where it reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..clv import artefact
from ..clv.artefact import ArtefactError
from ..clv.features import NEEDS_SPEND_MODEL, PREDICTED, Predictor
from . import schema
from .source import Checker

PATH_AT = ("models", "clv", "path")  # a short ``clv: <path>`` is found there too (Source.path)
NO_MODEL = (
    "{name} is a prediction: the pack must reference a fitted model, e.g. 'models: {{clv: models/clv.yaml}}' "
    "at its top (segengine fit clv writes one)"
)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """The model a pack references, loaded: its predictions, and where the pack names it."""

    predictor: Predictor
    path: Path
    where: str  # file:line:column of the path in the pack

    def describe(self) -> str:
        return f"{self.path} (version {self.predictor.version}, annual_discount {self.predictor.annual_discount:g})"


def referenced(check: Checker, document: schema.Document, folder: Path) -> tuple[ModelRef | None, dict[str, str]]:
    """The pack's model, loaded (None: none referenced, or a problem told to ``check``), and
    the predictions its rules may not read, each with the reason (for ``Checker.expression``).
    When the model file itself is refused, the predictions are not refused a second time."""
    spec = document.models.clv if document.models is not None else None
    if spec is None:
        return None, {name: NO_MODEL.format(name=name) for name in PREDICTED}
    path = folder / spec.path
    try:
        model = artefact.load(path)
    except ArtefactError as exc:
        check.at(PATH_AT, f"cannot use the CLV model: {exc}")
        return None, {}
    refused: dict[str, str] = {}
    bg = model.models.bgnbd.params
    gg_model = model.models.gamma_gamma
    gg = gg_model.params if gg_model is not None else None
    if gg is None:
        why = f"{spec.path} has no Gamma-Gamma model (it was fitted without repeat purchases of value)"
    elif gg.q <= 1:
        why = f"the Gamma-Gamma model in {spec.path} has q = {gg.q:g} <= 1: its mean spend per purchase is infinite"
        gg = None
    for name in NEEDS_SPEND_MODEL if gg is None else ():
        refused[name] = f"{name} needs the spend model: {why}"
    predictor = Predictor(bg, gg, model.data.period_days, spec.annual_discount, model.version)
    problem = _unusable(predictor)
    if problem is not None:
        check.at(PATH_AT, f"cannot use the CLV model: {spec.path}: {problem}")
        return None, {}
    return ModelRef(predictor, path, check.where(PATH_AT)), refused


def _unusable(predictor: Predictor) -> str | None:
    """Why the model's predictions cannot be computed, if they cannot: a = 1 (the expected
    purchases divide by a - 1), or a series that does not converge for a customer on its
    first day (the slowest case: 2F1 converges faster at any later age, or with more repeat
    purchases). Computing that case also warms the cache for every new customer."""
    if predictor.bg.a == 1:
        return "its BG/NBD a is exactly 1: the expected purchases divide by a - 1"
    try:
        values = [predictor.at(name, (0, 0, 0, 0.0)) for name in PREDICTED]
    except (ArithmeticError, ValueError) as exc:  # an overflow; closed.SeriesError is a ValueError
        return f"its predictions cannot be computed for a new customer: {exc}"
    if not all(v is None or math.isfinite(v) for v in values):
        return "its predictions are not finite for a new customer"
    return None


def model_files(pack: Path, text: str) -> list[Path]:
    """The model files the pack at ``pack`` (its ``text``) references and that exist: what the
    hot reload watches beside the packs. Quick and quiet: a pack that does not parse (its
    checker says why) references none."""
    if "models" not in text:
        return []
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return []
    models = doc.get("models") if isinstance(doc, dict) else None
    clv = models.get("clv") if isinstance(models, dict) else None
    path = clv.get("path") if isinstance(clv, dict) else clv
    if isinstance(path, bool) or not isinstance(path, str | int | float):
        return []
    found = pack.parent / str(path).strip()
    return [found] if found.is_file() else []
