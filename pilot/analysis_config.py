"""The configuration an analysis run is computed with, typed.

A run stores its configuration as plain JSON (`config`, built by pilot.analysis_runs.pilot_config) so that
it can be read back as it was; `AnalysisConfig.from_dict` turns that JSON into the frozen object
the effect tables (pilot.effects), the power glue (pilot.planning) and the decision
(pilot.recommendation) read.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from experiments.results import InferenceConfig
from pilot.metric_columns import CATALOGUE_INFO, MetricInfo, info

DEFAULT_TUNING = 5000.0  # total units around which the always-valid intervals are tightest
SRM_ALPHA = 0.001
HETEROGENEITY_ALPHA = 0.01  # narrowing a programme to some groups is a big step: a stricter bar


@dataclass(frozen=True)
class Gate:
    """What a stage must show before the recommendation is to advance to the next stage."""

    min_days: int = 14
    min_units_per_arm: int = 100
    require_significant: bool = True
    min_roi: float = 0.0
    no_guardrail_harm: bool = True
    no_srm: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Gate:
        """The stage's gate; what it leaves out keeps the default."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass(frozen=True)
class AnalysisConfig:
    """What the statistics of one run read: the arms, the metrics and the bars they are held to."""

    unit: str  # customer | store
    primary_metric: str
    control: str
    allocation: Mapping[str, float]  # variant -> weight
    mechanics: Mapping[str, str]  # variant -> mechanic
    alpha: float
    power: float
    mde: float  # the relative effect the pilot sets out to find
    margin_rate: float
    guardrails: Mapping[str, float] = field(default_factory=dict)  # metric -> relative harm tolerated
    gate: Gate = Gate()
    sequential_tuning: float = DEFAULT_TUNING
    # the defined metrics the run measures, as recorded in its configuration (pilot.metric_columns.stored)
    defined: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisConfig:
        """The configuration from a run's stored `config` JSON."""
        return cls(unit=data["unit"], primary_metric=data["primary_metric"], control=data["control"],
                   allocation=dict(data["allocation"]), mechanics=dict(data["mechanics"]), alpha=data["alpha"],
                   power=data["power"], mde=data["mde"], margin_rate=data["margin_rate"],
                   guardrails={g["metric"]: g.get("max_harm", 0.0) for g in data.get("guardrails", [])},
                   gate=Gate.from_dict(data.get("gate")),
                   sequential_tuning=data.get("sequential_tuning", DEFAULT_TUNING),
                   defined=tuple(data.get("defined_metrics") or ()))

    @property
    def inference(self) -> InferenceConfig:
        """The significance level as the experiments library takes it."""
        return InferenceConfig(alpha=self.alpha)

    @property
    def arms(self) -> list[str]:
        """The variants with units in this stage (a positive weight), control among them."""
        return [k for k, w in self.allocation.items() if w > 0]

    @property
    def treatments(self) -> list[str]:
        """The arms compared with the control."""
        return [k for k in self.arms if k != self.control]

    @cached_property
    def infos(self) -> dict[str, MetricInfo]:
        """How each metric of the run is read: the catalogue's, then the defined ones."""
        return {**CATALOGUE_INFO, **{d["key"]: info(dict(d), i) for i, d in enumerate(self.defined)}}

    def info(self, metric: str) -> MetricInfo:
        """How one metric of the run is read (its test, sums and good direction)."""
        return self.infos[metric]

    def good(self, metric: str, value: float) -> float:
        """The value turned so that positive is good (a cost going down is good)."""
        return value if self.info(metric).good_direction == "up" else -value

    @property
    def metrics(self) -> list[str]:
        """Every catalogue and defined metric: the primary first, then the guardrails, then the rest."""
        first = [self.primary_metric] + [m for m in self.guardrails if m != self.primary_metric]
        return first + [m for m in self.infos if m not in first]

    def role(self, metric: str) -> str:
        """primary, guardrail or secondary."""
        if metric == self.primary_metric:
            return "primary"
        return "guardrail" if metric in self.guardrails else "secondary"
