//! What the `hallmark` command line shares with the other clients of the CA (the factory
//! provisioner): the connection to the CA from flags or `HALLMARK_*` variables, TLS that
//! accepts only the CA's own server certificate, and the check of a new trust bundle.

pub mod client;
pub mod tls;
pub mod trust;
