//! Finding JSON values inside mixed logs: single-line records (JSON lines) and
//! pretty-printed documents that start at the beginning of a line.

use serde_json::Value;

/// Every JSON value in `log` that starts at the beginning of a line with `{` or `[`
/// (after spaces) and parses completely. A value that starts like JSON but does not
/// parse is counted in the second result. Values are not searched for inside other values. Only lines for
/// which `start` holds are tried (a cheap check on the first line, so a parser does
/// not pay for JSON that is not its own); the byte ranges in `skip` (values
/// another scan already read) are passed over whole.
pub fn values_where(
    log: &str,
    skip: &[std::ops::Range<usize>],
    start: impl Fn(&str) -> bool,
) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    let mut pos = 0;
    let bytes = log.as_bytes();
    while pos < bytes.len() {
        let line_end = log[pos..].find('\n').map_or(bytes.len(), |i| pos + i);
        let line = &log[pos..line_end];
        let trimmed = line.trim_start_matches([' ', '\t']);
        let first = trimmed.as_bytes().first().copied();
        let offset = pos + (line.len() - trimmed.len());
        if let Some(r) = skip.iter().find(|r| r.start == offset) {
            pos = log[r.end..]
                .find('\n')
                .map_or(bytes.len(), |i| r.end + i + 1);
            continue;
        }
        if matches!(first, Some(b'{' | b'['))
            && !trimmed.starts_with("[crafting-table]")
            && start(trimmed)
        {
            let start = offset;
            // A record on one line is the common case: try it alone first.
            let one_line = trimmed.trim_end_matches(['\r', ' ', '\t']);
            if let Ok(v) = serde_json::from_str::<Value>(one_line) {
                out.push(v);
                pos = line_end + 1;
                continue;
            }
            let mut stream = serde_json::Deserializer::from_str(&log[start..]).into_iter::<Value>();
            match stream.next() {
                Some(Ok(v)) => {
                    let consumed = stream.byte_offset();
                    out.push(v);
                    let end = start + consumed;
                    pos = log[end..].find('\n').map_or(bytes.len(), |i| end + i + 1);
                    continue;
                }
                _ => bad += 1,
            }
        }
        pos = line_end + 1;
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_and_pretty_documents() {
        let log =
            "noise\n{\"a\":1}\n  Compiling x\n[\n  {\"b\": 2},\n  {\"c\": 3}\n]\n{\"broken\": \n";
        let (v, bad) = values_where(log, &[], |_| true);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1][1]["c"], 3);
        assert_eq!(bad, 1);
    }
}
