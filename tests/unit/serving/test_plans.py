"""Lookup plans: compiled once per (version, service or ref list), with the right layout."""

from __future__ import annotations

import pytest

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.model import Registry, ValueType
from feature_store.serving.plans import CompiledRegistry, PlanError, PlanErrorKind


@pytest.fixture(scope="module")
def compiled(applied: tuple[FileRegistryStore, Registry]) -> CompiledRegistry:
    return CompiledRegistry(applied[1])


def test_service_plan_layout(compiled: CompiledRegistry, applied: tuple[FileRegistryStore, Registry]) -> None:
    registry = applied[1]
    plan = compiled.service_plan("ranking_v1")

    assert plan.registry_version == registry.version
    assert plan.feature_names == tuple(str(r) for r in registry.service("ranking_v1").features)
    assert plan.join_keys == (("user_id", ValueType.STRING),)
    assert plan.key_groups == ((0,),)
    assert [vp.view.name for vp in plan.views] == [
        "user_match_requests",
        "user_match_inbound",
        "user_match_answers",
        "user_match_outcomes",
        "user_likes_received",
        "user_calls",
        "user_chat",
        "user_purchases",
    ]
    for pos, column in enumerate(plan.columns):
        view = plan.views[column.view_index]
        assert view.aggregator.served_names[column.output_index] == column.name.split(":")[1]
        assert (pos, column.output_index) in plan.view_columns[column.view_index]
        assert plan.value_types[pos] is view.aggregator.value_types[column.output_index]
    avg = plan.columns[plan.feature_names.index("user_calls:call_duration_avg_7d")]
    assert avg.value_type is ValueType.FLOAT64
    assert plan.colspec[plan.feature_names.index("user_calls:call_duration_avg_7d")][2:] == (
        "double_val",
        False,
    )
    assert plan.metric_label == "ranking_v1"


def test_plans_are_compiled_once_and_cached(compiled: CompiledRegistry) -> None:
    assert compiled.service_plan("abuse_v1") is compiled.service_plan("abuse_v1")
    refs = ["user_calls:recent_partners", "user_chat:chat_messages_1h"]
    first = compiled.refs_plan(refs)
    assert compiled.refs_plan(list(refs)) is first
    assert first.metric_label == "_refs"
    assert first.colspec[0][2:] == ("string_list_val", True)
    # views are shared between plans: one aggregator per view and version
    calls = next(vp for vp in compiled.service_plan("ranking_v1").views if vp.view.name == "user_calls")
    assert first.views[0].aggregator is calls.aggregator


def test_mixed_entities_need_the_union_of_join_keys(compiled: CompiledRegistry) -> None:
    plan = compiled.refs_plan(["pair_calls:pair_calls_lifetime", "user_calls:calls_lifetime"])
    assert plan.join_keys == (("user_id", ValueType.STRING), ("peer_id", ValueType.STRING))
    assert plan.key_groups == ((0, 1), (0,))
    assert [vp.key_group for vp in plan.views] == [0, 1]


def test_wildcard_expands_in_served_order(compiled: CompiledRegistry) -> None:
    plan = compiled.refs_plan(["user_match_answers:*"])
    assert plan.feature_names == (
        "user_match_answers:matches_accepted_1h",
        "user_match_answers:matches_accepted_24h",
        "user_match_answers:requests_answered_24h",
        "user_match_answers:requests_answered_7d",
        "user_match_answers:response_ms_avg_7d",
    )


@pytest.mark.parametrize(
    ("refs", "kind"),
    [
        ([], PlanErrorKind.INVALID),
        (["nocolon"], PlanErrorKind.INVALID),
        (["user_calls:x", "user_calls:x"], PlanErrorKind.NOT_FOUND),
        (["user_calls:calls_lifetime", "user_calls:calls_lifetime"], PlanErrorKind.INVALID),
        (["ghost:x"], PlanErrorKind.NOT_FOUND),
    ],
)
def test_plan_errors(compiled: CompiledRegistry, refs: list[str], kind: PlanErrorKind) -> None:
    with pytest.raises(PlanError) as info:
        compiled.refs_plan(refs)
    assert info.value.kind is kind


def test_unknown_service(compiled: CompiledRegistry) -> None:
    with pytest.raises(PlanError, match="unknown feature service 'x'"):
        compiled.service_plan("x")
    assert compiled.service_features["pair_v1"] == frozenset(
        {
            "pair_calls:pair_calls_lifetime",
            "pair_calls:pair_call_seconds_30d",
            "pair_calls:pair_last_call_duration",
        }
    )
