"""Write audit events in the caller's transaction."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from pilot.models import AuditEvent


def record(session: Session, actor: str, action: str, entity_type: str, entity_id: object = None,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> AuditEvent:
    """Add one audit event to the session; it commits with the change it describes."""
    event = AuditEvent(actor=actor, action=action, entity_type=entity_type,
                       entity_id=None if entity_id is None else str(entity_id),
                       before=_jsonable(before), after=_jsonable(after))
    session.add(event)
    return event


def created(session: Session, actor: str, entity_type: str, obj: Any, key: str,
            as_dict: Callable[[Any], dict[str, Any]]) -> Any:
    """Add a new row, flush it (ids, defaults) and audit its creation."""
    session.add(obj)
    session.flush()
    record(session, actor, "create", entity_type, key, after=as_dict(obj))
    return obj


@contextmanager
def updating(session: Session, actor: str, entity_type: str, key: str, obj: Any,
             as_dict: Callable[[Any], dict[str, Any]]) -> Iterator[Any]:
    """Audit the change the block makes to `obj`: its state before the block and after it."""
    before = as_dict(obj)
    yield obj
    session.flush()
    record(session, actor, "update", entity_type, key, before=before, after=as_dict(obj))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
