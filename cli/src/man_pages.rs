//! The manual pages of `hallmark` (`cli/man/*.1`, shipped by the Debian package), generated
//! from the same clap definitions as `--help`. They are committed so that `cargo deb` packages
//! them from a plain checkout; this test fails when they no longer match the definitions and
//! rewrites them with `HALLMARK_UPDATE_MAN=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Set to rewrite the committed pages instead of comparing.
const UPDATE_VAR: &str = "HALLMARK_UPDATE_MAN";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

/// Every page, by file name: `hallmark.1` and one per subcommand (`hallmark-broker-sync.1`).
fn render_all() -> BTreeMap<String, Vec<u8>> {
    fn walk(cmd: clap::Command, pages: &mut BTreeMap<String, Vec<u8>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub.clone(), pages);
        }
        // Subcommands carry no version of their own: every page names the release.
        let man = clap_mangen::Man::new(cmd)
            .source(format!("hallmark {}", env!("CARGO_PKG_VERSION")))
            .manual("Hallmark");
        let mut page = Vec::new();
        man.render(&mut page).expect("rendering into memory");
        pages.insert(man.get_filename(), page);
    }
    let mut cmd = <super::Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    // Built once from the top, so that subcommands carry their full names and global flags.
    cmd.build();
    let mut pages = BTreeMap::new();
    walk(cmd, &mut pages);
    pages
}

fn committed() -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(man_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("reading cli/man"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .map(|e| {
            let page = std::fs::read(e.path()).expect("reading a page");
            (e.file_name().to_string_lossy().into_owned(), page)
        })
        .collect()
}

#[test]
fn man_pages_match_the_command_line() {
    let want = render_all();
    assert!(want.contains_key("hallmark.1") && want.contains_key("hallmark-broker-sync.1"));
    let have = committed();
    if have == want {
        return;
    }
    if std::env::var_os(UPDATE_VAR).is_some() {
        let dir = man_dir();
        std::fs::create_dir_all(&dir).expect("creating cli/man");
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            std::fs::remove_file(dir.join(name)).expect("removing a stale page");
        }
        for (name, page) in &want {
            std::fs::write(dir.join(name), page).expect("writing a page");
        }
        return;
    }
    let stale: Vec<&String> = want
        .keys()
        .chain(have.keys())
        .filter(|n| want.get(*n) != have.get(*n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    panic!(
        "the manual pages in cli/man do not match the command line ({} differ: {:?}); \
         regenerate them with `{UPDATE_VAR}=1 cargo test -p hallmark-cli --bin hallmark \
         man_pages` and commit cli/man",
        stale.len(),
        stale
    );
}
