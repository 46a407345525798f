package io.featurestore.flink;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * Keeps the newest entries of {@code last} ({@code n = 0}) and {@code last_n(n)} in the order
 * of feature_store/core/aggregators.py: the later event time wins, and on equal times the
 * larger value, compared by the value's order key ({@code order_key}, unsigned bytes). Entries
 * arrive as the core codec's bytes of the one-event IR's {@code (event_time, value)} item, so
 * the result is the tile's IR in codec bytes: the item itself for {@code last}, a tuple of up
 * to {@code n} items, newest first, for {@code last_n}. Equal entries are both kept, as the core
 * keeps duplicates. {@link #main} runs entry lists from stdin, for the test that compares the
 * bytes with the Python aggregators'.
 */
public final class LastN extends AggregateFunction<byte[], LastN.Acc> {
  private static final long serialVersionUID = 1L;

  /** The kept entries, newest first. */
  public static final class Acc {
    public long[] times = new long[0];
    public byte[][] keys = new byte[0][];
    public byte[][] items = new byte[0][];
    public int n;
  }

  @Override
  public Acc createAccumulator() {
    return new Acc();
  }

  public void accumulate(Acc acc, Integer n, Long time, byte[] key, byte[] item) {
    if (time == null || key == null || item == null) {
      return;
    }
    add(acc, n, time, key, item);
  }

  static void add(Acc acc, int n, long time, byte[] key, byte[] item) {
    acc.n = n;
    int keep = Math.max(1, n);
    int size = acc.times.length;
    int at = 0;
    while (at < size && !newer(time, key, acc.times[at], acc.keys[at])) {
      at++;
    }
    if (at >= keep) {
      return;
    }
    int grown = Math.min(keep, size + 1);
    long[] times = new long[grown];
    byte[][] keys = new byte[grown][];
    byte[][] items = new byte[grown][];
    System.arraycopy(acc.times, 0, times, 0, at);
    System.arraycopy(acc.keys, 0, keys, 0, at);
    System.arraycopy(acc.items, 0, items, 0, at);
    times[at] = time;
    keys[at] = key;
    items[at] = item;
    int rest = grown - at - 1;
    System.arraycopy(acc.times, at, times, at + 1, rest);
    System.arraycopy(acc.keys, at, keys, at + 1, rest);
    System.arraycopy(acc.items, at, items, at + 1, rest);
    acc.times = times;
    acc.keys = keys;
    acc.items = items;
  }

  /** Strictly newer in the core's order: a later time, or the same time and a larger value. */
  private static boolean newer(long time, byte[] key, long otherTime, byte[] otherKey) {
    if (time != otherTime) {
      return time > otherTime;
    }
    return Arrays.compareUnsigned(key, otherKey) > 0;
  }

  @Override
  public @DataTypeHint("BYTES") byte[] getValue(Acc acc) {
    return ir(acc);
  }

  static byte[] ir(Acc acc) {
    if (acc.items.length == 0) {
      return null;
    }
    if (acc.n == 0) {
      return acc.items[0];
    }
    CodecBytes out = new CodecBytes(8 + 24 * acc.items.length);
    out.put(CodecBytes.TAG_TUPLE);
    out.putUvarint(acc.items.length);
    for (byte[] item : acc.items) {
      out.putAll(item);
    }
    return out.toArray();
  }

  /**
   * Test harness: each stdin line {@code n;time:keyhex:itemhex,...} gives the IR's hex (or
   * {@code -} for none).
   */
  public static void main(String[] args) throws IOException {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    StringBuilder out = new StringBuilder();
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      String[] parts = line.split(";", -1);
      Acc acc = new Acc();
      int n = Integer.parseInt(parts[0]);
      acc.n = n;
      if (!parts[1].isEmpty()) {
        for (String entry : parts[1].split(",")) {
          String[] fields = entry.split(":", -1);
          add(acc, n, Long.parseLong(fields[0]), unhex(fields[1]), unhex(fields[2]));
        }
      }
      byte[] ir = ir(acc);
      if (ir == null) {
        out.append('-');
      } else {
        for (byte b : ir) {
          out.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
        }
      }
      out.append('\n');
    }
    System.out.print(out);
  }

  static byte[] unhex(String hex) {
    byte[] out = new byte[hex.length() / 2];
    for (int i = 0; i < out.length; i++) {
      out[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
    }
    return out;
  }
}
