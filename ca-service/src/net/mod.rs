//! The two listeners and what bounds them: connection caps (total and per peer), handshake,
//! header-read and idle timeouts, HTTP/2 settings, per-call message limits, and the process's
//! open-files limit. Everything here runs before a caller is authenticated, so an anonymous
//! peer can hold only what these bounds allow.

pub mod conn;
pub mod conn_limit;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod message_limit;

use rustix::process::{Resource, getrlimit, setrlimit};

/// The open-files limit before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// Soft limit found at start (`None`: unlimited).
    pub before: Option<u64>,
    /// Soft limit now.
    pub now: Option<u64>,
}

/// Raises the soft open-files limit (`RLIMIT_NOFILE`) to the hard limit: every connection is a
/// file descriptor, and a soft limit of 1024 (a common default) is below the connection caps.
pub fn raise_open_files_limit() -> std::io::Result<OpenFilesLimit> {
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(OpenFilesLimit {
        before,
        now: getrlimit(Resource::Nofile).current,
    })
}
