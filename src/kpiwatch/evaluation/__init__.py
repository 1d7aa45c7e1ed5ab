"""The pure evaluation core: rules, hysteresis, escalation and the review calendar.

No I/O, no clock, no global state: everything it needs is passed in.
"""

from kpiwatch.evaluation.evaluate import HISTORY_WINDOW, evaluate, history_points, history_window
from kpiwatch.evaluation.reminders import (
    DEFAULT_REMINDERS,
    ReminderPolicy,
    first_due,
    reminder_policy,
    reminder_tick,
    reminders_due,
)
from kpiwatch.evaluation.review import next_review, review_tick

__all__ = [
    "DEFAULT_REMINDERS",
    "HISTORY_WINDOW",
    "ReminderPolicy",
    "evaluate",
    "first_due",
    "history_points",
    "history_window",
    "next_review",
    "reminder_policy",
    "reminder_tick",
    "reminders_due",
    "review_tick",
]
