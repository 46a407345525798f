package io.featurestore.flink;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.HashMap;
import java.util.Map;

/**
 * Every tile of one entity, for {@link TileMerger}: per tile its version (rows merged) and, per
 * definition of its view, whether any row fed it, its newest event time and its merged IR.
 * {@link TileSetSerializer} writes it into checkpoints.
 */
final class TileSet {
  /** A tile: the view's index among the source's views, its granularity and its start. */
  record Key(int vi, long g, long start) {}

  final Map<Key, Tile> tiles;
  long expiresMs = Long.MIN_VALUE; // the latest expiry of its windowed tiles (none: MIN_VALUE)
  long timerMs = Long.MIN_VALUE; // when its expiry timer fires (none: MIN_VALUE)

  TileSet() {
    this(new HashMap<>());
  }

  TileSet(Map<Key, Tile> tiles) {
    this.tiles = tiles;
  }

  /** One tile's merged IRs, indexed by the view's definitions. */
  static final class Tile {
    long version;
    final boolean[] has;
    final long[] lasts;
    final long[] ints; // sums (while they fit), min, max, avg's sum
    final BigInteger[] bigs; // a sum past 64 bits (else null)
    final long[] counts; // avg's count
    final Object[] objects; // HllSketch.Acc, LastN.Acc

    Tile(int defs) {
      has = new boolean[defs];
      lasts = new long[defs];
      ints = new long[defs];
      bigs = new BigInteger[defs];
      counts = new long[defs];
      objects = new Object[defs];
    }

    /** Adds to definition {@code d}'s exact sum (the core's ints are unbounded). */
    void add(int d, long value, boolean had) {
      if (!had) {
        ints[d] = value;
        return;
      }
      if (bigs[d] != null) {
        bigs[d] = bigs[d].add(BigInteger.valueOf(value));
        return;
      }
      long sum = ints[d] + value;
      if (((ints[d] ^ sum) & (value ^ sum)) < 0) { // overflowed
        bigs[d] = BigInteger.valueOf(ints[d]).add(BigInteger.valueOf(value));
      } else {
        ints[d] = sum;
      }
    }

    /** Definition {@code d}'s integer IR, exactly. */
    BigDecimal exact(int d) {
      return bigs[d] != null ? new BigDecimal(bigs[d]) : BigDecimal.valueOf(ints[d]);
    }
  }
}
