package io.featurestore.flink;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * A strict reader of one Avro record schema (binary encoding), from the program the Python side
 * writes ({@code feature_store.stream.jvm_route.avro_program}): the record's fields in order,
 * each a type node, the captured ones with the slot their value goes to.
 *
 * <p>It reads only what it needs into Java values (int/long as {@link Long}, float/double as
 * {@link Double}, boolean, string and enum symbols as {@link String}, bytes and fixed as {@code
 * byte[]}, null), skips the rest, and checks every length against the bytes left. It
 * <em>refuses</em> ({@link #read} returns false) anything doubtful: a union or enum index out of
 * range, a boolean byte other than 0 or 1, an over-long varint, invalid UTF-8 anywhere, a count larger than the bytes left, trailing bytes. A refused record goes to
 * the Python router (fastavro), the authority on what is wrong with it, so being stricter than
 * fastavro costs speed on odd records, never correctness.
 */
final class AvroReader implements Serializable {
  private static final long serialVersionUID = 1L;

  private static final int NULL = 0;
  private static final int BOOLEAN = 1;
  private static final int INT = 2;
  private static final int LONG = 3;
  private static final int FLOAT = 4;
  private static final int DOUBLE = 5;
  private static final int STRING = 6;
  private static final int BYTES = 7;
  private static final int FIXED = 8;
  private static final int ENUM = 9;
  private static final int ARRAY = 10;
  private static final int MAP = 11;
  private static final int RECORD = 12;
  private static final int UNION = 13;

  /** Thrown (preallocated, no stack trace) when a record is refused. */
  private static final class Refused extends Exception {
    private static final long serialVersionUID = 1L;

    Refused() {
      super("refused", null, false, false);
    }
  }

  private static final Refused REFUSED = new Refused();

  private static final class Node implements Serializable {
    private static final long serialVersionUID = 1L;
    int type;
    int size; // fixed
    String[] symbols; // enum
    Node items; // array items, map values
    Node[] children; // record fields, union branches
    int slot = -1; // captured top-level field
  }

  private final Node[] fields;
  private transient byte[] data;
  private transient int pos;
  private transient int end;
  private transient CharsetDecoder utf8;

  AvroReader(JsonNode program) {
    JsonNode list = program.get("fields");
    fields = new Node[list.size()];
    for (int i = 0; i < fields.length; i++) {
      fields[i] = node(list.get(i));
    }
  }

  private static Node node(JsonNode json) {
    Node node = new Node();
    String t = json.get("t").asText();
    node.type =
        switch (t) {
          case "null" -> NULL;
          case "boolean" -> BOOLEAN;
          case "int" -> INT;
          case "long" -> LONG;
          case "float" -> FLOAT;
          case "double" -> DOUBLE;
          case "string" -> STRING;
          case "bytes" -> BYTES;
          case "fixed" -> FIXED;
          case "enum" -> ENUM;
          case "array" -> ARRAY;
          case "map" -> MAP;
          case "record" -> RECORD;
          case "union" -> UNION;
          default -> throw new IllegalArgumentException("unknown Avro type node " + t);
        };
    if (node.type == FIXED) {
      node.size = json.get("size").asInt();
    } else if (node.type == ENUM) {
      JsonNode symbols = json.get("symbols");
      node.symbols = new String[symbols.size()];
      for (int i = 0; i < node.symbols.length; i++) {
        node.symbols[i] = symbols.get(i).asText();
      }
    } else if (node.type == ARRAY) {
      node.items = node(json.get("items"));
    } else if (node.type == MAP) {
      node.items = node(json.get("values"));
    } else if (node.type == RECORD || node.type == UNION) {
      JsonNode children = json.get(node.type == RECORD ? "fields" : "branches");
      node.children = new Node[children.size()];
      for (int i = 0; i < node.children.length; i++) {
        node.children[i] = node(children.get(i));
      }
    }
    if (json.has("cap")) {
      node.slot = json.get("cap").asInt();
    }
    return node;
  }

  /**
   * Reads the record in {@code bytes[offset..]} (to the end of the array), its captured fields
   * into {@code slots} (absent: null); false when the record is refused.
   */
  boolean read(byte[] bytes, int offset, Object[] slots) {
    data = bytes;
    pos = offset;
    end = bytes.length;
    try {
      for (Node field : fields) {
        Object value = value(field, field.slot >= 0);
        if (field.slot >= 0) {
          slots[field.slot] = value;
        }
      }
      return pos == end;
    } catch (Refused refused) {
      return false;
    } finally {
      data = null;
    }
  }

  /** Reads one value of {@code node}; returns it when {@code keep}, else null. */
  private Object value(Node node, boolean keep) throws Refused {
    switch (node.type) {
      case NULL:
        return null;
      case BOOLEAN:
        {
          int b = next();
          if (b > 1) {
            throw REFUSED;
          }
          return keep ? Boolean.valueOf(b == 1) : null;
        }
      case INT:
        {
          long v = varint(5);
          if (v != (int) v) {
            throw REFUSED;
          }
          return keep ? Long.valueOf(v) : null;
        }
      case LONG:
        {
          long v = varint(10);
          return keep ? Long.valueOf(v) : null;
        }
      case FLOAT:
        {
          need(4);
          int bits =
              (data[pos] & 0xFF)
                  | (data[pos + 1] & 0xFF) << 8
                  | (data[pos + 2] & 0xFF) << 16
                  | (data[pos + 3] & 0xFF) << 24;
          pos += 4;
          if (!keep) {
            return null;
          }
          return Double.valueOf(Float.intBitsToFloat(bits));
        }
      case DOUBLE:
        {
          need(8);
          long bits = 0;
          for (int i = 7; i >= 0; i--) {
            bits = bits << 8 | (data[pos + i] & 0xFF);
          }
          pos += 8;
          if (!keep) {
            return null;
          }
          return Double.valueOf(Double.longBitsToDouble(bits));
        }
      case STRING:
        {
          int n = length();
          String s = utf8(n);
          pos += n;
          return keep ? s : null;
        }
      case BYTES:
        {
          int n = length();
          byte[] b = keep ? java.util.Arrays.copyOfRange(data, pos, pos + n) : null;
          pos += n;
          return b;
        }
      case FIXED:
        {
          need(node.size);
          byte[] b = keep ? java.util.Arrays.copyOfRange(data, pos, pos + node.size) : null;
          pos += node.size;
          return b;
        }
      case ENUM:
        {
          long i = varint(5);
          if (i < 0 || i >= node.symbols.length) {
            throw REFUSED;
          }
          return keep ? node.symbols[(int) i] : null;
        }
      case ARRAY:
      case MAP:
        blocks(node);
        return null;
      case RECORD:
        for (Node child : node.children) {
          value(child, false);
        }
        return null;
      case UNION:
        {
          long i = varint(10);
          if (i < 0 || i >= node.children.length) {
            throw REFUSED;
          }
          return value(node.children[(int) i], keep);
        }
      default:
        throw REFUSED;
    }
  }

  private void blocks(Node node) throws Refused {
    while (true) {
      long count = varint(10);
      if (count == 0) {
        return;
      }
      if (count < 0) {
        count = -count;
        varint(10); // the block's size in bytes
      }
      if (count > end - pos) { // every item but a null takes a byte: refuse absurd counts
        throw REFUSED;
      }
      for (long i = 0; i < count; i++) {
        if (node.type == MAP) {
          int n = length();
          utf8(n);
          pos += n;
        }
        value(node.items, false);
      }
    }
  }

  private int next() throws Refused {
    if (pos >= end) {
      throw REFUSED;
    }
    return data[pos++] & 0xFF;
  }

  private void need(int n) throws Refused {
    if (n < 0 || n > end - pos) {
      throw REFUSED;
    }
  }

  private int length() throws Refused {
    long n = varint(10);
    if (n < 0 || n > end - pos) {
      throw REFUSED;
    }
    return (int) n;
  }

  /** A zigzag varint of at most {@code maxBytes} bytes. */
  private long varint(int maxBytes) throws Refused {
    long raw = 0;
    for (int shift = 0, i = 0; i < maxBytes; i++, shift += 7) {
      int b = next();
      if (i == 9 && b > 1) {
        throw REFUSED; // beyond 64 bits
      }
      raw |= (long) (b & 0x7F) << shift;
      if (b < 0x80) {
        return (raw >>> 1) ^ -(raw & 1);
      }
    }
    throw REFUSED;
  }

  /** The UTF-8 string of the next {@code n} bytes (position unchanged); refuses invalid UTF-8. */
  private String utf8(int n) throws Refused {
    boolean ascii = true;
    for (int i = pos; i < pos + n; i++) {
      if (data[i] < 0) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      return new String(data, pos, n, StandardCharsets.ISO_8859_1);
    }
    if (utf8 == null) {
      utf8 =
          StandardCharsets.UTF_8
              .newDecoder()
              .onMalformedInput(CodingErrorAction.REPORT)
              .onUnmappableCharacter(CodingErrorAction.REPORT);
    }
    try {
      return utf8.decode(ByteBuffer.wrap(data, pos, n)).toString();
    } catch (CharacterCodingException e) {
      throw REFUSED;
    }
  }
}
