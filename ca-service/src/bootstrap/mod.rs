//! First start and every start: creating the CA hierarchy, the API server certificate and the
//! first admin credential in an empty data dir, and loading them again later. By concern:
//! `init` (first start), `load` (every start of `serve`), `admin` (break-glass admin
//! credentials) and `credentials` (the certificates the CA makes for itself, shared by the
//! three). The data dir's layout is [`crate::datadir`]; issuer keys are loaded by
//! [`crate::keyring`]; issuer rotation is [`crate::hierarchy`].

mod admin;
mod credentials;
mod init;
mod load;

use std::path::{Path, PathBuf};

use crate::authority::ca::{self, CaImportError};
use crate::authority::crl::distribution_point;
use crate::authority::{AuthorityError, NamingPolicy};
use crate::config::Config;
use crate::datadir::{self, CertFileError};
use crate::keyring::KeyringError;
use crate::keys::KeyFileError;
use crate::root_crl::RootCrlError;
use crate::store::{DB_FILE, IssuerKind, IssuerRecord, StoreError};

pub use self::admin::{CreateAdminOptions, CreatedAdmin, create_admin};
pub use self::credentials::server_names;
pub use self::init::{ImportIssuing, InitOptions, InitReport, init};
pub use self::load::{Loaded, load};
pub use crate::authority::server_identity::SERVER_DEVICE;
pub use crate::datadir::DataDir;
pub use crate::keyring::load_issuing;

/// Name of the first admin credential.
pub const FIRST_ADMIN: &str = "admin";
/// Profile of admin credentials made on the CA host (the first admin, break-glass admins).
use crate::service::methods::ADMIN_PROFILE;

/// Why initialisation or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// An earlier initialisation stopped half-way.
    #[error(
        "{} holds an interrupted initialisation ({DB_FILE} without the .initialised marker); \
         nothing in it was ever served: remove the directory and initialise again",
        .0.display()
    )]
    HalfInitialised(PathBuf),
    /// The data dir holds a CA already.
    #[error("{} is already initialised (it has {DB_FILE}); use another --data-dir or remove it", .0.display())]
    AlreadyInitialised(PathBuf),
    /// The data dir holds no CA.
    #[error("{} is not initialised; run `hallmark-ca init --data-dir {}` or `hallmark-ca serve`", .0.display(), .0.display())]
    NotInitialised(PathBuf),
    /// The data dir's CA lives in the other kind of database.
    #[error(transparent)]
    WrongDatabase(#[from] crate::datadir::WrongDatabase),
    /// A replica on a shared database was started on an empty data dir: it must not make a
    /// hierarchy of its own.
    #[error(
        "{} is not initialised: a CA on a shared database is initialised once, with `hallmark-ca \
         init --data-dir DIR --database-url URL`, and every replica serves a copy of that data \
         dir (its ca/, server/, trust-bundle.pem and .initialised)",
        .0.display()
    )]
    NotInitialisedShared(PathBuf),
    /// `init` found a CA in the database already.
    #[error(
        "the database {0} holds a CA already (initialised from another data dir); nothing was \
         written: serve a copy of that data dir, or initialise with an empty database. If the \
         init that made it stopped half-way (its data dir has no .initialised marker), nothing \
         was ever served from it: drop and recreate the database, then run init again"
    )]
    DatabaseHoldsCa(String),
    /// File system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// An imported CA was refused.
    #[error("cannot import the issuing CA: {0}")]
    Import(#[from] CaImportError),
    /// A certificate could not be built.
    #[error("cannot create a certificate: {0}")]
    Certificate(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data dir contradicts itself.
    #[error("{0}")]
    Inconsistent(String),
    /// The request was refused; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The root's CRL could not be signed or stored.
    #[error(transparent)]
    RootCrl(#[from] RootCrlError),
}

impl From<rcgen::Error> for BootstrapError {
    fn from(e: rcgen::Error) -> Self {
        BootstrapError::Certificate(e.to_string())
    }
}

impl From<CertFileError> for BootstrapError {
    fn from(e: CertFileError) -> Self {
        match e {
            CertFileError::Io { path, source } => BootstrapError::Io { path, source },
            e @ CertFileError::NotPem { .. } => BootstrapError::Inconsistent(e.to_string()),
        }
    }
}

impl From<KeyringError> for BootstrapError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::CertFile(e) => e.into(),
            KeyringError::Key(e) => BootstrapError::Key(e),
            KeyringError::Inconsistent(m) => BootstrapError::Inconsistent(m),
            KeyringError::Certificate(m) => BootstrapError::Certificate(m),
        }
    }
}

impl From<crate::service::ServiceError> for BootstrapError {
    fn from(e: crate::service::ServiceError) -> Self {
        match e {
            crate::service::ServiceError::Store(e) => BootstrapError::Store(e),
            other => BootstrapError::Certificate(other.to_string()),
        }
    }
}

impl From<AuthorityError> for BootstrapError {
    fn from(e: AuthorityError) -> Self {
        BootstrapError::Certificate(e.to_string())
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn read_cert_pem(path: &Path) -> Result<Vec<u8>, BootstrapError> {
    Ok(datadir::read_cert_pem(path)?)
}

fn naming(config: &Config) -> NamingPolicy {
    NamingPolicy {
        organisation: config.organisation.clone(),
        device_uri_template: config.device_uri_template.clone(),
        crl_base_url: Some(config.crl_base(config.http_listen)),
    }
}

/// The URL of root `root_id`'s CRL, which the issuing CAs it signs carry as CDP.
pub(crate) fn root_crl_url(config: &Config, root_id: &str) -> String {
    distribution_point(&config.crl_base(config.http_listen), root_id)
}

fn subject_of(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

pub(crate) fn issuer_record(
    kind: IssuerKind,
    id: String,
    der: &[u8],
) -> Result<IssuerRecord, BootstrapError> {
    let (not_before, not_after) = ca::validity(der)?;
    Ok(IssuerRecord {
        id,
        kind,
        subject: subject_of(der),
        cert_der: der.to_vec(),
        not_before,
        not_after,
        active: true,
        revoked_at: None,
        revocation_reason: None,
    })
}
