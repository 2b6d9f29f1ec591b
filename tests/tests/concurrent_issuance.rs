//! 1,000 certificates from concurrent clients: serials unique, every one has its row, and a
//! paginated listing walks through exactly 1,000.

use std::collections::HashSet;

use hallmark_proto::v1 as pb;
use hallmark_tests::{TestCa, p256_csr};

const TOTAL: usize = 1000;
const CLIENTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_issuances_are_all_recorded() {
    let ca = TestCa::start().await;
    // CSRs are made up front so that the clients hammer the CA, not their own key generation.
    let csrs: Vec<Vec<u8>> = (0..TOTAL).map(|i| p256_csr(&format!("s-{i}")).1).collect();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = ca.admin().await; // one HTTP/2 connection per client
        let mine: Vec<(usize, Vec<u8>)> = csrs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % CLIENTS == c)
            .map(|(i, csr)| (i, csr.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for (i, csr) in mine {
                let resp = client
                    .issue(pb::IssueRequest {
                        device_id: format!("sensor-{i:04}"),
                        profile: "sensor".into(),
                        zone: "field".into(),
                        csr,
                        lifetime_seconds: 0,
                        scope: None,
                        replace_active: false,
                    })
                    .await
                    .expect("issue");
                serials.push(resp.into_inner().certificate.unwrap().serial);
            }
            serials
        }));
    }
    let mut serials = Vec::new();
    for t in tasks {
        serials.extend(t.await.unwrap());
    }
    assert_eq!(serials.len(), TOTAL);
    let unique: HashSet<&String> = serials.iter().collect();
    assert_eq!(unique.len(), TOTAL, "duplicate serials");
    for s in &serials {
        assert!(s.len() >= 16, "serial {s} has fewer than 64 bits");
        let row = ca.store().certificate(s).await.unwrap();
        assert!(row.is_some(), "serial {s} has no row");
    }

    let mut admin = ca.admin().await;
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_certificates(pb::ListCertificatesRequest {
                profile: "sensor".into(),
                page_size: 64,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        listed.extend(page.certificates.into_iter().map(|c| c.serial));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 100, "pagination does not end");
    }
    assert_eq!(listed.len(), TOTAL);
    assert_eq!(pages, TOTAL.div_ceil(64));
    let listed_set: HashSet<&String> = listed.iter().collect();
    assert_eq!(listed_set, unique, "listing and issued serials differ");
    ca.server.shutdown().await;
}
