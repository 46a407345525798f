package io.featurestore.flink;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * Merges one-event HyperLogLog sketches into a tile's sketch, exactly as
 * feature_store/core/sketch.py's {@code HyperLogLog.merged} does, and returns its {@code
 * to_bytes()}.
 *
 * <p>The input is the single sparse entry of a one-event sketch, {@code index << 6 | rank} at
 * precision 25, computed in Python by the core aggregator itself (hash and rank never happen
 * here). A sketch is a function of the set of its entries: per sparse index the highest rank,
 * kept sparse while there are at most {@code m / 8} indices, else folded into {@code m = 2^p}
 * dense registers with the core's fold rule ({@code _fold_into}). Both are maxima, so the order
 * of inputs never matters. {@link #main} runs sets of entries from stdin, for the test that
 * compares these bytes with the Python sketch's.
 */
public final class HllSketch extends AggregateFunction<byte[], HllSketch.Acc> {
  private static final long serialVersionUID = 1L;
  static final int P = 12; // DEFAULT_PRECISION
  static final int M = 1 << P;
  static final int SPARSE_LIMIT = M / 8;
  static final int FOLD_BITS = 25 - P;
  private static final int FORMAT_VERSION = 1;
  private static final int SPARSE = 0;
  private static final int DENSE = 1;

  /** The accumulator: sorted packed sparse entries, or (once dense) the m registers. */
  public static final class Acc {
    public int[] sparse = new int[0];
    public byte[] dense;
  }

  @Override
  public Acc createAccumulator() {
    return new Acc();
  }

  public void accumulate(Acc acc, Long packed) {
    if (packed == null) {
      return;
    }
    add(acc, packed.intValue());
  }

  static void add(Acc acc, int packed) {
    int index = packed >>> 6;
    int rank = packed & 0x3F;
    if (acc.dense != null) {
      fold(acc.dense, index, rank);
      return;
    }
    int[] sparse = acc.sparse;
    int lo = 0;
    int hi = sparse.length - 1;
    while (lo <= hi) {
      int mid = (lo + hi) >>> 1;
      int at = sparse[mid] >>> 6;
      if (at < index) {
        lo = mid + 1;
      } else if (at > index) {
        hi = mid - 1;
      } else {
        if (rank > (sparse[mid] & 0x3F)) {
          sparse[mid] = packed;
        }
        return;
      }
    }
    int[] grown = new int[sparse.length + 1];
    System.arraycopy(sparse, 0, grown, 0, lo);
    grown[lo] = packed;
    System.arraycopy(sparse, lo, grown, lo + 1, sparse.length - lo);
    acc.sparse = grown;
    if (grown.length > SPARSE_LIMIT) {
      byte[] dense = new byte[M];
      for (int entry : grown) {
        fold(dense, entry >>> 6, entry & 0x3F);
      }
      acc.dense = dense;
      acc.sparse = new int[0];
    }
  }

  /** The core's _fold_into for one entry: the dense rank of the bits the sparse index kept. */
  private static void fold(byte[] dense, int sparseIndex, int sparseRank) {
    int index = sparseIndex >>> FOLD_BITS;
    int low = sparseIndex & ((1 << FOLD_BITS) - 1);
    int bitLength = 32 - Integer.numberOfLeadingZeros(low);
    int rank = low != 0 ? FOLD_BITS - bitLength + 1 : FOLD_BITS + sparseRank;
    if (rank > dense[index]) {
      dense[index] = (byte) rank;
    }
  }

  @Override
  public @DataTypeHint("BYTES") byte[] getValue(Acc acc) {
    return toBytes(acc);
  }

  static byte[] toBytes(Acc acc) {
    if (acc.dense != null) {
      byte[] out = new byte[3 + M];
      out[0] = FORMAT_VERSION;
      out[1] = P;
      out[2] = DENSE;
      System.arraycopy(acc.dense, 0, out, 3, M);
      return out;
    }
    byte[] out = new byte[3 + 4 * acc.sparse.length];
    out[0] = FORMAT_VERSION;
    out[1] = P;
    out[2] = SPARSE;
    int at = 3;
    for (int entry : acc.sparse) {
      out[at++] = (byte) (entry >>> 24);
      out[at++] = (byte) (entry >>> 16);
      out[at++] = (byte) (entry >>> 8);
      out[at++] = (byte) entry;
    }
    return out;
  }

  /** Test harness: each stdin line of comma-separated packed entries gives one hex line. */
  public static void main(String[] args) throws IOException {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    StringBuilder out = new StringBuilder();
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      Acc acc = new Acc();
      if (!line.isEmpty()) {
        Arrays.stream(line.split(",")).mapToInt(Integer::parseInt).forEach(e -> add(acc, e));
      }
      for (byte b : toBytes(acc)) {
        out.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
      }
      out.append('\n');
    }
    System.out.print(out);
  }
}
