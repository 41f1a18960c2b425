"""What several test modules read back from a store."""

from resnet_ablate.record import scan


def recorded(root) -> list[dict]:
    """The result.json of every recorded run under ``root`` (each checked by ``record.read``), as plain data."""
    return [r.result for r in scan(root)[0]]
