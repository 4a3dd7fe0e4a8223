"""Store pilots' part of the decision: a design that cannot reach significance says so.

The decision test of a store pilot (pilot.store_effects) is significant only when its randomisation
test is, and the matched scheme of a few stores has few assignments: six stores in two regions have
16, so no p-value below 0.125 is possible. Waiting longer cannot change that; more stores can. When
the smallest p-value the scheme can give is above α, the recommendation is to extend the pilot with
stores (how many the scheme needs), not days.
"""
from __future__ import annotations

from typing import Any

from pilot.analysis_config import AnalysisConfig
from pilot.store_effects import stores_for_min_p
from pilot.verdicts import primary

Row = dict[str, Any]


def design_limit(config: AnalysisConfig, results: Row, best: str | None) -> tuple[Row, Row] | None:
    """(reason, action) when the best arm's primary test cannot be significant with this design."""
    row = primary(results, best) if best else None
    if row is None or not row.get("cannot_be_significant"):
        return None
    stores = (row.get("n_control") or 0) + (row.get("n_treatment") or 0)
    family = len(config.treatments)  # Holm over the arms' primaries (guardrails are not in it: store_results)
    needed = stores_for_min_p(config.alpha, family)
    more = max(needed - stores, 1)
    floor = row.get("min_p_holm") or row["min_p_value"]
    holm = (f" (Holm over the {family} arms' primaries: at least {floor:.3g})"
            if floor != row["min_p_value"] else "")
    return ({"code": "cannot_be_significant", "arm": best, "metric": row["metric"],
             "min_p_value": row["min_p_value"], "min_p_holm": floor, "alpha": config.alpha, "stores": stores,
             "stores_needed": needed, "effect_rel": row["effect_rel"],
             "message": f"Cannot be significant with this design: {stores} stores in {best} and control allow "
                        f"{row['randomisation']['assignments']:,} assignments, so the smallest p-value the "
                        f"randomisation test can give is {row['min_p_value']:.3g}{holm}, above α = "
                        f"{config.alpha:g}; running longer will not change that. Add stores: about {needed} "
                        f"in matched pairs ({more} more) can reach it."},
            {"type": "extend", "days": 0, "more_units": more, "sample_unit": "store"})
