"""Pre-period values of stores for matching: sales before the pilot where known, else floor size."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from pilot.models import Store


def pre_period_values(session: Session, stores: list[Store], before: datetime | None) -> dict[str, float]:
    """A pre-period size measure per store code (floor size until transactions are recorded)."""
    return {s.code: float(s.size_sqm or 0.0) for s in stores}
