"""Deterministic bucketing: SHA-256 of "salt:unit_id", its first 13 hex digits as a fraction of 16^13.

Any system can reproduce a bucket: take the hex SHA-256 digest of the UTF-8 text
"{salt}:{unit_id}", read its first 13 hex digits (52 bits) as an integer, divide by 16**13
(exact in a double). Variants take consecutive ranges of [0, 1) in the order of their keys
(sorted), each as wide as its weight. PostgreSQL computes the same number in SQL for bulk
assignment; SQLite calls this function.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping


def bucket(salt: str, unit_id: str) -> float:
    """The unit's place in [0, 1) under this salt."""
    return int(hashlib.sha256(f"{salt}:{unit_id}".encode()).hexdigest()[:13], 16) / 16**13


def edges(weights: Mapping[str, float]) -> list[tuple[str, float]]:
    """Each variant with positive weight and the upper edge of its range, in key order."""
    out, edge = [], 0.0
    for key in sorted(weights):
        edge += weights[key]
        if weights[key] > 0:
            out.append((key, edge))
    return out


def choose(weights: Mapping[str, float], point: float) -> str | None:
    """The variant whose range holds the point; None when the weights leave it uncovered."""
    return next((key for key, edge in edges(weights) if point < edge), None)


def variant_for(salt: str, unit_id: str, weights: Mapping[str, float]) -> str | None:
    """The variant a unit gets under the salt and weights."""
    return choose(weights, bucket(salt, unit_id))
