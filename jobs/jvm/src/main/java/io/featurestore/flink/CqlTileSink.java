package io.featurestore.flink;

import com.datastax.oss.driver.api.core.CqlSession;
import com.datastax.oss.driver.api.core.CqlSessionBuilder;
import com.datastax.oss.driver.api.core.DefaultProtocolVersion;
import com.datastax.oss.driver.api.core.config.DefaultDriverOption;
import com.datastax.oss.driver.api.core.config.DriverConfigLoader;
import com.datastax.oss.driver.api.core.config.ProgrammaticDriverConfigLoaderBuilder;
import com.datastax.oss.driver.api.core.cql.BoundStatement;
import com.datastax.oss.driver.api.core.cql.PreparedStatement;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Histogram;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.runtime.metrics.DescriptiveStatisticsHistogram;
import org.apache.flink.types.Row;
import org.apache.flink.types.RowKind;

/**
 * Writes encoded tiles to the CQL store: one bound, idempotent INSERT per row, asynchronously, at most
 * {@code concurrency} in flight per writer, and {@link TileWriter#flush} waits for every write
 * before a checkpoint (or the end of input) completes. A failed write fails the job, which
 * restarts from the last checkpoint and rewrites the same absolute, versioned cells. Metrics:
 * {@code tiles_written}, {@code write_errors}, {@code write_ms} (a histogram of write latency).
 *
 * <p>Rows (the SQL path's changelog, upsert mode; the CQL text comes from the Python side's
 * {@code insert_cql}): {@code (insert_cql STRING, entity_key BYTES, feature_view STRING,
 * granularity_ms BIGINT, tile_start_ms BIGINT, payload BYTES, expires_ms BIGINT, timestamp_us
 * BIGINT)}. The TTL is counted at write time from {@code expires_ms} (the tile's start plus its
 * retention; null for lifetime tiles) as the Python path's {@code ViewTiles.ttl_seconds} does.
 */
public final class CqlTileSink implements Sink<Row> {
  private static final long serialVersionUID = 1L;

  private final String[] hosts;
  private final int port;
  private final String localDc;
  private final int concurrency;
  private final long requestTimeoutMs;

  public CqlTileSink(
      String[] hosts, int port, String localDc, int concurrency, long requestTimeoutMs) {
    this.hosts = hosts.clone();
    this.port = port;
    this.localDc = localDc;
    this.concurrency = concurrency;
    this.requestTimeoutMs = requestTimeoutMs;
  }

  @Override
  public SinkWriter<Row> createWriter(WriterInitContext context) throws IOException {
    return new TileWriter(this, context.metricGroup());
  }

  CqlSession connect() {
    ProgrammaticDriverConfigLoaderBuilder config =
        DriverConfigLoader.programmaticBuilder()
            .withString(DefaultDriverOption.PROTOCOL_VERSION, DefaultProtocolVersion.V4.name())
            .withDuration(DefaultDriverOption.REQUEST_TIMEOUT, Duration.ofMillis(requestTimeoutMs))
            .withInt(DefaultDriverOption.CONNECTION_MAX_REQUESTS, Math.max(1024, concurrency));
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

  static final class TileWriter implements SinkWriter<Row> {
    private final CqlSession session;
    private final int concurrency;
    private final Semaphore permits;
    private final Map<String, PreparedStatement> prepared = new HashMap<>();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    // metrics: counted by the driver's threads, reported by the task thread
    private final AtomicLong answered = new AtomicLong();
    private final AtomicLong failed = new AtomicLong();
    private long reportedAnswered;
    private long reportedFailed;
    private final Counter written;
    private final Counter errors;
    private final Histogram latency;

    TileWriter(CqlTileSink sink, MetricGroup metrics) {
      this.session = sink.connect();
      this.concurrency = sink.concurrency;
      this.permits = new Semaphore(sink.concurrency);
      this.written = metrics.counter("tiles_written");
      this.errors = metrics.counter("write_errors");
      this.latency = metrics.histogram("write_ms", new DescriptiveStatisticsHistogram(1024));
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
        prepared.put(cql, insert);
      }
      // the driver sends the values later from its own thread: copy the arrays, since with
      // object reuse nothing promises a record's fields outlive this call
      BoundStatement bound =
          insert.bind(
              ByteBuffer.wrap(((byte[]) row.getField(1)).clone()),
              row.getField(2),
              row.getField(3),
              row.getField(4),
              ByteBuffer.wrap(((byte[]) row.getField(5)).clone()),
              ttlSeconds((Long) row.getField(6), System.currentTimeMillis()),
              row.getField(7));
      // absolute, versioned cells: the driver may retry a write whose answer was lost
      bound = bound.setIdempotent(true);
      permits.acquire();
      long sent = System.nanoTime();
      session
          .executeAsync(bound)
          .whenComplete(
              (result, error) -> {
                if (error != null) {
                  failed.incrementAndGet();
                  failure.compareAndSet(null, error);
                } else {
                  answered.incrementAndGet();
                  synchronized (latency) {
                    latency.update((System.nanoTime() - sent) / 1_000_000);
                  }
                }
                permits.release();
              });
      report();
    }

    private void report() {
      long done = answered.get();
      long bad = failed.get();
      written.inc(done - reportedAnswered);
      errors.inc(bad - reportedFailed);
      reportedAnswered = done;
      reportedFailed = bad;
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
      session.close();
    }
  }
}
