"""Pre-period values of stores for matching: sales before the pilot where known, else floor size."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot.db import utcnow
from pilot.models import Store, Transaction

PRE_DAYS = 56


def pre_period_values(session: Session, stores: list[Store], before: datetime | None) -> dict[str, float]:
    """Each store's sales in the 56 days before `before`; floor size when no store has any yet."""
    end = before or utcnow()
    ids = {s.id: s.code for s in stores}
    sales = dict(session.execute(
        select(Transaction.store_id, func.sum(Transaction.amount))
        .where(Transaction.store_id.in_(ids), Transaction.occurred_at >= end - timedelta(days=PRE_DAYS),
               Transaction.occurred_at < end).group_by(Transaction.store_id)).all()) if ids else {}
    if not sales:
        return {s.code: float(s.size_sqm or 0.0) for s in stores}
    return {s.code: float(sales.get(s.id) or 0.0) for s in stores}
