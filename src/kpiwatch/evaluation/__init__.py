"""The pure evaluation core: rules, hysteresis, escalation and the review calendar.

No I/O, no clock, no global state: everything it needs is passed in.
"""

from kpiwatch.evaluation.evaluate import HISTORY_WINDOW, evaluate
from kpiwatch.evaluation.review import next_review, review_tick

__all__ = ["HISTORY_WINDOW", "evaluate", "next_review", "review_tick"]
