"""The simulated users: ids, power-law activity and popularity, and per-user traits."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from itertools import accumulate


class Population:
    """``size`` users ``u000000``... with Zipf-like activity (who acts) and popularity (who is picked).

    Activity and popularity are two independent rankings of the same users, each with weight
    ``rank ** -s``: a few users start most sessions, a few others receive most requests.
    Everything derives from ``seed``; ``rng`` draws the samples (the caller's stream).
    """

    __slots__ = (
        "_activity_cum",
        "_activity_rank",
        "_activity_total",
        "_popularity_cum",
        "_popularity_rank",
        "_popularity_total",
        "ids",
        "rng",
        "size",
    )

    def __init__(
        self,
        size: int,
        rng: random.Random,
        *,
        seed: int,
        activity_s: float = 1.1,
        popularity_s: float = 0.9,
    ) -> None:
        if size < 2:
            raise ValueError("a population needs at least 2 users (a match takes two)")
        self.size = size
        self.rng = rng
        width = max(6, len(str(size - 1)))
        self.ids: list[str] = [f"u{i:0{width}d}" for i in range(size)]
        shuffler = random.Random(f"population:{seed}:{size}")  # noqa: S311 - a simulation
        self._activity_rank = list(range(size))
        shuffler.shuffle(self._activity_rank)
        self._popularity_rank = list(range(size))
        shuffler.shuffle(self._popularity_rank)
        # cumulative weights; the last is made infinite so bisect_right never runs past the end
        self._activity_cum = list(accumulate(r**-activity_s for r in range(1, size + 1)))
        self._activity_total = self._activity_cum[-1]
        self._activity_cum[-1] = math.inf
        self._popularity_cum = list(accumulate(r**-popularity_s for r in range(1, size + 1)))
        self._popularity_total = self._popularity_cum[-1]
        self._popularity_cum[-1] = math.inf

    def active(self) -> int:
        """A user starting a session, drawn by activity."""
        return self._activity_rank[bisect_right(self._activity_cum, self.rng.random() * self._activity_total)]

    def peer(self, user: int) -> int:
        """Another user (not ``user``), drawn by popularity."""
        cum, total, ranks = self._popularity_cum, self._popularity_total, self._popularity_rank
        rnd = self.rng.random
        while True:
            other = ranks[bisect_right(cum, rnd() * total)]
            if other != user:
                return other

    @staticmethod
    def trait(user: int, salt: int) -> float:
        """A stable pseudo-random number in [0, 1) per user (platform, pickiness), no state needed."""
        h = (user * 0x9E3779B1 + salt * 0x85EBCA77) & 0xFFFFFFFF
        h ^= h >> 15
        h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
        h ^= h >> 12
        return h / 4294967296.0
