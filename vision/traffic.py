"""The live traffic split: which model version classifies a frame, and whether the shadow version also
does. Decided from a hash of the frame id alone, so a retried request sends each frame to the version it
went to before, and a larger canary share keeps the frames a smaller one had (the candidate owns the
lowest buckets)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


def bucket(frame_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the frame id (and the salt: traffic and shadow draw apart)."""
    digest = hashlib.sha256(f"{salt}:{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class TrafficSplit:
    """Weights per version in bucket order (empty: everything to production), and the shadow version
    with the share of frames it also classifies."""

    weights: tuple[tuple[str, float], ...] = ()
    shadow_version: str | None = None
    shadow_share: float = 0.0
    rollout_id: str | None = None
    changed_by: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if any(w < 0 for _, w in self.weights) or (self.weights and sum(w for _, w in self.weights) <= 0):
            raise ValueError(f"traffic weights must be non-negative with a positive sum: {self.weights}")
        if not 0.0 <= self.shadow_share <= 1.0:
            raise ValueError(f"the shadow share must be within [0, 1]: {self.shadow_share}")

    @classmethod
    def canary(cls, candidate: str, production: str, share: float, **kw: Any) -> TrafficSplit:
        return cls(((candidate, share), (production, 1.0 - share)), **kw)

    @property
    def versions(self) -> list[str]:
        named = [v for v, w in self.weights if w > 0]
        return named + ([self.shadow_version] if self.shadow_version and self.shadow_share > 0 else [])

    def share_of(self, version: str) -> float:
        total = sum(w for _, w in self.weights)
        return sum(w for v, w in self.weights if v == version) / total if total else 0.0

    def version_for(self, frame_id: str, default: str) -> str:
        """The version that answers for this frame (`default`, production, when no weights are set)."""
        total = sum(w for _, w in self.weights)
        if not total:
            return default
        point, cumulative = bucket(frame_id, "traffic") * total, 0.0
        for version, weight in self.weights:
            cumulative += weight
            if point < cumulative:
                return version
        return self.weights[-1][0]

    def shadows(self, frame_id: str) -> bool:
        """Whether the shadow version also classifies this frame."""
        return bool(self.shadow_version) and bucket(frame_id, "shadow") < self.shadow_share

    def as_dict(self) -> dict[str, Any]:
        return {"weights": [{"version": v, "weight": w} for v, w in self.weights],
                "shadow_version": self.shadow_version, "shadow_share": self.shadow_share}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TrafficSplit:
        return cls(tuple((w["version"], float(w["weight"])) for w in row.get("weights") or []),
                   row.get("shadow_version"), float(row.get("shadow_share") or 0.0), row.get("rollout_id"),
                   row.get("changed_by", ""), row.get("reason", ""))
