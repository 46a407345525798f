"""A connectivity job: Kafka topic -> Python map -> Kafka topic, bounded.

Proves the whole streaming path of the local stack (PyFlink MiniCluster, the
Kafka connector jar, the broker, a Python function in thread mode) in seconds.
Used by `fstore dev check` and the smoke tests.
"""

from __future__ import annotations

import argparse
import sys

from feature_store.stream.environment import FlinkSettings, create_environment


def tag_record(value: str) -> str:
    return f"seen-by-flink:{value}"


def run(bootstrap: str, in_topic: str, out_topic: str, group: str) -> None:
    from pyflink.common import Types, WatermarkStrategy  # noqa: PLC0415
    from pyflink.common.serialization import SimpleStringSchema  # noqa: PLC0415
    from pyflink.datastream.connectors.base import DeliveryGuarantee  # noqa: PLC0415
    from pyflink.datastream.connectors.kafka import (  # noqa: PLC0415
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )

    env = create_environment(FlinkSettings())
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(in_topic)
        .set_group_id(group)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(out_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-in")
        .map(tag_record, output_type=Types.STRING())
        .sink_to(sink)
    )
    env.execute("fstore-passthrough")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--in-topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--group", default="fstore-passthrough")
    args = parser.parse_args(argv)
    run(args.bootstrap, args.in_topic, args.out_topic, args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
