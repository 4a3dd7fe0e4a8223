"""Deterministic bucketing: SHA-256 of "salt:unit_id", first 7 bytes as a fraction of 2^56.

Any system can reproduce a bucket: sha256(f"{salt}:{unit_id}".encode("utf-8")), take the first
7 bytes big-endian as an integer, divide by 2**56. Variants take consecutive ranges of [0, 1)
in the order of their keys (sorted), each as wide as its weight.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping


def bucket(salt: str, unit_id: str) -> float:
    """The unit's place in [0, 1) under this salt."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:7], "big") / 2**56


def choose(weights: Mapping[str, float], point: float) -> str | None:
    """The variant whose range holds the point; None when the weights leave it uncovered."""
    edge = 0.0
    for key in sorted(weights):
        edge += weights[key]
        if point < edge and weights[key] > 0:
            return key
    return None


def variant_for(salt: str, unit_id: str, weights: Mapping[str, float]) -> str | None:
    """The variant a unit gets under the salt and weights."""
    return choose(weights, bucket(salt, unit_id))
