"""Pilot's statistics: sufficient statistics in, frozen result dataclasses out.

Layers run one way: statistics -> inference (means, proportions, ratio, cuped, cluster, srm,
multiple, sequential, heterogeneity, novelty) -> planning (power) and economics.
Imports numpy, scipy and statsmodels only.
"""
