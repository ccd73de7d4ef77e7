//! The fuzz targets on the stable toolchain, cheaply: each target's committed seeds
//! (`fuzz/corpus/<target>/`) and a few thousand inputs derived from them with a fixed seed,
//! so `cargo test --workspace` walks every target's code path and a regression of a fixed
//! crash input (committed as a seed) fails here, without cargo-fuzz or nightly features.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zvon_fuzz_entry::TARGETS;

const DERIVED_PER_TARGET: usize = 3000;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    // Directory order varies by file system; a failure must name the same input every run.
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// A cheap stand-in for libFuzzer's mutators: a seed with bytes flipped, cut, or spliced
/// with another seed, or plain random bytes.
fn derive(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
    match rng.gen_range(0..5) {
        0 => {
            for _ in 0..rng.gen_range(1..4) {
                if !input.is_empty() {
                    let at = rng.gen_range(0..input.len());
                    input[at] ^= 1 << rng.gen_range(0..8);
                }
            }
        }
        1 => input.truncate(rng.gen_range(0..=input.len())),
        2 => {
            let other = &seeds[rng.gen_range(0..seeds.len())];
            let cut = rng.gen_range(0..=input.len());
            let from = rng.gen_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        3 => {
            let at = rng.gen_range(0..=input.len());
            let junk: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
            input.splice(at..at, junk);
        }
        _ => input = (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect(),
    }
    input
}

#[test]
fn every_target_survives_its_seeds_and_derived_inputs() {
    for (i, (name, entry)) in TARGETS.iter().enumerate() {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds committed");
        for seed in &seeds {
            entry(seed);
        }
        let mut rng = StdRng::seed_from_u64(0x5a70_0000 + i as u64);
        for _ in 0..DERIVED_PER_TARGET {
            let input = derive(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(|| entry(&input));
            assert!(outcome.is_ok(), "{name} panicked on {input:02x?}");
        }
    }
}

/// The publish target's seeds reach our code: accepted, answered with the certificate's
/// fingerprint and our candidate (its DTLS is inert, see `inert_dtls.rs`).
#[test]
fn publish_offer_seeds_are_accepted() {
    for seed in seeds("publish_offer") {
        let answer = zvon_fuzz_entry::publish_answer(&seed).expect("a seed is accepted");
        assert!(answer.contains("a=fingerprint:sha-256 "), "{answer}");
        assert!(answer.contains("a=candidate:"), "{answer}");
        assert!(answer.contains("a=setup:passive"), "{answer}");
    }
}

#[test]
fn every_fuzz_target_has_an_entry_and_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            path.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "fuzz/fuzz_targets and TARGETS disagree");
    // cargo-fuzz builds only what fuzz/Cargo.toml lists as a [[bin]].
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/Cargo.toml"),
    )
    .unwrap();
    let mut bins: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("path = \"fuzz_targets/"))
        .filter_map(|l| l.strip_suffix(".rs\""))
        .map(str::to_string)
        .collect();
    bins.sort();
    assert_eq!(
        bins, listed,
        "fuzz/Cargo.toml's [[bin]]s and TARGETS disagree"
    );
}
