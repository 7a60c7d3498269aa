//! Our own seeded random numbers. candle's CPU generator cannot be seeded, so every random
//! draw in noisycxr (initialisation, shuffling, augmentation, mixup, the noise lab) comes from
//! a ChaCha8 generator keyed by `(seed, stream, a, b)` — typically `(epoch, sample index)`.
//! A sample's draws therefore do not depend on batch order or thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Independent purposes get independent streams, so adding draws to one never shifts another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Shuffle = 1,
    Augment = 2,
    Mixup = 3,
    Init = 4,
    Split = 5,
    Synth = 6,
    Dropout = 7,
    Policy = 8,
    Bootstrap = 9,
}

/// SplitMix64 finaliser: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for one `(seed, stream, a, b)` key, e.g. `keyed(seed, Stream::Augment, epoch, idx)`.
pub fn keyed(seed: u64, stream: Stream, a: u64, b: u64) -> ChaCha8Rng {
    let k = mix(mix(mix(seed ^ mix(stream as u64)) ^ a) ^ mix(b.wrapping_add(0x51)));
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(k.wrapping_add(i as u64)).to_le_bytes());
    }
    ChaCha8Rng::from_seed(bytes)
}

/// A stable 64-bit hash of a string (FNV-1a then mixed), for keying draws by patient id.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_key_same_draws_other_key_other_draws() {
        let a: Vec<u32> = (0..4)
            .map(|_| 0)
            .scan(keyed(7, Stream::Augment, 1, 2), |r, _| Some(r.random()))
            .collect();
        let b: Vec<u32> = (0..4)
            .map(|_| 0)
            .scan(keyed(7, Stream::Augment, 1, 2), |r, _| Some(r.random()))
            .collect();
        let c: Vec<u32> = (0..4)
            .map(|_| 0)
            .scan(keyed(7, Stream::Augment, 2, 1), |r, _| Some(r.random()))
            .collect();
        let d: Vec<u32> = (0..4)
            .map(|_| 0)
            .scan(keyed(7, Stream::Shuffle, 1, 2), |r, _| Some(r.random()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
