"""The content-keyed read cache equals uncached reads at any time; the asyncio client."""

from __future__ import annotations

from typing import Any

import pytest

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.lookup import newest_event_ms
from feature_store.core.model import Registry
from feature_store.core.tiles import ViewAggregator
from feature_store.serving.cache import ReadCache
from feature_store.serving.client import AsyncFeatureClient, FeatureServingError, OnlineFeatures
from feature_store.serving.testing import ServerThread, tiles_from_events
from tests.unit.serving.support import HOUR, NOW


@pytest.mark.parametrize("view_name", ["user_calls", "user_match_answers", "user_reports_received"])
def test_cached_reads_equal_uncached_reads_across_tile_boundaries(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]], view_name: str
) -> None:
    registry = applied[1]
    view = registry.view(view_name)
    agg = ViewAggregator(view, {f.name: f.type for f in registry.source(view.source).fields})
    cache = ReadCache(max_tiles=50, max_reads=20)
    for _key, tiles in list(tiles_from_events(registry, view_name, events[view.source]).items())[:4]:
        rows = sorted(tiles.items())
        decoded = {k: agg.decode(k[0], p) for k, p in rows}
        for t in [NOW, NOW + 1, NOW + 5 * 60_000, NOW + HOUR, NOW + 3 * HOUR + 7, NOW + 40 * 24 * HOUR, NOW]:
            for _ in range(2):  # the second time from the cache
                read, newest = cache.read(agg, frozenset(agg.granularities_ms), rows, t)
                assert read == agg.read(decoded, t)
                assert newest == newest_event_ms(decoded.values())
    assert cache.read_hits > 0
    assert cache.tile_hits > 0
    assert len(cache) <= 70


def test_async_client(served: ServerThread) -> None:
    async def use() -> tuple[OnlineFeatures, list[str], int, FeatureServingError]:
        async with AsyncFeatureClient(served.target, timeout_s=5) as client:
            result = await client.get_online_features("abuse_v1", entities={"user_id": ["u1", "u7"]})
            services = [s.name for s in await client.list_feature_services()]
            schema = await client.get_feature_service_schema("ranking_v1")
            try:
                await client.get_online_features(features=["x"], entities={"user_id": ["u1"]})
            except FeatureServingError as exc:
                error = exc
            return result, services, len(schema.features), error

    # grpc.aio supports one running loop per process: the client runs on the server's loop
    result, services, n_features, error = served.call(use())
    assert result.status_rows()[1] == dict.fromkeys(result.feature_names, "NOT_FOUND")
    assert result.columns()["user_id"] == ["u1", "u7"]
    assert len(result.rows(include_entities=False)[0]) == len(result.feature_names)
    assert sorted(services) == ["abuse_v1", "pair_v1", "ranking_v1"]
    assert n_features == 18
    assert error.code.name == "INVALID_ARGUMENT"
