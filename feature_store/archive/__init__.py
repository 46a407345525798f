"""The event archive: every decodable event of every source, as Parquet, for offline use.

``fstore archive run`` consumes each source topic (and its dead-letter topic) with its own
consumer group and writes::

    <out>/source=<name>/date=<YYYY-MM-DD>/part-<partition>-<first offset>-<last offset>.parquet
    <out>/dead_letters/source=<name>/date=<YYYY-MM-DD>/part-<dlq partition>-<first>-<last>.parquet

``date`` is the UTC day of the event time (of the dead-letter record's Kafka timestamp for dead
letters). Event files hold the Avro fields (logical types stripped, so the event time is int64
ms) plus ``_partition`` and ``_offset``; a replay after a crash rewrites the same rows, so readers
deduplicate on ``(_partition, _offset)``. See docs/architecture.md ("Archive") and docs/export.md.

``layout`` and ``schema`` are import-light helpers shared with the export; ``archiver`` holds the
Kafka consumer loop.
"""
