package io.featurestore.flink;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * Encodes a tile of the SQL path in the tile format of feature_store/core/codec.py (format
 * version 1), byte for byte: the SQL path's tiles are written without a Python call per tile.
 * Only the IRs the SQL path produces are covered: an int (tag 3, zigzag varint of any size), a
 * pair of ints (tag 7, count 2), a sketch (tag 8, the bytes of {@link HllSketch}) and an IR
 * already in codec bytes ({@link LastN}'s); slots without an event (null {@code last}) are
 * omitted, as {@code ViewAggregator.encode} does.
 *
 * <p>{@code kinds} has one character per slot in the layout's slot order: {@code i} (one int:
 * {@code first}), {@code t} (the pair {@code (first, second)}: avg's sum and count), {@code h}
 * (a sketch: {@code raws}) or {@code r} (codec bytes: {@code raws}). {@link #main} encodes
 * lines from stdin, for the test that compares these bytes with the Python codec.
 */
public final class TileEncoder extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private static final int FORMAT_VERSION = 1;

  public byte[] eval(
      String kinds,
      @DataTypeHint("ARRAY<BIGINT>") Long[] slotIds,
      @DataTypeHint("ARRAY<BIGINT>") Long[] lasts,
      @DataTypeHint("ARRAY<DECIMAL(38, 0)>") BigDecimal[] first,
      @DataTypeHint("ARRAY<BIGINT>") Long[] second,
      @DataTypeHint("ARRAY<BYTES>") byte[][] raws) {
    return encode(kinds, slotIds, lasts, first, second, raws);
  }

  static byte[] encode(
      String kinds,
      Long[] slotIds,
      Long[] lasts,
      BigDecimal[] first,
      Long[] second,
      byte[][] raws) {
    CodecBytes out = new CodecBytes(16 + 12 * kinds.length());
    out.put(FORMAT_VERSION);
    int entries = 0;
    for (Long last : lasts) {
      if (last != null) {
        entries++;
      }
    }
    out.putUvarint(entries);
    long previous = 0;
    for (int i = 0; i < kinds.length(); i++) {
      Long last = lasts[i];
      if (last == null) {
        continue;
      }
      long sid = slotIds[i];
      out.put((int) (sid >>> 24));
      out.put((int) (sid >>> 16));
      out.put((int) (sid >>> 8));
      out.put((int) sid);
      long delta = last - previous;
      if (((last ^ previous) & (last ^ delta)) < 0) { // overflowed: Python's ints do not
        out.putInt(BigInteger.valueOf(last).subtract(BigInteger.valueOf(previous)));
      } else {
        out.putInt(delta);
      }
      previous = last;
      char kind = kinds.charAt(i);
      if (kind == 'h' || kind == 'r') {
        if (kind == 'h') {
          out.put(CodecBytes.TAG_SKETCH);
          out.putUvarint(raws[i].length);
        }
        out.putAll(raws[i]);
        continue;
      }
      BigInteger value = first[i] == null ? BigInteger.ZERO : first[i].toBigIntegerExact();
      if (kind == 't') {
        out.put(CodecBytes.TAG_TUPLE);
        out.putUvarint(2);
        out.put(CodecBytes.TAG_INT);
        out.putInt(value);
        out.put(CodecBytes.TAG_INT);
        out.putInt(BigInteger.valueOf(second[i] == null ? 0 : second[i]));
      } else {
        out.put(CodecBytes.TAG_INT);
        out.putInt(value);
      }
    }
    return out.toArray();
  }

  /**
   * Test harness: each stdin line {@code kinds;sids;lasts;firsts;seconds;raws}
   * (comma-separated, {@code -} for null, raws in hex) gives one hex line on stdout.
   */
  public static void main(String[] args) throws IOException {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    StringBuilder out = new StringBuilder();
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      String[] parts = line.split(";", -1);
      String kinds = parts[0];
      int n = kinds.length();
      Long[] sids = longs(parts[1], n);
      Long[] lasts = longs(parts[2], n);
      Long[] seconds = longs(parts[4], n);
      BigDecimal[] firsts = new BigDecimal[n];
      String[] items = parts[3].split(",", -1);
      for (int i = 0; i < n; i++) {
        firsts[i] = items[i].equals("-") ? null : new BigDecimal(items[i]);
      }
      byte[][] raws = new byte[n][];
      String[] hexes = parts[5].split(",", -1);
      for (int i = 0; i < n; i++) {
        raws[i] = hexes[i].equals("-") ? null : LastN.unhex(hexes[i]);
      }
      for (byte b : encode(kinds, sids, lasts, firsts, seconds, raws)) {
        out.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
      }
      out.append('\n');
    }
    System.out.print(out);
  }

  private static Long[] longs(String text, int n) {
    Long[] values = new Long[n];
    String[] items = text.split(",", -1);
    for (int i = 0; i < n; i++) {
      values[i] = items[i].equals("-") ? null : Long.parseLong(items[i]);
    }
    return values;
  }
}
