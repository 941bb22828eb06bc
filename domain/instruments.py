"""Tradable instruments and their exchange constraints."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

import msgspec

__all__ = ["Instrument"]


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument with the exchange rules the risk layer enforces.

    Attributes:
        symbol: the engine-wide key, e.g. ``NIFTY25NOVFUT``.
        lot_size: quantities are whole multiples of this.
        tick_size: prices are whole multiples of this.
        freeze_quantity: the exchange's per-order quantity cap (orders above it are refused).
        price_band_pct: the daily circuit band around ``reference_price``, in percent.
        reference_price: previous close; the band and the synthetic market start from it.
        max_spread_ticks: a quote wider than this is a SPREAD_BLOWOUT for entries.
    """

    symbol: str
    lot_size: int = 1
    tick_size: Decimal = Decimal("0.05")
    freeze_quantity: int = 1_000_000
    price_band_pct: Decimal = Decimal("10")
    reference_price: Decimal = Decimal("100")
    max_spread_ticks: int = 20

    def round_price(self, price: Decimal) -> Decimal:
        """Round to the nearest tick."""
        ticks = (price / self.tick_size).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return ticks * self.tick_size

    def round_quantity_down(self, quantity: int) -> int:
        """Round down to whole lots (never up: rounding must not add risk)."""
        return (quantity // self.lot_size) * self.lot_size

    def band(self) -> tuple[Decimal, Decimal]:
        """Return the (lower, upper) price band, rounded inward to whole ticks."""
        width = self.reference_price * self.price_band_pct / Decimal(100)
        lower = ((self.reference_price - width) / self.tick_size).to_integral_value(ROUND_CEILING)
        upper = ((self.reference_price + width) / self.tick_size).to_integral_value(ROUND_FLOOR)
        return lower * self.tick_size, upper * self.tick_size
