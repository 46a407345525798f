from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import fastavro
import pytest

from feature_store.adapters.avro_wire import DeadLetterReason, DecodeError, WireDecoder, encode, schema_id
from feature_store.core.model import Registry
from feature_store.events.generator import (
    Defect,
    EventGenerator,
    EventKind,
    GeneratedEvent,
    GeneratorConfig,
    with_topic_prefix,
)
from feature_store.events.population import Population
from feature_store.events.scripts import AppScript
from tests.unit.events.conftest import SAMPLE_CONFIG, SAMPLE_SIZE, START_MS

SMALL = GeneratorConfig(
    seed=3, rate=2000.0, users=1_000, start_ms=START_MS, late_fraction=0.1, malformed_fraction=0.1, warmup_s=5
)


def fingerprint(events: list[GeneratedEvent]) -> list[tuple[object, ...]]:
    return [(e.topic, e.key, e.value, e.event_time_ms, e.kind, e.defect) for e in events]


def decoders(registry: Registry) -> dict[str, WireDecoder]:
    return {s.name: WireDecoder(s, registry.sources) for s in registry.sources}


# --------------------------------------------------------------------------------------------
# determinism


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(registry: Registry) -> None:
    first = fingerprint(list(EventGenerator(registry, SMALL).events(max_events=3000)))
    again = fingerprint(list(EventGenerator(registry, SMALL).events(max_events=3000)))
    other = fingerprint(
        list(EventGenerator(registry, dataclasses.replace(SMALL, seed=4)).events(max_events=3000))
    )

    assert first == again
    assert first != other


def test_successive_calls_continue_one_stream(registry: Registry) -> None:
    gen = EventGenerator(registry, SMALL)
    pieces = list(gen.events(max_events=700)) + list(gen.events(max_events=1300))

    assert fingerprint(pieces) == fingerprint(list(EventGenerator(registry, SMALL).events(max_events=2000)))
    assert gen.emitted == 2000


_DIGEST_SCRIPT = """
import hashlib, sys
from pathlib import Path
from typing import Any
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventGenerator, GeneratorConfig
config = GeneratorConfig(seed=5, rate=1000.0, users=500, start_ms=1, late_fraction=0.1,
                         malformed_fraction=0.1, warmup_s=2)
h = hashlib.sha256()
for e in EventGenerator(load_registry(Path(sys.argv[1])), config).events(max_events=2000):
    h.update(e.topic.encode() + (e.key or b"-") + e.value + str(e.event_time_ms).encode())
print(h.hexdigest())
"""


def test_determinism_does_not_depend_on_hash_randomisation(example_registry_dir: Path) -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(example_registry_dir)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_duration_and_max_events_bound_the_stream(registry: Registry) -> None:
    config = dataclasses.replace(SMALL, rate=250.0)

    assert len(list(EventGenerator(registry, config).events(duration_s=2.0))) == 500
    assert len(list(EventGenerator(registry, config).events(max_events=10, duration_s=2.0))) == 10
    assert list(EventGenerator(registry, config).events(max_events=0)) == []


# --------------------------------------------------------------------------------------------
# every source, valid wire format


def test_every_source_gets_events_that_decode_to_their_record(
    registry: Registry, sample: list[GeneratedEvent]
) -> None:
    decode = decoders(registry)
    seen: Counter[str] = Counter()
    for e in sample:
        if e.kind is EventKind.MALFORMED:
            continue
        assert e.topic == registry.source(e.source).topic
        assert decode[e.source].decode(e.value) == e.record
        seen[e.source] += 1

    assert set(seen) == {s.name for s in registry.sources}
    assert min(seen.values()) >= 20, seen


def test_the_bytes_are_those_of_avro_wire_encode(registry: Registry, sample: list[GeneratedEvent]) -> None:
    schemas = {s.name: fastavro.parse_schema(json.loads(s.schema_json)) for s in registry.sources}
    for e in sample[:5000]:
        if e.record is not None:
            source = registry.source(e.source)
            assert e.value == encode(schemas[e.source], schema_id(source), e.record)


def test_the_key_is_the_acting_user(sample: list[GeneratedEvent]) -> None:
    for e in sample:
        assert e.key is not None
        if e.record is not None:
            assert e.key == e.record["user_id"].encode()


def test_event_ids_are_unique_uuid7_strings(sample: list[GeneratedEvent]) -> None:
    ids = [e.record["event_id"] for e in sample if e.record is not None]

    assert len(set(ids)) == len(ids)
    for event_id in ids[:100]:
        parts = event_id.split("-")
        assert [len(p) for p in parts] == [8, 4, 4, 4, 12]
        assert parts[2][0] == "7"
        assert parts[3][0] in "89ab"


def test_the_mix_of_sources_is_plausible(sample: list[GeneratedEvent]) -> None:
    share = Counter(e.source for e in sample)
    n = len(sample)

    assert share["match_request"] > share["match_accept"] > share["video_call_end"] > share["like"]
    assert share["video_call_end"] > 0.05 * n
    assert share["report"] < 0.02 * n
    assert share["purchase"] < share["report"]


# --------------------------------------------------------------------------------------------
# event time, lateness


def test_valid_events_follow_the_clock_and_are_never_late(
    registry: Registry, sample: list[GeneratedEvent]
) -> None:
    step = 1000.0 / SAMPLE_CONFIG.rate
    newest: dict[str, int] = {}
    for i, e in enumerate(sample):
        if e.kind is not EventKind.VALID:
            continue
        source = registry.source(e.source)
        now = START_MS + i * step
        assert now - source.watermark_delay_ms / 2 - 1 <= e.event_time_ms <= now
        if e.source in newest:  # behind the newest by less than the watermark delay: on time
            assert e.event_time_ms > newest[e.source] - source.watermark_delay_ms
        newest[e.source] = max(newest.get(e.source, e.event_time_ms), e.event_time_ms)
        assert e.record is not None
        assert e.record[source.event_time_field] == e.event_time_ms

    end = START_MS + SAMPLE_SIZE * step
    assert max(newest.values()) > end - 1000


def test_late_events_are_later_than_the_allowed_lateness(
    registry: Registry, sample: list[GeneratedEvent]
) -> None:
    newest: dict[str, int] = {}
    late = 0
    for e in sample:
        source = registry.source(e.source)
        if e.kind is EventKind.VALID:
            newest[e.source] = max(newest.get(e.source, e.event_time_ms), e.event_time_ms)
        elif e.kind is EventKind.LATE:
            late += 1
            watermark = newest[e.source] - source.watermark_delay_ms
            assert e.event_time_ms < watermark - source.allowed_lateness_ms - 10_000
            assert e.record is not None
            assert e.record[source.event_time_field] == e.event_time_ms

    assert late / len(sample) == pytest.approx(SAMPLE_CONFIG.late_fraction, abs=0.01)


def test_no_late_or_malformed_events_unless_asked(registry: Registry) -> None:
    config = dataclasses.replace(SMALL, late_fraction=0.0, malformed_fraction=0.0)
    kinds = Counter(e.kind for e in EventGenerator(registry, config).events(max_events=3000))

    assert kinds == {EventKind.VALID: 3000}


# --------------------------------------------------------------------------------------------
# malformed events


def test_malformed_events_fail_decoding_with_the_expected_reason(
    registry: Registry, sample: list[GeneratedEvent]
) -> None:
    decode = decoders(registry)
    defects: Counter[Defect] = Counter()
    for e in sample:
        if e.kind is not EventKind.MALFORMED:
            continue
        assert e.defect is not None
        assert e.record is None
        defects[e.defect] += 1
        with pytest.raises(DecodeError) as info:
            decode[e.source].decode(e.value)
        assert info.value.reason is DeadLetterReason(e.defect.reason)

    assert set(defects) == set(Defect)
    assert sum(defects.values()) / len(sample) == pytest.approx(SAMPLE_CONFIG.malformed_fraction, abs=0.01)


def test_each_defect_maps_to_a_dead_letter_reason() -> None:
    assert {d: DeadLetterReason(d.reason) for d in Defect} == {
        Defect.RANDOM_BYTES: DeadLetterReason.NOT_FRAMED,
        Defect.WRONG_MAGIC: DeadLetterReason.NOT_FRAMED,
        Defect.UNKNOWN_SCHEMA_ID: DeadLetterReason.UNKNOWN_SCHEMA,
        Defect.TRUNCATED: DeadLetterReason.UNDECODABLE,
        Defect.TRAILING_BYTES: DeadLetterReason.UNDECODABLE,
        Defect.SCHEMA_MISMATCH: DeadLetterReason.SCHEMA_MISMATCH,
    }


# --------------------------------------------------------------------------------------------
# users and sessions


def test_activity_is_zipf_skewed(sample: list[GeneratedEvent]) -> None:
    per_user = Counter(e.key for e in sample if e.record is not None)
    top = sorted(per_user.values(), reverse=True)[: SAMPLE_CONFIG.users // 100]

    assert sum(top) / sum(per_user.values()) > 0.3  # the top 1% of users: a third of the traffic


def test_population_draws_follow_a_power_law(registry: Registry) -> None:
    gen = EventGenerator(registry, dataclasses.replace(SMALL, users=10_000, warmup_s=0))
    draws = Counter(gen.population.active() for _ in range(50_000))
    ranked = sorted(draws.values(), reverse=True)

    # Zipf s=1.1 over 10k users: the top 1% start ~60% of sessions, the top user ~15%
    assert sum(ranked[:100]) / 50_000 == pytest.approx(0.6, abs=0.06)
    assert ranked[0] / 50_000 == pytest.approx(0.15, abs=0.03)
    assert all(gen.population.peer(u) != u for u in range(100))


def test_sessions_follow_the_app_script(clean_sample: list[GeneratedEvent]) -> None:
    records = [(e.source, e.event_time_ms, e.record) for e in clean_sample if e.record is not None]
    accepted_at: dict[frozenset[str], int] = {}
    call_ends: dict[str, list[dict[str, object]]] = defaultdict(list)
    checked = 0
    for source, at, rec in records:
        if source == "match_accept" and rec["accepted"]:
            assert rec["user_id"] == rec["accepter_id"] != rec["requester_id"]
            accepted_at[frozenset((rec["requester_id"], rec["accepter_id"]))] = at
        elif source == "video_call_end":
            pair = frozenset((rec["user_id"], rec["partner_id"]))
            assert pair in accepted_at, "a call ends only after a match was accepted"
            assert accepted_at[pair] <= at
            call_ends[str(rec["call_id"])].append(rec)
            checked += 1
    assert checked > 1000
    for ends in call_ends.values():
        if len(ends) == 2:  # one event per participant, same call
            a, b = ends
            assert (a["user_id"], a["partner_id"]) == (b["partner_id"], b["user_id"])
            assert a["duration_s"] == b["duration_s"]
            assert {a["ended_by"], b["ended_by"]} in ({"self", "partner"}, {"network"}, {"moderation"})


def test_values_have_plausible_distributions(sample: list[GeneratedEvent]) -> None:
    calls = [e.record for e in sample if e.source == "video_call_end" and e.record is not None]
    durations = [int(r["duration_s"]) for r in calls]
    answers = [e.record["accepted"] for e in sample if e.source == "match_accept" and e.record is not None]
    purchases = [e.record for e in sample if e.source == "purchase" and e.record is not None]

    assert 20 <= statistics.median(durations) <= 120  # calls ending in the sample: long ones are rarer
    assert 0.03 < sum(d < 10 for d in durations) / len(durations) < 0.3  # skips exist
    assert 0.2 < sum(answers) / len(answers) < 0.6
    assert 0.4 < sum(r["rating"] is None for r in calls) / len(calls) < 0.8
    assert all(1 <= r["rating"] <= 5 for r in calls if r["rating"] is not None)
    assert {r["currency"] for r in purchases} >= {"USD"}


def test_call_durations_are_log_normal() -> None:
    rng = random.Random(1)
    script = AppScript(rng, Population(1_000, rng, seed=1), seed=1)
    durations = [
        int(hints["duration_s"])
        for user in range(3_000)
        for _, source, _, hints in script.session(user % 1_000)
        if source == "video_call_end" and hints is not None
    ]
    logs = [math.log(max(d, 1)) for d in durations]

    assert statistics.median(durations) == pytest.approx(60, rel=0.15)
    assert statistics.stdev(logs) == pytest.approx(1.3, rel=0.15)
    assert max(durations) > 20 * statistics.median(durations)  # a long tail


def test_users_act_in_bursts(registry: Registry) -> None:
    """Sessions, then idle: gaps between a user's events vary more than a Poisson process's (CV 1)."""
    config = GeneratorConfig(seed=11, rate=20.0, users=500, start_ms=START_MS)  # 33 min of a small app
    times: dict[bytes | None, list[int]] = defaultdict(list)
    for e in EventGenerator(registry, config).events(max_events=40_000):
        times[e.key].append(e.event_time_ms)
    by_activity = sorted(times.values(), key=len, reverse=True)
    cvs = []
    for ts in by_activity[50:200]:  # users of middling activity
        gaps = [b - a for a, b in itertools.pairwise(sorted(ts))]
        cvs.append(statistics.stdev(gaps) / statistics.mean(gaps))

    assert statistics.median(cvs) > 1.2


# --------------------------------------------------------------------------------------------
# configuration


def test_with_topic_prefix_renames_source_and_dead_letter_topics(registry: Registry) -> None:
    renamed = with_topic_prefix(registry, "t1.")

    for old, new in zip(registry.sources, renamed.sources, strict=True):
        assert new.topic == f"t1.{old.topic}"
        assert new.dead_letter_topic == (f"t1.{old.dead_letter_topic}" if old.dead_letter_topic else "")
        assert new.schema_fingerprint == old.schema_fingerprint
    assert with_topic_prefix(registry, "") is registry
    first = next(iter(EventGenerator(renamed, SMALL)))
    assert first.topic.startswith("t1.")


@pytest.mark.parametrize(
    "changes",
    [
        {"rate": 0.0},
        {"users": 1},
        {"late_fraction": 1.5},
        {"malformed_fraction": -0.1},
        {"late_fraction": 0.6, "malformed_fraction": 0.6},
        {"time_scale": 0.0},
        {"warmup_s": -1.0},
    ],
)
def test_config_rejects_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, **changes)


def test_high_rates_compress_session_time(registry: Registry) -> None:
    assert GeneratorConfig(rate=1000.0).effective_time_scale == 1.0
    fast = GeneratorConfig(rate=100_000.0)
    assert fast.effective_time_scale < 0.02
    assert fast.effective_warmup_s * fast.rate <= 200_000  # warm-up stays bounded
