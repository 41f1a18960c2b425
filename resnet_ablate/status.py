"""What a cell's record says: the status words, and the paper's fail rule (Table 1's caption: "fail" is a test
error above 20%; a run that diverged fails too)."""

from __future__ import annotations

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
        """A result that reruns keep (unless asked: --retry-failed reruns diverged cells, --force every cell)."""
        return self in (Status.done, Status.diverged)


def outcome(result: dict) -> float | None:
    """The test error (%) a paper table counts for one run: a diverged run counts as 100%, a failed one not at all."""
    status = result.get("status")
    if status == Status.diverged:
        return 100.0
    if status == Status.done and result.get("test_error") is not None:
        return 100 * result["test_error"]
    return None


def is_fail(error_percent: float) -> bool:
    return error_percent > 100 * FAIL_THRESHOLD
