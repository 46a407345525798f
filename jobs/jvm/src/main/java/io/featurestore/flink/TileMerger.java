package io.featurestore.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.metrics.Counter;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Merges one source's one-event IRs into absolute tiles: the keyed operator that replaces the
 * SQL path's two mini-batch aggregations (windowed and lifetime tiles), with the same
 * semantics. Keyed by entity; per entity one {@link TileSet} in keyed state holds every tile of
 * the source's views for it.
 *
 * <p>Per routed row {@code (vi, entity, t, p0..)} (the router's, see {@code
 * SourceTilesSql.route}): for each granularity of view {@code vi} that one of the definitions
 * it feeds accepted ({@code p} of its first input not null), the tile {@code (vi, g, t floored
 * to g)} counts the row in its version and folds in each accepted definition's one-event IR by
 * the merge the SQL path used: exact integer sums (a long until it would overflow, then a
 * BigInteger: the core's ints are unbounded), min, max, avg's (sum, count), {@link HllSketch}'s
 * and {@link LastN}'s add; and the newest event time per definition. The changed tiles of an
 * entity wait (at most {@code flushMs}, or {@code catchUpFlushMs} while catching up, below; and
 * always before a checkpoint barrier and at the end
 * of input) and go out as the sink's rows, encoded by {@link TileEncoder}: {@code (insert_cql,
 * entity_key, feature_view, granularity_ms, tile_start_ms, payload, expires_ms,
 * timestamp_us)}, the write timestamp {@code tile_start * 1000 + version} as before.
 *
 * <p>Catching up: while the newest event time merged since the last emit is more than {@link
 * #CATCH_UP_LAG_MS} behind the wall clock (a backlog after an outage or a restore, a backfill),
 * freshness is lost to the lag anyway, so changed tiles wait up to {@code catchUpFlushMs}: more
 * versions of a tile merge before one write, and the job catches up sooner. Gauge {@code
 * event_time_lag_ms}: the wall clock minus the newest event time merged, at the last tick.
 *
 * <p>Expiry: a windowed tile is dropped once its start plus its retention is before the later
 * of the watermark and the wall clock (the Python path's {@code expiry_horizon_ms}), by one
 * processing-time timer per entity (rounded to {@link #EXPIRY_ROUND_MS}); lifetime tiles stay.
 * Nothing is dirty at a checkpoint (every changed tile is emitted before the barrier), so the
 * state alone is the operator's snapshot.
 */
public final class TileMerger extends AbstractStreamOperator<Row>
    implements OneInputStreamOperator<Row, Row>,
        Triggerable<String, VoidNamespace>,
        BoundedOneInput {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(TileMerger.class);
  static final long EXPIRY_ROUND_MS = 60_000;
  static final int MAX_DIRTY_ENTITIES = 20_000;
  static final long CATCH_UP_LAG_MS = 10_000;

  private final String planJson;
  private final long flushMs;
  private final long catchUpFlushMs;
  private transient long newestSinceEmit;
  private transient long lastEmitMs;
  private transient volatile long eventTimeLagMs;
  private transient Plan plan;
  private transient ValueState<TileSet> tiles;
  private transient InternalTimerService<VoidNamespace> expiry;
  // entity -> its tiles changed since the last emit (operator memory: emptied before each
  // checkpoint barrier, so never part of a snapshot)
  private transient LinkedHashMap<String, Changed> dirty;
  private transient Counter created;
  private transient Counter expired;
  private transient Counter emitted;

  /**
   * @param planJson {@code SourceTilesSql.merge_plan()}
   * @param flushMs how long a changed tile waits at most before it is emitted
   * @param catchUpFlushMs how long while catching up (at least {@code flushMs})
   */
  public TileMerger(String planJson, long flushMs, long catchUpFlushMs) {
    this.planJson = planJson;
    this.flushMs = flushMs;
    this.catchUpFlushMs = Math.max(flushMs, catchUpFlushMs);
  }

  /** The key the operator's input is keyed by: the entity. */
  public static KeySelector<Row, String> entityKey() {
    return new EntityKey();
  }

  static final class EntityKey implements KeySelector<Row, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public String getKey(Row row) {
      return (String) row.getField(1);
    }
  }

  @Override
  public void open() throws Exception {
    super.open();
    plan = new Plan(new ObjectMapper().readTree(planJson));
    tiles = getPartitionedState(new ValueStateDescriptor<>("tiles", new TileSetSerializer()));
    expiry = getInternalTimerService("tile-expiry", VoidNamespaceSerializer.INSTANCE, this);
    dirty = new LinkedHashMap<>();
    created = getMetricGroup().counter("tiles_created");
    expired = getMetricGroup().counter("tiles_expired");
    emitted = getMetricGroup().counter("tiles_emitted");
    getMetricGroup().gauge("event_time_lag_ms", () -> eventTimeLagMs);
    newestSinceEmit = Long.MIN_VALUE;
    long now = getProcessingTimeService().getCurrentProcessingTime();
    lastEmitMs = now;
    getProcessingTimeService().registerTimer(now + flushMs, this::tick);
  }

  @Override
  public void processElement(StreamRecord<Row> element) throws Exception {
    Row row = element.getValue();
    String entity = (String) row.getField(1);
    View view = plan.views[(Integer) row.getField(0)];
    long t = (Long) row.getField(2);
    if (t > newestSinceEmit) {
      newestSinceEmit = t;
    }
    TileSet set = tiles.value();
    if (set == null) {
      set = new TileSet();
    }
    Changed changed = null;
    for (Gran gran : view.grans) {
      boolean accepted = false;
      for (int d : gran.defs) {
        if (row.getField(view.defs[d].at) != null) {
          accepted = true;
          break;
        }
      }
      if (!accepted) {
        continue;
      }
      long start = gran.g == 0 ? 0 : t - Math.floorMod(t, gran.g);
      TileSet.Key key = new TileSet.Key(view.index, gran.g, start);
      TileSet.Tile tile = set.tiles.get(key);
      if (tile == null) {
        tile = new TileSet.Tile(view.defs.length);
        set.tiles.put(key, tile);
        created.inc();
        if (gran.retentionMs != null) {
          long expires = start + gran.retentionMs;
          if (expires > set.expiresMs) {
            set.expiresMs = expires;
          }
        }
      }
      tile.version++;
      for (int d : gran.defs) {
        view.defs[d].fold(tile, d, row, t);
      }
      if (changed == null) {
        changed = dirty.computeIfAbsent(entity, e -> new Changed());
        changed.set = set;
      }
      changed.keys.add(key);
    }
    if (changed == null) {
      return; // no definition accepted the row (the router emits none such)
    }
    if (set.expiresMs != Long.MIN_VALUE && set.timerMs == Long.MIN_VALUE) {
      set.timerMs = roundUp(set.expiresMs + 1);
      expiry.registerProcessingTimeTimer(VoidNamespace.INSTANCE, set.timerMs);
    }
    tiles.update(set);
    if (dirty.size() >= MAX_DIRTY_ENTITIES) {
      emitDirty();
    }
  }

  private static long roundUp(long ms) {
    return Math.floorDiv(ms + EXPIRY_ROUND_MS - 1, EXPIRY_ROUND_MS) * EXPIRY_ROUND_MS;
  }

  private void tick(long scheduled) {
    // from the clock, not the scheduled time: a late tick must not fire again at once
    long now = getProcessingTimeService().getCurrentProcessingTime();
    if (newestSinceEmit != Long.MIN_VALUE) {
      eventTimeLagMs = now - newestSinceEmit;
    }
    boolean catchingUp = newestSinceEmit != Long.MIN_VALUE && eventTimeLagMs > CATCH_UP_LAG_MS;
    if (!catchingUp || now - lastEmitMs >= catchUpFlushMs) {
      emitDirty();
    }
    getProcessingTimeService().registerTimer(now + flushMs, this::tick);
  }

  @Override
  public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
    super.prepareSnapshotPreBarrier(checkpointId);
    emitDirty();
  }

  @Override
  public void endInput() throws Exception {
    emitDirty();
  }

  /**
   * The changed tiles of an entity and its tiles as last merged (the object put in state then:
   * emitting reads it without a state look-up).
   */
  private static final class Changed {
    TileSet set;
    final LinkedHashSet<TileSet.Key> keys = new LinkedHashSet<>();
  }

  /** Emits every changed tile as the sink's row. */
  private void emitDirty() {
    lastEmitMs = getProcessingTimeService().getCurrentProcessingTime();
    newestSinceEmit = Long.MIN_VALUE;
    if (dirty.isEmpty()) {
      return;
    }
    for (Map.Entry<String, Changed> entry : dirty.entrySet()) {
      byte[] entityKey = entry.getKey().getBytes(StandardCharsets.UTF_8);
      Changed changed = entry.getValue();
      for (TileSet.Key key : changed.keys) {
        TileSet.Tile tile = changed.set.tiles.get(key);
        if (tile != null) { // else expired since
          output.collect(new StreamRecord<>(plan.views[key.vi()].row(entityKey, key, tile)));
          emitted.inc();
        }
      }
    }
    dirty.clear();
  }

  @Override
  public void onProcessingTime(InternalTimer<String, VoidNamespace> timer) throws Exception {
    TileSet set = tiles.value();
    if (set == null) {
      return;
    }
    long now = getProcessingTimeService().getCurrentProcessingTime();
    long horizon = Math.max(expiry.currentWatermark(), now);
    long latest = Long.MIN_VALUE;
    var it = set.tiles.entrySet().iterator();
    while (it.hasNext()) {
      Map.Entry<TileSet.Key, TileSet.Tile> entry = it.next();
      TileSet.Key key = entry.getKey();
      Long retention = plan.views[key.vi()].gran(key.g()).retentionMs;
      if (retention == null) {
        continue; // lifetime: never expires
      }
      long expires = key.start() + retention;
      if (expires < horizon) {
        it.remove();
        expired.inc();
      } else {
        latest = Math.max(latest, expires);
      }
    }
    set.expiresMs = latest;
    set.timerMs = Long.MIN_VALUE;
    if (set.tiles.isEmpty()) {
      tiles.clear();
      return;
    }
    if (latest != Long.MIN_VALUE) {
      set.timerMs = Math.max(roundUp(latest + 1), now + EXPIRY_ROUND_MS);
      expiry.registerProcessingTimeTimer(VoidNamespace.INSTANCE, set.timerMs);
    }
    tiles.update(set);
  }

  @Override
  public void close() throws Exception {
    if (created != null) {
      LOG.info(
          "tile merger closing: {} tiles created, {} expired, {} emitted",
          created.getCount(),
          expired.getCount(),
          emitted.getCount());
    }
    super.close();
  }

  @Override
  public void onEventTime(InternalTimer<String, VoidNamespace> timer) {
    // no event-time timers
  }

  // --- the plan ---------------------------------------------------------------------------------

  static final class Plan {
    // by the view's index among the source's views (the router's vi); null for views merged
    // elsewhere
    final View[] views;

    Plan(JsonNode json) {
      List<View> parsed = new ArrayList<>();
      int size = 0;
      for (JsonNode v : json.get("views")) {
        View view = new View(v);
        parsed.add(view);
        size = Math.max(size, view.index + 1);
      }
      views = new View[size];
      for (View view : parsed) {
        views[view.index] = view;
      }
    }
  }

  /** A definition: where its one-event IR sits in the routed row and how it merges. */
  static final class Def {
    final char op; // s sum, m min, M max, a avg, h sketch, l last / last_n
    final int at;
    final int n;

    Def(JsonNode json) {
      String name = json.get("op").asText();
      this.op =
          switch (name) {
            case "sum" -> 's';
            case "min" -> 'm';
            case "max" -> 'M';
            case "avg" -> 'a';
            case "hll" -> 'h';
            case "last" -> 'l';
            default -> throw new IllegalArgumentException("unknown merge " + name);
          };
      this.at = json.get("at").asInt();
      this.n = json.get("n").asInt();
    }

    void fold(TileSet.Tile tile, int d, Row row, long t) {
      Object first = row.getField(at);
      if (first == null) {
        return;
      }
      if (!tile.has[d] || t > tile.lasts[d]) {
        tile.lasts[d] = t;
      }
      boolean had = tile.has[d];
      tile.has[d] = true;
      switch (op) {
        case 's' -> tile.add(d, (Long) first, had);
        case 'm' -> tile.ints[d] = had ? Math.min(tile.ints[d], (Long) first) : (Long) first;
        case 'M' -> tile.ints[d] = had ? Math.max(tile.ints[d], (Long) first) : (Long) first;
        case 'a' -> {
          tile.add(d, (Long) first, had);
          Object count = row.getField(at + 1);
          tile.counts[d] += count == null ? 0 : (Long) count;
        }
        case 'h' -> {
          if (!had) {
            tile.objects[d] = new HllSketch.Acc();
          }
          HllSketch.add((HllSketch.Acc) tile.objects[d], ((Long) first).intValue());
        }
        default -> {
          if (!had) {
            tile.objects[d] = new LastN.Acc();
          }
          Object item = row.getField(at + 1);
          if (item != null) {
            LastN.add((LastN.Acc) tile.objects[d], n, t, (byte[]) first, (byte[]) item);
          }
        }
      }
    }
  }

  /** A granularity of a view: its definitions and its tile layout. */
  static final class Gran {
    final long g;
    final Long retentionMs;
    final int[] defs; // the definitions feeding its slots, each once
    final String kinds; // per slot, TileEncoder's kind
    final Long[] slotIds;
    final int[] slotDefs; // per slot, its definition

    Gran(JsonNode json) {
      g = json.get("g").asLong();
      retentionMs = json.get("retention").isNull() ? null : json.get("retention").asLong();
      kinds = json.get("kinds").asText();
      int slots = kinds.length();
      slotIds = new Long[slots];
      slotDefs = new int[slots];
      LinkedHashSet<Integer> feeding = new LinkedHashSet<>();
      for (int i = 0; i < slots; i++) {
        slotIds[i] = json.get("sids").get(i).asLong();
        slotDefs[i] = json.get("slots").get(i).asInt();
        feeding.add(slotDefs[i]);
      }
      defs = feeding.stream().mapToInt(Integer::intValue).toArray();
    }
  }

  static final class View {
    final int index;
    final String insertCql;
    final String name;
    final Def[] defs;
    final List<Gran> grans = new ArrayList<>();

    View(JsonNode json) {
      index = json.get("vi").asInt();
      insertCql = json.get("insert").asText();
      name = json.get("name").asText();
      JsonNode defList = json.get("defs");
      defs = new Def[defList.size()];
      for (int i = 0; i < defs.length; i++) {
        defs[i] = new Def(defList.get(i));
      }
      for (JsonNode g : json.get("grans")) {
        grans.add(new Gran(g));
      }
    }

    Gran gran(long g) {
      for (Gran gran : grans) {
        if (gran.g == g) {
          return gran;
        }
      }
      throw new IllegalStateException("view " + name + " has no granularity " + g);
    }

    /** The sink's row for a tile. */
    Row row(byte[] entityKey, TileSet.Key key, TileSet.Tile tile) {
      Gran gran = gran(key.g());
      int slots = gran.kinds.length();
      Long[] lasts = new Long[slots];
      BigDecimal[] firsts = new BigDecimal[slots];
      Long[] seconds = new Long[slots];
      byte[][] raws = new byte[slots][];
      for (int i = 0; i < slots; i++) {
        int d = gran.slotDefs[i];
        if (!tile.has[d]) {
          continue;
        }
        lasts[i] = tile.lasts[d];
        switch (defs[d].op) {
          case 'h' -> raws[i] = HllSketch.toBytes((HllSketch.Acc) tile.objects[d]);
          case 'l' -> raws[i] = LastN.ir((LastN.Acc) tile.objects[d]);
          case 'a' -> {
            firsts[i] = tile.exact(d);
            seconds[i] = tile.counts[d];
          }
          default -> firsts[i] = tile.exact(d);
        }
      }
      byte[] payload = TileEncoder.encode(gran.kinds, gran.slotIds, lasts, firsts, seconds, raws);
      Long expires = gran.retentionMs == null ? null : key.start() + gran.retentionMs;
      return Row.of(
          insertCql,
          entityKey,
          name,
          key.g(),
          key.start(),
          payload,
          expires,
          key.start() * 1000 + tile.version);
    }
  }
}
