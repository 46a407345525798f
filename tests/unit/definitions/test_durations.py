from __future__ import annotations

import pytest

from feature_store.definitions.compiler import default_granularity_ms
from feature_store.definitions.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "ms", "label"),
    [
        ("30s", 30_000, "30s"),
        ("10m", 600_000, "10m"),
        ("1h", 3_600_000, "1h"),
        ("24h", 86_400_000, "24h"),
        ("7d", 604_800_000, "7d"),
        ("2w", 1_209_600_000, "2w"),
        ("500ms", 500, "500ms"),
        (" 1H ", 3_600_000, "1h"),
        (90, 90_000, "90s"),
    ],
)
def test_parse(text: object, ms: int, label: str) -> None:
    assert parse_duration(text) == Duration(ms, label)


@pytest.mark.parametrize("bad", ["", "1", "h", "1.5h", "-1h", "1y", "1 hour", True, None, 1.5, [1]])
def test_parse_rejects_with_examples(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


def test_zero_only_when_allowed() -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_duration("0s")
    assert parse_duration("0s", allow_zero=True).ms == 0


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "lifetime"), (0, "0s"), (500, "500ms"), (90_000, "90s"), (3_600_000, "1h"), (604_800_000, "7d")],
)
def test_format(ms: int | None, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("window", "granularity"),
    [
        ("10m", "1m"),
        ("59m", "1m"),
        ("1h", "5m"),
        ("11h", "5m"),
        ("12h", "1h"),
        ("7d", "1h"),
        ("12d", "1d"),
        ("30d", "1d"),
    ],
)
def test_default_granularity(window: str, granularity: str) -> None:
    assert default_granularity_ms(parse_duration(window).ms) == parse_duration(granularity).ms
