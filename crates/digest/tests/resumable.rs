//! The resumable state: any split of the input, saved and restored anywhere, gives the one-shot digests.

use artifactstore_digest::{DualDigest, DualHasher, StateError};
use proptest::prelude::*;
use sha2::Digest as _;

fn expected(data: &[u8]) -> ([u8; 32], [u8; 32]) {
    (*blake3::hash(data).as_bytes(), sha2::Sha256::digest(data).into())
}

fn check(data: &[u8], digest: DualDigest) {
    let (b3, sha) = expected(data);
    assert_eq!(digest.blake3.bytes(), &b3, "blake3 of {} bytes", data.len());
    assert_eq!(digest.sha256.bytes(), &sha, "sha256 of {} bytes", data.len());
    assert_eq!(digest.size, data.len() as u64);
}

fn input(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Feeds `data` split at `cuts`, saving and restoring after every piece where `resume` says so.
fn hash_split(data: &[u8], cuts: &[usize], resume: &[bool]) -> DualDigest {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut hasher = DualHasher::new();
    let mut at = 0;
    for (i, cut) in cuts.into_iter().chain([data.len()]).enumerate() {
        hasher.update(&data[at..cut.max(at)]);
        at = cut.max(at);
        if resume.get(i).copied().unwrap_or(true) {
            let state = hasher.save();
            assert!(state.len() <= 70 * 1024, "state of {} bytes", state.len());
            hasher = DualHasher::restore(&state).unwrap();
        }
    }
    hasher.finalize()
}

#[test]
fn edges() {
    for len in [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 65_535, 65_536, 65_537, 131_072, 131_073, 1_000_000] {
        let data = input(len, len as u64);
        check(&data, hash_split(&data, &[], &[]));
        check(&data, hash_split(&data, &[len / 2], &[true]));
        check(&data, hash_split(&data, &[65_536, 65_537], &[true, false, true]));
    }
}

/// Feeds `data` split at `cuts` as batches of pieces through `update_all`, batches ending at `ends`.
fn hash_batches(data: &[u8], cuts: &[usize], ends: &[usize]) -> DualDigest {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([data.len()]) {
        pieces.push(&data[at..cut.max(at)]);
        at = cut.max(at);
    }
    let mut ends: Vec<usize> = ends.iter().map(|e| e % (pieces.len() + 1)).collect();
    ends.sort_unstable();
    let mut hasher = DualHasher::new();
    let mut from = 0;
    for end in ends.into_iter().chain([pieces.len()]) {
        hasher.update_all(&pieces[from..end.max(from)]);
        from = end.max(from);
    }
    hasher.finalize()
}

#[test]
fn batches_of_pieces_on_one_thread_and_on_two() {
    // Under and over the size at which both hash functions run at once, in pieces far shorter than it.
    for len in [0, 1000, 256 * 1024 - 1, 256 * 1024, 3 * 1024 * 1024 + 17] {
        let data = input(len, 11);
        let cuts: Vec<usize> = (1..len / 16_384).map(|i| i * 16_384 + i % 7).collect();
        check(&data, hash_batches(&data, &cuts, &[]));
        check(&data, hash_batches(&data, &cuts, &[cuts.len() / 3, cuts.len() / 2]));
    }
}

#[test]
fn one_large_update_and_many_small_ones() {
    let data = input(5 * 1024 * 1024 + 3, 7);
    check(&data, hash_split(&data, &[], &[]));
    let small = input(200_000, 8);
    let mut hasher = DualHasher::new();
    for (i, byte) in small.iter().enumerate() {
        hasher.update(std::slice::from_ref(byte));
        if i % 9_999 == 0 {
            hasher = DualHasher::restore(&hasher.save()).unwrap();
        }
    }
    check(&small, hasher.finalize());
}

#[test]
fn official_blake3_vectors_in_odd_splits() {
    let vectors: serde_json::Value = serde_json::from_str(include_str!("fixtures/blake3_test_vectors.json")).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() > 30);
    for case in cases {
        let len = case["input_len"].as_u64().unwrap() as usize;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let digest = hash_split(&data, &[1, len / 3, len / 2 + 1], &[true, false, true, true]);
        assert_eq!(digest.blake3.hex(), case["hash"].as_str().unwrap()[..64], "input_len {len}");
    }
}

#[test]
fn restore_refuses_malformed_states() {
    let mut hasher = DualHasher::new();
    hasher.update(&input(200_000, 3));
    let state = hasher.save();
    assert!(DualHasher::restore(&state).is_ok());
    assert_eq!(DualHasher::restore(b"").unwrap_err(), StateError::UnknownFormat);
    assert_eq!(DualHasher::restore(b"garbage!").unwrap_err(), StateError::UnknownFormat);
    let mut version = state.clone();
    version[4] = 99;
    assert_eq!(DualHasher::restore(&version).unwrap_err(), StateError::UnknownFormat);
    for cut in [5, 13, 40, state.len() / 2, state.len() - 1] {
        assert!(DualHasher::restore(&state[..cut]).is_err(), "truncated at {cut}");
    }
    let mut trailing = state.clone();
    trailing.push(0);
    assert_eq!(DualHasher::restore(&trailing).unwrap_err(), StateError::TrailingBytes);
    let mut size = state.clone();
    size[5] ^= 1;
    assert!(matches!(DualHasher::restore(&size).unwrap_err(), StateError::Inconsistent(_)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_with_any_resumes_matches(
        len in prop_oneof![0usize..3000, 60_000usize..140_000, 250_000usize..300_000],
        seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        resume in proptest::collection::vec(any::<bool>(), 0..9),
    ) {
        let data = input(len, seed);
        let digest = hash_split(&data, &cuts, &resume);
        let (b3, sha) = expected(&data);
        prop_assert_eq!(digest.blake3.bytes(), &b3);
        prop_assert_eq!(digest.sha256.bytes(), &sha);
    }

    #[test]
    fn batches_give_the_one_shot_digests(
        len in 0usize..600_000,
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ends in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let data = input(len, len as u64);
        check(&data, hash_batches(&data, &cuts, &ends));
    }

    #[test]
    fn restore_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = DualHasher::restore(&bytes);
    }

    #[test]
    fn restore_never_panics_on_mutated_states(flip in any::<usize>(), value in any::<u8>(), len in 0usize..150_000) {
        let mut hasher = DualHasher::new();
        hasher.update(&input(len, 5));
        let mut state = hasher.save();
        let at = flip % state.len();
        state[at] = value;
        if let Ok(restored) = DualHasher::restore(&state) {
            let _ = restored.finalize();
        }
    }
}
