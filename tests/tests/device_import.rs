//! `hallmark device import` of 10,000 devices with a few bad rows: it completes, names the bad
//! rows by line number, and the registry holds exactly the good ones.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use hallmark_tests::{CaProcess, s};

#[test]
fn importing_ten_thousand_devices_keeps_the_good_rows_and_names_the_bad_ones() {
    let work = tempfile::tempdir().unwrap();
    let ca = CaProcess::start(&work.path().join("data"), &[]);

    let mut csv = String::from("id,zone,profile,lot,model,serial_number\n");
    // Line numbers are 1-based and the header is line 1, so row i sits on line i + 2.
    let mut bad: BTreeMap<u64, &str> = BTreeMap::new();
    let mut good = BTreeSet::new();
    for i in 0..10_000u64 {
        let line = i + 2;
        let id = format!("sensor-{i:05}");
        let row = match line {
            3 => {
                bad.insert(line, "upper-case");
                format!("Sensor-{i:05},field,sensor,lot-1,ts-100,SN{i:05}")
            }
            500 => {
                bad.insert(line, "unknown profile `thermostat`");
                format!("{id},field,thermostat,lot-1,ts-100,SN{i:05}")
            }
            2501 => {
                bad.insert(line, "device sensor-00000 is already registered");
                "sensor-00000,field,sensor,lot-1,ts-100,SN-dup-id".to_owned()
            }
            7000 => {
                bad.insert(line, "7 fields, the header has 6");
                format!("{id},field,sensor,lot-1,ts-100,SN{i:05},extra")
            }
            9999 => {
                bad.insert(line, "zone is missing");
                format!("{id},,sensor,lot-1,ts-100,SN{i:05}")
            }
            10_001 => {
                bad.insert(line, "serial number SN00002 is already registered");
                format!("{id},field,sensor,lot-2,ts-100,SN00002")
            }
            _ => {
                good.insert(id.clone());
                format!("{id},field,sensor,lot-{},ts-100,SN{i:05}", i / 1000)
            }
        };
        writeln!(csv, "{row}").unwrap();
    }
    let file = work.path().join("lot.csv");
    std::fs::write(&file, csv).unwrap();

    let out = ca.hallmark(&["device", "import", s(&file)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "refused rows make the exit code non-zero"
    );
    assert!(
        stdout.contains(&format!(
            "imported {} devices; {} rows refused",
            good.len(),
            bad.len()
        )),
        "{stdout}\n{stderr}"
    );
    let reported: Vec<&str> = stderr.lines().filter(|l| l.contains(": line ")).collect();
    assert_eq!(reported.len(), bad.len(), "{stderr}");
    for (line, why) in &bad {
        assert!(
            reported
                .iter()
                .any(|r| r.contains(&format!(": line {line}: ")) && r.contains(why)),
            "line {line} ({why}) not reported:\n{stderr}"
        );
    }

    let listed = ca.hallmark(&["device", "list", "--zone", "field", "-o", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, good, "the registry holds exactly the good rows");
    let lot3 = ca.hallmark(&["device", "list", "--lot", "lot-3", "-o", "json"]);
    let lot3: serde_json::Value = serde_json::from_slice(&lot3.stdout).unwrap();
    assert_eq!(lot3.as_array().unwrap().len(), 1000);
}
