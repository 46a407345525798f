package io.featurestore.flink;

import java.math.BigInteger;
import java.util.Arrays;

/**
 * A growable byte buffer writing feature_store/core/codec.py's pieces: the value tags, unsigned
 * LEB128 varints and zigzag ints (of any size, as Python's ints). Shared by the JVM classes that
 * write the core's bytes ({@link TileEncoder}, {@link LastN}, {@link OneEventIrs}); not
 * synchronised (one per call).
 */
final class CodecBytes {
  static final int TAG_FALSE = 1;
  static final int TAG_TRUE = 2;
  static final int TAG_INT = 3;
  static final int TAG_FLOAT = 4;
  static final int TAG_STR = 5;
  static final int TAG_BYTES = 6;
  static final int TAG_TUPLE = 7;
  static final int TAG_SKETCH = 8;
  private static final BigInteger SEVEN_BITS = BigInteger.valueOf(0x7F);

  private byte[] data;
  private int size;

  CodecBytes(int capacity) {
    data = new byte[Math.max(capacity, 8)];
  }

  void put(int b) {
    if (size == data.length) {
      data = Arrays.copyOf(data, size * 2);
    }
    data[size++] = (byte) b;
  }

  void putAll(byte[] bytes) {
    if (size + bytes.length > data.length) {
      data = Arrays.copyOf(data, Math.max(size * 2, size + bytes.length));
    }
    System.arraycopy(bytes, 0, data, size, bytes.length);
    size += bytes.length;
  }

  /** An unsigned varint of a non-negative long (or of the 64 bits as unsigned). */
  void putUvarint(long n) {
    while ((n & ~0x7FL) != 0) {
      put((int) ((n & 0x7F) | 0x80));
      n >>>= 7;
    }
    put((int) n);
  }

  void putUvarint(BigInteger n) {
    if (n.bitLength() < 63) {
      putUvarint(n.longValue());
      return;
    }
    while (n.compareTo(SEVEN_BITS) > 0) {
      put(n.and(SEVEN_BITS).intValue() | 0x80);
      n = n.shiftRight(7);
    }
    put(n.intValue());
  }

  /** zigzag: n >= 0 -> 2n, else 2(-n - 1) + 1. */
  void putInt(long n) {
    putUvarint((n << 1) ^ (n >> 63));
  }

  /** zigzag of any size, as Python's ints. */
  void putInt(BigInteger n) {
    if (n.signum() >= 0) {
      putUvarint(n.shiftLeft(1));
    } else {
      putUvarint(n.not().shiftLeft(1).setBit(0));
    }
  }

  /** Eight bytes, big endian. */
  void putLong(long v) {
    for (int shift = 56; shift >= 0; shift -= 8) {
      put((int) (v >>> shift));
    }
  }

  byte[] toArray() {
    return Arrays.copyOf(data, size);
  }
}
