package io.featurestore.flink;

import java.io.IOException;
import java.math.BigInteger;
import java.util.HashMap;
import java.util.Map;
import org.apache.flink.api.common.typeutils.SimpleTypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputView;

/**
 * Checkpoint bytes of a {@link TileSet}. Self-describing (each IR carries a tag), so it needs no
 * plan; {@link #FORMAT} versions the layout.
 */
public final class TileSetSerializer extends TypeSerializer<TileSet> {
  private static final long serialVersionUID = 1L;
  private static final int FORMAT = 1;
  private static final byte ABSENT = 0;
  private static final byte INT = 1;
  private static final byte BIG = 2;
  private static final byte SKETCH_SPARSE = 3;
  private static final byte SKETCH_DENSE = 4;
  private static final byte LAST = 5;

  @Override
  public boolean isImmutableType() {
    return false;
  }

  @Override
  public TypeSerializer<TileSet> duplicate() {
    return this; // stateless
  }

  @Override
  public TileSet createInstance() {
    return new TileSet();
  }

  @Override
  public TileSet copy(TileSet from) {
    Map<TileSet.Key, TileSet.Tile> tiles = new HashMap<>(from.tiles.size() * 2);
    for (Map.Entry<TileSet.Key, TileSet.Tile> entry : from.tiles.entrySet()) {
      tiles.put(entry.getKey(), copy(entry.getValue()));
    }
    TileSet set = new TileSet(tiles);
    set.expiresMs = from.expiresMs;
    set.timerMs = from.timerMs;
    return set;
  }

  private static TileSet.Tile copy(TileSet.Tile from) {
    int defs = from.has.length;
    TileSet.Tile tile = new TileSet.Tile(defs);
    tile.version = from.version;
    System.arraycopy(from.has, 0, tile.has, 0, defs);
    System.arraycopy(from.lasts, 0, tile.lasts, 0, defs);
    System.arraycopy(from.ints, 0, tile.ints, 0, defs);
    System.arraycopy(from.bigs, 0, tile.bigs, 0, defs); // immutable values
    System.arraycopy(from.counts, 0, tile.counts, 0, defs);
    for (int d = 0; d < defs; d++) {
      Object ir = from.objects[d];
      if (ir instanceof HllSketch.Acc sketch) {
        HllSketch.Acc copied = new HllSketch.Acc();
        copied.sparse = sketch.sparse.clone();
        copied.dense = sketch.dense == null ? null : sketch.dense.clone();
        tile.objects[d] = copied;
      } else if (ir instanceof LastN.Acc last) {
        // LastN.add replaces its arrays and never changes an item's bytes: shallow is enough
        LastN.Acc copied = new LastN.Acc();
        copied.times = last.times.clone();
        copied.keys = last.keys.clone();
        copied.items = last.items.clone();
        copied.n = last.n;
        tile.objects[d] = copied;
      }
    }
    return tile;
  }

  @Override
  public TileSet copy(TileSet from, TileSet reuse) {
    return copy(from);
  }

  @Override
  public int getLength() {
    return -1;
  }

  @Override
  public void serialize(TileSet set, DataOutputView out) throws IOException {
    out.writeByte(FORMAT);
    out.writeLong(set.expiresMs);
    out.writeLong(set.timerMs);
    out.writeInt(set.tiles.size());
    for (Map.Entry<TileSet.Key, TileSet.Tile> entry : set.tiles.entrySet()) {
      TileSet.Key key = entry.getKey();
      TileSet.Tile tile = entry.getValue();
      out.writeInt(key.vi());
      out.writeLong(key.g());
      out.writeLong(key.start());
      out.writeLong(tile.version);
      out.writeInt(tile.has.length);
      for (int d = 0; d < tile.has.length; d++) {
        writeIr(tile, d, out);
      }
    }
  }

  private static void writeIr(TileSet.Tile tile, int d, DataOutputView out) throws IOException {
    if (!tile.has[d]) {
      out.writeByte(ABSENT);
      return;
    }
    Object ir = tile.objects[d];
    if (ir instanceof HllSketch.Acc sketch) {
      out.writeByte(sketch.dense != null ? SKETCH_DENSE : SKETCH_SPARSE);
      out.writeLong(tile.lasts[d]);
      if (sketch.dense != null) {
        out.writeInt(sketch.dense.length);
        out.write(sketch.dense);
      } else {
        out.writeInt(sketch.sparse.length);
        for (int entry : sketch.sparse) {
          out.writeInt(entry);
        }
      }
    } else if (ir instanceof LastN.Acc last) {
      out.writeByte(LAST);
      out.writeLong(tile.lasts[d]);
      out.writeInt(last.n);
      out.writeInt(last.times.length);
      for (int i = 0; i < last.times.length; i++) {
        out.writeLong(last.times[i]);
        writeBytes(last.keys[i], out);
        writeBytes(last.items[i], out);
      }
    } else if (tile.bigs[d] != null) {
      out.writeByte(BIG);
      out.writeLong(tile.lasts[d]);
      writeBytes(tile.bigs[d].toByteArray(), out);
      out.writeLong(tile.counts[d]);
    } else {
      out.writeByte(INT);
      out.writeLong(tile.lasts[d]);
      out.writeLong(tile.ints[d]);
      out.writeLong(tile.counts[d]);
    }
  }

  private static void writeBytes(byte[] bytes, DataOutputView out) throws IOException {
    out.writeInt(bytes.length);
    out.write(bytes);
  }

  private static byte[] readBytes(DataInputView in) throws IOException {
    byte[] bytes = new byte[in.readInt()];
    in.readFully(bytes);
    return bytes;
  }

  @Override
  public TileSet deserialize(DataInputView in) throws IOException {
    int format = in.readByte();
    if (format != FORMAT) {
      throw new IOException("tile state of format " + format + ", this job reads " + FORMAT);
    }
    long expiresMs = in.readLong();
    long timerMs = in.readLong();
    int count = in.readInt();
    Map<TileSet.Key, TileSet.Tile> tiles = new HashMap<>(count * 2);
    for (int k = 0; k < count; k++) {
      TileSet.Key key = new TileSet.Key(in.readInt(), in.readLong(), in.readLong());
      long version = in.readLong();
      TileSet.Tile tile = new TileSet.Tile(in.readInt());
      tile.version = version;
      for (int d = 0; d < tile.has.length; d++) {
        readIr(tile, d, in);
      }
      tiles.put(key, tile);
    }
    TileSet set = new TileSet(tiles);
    set.expiresMs = expiresMs;
    set.timerMs = timerMs;
    return set;
  }

  private static void readIr(TileSet.Tile tile, int d, DataInputView in) throws IOException {
    byte tag = in.readByte();
    if (tag == ABSENT) {
      return;
    }
    tile.has[d] = true;
    tile.lasts[d] = in.readLong();
    switch (tag) {
      case SKETCH_DENSE -> {
        HllSketch.Acc sketch = new HllSketch.Acc();
        sketch.dense = new byte[in.readInt()];
        in.readFully(sketch.dense);
        tile.objects[d] = sketch;
      }
      case SKETCH_SPARSE -> {
        HllSketch.Acc sketch = new HllSketch.Acc();
        sketch.sparse = new int[in.readInt()];
        for (int i = 0; i < sketch.sparse.length; i++) {
          sketch.sparse[i] = in.readInt();
        }
        tile.objects[d] = sketch;
      }
      case LAST -> {
        LastN.Acc last = new LastN.Acc();
        last.n = in.readInt();
        int size = in.readInt();
        last.times = new long[size];
        last.keys = new byte[size][];
        last.items = new byte[size][];
        for (int i = 0; i < size; i++) {
          last.times[i] = in.readLong();
          last.keys[i] = readBytes(in);
          last.items[i] = readBytes(in);
        }
        tile.objects[d] = last;
      }
      case BIG -> {
        tile.bigs[d] = new BigInteger(readBytes(in));
        tile.counts[d] = in.readLong();
      }
      case INT -> {
        tile.ints[d] = in.readLong();
        tile.counts[d] = in.readLong();
      }
      default -> throw new IOException("unknown tile IR tag " + tag);
    }
  }

  @Override
  public TileSet deserialize(TileSet reuse, DataInputView in) throws IOException {
    return deserialize(in);
  }

  @Override
  public void copy(DataInputView in, DataOutputView out) throws IOException {
    serialize(deserialize(in), out);
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof TileSetSerializer;
  }

  @Override
  public int hashCode() {
    return TileSetSerializer.class.hashCode();
  }

  @Override
  public TypeSerializerSnapshot<TileSet> snapshotConfiguration() {
    return new Snapshot();
  }

  /** The serializer's snapshot: it has no configuration. */
  public static final class Snapshot extends SimpleTypeSerializerSnapshot<TileSet> {
    public Snapshot() {
      super(TileSetSerializer::new);
    }
  }
}
