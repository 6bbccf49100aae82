//! Byte-level tokenizer: the model's vocabulary is the 256 byte values.

/// One id per byte value.
pub(super) const VOCAB_SIZE: usize = 256;

/// Every byte value in order, so a token's bytes can be returned as a slice
/// of static memory.
static ALL_BYTES: [u8; VOCAB_SIZE] = {
    let mut table = [0u8; VOCAB_SIZE];
    let mut i = 0;
    while i < VOCAB_SIZE {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// Token id = byte value; has no state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ByteTokenizer;

impl ByteTokenizer {
    pub(super) fn encode(&self, bytes: &[u8]) -> Vec<u32> {
        bytes.iter().map(|&b| u32::from(b)).collect()
    }

    pub(super) fn token_bytes(&self, id: u32) -> Option<&'static [u8]> {
        ALL_BYTES.get(id as usize).map(std::slice::from_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let ids = ByteTokenizer.encode(&all);
        assert_eq!(ids, (0..256).collect::<Vec<u32>>());
        let back: Vec<u8> = ids
            .iter()
            .flat_map(|&id| ByteTokenizer.token_bytes(id).unwrap().to_vec())
            .collect();
        assert_eq!(back, all);
        assert_eq!(ByteTokenizer.token_bytes(256), None);
    }
}
