"""The base of every API model: Kubernetes-style camelCase and cross-field rules that also become CEL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


@dataclass(frozen=True)
class Rule:
    """One cross-field rule, written twice side by side: CEL for the API server, Python for everyone else.

    `cel` sees the object in its camelCase API form as `self`; `holds` gets the pydantic model.
    """

    name: str
    cel: str
    message: str
    holds: Callable[[Any], bool]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (the API server prunes them)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=False,
    )

    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [rule.message for rule in type(self).__rules__ if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.__rules__:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message} for r in cls.__rules__
            ]
        return schema


class StatusModel(ApiModel):
    """Status is written by the operator; tolerate fields from newer operators instead of failing reads."""

    model_config = ConfigDict(extra="ignore")


def section(model: type[ApiModel], description: str | None = None) -> Any:
    """A sub-object that is always present: defaulted here and, through `default: {}`, by the API server
    too, so CEL rules may read its fields without `has()` on the parent."""
    # The API server checks a default against the CEL rules without defaulting inside it first, so the
    # default carries the section's own defaults (e.g. resources.families: [any]), not just {}.
    default = model().model_dump(by_alias=True, exclude_none=True, mode="json")
    return Field(default_factory=model, description=description, json_schema_extra={"default": default})
