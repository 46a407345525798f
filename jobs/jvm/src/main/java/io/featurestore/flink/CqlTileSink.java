package io.featurestore.flink;

import com.datastax.oss.driver.api.core.CqlSession;
import com.datastax.oss.driver.api.core.CqlSessionBuilder;
import com.datastax.oss.driver.api.core.DefaultProtocolVersion;
import com.datastax.oss.driver.api.core.ProtocolVersion;
import com.datastax.oss.driver.api.core.config.DefaultDriverOption;
import com.datastax.oss.driver.api.core.config.DriverConfigLoader;
import com.datastax.oss.driver.api.core.config.ProgrammaticDriverConfigLoaderBuilder;
import com.datastax.oss.driver.api.core.cql.BatchStatement;
import com.datastax.oss.driver.api.core.cql.BatchableStatement;
import com.datastax.oss.driver.api.core.cql.BoundStatement;
import com.datastax.oss.driver.api.core.cql.ColumnDefinitions;
import com.datastax.oss.driver.api.core.cql.DefaultBatchType;
import com.datastax.oss.driver.api.core.cql.PreparedStatement;
import com.datastax.oss.driver.api.core.cql.Statement;
import com.datastax.oss.driver.api.core.metadata.Node;
import com.datastax.oss.driver.api.core.metadata.TokenMap;
import com.datastax.oss.driver.api.core.type.DataType;
import com.datastax.oss.driver.api.core.type.DataTypes;
import com.datastax.oss.driver.api.core.type.codec.TypeCodecs;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.flink.api.common.operators.ProcessingTimeService;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Histogram;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.runtime.metrics.DescriptiveStatisticsHistogram;
import org.apache.flink.types.Row;
import org.apache.flink.types.RowKind;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes encoded tiles to the CQL store: bound, idempotent INSERTs sent as UNLOGGED batches,
 * asynchronously, at most {@code concurrency} tiles in flight per writer. Rows wait until the
 * input pauses for a tick (the end of a mini-batch's burst of changed tiles), at most {@link
 * #MAX_LINGER_MS}; a newer version of a waiting tile replaces it. {@link TileWriter#flush} sends
 * what waits and then waits for every write before a checkpoint (or the end of input) completes.
 * A failed write fails the job, which restarts from the last checkpoint and rewrites the same
 * absolute, versioned cells. Metrics: {@code tiles_written}, {@code write_requests}, {@code
 * write_errors}, {@code write_ms} (a histogram of request latency).
 *
 * <p>Grouping ({@link Grouping}): {@code REPLICA_SET} (the default) puts the waiting tiles of
 * every partition owned by the same replicas into one batch of at most {@code batchBytes} (as the
 * store counts a batch's size, estimated high by {@link TileWriter#rowBytes}), sent to one of those replicas (the driver routes a batch by its first statement), which
 * applies every mutation locally: one request for many entities instead of one per entity, the
 * grouping the Spark Cassandra Connector offers as {@code batch.grouping.key=replica_set}. {@code
 * PARTITION} sends the tiles of one entity in one table as one single-partition batch. Either way
 * nothing relies on a batch's atomicity: each cell is absolute and versioned ({@code USING
 * TIMESTAMP}), so a batch partly applied and retried ends the same.
 *
 * <p>Rows (the SQL path's changelog, upsert mode; the CQL text comes from the Python side's
 * {@code insert_cql}): {@code (insert_cql STRING, entity_key BYTES, feature_view STRING,
 * granularity_ms BIGINT, tile_start_ms BIGINT, payload BYTES, expires_ms BIGINT, timestamp_us
 * BIGINT)}. The TTL is counted at write time from {@code expires_ms} (the tile's start plus its
 * retention; null for lifetime tiles) as the Python path's {@code ViewTiles.ttl_seconds} does.
 */
public final class CqlTileSink implements Sink<Row> {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(CqlTileSink.class);
  static final int MAX_PENDING_ROWS = 4096;
  static final ProtocolVersion V4 = DefaultProtocolVersion.V4;
  // entity_key, feature_view, granularity_ms, tile_start_ms, payload, TTL, write timestamp
  static final List<DataType> VARIABLE_TYPES =
      List.of(
          DataTypes.BLOB,
          DataTypes.TEXT,
          DataTypes.BIGINT,
          DataTypes.BIGINT,
          DataTypes.BLOB,
          DataTypes.INT,
          DataTypes.BIGINT);
  // a row's cells beyond the key, view name and payload: two bigint clustering columns, the
  // payload cell's timestamp, TTL and local deletion time, and per-row framing
  static final int ROW_OVERHEAD_BYTES = 64;
  static final long TICK_MS = 5;
  static final long MAX_LINGER_MS = 50;

  private final String[] hosts;
  private final int port;
  private final String localDc;
  private final int concurrency;
  private final long requestTimeoutMs;
  private final Grouping grouping;
  private final int batchBytes;

  /** Which waiting tiles share a batch. */
  public enum Grouping {
    /** the tiles of one entity in one table */
    PARTITION,
    /** the tiles of every partition the same replicas own, across entities and tables */
    REPLICA_SET
  }

  /**
   * @param grouping {@link Grouping}'s name
   * @param batchBytes a batch's size at most, estimated as the store counts it (a bigger tile
   *     goes alone); keep it below the store's {@code batch_size_warn_threshold}
   */
  public CqlTileSink(
      String[] hosts,
      int port,
      String localDc,
      int concurrency,
      long requestTimeoutMs,
      String grouping,
      int batchBytes) {
    this.hosts = hosts.clone();
    this.port = port;
    this.localDc = localDc;
    this.concurrency = concurrency;
    this.requestTimeoutMs = requestTimeoutMs;
    this.grouping = Grouping.valueOf(grouping);
    this.batchBytes = batchBytes;
  }

  @Override
  public SinkWriter<Row> createWriter(WriterInitContext context) throws IOException {
    return new TileWriter(this, context.metricGroup(), context.getProcessingTimeService());
  }

  CqlSession connect() {
    ProgrammaticDriverConfigLoaderBuilder config =
        DriverConfigLoader.programmaticBuilder()
            .withString(DefaultDriverOption.PROTOCOL_VERSION, DefaultProtocolVersion.V4.name())
            .withDuration(DefaultDriverOption.REQUEST_TIMEOUT, Duration.ofMillis(requestTimeoutMs))
            .withInt(DefaultDriverOption.CONNECTION_MAX_REQUESTS, Math.max(1024, concurrency))
            // the store warns of batches spanning partitions, which replica-set batches do on
            // purpose: not logged again here per request (the store's log keeps its warnings)
            .withBoolean(DefaultDriverOption.REQUEST_LOG_WARNINGS, grouping == Grouping.PARTITION);
    if (localDc == null || localDc.isEmpty()) {
      config.withString(
          DefaultDriverOption.LOAD_BALANCING_POLICY_CLASS, "DcInferringLoadBalancingPolicy");
    }
    // the driver reads its reference.conf through a class loader: Flink's user code one
    CqlSessionBuilder builder =
        CqlSession.builder()
            .withClassLoader(CqlTileSink.class.getClassLoader())
            .withConfigLoader(config.build());
    for (String host : hosts) {
      builder.addContactPoint(new InetSocketAddress(host, port));
    }
    if (localDc != null && !localDc.isEmpty()) {
      builder.withLocalDatacenter(localDc);
    }
    return builder.build();
  }

  /** A partition: one entity (its key bytes) of one table (named by the insert statement). */
  private record PartitionKey(PreparedStatement insert, ByteBuffer entity) {}

  /** One tile of a partition. */
  private record TileKey(String view, long granularityMs, long tileStartMs) {}

  /** A tile's newest waiting write and its size in a batch (estimated, see {@link TileWriter#rowBytes}). */
  private record Waiting(BoundStatement insert, int bytes) {}

  static final class TileWriter implements SinkWriter<Row> {
    private final CqlSession session;
    private final int concurrency;
    private final Grouping grouping;
    private final int batchBytes;
    private final Semaphore permits;
    private final ProcessingTimeService time;
    private final Map<String, PreparedStatement> prepared = new HashMap<>();
    private final Map<String, ByteBuffer> names = new HashMap<>(); // view names, encoded
    // per partition, per tile: the newest write waiting (a newer version of a tile replaces the
    // waiting one, whose cells it would overwrite anyway)
    private final Map<PartitionKey, Map<TileKey, Waiting>> pending = new LinkedHashMap<>();
    private int pendingRows;
    private long pendingSinceMs;
    private boolean quiet;
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    // metrics: counted by the driver's threads, reported by the task thread
    private final AtomicLong answered = new AtomicLong();
    private final AtomicLong failed = new AtomicLong();
    private final AtomicLong requests = new AtomicLong();
    private long reportedAnswered;
    private long reportedFailed;
    private long reportedRequests;
    private final Counter written;
    private final Counter errors;
    private final Counter sent;
    private final Histogram latency;

    TileWriter(CqlTileSink sink, MetricGroup metrics, ProcessingTimeService time) {
      this.session = sink.connect();
      this.concurrency = sink.concurrency;
      this.grouping = sink.grouping;
      this.batchBytes = sink.batchBytes;
      this.permits = new Semaphore(sink.concurrency);
      this.time = time;
      this.written = metrics.counter("tiles_written");
      this.errors = metrics.counter("write_errors");
      this.sent = metrics.counter("write_requests");
      this.latency = metrics.histogram("write_ms", new DescriptiveStatisticsHistogram(1024));
      time.registerTimer(time.getCurrentProcessingTime() + TICK_MS, this::tick);
    }

    @Override
    public void write(Row row, Context context) throws IOException, InterruptedException {
      checkFailure();
      RowKind kind = row.getKind();
      if (kind != RowKind.INSERT && kind != RowKind.UPDATE_AFTER) {
        return; // an upsert stream's deletes: tiles are never retracted
      }
      String cql = (String) row.getField(0);
      PreparedStatement insert = prepared.get(cql);
      if (insert == null) {
        insert = session.prepare(cql);
        checkVariables(insert);
        prepared.put(cql, insert);
      }
      // the driver sends the values later from its own thread: copy the arrays, since with
      // object reuse nothing promises a record's fields outlive this call
      ByteBuffer entity = ByteBuffer.wrap(((byte[]) row.getField(1)).clone());
      byte[] payload = ((byte[]) row.getField(5)).clone();
      // values as their protocol bytes: no codec look-up per value (typed setters still look
      // one up; codecs and setters were a tenth of the sink's time in JFR). The statement's
      // variables were checked against these types when it was prepared.
      String view = (String) row.getField(2);
      ByteBuffer viewBytes = names.computeIfAbsent(view, v -> TypeCodecs.TEXT.encode(v, V4));
      BoundStatement bound =
          insert
              .boundStatementBuilder()
              .setBytesUnsafe(0, entity.duplicate())
              .setBytesUnsafe(1, viewBytes.duplicate())
              .setBytesUnsafe(2, TypeCodecs.BIGINT.encodePrimitive((Long) row.getField(3), V4))
              .setBytesUnsafe(3, TypeCodecs.BIGINT.encodePrimitive((Long) row.getField(4), V4))
              .setBytesUnsafe(4, ByteBuffer.wrap(payload))
              .setBytesUnsafe(
                  5,
                  TypeCodecs.INT.encodePrimitive(
                      ttlSeconds((Long) row.getField(6), System.currentTimeMillis()), V4))
              .setBytesUnsafe(6, TypeCodecs.BIGINT.encodePrimitive((Long) row.getField(7), V4))
              .build();
      Map<TileKey, Waiting> tiles =
          pending.computeIfAbsent(new PartitionKey(insert, entity), k -> new LinkedHashMap<>());
      TileKey tile =
          new TileKey((String) row.getField(2), (Long) row.getField(3), (Long) row.getField(4));
      int bytes = rowBytes(entity.remaining(), tile.view().length(), payload.length);
      if (tiles.put(tile, new Waiting(bound, bytes)) == null && pendingRows++ == 0) {
        pendingSinceMs = time.getCurrentProcessingTime();
      }
      quiet = false;
      if (pendingRows >= MAX_PENDING_ROWS) {
        drain();
      }
    }

    /**
     * Every {@link #TICK_MS}: send what waits once the input paused for a tick (a mini-batch's
     * burst of changed tiles is over) or waited {@link #MAX_LINGER_MS}.
     */
    private void tick(long now) throws IOException, InterruptedException {
      if (pendingRows > 0 && (quiet || now - pendingSinceMs >= MAX_LINGER_MS)) {
        drain();
      }
      quiet = true;
      report();
      time.registerTimer(now + TICK_MS, this::tick);
    }

    /** Sends every waiting row, grouped as {@link Grouping} says. */
    private void drain() throws InterruptedException {
      Optional<TokenMap> tokens =
          grouping == Grouping.REPLICA_SET ? session.getMetadata().getTokenMap() : Optional.empty();
      if (tokens.isPresent()) {
        drainByReplicas(tokens.get());
      } else {
        for (Map<TileKey, Waiting> tiles : pending.values()) {
          Batcher batch = new Batcher();
          for (Waiting tile : tiles.values()) {
            batch.add(tile);
          }
          batch.send();
        }
      }
      pending.clear();
      pendingRows = 0;
    }

    /** One batch open per replica set; the tiles of a partition stay together. */
    private void drainByReplicas(TokenMap tokens) throws InterruptedException {
      Map<Set<Node>, Batcher> open = new HashMap<>();
      for (Map.Entry<PartitionKey, Map<TileKey, Waiting>> partition : pending.entrySet()) {
        PartitionKey key = partition.getKey();
        Set<Node> replicas =
            tokens.getReplicas(
                key.insert().getVariableDefinitions().get(0).getKeyspace(),
                key.entity().duplicate());
        Batcher batch = open.computeIfAbsent(replicas, r -> new Batcher());
        for (Waiting tile : partition.getValue().values()) {
          batch.add(tile);
        }
      }
      for (Batcher batch : open.values()) {
        batch.send();
      }
    }

    /** Collects rows into batches of at most {@code batchBytes} payload bytes, sending full ones. */
    private final class Batcher {
      private List<BatchableStatement<?>> rows = new ArrayList<>();
      private int bytes;

      void add(Waiting tile) throws InterruptedException {
        if (!rows.isEmpty() && bytes + tile.bytes() > batchBytes) {
          send();
        }
        rows.add(tile.insert());
        bytes += tile.bytes();
      }

      void send() throws InterruptedException {
        if (!rows.isEmpty()) {
          TileWriter.this.send(rows);
          rows = new ArrayList<>();
          bytes = 0;
        }
      }
    }

    private void send(List<BatchableStatement<?>> rows) throws InterruptedException {
      Statement<?> request =
          rows.size() == 1
              ? rows.get(0)
              : BatchStatement.newInstance(DefaultBatchType.UNLOGGED, rows);
      // absolute, versioned cells: the driver may retry a write whose answer was lost
      request = request.setIdempotent(true);
      int count = rows.size();
      // in flight counts tiles, not requests: a batch of many entities takes as many permits
      int taken = Math.min(count, concurrency);
      permits.acquire(taken);
      long start = System.nanoTime();
      session
          .executeAsync(request)
          .whenComplete(
              (result, error) -> {
                if (error != null) {
                  failed.addAndGet(count);
                  failure.compareAndSet(null, error);
                } else {
                  answered.addAndGet(count);
                  requests.incrementAndGet();
                  synchronized (latency) {
                    latency.update((System.nanoTime() - start) / 1_000_000);
                  }
                }
                permits.release(taken);
              });
    }

    private void report() {
      long done = answered.get();
      long bad = failed.get();
      long asked = requests.get();
      written.inc(done - reportedAnswered);
      errors.inc(bad - reportedFailed);
      sent.inc(asked - reportedRequests);
      reportedAnswered = done;
      reportedFailed = bad;
      reportedRequests = asked;
    }

    /** The insert's variables must be the types {@link #write} binds as bytes, in order. */
    static void checkVariables(PreparedStatement insert) {
      ColumnDefinitions variables = insert.getVariableDefinitions();
      List<DataType> types = new ArrayList<>();
      for (int i = 0; i < variables.size(); i++) {
        types.add(variables.get(i).getType());
      }
      if (!types.equals(VARIABLE_TYPES)) {
        throw new IllegalStateException(
            "tile insert binds " + types + ", the sink writes " + VARIABLE_TYPES + ": " + insert.getQuery());
      }
    }

    /**
     * A row's share of a batch's size as the store counts it (the mutation's data: key, clustering
     * columns, cells with their timestamps and TTLs), estimated high from what is known here.
     */
    static int rowBytes(int entityBytes, int viewChars, int payloadBytes) {
      return entityBytes + 4 * viewChars + payloadBytes + ROW_OVERHEAD_BYTES;
    }

    /**
     * Seconds until the tile stops mattering (at least 1; 0, no TTL, for lifetime tiles, which
     * never expire), as ViewTiles.ttl_seconds.
     */
    static int ttlSeconds(Long expiresMs, long nowMs) {
      if (expiresMs == null) {
        return 0;
      }
      return (int) Math.max(1, Math.floorDiv(expiresMs - nowMs, 1000L) + 1);
    }

    @Override
    public void flush(boolean endOfInput) throws IOException, InterruptedException {
      drain();
      // every write sent so far is answered once all permits are back
      if (!permits.tryAcquire(concurrency, 120, TimeUnit.SECONDS)) {
        throw new InterruptedIOException("tile writes unanswered for 120 s");
      }
      permits.release(concurrency);
      report();
      checkFailure();
    }

    private void checkFailure() throws IOException {
      Throwable error = failure.get();
      if (error != null) {
        throw new IOException("writing tiles to the CQL store failed", error);
      }
    }

    @Override
    public void close() throws Exception {
      LOG.info(
          "tile writer closing: {} tiles written in {} requests, {} failed",
          answered.get(),
          requests.get(),
          failed.get());
      session.close();
    }
  }
}
