package io.featurestore.flink;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.Serializable;
import java.math.BigDecimal;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.Map;

/**
 * A {@code where} predicate or source filter, from the tree {@code core.predicates.predicate_tree}
 * writes, with that module's semantics: two-valued logic (a null field makes every comparison
 * with it false, except {@code == null} / {@code != null}); numbers compared exactly across int64
 * and float64 (NaN unordered); strings by code point; bytes unsigned; a bare boolean field true
 * only when it is true. Values are the router's ({@link Long}, {@link Double}, {@link Boolean},
 * {@link String}, {@code byte[]}, null) in slots named by {@code fields}.
 */
abstract class Predicate implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final int UNORDERED = Integer.MIN_VALUE;

  abstract boolean test(Object[] slots);

  static Predicate of(JsonNode tree, Map<String, Integer> fields) {
    if (tree == null || tree.isNull()) {
      return null;
    }
    if (tree.has("and") || tree.has("or")) {
      boolean and = tree.has("and");
      JsonNode args = tree.get(and ? "and" : "or");
      Predicate[] parts = new Predicate[args.size()];
      for (int i = 0; i < parts.length; i++) {
        parts[i] = of(args.get(i), fields);
      }
      return and ? new All(parts) : new Any(parts);
    }
    if (tree.has("not")) {
      return new Not(of(tree.get("not"), fields));
    }
    if (tree.has("const")) {
      return new Const(tree.get("const").asBoolean());
    }
    if (tree.has("flag")) {
      return new Flag(fields.get(tree.get("flag").asText()));
    }
    if (tree.has("null")) {
      return new IsNull(fields.get(tree.get("null").asText()), tree.get("negate").asBoolean());
    }
    String op = tree.get("cmp").asText();
    JsonNode left = tree.get("left");
    JsonNode right = tree.get("right");
    if (op.equals("in") || op.equals("not in")) {
      JsonNode values = right.get("values");
      Object[] literals = new Object[values.size()];
      for (int i = 0; i < literals.length; i++) {
        literals[i] = literal(values.get(i));
      }
      return new In(fields.get(left.get("field").asText()), literals, op.equals("not in"));
    }
    return new Compare(operand(left, fields), op, operand(right, fields));
  }

  /** A field's slot (>= 0) or a literal (slot -1, value). */
  private record Operand(int slot, Object value) implements Serializable {
    Object get(Object[] slots) {
      return slot >= 0 ? slots[slot] : value;
    }
  }

  private static Operand operand(JsonNode node, Map<String, Integer> fields) {
    if (node.has("field")) {
      return new Operand(fields.get(node.get("field").asText()), null);
    }
    return new Operand(-1, literal(node.get("value")));
  }

  private static Object literal(JsonNode node) {
    if (node.has("int")) {
      return node.get("int").asLong();
    }
    if (node.has("float")) {
      return Double.longBitsToDouble(node.get("float").asLong());
    }
    if (node.has("str")) {
      return node.get("str").asText();
    }
    if (node.has("bytes")) {
      return HexFormat.of().parseHex(node.get("bytes").asText());
    }
    return node.get("bool").asBoolean();
  }

  /** Python's comparison of two non-null values of one category; UNORDERED for NaN. */
  static int compare(Object a, Object b) {
    if (a instanceof Long x && b instanceof Long y) {
      return Long.compare(x, y);
    }
    if (a instanceof Double || b instanceof Double) {
      if (a instanceof Long x) {
        return exact(x, (Double) b);
      }
      if (b instanceof Long y) {
        int c = exact(y, (Double) a);
        return c == UNORDERED ? c : -c;
      }
      double x = (Double) a;
      double y = (Double) b;
      return x < y ? -1 : x > y ? 1 : x == y ? 0 : UNORDERED; // -0.0 == 0.0, as in Python
    }
    if (a instanceof String x && b instanceof String y) {
      return codePointCompare(x, y);
    }
    if (a instanceof byte[] x && b instanceof byte[] y) {
      return Arrays.compareUnsigned(x, y);
    }
    if (a instanceof Boolean x && b instanceof Boolean y) {
      return x.equals(y) ? 0 : 1; // only == and != apply to booleans
    }
    return UNORDERED; // categories never mix in a type-checked predicate
  }

  /** An int64 against a float64, exactly (as Python compares int and float). */
  private static int exact(long x, double y) {
    if (Double.isNaN(y)) {
      return UNORDERED;
    }
    if (Double.isInfinite(y)) {
      return y > 0 ? -1 : 1;
    }
    return new BigDecimal(x).compareTo(new BigDecimal(y));
  }

  private static int codePointCompare(String x, String y) {
    int i = 0;
    int j = 0;
    while (i < x.length() && j < y.length()) {
      int a = x.codePointAt(i);
      int b = y.codePointAt(j);
      if (a != b) {
        return Integer.compare(a, b);
      }
      i += Character.charCount(a);
      j += Character.charCount(b);
    }
    return Integer.compare(x.length() - i, y.length() - j);
  }

  private static final class All extends Predicate {
    private static final long serialVersionUID = 1L;
    private final Predicate[] parts;

    All(Predicate[] parts) {
      this.parts = parts;
    }

    @Override
    boolean test(Object[] slots) {
      for (Predicate p : parts) {
        if (!p.test(slots)) {
          return false;
        }
      }
      return true;
    }
  }

  private static final class Any extends Predicate {
    private static final long serialVersionUID = 1L;
    private final Predicate[] parts;

    Any(Predicate[] parts) {
      this.parts = parts;
    }

    @Override
    boolean test(Object[] slots) {
      for (Predicate p : parts) {
        if (p.test(slots)) {
          return true;
        }
      }
      return false;
    }
  }

  private static final class Not extends Predicate {
    private static final long serialVersionUID = 1L;
    private final Predicate inner;

    Not(Predicate inner) {
      this.inner = inner;
    }

    @Override
    boolean test(Object[] slots) {
      return !inner.test(slots);
    }
  }

  private static final class Const extends Predicate {
    private static final long serialVersionUID = 1L;
    private final boolean value;

    Const(boolean value) {
      this.value = value;
    }

    @Override
    boolean test(Object[] slots) {
      return value;
    }
  }

  private static final class Flag extends Predicate {
    private static final long serialVersionUID = 1L;
    private final int slot;

    Flag(int slot) {
      this.slot = slot;
    }

    @Override
    boolean test(Object[] slots) {
      return Boolean.TRUE.equals(slots[slot]);
    }
  }

  private static final class IsNull extends Predicate {
    private static final long serialVersionUID = 1L;
    private final int slot;
    private final boolean negate;

    IsNull(int slot, boolean negate) {
      this.slot = slot;
      this.negate = negate;
    }

    @Override
    boolean test(Object[] slots) {
      return (slots[slot] == null) != negate;
    }
  }

  private static final class In extends Predicate {
    private static final long serialVersionUID = 1L;
    private final int slot;
    private final Object[] literals;
    private final boolean negate;

    In(int slot, Object[] literals, boolean negate) {
      this.slot = slot;
      this.literals = literals;
      this.negate = negate;
    }

    @Override
    boolean test(Object[] slots) {
      Object value = slots[slot];
      if (value == null) {
        return false;
      }
      for (Object literal : literals) {
        if (compare(value, literal) == 0) {
          return !negate;
        }
      }
      return negate;
    }
  }

  private static final class Compare extends Predicate {
    private static final long serialVersionUID = 1L;
    private final Operand left;
    private final Operand right;
    private final int op; // 0 ==, 1 !=, 2 <, 3 <=, 4 >, 5 >=

    Compare(Operand left, String op, Operand right) {
      this.left = left;
      this.right = right;
      this.op =
          switch (op) {
            case "==" -> 0;
            case "!=" -> 1;
            case "<" -> 2;
            case "<=" -> 3;
            case ">" -> 4;
            case ">=" -> 5;
            default -> throw new IllegalArgumentException("unknown comparison " + op);
          };
    }

    @Override
    boolean test(Object[] slots) {
      Object a = left.get(slots);
      Object b = right.get(slots);
      if (a == null || b == null) {
        return false;
      }
      int c = compare(a, b);
      if (op == 1) {
        return c != 0;
      }
      if (c == UNORDERED) {
        return false;
      }
      return switch (op) {
        case 0 -> c == 0;
        case 2 -> c < 0;
        case 3 -> c <= 0;
        case 4 -> c > 0;
        default -> c >= 0;
      };
    }
  }
}
