package io.featurestore.flink;

import java.nio.charset.StandardCharsets;
import org.bouncycastle.crypto.digests.Blake2bDigest;

/**
 * The core's per-value encodings the router needs, byte for byte (tests compare them with the
 * Python core): {@code sketch.canonical_bytes} and {@code hash64} (BLAKE2b, 8-byte digest), the
 * one-event sketch's packed sparse entry ({@code HyperLogLog.packed_entries}), {@code
 * aggregators.order_key} and {@code codec.encode_value} of a {@code (event time, value)} item.
 *
 * <p>Values are the router's: {@link Boolean}, {@link Long}, {@link Double} (never NaN: the
 * reader leaves those to the Python side), {@link String}, {@code byte[]}.
 */
final class OneEventIrs {
  private static final int SPARSE_TAIL_BITS = 64 - 25;
  private static final long SPARSE_TAIL_MASK = (1L << SPARSE_TAIL_BITS) - 1;

  private final Blake2bDigest blake = new Blake2bDigest(64);
  private final byte[] digest = new byte[8];

  /** {@code sketch.canonical_bytes}: a type tag, then the value. */
  static byte[] canonicalBytes(Object value) {
    if (value instanceof Boolean b) {
      return new byte[] {1, (byte) (b ? 1 : 0)};
    }
    if (value instanceof Long l) {
      return tagged(2, bigEndian(l));
    }
    if (value instanceof Double d) {
      return tagged(3, bigEndian(Double.doubleToRawLongBits(d)));
    }
    if (value instanceof String s) {
      return tagged(4, s.getBytes(StandardCharsets.UTF_8));
    }
    return tagged(5, (byte[]) value);
  }

  /** {@code sketch.hash64}. */
  long hash64(Object value) {
    byte[] canonical = canonicalBytes(value);
    blake.update(canonical, 0, canonical.length);
    blake.doFinal(digest, 0);
    long h = 0;
    for (byte b : digest) {
      h = h << 8 | (b & 0xFF);
    }
    return h;
  }

  /** The single sparse entry ({@code index << 6 | rank}) of a sketch holding only {@code value}. */
  long sparseEntry(Object value) {
    long h = hash64(value);
    long index = h >>> SPARSE_TAIL_BITS;
    int bitLength = 64 - Long.numberOfLeadingZeros(h & SPARSE_TAIL_MASK);
    int rank = SPARSE_TAIL_BITS - bitLength + 1;
    return index << 6 | rank;
  }

  /** {@code aggregators.order_key}; {@code float64}: the value's input type is float64. */
  static byte[] orderKey(Object value, boolean float64) {
    if (float64) {
      long bits = Double.doubleToRawLongBits((Double) value);
      long order = bits >= 0 ? bits : bits ^ 0x7FFF_FFFF_FFFF_FFFFL;
      return bigEndian(order ^ Long.MIN_VALUE);
    }
    if (value instanceof Boolean b) {
      return new byte[] {(byte) (b ? 1 : 0)};
    }
    if (value instanceof Long l) {
      return bigEndian(l ^ Long.MIN_VALUE);
    }
    if (value instanceof String s) {
      return s.getBytes(StandardCharsets.UTF_8);
    }
    return (byte[]) value;
  }

  /** {@code codec.encode_value((eventTimeMs, value))}. */
  static byte[] item(long eventTimeMs, Object value) {
    CodecBytes out = new CodecBytes(24);
    out.put(CodecBytes.TAG_TUPLE);
    out.putUvarint(2);
    out.put(CodecBytes.TAG_INT);
    out.putInt(eventTimeMs);
    if (value instanceof Boolean b) {
      out.put(b ? CodecBytes.TAG_TRUE : CodecBytes.TAG_FALSE);
    } else if (value instanceof Long l) {
      out.put(CodecBytes.TAG_INT);
      out.putInt(l);
    } else if (value instanceof Double d) {
      out.put(CodecBytes.TAG_FLOAT);
      out.putLong(Double.doubleToRawLongBits(d));
    } else {
      byte[] raw =
          value instanceof String s ? s.getBytes(StandardCharsets.UTF_8) : (byte[]) value;
      out.put(value instanceof String ? CodecBytes.TAG_STR : CodecBytes.TAG_BYTES);
      out.putUvarint(raw.length);
      out.putAll(raw);
    }
    return out.toArray();
  }

  private static byte[] tagged(int tag, byte[] body) {
    byte[] out = new byte[body.length + 1];
    out[0] = (byte) tag;
    System.arraycopy(body, 0, out, 1, body.length);
    return out;
  }

  private static byte[] bigEndian(long v) {
    byte[] out = new byte[8];
    for (int i = 7; i >= 0; i--) {
      out[i] = (byte) v;
      v >>>= 8;
    }
    return out;
  }
}
