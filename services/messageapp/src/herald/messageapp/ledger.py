"""What the stand-in provider has accepted: each Idempotency-Key's one effect, in arrival order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One accepted message, as the provider would hand it on."""

    id: str
    destination: str
    body: str

    def as_json(self) -> dict[str, str]:
        """The delivery as GET /messages shows it."""
        return {"id": self.id, "destination": self.destination, "body": self.body}


class Ledger:
    """Remembers keys so that a repeated key is acknowledged without a second effect."""

    def __init__(self) -> None:
        # A dict keeps insertion order: the deliveries in the order they were first accepted.
        self._deliveries: dict[str, Delivery] = {}
        self._duplicates = 0
        self.failures = 0  # calls answered with a simulated failure (no effect)

    def accept(self, delivery: Delivery) -> bool:
        """Record delivery unless its key was seen; True when it was (a duplicate, no effect)."""
        # No lock: the app runs on one asyncio loop and nothing here awaits.
        if delivery.id in self._deliveries:
            self._duplicates += 1
            return True
        self._deliveries[delivery.id] = delivery
        return False

    def stats(self) -> dict[str, int]:
        """Accepted calls (received = unique + duplicates); failed and malformed calls not."""
        unique = len(self._deliveries)
        return {
            "received": unique + self._duplicates,
            "unique": unique,
            "duplicates": self._duplicates,
        }

    def deliveries(self) -> list[Delivery]:
        """Every unique delivery, in arrival order."""
        return list(self._deliveries.values())

    def reset(self) -> None:
        """Forget every key, delivery and count."""
        self._deliveries.clear()
        self._duplicates = 0
        self.failures = 0
