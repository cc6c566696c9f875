//! Published test vectors for both hash functions, and chunking properties.

use artifactstore_digest::{Algorithm, Digest, DualDigest, DualHasher, PARALLEL_THRESHOLD};
use proptest::prelude::*;

#[derive(serde::Deserialize)]
struct Blake3Vectors {
    cases: Vec<Blake3Case>,
}

#[derive(serde::Deserialize)]
struct Blake3Case {
    input_len: usize,
    hash: String,
}

fn pseudo_random_bytes(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            // xorshift64: cheap, deterministic filler for large property inputs.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn vector_input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn official_blake3_vectors_pass() {
    let text = include_str!("fixtures/blake3_test_vectors.json");
    let vectors: Blake3Vectors = serde_json::from_str(text).unwrap();
    assert!(vectors.cases.len() > 30, "the fixture holds every official case");
    for case in vectors.cases {
        let input = vector_input(case.input_len);
        let expected = format!("blake3:{}", &case.hash[..64]);
        assert_eq!(DualDigest::of(&input).blake3.to_string(), expected, "input_len {}", case.input_len);
        // The same input fed in uneven chunks gives the same digest.
        let mut hasher = DualHasher::new();
        for chunk in input.chunks(1023) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finalize().blake3.to_string(), expected);
    }
}

fn check_sha256(input: &[u8], expected_hex: &str) {
    let dual = DualDigest::of(input);
    assert_eq!(dual.sha256.to_string(), format!("sha256:{expected_hex}"));
    assert_eq!(dual.sha256.algorithm(), Algorithm::Sha256);
    assert_eq!(dual.size, input.len() as u64);
}

#[test]
fn nist_sha256_examples_pass() {
    // FIPS 180-2 Appendix B and the NIST example set.
    check_sha256(b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_sha256(b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check_sha256(
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    );
    check_sha256(
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    );
    // One million 'a', fed in chunks large enough to take the two-thread path.
    let million = vec![b'a'; 1_000_000];
    let mut hasher = DualHasher::new();
    for chunk in million.chunks(PARALLEL_THRESHOLD + 7) {
        hasher.update(chunk);
    }
    let dual = hasher.finalize();
    assert_eq!(dual.sha256.to_string(), "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    assert_eq!(dual, DualDigest::of(&million));
}

#[test]
fn digest_strings_round_trip() {
    let dual = DualDigest::of(b"hello");
    for digest in [dual.blake3, dual.sha256] {
        let parsed: Digest = digest.to_string().parse().unwrap();
        assert_eq!(parsed, digest);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_chunking_gives_the_digests_of_the_whole(
        len in 0..(PARALLEL_THRESHOLD * 2 + 100),
        seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let data = pseudo_random_bytes(len, seed);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let mut hasher = DualHasher::new();
        for pair in points.windows(2) {
            hasher.update(&data[pair[0]..pair[1]]);
        }
        let streamed = hasher.finalize();
        let whole = blake3::hash(&data);
        prop_assert_eq!(streamed.blake3.bytes(), whole.as_bytes());
        prop_assert_eq!(streamed, DualDigest::of(&data));
        prop_assert_eq!(streamed.size, data.len() as u64);
    }
}
