"""API models made from the workflow contracts' dataclasses, so a shape the workflows declare is not
declared again here: the API adds descriptions, drops internal fields and appends its own (links).
Models are built with `from_attributes`, so `Model.model_validate(dataclass_instance)` works."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, get_type_hints

from pydantic import ConfigDict, Field, create_model


def model_of(name: str, sources: Iterable[type], *, exclude: Iterable[str] = (),
             types: Mapping[str, Any] | None = None, descriptions: Mapping[str, str] | None = None,
             extra: Mapping[str, tuple[Any, Any]] | None = None, doc: str = "") -> Any:
    """A pydantic model with the fields of the dataclasses in `sources` (a later source's field of the
    same name replaces an earlier one's), minus `exclude`, with `types` overriding a field's type (for
    instance an ISO time string the API parses as a datetime) and `extra` fields appended. Typed `Any`
    because mypy cannot follow a class made at run time; subclass it to add methods or fields."""
    excluded, types, descriptions = set(exclude), types or {}, descriptions or {}
    fields: dict[str, Any] = {}
    for source in sources:
        hints = get_type_hints(source)
        for f in dataclasses.fields(source):
            if f.name in excluded:
                continue
            description = descriptions.get(f.name)
            if f.default is not dataclasses.MISSING:
                info = Field(f.default, description=description)
            elif f.default_factory is not dataclasses.MISSING:
                info = Field(default_factory=f.default_factory, description=description)
            else:
                info = Field(description=description)  # required
            fields[f.name] = (types.get(f.name, hints[f.name]), info)
    for field_name, spec in (extra or {}).items():
        fields[field_name] = spec
    return create_model(name, __config__=ConfigDict(from_attributes=True), __doc__=doc or None, **fields)
