//! Masks secret values in a stream of output as `***`, including a value split
//! across two writes: the tail of each chunk that could still begin a secret is
//! held back until the next chunk (or the end) decides.

/// The mask written in place of a secret.
pub const MASK: &[u8] = b"***";

/// Shortest value that is masked (shorter ones would mask ordinary text).
pub const MIN_LEN: usize = 4;

/// A streaming masker.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    /// A masker for `values` (those shorter than [`MIN_LEN`] are ignored).
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Masker {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_LEN)
            .map(String::into_bytes)
            .collect();
        // Longest first: a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker {
            secrets,
            held: Vec::new(),
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The data with every secret masked, and where the last match ended.
    fn replace_all(&self, data: &[u8]) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(data.len());
        let (mut i, mut last_end) = (0, 0);
        'outer: while i < data.len() {
            for s in &self.secrets {
                if data[i..].starts_with(s) {
                    out.extend_from_slice(MASK);
                    i += s.len();
                    last_end = i;
                    continue 'outer;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        (out, last_end)
    }

    /// Feeds a chunk; returns what can be written now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let (masked, last_end) = self.replace_all(&data);
        // Hold back the longest tail, after the last whole match, that is a proper
        // prefix of a secret: the next chunk decides it.
        let tail = data.len() - last_end;
        let mut hold = 0;
        for s in &self.secrets {
            for k in (1..s.len().min(tail + 1)).rev() {
                if data.ends_with(&s[..k]) {
                    hold = hold.max(k);
                    break;
                }
            }
        }
        if hold == 0 {
            return masked;
        }
        let (emit, keep) = data.split_at(data.len() - hold);
        self.held = keep.to_vec();
        self.replace_all(emit).0
    }

    /// Everything still held (at the end of the stream).
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.replace_all(&held).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> String {
        let mut m = Masker::new(secrets.iter().map(|s| (*s).to_owned()));
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.feed(c.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_split_and_overlapping_values() {
        assert_eq!(run(&["hunter22"], &["pw=hunter22\n"]), "pw=***\n");
        assert_eq!(run(&["hunter22"], &["pw=hunt", "er22 ok\n"]), "pw=*** ok\n");
        assert_eq!(
            run(&["hunter22"], &["h", "u", "n", "t", "e", "r", "2", "2"]),
            "***"
        );
        assert_eq!(run(&["hunter22"], &["hunt", "ing\n"]), "hunting\n");
        assert_eq!(run(&["abc"], &["abc\n"]), "abc\n", "too short to mask");
        assert_eq!(
            run(&["s3cret", "s3cretlonger"], &["s3cretlonger s3cret"]),
            "*** ***"
        );
        assert_eq!(run(&[], &["plain"]), "plain");
        // Found by the property test: a value right after itself, in one write.
        assert_eq!(run(&["1a01"], &["1a011a01"]), "******");
    }
}
