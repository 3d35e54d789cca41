"""The evaluation gate: does the candidate replace the active model?"""

from __future__ import annotations

from dataclasses import dataclass

GATE_METRIC = "ndcg_at_10"
# Differences within float noise count as ties.
EPSILON = 1e-9


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    base: float
    candidate: float
    margin: float

    @property
    def reason(self) -> str:
        verdict = "beats" if self.passed else "does not beat"
        return (f"candidate nDCG@10 {self.candidate:.4f} {verdict} the base {self.base:.4f} "
                f"by more than the margin {self.margin:.4f}")


def decide(base: dict[str, float], candidate: dict[str, float], margin: float) -> GateDecision:
    """Passes iff candidate nDCG@10 - base nDCG@10 > margin: strictly, so a tie (margin 0)
    never replaces the active model, and margin 1.0 rejects every candidate."""
    b, c = base[GATE_METRIC], candidate[GATE_METRIC]
    return GateDecision(c - b - margin > EPSILON, b, c, margin)
