//! A small, dependency-free 64-bit hash (FNV-1a) for checksums and model
//! fingerprints. Each byte step `h = (h ^ b) · p` is a bijection on the
//! running value, so any single changed byte always changes the result;
//! it guards against damage, not against forgery.

/// Incremental FNV-1a, 64 bits.
#[derive(Debug, Clone)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    /// Feeds a length-prefixed string, so ("ab","c") and ("a","bc") differ.
    pub fn update_str(&mut self, s: &str) {
        self.update(&(s.len() as u64).to_le_bytes());
        self.update(s.as_bytes());
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Fnv64;

    #[test]
    fn known_vector_and_sensitivity() {
        let mut h = Fnv64::default();
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c, "FNV-1a 64 of \"a\"");
        let data = vec![7u8; 1000];
        let mut base = Fnv64::default();
        base.update(&data);
        for i in (0..1000).step_by(97) {
            let mut d = data.clone();
            d[i] ^= 0x10;
            let mut h = Fnv64::default();
            h.update(&d);
            assert_ne!(h.finish(), base.finish());
        }
    }
}
