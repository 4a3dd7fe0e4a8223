"""Mechanics: every mechanic of pilot.mechanics is offered by the API, loads through it, is described
and costed as a hand computation says, and bad parameters are refused naming the field."""
import pytest

from pilot.mechanics import MECHANICS, SCHEMAS, member_period_cost, transaction_cost
from tests.factories import VALID

# what the till shows for each mechanic's VALID parameters, written out by hand
DESCRIPTIONS = {
    "control": "Business as usual: no programme.",
    "fixed_discount": "5% off every purchase with the card.",
    "personal_card": "Personal card with personal offers: double points on baby care.",
    "tiered": "Tiers by spend per 90 days: silver from 0 spent: 2% off; gold from 500 spent: 7% off; "
              "platinum from 1,500 spent: 10% off.",
    "progressive_discount": "The discount grows with the basket: 2% off from 20; 5% off from 50; 8% off from 100.",
    "cumulative_bonus": "1 points per unit spent, each worth 0.01; points expire after 365 days.",
    "preferred_service": "Preferred service: free home delivery.",
    "gifts_lottery": "Spend 50 or more: a chance of 1% to win a prize worth 200.",
    "private_access": "Members-only access: early access to seasonal sales.",
    "club_membership": "Club membership (for a fee of 2): monthly tasting, 5% off wine.",
}

# (mechanic, basket amount, spend to date, cost by hand)
BASKETS = [
    ("control", 100, 0, 0.0),
    ("fixed_discount", 80, 0, 4.0),                     # 5 % of 80
    ("fixed_discount", -20, 0, 0.0),                    # a refund earns no discount cost
    ("personal_card", 100, 0, 3.0),                     # expected 3 % of 100
    ("tiered", 100, 0, 2.0),                            # silver: 2 %
    ("tiered", 100, 499.99, 2.0),                       # still silver
    ("tiered", 100, 500, 7.0),                          # gold from 500 spent: 7 %
    ("tiered", 100, 2000, 10.0),                        # platinum
    ("progressive_discount", 10, 0, 0.0),               # below the first band
    ("progressive_discount", 60, 0, 3.0),               # 5 % band
    ("progressive_discount", 120, 0, 9.6),              # 8 % band
    ("cumulative_bonus", 100, 0, 0.7),                  # 100 points x 0.01 x (1 - 0.3)
    ("cumulative_bonus", 250, 0, 1.75),                 # 250 points x 0.01 x (1 - 0.3)
    ("preferred_service", 100, 0, 0.0),                 # costs per member-period, not per purchase
    ("gifts_lottery", 49, 0, 0.0),                      # condition not met
    ("gifts_lottery", 50, 0, 2.0),                      # 1 % x 200
    ("private_access", 100, 0, 0.0),                    # costs per member-period, not per purchase
    ("club_membership", 40, 0, 2.0),                    # 5 % member discount
]

# cost of one member for one period, net of the fee, by hand
PERIOD_COSTS = {"control": 0.0, "fixed_discount": 0.0, "personal_card": 0.4, "tiered": 0.0,
                "progressive_discount": 0.0, "cumulative_bonus": 0.0, "preferred_service": 1.5,
                "gifts_lottery": 0.0, "private_access": 0.2, "club_membership": 1.0}  # 3.0 - fee 2.0


def _create(client, headers, mechanic, parameters):
    body = {"key": "prog", "name": "Programme", "variants": [
        {"key": "v", "name": "Variant", "mechanic": mechanic, "parameters": parameters}]}
    return client.post("/api/v1/programmes", json=body, headers=headers)


def test_the_api_offers_exactly_the_mechanics_with_a_schema(client):
    assert set(SCHEMAS) == set(MECHANICS)
    schema = client.get("/api/openapi.json").json["components"]["schemas"]["VariantIn"]
    assert schema["properties"]["mechanic"]["enum"] == list(MECHANICS)


@pytest.mark.parametrize("mechanic", MECHANICS)
def test_each_mechanic_loads_through_the_api_and_is_described_and_costed(client, auth, mechanic):
    m = auth("manager")
    assert _create(client, m, mechanic, VALID[mechanic]).status_code == 201
    variant = client.get("/api/v1/programmes/prog", headers=m).json["variants"][0]
    assert variant["mechanic"] == mechanic and variant["description"] == DESCRIPTIONS[mechanic]
    stored = variant["parameters"]  # as the service keeps them, defaults filled in
    assert {k: stored[k] for k in VALID[mechanic]} == VALID[mechanic]
    baskets = [b for b in BASKETS if b[0] == mechanic]
    assert baskets, f"no hand-computed basket for {mechanic}"
    for _, amount, spend_to_date, cost in baskets:
        assert transaction_cost(mechanic, stored, amount, spend_to_date) == pytest.approx(cost), (amount, spend_to_date)
    assert member_period_cost(mechanic, stored) == pytest.approx(PERIOD_COSTS[mechanic])


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
def test_bad_parameters_are_refused_naming_the_field(client, auth, mechanic, params, field):
    r = _create(client, auth("manager"), mechanic, params)
    assert r.status_code == 422, r.json
    assert field in r.json["error"]["details"]["fields"]["variants"]["0"]["parameters"], r.json
    assert client.get("/api/v1/programmes/prog", headers=auth("manager")).status_code == 404  # nothing stored
