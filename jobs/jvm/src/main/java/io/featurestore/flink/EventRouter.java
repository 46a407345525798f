package io.featurestore.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.function.LongSupplier;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MeterView;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Routes the Kafka records of one source in the JVM, by the plan {@code
 * feature_store.stream.jvm_route.route_plan} writes: decode (strict, {@link AvroReader}), judge
 * lateness, filter, and fold the event into the one-event IRs of each view's definitions, as the
 * row {@code SourceTilesSql.route_split} emits: {@code (vi, entity, t, p0, p1, ...)}.
 *
 * <p>Input rows: {@code (value BYTES, partition INT, offset BIGINT, ...)}. Outputs: the routed
 * rows; a too-late event's dead letter ({@link #deadLetterTag}, the JSON of {@code
 * avro_wire.dead_letter}); and every record it does not route with certainty ({@link
 * #fallbackTag}: {@code (value, partition, offset, newest event time of the partition)}) for the
 * Python router, the authority on bad records.
 */
public final class EventRouter extends ProcessFunction<Row, Row> {
  private static final long serialVersionUID = 1L;
  private static final String KEY_SEP = "\u001f";
  private static final long NO_NEWEST = Long.MIN_VALUE;

  private final String planJson;
  private transient Plan plan;
  private transient Map<Integer, Long> newest;
  private transient Object[] slots;
  private transient OneEventIrs irs;
  private transient Counter events;
  private transient Counter toPython;
  private transient Counter tooLate;
  private transient MeterView rate;
  private transient long watermarkLagMs;
  private transient int seen;

  public EventRouter(String planJson) {
    this.planJson = planJson;
  }

  private static final OutputTag<Row> FALLBACK =
      new OutputTag<>(
          "jvm-route-fallback",
          Types.ROW_NAMED(
              new String[] {"value", "partition", "offset", "newest"},
              PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
              Types.INT,
              Types.LONG,
              Types.LONG));

  private static final OutputTag<byte[]> DEAD_LETTERS =
      new OutputTag<>(
          "jvm-route-dead-letters",
          (TypeInformation<byte[]>) PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);

  /** Records for the Python router: (value, partition, offset, newest event time or MIN). */
  public static OutputTag<Row> fallbackTag() {
    return FALLBACK;
  }

  /** Dead letters of too-late events (JSON bytes). */
  public static OutputTag<byte[]> deadLetterTag() {
    return DEAD_LETTERS;
  }

  @Override
  public void open(OpenContext context) throws IOException {
    init();
    MetricGroup group = getRuntimeContext().getMetricGroup().addGroup("source", plan.source);
    events = group.counter("events_in");
    toPython = group.counter("events_to_python_router");
    tooLate = group.counter("dead_letters_later_than_allowed_lateness");
    rate = group.meter("events_per_second", new MeterView(10));
    group.gauge("watermark_lag_ms", () -> watermarkLagMs);
  }

  private void init() throws IOException {
    plan = new Plan(new ObjectMapper().readTree(planJson));
    newest = new HashMap<>();
    slots = new Object[plan.fieldCount];
    irs = new OneEventIrs();
  }

  @Override
  public void processElement(Row record, Context ctx, Collector<Row> out) {
    byte[] value = (byte[]) record.getField(0);
    int partition = (Integer) record.getField(1);
    long offset = (Long) record.getField(2);
    events.inc();
    rate.markEvent();
    if (++seen >= 1024) {
      seen = 0;
      watermarkLagMs = Math.max(0, System.currentTimeMillis() - ctx.timerService().currentWatermark());
    }
    Object result =
        route(value, partition, offset, () -> ctx.timerService().currentWatermark(), out::collect);
    if (result instanceof Row fallback) {
      toPython.inc();
      ctx.output(FALLBACK, fallback);
    } else if (result instanceof byte[] deadLetter) {
      tooLate.inc();
      ctx.output(DEAD_LETTERS, deadLetter);
    }
  }

  /** Consumers of routed rows. */
  interface Rows {
    void accept(Row row);
  }

  /**
   * Routes one record: emits its rows to {@code out} and returns null, or returns the fallback
   * row for the Python router, or a dead letter's bytes.
   */
  Object route(byte[] value, int partition, long offset, LongSupplier watermark, Rows out) {
    Plan p = plan;
    Object[] s = slots;
    java.util.Arrays.fill(s, null);
    if (value.length < 5
        || value[0] != 0
        || readInt(value, 1) != p.schemaId
        || !p.reader.read(value, 5, s)
        || !(s[0] instanceof Long)) {
      return fallback(value, partition, offset);
    }
    long t = (Long) s[0];
    Long before = newest.get(partition);
    if (before == null || t > before) {
      newest.put(partition, t);
    } else if (t < before - p.latenessMs) {
      long w = watermark.getAsLong();
      if (t < w - p.latenessMs) {
        return deadLetter(value, partition, offset, t, w, before);
      }
    }
    for (Object v : s) {
      if (v instanceof Double d && Double.isNaN(d)) {
        return fallback(value, partition, offset); // NaN payload bits: left to the Python side
      }
    }
    if (p.filter != null && !p.filter.test(s)) {
      return null;
    }
    List<Row> rows = new ArrayList<>(p.views.length);
    for (View view : p.views) {
      String entity = view.entity(s);
      if (entity == null) {
        return fallback(value, partition, offset); // a missing key: the Python side dead-letters
      }
      Row row = view.row(entity, t, s, p.columns, irs);
      if (row != null) {
        rows.add(row);
      }
    }
    for (Row row : rows) {
      out.accept(row);
    }
    return null;
  }

  private Row fallback(byte[] value, int partition, long offset) {
    Long before = newest.get(partition);
    return Row.of(value, partition, offset, before == null ? NO_NEWEST : before);
  }

  /** {@code avro_wire.dead_letter} of a too-late event, with the Python router's message. */
  private byte[] deadLetter(byte[] value, int partition, long offset, long t, long w, long before) {
    String message =
        "event time "
            + t
            + " is more than "
            + plan.latenessMs
            + " ms behind the watermark "
            + w
            + " and the newest event "
            + before
            + " of partition "
            + partition;
    String json =
        "{\"reason\":\"later_than_allowed_lateness\",\"message\":\""
            + message
            + "\",\"topic\":"
            + plan.topicJson
            + ",\"partition\":"
            + partition
            + ",\"offset\":"
            + offset
            + ",\"payload_base64\":\""
            + Base64.getEncoder().encodeToString(value)
            + "\"}";
    return json.getBytes(StandardCharsets.UTF_8);
  }

  private static int readInt(byte[] b, int at) {
    return (b[at] & 0xFF) << 24 | (b[at + 1] & 0xFF) << 16 | (b[at + 2] & 0xFF) << 8 | (b[at + 3] & 0xFF);
  }

  /** The plan, parsed. */
  private static final class Plan {
    final String source;
    final String topicJson;
    final int schemaId;
    final long latenessMs;
    final int columns;
    final int fieldCount;
    final AvroReader reader;
    final Predicate filter;
    final View[] views;

    Plan(JsonNode json) throws IOException {
      source = json.get("source").asText();
      topicJson = new ObjectMapper().writeValueAsString(json.get("topic").asText());
      schemaId = (int) json.get("schema_id").asLong();
      latenessMs = json.get("lateness_ms").asLong();
      columns = json.get("columns").asInt();
      Map<String, Integer> fields = new HashMap<>();
      JsonNode names = json.get("fields");
      for (int i = 0; i < names.size(); i++) {
        fields.put(names.get(i).asText(), i);
      }
      fieldCount = names.size();
      reader = new AvroReader(json.get("avro"));
      filter = Predicate.of(json.get("filter"), fields);
      JsonNode viewList = json.get("views");
      views = new View[viewList.size()];
      for (int i = 0; i < views.length; i++) {
        views[i] = new View(viewList.get(i), fields);
      }
    }
  }

  /** One view: its entity key slots and definitions. */
  private static final class View {
    final int index;
    final int[] keys;
    final Def[] defs;

    View(JsonNode json, Map<String, Integer> fields) {
      index = json.get("index").asInt();
      JsonNode keyList = json.get("keys");
      keys = new int[keyList.size()];
      for (int i = 0; i < keys.length; i++) {
        keys[i] = keyList.get(i).asInt();
      }
      JsonNode defList = json.get("defs");
      defs = new Def[defList.size()];
      for (int i = 0; i < defs.length; i++) {
        defs[i] = new Def(defList.get(i), fields);
      }
    }

    /** {@code core.keys.entity_key_text}; null when a key is null or empty. */
    String entity(Object[] s) {
      if (keys.length == 1) {
        Object v = s[keys[0]];
        return v == null || "".equals(v) ? null : v.toString();
      }
      StringBuilder text = new StringBuilder();
      for (int i = 0; i < keys.length; i++) {
        Object v = s[keys[i]];
        if (v == null || "".equals(v)) {
          return null;
        }
        if (i > 0) {
          text.append(KEY_SEP);
        }
        text.append(v);
      }
      return text.toString();
    }

    /** {@code SourceTilesSql.route_split}: the one-event IRs, or null when no definition takes it. */
    Row row(String entity, long t, Object[] s, int columns, OneEventIrs irs) {
      Row row = null;
      for (Def d : defs) {
        if (d.where != null && !d.where.test(s)) {
          continue;
        }
        Object value = null;
        if (d.field >= 0) {
          value = s[d.field];
          if (value == null) {
            continue;
          }
        }
        if (row == null) {
          row = new Row(3 + columns);
          row.setField(0, index);
          row.setField(1, entity);
          row.setField(2, t);
        }
        int at = 3 + d.at;
        switch (d.ir) {
          case COUNT -> row.setField(at, 1L);
          case VALUE -> row.setField(at, value);
          case AVG -> {
            row.setField(at, value);
            row.setField(at + 1, 1L);
          }
          case DISTINCT -> row.setField(at, irs.sparseEntry(value));
          default -> {
            row.setField(at, OneEventIrs.orderKey(value, d.float64));
            row.setField(at + 1, OneEventIrs.item(t, value));
          }
        }
      }
      return row;
    }
  }

  private enum Ir {
    COUNT,
    VALUE,
    AVG,
    DISTINCT,
    LAST
  }

  private static final class Def {
    final Predicate where;
    final int field;
    final Ir ir;
    final boolean float64;
    final int at;

    Def(JsonNode json, Map<String, Integer> fields) {
      where = Predicate.of(json.get("where"), fields);
      field = json.get("field").isNull() ? -1 : json.get("field").asInt();
      ir = Ir.valueOf(json.get("ir").asText().toUpperCase(java.util.Locale.ROOT));
      float64 = json.get("float").asBoolean();
      at = json.get("at").asInt();
    }
  }

  /**
   * A test harness: the plan (one line of JSON), then one record per line ({@code hex payload;
   * partition;offset;watermark}); prints per record {@code F;<newest>} (to the Python router),
   * {@code D;<dead letter JSON>} or {@code R;} and its rows ({@code |}-separated, fields {@code ,}
   * -separated: numbers, hex bytes, {@code -} for null).
   */
  public static void main(String[] args) throws IOException {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    EventRouter router = new EventRouter(in.readLine());
    router.init();
    HexFormat hex = HexFormat.of();
    String line;
    while ((line = in.readLine()) != null && !line.isEmpty()) {
      String[] parts = line.split(";", -1);
      long watermark = Long.parseLong(parts[3]);
      List<String> rows = new ArrayList<>();
      Object result =
          router.route(
              hex.parseHex(parts[0]),
              Integer.parseInt(parts[1]),
              Long.parseLong(parts[2]),
              () -> watermark,
              row -> {
                StringBuilder text = new StringBuilder();
                for (int i = 0; i < row.getArity(); i++) {
                  Object v = row.getField(i);
                  if (i > 0) {
                    text.append(',');
                  }
                  text.append(
                      v == null ? "-" : v instanceof byte[] b ? hex.formatHex(b) : v.toString());
                }
                rows.add(text.toString());
              });
      if (result instanceof Row fallback) {
        out.println("F;" + fallback.getField(3));
      } else if (result instanceof byte[] deadLetter) {
        out.println("D;" + new String(deadLetter, StandardCharsets.UTF_8));
      } else {
        out.println("R;" + String.join("|", rows));
      }
    }
    out.flush();
  }
}
