"""One set of Redis operations written twice: on Redis and on process memory (see
:meth:`broker.store.store.Store.run`, which picks the backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Backend(Protocol):
    """What the Redis and the memory side of a set of operations have in common."""

    @property
    def shared(self) -> bool:
        """True when what it holds is seen by every process on the same Redis."""
        ...


B = TypeVar("B", bound=Backend)


@dataclass(frozen=True, slots=True)
class Twins(Generic[B]):
    """One set of operations on Redis (None without ``REDIS_URL``) and on process memory."""

    redis: B | None
    memory: B
