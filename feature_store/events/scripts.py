"""Scripted sessions of the example app: a user browses, requests matches, talks, likes, reports, buys.

A session is a Python generator of *actions* ``(delay_ms, source, actor, hints)``: the
delay after the previous action of the same session (realistic time, before the
generator's time scale), the source name, the user who acts (the message key) and the
field values the script chose. Actions of sources the loaded registry lacks are skipped by
the generator; fields the hints leave out, or whose Avro type does not fit, are filled
generically (see ``fields``), so the script only needs to know the example registry's names.

One round of a session::

    match_request u->t  [like u->t]  (80%) match_accept by t after a log-normal response time
        accepted (per-target pickiness) -> chat_message* during the call -> video_call_end x2
        (duration log-normal, one event per participant) -> [like either way] -> [report]

then an idle gap before the next round; a few sessions end with a purchase (or a refund).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate
from math import exp
from typing import Any

from feature_store.events.fields import BOOL, ID, INT, OPT_INT, OPT_STR, STR, Hint, enum
from feature_store.events.population import Population
from feature_store.events.sampling import NORMAL, geometric, lognormal

Action = tuple[float, str, int, dict[str, Any] | None]

SURFACES = ("discover", "queue", "profile", "rematch")
PLATFORMS = ("ios", "android", "web")
ENDED_BY = ("self", "partner", "network", "moderation")
REPORT_REASONS = ("spam", "nudity", "harassment", "underage", "scam", "other")
PRODUCTS = (("boost_1h", 499), ("super_likes_5", 399), ("premium_month", 1499), ("premium_year", 9999))
CURRENCIES = ("USD", "EUR", "GBP", "BRL", "INR")

# The fields each scripted source fills, and the kind of value it puts there.
SCRIPTED_HINTS: dict[str, dict[str, Hint]] = {
    "match_request": {
        "user_id": ID,
        "target_id": ID,
        "surface": enum(*SURFACES),
        "platform": enum(*PLATFORMS, nullable=True),
    },
    "match_accept": {
        "user_id": ID,
        "requester_id": ID,
        "accepter_id": ID,
        "accepted": BOOL,
        "response_ms": INT,
    },
    "video_call_end": {
        "user_id": ID,
        "partner_id": ID,
        "call_id": STR,
        "duration_s": INT,
        "ended_by": enum(*ENDED_BY),
        "rating": OPT_INT,
    },
    "chat_message": {"user_id": ID, "peer_id": ID, "conversation_id": STR, "length": INT, "has_media": BOOL},
    "like": {"user_id": ID, "target_id": ID, "super_like": BOOL},
    "report": {
        "user_id": ID,
        "reporter_id": ID,
        "reported_id": ID,
        "reason": enum(*REPORT_REASONS),
        "call_id": OPT_STR,
    },
    "purchase": {"user_id": ID, "amount_cents": INT, "currency": STR, "product": STR},
}

# Realistic timing (ms) and probabilities; calibrated so a session averages ~9 events.
P_ANSWERED = 0.8
P_LIKE_ON_REQUEST = 0.15
P_LIKE_AFTER_CALL = 0.25
P_LIKE_BACK = 0.2
P_REPORT_SHORT_CALL = 0.1  # calls under 10 s are where abuse shows
P_REPORT_CALL = 0.03
P_REPORT_NO_CALL = 0.01
P_PURCHASE = 0.01
P_REFUND = 0.03
RESPONSE_MEDIAN_MS = 6_000.0
CALL_MEDIAN_S = 60.0
ROUND_GAP_MEDIAN_MS = 15_000.0

_LN = math.log
MU_ROUND_GAP = _LN(ROUND_GAP_MEDIAN_MS)
MU_RESPONSE = _LN(RESPONSE_MEDIAN_MS)
MU_CALL = _LN(CALL_MEDIAN_S)
MU_LIKE_ON_REQUEST = _LN(2_000.0)
MU_LIKE_AFTER_CALL = _LN(5_000.0)
MU_REPORT = _LN(20_000.0)
MU_REPORT_NO_CALL = _LN(10_000.0)
MU_PURCHASE = _LN(5_000.0)
MU_MESSAGE_LENGTH = _LN(25.0)
_Z = NORMAL  # standard normal quantiles: exp(mu + sigma * _Z[int(rnd() * _NZ)]) is a log-normal draw
_NZ = len(NORMAL)


def _cumulative(weights: Sequence[float]) -> list[float]:
    """Cumulative weights normalised to 1; the last is raised so ``bisect_right(cum, random())``
    stays in range."""
    cum = list(accumulate(weights))
    out = [c / cum[-1] for c in cum]
    out[-1] = 2.0
    return out


_SURFACE_CUM = _cumulative((0.55, 0.3, 0.1, 0.05))
_REASON_CUM = _cumulative((0.35, 0.12, 0.2, 0.05, 0.13, 0.15))
_CURRENCY_CUM = _cumulative((0.85, 0.07, 0.04, 0.02, 0.02))
_RATINGS = (1, 2, 3, 4, 5)
_RATING_CUM = _cumulative((0.06, 0.06, 0.18, 0.3, 0.4))


class AppScript:
    """The scripted behaviour of the 1:1 video-chat app; draws from the generator's random stream."""

    def __init__(self, rng: random.Random, population: Population, seed: int) -> None:
        self.rng = rng
        self.population = population
        self._calls = 0
        self._call_salt = random.Random(f"call-ids:{seed}").getrandbits(48)  # noqa: S311 - a simulation
        self._platform: list[str | None] = []
        self._pickiness: list[float] = []
        for user in range(population.size):
            t = Population.trait(user, 1)
            self._platform.append(None if t < 0.05 else "ios" if t < 0.5 else "android" if t < 0.9 else "web")
            self._pickiness.append(0.15 + 0.45 * Population.trait(user, 2))  # P(accept a request)
        self._ids = population.ids

    def _call_id(self) -> str:
        self._calls += 1
        return f"call-{(self._calls * 0x9E3779B97F4B + self._call_salt) & 0xFFFFFFFFFFFF:012x}"

    def session(self, user: int) -> Iterator[Action]:
        rnd, ids, peer = self.rng.random, self._ids, self.population.peer
        uid = ids[user]
        platform = self._platform[user]
        rounds = 1 + geometric(rnd, 0.6)  # mean 2.5
        last_partner = -1
        for r in range(rounds):
            gap = 0.0 if r == 0 else exp(MU_ROUND_GAP + 0.8 * _Z[int(rnd() * _NZ)])
            surface = SURFACES[bisect_right(_SURFACE_CUM, rnd())]
            target = last_partner if surface == "rematch" and last_partner >= 0 else peer(user)
            tid = ids[target]
            yield (
                gap,
                "match_request",
                user,
                {"user_id": uid, "target_id": tid, "surface": surface, "platform": platform},
            )
            if rnd() < P_LIKE_ON_REQUEST:
                yield (
                    exp(MU_LIKE_ON_REQUEST + 0.7 * _Z[int(rnd() * _NZ)]),
                    "like",
                    user,
                    {"user_id": uid, "target_id": tid, "super_like": rnd() < 0.05},
                )
            if rnd() >= P_ANSWERED:
                continue
            response_ms = min(int(exp(MU_RESPONSE + _Z[int(rnd() * _NZ)])), 3_600_000)
            accepted = rnd() < self._pickiness[target]
            yield (
                float(response_ms),
                "match_accept",
                target,
                {
                    "user_id": tid,
                    "requester_id": uid,
                    "accepter_id": tid,
                    "accepted": accepted,
                    "response_ms": response_ms,
                },
            )
            if accepted:
                last_partner = target
                yield from self._call(user, target)
        if rnd() < P_REPORT_NO_CALL:
            yield (
                exp(MU_REPORT_NO_CALL + _Z[int(rnd() * _NZ)]),
                "report",
                user,
                {
                    "user_id": uid,
                    "reporter_id": uid,
                    "reported_id": ids[peer(user)],
                    "reason": REPORT_REASONS[bisect_right(_REASON_CUM, rnd())],
                    "call_id": None,
                },
            )
        if rnd() < P_PURCHASE:
            product, price = PRODUCTS[int(rnd() * len(PRODUCTS))]
            yield (
                exp(MU_PURCHASE + _Z[int(rnd() * _NZ)]),
                "purchase",
                user,
                {
                    "user_id": uid,
                    "amount_cents": -price if rnd() < P_REFUND else price,
                    "currency": CURRENCIES[bisect_right(_CURRENCY_CUM, rnd())],
                    "product": product,
                },
            )

    def _call(self, user: int, target: int) -> Iterator[Action]:
        rnd, ids = self.rng.random, self._ids
        uid, tid = ids[user], ids[target]
        call_id = self._call_id()
        duration_s = min(int(exp(MU_CALL + 1.3 * _Z[int(rnd() * _NZ)])), 4 * 3600)
        pending = 1_000.0 + 3_000.0 * rnd()  # connecting
        # chat during the call: about one message per 20 s on average, at most 12
        n_chat = min(12, int(-math.log(1.0 - rnd()) * duration_s / 20.0))
        conversation = f"conv-{uid}-{tid}" if user < target else f"conv-{tid}-{uid}"
        at = 0.0
        for offset in sorted([rnd() * duration_s * 1000.0 for _ in range(n_chat)]):
            from_user = rnd() < 0.5
            yield (
                pending + offset - at,
                "chat_message",
                user if from_user else target,
                {
                    "user_id": uid if from_user else tid,
                    "peer_id": tid if from_user else uid,
                    "conversation_id": conversation,
                    "length": max(1, min(2000, int(exp(MU_MESSAGE_LENGTH + 0.9 * _Z[int(rnd() * _NZ)])))),
                    "has_media": rnd() < 0.08,
                },
            )
            pending, at = 0.0, offset
        roll = rnd()
        if roll < 0.005:
            ends = ("moderation", "moderation")
        elif roll < 0.05:
            ends = ("network", "network")
        elif roll < 0.525:
            ends = ("self", "partner")
        else:
            ends = ("partner", "self")
        for i in (0, 1):
            rating: int | None = None
            if rnd() < 0.4:
                rating = _RATINGS[bisect_right(_RATING_CUM, rnd())]
                if duration_s < 10:
                    rating = max(1, rating - 2)
            yield (
                pending + duration_s * 1000.0 - at if i == 0 else 300.0 * rnd(),
                "video_call_end",
                target if i else user,
                {
                    "user_id": tid if i else uid,
                    "partner_id": uid if i else tid,
                    "call_id": call_id,
                    "duration_s": duration_s,
                    "ended_by": ends[i],
                    "rating": rating,
                },
            )
        if rnd() < P_LIKE_AFTER_CALL:
            yield (
                exp(MU_LIKE_AFTER_CALL + 0.8 * _Z[int(rnd() * _NZ)]),
                "like",
                user,
                {"user_id": uid, "target_id": tid, "super_like": rnd() < 0.05},
            )
        if rnd() < P_LIKE_BACK:
            yield (
                exp(MU_LIKE_AFTER_CALL + 0.8 * _Z[int(rnd() * _NZ)]),
                "like",
                target,
                {"user_id": tid, "target_id": uid, "super_like": rnd() < 0.05},
            )
        if rnd() < (P_REPORT_SHORT_CALL if duration_s < 10 else P_REPORT_CALL):
            reporter, reported = (user, target) if rnd() < 0.7 else (target, user)
            yield (
                exp(MU_REPORT + _Z[int(rnd() * _NZ)]),
                "report",
                reporter,
                {
                    "user_id": ids[reporter],
                    "reporter_id": ids[reporter],
                    "reported_id": ids[reported],
                    "reason": REPORT_REASONS[bisect_right(_REASON_CUM, rnd())],
                    "call_id": call_id,
                },
            )

    def generic_session(self, user: int, sources: Sequence[str]) -> Iterator[Action]:
        """A burst of events of sources the script does not know: every field generated."""
        rng = self.rng
        rnd = rng.random
        n = 1 + geometric(rnd, 0.65)
        for i in range(n):
            delay = 0.0 if i == 0 else lognormal(rnd, _LN(10_000.0), 1.0)
            yield delay, sources[rng.randrange(len(sources))], user, None
