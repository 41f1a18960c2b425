"""What a cell's record says: the status words, and the paper's fail rule (Table 1's caption: "fail" is a test
error above 20% after the paper's schedule; a run that diverged fails too)."""

from __future__ import annotations

import math
from enum import Enum

FAIL_THRESHOLD = 0.20  # test error, as a fraction


class Status(str, Enum):
    done = "done"  # trained to the end; result.json holds its errors
    diverged = "diverged"  # the training loss became NaN or infinite: a result of the recipe, kept like done
    failed = "failed"  # training raised an error: recorded, and retried by the next plain run
    running = "running"  # a process holds the cell's lock
    partial = "partial"  # a checkpoint and no result: the next run resumes it
    pending = "pending"  # nothing trained yet

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        """The one meaning of ended: done or diverged, a result that reruns keep (unless asked: --retry-failed
        reruns diverged cells, --force every cell). A failed cell is recorded but has not ended."""
        return self in ENDED


ENDED = (Status.done, Status.diverged)


def counted_error(result: dict) -> float | None:
    """The test error (%) a paper table counts for one run: a done run's; a diverged run's last recorded error, or
    infinity where it has none (it ranks last and is never shown as a number); a failed one not at all."""
    status, error = result.get("status"), result.get("test_error")
    if status == Status.diverged:
        return math.inf if error is None else 100 * error
    if status == Status.done and error is not None:
        return 100 * error
    return None


def is_fail(error_percent: float) -> bool:
    return error_percent > 100 * FAIL_THRESHOLD
