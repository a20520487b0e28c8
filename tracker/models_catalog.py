"""Catalogue decisions: which rival product is which of the own shop's products (`tracker match`).

A row is a *decision* on one pair (rival product target, own product target): `confirmed` or `rejected`,
by a person (`tracker match --review`) or from the config (`match:` keys never need a row). A decided pair
is never proposed or guessed again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tracker.models import Base, utcnow


class ProductMatch(Base):
    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("target_id", "own_target_id", name="uq_matches_pair"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"), index=True)
    own_target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))        # gtin | sku | mpn | title | config
    status: Mapped[str] = mapped_column(String(16))        # confirmed | rejected
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
