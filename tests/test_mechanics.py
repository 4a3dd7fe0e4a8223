"""Mechanics: each one's parameter schema, cost model (hand-computed cases) and description."""
import marshmallow as ma
import pytest

from pilot.mechanics import MECHANICS, describe, member_period_cost, transaction_cost, validate_parameters

VALID = {
    "control": {},
    "fixed_discount": {"rate": 0.05},
    "personal_card": {"offer": "double points on baby care", "expected_discount_rate": 0.03,
                      "cost_per_member_per_period": 0.4},
    "tiered": {"tiers": [{"name": "silver", "threshold": 0, "discount_rate": 0.02},
                         {"name": "gold", "threshold": 500, "discount_rate": 0.07},
                         {"name": "platinum", "threshold": 1500, "discount_rate": 0.1}]},
    "progressive_discount": {"bands": [{"min_spend": 20, "rate": 0.02}, {"min_spend": 50, "rate": 0.05},
                                       {"min_spend": 100, "rate": 0.08}]},
    "cumulative_bonus": {"points_per_unit": 1, "point_value": 0.01, "expiry_days": 365, "breakage": 0.3},
    "preferred_service": {"terms": "free home delivery", "cost_per_member_per_period": 1.5},
    "gifts_lottery": {"condition": "Spend 50 or more", "min_spend": 50, "prize_value": 200, "win_probability": 0.01},
    "private_access": {"resource": "early access to seasonal sales", "cost_per_member_per_period": 0.2},
    "club_membership": {"fee": 2.0, "benefits": ["monthly tasting", "5% off wine"], "discount_rate": 0.05,
                        "cost_per_member_per_period": 3.0},
}


def test_every_mechanic_has_a_valid_example():
    assert set(VALID) == set(MECHANICS)
    for mechanic, params in VALID.items():
        validate_parameters(mechanic, params)


@pytest.mark.parametrize("mechanic, params, field", [
    ("fixed_discount", {"rate": 0.6}, "rate"),
    ("fixed_discount", {"rate": 0}, "rate"),
    ("fixed_discount", {}, "rate"),
    ("fixed_discount", {"rate": 0.1, "extra": 1}, "extra"),
    ("tiered", {"tiers": [{"name": "a", "threshold": 100, "discount_rate": 0.02},
                          {"name": "b", "threshold": 100, "discount_rate": 0.05}]}, "tiers"),
    ("tiered", {"tiers": [{"name": "a", "threshold": 0, "discount_rate": 0.02},
                          {"name": "a", "threshold": 10, "discount_rate": 0.05}]}, "tiers"),
    ("progressive_discount", {"bands": [{"min_spend": 50, "rate": 0.05}, {"min_spend": 20, "rate": 0.08}]}, "bands"),
    ("progressive_discount", {"bands": [{"min_spend": 20, "rate": 0.05}, {"min_spend": 50, "rate": 0.05}]}, "bands"),
    ("cumulative_bonus", {"points_per_unit": 1, "point_value": 0.01, "expiry_days": 365, "breakage": 1.0}, "breakage"),
    ("gifts_lottery", {"condition": "x", "prize_value": 10, "win_probability": 1.5}, "win_probability"),
    ("club_membership", {"benefits": []}, "benefits"),
    ("control", {"rate": 0.1}, "rate"),
])
def test_bad_parameters_name_the_field(mechanic, params, field):
    with pytest.raises(ma.ValidationError) as err:
        validate_parameters(mechanic, params)
    assert field in err.value.messages


@pytest.mark.parametrize("mechanic, amount, spend_to_date, cost", [
    ("control", 100, 0, 0.0),
    ("fixed_discount", 80, 0, 4.0),                     # 5 % of 80
    ("personal_card", 100, 0, 3.0),                     # expected 3 % of 100
    ("tiered", 100, 0, 2.0),                            # silver: 2 %
    ("tiered", 100, 499.99, 2.0),                       # still silver
    ("tiered", 100, 500, 7.0),                          # gold from 500 spent: 7 %
    ("tiered", 100, 2000, 10.0),                        # platinum
    ("progressive_discount", 10, 0, 0.0),               # below the first band
    ("progressive_discount", 60, 0, 3.0),               # 5 % band
    ("progressive_discount", 120, 0, 9.6),              # 8 % band
    ("cumulative_bonus", 100, 0, 0.7),                  # 100 points x 0.01 x (1 - 0.3)
    ("gifts_lottery", 49, 0, 0.0),                      # condition not met
    ("gifts_lottery", 50, 0, 2.0),                      # 1 % x 200
    ("club_membership", 40, 0, 2.0),                    # 5 % member discount
    ("preferred_service", 100, 0, 0.0),                 # costs per member-period, not per purchase
    ("fixed_discount", -20, 0, 0.0),                    # a refund earns no discount cost
])
def test_transaction_cost_models(mechanic, amount, spend_to_date, cost):
    params = validate_parameters(mechanic, VALID[mechanic])
    assert transaction_cost(mechanic, params, amount, spend_to_date) == pytest.approx(cost)


def test_member_period_costs():
    assert member_period_cost("preferred_service", validate_parameters("preferred_service", VALID["preferred_service"])) == 1.5
    assert member_period_cost("club_membership", validate_parameters("club_membership", VALID["club_membership"])) == 1.0
    assert member_period_cost("fixed_discount", {"rate": 0.05}) == 0.0


def test_descriptions():
    p = {m: validate_parameters(m, v) for m, v in VALID.items()}
    assert describe("fixed_discount", p["fixed_discount"]) == "5% off every purchase with the card."
    assert "gold from 500 spent: 7% off" in describe("tiered", p["tiered"])
    assert describe("cumulative_bonus", p["cumulative_bonus"]).startswith("1 points per unit spent, each worth 0.01")
    assert "fee of 2" in describe("club_membership", p["club_membership"])
    assert all(describe(m, p[m]).endswith(".") for m in MECHANICS)
