"""How a part of the rules file words what is wrong with it, and where it points.

pydantic says "Extra inputs are not permitted" at a location; the person editing a rules
file needs "unknown segment field 'wen'" at the line and column of that key. So each
``Model`` words its own refusals from its class variables (an unknown key, a value that is
not a mapping, a missing or wrong field), and ``between_fields`` adds what no single field
can say. A worded refusal is a PydanticCustomError of type ``at_value`` or ``at_key``
(``named_at_*`` while ``{name}``, the feature, dimension or action it is in, is still to be
filled in); ``problems`` lists them for the checker to put a line and column on.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]  # a pydantic error location
At = Literal["value", "key", "owner", "owner_key"]  # the value, or the key naming it; of the field or of its model
Messages = dict[str, tuple[str, At]]  # field -> what a bad value is told, and where


def refusal(message: str, at: Literal["value", "key"] = "value", named: bool = False) -> PydanticCustomError:
    """A worded refusal, for a validator to raise."""
    return PydanticCustomError(f"{'named_' if named else ''}at_{at}", "{message}", {"message": message})


def refusal_at(loc: Loc, message: str, at: Literal["value", "key"] = "value", named: bool = False) -> InitErrorDetails:
    """A worded refusal about the field at ``loc`` of the model refusing (for ``refused``)."""
    return {"type": refusal(message, at, named), "loc": loc, "input": None}


def refused(errors: list[InitErrorDetails], title: str = "rules") -> ValidationError:
    return ValidationError.from_exception_data(title, errors)


def _worded(error: ErrorDetails) -> bool:
    return error["type"].endswith(("at_value", "at_key"))


class Model(BaseModel):
    """A part of the rules file: no keys but its fields, and its refusals worded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    not_a_mapping: ClassVar[str] = "expected a mapping"
    unknown_field: ClassVar[str] = "unknown field {key}"  # {key}: the unknown key
    unknown_at: ClassVar[At] = "key"
    missing_at: ClassVar[At] = "owner"  # where a missing field is reported
    field_messages: ClassVar[Messages] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _worded_refusals(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Unknown keys are refused, and the rest validated as if they were not there: a
        misspelt ``wen:`` is reported, and so is the ``when`` the segment then lacks."""
        errors: list[InitErrorDetails] = []
        if isinstance(data, dict):
            known = {field.alias or name for name, field in cls.model_fields.items()}
            unknown = [key for key in data if key not in known]
            if unknown:
                data = {key: value for key, value in data.items() if key in known}
                errors += [_placed((key,), cls.unknown_field, cls.unknown_at) for key in unknown]
        try:
            model = handler(data)
        except ValidationError as exc:
            errors += [cls._word(error) for error in exc.errors()]
        else:
            errors += model.between_fields()
        if errors:
            raise refused(errors)
        return model

    def between_fields(self) -> list[InitErrorDetails]:
        """Refusals no single field can make (once each field is right)."""
        return []

    @classmethod
    def _word(cls, error: ErrorDetails) -> InitErrorDetails:
        loc, kind = error["loc"], error["type"]
        if _worded(error):  # by a nested model or by a field's type: passed on as it is
            placed: Literal["value", "key"] = "key" if kind.endswith("key") else "value"
            return refusal_at(loc, error["ctx"]["message"], placed, kind.startswith("named_"))
        at: At
        if not loc:
            template, at = cls.not_a_mapping, "value"
        elif len(loc) == 1 and str(loc[0]) in cls.field_messages:
            template, at = cls.field_messages[str(loc[0])]
            at = cls.missing_at if kind == "missing" else at
        else:
            template, at = error["msg"], "value"  # not foreseen: pydantic's words
        return _placed(loc, template, at)


def _placed(loc: Loc, template: str, at: At) -> InitErrorDetails:
    """A refusal from a model's own words, moved to the place ``at`` says."""
    return refusal_at(
        () if at in ("owner", "owner_key") else loc,
        template.replace("{key}", repr(loc[0])) if loc else template,
        "key" if at.endswith("key") else "value",
        "{name}" in template,
    )


def problems(exc: ValidationError) -> list[tuple[Loc, str, bool]]:
    """Each refusal as (pydantic location, message, whether it is about the key there)."""
    found = []
    for error in exc.errors():
        loc = error["loc"]
        message = error["ctx"]["message"] if _worded(error) else error["msg"]
        if error["type"].startswith("named_") and len(loc) > 1:
            message = message.replace("{name}", repr(loc[1]))
        found.append((loc, message, error["type"].endswith("at_key") or (bool(loc) and loc[-1] == "[key]")))
    return found
