//! `hallmark-crlbench`: time and size of building and signing one issuer's CRL with 100k and 1M
//! entries (the DESIGN's figures), in-process, no store. Prints figures; asserts nothing.
//!
//! ```sh
//! cargo run --release -p hallmark-tests --bin hallmark-crlbench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use hallmark_ca::authority::IssuingCa;
use hallmark_ca::authority::ca::{create_issuing, create_root};
use hallmark_ca::authority::crl::{CrlRequest, RevokedEntry, build_crl};
use hallmark_ca::clock::{Clock, SystemClock};

fn main() {
    let now = SystemClock.now();
    let year = Duration::from_secs(365 * 86400);
    let (root, root_key) = create_root("Bench", now, year).expect("root");
    let (der, key) = create_issuing(&root, root_key, "Bench", now, year).expect("issuing");
    let ca = Arc::new(IssuingCa::new("issuing-bench".into(), der, key).expect("issuing CA"));
    for count in [1_000usize, 100_000, 1_000_000] {
        let make = Instant::now();
        let entries: Vec<RevokedEntry> = (0..count as u64)
            .map(|i| RevokedEntry {
                // 16-byte serials like the CA's own.
                serial: format!("4{:031x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                revoked_at: now - (i % 86_400) as i64,
                reason: Some(1 + (i % 5) as i64),
            })
            .collect();
        let prepared = make.elapsed();
        let start = Instant::now();
        let crl = build_crl(
            &ca,
            &CrlRequest {
                number: 1,
                now,
                validity: Duration::from_secs(86_400),
                distribution_point: Some("http://127.0.0.1:9080/crl/issuing-bench.crl".into()),
                entries: &entries,
            },
        )
        .expect("CRL");
        let built = start.elapsed();
        println!(
            "{count:>9} entries: built and signed in {:.3} s, {:.1} MiB DER ({:.1} bytes/entry); entries prepared in {:.3} s",
            built.as_secs_f64(),
            crl.len() as f64 / 1_048_576.0,
            crl.len() as f64 / count as f64,
            prepared.as_secs_f64()
        );
    }
}
