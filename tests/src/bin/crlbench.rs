//! `hallmark-crlbench`: time and size of building and signing one issuer's CRL with 10k, 100k
//! and 1M entries, in-process, no store, with the entries kept the way the publisher keeps them
//! (`RevocationList`): loaded once, then one revocation applied in memory, and the next CRL
//! published from there (apply + expired entries dropped + build and sign: what the publisher does after a
//! revocation, less its 50 ms debounce). Prints figures and the machine; asserts nothing.
//!
//! ```sh
//! cargo run --release -p hallmark-tests --bin hallmark-crlbench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_ca::authority::IssuingCa;
use hallmark_ca::authority::ca::{create_issuing, create_root};
use hallmark_ca::authority::crl::{CrlHeader, build_crl_from};
use hallmark_ca::clock::{Clock, SystemClock};
use hallmark_ca::revocation::list::RevocationList;
use hallmark_ca::store::{CertStatus, RevocationStatus};

fn main() {
    let now = SystemClock.now();
    let year = Duration::from_secs(365 * 86400);
    let (root, root_key) = create_root("Bench", now, year).expect("root");
    let (der, key) = create_issuing(&root, root_key, "Bench", now, year).expect("issuing");
    let ca = Arc::new(IssuingCa::new("issuing-bench".into(), der, key).expect("issuing CA"));
    println!("machine: {}", hallmark_tests::bench::machine());
    for count in [10_000usize, 100_000, 1_000_000] {
        let status = |i: u64| RevocationStatus {
            // 16-byte serials like the CA's own.
            serial: format!("4{:031x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            issuer_id: "issuing-bench".into(),
            not_after: now + 86_400,
            status: CertStatus::Revoked,
            revoked_at: Some(now - (i % 86_400) as i64),
            reason: Some(1 + (i % 5) as i64),
        };
        let statuses: Vec<RevocationStatus> = (0..count as u64).map(status).collect();
        let mut list = RevocationList::new();
        let load = Instant::now();
        list.load("issuing-bench", statuses, now)
            .expect("hex serials");
        let loaded = load.elapsed();
        // One more revocation, as the publisher applies it from the store's feed.
        let apply = Instant::now();
        list.apply(&status(count as u64), now);
        let applied = apply.elapsed();
        let snapshot = Instant::now();
        let entries = list.entries("issuing-bench", now).expect("loaded");
        let prepared = snapshot.elapsed();
        let start = Instant::now();
        let crl = build_crl_from(
            &ca,
            &CrlHeader {
                number: 1,
                now,
                validity: Duration::from_secs(86_400),
                distribution_point: Some("http://127.0.0.1:9080/crl/issuing-bench.crl".into()),
            },
            entries,
        )
        .expect("CRL");
        let built = start.elapsed();
        let count = entries.len();
        println!(
            "{count:>9} entries: built and signed in {:.3} s, {:.1} MiB DER ({:.1} bytes/entry); \
             next CRL after one more revocation in {:.3} s (applied in {:.1} µs, expired entries \
             dropped in {:.3} s, built and signed); first load {:.3} s; peak RSS {:.0} MiB",
            built.as_secs_f64(),
            crl.len() as f64 / 1_048_576.0,
            crl.len() as f64 / count as f64,
            (applied + prepared + built).as_secs_f64(),
            applied.as_secs_f64() * 1e6,
            prepared.as_secs_f64(),
            loaded.as_secs_f64(),
            hallmark_tests::bench::status_mib(std::process::id(), "VmHWM"),
        );
    }
}
