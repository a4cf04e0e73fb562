//! Random JSON documents for the tests of this module: nested objects and arrays, repeated
//! keys, escapes, whitespace, and numbers of every kind (some out of range, which
//! serde_json refuses).

/// A xorshift generator: `next(n)` is below `n`.
pub(super) fn rng(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

const KEYS: [&str; 10] = [
    "a",
    "metadata",
    "managedFields",
    "spec",
    "k\\\"q",
    "",
    "\\u00e9\\/",
    "\u{e9}t\u{e9}",
    "a",
    "containers_and_a_long_key_name",
];
const SCALARS: [&str; 30] = [
    "null",
    "true",
    "false",
    "0",
    "-1",
    "7",
    "123456789012345678",
    "1234567890123456789",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "-0",
    "1.5",
    "-2.5e-3",
    "1E5",
    "0.1e+2",
    "1e400",
    "\"x\"",
    "\"\"",
    "\"tab\\there \\\\ \\/ \\b\\f\\n\\r\"",
    "\"\\ud83d\\ude00 and \\u00E9\"",
    "\"\u{1f600} \u{e9} raw, longer than eight bytes\"",
    "\"quote \\\" inside a string of some length\"",
    "\"\\u0000\"",
    "\"abcdefgh\"",
    "\"abcdefghi\\\"\"",
    "\"12345678\\n12345678\"",
    "  \"spaced\"\t",
    "\n-12\r",
];

/// Appends a random document at nesting `depth` (scalars only below 4) to `out`.
pub(super) fn document(next: &mut impl FnMut(u64) -> u64, depth: u32, out: &mut String) {
    let ws = |next: &mut dyn FnMut(u64) -> u64, out: &mut String| {
        out.push_str([" ", "", "", "\n  ", "\t", "\r\n"][next(6) as usize]);
    };
    match if depth > 4 { 2 } else { next(4) } {
        0 => {
            out.push('{');
            for i in 0..next(5) {
                if i > 0 {
                    out.push(',');
                }
                ws(next, out);
                out.push('"');
                out.push_str(KEYS[next(KEYS.len() as u64) as usize]);
                out.push('"');
                ws(next, out);
                out.push(':');
                document(next, depth + 1, out);
            }
            ws(next, out);
            out.push('}');
        }
        1 => {
            out.push('[');
            for i in 0..next(4) {
                if i > 0 {
                    out.push(',');
                }
                document(next, depth + 1, out);
            }
            ws(next, out);
            out.push(']');
        }
        _ => {
            ws(next, out);
            out.push_str(SCALARS[next(SCALARS.len() as u64) as usize]);
            ws(next, out);
        }
    }
}
