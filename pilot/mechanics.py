"""The ten loyalty mechanics: parameter schemas, cost models and plain-language descriptions."""
from __future__ import annotations

from typing import Any

import marshmallow as ma

MECHANICS = ("control", "fixed_discount", "personal_card", "tiered", "progressive_discount", "cumulative_bonus",
             "preferred_service", "gifts_lottery", "private_access", "club_membership")
RATE = ma.validate.Range(0, 0.5, min_inclusive=False)
RATE0 = ma.validate.Range(0, 0.5)
MONEY = ma.validate.Range(min=0)
POSITIVE = ma.validate.Range(min=0, min_inclusive=False)


class Params(ma.Schema):
    class Meta:
        unknown = ma.RAISE
        ordered = True


class PeriodCost(Params):
    cost_per_member_per_period = ma.fields.Float(load_default=0.0, validate=MONEY)
    period_days = ma.fields.Integer(load_default=30, validate=ma.validate.Range(1, 366))


class ControlParams(Params):
    pass


class FixedDiscountParams(Params):
    rate = ma.fields.Float(required=True, validate=RATE, metadata={"description": "Share off every purchase, (0, 0.5]"})


class PersonalCardParams(PeriodCost):
    offer = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    expected_discount_rate = ma.fields.Float(load_default=0.0, validate=RATE0)


class Tier(Params):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 40))
    threshold = ma.fields.Float(required=True, validate=MONEY, metadata={"description": "Spend per period to reach it"})
    discount_rate = ma.fields.Float(required=True, validate=RATE0)


def _increasing(items: list[dict], key: str, what: str) -> None:
    # (an item that failed its own schema comes without the key; its error is reported already)
    values = [i[key] for i in items if key in i]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ma.ValidationError(f"{what} must be strictly increasing.", key)


class TieredParams(Params):
    tiers = ma.fields.List(ma.fields.Nested(Tier), required=True, validate=ma.validate.Length(1, 10))
    period_days = ma.fields.Integer(load_default=90, validate=ma.validate.Range(1, 366))

    @ma.validates("tiers")
    def _tiers(self, tiers: list[dict], **_kw: Any) -> None:
        _increasing(tiers, "threshold", "Tier thresholds")
        names = [t["name"] for t in tiers if "name" in t]
        if len(set(names)) != len(names):
            raise ma.ValidationError("Tier names must be unique.")


class Band(Params):
    min_spend = ma.fields.Float(required=True, validate=MONEY)
    rate = ma.fields.Float(required=True, validate=RATE)


class ProgressiveParams(Params):
    bands = ma.fields.List(ma.fields.Nested(Band), required=True, validate=ma.validate.Length(1, 10))

    @ma.validates("bands")
    def _bands(self, bands: list[dict], **_kw: Any) -> None:
        _increasing(bands, "min_spend", "Band spends")
        _increasing(bands, "rate", "Band rates")


class CumulativeBonusParams(Params):
    points_per_unit = ma.fields.Float(required=True, validate=POSITIVE)
    point_value = ma.fields.Float(required=True, validate=POSITIVE)
    expiry_days = ma.fields.Integer(required=True, validate=ma.validate.Range(1, 3660))
    breakage = ma.fields.Float(required=True, validate=ma.validate.Range(0, 1, max_inclusive=False))


class PreferredServiceParams(PeriodCost):
    terms = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))


class GiftsLotteryParams(Params):
    condition = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    min_spend = ma.fields.Float(load_default=0.0, validate=MONEY)
    prize_value = ma.fields.Float(required=True, validate=POSITIVE)
    win_probability = ma.fields.Float(required=True, validate=ma.validate.Range(0, 1, min_inclusive=False))


class PrivateAccessParams(PeriodCost):
    resource = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))


class ClubMembershipParams(PeriodCost):
    fee = ma.fields.Float(load_default=0.0, validate=MONEY)
    benefits = ma.fields.List(ma.fields.String(validate=ma.validate.Length(1, 200)), required=True,
                              validate=ma.validate.Length(1, 20))
    discount_rate = ma.fields.Float(load_default=0.0, validate=RATE0)


SCHEMAS: dict[str, type[Params]] = {
    "control": ControlParams, "fixed_discount": FixedDiscountParams, "personal_card": PersonalCardParams,
    "tiered": TieredParams, "progressive_discount": ProgressiveParams, "cumulative_bonus": CumulativeBonusParams,
    "preferred_service": PreferredServiceParams, "gifts_lottery": GiftsLotteryParams,
    "private_access": PrivateAccessParams, "club_membership": ClubMembershipParams,
}


def validate_parameters(mechanic: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters checked (and defaults filled) by the mechanic's schema; raises ValidationError."""
    return SCHEMAS[mechanic]().load(parameters)


def tier_for(params: dict[str, Any], spend_to_date: float) -> dict[str, Any] | None:
    """The highest tier whose threshold the spend to date reaches."""
    reached = [t for t in params["tiers"] if spend_to_date >= t["threshold"]]
    return reached[-1] if reached else None


def transaction_cost(mechanic: str, params: dict[str, Any], amount: float, spend_to_date: float = 0.0) -> float:
    """The programme's expected cost of one purchase of `amount` (used when the feed sends none)."""
    if amount <= 0:
        return 0.0
    if mechanic == "fixed_discount":
        return params["rate"] * amount
    if mechanic == "personal_card":
        return params["expected_discount_rate"] * amount
    if mechanic == "club_membership":
        return params["discount_rate"] * amount
    if mechanic == "tiered":
        tier = tier_for(params, spend_to_date)
        return tier["discount_rate"] * amount if tier else 0.0
    if mechanic == "progressive_discount":
        bands = [b for b in params["bands"] if amount >= b["min_spend"]]
        return bands[-1]["rate"] * amount if bands else 0.0
    if mechanic == "cumulative_bonus":
        return params["points_per_unit"] * amount * params["point_value"] * (1 - params["breakage"])
    if mechanic == "gifts_lottery":
        return params["win_probability"] * params["prize_value"] if amount >= params["min_spend"] else 0.0
    return 0.0


def member_period_cost(mechanic: str, params: dict[str, Any]) -> float:
    """The programme's cost of one member for one period, net of any fee."""
    return params.get("cost_per_member_per_period", 0.0) - params.get("fee", 0.0)


def _pct(rate: float) -> str:
    return f"{rate * 100:g}%"


def _money(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def describe(mechanic: str, params: dict[str, Any]) -> str:
    """What the variant means at the till, in one sentence."""
    if mechanic == "control":
        return "Business as usual: no programme."
    if mechanic == "fixed_discount":
        return f"{_pct(params['rate'])} off every purchase with the card."
    if mechanic == "personal_card":
        return f"Personal card with personal offers: {params['offer']}."
    if mechanic == "tiered":
        tiers = "; ".join(f"{t['name']} from {_money(t['threshold'])} spent: {_pct(t['discount_rate'])} off"
                          for t in params["tiers"])
        return f"Tiers by spend per {params['period_days']} days: {tiers}."
    if mechanic == "progressive_discount":
        bands = "; ".join(f"{_pct(b['rate'])} off from {_money(b['min_spend'])}" for b in params["bands"])
        return f"The discount grows with the basket: {bands}."
    if mechanic == "cumulative_bonus":
        return (f"{params['points_per_unit']:g} points per unit spent, each worth {_money(params['point_value'])}; "
                f"points expire after {params['expiry_days']} days.")
    if mechanic == "preferred_service":
        return f"Preferred service: {params['terms']}."
    if mechanic == "gifts_lottery":
        return (f"{params['condition']}: a chance of {_pct(params['win_probability'])} "
                f"to win a prize worth {_money(params['prize_value'])}.")
    if mechanic == "private_access":
        return f"Members-only access: {params['resource']}."
    fee = f"for a fee of {_money(params['fee'])}" if params["fee"] else "free to join"
    return f"Club membership ({fee}): {', '.join(params['benefits'])}."
