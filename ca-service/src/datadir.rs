//! The data dir's layout: where the store, the CA certificates and keys, the API server's
//! credential, the trust bundle and the first admin's bundle live, and which kind of database
//! holds its CA (recorded in the marker). Paths only (and reading a certificate file); what
//! goes into them is [`crate::bootstrap`]'s, [`crate::hierarchy`]'s and [`crate::keyring`]'s
//! business.
//!
//! Data dir layout:
//! ```text
//! hallmark.db                      the store (of a SQLite CA; a PostgreSQL CA's is elsewhere)
//! .initialised                     written last by init: the kind of database the CA lives in
//! ca/root.crt  ca/root.key         root CA (the key only unless kept elsewhere or imported)
//! ca/issuing.crt  ca/issuing.key   issuing CA
//! server/{cert,chain,key}.pem      the API's TLS certificate (renewed at start when due)
//! trust-bundle.pem                 roots + issuing CAs
//! admin/                           first admin credential bundle
//! ```

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;
use crate::store::{DB_FILE, Database};

/// Paths inside a data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Wraps a data dir path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }
    /// The database file (of the default SQLite store).
    pub fn db(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }

    /// The store of the CA this data dir holds: the database `config` names, else the SQLite
    /// file in here. Refused when the data dir's marker says its CA lives in the other kind of
    /// database (a command given a PostgreSQL CA's data dir without the URL would otherwise
    /// open, and create, an empty SQLite file beside it).
    pub fn database(&self, config: &Config) -> Result<Database, WrongDatabase> {
        let recorded = std::fs::read_to_string(self.marker()).ok().map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(MARKER_DATABASE))
                .unwrap_or(SQLITE)
                .to_owned()
        });
        match (recorded.as_deref(), &config.database) {
            (Some(POSTGRESQL), None) => Err(WrongDatabase::UrlMissing {
                dir: self.root.clone(),
            }),
            (Some(recorded), Some(Database::Postgres(_))) if recorded != POSTGRESQL => {
                Err(WrongDatabase::UrlGiven {
                    dir: self.root.clone(),
                })
            }
            (_, Some(db)) => Ok(db.clone()),
            (_, None) => Ok(Database::Sqlite(self.db())),
        }
    }

    /// The marker's text for a CA whose store is `database`.
    pub(crate) fn marker_text(database: &Database) -> String {
        let kind = match database {
            Database::Sqlite(_) => SQLITE,
            Database::Postgres(_) => POSTGRESQL,
        };
        format!("hallmark data dir\n{MARKER_DATABASE}{kind}\n")
    }
    pub(crate) fn ca(&self, name: &str) -> PathBuf {
        self.root.join("ca").join(name)
    }
    pub(crate) fn server(&self, name: &str) -> PathBuf {
        self.root.join("server").join(name)
    }
    /// The root CA key when it is kept in the data dir (`init` without `--root-key-out`).
    pub fn root_key(&self) -> PathBuf {
        self.ca("root.key")
    }
    /// The trust bundle file.
    pub fn trust_bundle(&self) -> PathBuf {
        self.root.join("trust-bundle.pem")
    }
    /// The first admin's credential bundle.
    pub fn admin(&self) -> PathBuf {
        self.root.join("admin")
    }
    /// Certificate and key files of issuing CA `id`.
    pub fn issuing_files(&self, id: &str) -> (PathBuf, PathBuf) {
        let (crt, key) = (self.ca(&format!("{id}.crt")), self.ca(&format!("{id}.key")));
        if crt.exists() && key.exists() {
            (crt, key)
        } else {
            (self.ca("issuing.crt"), self.ca("issuing.key"))
        }
    }

    /// The marker written last by a completed initialisation.
    pub fn marker(&self) -> PathBuf {
        self.root.join(".initialised")
    }

    /// Whether a completely initialised CA lives here.
    pub fn is_initialised(&self) -> bool {
        self.marker().exists()
    }

    /// Whether an initialisation started here and never completed (a crash mid-way).
    pub fn is_half_initialised(&self) -> bool {
        !self.is_initialised() && self.db().exists()
    }
}

/// The marker line naming the kind of database the CA lives in (markers written before it
/// had one are SQLite CAs).
const MARKER_DATABASE: &str = "database: ";
const SQLITE: &str = "sqlite";
const POSTGRESQL: &str = "postgresql";

/// A data dir given with the other kind of database than the one its CA lives in.
#[derive(Debug, thiserror::Error)]
pub enum WrongDatabase {
    /// The CA lives in PostgreSQL, and no URL was given.
    #[error(
        "the CA of {} lives in a PostgreSQL database: give its URL with --database-url (or \
         HALLMARK_DATABASE_URL)",
        dir.display()
    )]
    UrlMissing {
        /// The data dir.
        dir: PathBuf,
    },
    /// The CA lives in the data dir's SQLite file, and a URL was given.
    #[error(
        "the CA of {} lives in its own SQLite file: leave out --database-url (and \
         HALLMARK_DATABASE_URL)",
        dir.display()
    )]
    UrlGiven {
        /// The data dir.
        dir: PathBuf,
    },
}

/// Why a certificate file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    /// File system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{}: not a PEM certificate ({reason})", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
}

/// The (first) certificate of a PEM file, DER.
pub fn read_cert_pem(path: &Path) -> Result<Vec<u8>, CertFileError> {
    let text = std::fs::read(path).map_err(|source| CertFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let der = CertificateDer::from_pem_slice(&text).map_err(|e| CertFileError::NotPem {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(der.as_ref().to_vec())
}
