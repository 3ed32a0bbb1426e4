"""The quality gate: a pure decision on evaluation figures, shared with the pipeline's evaluate step."""

from __future__ import annotations

from dataclasses import dataclass

from common.schemas import ModelMetrics

# The figures the gate compares, each with its popularity baseline.
GATED = (("hr_at_10", "popularity_hr_at_10"), ("ndcg_at_10", "popularity_ndcg_at_10"))


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def check_quality(
    candidate: ModelMetrics, live: ModelMetrics | None, margin: float, tolerance: float
) -> GateDecision:
    """Pass when the candidate beats popularity by more than `margin` on HR@10 and NDCG@10,
    and is not more than `tolerance` below the live model on either (when one is live)."""
    for metric, baseline in GATED:
        value, base = getattr(candidate, metric), getattr(candidate, baseline)
        if not value > base + margin:
            return GateDecision(
                False, f"{metric} {value:.4f} does not beat popularity {base:.4f} by more than {margin:.4f}"
            )
    if live is not None:
        for metric, _ in GATED:
            value, current = getattr(candidate, metric), getattr(live, metric)
            if value < current - tolerance:
                return GateDecision(
                    False,
                    f"{metric} {value:.4f} is more than {tolerance:.4f} below the live model's {current:.4f}",
                )
    summary = ", ".join(
        f"{m} {getattr(candidate, m):.4f} (popularity {getattr(candidate, b):.4f})" for m, b in GATED
    )
    return GateDecision(True, f"passed: {summary}")
